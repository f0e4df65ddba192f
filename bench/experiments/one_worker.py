"""One CPU worker on the embedded Ray: the same training in the command's own process and on a Ray
Train worker, one job after another on one Ray.

    python bench/experiments/one_worker.py [--repeats 3] [--out bench/results/archive/one-worker.json]

`RayTrain` fits a job of one CPU worker on the Ray its process started in that process
(`vecjob.trainer.InProcess`, checkpointed every round). This trains the same job both ways, on the
first 50 rows of `../shared/data/tweets_sentiment.parquet` (train_time.py's tiny collection) with
the default settings and `train.workers = 1`, the Ray Train way by making `RayTrain` take its Ray
for a cluster's. It records the fit's time (`timings.fit_s` of the model manifest: the run without
vocabulary, LSA or publishing) and the validation loss of every round, which should agree to float
rounding (both run the same loop on one thread). Order alternates between repeats. ~3 minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from common import DATA, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "bench/results/archive/one-worker.json"))
    args = ap.parse_args()

    import polars as pl
    import ray

    from vecjob import runtime
    from vecjob.config import DataConfig, ModelConfig, TokenizerConfig, TrainConfig
    from vecjob.ray_train import RayTrain
    from vecjob.trainer import train_model

    scratch = Path(tempfile.mkdtemp(prefix="vecjob-one-worker-"))
    data = scratch / "tweets-50.parquet"
    pl.read_parquet(DATA / "tweets_sentiment.parquet").head(50).write_parquet(data)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runtime.connect()
    started_here = runtime.started_here
    runs: dict[str, list[dict]] = {"in this process": [], "Ray Train worker": []}
    for repeat in range(args.repeats):
        ways = list(runs) if repeat % 2 == 0 else list(reversed(runs))
        for way in ways:
            runtime.started_here = started_here if way == "in this process" else (lambda: False)
            out = scratch / f"model-{repeat}-{'here' if way == 'in this process' else 'ray-train'}"
            manifest = train_model(DataConfig(paths=[str(data)]), out, TokenizerConfig(), ModelConfig(),
                                   TrainConfig(workers=1), RayTrain())
            runs[way].append({"fit_s": manifest["timings"]["fit_s"], "rounds_run": manifest["rounds_run"],
                              "val_loss": [h["val_loss"] for h in manifest["history"]]})
            print(way, json.dumps(runs[way][-1]), flush=True)
    runtime.started_here = started_here
    ray.shutdown()
    medians = {way: statistics.median(r["fit_s"] for r in rs) for way, rs in runs.items()}
    here, there = runs["in this process"][0]["val_loss"], runs["Ray Train worker"][0]["val_loss"]
    largest_gap = max((abs(a - b) / b for a, b in zip(here, there)), default=0.0) if len(here) == len(there) else None
    for way, median in medians.items():
        print(f"{way}: fit median {median:.1f} s over {args.repeats}")
    print(f"largest relative gap between the two ways' validation losses, round by round: {largest_gap}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "machine": machine(), "runs": runs,
                               "median_fit_s": medians, "largest_val_loss_gap": largest_gap}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
