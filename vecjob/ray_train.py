"""`vecjob train`: vocabulary and chunks on the driver, then a Ray Train TorchTrainer whose worker loop
is `vecjob.training.train_loop`. Rank 0 reports a checkpoint every round; a failed worker group
restarts from it (FailureConfig), and rerunning the same job resumes from it (the run name is the
job's fingerprint). The model dir is written once, at the end, atomically.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import torch

from vecjob import storage
from vecjob.config import DataConfig, ModelConfig, TokenizerConfig, TrainConfig
from vecjob.dataset import build_vocab, heldout_unknown_share, training_chunks
from vecjob.errors import ArtifactError, VecjobError, from_worker
from vecjob.model_dir import MANIFEST_KIND, write_model_dir
from vecjob.outputs import check_output, output_lock
from vecjob.parquet_io import check_shards, file_fingerprint, fingerprint, new_manifest
from vecjob.tokenizer import Tokenizer, unknown_share
from vecjob.training import TrainState, build_model, round_line, set_center, train_loop

STATE_FILE = "train_state.pt"


def resolve_workers(train_cfg: TrainConfig) -> tuple[int, bool]:
    """(workers, use_gpu) from the config and what the cluster has."""
    from vecjob.runtime import cluster_cpus_gpus

    cpus, gpus = cluster_cpus_gpus()
    use_gpu = {"yes": True, "no": False}.get(train_cfg.use_gpu, gpus > 0)
    if use_gpu and gpus == 0:
        raise VecjobError("use_gpu = yes, but the Ray cluster has no GPUs")
    if train_cfg.workers:
        return train_cfg.workers, use_gpu
    if use_gpu:
        return max(1, int(gpus / train_cfg.gpus_per_worker)), True
    # One single-threaded worker per core: the LSTM's many small ops scale badly with threads.
    return max(1, min(cpus, 8)), False


def train_model(
    data: DataConfig,
    out: str | Path,
    tok_cfg: TokenizerConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    address: str | None = None,
) -> dict:
    """Train on the shards in `data` and publish a model dir at `out`; returns its manifest.
    The output and every shard are checked before Ray starts (`address`: a cluster, else a local
    Ray); the model dir is locked throughout."""
    from vecjob import runtime

    out = check_output(out, "--out", data.paths)
    shards = check_shards(data.paths, data.id_col, data.text_col, data.strict)
    with output_lock(out):
        runtime.connect(address)
        return _train_locked(shards, out, data, tok_cfg, model_cfg, train_cfg)


def _train_locked(shards, out: Path, data: DataConfig, tok_cfg: TokenizerConfig, model_cfg: ModelConfig,
                  train_cfg: TrainConfig) -> dict:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    inputs = [{"path": s.path, "rows": s.num_rows, "fingerprint": file_fingerprint(s.path)} for s in shards]
    vocab = build_vocab(shards, data.id_col, data.text_col, tok_cfg)
    tokenizer = Tokenizer(vocab, tok_cfg.max_len)
    train, val, counts = training_chunks(
        shards, tokenizer, data.id_col, data.text_col, train_cfg, data.strict, model_cfg.bow_context
    )
    timings["prepare_s"] = time.perf_counter() - t0

    workers, use_gpu = resolve_workers(train_cfg)
    if len(train) < workers:
        raise VecjobError(f"only {len(train)} training chunks for {workers} workers: add data or lower --workers")
    job_fp = fingerprint(
        [i["fingerprint"] for i in inputs], tok_cfg.model_dump(), model_cfg.model_dump(),
        train_cfg.what_shapes_the_weights(), workers, use_gpu,
    )
    checkpoints = train_cfg.storage_path or str(out.parent / f".{out.name}{storage.TRAIN_STORAGE}")
    run_name = f"vecjob-train-{job_fp[:16]}"
    # Rank 0 writes a line per round here and the driver echoes it: the embedded Ray does not forward
    # workers' output. On a cluster storage_path is shared or in a store (Ray Train needs it so).
    progress = storage.join(checkpoints, f"{run_name}.progress")
    storage.remove(progress)
    checkpoints_fs, checkpoints_path = storage.filesystem(checkpoints)
    resources = {"CPU": 1, **({"GPU": train_cfg.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "data": [ray.put((train, val))],  # in a list so Ray passes the reference, not the bytes
            "vocab_size": len(vocab),
            "token_counts": list(vocab.counts),
            "model": model_cfg.model_dump(),
            "train": train_cfg.model_dump(),
            "progress": progress,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=checkpoints_path,
            storage_filesystem=checkpoints_fs,
            failure_config=FailureConfig(max_failures=train_cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    t0 = time.perf_counter()
    try:
        with _echo_lines(progress):
            result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in several types
        raise from_worker(exc, "training") from exc
    timings["fit_s"] = time.perf_counter() - t0
    if result.checkpoint is None:
        raise VecjobError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as ckpt:
        blob = torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=False)
    state = TrainState(**blob["state"])
    t0 = time.perf_counter()
    best = build_model(model_cfg, len(vocab), train_cfg.seed)
    best.load_state_dict(state.best_weights)
    set_center(best, train)
    timings["center_s"] = time.perf_counter() - t0

    manifest = new_manifest(
        MANIFEST_KIND,
        inputs=inputs,
        data_fingerprint=fingerprint([i["fingerprint"] for i in inputs]),
        job_fingerprint=job_fp,
        columns={"id": data.id_col, "text": data.text_col},
        counts={
            "documents": counts.rows,
            "skipped_empty": counts.skipped_empty,
            "train_chunks": len(train),
            "val_chunks": len(val),
            "train_tokens": int(train.lengths.sum()),
            "vocab_size": len(vocab),
            "unknown_share": unknown_share(train.flat),
            # The drift baseline (vecjob.lifecycle): the unknown share of documents the vocabulary has not seen.
            "unknown_share_heldout": heldout_unknown_share(shards, data.id_col, data.text_col, tok_cfg,
                                                           train_cfg.val_fraction),
        },
        workers=workers,
        use_gpu=use_gpu,
        best_round=state.best_round,
        rounds_run=state.round,
        steps=state.step,
        epochs_seen=state.history[-1]["epochs"] if state.history else 0.0,
        stop_reason=state.stop_reason,
        train_minutes=state.seconds / 60,
        resumed_after_rounds=state.resumed_after_rounds,
        history=state.history,
        timings=timings,
        versions={"torch": torch.__version__, "ray": ray.__version__},
        config={"model": model_cfg.model_dump(), "tokenizer": tok_cfg.model_dump(), "train": train_cfg.model_dump()},
    )
    published = write_model_dir(out, model_cfg, tok_cfg, vocab, best.state_dict(), manifest)
    storage.remove(storage.join(checkpoints, run_name))
    storage.remove(progress)
    return published


@contextlib.contextmanager
def _echo_lines(location: str, every_s: float = 1.0):
    """Print the lines added to the file at `location` while the block runs (and those left at its end)."""
    from vecjob.reporting import console

    offset = 0

    def echo() -> None:
        nonlocal offset
        try:
            data = storage.read_bytes(location)[offset:]
        except ArtifactError:
            return  # no round has ended yet
        offset += len(data)
        for line in data.decode().splitlines():
            console.print(line, highlight=False)

    try:
        with storage.every(every_s, echo):
            yield
    finally:
        echo()


def worker_loop(config: dict) -> None:
    """Runs on every Ray Train worker: restore, wrap in DDP, run the library loop, report per round."""
    import ray
    import ray.train
    from ray.train.torch import get_device, prepare_model

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    if device.type == "cpu":
        torch.set_num_threads(1)
    else:
        torch.backends.cudnn.benchmark = True
    model_cfg = ModelConfig.model_validate(config["model"])
    train_cfg = TrainConfig.model_validate(config["train"])
    train, val = ray.get(config["data"][0])

    model = build_model(model_cfg, config["vocab_size"], train_cfg.seed, config["token_counts"], train)
    state, optimizer_state = TrainState(), None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt:
            blob = torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=False)
        model.load_state_dict(blob["model"])
        state, optimizer_state = TrainState(**blob["state"]), blob["optimizer"]
        state.resumed_after_rounds.append(state.round)
    # Adaptive-softmax tail clusters may get no targets in a batch: DDP must tolerate unused params.
    model = prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})

    # A restarted worker group goes on after the lines already written (they are rewritten whole).
    lines = [storage.read_bytes(config["progress"]).decode()] if rank == 0 and storage.exists(config["progress"]) else []

    def on_round_end(state: TrainState, optimizer: torch.optim.Optimizer, metrics: dict) -> None:
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        lines.append(round_line(metrics) + "\n")  # rewritten whole: an object store cannot append
        storage.write_bytes(config["progress"], "".join(lines).encode())
        core = model.module if hasattr(model, "module") else model
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(
                {"model": core.state_dict(), "optimizer": optimizer.state_dict(), "state": state.to_dict()},
                Path(tmp) / STATE_FILE,
            )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    train_loop(
        model, train, val, model_cfg, train_cfg,
        device=device, rank=rank, world_size=world,
        state=state, optimizer_state=optimizer_state, on_round_end=on_round_end,
    )
