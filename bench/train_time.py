"""Training time as a user meets it (issue 23): `vecjob train` on a small collection by itself, in a
fresh process, with default settings.

    python bench/train_time.py [--seeds 0,1,2] [--collections lee,tweets-50] [--out train_time.json]

Collections: `lee`, Lee's 350 news articles (gensim's test data; target ≤ 180 s on 2 cores);
`tweets-50`, the first 50 rows of `../shared/data/tweets_sentiment.parquet` (a tiny collection, which
the token budget alone would train for 2,700 epochs; the epoch cap bounds it). For each seed: the wall
time of the whole `vecjob train` command (Python start, the embedded Ray's start, vocabulary, LSA warm
start, training on 2 CPU workers, publishing the model), as a terminal shows it, and the model
manifest's training figures. `bench/quality.py` times the Lee training inside its long run (after the
baselines and two large trainings on one embedded Ray); bench/README.md gives both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from common import DATA, write_json

from quality import gensim_collections


def collection(name: str) -> pl.DataFrame:
    if name == "lee":
        return gensim_collections()["lee"]
    if name == "tweets-50":
        return pl.read_parquet(DATA / "tweets_sentiment.parquet").head(50)
    raise SystemExit(f"--collections: no collection '{name}' (lee, tweets-50)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--collections", default="lee,tweets-50")
    ap.add_argument("--out", default="train_time.json", help="a file name in bench/results/")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-train-time-"))
    vecjob = Path(sys.executable).parent / "vecjob"
    results = {}
    for name in args.collections.split(","):
        data = scratch / f"{name}.parquet"
        collection(name).write_parquet(data)
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            out = scratch / f"model-{name}-{seed}"
            t0 = time.perf_counter()
            done = subprocess.run([str(vecjob), "train", str(data), "--out", str(out), "--seed", str(seed)],
                                  capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            manifest = json.loads((out / "manifest.json").read_text())
            runs.append({"seed": seed, "command_s": wall, "rounds_run": manifest["rounds_run"],
                         "epochs_seen": manifest["epochs_seen"], "stop_reason": manifest["stop_reason"],
                         "budget": manifest.get("budget"), "train_tokens": manifest["counts"]["train_tokens"],
                         "tokens_per_s": [round(h["train_tokens_per_s"]) for h in manifest["history"]]})
            print(name, json.dumps(runs[-1]), flush=True)
        median = statistics.median(r["command_s"] for r in runs)
        print(f"{name}, `vecjob train` in a fresh process: median {median:.0f} s over {len(runs)} seeds")
        results[name] = {"documents": len(collection(name)), "runs": runs, "median_command_s": median}
    write_json(args.out, {"collections": results, "target": "lee <= 180 s"})


if __name__ == "__main__":
    main()
