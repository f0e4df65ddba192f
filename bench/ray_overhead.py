"""Ray overhead (issue 4, benchmark 3): `vecjob encode` through Ray Data vs the in-process runner over
the same shards, same encoder, same thread count. Throughput ratio and peak RSS (all processes).

    python bench/ray_overhead.py [--copies 2] [--shards 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from common import DATA, PeakRSS, print_table, untrained_model_dir, write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=2, help="tweets corpus copies (each 30k documents)")
    ap.add_argument("--shards", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from vecjob import runtime
    from vecjob.config import DataConfig, EncodeConfig
    from vecjob.ray_encode import encode_collection

    work = Path(tempfile.mkdtemp(prefix="vecjob-ray-overhead-"))
    tweets = pl.read_parquet(DATA / "tweets_sentiment.parquet")
    frame = pl.concat([tweets.with_columns(pl.col("id") + f"-{c}") for c in range(args.copies)])
    for i, part in enumerate(np.array_split(np.arange(frame.height), args.shards)):
        frame[part.tolist()].write_parquet(work / "data" / f"part-{i:03d}.parquet", mkdir=True)
    model = untrained_model_dir(tweets["text"].to_list(), work / "model")
    data = DataConfig(paths=[str(work / "data")])
    runtime.connect()

    results = {"ray": [], "local": []}
    for rep in range(args.repeats):
        for runner in ("local", "ray"):  # alternate, so drift on a shared machine hits both
            out = work / f"v-{runner}-{rep}"
            with PeakRSS() as rss:
                t0 = time.perf_counter()
                m = encode_collection(data, model, out, EncodeConfig(), runner=runner)
                wall = time.perf_counter() - t0
            results[runner].append({"wall_s": wall, "docs_per_s": m["counts"]["rows_in"] / wall,
                                    "peak_rss_gb": rss.peak / 1e9, "actors": m["actors"]})
            print(runner, results[runner][-1], flush=True)
            shutil.rmtree(out)
    rows = []
    for runner, runs in results.items():
        rows.append({"runner": runner, "docs": frame.height, "shards": args.shards,
                     "median docs/s": statistics.median(r["docs_per_s"] for r in runs),
                     "median peak RSS GB": statistics.median(r["peak_rss_gb"] for r in runs)})
    ratio = rows[0]["median docs/s"] / rows[1]["median docs/s"]
    print_table(f"Ray Data ÷ in-process throughput: {ratio:.2f}", rows,
                ["runner", "docs", "shards", "median docs/s", "median peak RSS GB"])
    write_json("ray_overhead.json", {"ratio_ray_over_local": ratio, "summary": rows, "runs": results})
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
