"""A collection in many small vector shards, as years of nights leave it: what each shard costs the
stages that read a vectors dir (building the index, updating it after a night that adds 1% of
shards, clustering), at two shard counts of the same rows per shard, in one run. A stage's cost per
shard should not grow with the number of shards: a cost that grows with their square shows as the
ratio of the two counts (8× for the default counts).

    python bench/shards.py [--shards 500,4000] [--rows 50]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from common import print_table, write_json

MODEL = "synthetic"
DIM = 128


def write_shards(folder: Path, first: int, count: int, rows: int) -> list[dict]:
    """Shards first .. first + count - 1 of `rows` vectors each around 100 centres (ids unique across
    shards); returns their manifest entries."""
    from vecjob.parquet_io import write_parquet_atomic
    from vecjob.vectors import vectors_table, with_model_fingerprint

    centres = np.random.default_rng(0).normal(size=(100, DIM)).astype(np.float32)
    entries = []
    for s in range(first, first + count):
        rng = np.random.default_rng(s)
        x = centres[rng.integers(100, size=rows)] + 0.5 * rng.normal(size=(rows, DIM)).astype(np.float32)
        table = with_model_fingerprint(vectors_table(pa.array(np.arange(s * rows, (s + 1) * rows)), x), MODEL)
        write_parquet_atomic(table, folder / f"s{s:06d}.parquet")
        entries.append({"output": f"s{s:06d}.parquet", "rows_out": rows})
    return entries


def publish(folder: Path, entries: list[dict]) -> None:
    from vecjob.parquet_io import new_manifest, write_json_atomic
    from vecjob.vectors import MANIFEST_KIND

    write_json_atomic(new_manifest(MANIFEST_KIND, dim=DIM, shards=entries, model_fingerprint=MODEL,
                                   vectors_fingerprint=f"synthetic-{len(entries)}"), folder / "manifest.json")


def measure(work: Path, shards: int, rows: int) -> dict:
    from vecjob.cluster import cluster_collection
    from vecjob.config import ClusterConfig, IndexConfig
    from vecjob.index import index_collection

    vectors, index = work / f"vectors-{shards}", work / f"index-{shards}"
    vectors.mkdir()
    entries = write_shards(vectors, 0, shards, rows)
    publish(vectors, entries)
    # The same index at both counts, so what differs is the shards: one of codes, whose update reads
    # the vectors dir again (it cannot give back the vectors it holds) for the queries it searches again.
    cfg = IndexConfig(factory="PQ16", target_recall=0.0)
    seconds = {}
    t0 = time.perf_counter()
    index_collection(vectors, index, cfg)
    seconds["index build"] = time.perf_counter() - t0
    night = max(1, shards // 100)
    publish(vectors, entries + write_shards(vectors, shards, night, rows))
    t0 = time.perf_counter()
    manifest = index_collection(vectors, index, cfg, update=True)
    seconds["index update"] = time.perf_counter() - t0
    assert manifest["ntotal"] == (shards + night) * rows, manifest["ntotal"]
    t0 = time.perf_counter()
    cluster_collection(vectors, work / f"clusters-{shards}", 8, ClusterConfig(seeds=1))
    seconds["cluster"] = time.perf_counter() - t0
    return {"shards": shards, "rows per shard": rows, "vectors": (shards + night) * rows,
            **{f"{stage} s": s for stage, s in seconds.items()},
            **{f"{stage} ms/shard": 1000 * s / (shards + night) for stage, s in seconds.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", default="500,4000")
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--out", default="shards.json")
    args = ap.parse_args()
    counts = [int(c) for c in args.shards.split(",")]
    work = Path(tempfile.mkdtemp(prefix="vecjob-shards-"))
    try:
        measure(work, 20, args.rows)  # imports and first calls, not counted
        rows = [measure(work, count, args.rows) for count in counts]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    stages = ["index build", "index update", "cluster"]
    growth = {stage: rows[-1][f"{stage} ms/shard"] / rows[0][f"{stage} ms/shard"] for stage in stages}
    print_table("many small vector shards", rows,
                ["shards", "vectors", *(f"{s} s" for s in stages), *(f"{s} ms/shard" for s in stages)])
    print("per-shard cost, most shards ÷ fewest: " + ", ".join(f"{s} {g:.2f}×" for s, g in growth.items()))
    write_json(args.out, {"rows": rows, "per_shard_growth": growth, "worst_growth": max(growth.values())})


if __name__ == "__main__":
    main()
