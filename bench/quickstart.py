"""The README's quickstart as a new user runs it (issue 23, time to quality).

    python bench/quickstart.py

Runs `vecjob run jobs/quickstart.toml --out <a fresh folder>` in a fresh process (the embedded
local Ray, default settings) and records what its summary shows, from the run manifest: training
time, where training stopped, topic accuracy and macro-F1 of the classifier on the test split,
cluster NMI. Targets: accuracy ≥ 0.97 in the summary; ≤ 5 minutes of training on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, write_json


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="vecjob-quickstart-")) / "run"
    vecjob = Path(sys.executable).parent / "vecjob"
    t0 = time.perf_counter()
    done = subprocess.run([str(vecjob), "run", str(REPO / "jobs" / "quickstart.toml"), "--out", str(out)],
                          capture_output=True, text=True)
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
    write_json("quickstart.json", {"figures": figures, "targets": {"accuracy": ">= 0.97", "train_s": "<= 300"},
                                   "summary": done.stderr[-4000:]})


if __name__ == "__main__":
    main()
