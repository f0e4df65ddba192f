"""Training speed: tokens/s of the library training step on one thread, and of Ray Train's 2 CPU workers.

    python bench/train_speed.py [--steps 20] [--rounds 5] [--only tfidf|head|ranks|buffers]

1. The LSTM kernel path, on BBC chunks (with the default 1024-token bag-of-words context, as `vecjob
   train` builds them) and on tweets: training batches as they are cut now (length-sorted: nearly all
   of one length, which the model runs through torch's dense oneDNN LSTM kernels) against batches of
   mixed lengths (padded, so the LSTMs take the packed path, as every training batch did before). The
   two setups alternate in every round; the figure is the median over rounds.
2. The TF-IDF regression head (`model.tfidf_weight`) on and off, alternating in every round.
3. The adaptive softmax's head: 2,000 words (tails to 10,000) against 1,000 (tails to 6,000,
   `vecjob.model.ADAPTIVE_CUTOFFS`), alternating in every round (`--only head`).
4. Ray Train, 2 CPU workers (DDP over gloo), one epoch on 4,000 BBC chunks.
5. Two DDP ranks (`--only ranks`; torch.distributed over gloo in two processes, DDP wrapped as Ray Train
   wraps it, the library's `train_steps`): each rank batching its own share of the chunks, as the
   workers did before, against ranks dealt one run of the length order per step
   (`vecjob.training.batch_indices`), with AdamW's per-tensor and fused updates, and two processes
   training alone on the same batches (no all-reduce: the bound). Alternating in every round.
6. The same two ranks with DDP broadcasting the model's buffers (the TF-IDF target's idf and LSA basis)
   before every step, as it does by default, against rank 0's buffers copied once
   (`vecjob.training.share_buffers`), and the bound (`--only buffers`).

The comparison of the full softmax with the adaptive one went with `model.output_layer`; its figures
are in results/archive/train_speed-output-layers.json.

GPU figures (fp32 and bf16, cuDNN LSTM) come from bench/gpu.py, on a CUDA machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from common import DATA, print_table, write_json

CORPORA = {"BBC": "bbc_news.parquet", "tweets": "tweets_sentiment.parquet"}


def load_chunks(corpus: str, bow_context: int):
    from vecjob.config import TokenizerConfig, TrainConfig
    from vecjob.dataset import build_vocab, training_chunks
    from vecjob.parquet_io import check_shards
    from vecjob.tokenizer import Tokenizer

    tok_cfg = TokenizerConfig()
    shards = check_shards(str(DATA / CORPORA[corpus]), "id", "text")
    vocab = build_vocab(shards, "id", "text", tok_cfg)
    train, _, _ = training_chunks(shards, Tokenizer(vocab, tok_cfg.max_len), "id", "text", TrainConfig(),
                                  bow_context=bow_context)
    return train, len(vocab)


def mixed_length_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random batches: chunks of several lengths, padded, so the LSTMs take the packed path."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def step_rate(model_cfg, chunks, vocab: int, batches: list[np.ndarray]) -> dict:
    """Median tokens/s of full training steps (corrupt, forward, backward, AdamW) over `batches`; the first
    three are warm-up."""
    import torch

    from vecjob.model import corrupt
    from vecjob.training import build_model

    torch.set_num_threads(1)
    model = build_model(model_cfg, vocab, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rates = []
    for i, idx in enumerate(batches):
        clean = chunks.collate(idx)
        t0 = time.perf_counter()
        losses = model(clean, corrupt(clean, model_cfg))
        opt.zero_grad()
        losses.total.backward()
        opt.step()
        if i >= 3:
            rates.append(losses.tokens / (time.perf_counter() - t0))
    return {"tokens/s": statistics.median(rates)}


def alternating_rates(setups: dict, steps: int, rounds: int, label: str, ratio_label: str) -> list[dict]:
    """Median tokens/s of each setup, name → (model config, length-sorted batches or mixed-length
    ones[, the adaptive softmax's cutoffs]), on both corpora; the setups alternate in every round, so a
    busy machine slows them alike. Each row gives its rate ÷ the first setup's under `ratio_label`."""
    import vecjob.model
    from vecjob.training import batch_indices

    default_cutoffs = vecjob.model.ADAPTIVE_CUTOFFS

    rows = []
    for corpus in CORPORA:
        chunks, vocab = load_chunks(corpus, next(iter(setups.values()))[0].bow_context)
        rates: dict[str, list[float]] = {name: [] for name in setups}
        for r in range(rounds):
            rng = np.random.default_rng(r)
            sorted_batches = batch_indices(chunks.lengths, 64, rng)[: steps + 3]
            mixed = mixed_length_batches(len(chunks), 64, rng)[: steps + 3]
            for name, (cfg, dense, *cutoffs) in setups.items():
                vecjob.model.ADAPTIVE_CUTOFFS = cutoffs[0] if cutoffs else default_cutoffs
                rates[name].append(step_rate(cfg, chunks, vocab, sorted_batches if dense else mixed)["tokens/s"])
        vecjob.model.ADAPTIVE_CUTOFFS = default_cutoffs
        base = statistics.median(next(iter(rates.values())))
        for name in setups:
            rows.append({"corpus": corpus, label: name, "tokens/s": statistics.median(rates[name]),
                         ratio_label: statistics.median(rates[name]) / base, "rounds": rates[name]})
            print(rows[-1], flush=True)
    return rows


def kernel_paths(steps: int, rounds: int) -> list[dict]:
    from vecjob.config import ModelConfig

    cfg = ModelConfig()
    setups = {"mixed-length batches (packed LSTMs; before)": (cfg, False),
              "length-sorted batches (dense LSTMs; now)": (cfg, True)}
    return alternating_rates(setups, steps, rounds, "batches", "÷ mixed")


def tfidf_head(steps: int, rounds: int) -> list[dict]:
    from vecjob.config import ModelConfig

    cfg = ModelConfig()
    setups = {"TF-IDF head off": (cfg.model_copy(update={"tfidf_weight": 0.0}), True),
              "TF-IDF head on": (cfg.model_copy(update={"tfidf_weight": 4.0}), True)}  # any weight > 0 costs the same
    return alternating_rates(setups, steps, rounds, "setup", "÷ first")


def head_sizes(steps: int, rounds: int) -> list[dict]:
    from vecjob.config import ModelConfig

    cfg = ModelConfig()
    setups = {"head of 2,000 words, tails to 10,000 (before)": (cfg, True, (2_000, 10_000)),
              "head of 1,000 words, tails to 6,000 (now)": (cfg, True, (1_000, 6_000))}
    return alternating_rates(setups, steps, rounds, "adaptive softmax", "÷ first")


RANK_SETUPS = {
    # name: (ranks dealt one run of the length order, AdamW fused, DDP, buffers copied once)
    "each rank batches its own share, AdamW per tensor (before)": (False, False, True, False),
    "ranks dealt one run, AdamW per tensor": (True, False, True, False),
    "ranks dealt one run, AdamW fused (now)": (True, True, True, False),
    "two processes alone, no all-reduce (the bound)": (True, True, False, False),
}
BUFFER_SETUPS = {
    "DDP broadcasts the buffers before every step (before)": (True, True, True, False),
    "rank 0's buffers copied once (now)": (True, True, True, True),
    "two processes alone, no all-reduce (the bound)": (True, True, False, False),
}


def _rank_steps(rank: int, port: int, setup: tuple, chunks, vocab: int, steps: int, seed: int, rates) -> None:
    """One of two ranks: `steps` training steps after three of warm-up; puts its (tokens, seconds)."""
    import os

    import torch
    import torch.distributed as dist

    from vecjob.config import ModelConfig, TrainConfig
    from vecjob.training import DDP_OPTIONS, batch_indices, build_model, share_buffers, train_steps

    dealt, fused, ddp, buffers_once = setup
    torch.set_num_threads(1)
    model_cfg, train_cfg = ModelConfig(), TrainConfig()
    model = build_model(model_cfg, vocab, seed=0)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    if ddp:  # as ray.train.torch.prepare_model wraps it in vecjob.ray_train
        model = torch.nn.parallel.DistributedDataParallel(
            model, **{**DDP_OPTIONS, "broadcast_buffers": not buffers_once})
        if buffers_once:
            share_buffers(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=0.0, fused=fused)
    if dealt:
        batches = batch_indices(chunks.lengths, 64, np.random.default_rng(seed), rank, 2)
    else:  # the workers before: a seeded half of the chunks each, length-sorted batches of their own
        half = len(chunks) // 2
        mine = np.sort(np.random.default_rng(seed).permutation(len(chunks))[rank * half : (rank + 1) * half])
        batches = [mine[b] for b in batch_indices(chunks.lengths[mine], 64, np.random.default_rng([seed, rank]))]
    device = torch.device("cpu")
    train_steps(model, optimizer, chunks, batches[:3], model_cfg, train_cfg, device, 0)
    dist.barrier()
    totals, _ = train_steps(model, optimizer, chunks, batches[3 : 3 + steps], model_cfg, train_cfg, device, 3)
    rates.put((totals.tokens, totals.seconds))
    dist.destroy_process_group()


def two_ranks(steps: int, rounds: int, setups: dict = RANK_SETUPS) -> list[dict]:
    """Tokens/s of two ranks together (tokens of both ÷ the slower rank's seconds) for each of
    the setups, on BBC and the tweets, alternating in every round."""
    import multiprocessing as mp
    import socket

    ctx = mp.get_context("fork")  # the children share the parent's chunks
    rows = []
    for corpus in CORPORA:
        chunks, vocab = load_chunks(corpus, 1024)
        rates: dict[str, list[float]] = {name: [] for name in setups}
        for r in range(rounds):
            for name, setup in setups.items():
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
                queue = ctx.Queue()
                procs = [ctx.Process(target=_rank_steps, args=(rank, port, setup, chunks, vocab, steps, r, queue))
                         for rank in range(2)]
                for proc in procs:
                    proc.start()
                done = [queue.get(timeout=600) for _ in procs]
                for proc in procs:
                    proc.join()
                rates[name].append(sum(tokens for tokens, _ in done) / max(seconds for _, seconds in done))
        base = statistics.median(next(iter(rates.values())))
        for name in setups:
            rows.append({"corpus": corpus, "ranks": name, "tokens/s": statistics.median(rates[name]),
                         "÷ first": statistics.median(rates[name]) / base, "rounds": rates[name]})
            print(rows[-1], flush=True)
    return rows


def ray_train_rate() -> float:
    from vecjob import runtime
    from vecjob.config import DataConfig, ModelConfig, TokenizerConfig, TrainConfig
    from vecjob.ray_train import RayTrain
    from vecjob.trainer import train_model

    runtime.connect()
    with tempfile.TemporaryDirectory() as tmp:
        m = train_model(DataConfig(paths=[str(DATA / CORPORA["BBC"])]), f"{tmp}/m", TokenizerConfig(), ModelConfig(),
                        TrainConfig(epochs=1, workers=2, use_gpu="no", max_train_chunks=4000), RayTrain())
    return m["history"][0]["train_tokens_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=["tfidf", "head", "ranks", "buffers"],
                    help="run only this part; results go to archive/train_speed-PART.json")
    args = ap.parse_args()

    if args.only == "head":
        heads = head_sizes(args.steps, args.rounds)
        print_table("training step, 1 thread, default model, the adaptive softmax's head (median of rounds)",
                    heads, ["corpus", "adaptive softmax", "tokens/s", "÷ first"])
        write_json("archive/train_speed-head.json", {"head_sizes": heads})
        return

    if args.only in ("ranks", "buffers"):
        ranks = two_ranks(args.steps, args.rounds, RANK_SETUPS if args.only == "ranks" else BUFFER_SETUPS)
        print_table("training, 2 DDP ranks of 1 thread, default model, batch 64 (median of rounds)", ranks,
                    ["corpus", "ranks", "tokens/s", "÷ first"])
        write_json(f"archive/train_speed-{args.only}.json", {"two_ranks": ranks})
        return

    tfidf = tfidf_head(args.steps, args.rounds)
    print_table("training step, 1 thread, default model with the TF-IDF head off and on (median of rounds)",
                tfidf, ["corpus", "setup", "tokens/s", "÷ first"])
    if args.only == "tfidf":
        write_json("archive/train_speed-tfidf.json", {"tfidf_head": tfidf})
        return
    paths = kernel_paths(args.steps, args.rounds)
    print_table("training step, 1 thread, default model (batch 64 × ≤ 64 tokens; median of rounds)", paths,
                ["corpus", "batches", "tokens/s", "÷ mixed"])
    ray_rate = ray_train_rate()
    print(f"\nRay Train, 2 CPU workers, default model, 1 epoch of 4,000 BBC chunks: {ray_rate:,.0f} tokens/s")
    write_json("train_speed.json", {"kernel_paths": paths, "tfidf_head": tfidf,
                                    "ray_train_2_workers_tokens_per_s": ray_rate,
                                    "gpu": "CPU only: GPU figures are bench/gpu.py's (gpu.json)"})


if __name__ == "__main__":
    main()
