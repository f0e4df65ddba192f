"""Training on Ray: `RayTrain` fits the model of `vecjob.trainer.train_model` with a Ray Train
TorchTrainer whose worker loop is `vecjob.training.train_loop`. Rank 0 reports a checkpoint every
round; a failed worker group restarts from it (FailureConfig), and rerunning the same job resumes from
it (the run name is the job's fingerprint). One CPU worker on the Ray this process started trains in
this process instead (`vecjob.trainer.InProcess`, checkpointed every round the same way).
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vecjob import storage
from vecjob.config import ModelConfig, TrainConfig
from vecjob.errors import ArtifactError, VecjobError, from_worker
from vecjob.trainer import STATE_FILE, FitJob, InProcess, checkpoint_bytes, load_state, restore
from vecjob.training import DDP_OPTIONS, TrainState, build_model, round_line, train_loop


def resolve_workers(train_cfg: TrainConfig) -> tuple[int, bool]:
    """(workers, use_gpu) from the config and what the cluster has."""
    from vecjob.runtime import check_fits, cluster_cpus_gpus

    cpus, gpus = cluster_cpus_gpus()
    use_gpu = {"yes": True, "no": False}.get(train_cfg.use_gpu, gpus > 0)
    if use_gpu and gpus == 0:
        raise VecjobError("use_gpu = yes, but the Ray cluster has no GPUs")
    if train_cfg.workers:
        check_fits(f"train.workers (--workers) = {train_cfg.workers}", train_cfg.workers, 1,
                   train_cfg.gpus_per_worker if use_gpu else 0)
        return train_cfg.workers, use_gpu
    if use_gpu:
        workers = max(1, int(gpus / train_cfg.gpus_per_worker))
        check_fits(f"train.gpus_per_worker (--gpus-per-worker) = {train_cfg.gpus_per_worker:g}", workers, 1,
                   train_cfg.gpus_per_worker,
                   hint=f"at most the {gpus} GPUs there are")
        return workers, True
    # One single-threaded worker per core: the LSTM's many small ops scale badly with threads.
    return max(1, min(cpus, 8)), False


@dataclass
class RayTrain:
    """Ray Train workers on the cluster at `address` (else RAY_ADDRESS, else an embedded local Ray)."""

    address: str | None = None
    _scratch: list[str] = field(default_factory=list, repr=False)  # removed once the model is published
    _here: InProcess | None = field(default=None, repr=False)  # the fit of one worker in this process

    def start(self, train_cfg: TrainConfig) -> tuple[int, bool]:
        from vecjob import runtime

        runtime.connect(self.address)
        return resolve_workers(train_cfg)

    def versions(self) -> dict:
        import ray

        return {"ray": ray.__version__}

    def clean_up(self) -> None:
        for location in self._scratch:
            storage.remove(location)
        if self._here:
            self._here.clean_up()

    def fit(self, job: FitJob) -> TrainState:
        import ray
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from vecjob import runtime

        train_cfg, out = job.train_cfg, job.out
        checkpoints = train_cfg.storage_path or str(out.parent / f".{out.name}{storage.TRAIN_STORAGE}")
        if job.workers == 1 and not job.use_gpu and runtime.started_here():
            return self._fit_here(job, checkpoints)
        # Rank 0 writes a line per round here and the driver echoes it: the embedded Ray does not forward
        # workers' output. On a cluster storage_path is shared or in a store (Ray Train needs it so).
        progress = storage.join(checkpoints, f"{job.run_name}.progress")
        storage.remove(progress)
        checkpoints_fs, checkpoints_path = storage.filesystem(checkpoints)
        resources = {"CPU": 1, **({"GPU": train_cfg.gpus_per_worker} if job.use_gpu else {})}
        trainer = TorchTrainer(
            worker_loop,
            train_loop_config={
                # In a list so Ray passes the reference, not the bytes.
                "data": [ray.put((job.train, job.val, job.vocab.topic_words()))],
                "vocab_size": len(job.vocab),
                "model": job.model_cfg.model_dump(),
                "train": train_cfg.model_dump(),
                "progress": progress,
            },
            scaling_config=ScalingConfig(num_workers=job.workers, use_gpu=job.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name=job.run_name,
                storage_path=checkpoints_path,
                storage_filesystem=checkpoints_fs,
                failure_config=FailureConfig(max_failures=train_cfg.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=1),
            ),
        )
        on_ctrl_c = signal.getsignal(signal.SIGINT)
        try:
            with _echo_lines(progress):
                result = trainer.fit()
        except SystemExit:  # Ray Train's Ctrl-C handler aborts the run, then exits (Ray's get makes it status 1)
            raise KeyboardInterrupt from None
        except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in several types
            raise from_worker(exc, "training") from exc
        finally:
            if threading.current_thread() is threading.main_thread():  # fit's handler outlives the run
                signal.signal(signal.SIGINT, on_ctrl_c)
        if result.checkpoint is None:
            raise VecjobError("training finished without a checkpoint")
        with result.checkpoint.as_directory() as ckpt:
            state = load_state((Path(ckpt) / STATE_FILE).read_bytes())
        self._scratch = [storage.join(checkpoints, job.run_name), progress]
        return state

    def _fit_here(self, job: FitJob, checkpoints: str) -> TrainState:
        """One CPU worker on the Ray this process started: a Ray Train run would spend its fixed start
        (bench/README.md, "One worker, in this process") on a process that does what this one can.
        What it gives up is the restart of a dead worker, which here would be this process."""
        self._here = InProcess(checkpoints)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as on a Ray Train CPU worker: the LSTM's small ops scale badly with threads
        try:
            return self._here.fit(job)
        finally:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def _echo_lines(location: str, every_s: float = 1.0):
    """Print the lines added to the file at `location` while the block runs (and those left at its end)."""
    from vecjob.reporting import line

    offset = 0

    def echo() -> None:
        nonlocal offset
        try:
            data = storage.read_bytes(location)[offset:]
        except ArtifactError:
            return  # no round has ended yet
        offset += len(data)
        for text in data.decode().splitlines():
            line(text)

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
    train, val, topic_words = ray.get(config["data"][0])

    # Rank 0 alone computes the starting point from the data (LSA term vectors, TF-IDF document
    # frequencies: seconds and GBs on a large collection); wrapping in DDP below copies its weights,
    # and train_loop its buffers, to the other ranks.
    model = build_model(model_cfg, config["vocab_size"], train_cfg.seed, train if rank == 0 else None, topic_words)
    state, optimizer_state = TrainState(), None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt:
            state, optimizer_state = restore(model, (Path(ckpt) / STATE_FILE).read_bytes())
    model = prepare_model(model, parallel_strategy_kwargs=DDP_OPTIONS)

    # A restarted worker group goes on after the lines already written (they are rewritten whole).
    progress = config["progress"]
    lines = [storage.read_bytes(progress).decode()] if rank == 0 and storage.exists(progress) else []

    def on_round_end(state: TrainState, optimizer: torch.optim.Optimizer, metrics: dict) -> None:
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        lines.append(round_line(metrics, train_cfg.max_minutes) + "\n")
        storage.write_bytes(progress, "".join(lines).encode())  # rewritten whole: an object store cannot append
        core = model.module if hasattr(model, "module") else model
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / STATE_FILE).write_bytes(checkpoint_bytes(core, optimizer, state))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    train_loop(
        model, train, val, model_cfg, train_cfg,
        device=device, rank=rank, world_size=world,
        state=state, optimizer_state=optimizer_state, on_round_end=on_round_end,
    )
