"""FAISS index over a vectors dir: choose a factory, train on a sample, add shard by shard,
measure recall@10 against exact search, and save index + id map + manifest.

Cosine similarity is inner product over L2-normalised vectors (queries are normalised the same way).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from vecjob.config import IndexConfig
from vecjob.errors import ArtifactError, ConfigError, InputError
from vecjob.outputs import MANIFEST, check_local, check_output, output_lock, staged_dir
from vecjob.parquet_io import (
    new_manifest,
    read_manifest,
    write_json_atomic,
    write_parquet_atomic,
)
from vecjob.vectors import VectorsDir, table_vectors

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
MANIFEST_KIND = "vecjob.index"
EXACT_LIMIT = 50_000  # up to this many vectors, exact search is fast enough and needs no training
MEMORY_BUDGET = 4 << 30  # bytes of raw float32 vectors an IVF,Flat index may hold before PQ is used


def choose_factory(n: int, dim: int, memory_budget: int = MEMORY_BUDGET) -> str:
    """Exact Flat for small sets; IVF (≈4√n lists) above; IVF-PQ once raw vectors exceed the budget."""
    if n <= EXACT_LIMIT:
        return "Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    nlist = max(256, min(nlist, 65_536, n // 39))
    if n * dim * 4 > memory_budget:
        m = next(m for m in (dim // 4, dim // 8, dim // 2, dim) if m and dim % m == 0)
        return f"IVF{nlist},PQ{m}"
    return f"IVF{nlist},Flat"


def _normalise(x: np.ndarray) -> np.ndarray:
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    faiss.normalize_L2(x)
    return x


def _sample_rows(vdir: VectorsDir, count: int, seed: int) -> np.ndarray:
    """A uniform sample of `count` vectors, drawn shard by shard (memory: the sample only)."""
    n = vdir.num_vectors
    chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False))
    out, start = [], 0
    for _, table in vdir.iter_shards(["vector"]):
        stop = start + table.num_rows
        local = chosen[(chosen >= start) & (chosen < stop)] - start
        if len(local):
            out.append(table_vectors(table)[local])
        start = stop
    return np.concatenate(out)


@dataclass
class BuiltIndex:
    index: object  # faiss.Index
    ids: pa.Array
    manifest: dict


def build_index(vectors_dir: str | Path, cfg: IndexConfig) -> BuiltIndex:
    import faiss

    vdir = VectorsDir.open(vectors_dir)
    n, dim = vdir.num_vectors, vdir.dim
    if n == 0:
        raise InputError(f"{vectors_dir}: holds no vectors to index")
    factory = choose_factory(n, dim) if cfg.factory == "auto" else cfg.factory
    metric = faiss.METRIC_INNER_PRODUCT if cfg.metric == "cosine" else faiss.METRIC_L2
    try:
        index = faiss.index_factory(dim, factory, metric)
    except RuntimeError as exc:
        raise ConfigError(f"FAISS factory '{factory}' is not valid for dim {dim}: {exc}") from None
    prep = _normalise if cfg.metric == "cosine" else (lambda x: np.ascontiguousarray(x, np.float32))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    train_size = 0
    if not index.is_trained:
        nlist = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 0
        train_size = min(n, max(50 * nlist, 20_000), 200_000)
        if train_size < max(nlist, 1) * 4:
            raise ConfigError(f"factory '{factory}' needs more training vectors than the {n} available")
        index.train(prep(_sample_rows(vdir, train_size, cfg.seed)))
    timings["train_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    id_chunks = []
    for _, table in vdir.iter_shards(["id", "vector"]):
        index.add(prep(table_vectors(table)))
        id_chunks.append(table.column("id"))
    ids = pa.chunked_array(id_chunks).combine_chunks()
    timings["add_s"] = time.perf_counter() - t0
    _check_unique(ids, vectors_dir)

    t0 = time.perf_counter()
    quality = tune_and_measure(index, vdir, cfg, prep)
    timings["recall_s"] = time.perf_counter() - t0

    manifest = new_manifest(
        MANIFEST_KIND,
        vectors_dir=str(Path(vectors_dir).resolve()),
        model_fingerprint=vdir.manifest.get("model_fingerprint"),
        vectors_fingerprint=vdir.manifest.get("vectors_fingerprint"),
        factory=factory,
        metric=cfg.metric,
        dim=dim,
        ntotal=int(index.ntotal),
        train_size=train_size,
        timings=timings,
        **quality,
    )
    return BuiltIndex(index=index, ids=ids, manifest=manifest)


def _check_unique(ids: pa.Array, where: str | Path) -> None:
    dup = pl.Series(values=ids).is_duplicated()
    if dup.any():
        examples = pl.Series(values=ids).filter(dup).unique().head(3).to_list()
        raise InputError(f"{where}: {int(dup.sum())} rows share an id (e.g. {examples}); ids must be unique")


def _exact_topk(vdir: VectorsDir, queries: np.ndarray, k: int, metric: str, prep) -> np.ndarray:
    """Exact top-k row numbers, merged shard by shard so memory stays at one shard."""
    import faiss

    heap_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    keep_max = heap_metric == faiss.METRIC_INNER_PRODUCT
    best_d = np.full((len(queries), k), -np.inf if keep_max else np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    offset = 0
    for _, table in vdir.iter_shards(["vector"]):
        base = prep(table_vectors(table))
        d, i = faiss.knn(queries, base, min(k, len(base)), metric=heap_metric)
        i = np.where(i >= 0, i + offset, -1)
        all_d = np.concatenate([best_d, d], axis=1)
        all_i = np.concatenate([best_i, i], axis=1)
        order = np.argsort(-all_d if keep_max else all_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(all_d, order, 1)
        best_i = np.take_along_axis(all_i, order, 1)
        offset += len(base)
    return best_i


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)]))


def tune_and_measure(index, vdir: VectorsDir, cfg: IndexConfig, prep, k: int = 10) -> dict:
    """Recall@k on sampled queries; for IVF / HNSW, raise the search knob until target_recall."""
    import faiss

    queries = prep(_sample_rows(vdir, cfg.recall_queries, cfg.seed + 1))
    k = min(k, vdir.num_vectors)
    t0 = time.perf_counter()
    exact = _exact_topk(vdir, queries, k, cfg.metric, prep)
    exact_s = time.perf_counter() - t0

    knob = _knob_from_index(index)
    params: dict[str, int] = {}
    space = faiss.ParameterSpace()
    candidates = [None]
    if knob == "nprobe":
        nlist = faiss.extract_index_ivf(index).nlist
        candidates = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p <= nlist] + [nlist]
    elif knob == "efSearch":
        candidates = [16, 32, 64, 128, 256, 512]
    for value in candidates:
        if value is not None:
            space.set_index_parameter(index, knob, value)
            params = {knob: value}
        t0 = time.perf_counter()
        _, approx = index.search(queries, k)
        search_s = time.perf_counter() - t0
        recall = recall_at_k(approx, exact)
        if recall >= cfg.target_recall:
            break
    return {
        f"recall_at_{k}": recall,
        "recall_queries": len(queries),
        "search_params": params,
        "search_qps": len(queries) / max(search_s, 1e-9),
        "exact_qps": len(queries) / max(exact_s, 1e-9),
    }


def _knob_from_index(index) -> str | None:
    """The search-time accuracy knob of an index: nprobe (IVF), efSearch (HNSW) or none (Flat)."""
    import faiss

    try:
        faiss.extract_index_ivf(index)
        return "nprobe"
    except RuntimeError:
        pass
    name = type(index).__name__
    return "efSearch" if "HNSW" in name else None


def write_index_dir(built: BuiltIndex, out: str | Path) -> None:
    """Index and id map first, manifest last, in a staged folder swapped in whole."""
    import faiss

    with staged_dir(out) as staging:
        faiss.write_index(built.index, str(staging / INDEX_FILE))
        write_parquet_atomic(pa.table({"id": built.ids}), staging / IDS_FILE)
        write_json_atomic(built.manifest, staging / MANIFEST)


@dataclass
class LoadedIndex:
    index: object
    ids: pa.Array
    manifest: dict

    @property
    def metric(self) -> str:
        return self.manifest["metric"]

    def search(self, queries: np.ndarray, k: int) -> tuple[list[list[object]], np.ndarray]:
        """Top-k original ids and scores (cosine similarity, or squared L2 distance) per query."""
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.manifest["dim"]:
            raise InputError(f"query vectors have dim {q.shape[1]}, the index holds dim {self.manifest['dim']}")
        if self.metric == "cosine":
            q = _normalise(q)
        scores, rows = self.index.search(q, min(k, self.index.ntotal))
        id_list = self.ids.to_pylist()
        return [[id_list[r] for r in row if r >= 0] for row in rows], scores


def load_index_dir(path: str | Path) -> LoadedIndex:
    import faiss
    import pyarrow.parquet as pq

    check_local(path, "index")
    path = Path(path)
    manifest = read_manifest(path, MANIFEST_KIND)
    for name in (INDEX_FILE, IDS_FILE):
        if not (path / name).exists():
            raise ArtifactError(f"{path}: incomplete index dir, {name} missing")
    try:
        index = faiss.read_index(str(path / INDEX_FILE))
    except RuntimeError as exc:
        raise ArtifactError(f"{path / INDEX_FILE}: not a readable FAISS index ({str(exc).splitlines()[0]})") from None
    ids = pq.read_table(path / IDS_FILE).column("id").combine_chunks()
    if index.ntotal != len(ids) or index.ntotal != manifest["ntotal"]:
        raise ArtifactError(f"{path}: index holds {index.ntotal} vectors but the id map {len(ids)}")
    space = faiss.ParameterSpace()
    for knob, value in manifest.get("search_params", {}).items():
        space.set_index_parameter(index, knob, value)
    return LoadedIndex(index=index, ids=ids, manifest=manifest)


def index_collection(vectors_dir: str | Path, out: str | Path, cfg: IndexConfig) -> dict:
    """`vecjob index`: build and publish under a lock; returns the index manifest."""
    out = check_output(out, "--out", [vectors_dir])
    VectorsDir.open(vectors_dir)  # refused before the lock: a missing input leaves nothing behind
    with output_lock(out):
        built = build_index(vectors_dir, cfg)
        write_index_dir(built, out)
    return built.manifest
