"""Scale (issue 4, benchmark 4): synthetic collections of 100k and 1M short documents in 10 / 100
shards, `vecjob encode` (Ray Data) then `vecjob index` (factory auto) on this machine; wall time and
peak memory of every process (driver + Ray: summed RSS and summed PSS, and each process's share at
the peak), to show memory stays flat as the corpus grows.

    python bench/scale.py [--sizes 100000,1000000] [--precision auto|fp32|bf16]

The default run writes results/scale.json; one with another --precision writes
results/archive/scale-<precision>.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from common import DATA, PeakRSS, print_table, untrained_model_dir, write_json


def write_synthetic(folder: Path, n: int, shards: int, seed: int = 0, id_prefix: str = "") -> None:
    """Tweet-length documents of words drawn from the tweets vocabulary (vectorised: no Python loop)."""
    words = (pl.read_parquet(DATA / "tweets_sentiment.parquet")["text"].str.split(" ").explode()
             .drop_nulls().unique().sort())
    rng = np.random.default_rng(seed)
    per = n // shards
    for s in range(shards):
        lengths = rng.integers(8, 30, size=per)
        idx = rng.integers(len(words), size=int(lengths.sum()))
        flat = words.gather(idx)
        texts = pl.DataFrame({"w": flat, "doc": np.repeat(np.arange(per), lengths)}).group_by(
            "doc", maintain_order=True).agg(pl.col("w").str.join(" "))["w"]
        ids = pl.Series([f"{id_prefix}s{s:03d}-{i:06d}" for i in range(per)])
        pl.DataFrame({"id": ids, "text": texts}).write_parquet(folder / f"part-{s:03d}.parquet",
                                                               row_group_size=4096, mkdir=True)


def in_child(fn, *args) -> None:
    child = mp.get_context("spawn").Process(target=fn, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"{fn.__name__} failed in its child process")


def make_model(folder: str) -> None:
    untrained_model_dir(pl.read_parquet(DATA / "tweets_sentiment.parquet")["text"].to_list(), Path(folder))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--precision", default="auto", help="encode.precision")
    args = ap.parse_args()

    from vecjob import runtime
    from vecjob.config import DataConfig, EncodeConfig, IndexConfig
    from vecjob.index import index_collection
    from vecjob.encode_shards import encode_collection
    from vecjob.ray_encode import RayData

    work = Path(tempfile.mkdtemp(prefix="vecjob-scale-"))
    # Model and data are made in child processes: this process plays `vecjob encode`'s driver, which
    # never imports torch, and polars' allocator would keep the generator's memory in its RSS.
    model = work / "model"
    in_child(make_model, str(model))
    runtime.connect()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        shards = max(1, n // 10_000)
        data = work / f"data-{n}"
        t0 = time.perf_counter()
        in_child(write_synthetic, data, n, shards)
        gen_s = time.perf_counter() - t0
        with PeakRSS() as enc_rss:
            t0 = time.perf_counter()
            m = encode_collection(DataConfig(paths=[str(data)]), model, work / f"v-{n}",
                                  EncodeConfig(precision=args.precision), RayData())
            enc_s = time.perf_counter() - t0
        # Ray Data lets the encoder actors exit on their own, within about 2 s of the last batch;
        # they are idle by then, but would otherwise count in the first samples of the index stage.
        time.sleep(3)
        with PeakRSS() as idx_rss:
            t0 = time.perf_counter()
            im = index_collection(work / f"v-{n}", work / f"i-{n}", IndexConfig())
            idx_s = time.perf_counter() - t0
        rows.append({"docs": n, "shards": shards, "precision": ", ".join(m["precision"]),
                     "tokens": m["counts"]["tokens"], "encode s": enc_s,
                     "docs/s": n / enc_s, "encode peak RSS GB": enc_rss.peak / 1e9,
                     "encode peak PSS GB": enc_rss.peak_pss / 1e9, "factory": im["factory"],
                     "index s": idx_s, "index peak RSS GB": idx_rss.peak / 1e9,
                     "index peak PSS GB": idx_rss.peak_pss / 1e9,
                     "recall@10": im["recall_at_10"], "search params": im["search_params"],
                     "generate s": gen_s, "encode processes at peak": enc_rss.breakdown,
                     "index processes at peak": idx_rss.breakdown})
        print(rows[-1], flush=True)
        shutil.rmtree(data)
        shutil.rmtree(work / f"v-{n}")
    print_table("encode + index at scale (peak memory: driver + every Ray process)", rows,
                ["docs", "shards", "precision", "encode s", "docs/s", "encode peak RSS GB", "encode peak PSS GB",
                 "factory", "index s", "index peak RSS GB", "index peak PSS GB", "recall@10"])
    for r in rows:
        print_table(f"{r['docs']:,} docs: processes at the encode peak", r["encode processes at peak"],
                    ["process", "rss_gb", "pss_gb"])
    print(f"torch imported by the driver: {'torch' in sys.modules}")
    name = "scale.json" if args.precision == "auto" else f"archive/scale-{args.precision}.json"
    write_json(name, {"rows": rows, "driver_imported_torch": "torch" in sys.modules})
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
