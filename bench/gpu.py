"""The GPU path, measured on a CUDA machine (CI and the development machine have none):

    python bench/gpu.py [--model MODEL_DIR] [--steps 40]

1. the machine: GPU, torch, CUDA, cuDNN;
2. the library training step (`vecjob.training.train_steps`: collate, corruption, forward, backward,
   AdamW; the loop every Ray Train worker runs) in tokens/s on BBC chunks: one CPU thread in fp32 (what
   one Ray Train CPU worker runs) vs the GPU in fp32 (what vecjob runs) and under bf16 autocast (the
   alternative it lost to: `bf16` below wraps the library calls in `torch.autocast`);
3. which ops and kernels run the LSTM on the GPU in each precision (torch.profiler): cuDNN's RNN or not;
4. the encoder (`vecjob.encoder.DocumentEncoder`) on BBC articles, tweets and synthetic short documents:
   the GPU in fp32 and bf16 vs this machine's CPU cores (one single-threaded process per core, vecjob's
   CPU default), and how far the GPU's vectors are from the CPU's fp32 ones (cosine).

`--parts`: any of steps,kernels,encode.
`--model`: a trained model dir for step 4 (e.g. the one `vecjob run jobs/nightly.toml` wrote); without
it the default architecture with random weights (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import polars as pl

from common import DATA, print_table, untrained_model_dir, write_json


def machine() -> dict:
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "gpu_memory_gb": props.total_memory / 1e9, "sms": props.multi_processor_count,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "cpus": os.cpu_count()}


def bbc_chunks():
    from vecjob.config import TokenizerConfig, TrainConfig
    from vecjob.dataset import build_vocab, training_chunks
    from vecjob.parquet_io import check_shards
    from vecjob.tokenizer import Tokenizer

    tok_cfg = TokenizerConfig()
    shards = check_shards(str(DATA / "bbc_news.parquet"), "id", "text")
    vocab = build_vocab(shards, "id", "text", tok_cfg)
    train, _, _ = training_chunks(shards, Tokenizer(vocab, tok_cfg.max_len), "id", "text", TrainConfig())
    return train, vocab


def autocast(precision: str):
    """bf16 autocast on the GPU for `precision` "bf16"; vecjob itself trains and encodes in fp32."""
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")


def step_rate(chunks, vocab, device: str, hidden: int, batch_size: int, steps: int, precision: str) -> dict:
    """tokens/s of `steps` library training steps after 5 warm-up steps (cuDNN autotuning included there)."""
    import torch

    from vecjob.config import ModelConfig, TrainConfig
    from vecjob.training import batch_indices, build_model, train_steps

    model_cfg, train_cfg = ModelConfig(hidden_dim=hidden), TrainConfig(batch_size=batch_size)
    dev = torch.device(device)
    model = build_model(model_cfg, len(vocab), seed=0).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr)
    batches = batch_indices(chunks.lengths, batch_size, np.random.default_rng(0))[: steps + 5]
    with autocast(precision):
        train_steps(model, optimizer, chunks, batches[:5], model_cfg, train_cfg, dev, 0)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        totals, _ = train_steps(model, optimizer, chunks, batches[5:], model_cfg, train_cfg, dev, 5)
    return {"tokens/s": totals.tokens / totals.seconds, "ms/step": 1e3 * totals.seconds / len(batches[5:])}


def lstm_kernels(chunks, vocab, precision: str) -> dict:
    """The ops and the heaviest GPU kernels of three training steps at the default config."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from vecjob.config import ModelConfig, TrainConfig
    from vecjob.training import batch_indices, build_model, train_steps

    model_cfg, train_cfg = ModelConfig(), TrainConfig()
    dev = torch.device("cuda")
    model = build_model(model_cfg, len(vocab), seed=0).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr)
    batches = batch_indices(chunks.lengths, train_cfg.batch_size, np.random.default_rng(1))[:6]
    with autocast(precision):
        train_steps(model, optimizer, chunks, batches[:3], model_cfg, train_cfg, dev, 0)
    with autocast(precision), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train_steps(model, optimizer, chunks, batches[3:], model_cfg, train_cfg, dev, 3)
        torch.cuda.synchronize()
    events = prof.key_averages()
    ops = sorted({e.key for e in events if e.key.startswith("aten::") and "rnn" in e.key.lower()})

    def gpu_us(e) -> float:
        return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0.0)

    # Profiler ranges (autograd nodes, Optimizer.step) carry the device time of the kernels inside
    # them, so these shares overlap: the list says which kernels run, not how the time divides.
    kernels = sorted((e for e in events if gpu_us(e) > 0 and not e.key.startswith("aten::")), key=gpu_us, reverse=True)
    total = sum(gpu_us(e) for e in kernels)
    top = [{"kernel": e.key[:90], "share of GPU time": gpu_us(e) / total} for e in kernels[:8]]
    return {"rnn_ops": ops, "cudnn_rnn": any("_cudnn_rnn" in o for o in ops), "top_kernels": top}


def encode_rows(model_dir, corpora: dict) -> tuple[list[dict], list[dict]]:
    import torch

    from encode_speed import encode_in_processes
    from vecjob.encoder import AUTO_BATCH_CPU, DocumentEncoder

    rows, agreement = [], []
    for name, texts in corpora.items():
        cpu = encode_in_processes(model_dir, texts, AUTO_BATCH_CPU, os.cpu_count())
        reference = None
        if name != "synthetic":
            reference = DocumentEncoder(model_dir, device="cpu", threads=os.cpu_count()).encode_texts(texts)
        for precision in ("fp32", "bf16"):
            gpu = DocumentEncoder(model_dir, device="cuda")
            with autocast(precision):
                gpu.encode_texts(texts[:2000])  # warm-up: cuDNN plans for the common lengths
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                out = gpu.encode_texts(texts)
                wall = time.perf_counter() - t0
            rows.append({"corpus": name, "docs": len(texts), "precision": precision, "GPU docs/s": len(texts) / wall,
                         "GPU tokenize share": out.timings.tokenize / wall,
                         "CPU docs/s": len(texts) / cpu["wall"], "GPU ÷ CPU": cpu["wall"] / wall})
            print(rows[-1], flush=True)
            if reference is not None:
                a, b = out.vectors[out.ok], reference.vectors[reference.ok]
                cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
                agreement.append({"corpus": name, "precision": precision, "docs": int(len(cos)),
                                  "median cosine": float(np.median(cos)), "min cosine": float(cos.min())})
                print(agreement[-1], flush=True)
    return rows, agreement


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="steps,kernels,encode")
    ap.add_argument("--model", default="", help="trained model dir for the encoder rows (default: untrained)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--synthetic", type=int, default=200_000)
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py needs a CUDA device")
    info = machine()
    print(info, flush=True)
    chunks, vocab = bbc_chunks()
    result = {"machine": info}

    if "steps" in parts:
        steps = []
        for hidden in (128, 256, 512):
            for batch_size in (64, 512):
                for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16")):
                    if device == "cpu" and (batch_size != 64 or hidden == 512):
                        continue  # one CPU thread: the default batch only, and 512 would take minutes
                    torch.set_num_threads(1)
                    r = step_rate(chunks, vocab, device, hidden, batch_size, args.steps, precision)
                    steps.append({"hidden": hidden, "batch": batch_size, "device": device, "precision": precision, **r})
                    print(steps[-1], flush=True)
        for r in steps:
            cpu = next((c for c in steps if c["device"] == "cpu" and c["hidden"] == r["hidden"]), None)
            r["÷ 1 CPU thread"] = r["tokens/s"] / cpu["tokens/s"] if cpu else ""
        result["train_steps"] = steps
    if "kernels" in parts:
        result["lstm_kernels"] = {p: lstm_kernels(chunks, vocab, p) for p in ("fp32", "bf16")}
        print(result["lstm_kernels"], flush=True)
    if "encode" in parts:
        from encode_speed import synthetic

        corpora = {"BBC articles": pl.read_parquet(DATA / "bbc_news.parquet")["text"].to_list(),
                   "tweets": pl.read_parquet(DATA / "tweets_sentiment.parquet")["text"].to_list()}
        model_dir = args.model or untrained_model_dir(corpora["BBC articles"] + corpora["tweets"])
        corpora["synthetic"] = synthetic(args.synthetic)
        result["encode"], result["agreement"] = encode_rows(model_dir, corpora)
        result["model"] = args.model or "untrained"

    print(f"\n{info}")
    if "train_steps" in result:
        print_table("library training step on BBC chunks (≤64 tokens), over the timed steps", result["train_steps"],
                    ["hidden", "batch", "device", "precision", "tokens/s", "ms/step", "÷ 1 CPU thread"])
    for precision, k in result.get("lstm_kernels", {}).items():
        print(f"\n{precision}: LSTM ops on the GPU: {k['rnn_ops']} (cuDNN: {k['cudnn_rnn']})")
        print_table(f"heaviest GPU kernels, 3 {precision} steps at the default config", k["top_kernels"],
                    ["kernel", "share of GPU time"])
    if "encode" in result:
        print_table(f"encoder ({result['model']}; CPU: {os.cpu_count()} single-threaded processes)", result["encode"],
                    ["corpus", "docs", "precision", "GPU docs/s", "GPU tokenize share", "CPU docs/s", "GPU ÷ CPU"])
        print_table("GPU vectors vs CPU fp32 vectors of the same model", result["agreement"],
                    ["corpus", "precision", "docs", "median cosine", "min cosine"])
    write_json("gpu.json", result)


if __name__ == "__main__":
    main()
