"""`vecjob run JOB.toml`: the stages a job spec names (`vecjob.stages`), in order, each skipped when
up to date.

A stage's fingerprint hashes its inputs (file contents or the upstream output's fingerprint) and its
config; the input shards are hashed once per run. After a stage succeeds its fingerprint goes into
`<out>/run_state.json`; the next run skips a stage whose fingerprint matches and whose output
manifest exists. Training is the exception: the model is pinned and retrained only as
`vecjob.lifecycle` decides, so a night over a grown collection encodes its new shards, updates the
index in place and keeps the model. `<out>/run_manifest.json` records each run: stages, ran or
skipped and why, timings, headline metrics, and the night's report (shards new and removed, vectors
added and removed, the drift measured, the index action).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from vecjob import storage
from vecjob.config import JobSpec
from vecjob.errors import ArtifactError, ConfigError
from vecjob.lifecycle import publish_when_ready
from vecjob.outputs import check_output, output_lock
from vecjob.parquet_io import MANIFEST, new_manifest, read_json, write_json_atomic
from vecjob.stages import STAGES, RunContext, check_data_columns

STATE_FILE = "run_state.json"


def run_job(
    spec: JobSpec,
    force: bool = False,
    on_stage: Callable[[str, str], None] | None = None,
    retrain: bool = False,
) -> dict:
    """Run the job's stages under one lock on the run dir; returns the run manifest.
    `force` redoes every stage (and retrains); `retrain` trains a new model and switches to it.
    An `out` in an object store runs in its local mirror, pushed to the store after each stage."""
    on_stage = on_stage or (lambda stage, line: None)
    for name in spec.stages:  # settings a stage cannot run with, before anything is written or leased
        STAGES[name].check(spec)
    if any(STAGES[name].reads_data for name in spec.stages):
        check_data_columns(spec)
    if not storage.is_uri(spec.out):
        return _run_in(spec, force, on_stage, retrain, publish=lambda: None)
    with storage.mirrored(spec.out, "out") as local:
        return _run_in(spec.model_copy(update={"out": str(local)}), force, on_stage, retrain,
                       publish=lambda: storage.push(local, spec.out))


def _run_in(spec: JobSpec, force: bool, on_stage: Callable[[str, str], None], retrain: bool,
            publish: Callable[[], object]) -> dict:
    """The run in a local run dir (the mirror of one in a store), under its lock."""
    root = check_output(spec.out, "out", markers=(), kind="vecjob.run")  # stages check their own folders
    inputs = [*spec.data.paths, *spec.sentiment.labels]
    for name in spec.stages:  # a stage folder in an input folder would be read as input: refused before any mkdir
        if STAGES[name].folder:
            check_output(root / STAGES[name].folder, "out", inputs, markers=())
    for name in spec.stages:  # before anything is written: a stage whose input no stage of this run makes
        for needed in STAGES[name].needs:
            if needed not in spec.stages and not (root / STAGES[needed].folder / MANIFEST).exists():
                raise ConfigError(f"stages: {name} reads what the {needed} stage writes, and {root} has none yet: "
                                  f"add \"{needed}\" to stages")
    with output_lock(root):
        root.mkdir(parents=True, exist_ok=True)
        return _run_locked(spec, root, force, retrain or force, on_stage, publish)


def _run_locked(spec: JobSpec, root: Path, force: bool, retrain: bool, on_stage: Callable[[str, str], None],
                publish: Callable[[], object]) -> dict:
    state_path = root / STATE_FILE
    try:
        state = read_json(state_path) if state_path.exists() else {}
    except ArtifactError:  # what each stage last ran with, damaged: each checks its output again
        on_stage("run", f"{state_path} did not read (damaged): every stage checks its output again")
        state = {}
    ctx = RunContext(spec, root, retrain)
    before = _collection_state(ctx.folder("encode"))
    records = []
    t_run = time.perf_counter()
    for name in spec.stages:
        stage = STAGES[name]
        fp = stage.fingerprint(ctx)
        plan = stage.plan(ctx, fp, state.get(name), force)
        if not plan.run:
            records.append({"stage": name, "status": plan.status, "fingerprint": fp, "metrics": plan.details})
            on_stage(name, plan.status)
            continue
        on_stage(name, plan.status or "running")
        t0 = time.perf_counter()
        metrics = stage.run(ctx, plan)
        state[name] = fp
        write_json_atomic(state, state_path)
        publish()
        records.append({"stage": name, "status": "ran", "fingerprint": fp,
                        "seconds": round(time.perf_counter() - t0, 2), "metrics": metrics})
        on_stage(name, f"ran in {records[-1]['seconds']:.1f}s: {headline(metrics)}")
        made_with_model = [ctx.folder(s) for s in ("encode", "index") if s in spec.stages]
        if publish_when_ready(ctx.folder("train"), made_with_model):
            publish()
            on_stage("train", "published the retrained model (its vectors and index are published)")
            records.append({"stage": "publish model", "status": "ran",
                            "metrics": {"model_fingerprint": ctx.upstream("train", "model_fingerprint")}})
    manifest = new_manifest("vecjob.run", job=spec.name, spec={**spec.model_dump(), "out": ctx.published_at},
                            stages=records,
                            night=_night_report(before, _collection_state(ctx.folder("encode")), records),
                            seconds=round(time.perf_counter() - t_run, 2))
    write_json_atomic(manifest, root / "run_manifest.json")
    publish()
    return manifest


def headline(metrics: dict) -> str:
    """A stage's measured figures in one line (best round, vectors written, recall, NMI, accuracy, …)."""
    keys = ("documents", "shards_written", "best_round", "epochs_seen", "stop_reason", "val_loss", "shards_encoded",
            "rows_encoded", "rows_out", "action", "added", "removed", "recall_at_10", "k", "silhouette", "nmi",
            "accuracy", "macro_f1", "test_rows", "test_split")
    shown = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
             if k in keys and v is not None]  # no recall@10 for an index of under 10 vectors
    reason = f" (why: {metrics['why']})" if metrics.get("why") else ""
    return (", ".join(shown) or "-") + reason


def _collection_state(vectors_dir: Path) -> dict:
    """What the collection holds now: the vector shards' inputs."""
    vectors = read_json(vectors_dir / MANIFEST) if (vectors_dir / MANIFEST).exists() else {}
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
