"""Training time on a small collection as a user meets it (issue 23): `vecjob train` on Lee's 350 news
articles, by itself, in a fresh process.

    python bench/train_time.py [--seeds 0,1,2]

For each seed: the wall time of the whole `vecjob train` command (Python start, the embedded Ray's
start, vocabulary, LSA warm start, training on 2 CPU workers, publishing the model), as a terminal
shows it, and the model manifest's training figures. Target: ≤ 180 s on 2 cores. `bench/quality.py`
times the same training inside its long run (after the baselines and two large trainings on one
embedded Ray); bench/README.md gives both.
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

from common import write_json

from quality import gensim_collections


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-train-time-"))
    data = scratch / "lee.parquet"
    gensim_collections()["lee"].write_parquet(data)
    vecjob = Path(sys.executable).parent / "vecjob"
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        out = scratch / f"model-{seed}"
        t0 = time.perf_counter()
        done = subprocess.run([str(vecjob), "train", str(data), "--out", str(out), "--seed", str(seed)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        manifest = json.loads((out / "manifest.json").read_text())
        runs.append({"seed": seed, "command_s": wall, "rounds_run": manifest["rounds_run"],
                     "epochs_seen": manifest["epochs_seen"], "stop_reason": manifest["stop_reason"],
                     "tokens_per_s": [round(h["train_tokens_per_s"]) for h in manifest["history"]]})
        print(json.dumps(runs[-1]), flush=True)
    median = statistics.median(r["command_s"] for r in runs)
    print(f"Lee, `vecjob train` in a fresh process: median {median:.0f} s over {len(runs)} seeds")
    write_json("train_time.json", {"collection": "Lee (350 news articles, gensim's test data)", "runs": runs,
                                   "median_command_s": median, "target": "<= 180 s"})


if __name__ == "__main__":
    main()
