"""`vecjob run JOB.toml`: the stages a job spec names, in order, each skipped when up to date.

A stage's fingerprint hashes its inputs (file contents or the upstream output's fingerprint) and its
config. After a stage succeeds its fingerprint goes into `<out>/run_state.json`; the next run skips a
stage whose fingerprint matches and whose output manifest exists. `<out>/run_manifest.json` records
each run: stages, ran or skipped, fingerprints, timings, headline metrics.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from vecjob.config import JobSpec
from vecjob.outputs import check_output, output_lock
from vecjob.parquet_io import (
    MANIFEST,
    discover,
    file_fingerprint,
    fingerprint,
    new_manifest,
    read_json,
    write_json_atomic,
)
from vecjob.tokenizer import TOKENIZER_VERSION

STATE_FILE = "run_state.json"


def stage_dirs(spec: JobSpec) -> dict[str, Path]:
    root = Path(spec.out)
    return {
        "corpus": Path(spec.data.paths[0]),
        "train": root / "model",
        "encode": root / "vectors",
        "index": root / "index",
        "cluster": root / "clusters",
        "sentiment": root / "sentiment",
    }


def _data_fingerprint(spec: JobSpec) -> str:
    return fingerprint([file_fingerprint(p) for p in discover(spec.data.paths)])


def _upstream(folder: Path, key: str) -> str:
    return read_json(folder / MANIFEST).get(key, "")


def stage_fingerprint(spec: JobSpec, stage: str) -> str:
    dirs = stage_dirs(spec)
    data_cols = spec.data.model_dump(exclude={"paths"})
    if stage == "corpus":
        from vecjob import __version__

        return fingerprint(stage, spec.corpus, __version__)
    if stage == "train":
        return fingerprint(stage, _data_fingerprint(spec), data_cols, spec.tokenizer.model_dump(),
                           TOKENIZER_VERSION, spec.model.model_dump(),
                           spec.train.model_dump(exclude={"max_failures"}))
    if stage == "encode":
        return fingerprint(stage, _data_fingerprint(spec), data_cols,
                           _upstream(dirs["train"], "model_fingerprint"), spec.encode.model_dump())
    if stage == "index":
        return fingerprint(stage, _upstream(dirs["encode"], "vectors_fingerprint"), spec.index.model_dump())
    if stage == "cluster":
        return fingerprint(stage, _upstream(dirs["encode"], "vectors_fingerprint"), _data_fingerprint(spec),
                           data_cols, spec.cluster.model_dump())
    if stage == "sentiment":
        labels = spec.sentiment.labels or spec.data.paths
        return fingerprint(stage, _upstream(dirs["encode"], "vectors_fingerprint"),
                           [file_fingerprint(p) for p in discover(labels)], data_cols, spec.sentiment.model_dump())
    raise ValueError(f"unknown stage {stage}")


def run_job(
    spec: JobSpec,
    force: bool = False,
    on_stage: Callable[[str, str], None] | None = None,
) -> dict:
    """Run the job's stages under one lock on the run dir; returns the run manifest."""
    root = check_output(spec.out, "out", markers=())  # stages check their own folders
    with output_lock(root):
        root.mkdir(parents=True, exist_ok=True)
        return _run_locked(spec, root, force, on_stage)


def _run_locked(spec: JobSpec, root: Path, force: bool, on_stage: Callable[[str, str], None] | None) -> dict:
    state_path = root / STATE_FILE
    state = read_json(state_path) if state_path.exists() else {}
    dirs = stage_dirs(spec)
    records = []
    t_run = time.perf_counter()
    for stage in spec.stages:
        fp = stage_fingerprint(spec, stage)
        output_ready = (dirs[stage] / MANIFEST).exists() if stage != "corpus" else dirs[stage].exists()
        if not force and state.get(stage) == fp and output_ready:
            records.append({"stage": stage, "status": "skipped (up to date)", "fingerprint": fp})
            if on_stage:
                on_stage(stage, "skipped")
            continue
        if on_stage:
            on_stage(stage, "running")
        t0 = time.perf_counter()
        metrics = _run_stage(spec, stage, dirs)
        # The fingerprint of a downstream stage may read this stage's fresh manifest: recompute.
        fp = stage_fingerprint(spec, stage)
        state[stage] = fp
        write_json_atomic(state, state_path)
        records.append({"stage": stage, "status": "ran", "fingerprint": fp,
                        "seconds": round(time.perf_counter() - t0, 2), "metrics": metrics})
    manifest = new_manifest("vecjob.run", job=spec.name, spec=spec.model_dump(), stages=records,
                            seconds=round(time.perf_counter() - t_run, 2))
    write_json_atomic(manifest, root / "run_manifest.json")
    return manifest


def train_headline(model_manifest: dict) -> dict:
    """The figures of the epoch whose weights were published (the best), not of the last one run."""
    best_epoch = model_manifest["best_epoch"]
    best = next((h for h in model_manifest["history"] if h["epoch"] == best_epoch), {})
    return {"best_epoch": best_epoch, "epochs_run": model_manifest["epochs_run"], "val_loss": best.get("val_loss"),
            "val_token_acc": best.get("val_token_acc")}


def _run_stage(spec: JobSpec, stage: str, dirs: dict[str, Path]) -> dict:
    if stage == "corpus":
        from vecjob.corpus import write_corpus

        paths = write_corpus(spec.corpus, dirs["corpus"])
        return {"shards": len(paths)}
    if stage == "train":
        from vecjob.ray_train import train_model

        m = train_model(spec.data, dirs["train"], spec.tokenizer, spec.model, spec.train, address=spec.address or None)
        return train_headline(m)
    if stage == "encode":
        from vecjob.ray_encode import encode_collection

        m = encode_collection(spec.data, dirs["train"], dirs["encode"], spec.encode, address=spec.address or None)
        return m["counts"]
    if stage == "index":
        from vecjob.index import index_collection

        m = index_collection(dirs["encode"], dirs["index"], spec.index)
        return {"factory": m["factory"], "ntotal": m["ntotal"], "recall_at_10": m.get("recall_at_10")}
    if stage == "cluster":
        from vecjob.cluster import cluster_collection

        s = cluster_collection(dirs["encode"], dirs["cluster"], spec.cluster.k, spec.cluster, data=spec.data.paths,
                               id_col=spec.data.id_col, text_col=spec.data.text_col)
        return {"k": s["k"], **s["metrics"]}
    if stage == "sentiment":
        from vecjob.sentiment import evaluate_classifier, predict_collection, train_classifier

        labels = spec.sentiment.labels or spec.data.paths
        clf_dir = dirs["sentiment"] / "classifier"
        train_classifier(dirs["encode"], labels, clf_dir, spec.sentiment, id_col=spec.data.id_col)
        report = evaluate_classifier(clf_dir, dirs["encode"], labels, spec.sentiment, id_col=spec.data.id_col)
        predict_collection(clf_dir, dirs["encode"], dirs["sentiment"] / "predictions")
        write_json_atomic(new_manifest("vecjob.sentiment_stage", report=report), dirs["sentiment"] / MANIFEST)
        return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
    raise ValueError(f"unknown stage {stage}")
