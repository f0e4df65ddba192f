"""Shared fixtures: one real local Ray per session, synthetic Parquet collections, a tiny model.

Library tests need no Ray. Tests that use Ray take the `ray_session` fixture (started once).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "bbc_news.parquet").exists(),
    reason=f"shared data not found at {SHARED_DATA} (the ../shared checkout beside the repo)",
)

TOPICS = {
    "sport": "match goal team league coach season player win score cup striker final".split(),
    "tech": "software chip computer network phone data internet device robot code server".split(),
    "food": "recipe bake flour oven sugar butter taste dinner chef kitchen sauce spice".split(),
}
COMMON = "the a of and to in is was it for on with as at by".split()


# A job spec small enough for a test: a tiny model, one epoch, one worker.
TINY_SPEC = """
name = "{name}"
out = "out"
stages = ["train", "encode", "index"]
[data]
paths = ["data"]
[tokenizer]
max_vocab = 300
max_len = 16
[model]
dim = 16
hidden_dim = 24
[train]
epochs = 1
workers = 1
[encode]
concurrency = 1
[index]
factory = "{factory}"
"""


def synthetic_texts(n: int, seed: int = 0, min_words: int = 8, max_words: int = 60) -> tuple[list[str], list[str]]:
    """Documents made of one topic's words mixed with common words; returns (texts, topics)."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    texts, labels = [], []
    for _ in range(n):
        topic = names[rng.integers(len(names))]
        n_words = int(rng.integers(min_words, max_words))
        words = [rng.choice(TOPICS[topic]) if rng.random() < 0.6 else rng.choice(COMMON) for _ in range(n_words)]
        text = " ".join(words).capitalize() + "."
        texts.append(text)
        labels.append(topic)
    return texts, labels


def write_collection(
    folder: Path, shard_sizes: list[int], seed: int = 0, row_group_size: int = 64, id_prefix: str = "doc"
) -> list[Path]:
    """Parquet shards of uneven sizes (several row groups each) with columns id, text, label."""
    folder.mkdir(parents=True, exist_ok=True)
    texts, labels = synthetic_texts(sum(shard_sizes), seed)
    paths, start = [], 0
    for i, size in enumerate(shard_sizes):
        ids = [f"{id_prefix}-{j:05d}" for j in range(start, start + size)]
        table = pa.table({"id": ids, "text": texts[start : start + size], "label": labels[start : start + size]})
        path = folder / f"part-{i:02d}.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
        start += size
    return paths


def make_vectors_dir(folder: Path, vectors: np.ndarray, ids: list, shards: int = 3, extra: dict | None = None) -> Path:
    """A vectors dir as `vecjob encode` writes it, from given vectors and ids."""
    from vecjob.parquet_io import new_manifest, write_json_atomic, write_parquet_atomic
    from vecjob.vectors import MANIFEST_KIND, vectors_table, with_model_fingerprint

    folder.mkdir(parents=True, exist_ok=True)
    stats = []
    for i, part in enumerate(np.array_split(np.arange(len(ids)), shards)):
        name = f"s{i}.parquet"
        cols = {k: pa.array([v[j] for j in part]) for k, v in (extra or {}).items()}
        table = vectors_table(pa.array([ids[j] for j in part]), vectors[part], cols)
        write_parquet_atomic(with_model_fingerprint(table, "m"), folder / name)
        stats.append({"output": name, "rows_out": len(part)})
    write_json_atomic(new_manifest(MANIFEST_KIND, dim=vectors.shape[1], shards=stats, model_fingerprint="m",
                                   vectors_fingerprint="v"), folder / "manifest.json")
    return folder


def blobs(n: int, dim: int, centers: int, seed: int = 0, spread: float = 0.3,
          orthogonal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vectors around `centers` random (or mutually orthogonal) directions, and the centre of each."""
    rng = np.random.default_rng(seed)
    c = np.linalg.qr(rng.normal(size=(dim, centers)))[0].T * 3 if orthogonal else rng.normal(size=(centers, dim))
    which = rng.integers(centers, size=n)
    return (c[which] + spread * rng.normal(size=(n, dim))).astype(np.float32), which


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 << 20, log_to_driver=False)
    from vecjob.runtime import connect

    connect()  # already initialised: only applies vecjob's Ray Data settings
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("collection")
    write_collection(folder, [150, 37, 95])
    return folder


def train_tiny_model(out: Path, collection: Path, seed: int = 0) -> Path:
    """A small model trained in-process (no Ray) on the synthetic collection."""
    import torch

    from vecjob.config import ModelConfig, TokenizerConfig, TrainConfig
    from vecjob.dataset import build_vocab, training_chunks
    from vecjob.model_dir import MANIFEST_KIND, write_model_dir
    from vecjob.parquet_io import check_shards, new_manifest
    from vecjob.tokenizer import Tokenizer
    from vecjob.training import build_model, train_loop

    torch.set_num_threads(1)
    tok_cfg = TokenizerConfig(max_vocab=200, min_count=1, max_len=16)
    model_cfg = ModelConfig(dim=16, embed_dim=16, hidden_dim=24)
    train_cfg = TrainConfig(epochs=2, batch_size=32, seed=seed)
    shards = check_shards(str(collection), "id", "text")
    vocab = build_vocab(shards, "id", "text", tok_cfg)
    train, val, _ = training_chunks(shards, Tokenizer(vocab, tok_cfg.max_len), "id", "text", train_cfg)
    model = build_model(model_cfg, len(vocab), seed, vocab.counts, train)
    state = train_loop(model, train, val, model_cfg, train_cfg, device=torch.device("cpu"))
    write_model_dir(out, model_cfg, tok_cfg, vocab, state.best_weights,
                    new_manifest(MANIFEST_KIND, history=state.history), plot_history=False)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, collection) -> Path:
    return train_tiny_model(tmp_path_factory.mktemp("model") / "model", collection)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory, collection) -> Path:
    """A second model of the same shape (another seed): same dim, different vectors and fingerprint."""
    return train_tiny_model(tmp_path_factory.mktemp("model-b") / "model", collection, seed=1)
