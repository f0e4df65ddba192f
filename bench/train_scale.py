"""Training on a large collection: `vecjob train` with default settings on news articles written as
pandas writes them (one Parquet file, one row group), at two sizes; wall time and peak memory of the
command and every process it starts (summed RSS and PSS), and what the model manifest says it read.

    python bench/train_scale.py [--sizes 20000,100000]

The articles are BBC's 2,225, repeated under new ids up to the size (their words, and so the
vocabulary, do not grow with it). With the 3M-token budget a collection of more than 6M tokens is
trained on a sample of its documents (`vecjob.dataset.training_sample`) and read 65,536 rows at a
time, so memory and time should hardly grow with the collection: the vocabulary pass and the drift
baseline still read every text.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from common import DATA, PeakRSS, print_table, write_json


def write_articles(path: Path, n: int) -> None:
    bbc = pl.read_parquet(DATA / "bbc_news.parquet").select("id", "text")
    copies = range(n // bbc.height + 1)
    table = pl.concat([bbc.with_columns(pl.format("{}-{}", pl.col("id"), pl.lit(c)).alias("id")) for c in copies])
    table = table.head(n).to_arrow()
    pq.write_table(table, path, row_group_size=n)  # one row group: pandas writes up to 1Mi rows to one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20000,100000")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vecjob-train-scale-"))
    vecjob = Path(sys.executable).parent / "vecjob"
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        data = work / f"articles-{n}.parquet"
        write_articles(data, n)
        out = work / f"model-{n}"
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            done = subprocess.run([str(vecjob), "train", str(data), "--out", str(out)], capture_output=True, text=True)
            wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        manifest = json.loads((out / "manifest.json").read_text())
        counts = manifest["counts"]
        rows.append({"docs": n, "file MB": data.stat().st_size / 1e6, "command s": wall,
                     "prepare s": manifest["timings"]["prepare_s"], "fit s": manifest["timings"]["fit_s"],
                     "peak RSS GB": rss.peak / 1e9, "peak PSS GB": rss.peak_pss / 1e9,
                     "sample": counts["sample"], "train tokens": counts["train_tokens"],
                     "train chunks": counts["train_chunks"], "epochs_seen": manifest["epochs_seen"],
                     "stop_reason": manifest["stop_reason"], "processes at peak": rss.breakdown})
        print({k: v for k, v in rows[-1].items() if k != "processes at peak"}, flush=True)
        shutil.rmtree(out)
        data.unlink()
    print_table("vecjob train on one file of news articles (peak memory: the command and every process it starts)",
                rows, ["docs", "file MB", "command s", "prepare s", "fit s", "peak RSS GB", "peak PSS GB", "sample",
                       "train tokens"])
    write_json("train_scale.json", {"rows": rows})
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
