"""Training speed (issue 4, benchmark 5): tokens/s of the training step on BBC chunks, full softmax vs
adaptive softmax, and the share of step time spent in the output layer; then 2 Ray Train CPU workers.

    python bench/train_speed.py [--steps 30]

GPU figures (fp32 and bf16, cuDNN LSTM) come from bench/gpu.py, on a CUDA machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from common import DATA, print_table, write_json


def step_timings(model_cfg, data, steps: int, batch_size: int = 64) -> dict:
    """Median step time, and median time of the output layer's forward + backward on the same states."""
    import torch

    from vecjob.config import TrainConfig
    from vecjob.model import corrupt
    from vecjob.training import batch_indices, build_model

    torch.set_num_threads(1)
    model = build_model(model_cfg, data["vocab"], seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    chunks = data["chunks"]
    batches = batch_indices(chunks.lengths, batch_size, np.random.default_rng(0))[: steps + 3]
    step_s, out_s, tokens = [], [], []
    for i, idx in enumerate(batches):
        clean = chunks.collate(idx)
        noisy = corrupt(clean, model_cfg)
        t0 = time.perf_counter()
        losses = model(clean, noisy)
        opt.zero_grad()
        losses.total.backward()
        opt.step()
        step = time.perf_counter() - t0
        # The output layer alone, on hidden states of the same shape (detached: no LSTM backward).
        with torch.no_grad():
            mu, _ = model.encode_states(clean)
            hidden, targets = model._decoder_hidden(mu, clean)
        keep = targets != 0
        h = hidden[keep].detach().requires_grad_(True)
        t0 = time.perf_counter()
        if model_cfg.output_layer == "adaptive":
            loss = model.output(h, targets[keep]).loss
        else:
            loss = torch.nn.functional.cross_entropy(model.output(h), targets[keep])
        loss.backward()
        out = time.perf_counter() - t0
        if i >= 3:  # warm-up
            step_s.append(step)
            out_s.append(out)
            tokens.append(losses.tokens)
    return {"tokens/s": statistics.median(t / s for t, s in zip(tokens, step_s)),
            "output share": statistics.median(o / s for o, s in zip(out_s, step_s))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()

    from vecjob.config import DataConfig, ModelConfig, TokenizerConfig, TrainConfig
    from vecjob.dataset import build_vocab, training_chunks
    from vecjob.parquet_io import check_shards
    from vecjob.tokenizer import Tokenizer

    tok_cfg = TokenizerConfig()
    shards = check_shards(str(DATA / "bbc_news.parquet"), "id", "text")
    vocab = build_vocab(shards, "id", "text", tok_cfg)
    train, _, _ = training_chunks(shards, Tokenizer(vocab, tok_cfg.max_len), "id", "text", TrainConfig())
    data = {"chunks": train, "vocab": len(vocab)}

    rows = []
    for hidden in (128, 256):
        for output in ("full", "adaptive"):
            cfg = ModelConfig(hidden_dim=hidden, output_layer=output)
            r = step_timings(cfg, data, args.steps)
            rows.append({"setup": f"1 process, 1 thread", "hidden": hidden, "output layer": output,
                         "vocab": len(vocab), **r})
            print(rows[-1], flush=True)

    from vecjob import runtime
    from vecjob.ray_train import train_model
    import tempfile

    runtime.connect()
    with tempfile.TemporaryDirectory() as tmp:
        m = train_model(DataConfig(paths=[str(DATA / "bbc_news.parquet")]), f"{tmp}/m", tok_cfg, ModelConfig(),
                        TrainConfig(epochs=1, workers=2, use_gpu="no", max_train_chunks=4000))
    rows.append({"setup": "Ray Train, 2 CPU workers", "hidden": 128, "output layer": "adaptive",
                 "vocab": len(vocab), "tokens/s": m["history"][0]["train_tokens_per_s"], "output share": ""})
    print(rows[-1], flush=True)
    print_table("training step speed on BBC chunks (batch 64 × ≤64 tokens)", rows,
                ["setup", "hidden", "output layer", "vocab", "tokens/s", "output share"])
    write_json("train_speed.json", {"rows": rows, "gpu": "CPU only: GPU figures are bench/gpu.py's (gpu.json)"})


if __name__ == "__main__":
    main()
