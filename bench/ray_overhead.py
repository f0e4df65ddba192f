"""Ray overhead (issue 4, benchmark 3): `vecjob encode` through Ray Data vs the in-process runner over
the same shards, same encoder, same thread count. Throughput ratio and peak memory (all processes).

    python bench/ray_overhead.py [--copies 2] [--shards 12] [--repeats 3] [--setups local,ray,ray-2x1]

Setups: `local` = the in-process loop with all threads; `ray` = the default actor pool (one actor
using every CPU's threads); `ray-AxT` = A actors of T torch threads each, where T must be CPUs ÷ A
(vecjob gives each actor that many threads).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from common import DATA, PeakRSS, print_table, untrained_model_dir, write_json


def encode_config(setup: str, batch_size: int):
    from vecjob.config import EncodeConfig

    if setup.startswith("ray-"):
        actors, threads = (int(v) for v in setup[4:].split("x"))
        if threads != max(1, os.cpu_count() // actors):
            raise SystemExit(f"{setup}: with {os.cpu_count()} CPUs, {actors} actor(s) get {os.cpu_count() // actors} thread(s)")
        return EncodeConfig(batch_size=batch_size, concurrency=actors)
    return EncodeConfig(batch_size=batch_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=2, help="tweets corpus copies (each 30k documents)")
    ap.add_argument("--shards", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--setups", default="local,ray,ray-2x1")
    ap.add_argument("--batch-size", type=int, default=None, help="chunks per forward pass (default: the config's)")
    args = ap.parse_args()

    from vecjob import runtime
    from vecjob.config import DataConfig, EncodeConfig
    from vecjob.encode_shards import InProcess, encode_collection
    from vecjob.ray_encode import RayData

    batch_size = args.batch_size or EncodeConfig().batch_size
    setups = args.setups.split(",")
    work = Path(tempfile.mkdtemp(prefix="vecjob-ray-overhead-"))
    tweets = pl.read_parquet(DATA / "tweets_sentiment.parquet")
    frame = pl.concat([tweets.with_columns(pl.col("id") + f"-{c}") for c in range(args.copies)])
    for i, part in enumerate(np.array_split(np.arange(frame.height), args.shards)):
        frame[part.tolist()].write_parquet(work / "data" / f"part-{i:03d}.parquet", mkdir=True)
    model = untrained_model_dir(tweets["text"].to_list(), work / "model")
    data = DataConfig(paths=[str(work / "data")])
    runtime.connect()

    results: dict[str, list[dict]] = {s: [] for s in setups}
    for rep in range(args.repeats):
        for setup in setups:  # interleaved, so drift on a shared machine hits every setup
            out = work / f"v-{setup}-{rep}"
            executor = InProcess() if setup == "local" else RayData()
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                m = encode_collection(data, model, out, encode_config(setup, batch_size), executor)
                wall = time.perf_counter() - t0
            results[setup].append({"wall_s": wall, "docs_per_s": m["counts"]["rows_in"] / wall,
                                   "peak_rss_gb": mem.peak / 1e9, "peak_pss_gb": mem.peak_pss / 1e9,
                                   "actors": m["actors"]})
            print(setup, results[setup][-1], flush=True)
            shutil.rmtree(out)
    rows = []
    for setup, runs in results.items():
        rows.append({"setup": setup, "docs": frame.height, "shards": args.shards, "batch": batch_size,
                     "median docs/s": statistics.median(r["docs_per_s"] for r in runs),
                     "median peak RSS GB": statistics.median(r["peak_rss_gb"] for r in runs),
                     "median peak PSS GB": statistics.median(r["peak_pss_gb"] for r in runs)})
    base = rows[0]["median docs/s"]
    for r in rows:
        r["÷ " + setups[0]] = r["median docs/s"] / base
    print_table(f"Ray overhead on {os.cpu_count()} CPUs", rows,
                ["setup", "docs", "shards", "batch", "median docs/s", "÷ " + setups[0],
                 "median peak RSS GB", "median peak PSS GB"])
    write_json("ray_overhead.json", {"ratios": {r["setup"]: r["÷ " + setups[0]] for r in rows},
                                     "summary": rows, "runs": results})
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
