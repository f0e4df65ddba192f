"""A pinned model's life across nightly runs: keep it, or train a new one, and switch to it safely.

The first run trains. Later runs keep the published model, so the night's cost follows the night's
new documents, and retrain only when asked (`vecjob run --retrain`), when the model settings in the
spec changed, when the model is older than `train.max_model_age_days`, or when the night's new
documents drift from what it was trained on: the share of their tokens the vocabulary does not know,
less that share in held-out training documents, over `train.retrain_drift`.

A retrained model waits beside the published one (`.model-next`) while the collection is encoded
again and the index rebuilt with it; it is published only once the index made with it is, so a
reader never pairs a query encoded by one model with an index of another's vectors.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from vecjob import storage
from vecjob.config import REMOVE_THE_KEY, JobSpec, ModelConfig, TokenizerConfig, TrainConfig, first_error
from vecjob.model_dir import CONFIG, WEIGHTS
from vecjob.outputs import MANIFEST, first_missing, swap_into_place
from vecjob.parquet_io import check_shards, file_fingerprint, fingerprint, read_json, read_row_groups
from vecjob.tokenizer import TOKEN_PATTERNS, TOKENIZER_VERSION, VOCAB_FILE, Tokenizer, Vocab, unknown_share

PENDING = ".model-next"
DRIFT_SAMPLE = 20_000  # documents of the night's new shards tokenised to measure drift


def pending_model(model_dir: Path) -> Path:
    return model_dir.parent / PENDING


def active_model(model_dir: Path) -> Path:
    """The model this run encodes with: a retrained one waiting to be published, else the published one."""
    pending = pending_model(model_dir)
    return pending if (pending / MANIFEST).exists() else model_dir


def settings_fingerprint(tok: TokenizerConfig, model: ModelConfig, train: TrainConfig) -> str:
    return fingerprint(tok.model_dump(), model.model_dump(), train.what_shapes_the_weights(), TOKENIZER_VERSION)


def decide(spec: JobSpec, model_dir: Path, vectors_dir: Path, retrain: bool) -> dict:
    """Whether this run trains a model, where it goes, and why (with the drift measured)."""
    pending = pending_model(model_dir)
    model_files = (CONFIG, WEIGHTS, VOCAB_FILE)
    if (pending / MANIFEST).exists() and not retrain:
        if gone := first_missing(pending, model_files):  # lost: nothing can be encoded with it
            return {"train": True, "target": pending, "why": gone}
        return {"train": False, "why": "a retrained model is waiting for its index (an earlier run stopped)"}
    if not (model_dir / MANIFEST).exists():
        return {"train": True, "target": model_dir, "why": "no model yet"}
    if retrain:
        return {"train": True, "target": pending, "why": "asked (--retrain)"}
    if gone := first_missing(model_dir, model_files):
        return {"train": True, "target": pending, "why": gone}
    manifest = read_json(model_dir / MANIFEST)
    config = manifest.get("config", {})
    try:
        trained_with = settings_fingerprint(TokenizerConfig.model_validate(config.get("tokenizer", {})),
                                            ModelConfig.model_validate(config.get("model", {})),
                                            TrainConfig.model_validate(config.get("train", {})))
    except ValidationError as exc:
        return {"train": True, "target": pending, "why": "the model was trained with a setting this vecjob no "
                f"longer runs ({first_error(exc).removesuffix(REMOVE_THE_KEY)})"}
    if trained_with != settings_fingerprint(spec.tokenizer, spec.model, spec.train) or \
            read_json(model_dir / "config.json").get("tokenizer_version") not in TOKEN_PATTERNS:
        return {"train": True, "target": pending, "why": "the model settings in the spec changed"}
    age_days = (time.time() - created_at(manifest)) / 86_400
    if spec.train.max_model_age_days and age_days > spec.train.max_model_age_days:
        return {"train": True, "target": pending, "age_days": round(age_days, 1),
                "why": f"the model is {age_days:.1f} days old (max {spec.train.max_model_age_days})"}
    drift = measure_drift(spec, model_dir, manifest, vectors_dir)
    if drift["drift"] > spec.train.retrain_drift:
        return {"train": True, "target": pending, "age_days": round(age_days, 1), **drift,
                "why": f"drift {drift['drift']:.3f} > {spec.train.retrain_drift}: the new documents' unknown-token "
                       f"share is {drift['unknown_share_new']:.3f} against {drift['unknown_share_training']:.3f}"}
    return {"train": False, "age_days": round(age_days, 1), **drift,
            "why": f"kept (drift {drift['drift']:.3f} ≤ {spec.train.retrain_drift})"}


def created_at(manifest: dict) -> float:
    """When a manifest was written, in seconds since the epoch. Its time carries the writer's UTC
    offset: read as the reader's local time, a model written on a cluster in another time zone aged
    by that many hours."""
    created = str(manifest.get("created", ""))
    try:
        return datetime.strptime(created, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        pass
    try:  # no offset: the local time of a machine like this one
        return time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return time.time()


def measure_drift(spec: JobSpec, model_dir: Path, manifest: dict, vectors_dir: Path) -> dict:
    """Unknown-token share of the shards not encoded yet (a sample), against the training data's."""
    encoded = set()
    if (vectors_dir / MANIFEST).exists():
        encoded = {s["input_fingerprint"] for s in read_json(vectors_dir / MANIFEST).get("shards", [])}
    shards = check_shards(spec.data.paths, spec.data.id_col, spec.data.text_col, content=False)  # encode checks ids
    fingerprints = storage.each_file(file_fingerprint, [s.path for s in shards])
    new = [s for s, fp in zip(shards, fingerprints) if fp not in encoded]
    tokenizer = Tokenizer(Vocab.load(model_dir), spec.tokenizer.max_len,
                          read_json(model_dir / "config.json").get("tokenizer_version", TOKENIZER_VERSION))
    ids, documents = [], 0
    for shard in new:
        if documents >= DRIFT_SAMPLE:
            break
        texts = read_row_groups(shard.path, list(range(len(shard.row_group_rows))), [spec.data.text_col])
        texts = texts.column(0).slice(0, DRIFT_SAMPLE - documents)
        ids += tokenizer.encode(texts)
        documents += len(texts)
    tokens = np.concatenate(ids) if ids else np.empty(0, np.int64)
    counts = manifest.get("counts", {})
    baseline = float(counts.get("unknown_share_heldout", counts.get("unknown_share", 0.0)))
    # New documents without a word (blank texts, skipped by encode) say nothing of drift: not -baseline.
    new_share = round(unknown_share(tokens), 4) if len(tokens) else None
    return {"new_shards": len(new), "sampled_documents": documents, "sampled_tokens": len(tokens),
            "unknown_share_new": new_share, "unknown_share_training": round(baseline, 4),
            "drift": round(new_share - baseline, 4) if new_share is not None else 0.0}


def publish_when_ready(model_dir: Path, outputs: list[Path]) -> bool:
    """Publish a waiting model once every output made from it (vectors, index) is published; True if it was."""
    pending = pending_model(model_dir)
    if not (pending / MANIFEST).exists():
        return False
    made_by = read_json(pending / MANIFEST)["model_fingerprint"]
    for folder in outputs:
        if not (folder / MANIFEST).exists() or read_json(folder / MANIFEST).get("model_fingerprint") != made_by:
            return False
    swap_into_place(pending, model_dir)
    return True
