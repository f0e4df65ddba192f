"""Training: length-bucketed batches, the run plan, rounds of steps, evaluation, early stopping.

`train_loop` is the whole loop for one process. In-process training (tests, benchmarks) calls it
with world_size=1; the Ray Train worker (`vecjob.ray_train`) calls it with its rank and a hook that
reports metrics and checkpoints. Every rank runs the same number of steps, which DDP requires.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import numpy as np
import torch
from torch import nn

from vecjob.chunks import ChunkSet
from vecjob.config import ModelConfig, TrainConfig
from vecjob.errors import VecjobError
from vecjob.model import SequenceAutoencoder, corrupt
from vecjob.timing import duration
from vecjob.warm_start import lsa_term_vectors


def batch_indices(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, rank: int = 0, world_size: int = 1
) -> list[np.ndarray]:
    """Batches of consecutive chunks in length order (random order among equal lengths, and of the batches,
    when rng is given). Nearly every batch then holds chunks of one length, which the model runs densely
    (on CPU, torch's oneDNN LSTM kernel; a padded batch takes the slower packed path): only a batch that
    straddles a change of length is padded.

    With world_size > 1, rank `rank`'s batches of one epoch: every rank draws the same order from an
    rng seeded alike, cuts it into runs of world_size × batch_size chunks and takes every
    world_size-th chunk of each run. At every step the ranks then hold chunks of about one length and
    none waits long for the others at the gradient all-reduce; ranks batching their own shares
    independently ran a short batch beside a long one, and DDP paced every step by the longer
    (bench/README.md, "Two DDP ranks"). The last len(lengths) mod world_size chunks of the order sit the
    epoch out. Always ceil((len(lengths) // world_size) / batch_size) batches, equal steps on every rank."""
    n = len(lengths) // world_size * world_size
    order = rng.permutation(len(lengths))[:n] if rng is not None else np.arange(n)
    order = order[np.argsort(lengths[order], kind="stable")]
    run = batch_size * world_size
    batches = [order[i + rank : i + run : world_size] for i in range(0, n, run)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


@dataclass
class Totals:
    """Sums over a pass, so ranks can add theirs before dividing."""

    chunks: float = 0.0
    tokens: float = 0.0
    loss: float = 0.0  # Σ total loss × chunks
    recon: float = 0.0  # Σ recon nats × tokens
    bow: float = 0.0  # Σ bow nats × chunks
    kl: float = 0.0  # Σ kl × chunks
    tfidf: float = 0.0  # Σ tfidf × chunks
    correct: float = 0.0  # of the tokens whose greedy prediction was checked
    checked: float = 0.0
    seconds: float = 0.0

    def add_batch(self, losses, n_chunks: int) -> None:
        self.chunks += n_chunks
        self.tokens += losses.tokens
        self.loss += losses.total.item() * n_chunks
        self.recon += losses.recon.item() * losses.tokens
        self.bow += losses.bow.item() * n_chunks
        self.kl += losses.kl.item() * n_chunks
        self.tfidf += losses.tfidf.item() * n_chunks

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> "Totals":
        return cls(*[float(x) for x in t.tolist()])

    def summary(self, prefix: str) -> dict[str, float]:
        if prefix == "val" and not self.chunks:
            return {}  # a handful of documents holds none out: no validation figures, rather than zeros
        c, t = max(self.chunks, 1), max(self.tokens, 1)
        out = {
            f"{prefix}_loss": self.loss / c,
            f"{prefix}_recon": self.recon / t,
            f"{prefix}_bow": self.bow / c,
            f"{prefix}_kl": self.kl / c,
            f"{prefix}_tfidf": self.tfidf / c,
        }
        if prefix == "val":
            out["val_token_acc"] = self.correct / max(self.checked, 1)
        else:
            out["train_tokens_per_s"] = self.tokens / max(self.seconds, 1e-9)
        return out


def all_reduce_totals(totals: Totals, device: torch.device) -> Totals:
    """Sum Totals over ranks when torch.distributed is up (Ray Train workers); identity otherwise.
    The sums travel on the training device: NCCL, the GPU workers' backend, reduces CUDA tensors only."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return totals
    t = totals.as_tensor().to(device)
    torch.distributed.all_reduce(t)
    merged = Totals.from_tensor(t.cpu())
    merged.seconds = totals.seconds  # wall time is not additive
    return merged


def unwrap(model: nn.Module) -> SequenceAutoencoder:
    return model.module if hasattr(model, "module") else model


# How training ranks wrap the model in DDP. Adaptive-softmax tail clusters may get no targets in a
# batch, so DDP must tolerate unused parameters. The buffers (the TF-IDF target's idf and LSA basis:
# 10 MB at 20,000 words) never change in training, so train_loop copies them from rank 0 once
# (share_buffers) instead of DDP broadcasting them before every step.
DDP_OPTIONS = {"find_unused_parameters": True, "broadcast_buffers": False}


def share_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers to every rank (nothing to do without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for buffer in unwrap(model).buffers():
            torch.distributed.broadcast(buffer, src=0)


# Gradients are clipped to this global norm: an LSTM's rare exploding step would otherwise undo rounds of training.
GRAD_CLIP = 1.0


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ChunkSet,
    batches: list[np.ndarray],
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    device: torch.device,
    step: int,
) -> tuple[Totals, int]:
    """One optimizer step per batch; returns the totals and the new global step (the variational
    KL weight's annealing follows it)."""
    model.train()
    totals = Totals()
    start = time.perf_counter()
    for idx in batches:
        clean = data.collate(idx)
        noisy = corrupt(clean, model_cfg) if model_cfg.variant == "denoising" else None
        kl_scale = min(1.0, step / max(1, model_cfg.kl_anneal_steps))
        losses = model(clean.to(device), noisy.to(device) if noisy else None, kl_scale=kl_scale)
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        totals.add_batch(losses, len(idx))
        step += 1
    totals.seconds = time.perf_counter() - start
    return totals, step


# Teacher-forced token accuracy is read on the first this-many held-out tokens of each rank (the same
# ones every round): its greedy prediction needs the whole vocabulary's distribution, which made it
# most of a BBC round's time when every held-out token was checked (bench/README.md, the quickstart).
ACCURACY_TOKENS = 8_192


@torch.no_grad()
def evaluate(model: nn.Module, data: ChunkSet, batches: list[np.ndarray], device: torch.device) -> Totals:
    """Validation totals: losses with z = the mean (no sampling), and teacher-forced token accuracy."""
    core = unwrap(model)
    core.eval()
    totals = Totals()
    for idx in batches:
        batch = data.collate(idx).to(device)
        losses = core(batch)
        if totals.checked < ACCURACY_TOKENS:
            mu, _ = core.encode_states(batch)
            correct, checked = core.token_accuracy(mu, batch)
            totals.correct += correct
            totals.checked += checked
        totals.add_batch(losses, len(idx))
    return totals


@dataclass
class TrainState:
    """Everything a checkpoint holds, so a restarted worker group continues where it stopped."""

    round: int = 0  # rounds completed (a round: the steps between two validations)
    step: int = 0
    seconds: float = 0.0  # training time so far, across restarts (the wall-clock cap counts it)
    best_val: float = math.inf
    best_round: int = -1
    bad_rounds: int = 0
    history: list[dict] = field(default_factory=list)
    best_weights: dict | None = None
    stop_reason: str = ""  # "budget" (planned steps done), "patience" (validation flat), "time" (cap reached)
    resumed_after_rounds: list[int] = field(default_factory=list)  # rounds done at each restore from a checkpoint

    def to_dict(self) -> dict:
        return asdict(self)


# Validations in a budgeted run (epochs = "auto"): each round is this share of the run, whether that is
# part of one epoch (a large collection) or many epochs (a small one), so patience and the choice of the
# best weights have the same points to use on any collection, and a tiny one is not validated and
# checkpointed after every step.
ROUNDS = 10

# The most epochs a budgeted run spends on a collection too small for its token budget. Beyond it a
# model memorises its few texts instead of learning more of their words in context, and a tiny
# collection (50 tweets: 2,700 epochs of the budget) would keep the cores for minutes (bench/README.md,
# "The epoch cap").
MAX_AUTO_EPOCHS = 100


@dataclass(frozen=True)
class RunPlan:
    """How long a run is, the same on every rank: its steps, the steps of one epoch, and of one round,
    and what set its length: "tokens" (the budget), "epoch cap" (MAX_AUTO_EPOCHS) or "epochs" (set)."""

    total_steps: int
    steps_per_epoch: int
    steps_per_round: int
    bound: str = "tokens"

    @classmethod
    def make(cls, train_cfg: TrainConfig, chunk_lengths: np.ndarray, world_size: int) -> "RunPlan":
        """epochs = N: N epochs of one round each. epochs = "auto": the steps that show the model
        `train_cfg.tokens` training tokens (all ranks together), in whole steps, whatever the
        collection's size: a small collection is seen many times (at most MAX_AUTO_EPOCHS), a large
        one in part."""
        per_rank = len(chunk_lengths) // world_size
        per_epoch = max(1, math.ceil(per_rank / train_cfg.batch_size))
        if train_cfg.epochs != "auto":
            return cls(train_cfg.epochs * per_epoch, per_epoch, per_epoch, "epochs")
        tokens_per_epoch = max(1.0, float(chunk_lengths.sum()))
        total = max(1, math.ceil(train_cfg.tokens / tokens_per_epoch * per_epoch))
        bound = "tokens"
        if total > MAX_AUTO_EPOCHS * per_epoch:
            total, bound = MAX_AUTO_EPOCHS * per_epoch, "epoch cap"
        return cls(total, per_epoch, math.ceil(total / ROUNDS), bound)

    @property
    def rounds(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_round)


def round_line(metrics: dict, max_minutes: float = 0.0) -> str:
    """One progress line per round, for a terminal or a nightly log. The time left is at most what the
    remaining rounds take at this pace (patience may end them sooner), and, under a wall-clock cap
    (`max_minutes`), at most the cap's remainder and one round more: the round that reaches it is the last."""
    done = metrics["round"] / metrics["rounds_planned"]
    left = metrics["seconds"] * (1 - done) / max(done, 1e-9)
    if max_minutes:
        cap_left = 60 * max_minutes - metrics["seconds"]
        left = 0.0 if cap_left <= 0 else min(left, cap_left + metrics["seconds"] / metrics["round"])
    val = f"val loss {metrics['val_loss']:.3f}" if "val_loss" in metrics else "no validation documents"
    return (f"train round {metrics['round']}/{metrics['rounds_planned']}: {metrics['epochs']:.2f} epochs, "
            f"train loss {metrics['train_loss']:.3f}, {val}, {metrics['train_tokens_per_s']:,.0f} tokens/s, "
            f"≤ {duration(left)} left")


def agreed_max(value: float, device: torch.device) -> float:
    """The largest of each rank's value (identity without torch.distributed): ranks that decide to stop
    on their own clocks must decide alike, or one would wait forever for the others."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def train_loop(
    model: nn.Module,
    train: ChunkSet,
    val: ChunkSet,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    state: TrainState | None = None,
    optimizer_state: dict | None = None,
    on_round_end: Callable[[TrainState, torch.optim.Optimizer, dict], None] | None = None,
) -> TrainState:
    """Train round by round until the planned steps, patience or the wall-clock cap run out; keeps the
    best validation round's weights. Step s of the run is batch s mod steps_per_epoch of epoch
    s // steps_per_epoch, a function of the step alone: a resumed run continues the same sequence."""
    state = state or TrainState()
    share_buffers(model)
    # fused: one kernel for all parameters' updates instead of a handful of ops per tensor (bench/README.md).
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=0.0, fused=True)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    val_mine = np.arange(rank, len(val), world_size)
    val_batches = batch_indices(val.lengths[val_mine], train_cfg.batch_size, None)
    val_batches = [val_mine[b] for b in val_batches]
    plan = RunPlan.make(train_cfg, train.lengths, world_size)
    epoch_batches: dict[int, list[np.ndarray]] = {}

    def batch_at(step: int) -> np.ndarray:
        epoch = step // plan.steps_per_epoch
        if epoch not in epoch_batches:
            epoch_batches.clear()
            rng = np.random.default_rng([train_cfg.seed, epoch])  # alike on every rank: see batch_indices
            epoch_batches[epoch] = batch_indices(train.lengths, train_cfg.batch_size, rng, rank, world_size)
        return epoch_batches[epoch][step % plan.steps_per_epoch]

    # A run that ended on its budget may be extended (a larger budget); patience and time are final.
    while state.step < plan.total_steps and state.stop_reason in ("", "budget"):
        state.stop_reason = ""
        started = time.perf_counter()
        torch.manual_seed(train_cfg.seed * 100_003 + state.round * 101 + rank)
        end = min(state.step + plan.steps_per_round, plan.total_steps)
        batches = [batch_at(s) for s in range(state.step, end)]
        train_totals, state.step = train_steps(
            model, optimizer, train, batches, model_cfg, train_cfg, device, state.step
        )
        val_totals = evaluate(model, val, val_batches, device) if len(val) else Totals()
        train_totals, val_totals = all_reduce_totals(train_totals, device), all_reduce_totals(val_totals, device)
        state.round += 1
        state.seconds += agreed_max(time.perf_counter() - started, device)
        metrics = {"round": state.round, "step": state.step, "epochs": state.step / plan.steps_per_epoch,
                   "rounds_planned": plan.rounds, "seconds": state.seconds, "lr": optimizer.param_groups[0]["lr"],
                   **train_totals.summary("train"), **val_totals.summary("val")}
        monitored = metrics["val_loss"] if len(val) else metrics["train_loss"]
        if not math.isfinite(monitored):  # NaN weights never recover: the remaining rounds would be wasted
            raise VecjobError(f"training diverged: the loss is {monitored} after round {state.round} (train.lr = "
                              f"{train_cfg.lr:g}); lower train.lr")
        if monitored < state.best_val - 1e-4:
            state.best_val, state.best_round, state.bad_rounds = monitored, state.round, 0
            state.best_weights = copy.deepcopy({k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()})
        else:
            state.bad_rounds += 1
            if state.bad_rounds >= train_cfg.patience:
                state.stop_reason = "patience"
        if not state.stop_reason and train_cfg.max_minutes and state.seconds >= 60 * train_cfg.max_minutes:
            state.stop_reason = "time"
        if not state.stop_reason and state.step >= plan.total_steps:
            state.stop_reason = "budget"
        state.history.append(metrics)
        if on_round_end is not None:
            on_round_end(state, optimizer, metrics)
    return state


@torch.no_grad()
def set_center(model: SequenceAutoencoder, data: ChunkSet, max_chunks: int = 20_000, batch_size: int = 256) -> None:
    """Store the mean vector of (a fixed sample of) training chunks in the model's z_center buffer."""
    model.eval()
    model.z_center.zero_()
    idx = np.arange(len(data))
    if len(idx) > max_chunks:
        idx = np.sort(np.random.default_rng(0).choice(idx, max_chunks, replace=False))
    total = torch.zeros_like(model.z_center, dtype=torch.float64)
    for b in batch_indices(data.lengths[idx], batch_size, None):
        total += model.embed(data.collate(idx[b])).double().sum(0)
    model.z_center.copy_((total / max(len(idx), 1)).to(model.z_center.dtype))


def bag_document_frequencies(data: ChunkSet, vocab_size: int) -> tuple[np.ndarray, int]:
    """In how many bag-of-words targets (a chunk's context, else the chunk) each token id occurs,
    and how many targets there are: the document frequencies of the TF-IDF target."""
    bags = data.context if data.context is not None else data
    owner = np.repeat(np.arange(len(bags), dtype=np.int64), bags.lengths)
    pairs = np.unique(owner * vocab_size + bags.flat)
    return np.bincount(pairs % vocab_size, minlength=vocab_size), len(bags)


def weight_shapes(model_cfg: ModelConfig, vocab_size: int) -> dict[str, list[int]]:
    """Every trained weight's shape (the model built on torch's meta device: nothing is allocated)."""
    with torch.device("meta"):
        model = SequenceAutoencoder(model_cfg, vocab_size)
    return {name: list(p.shape) for name, p in model.named_parameters()}


def training_bytes(model_cfg: ModelConfig, vocab_size: int) -> int:
    """Bytes a training worker holds for the model: its float32 weights, their gradients and Adam's
    two moments."""
    return 4 * 4 * sum(math.prod(shape) for shape in weight_shapes(model_cfg, vocab_size).values())


def build_model(
    model_cfg: ModelConfig,
    vocab_size: int,
    seed: int,
    train: ChunkSet | None = None,
    topic_words: np.ndarray | None = None,
) -> SequenceAutoencoder:
    """A freshly initialised model. For training, the training chunks set the TF-IDF target's
    document frequencies, and the collection's own LSA term vectors (vecjob/warm_start.py) set the
    starting word embeddings, which small collections need to get past TF-IDF, and the TF-IDF head's
    target space (bench/README.md). `topic_words` (Vocab.topic_words) narrows that target space to LSA
    over those words alone, unless the collection has none."""
    torch.manual_seed(seed)
    model = SequenceAutoencoder(model_cfg, vocab_size)
    if train is not None and model_cfg.tfidf_weight > 0:
        model.set_document_frequencies(*bag_document_frequencies(train, vocab_size))
    if train is not None:
        bags = train.context if train.context is not None else train
        vectors = lsa_term_vectors(bags.flat, bags.offsets, vocab_size, model_cfg.embed_dim, seed)
        with torch.no_grad():
            model.embedding.weight.copy_(torch.from_numpy(vectors))
        # Punctuation and single letters or digits, in every document of every topic, take the leading
        # directions of an LSA over all tokens; the head aims at topics (bench/README.md, "The head's
        # target: words").
        target = vectors
        if topic_words is not None and model_cfg.tfidf_weight > 0:
            target = lsa_term_vectors(bags.flat, bags.offsets, vocab_size, model_cfg.embed_dim, seed, topic_words)
        model.set_lsa_basis(target if target.any() else vectors)
    return model
