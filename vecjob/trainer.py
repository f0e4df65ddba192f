"""`vecjob train` as a library function: check the shards, build the vocabulary and the chunks, fit
on an executor, publish the model dir (once, at the end, atomically).

An executor runs the fit: `InProcess` here (one process: tests, benchmarks, and a job of one CPU
worker on the Ray its command started), or `vecjob.ray_train.RayTrain` (Ray Train workers). Both run
`vecjob.training.train_loop` and, given a place for them, checkpoint every round.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from vecjob import faults, runtime, storage
from vecjob.chunks import ChunkSet
from vecjob.config import DataConfig, ModelConfig, TokenizerConfig, TrainConfig
from vecjob.dataset import build_vocab, heldout_unknown_share, latest_rows, training_chunks, training_sample
from vecjob.errors import ConfigError, VecjobError
from vecjob.model_dir import MANIFEST_KIND, write_model_dir
from vecjob.outputs import check_output, output_lock
from vecjob.parquet_io import check_shards, file_fingerprint, fingerprint, new_manifest
from vecjob.timing import timed
from vecjob.tokenizer import Tokenizer, Vocab, unknown_share
from vecjob.training import (
    RunPlan, TrainState, build_model, round_line, set_center, train_loop, training_bytes, weight_shapes,
)


@dataclass
class FitJob:
    """What an executor needs to fit a model."""

    train: ChunkSet
    val: ChunkSet
    vocab: Vocab
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    workers: int
    use_gpu: bool
    run_name: str  # the job's fingerprint: a rerun of the same job resumes from its checkpoint
    out: Path  # the model dir to be published (checkpoints go beside it)


class TrainExecutor(Protocol):
    def start(self, train_cfg: TrainConfig) -> tuple[int, bool]:
        """Connect to what runs the fit; returns (workers, use_gpu)."""
        ...

    def fit(self, job: FitJob) -> TrainState:
        """Train; the returned state holds the best round's weights and the history."""
        ...

    def versions(self) -> dict: ...

    def clean_up(self) -> None:
        """Remove what the fit kept to resume (called once the model dir is published)."""
        ...


@dataclass
class InProcess:
    """One process: the fit runs `train_loop` here and prints a line per round. Given `checkpoints` (a
    folder or a store's prefix), it saves its state there after every round, and a rerun of the same
    job resumes from it, as Ray Train's workers do."""

    checkpoints: str | None = None
    _saved: str | None = None  # this fit's checkpoint, removed once the model dir is published

    def start(self, train_cfg: TrainConfig) -> tuple[int, bool]:
        if train_cfg.use_gpu == "yes" and not torch.cuda.is_available():
            raise VecjobError("use_gpu = yes, but this process sees no GPU")
        return 1, train_cfg.use_gpu == "yes"

    def fit(self, job: FitJob) -> TrainState:
        from vecjob.reporting import line

        model = build_model(job.model_cfg, len(job.vocab), job.train_cfg.seed, job.train, job.vocab.topic_words())
        state, optimizer_state = None, None
        if self.checkpoints:
            self._saved = storage.join(self.checkpoints, f"{job.run_name}.{STATE_FILE}")
        saved = self._saved
        if saved and storage.exists(saved):
            state, optimizer_state = restore(model, storage.read_bytes(saved))

        def on_round_end(state: TrainState, optimizer: torch.optim.Optimizer, metrics: dict) -> None:
            line(round_line(metrics, job.train_cfg.max_minutes))
            if saved:
                storage.write_bytes(saved, checkpoint_bytes(model, optimizer, state))
                faults.reached("round_saved")

        device = torch.device("cuda" if job.use_gpu else "cpu")
        return train_loop(model.to(device), job.train, job.val, job.model_cfg, job.train_cfg, device=device,
                          state=state, optimizer_state=optimizer_state, on_round_end=on_round_end)

    def versions(self) -> dict:
        return {}

    def clean_up(self) -> None:
        if self._saved:
            storage.remove(self._saved)


STATE_FILE = "train_state.pt"  # a round's checkpoint: weights, optimiser state and TrainState


def checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> bytes:
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state.to_dict()}, buffer)
    return buffer.getvalue()


def load_state(checkpoint: bytes) -> TrainState:
    return TrainState(**torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=False)["state"])


def restore(model: torch.nn.Module, checkpoint: bytes) -> tuple[TrainState, dict]:
    """Load a checkpoint's weights into `model`; returns the state to go on from and the optimiser's."""
    blob = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=False)
    model.load_state_dict(blob["model"])
    state = TrainState(**blob["state"])
    state.resumed_after_rounds.append(state.round)
    return state, blob["optimizer"]


def train_model(
    data: DataConfig,
    out: str | Path,
    tok_cfg: TokenizerConfig,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    executor: TrainExecutor | None = None,
) -> dict:
    """Train on the shards in `data` and publish a model dir at `out`; returns its manifest.
    The output and every shard are checked before `executor` starts (`InProcess` when None;
    `vecjob.ray_train.RayTrain` for Ray Train workers); the model dir is locked throughout."""
    executor = executor or InProcess()
    out = check_output(out, "--out", data.paths, kind=MANIFEST_KIND)
    shards = check_shards(data.paths, data.id_col, data.text_col, data.strict)
    with output_lock(out):
        return _train_locked(shards, out, data, tok_cfg, model_cfg, train_cfg, executor)


def _check_model_fits(model_cfg: ModelConfig, vocab_size: int, workers: int) -> None:
    """Refuse, before training starts, a model this machine cannot hold once per worker: a mistyped
    --dim otherwise ends, once the workers have started, in an allocation error naming no setting."""
    need, have = workers * training_bytes(model_cfg, vocab_size), runtime.machine_memory_bytes()
    if need > have:
        raise ConfigError(
            f"model.dim = {model_cfg.dim} (--dim), model.embed_dim = {model_cfg.embed_dim}, model.hidden_dim = "
            f"{model_cfg.hidden_dim} (--hidden-dim) with {vocab_size:,} words: {workers} training worker(s) would "
            f"hold {need / 2**30:,.1f} GiB of weights, gradients and optimiser state, more than this machine's "
            f"{have / 2**30:,.1f} GiB")


def job_fingerprint(input_fingerprints: list[str], tok_cfg: TokenizerConfig, model_cfg: ModelConfig,
                    train_cfg: TrainConfig, vocab_size: int, workers: int, use_gpu: bool) -> str:
    """What names the Ray Train run that a rerun of the same job resumes. The model's weight shapes are
    part of it: a checkpoint left by a vecjob whose model had other shapes is not loaded, but retrained."""
    return fingerprint(input_fingerprints, tok_cfg.model_dump(), model_cfg.model_dump(),
                       train_cfg.what_shapes_the_weights(), workers, use_gpu, weight_shapes(model_cfg, vocab_size))


def _train_locked(shards, out: Path, data: DataConfig, tok_cfg: TokenizerConfig, model_cfg: ModelConfig,
                  train_cfg: TrainConfig, executor: TrainExecutor) -> dict:
    timings: dict[str, float] = {}
    with timed(timings, "prepare_s"):
        fingerprints = storage.each_file(file_fingerprint, [s.path for s in shards])
        inputs = [{"path": s.path, "rows": s.num_rows, "fingerprint": fp} for s, fp in zip(shards, fingerprints)]
        latest = latest_rows(shards, data.id_col)
        vocab = build_vocab(shards, data.id_col, data.text_col, tok_cfg, latest)
        # The vocabulary's counts: the collection's tokens but for the rarest words' few.
        sample = training_sample(train_cfg, sum(vocab.counts), sum(int(rows.sum()) for rows in latest))
        train, val, counts = training_chunks(shards, Tokenizer(vocab, tok_cfg.max_len), data.id_col, data.text_col,
                                             train_cfg, data.strict, model_cfg.bow_context, latest, sample)

    workers, use_gpu = executor.start(train_cfg)
    if not train_cfg.workers:  # auto: a collection of a few chunks trains on as many workers, not fails
        workers = max(1, min(workers, len(train)))
    if len(train) < workers:
        raise VecjobError(f"only {len(train)} training chunks for {workers} workers: add data or lower "
                          f"train.workers (--workers)")
    if not use_gpu and (isinstance(executor, InProcess) or runtime.started_here()):
        _check_model_fits(model_cfg, len(vocab), workers)
    job_fp = job_fingerprint([i["fingerprint"] for i in inputs], tok_cfg, model_cfg, train_cfg, len(vocab), workers,
                             use_gpu)
    with timed(timings, "fit_s"):
        state = executor.fit(FitJob(train, val, vocab, model_cfg, train_cfg, workers, use_gpu,
                                    run_name=f"vecjob-train-{job_fp[:16]}", out=out))
    with timed(timings, "center_s"):
        best = build_model(model_cfg, len(vocab), train_cfg.seed)
        best.load_state_dict(state.best_weights)
        set_center(best, train)

    manifest = new_manifest(
        MANIFEST_KIND,
        inputs=inputs,
        data_fingerprint=fingerprint([i["fingerprint"] for i in inputs]),
        job_fingerprint=job_fp,
        columns={"id": data.id_col, "text": data.text_col},
        counts={
            "documents": counts.rows,
            "superseded": counts.superseded,
            "skipped_empty": counts.skipped_empty,
            "sample": sample,  # the share of documents training read (the token budget's sample)
            "not_sampled": counts.not_sampled,
            "train_chunks": len(train),
            "val_chunks": len(val),
            "train_tokens": int(train.lengths.sum()),
            "vocab_size": len(vocab),
            "unknown_share": unknown_share(train.flat),
            # The drift baseline (vecjob.lifecycle): the unknown share of documents the vocabulary has not seen.
            "unknown_share_heldout": heldout_unknown_share(shards, data.id_col, data.text_col, tok_cfg,
                                                           train_cfg.val_fraction, latest),
        },
        workers=workers,
        use_gpu=use_gpu,
        best_round=state.best_round,
        rounds_run=state.round,
        steps=state.step,
        epochs_seen=state.history[-1]["epochs"] if state.history else 0.0,
        stop_reason=state.stop_reason,
        budget=RunPlan.make(train_cfg, train.lengths, workers).bound,
        train_minutes=state.seconds / 60,
        resumed_after_rounds=state.resumed_after_rounds,
        history=state.history,
        timings=timings,
        versions={"torch": torch.__version__, **executor.versions()},
        config={"model": model_cfg.model_dump(), "tokenizer": tok_cfg.model_dump(), "train": train_cfg.model_dump()},
    )
    published = write_model_dir(out, model_cfg, tok_cfg, vocab, best.state_dict(), manifest)
    executor.clean_up()
    return published
