"""`vecjob run JOB.toml`: the stages a job spec names, in order, each skipped when up to date.

A stage's fingerprint hashes its inputs (file contents or the upstream output's fingerprint) and its
config. After a stage succeeds its fingerprint goes into `<out>/run_state.json`; the next run skips a
stage whose fingerprint matches and whose output manifest exists. Training is the exception: the
model is pinned and retrained only as `vecjob.lifecycle` decides, so a night over a grown collection
encodes its new shards, updates the index in place and keeps the model. `<out>/run_manifest.json`
records each run: stages, ran or skipped and why, timings, headline metrics, and the night's report
(shards new and removed, vectors added and removed, the drift measured, the index action).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from vecjob import storage
from vecjob.config import JobSpec
from vecjob.lifecycle import active_model, decide, publish_when_ready, settings_fingerprint
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
        "corpus": spec.data.paths[0],  # may be an object-store URI
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
        return fingerprint(stage, data_cols, settings_fingerprint(spec.tokenizer, spec.model, spec.train),
                           TOKENIZER_VERSION)
    if stage == "encode":
        return fingerprint(stage, _data_fingerprint(spec), data_cols,
                           _upstream(active_model(dirs["train"]), "model_fingerprint"), spec.encode.model_dump())
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
    retrain: bool = False,
    publish: Callable[[], object] | None = None,
    published_at: str | None = None,
) -> dict:
    """Run the job's stages under one lock on the run dir; returns the run manifest.
    `force` redoes every stage (and retrains); `retrain` trains a new model and switches to it.
    An `out` in an object store runs in its local mirror, which `publish` pushes after each stage;
    `published_at` is where readers (Ray workers on any node) find the run dir's folders."""
    on_stage = on_stage or (lambda stage, line: None)
    if storage.is_uri(spec.out):  # worked on in a local mirror, published after every stage
        with storage.mirrored(spec.out, "out") as local:
            return run_job(spec.model_copy(update={"out": str(local)}), force, on_stage, retrain,
                           publish=lambda: storage.push(local, spec.out), published_at=spec.out)
    root = check_output(spec.out, "out", markers=())  # stages check their own folders
    with output_lock(root):
        root.mkdir(parents=True, exist_ok=True)
        return _run_locked(spec, root, force, retrain or force, on_stage, publish or (lambda: None),
                           published_at or str(root))


def _run_locked(spec: JobSpec, root: Path, force: bool, retrain: bool, on_stage: Callable[[str, str], None],
                publish: Callable[[], object], published_at: str) -> dict:
    state_path = root / STATE_FILE
    state = read_json(state_path) if state_path.exists() else {}
    dirs = stage_dirs(spec)
    before = _collection_state(dirs)
    records = []
    t_run = time.perf_counter()
    for stage in spec.stages:
        fp = stage_fingerprint(spec, stage)
        if stage == "train":
            decision = decide(spec, dirs["train"], dirs["encode"], retrain)
            if not decision["train"]:
                records.append({"stage": stage, "status": "skipped: " + decision["why"], "fingerprint": fp,
                                "metrics": _plain(decision)})
                on_stage(stage, records[-1]["status"])
                continue
        else:
            output_ready = (dirs[stage] / MANIFEST).exists() if stage != "corpus" else _corpus_written(dirs[stage])
            if not force and state.get(stage) == fp and output_ready:
                records.append({"stage": stage, "status": "skipped (up to date)", "fingerprint": fp})
                on_stage(stage, "skipped (up to date)")
                continue
        on_stage(stage, "running" + (f": {decision['why']}" if stage == "train" else ""))
        t0 = time.perf_counter()
        if stage == "train":
            metrics = {**_plain(decision), **_train(spec, decision["target"], published_at)}
        else:
            metrics = _run_stage(spec, stage, dirs, root, published_at)
        # The fingerprint of a downstream stage may read this stage's fresh manifest: recompute.
        fp = stage_fingerprint(spec, stage)
        state[stage] = fp
        write_json_atomic(state, state_path)
        publish()
        records.append({"stage": stage, "status": "ran", "fingerprint": fp,
                        "seconds": round(time.perf_counter() - t0, 2), "metrics": metrics})
        on_stage(stage, f"ran in {records[-1]['seconds']:.1f}s: {headline(metrics)}")
        made_with_model = [dirs[s] for s in ("encode", "index") if s in spec.stages]
        if publish_when_ready(dirs["train"], made_with_model):
            publish()
            on_stage("train", "published the retrained model (its vectors and index are published)")
            records.append({"stage": "publish model", "status": "ran",
                            "metrics": {"model_fingerprint": _upstream(dirs["train"], "model_fingerprint")}})
    manifest = new_manifest("vecjob.run", job=spec.name, spec={**spec.model_dump(), "out": published_at}, stages=records,
                            night=_night_report(before, _collection_state(dirs), records),
                            seconds=round(time.perf_counter() - t_run, 2))
    write_json_atomic(manifest, root / "run_manifest.json")
    publish()
    return manifest


def _plain(decision: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in decision.items() if k not in ("train", "target")}


def headline(metrics: dict) -> str:
    """A stage's measured figures in one line (best round, vectors written, recall, NMI, accuracy, …)."""
    keys = ("why", "best_round", "epochs_seen", "stop_reason", "val_loss", "shards_encoded", "rows_out", "action",
            "added", "removed", "recall_at_10", "k", "nmi", "accuracy", "macro_f1")
    shown = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if k in keys]
    return ", ".join(shown) or "-"


def _collection_state(dirs: dict[str, Path]) -> dict:
    """What the collection holds now: the vector shards' inputs and the index's size."""
    vectors = read_json(dirs["encode"] / MANIFEST) if (dirs["encode"] / MANIFEST).exists() else {}
    return {"inputs": {s["input"]: s["input_fingerprint"] for s in vectors.get("shards", [])}}


def _night_report(before: dict, after: dict, records: list[dict]) -> dict:
    """The night in a few numbers: what came, went and changed, and what the model and index did."""
    old, new = before["inputs"], after["inputs"]
    report = {
        "shards_new": sum(1 for p in new if p not in old),
        "shards_changed": sum(1 for p in new if p in old and old[p] != new[p]),
        "shards_removed": sum(1 for p in old if p not in new),
        "shards_unchanged": sum(1 for p in new if old.get(p) == new[p]),
    }
    for r in records:
        m = r.get("metrics", {})
        if r["stage"] == "train":
            report["model"] = {"action": "trained" if r["status"] == "ran" else "kept", "why": m.get("why"),
                               **{k: m[k] for k in ("drift", "unknown_share_new", "unknown_share_training",
                                                    "age_days") if k in m}}
        if r["stage"] == "index" and r["status"] == "ran":
            report["index"] = {k: m.get(k) for k in ("action", "why", "added", "removed", "ntotal", "recall_at_10")}
        if "seconds" in r:
            report.setdefault("seconds", {})[r["stage"]] = r["seconds"]
    return report


def _train(spec: JobSpec, target: Path, published_at: str) -> dict:
    from vecjob.ray_train import train_model

    train_cfg = spec.train
    if storage.is_uri(published_at) and not train_cfg.storage_path:  # Ray Train needs storage every node reaches
        train_cfg = train_cfg.model_copy(update={"storage_path": storage.join(published_at, storage.TRAIN_STORAGE)})
    return train_headline(train_model(spec.data, target, spec.tokenizer, spec.model, train_cfg,
                                      address=spec.address or None))


def train_headline(model_manifest: dict) -> dict:
    """The figures of the round whose weights were published (the best), not of the last one run,
    and why training stopped."""
    best_round = model_manifest["best_round"]
    best = next((h for h in model_manifest["history"] if h["round"] == best_round), {})
    return {"best_round": best_round, "rounds_run": model_manifest["rounds_run"],
            "epochs_seen": model_manifest["epochs_seen"], "stop_reason": model_manifest["stop_reason"],
            "val_loss": best.get("val_loss"), "val_token_acc": best.get("val_token_acc")}


def _corpus_written(location: str) -> bool:
    return bool(storage.list_files(location)) if storage.is_uri(location) else Path(location).exists()


def _published_model(model_dir: Path, root: Path, published_at: str) -> str:
    """The model this run encodes with, where every Ray worker can read it (the store, when there)."""
    return storage.join(published_at, active_model(model_dir).relative_to(root).as_posix())


def _run_stage(spec: JobSpec, stage: str, dirs: dict[str, Path], root: Path, published_at: str) -> dict:
    if stage == "corpus":
        from vecjob.corpus import write_corpus

        dest, inside = dirs["corpus"], published_at.rstrip("/") + "/"
        if storage.is_uri(dest) and dest.startswith(inside):  # published with the run dir, by its mirror
            paths = write_corpus(spec.corpus, root / dest[len(inside):])
        elif storage.is_uri(dest):
            with storage.mirrored(dest, "data.paths") as local:
                paths = write_corpus(spec.corpus, local)
        else:
            paths = write_corpus(spec.corpus, dest)
        return {"shards": len(paths)}
    if stage == "encode":
        from vecjob.ray_encode import encode_collection

        model = _published_model(dirs["train"], root, published_at)
        m = encode_collection(spec.data, model, dirs["encode"], spec.encode,
                              address=spec.address or None)
        return m["counts"]
    if stage == "index":
        from vecjob.index import index_collection

        m = index_collection(dirs["encode"], dirs["index"], spec.index, update=True)
        last = m["updates"][-1]
        return {"factory": m["factory"], "ntotal": m["ntotal"], "recall_at_10": m.get("recall_at_10"),
                **{k: last[k] for k in ("action", "why", "added", "removed")}}
    if stage == "cluster":
        from vecjob.cluster import cluster_collection

        s = cluster_collection(dirs["encode"], dirs["cluster"], spec.cluster.k, spec.cluster, data=spec.data.paths,
                               id_col=spec.data.id_col, text_col=spec.data.text_col, update=True)
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
