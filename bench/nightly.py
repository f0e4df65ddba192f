"""Nightly runs (issue 27): a collection of 1M short documents in 1,000 shards, run once in full with
`vecjob run` (encode + index; the model is pinned), then nights that each add 1% of new documents
(10 shards) and delete 0.1% (one shard of 1,000): wall time and peak memory (driver + Ray processes) of a night
against the full run, in the same run of this script; and after the nights, the updated index's
recall@10 against a fresh rebuild over the same vectors.

    python bench/nightly.py [--docs 1000000] [--nights 10]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import PeakRSS, print_table, write_json
from scale import in_child, make_model, write_synthetic


def night_spec(docs: Path, out: Path):
    from vecjob.config import JobSpec

    return JobSpec(name="nightly-bench", out=str(out), stages=["encode", "index"], data={"paths": [f"{docs}/*.parquet"]})


def timed_run(spec) -> dict:
    from vecjob.pipeline import run_job

    with PeakRSS() as memory:
        t0 = time.perf_counter()
        manifest = run_job(spec)
        wall = time.perf_counter() - t0
    index = next(s for s in manifest["stages"] if s["stage"] == "index")["metrics"]
    return {"wall_s": wall, "peak_rss_gb": memory.peak / 1e9, "peak_pss_gb": memory.peak_pss / 1e9,
            "shards_new": manifest["night"]["shards_new"], "shards_removed": manifest["night"]["shards_removed"],
            "index_action": index["action"], "added": index["added"], "removed": index["removed"],
            "ntotal": index["ntotal"], "recall_at_10": index["recall_at_10"],
            "seconds": manifest["night"].get("seconds", {})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--nights", type=int, default=10)
    args = ap.parse_args()

    from vecjob import runtime
    from vecjob.config import IndexConfig
    from vecjob.index import build_index

    shards = args.docs // 1000
    work = Path(tempfile.mkdtemp(prefix="vecjob-nightly-"))
    docs, out = work / "docs", work / "collection"
    in_child(make_model, str(out / "model"))  # a pinned model: training is not what a night costs
    in_child(write_synthetic, docs, args.docs, shards, 0)
    runtime.connect()

    rows = [{"run": "full", **timed_run(night_spec(docs, out))}]
    print_table("full run", rows, ["run", "wall_s", "peak_rss_gb", "ntotal", "recall_at_10"])
    for night in range(1, args.nights + 1):
        batch = work / f"night-{night}"
        in_child(write_synthetic, batch, args.docs // 100, 10, 1000 + night, f"night{night}-")
        for i, f in enumerate(sorted(batch.glob("*.parquet"))):
            shutil.move(f, docs / f"night{night:02d}-{i:02d}.parquet")
        (docs / f"part-{night - 1:03d}.parquet").unlink()  # and one old shard (0.1%) leaves the collection
        rows.append({"run": f"night {night}", **timed_run(night_spec(docs, out))})
        print_table(f"night {night}", rows[-1:], ["run", "wall_s", "peak_rss_gb", "index_action", "added",
                                                  "removed", "ntotal", "recall_at_10"])
    t0 = time.perf_counter()
    fresh = build_index(out / "vectors", IndexConfig())
    rebuild = {"run": "fresh rebuild of the last night's vectors", "wall_s": time.perf_counter() - t0,
               "ntotal": fresh.manifest["ntotal"], "recall_at_10": fresh.manifest["recall_at_10"],
               "index_action": fresh.manifest["factory"]}
    rows.append(rebuild)
    nights = rows[1:-1]
    full = rows[0]
    summary = {
        "night_wall_over_full_median": sorted(r["wall_s"] for r in nights)[len(nights) // 2] / full["wall_s"],
        "recall_after_nights": nights[-1]["recall_at_10"] if nights else None,
        "recall_fresh_rebuild": rebuild["recall_at_10"],
    }
    print_table("nightly runs against the full run", rows,
                ["run", "wall_s", "peak_rss_gb", "index_action", "added", "removed", "ntotal", "recall_at_10"])
    print(summary)
    write_json("nightly.json", {"docs": args.docs, "shards": shards, "rows": rows, "summary": summary})
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
