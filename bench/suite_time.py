"""The test suite's wall time (the brief: about 20 minutes at most on CI's 2 cores), as README.md
states it.

    python bench/suite_time.py

Runs the README's test command, `python -m pytest -q`, from the repository root (with
`--durations=10`, which only adds the ten slowest steps to the output), and records its wall time,
pytest's counts and those ten steps. Run it on an otherwise idle machine: the suite starts Ray
clusters, a Ray Serve service and trainings that share its two cores with anything else running.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from common import write_json

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 20 * 60


def main() -> None:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--durations=10"], cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = done.stdout.strip().splitlines()
    counts = {kind.removesuffix("s"): int(n)  # "1 error", "2 errors": one key
              for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|warnings?|xfailed|xpassed)",
                                        lines[-1] if lines else "")}
    slowest = [line for line in lines if re.match(r"^\d+\.\d+s (setup|call|teardown) ", line)]
    failures = [line[:500] for line in lines if line.startswith(("FAILED ", "ERROR "))]  # -ra's summary lines
    print("\n".join([*slowest, *failures, lines[-1] if lines else done.stderr[-2000:]]))
    if done.returncode:
        print(done.stdout[-30000:])  # the failures' tracebacks
    print(f"the suite: {wall / 60:.1f} min wall, exit code {done.returncode}")
    write_json("suite_time.json", {"test_command": "python -m pytest -q", "exit_code": done.returncode,
                                   "wall_s": wall, "counts": counts, "slowest": slowest, "failures": failures,
                                   "pytest_summary": lines[-1] if lines else "", "target": f"<= {TARGET_S} s"})


if __name__ == "__main__":
    main()
