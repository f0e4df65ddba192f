"""The README's quickstart as a new user runs it (issue 23, time to quality).

    python bench/quickstart.py [--seed N]    (--seed: another training seed, into results/archive/)

Runs `vecjob run jobs/quickstart.toml --out <a fresh folder>` in a fresh process (the embedded
local Ray, default settings) and records what its summary shows, from the run manifest: training
time, where training stopped, topic accuracy and macro-F1 of the classifier on the test split,
cluster NMI. Targets: accuracy ≥ 0.97 in the summary; ≤ 5 minutes of training on 2 cores.
A new user's CPU trains differently from this one (oneDNN picks kernels, and so rounding, by
instruction set), much as another seed does: `--seed` runs the same job with `train.seed` = N, to see
how far the figures move.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None, help="train.seed (default: the job's own)")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-quickstart-"))
    out = scratch / "run"
    job = REPO / "jobs" / "quickstart.toml"
    if args.seed is not None:
        spec, found = re.subn(r"^\[train\]$", f"[train]\nseed = {args.seed}", job.read_text(), count=1, flags=re.M)
        if not found:
            raise SystemExit(f"{job}: no [train] table to set the seed in")
        job = scratch / "quickstart.toml"
        job.write_text(spec)
    vecjob = Path(sys.executable).parent / "vecjob"
    t0 = time.perf_counter()
    done = subprocess.run([str(vecjob), "run", str(job), "--out", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    run = json.loads((out / "run_manifest.json").read_text())
    stages = {r["stage"]: r for r in run["stages"]}
    classifier = json.loads((out / "sentiment" / "classifier" / "manifest.json").read_text())
    figures = {
        "train_s": stages["train"]["seconds"],
        **{k: stages["train"]["metrics"][k] for k in ("best_round", "rounds_run", "epochs_seen", "stop_reason")},
        "accuracy": stages["sentiment"]["metrics"]["accuracy"],
        "macro_f1": stages["sentiment"]["metrics"]["macro_f1"],
        "chosen_C": classifier["chosen_C"],
        "nmi": stages["cluster"]["metrics"]["nmi"],
        "run_s": seconds,
    }
    print(json.dumps(figures, indent=2))
    name = "quickstart.json" if args.seed is None else f"archive/quickstart-seed-{args.seed}.json"
    write_json(name, {"seed": args.seed, "figures": figures,
                      "targets": {"accuracy": ">= 0.97", "train_s": "<= 300"}, "summary": done.stderr[-4000:]})


if __name__ == "__main__":
    main()
