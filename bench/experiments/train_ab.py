"""Two revisions of vecjob, `vecjob train` alternating on one collection: a whole-run A/B on a shared
machine, where runs hours apart differ by tens of percent.

    python bench/experiments/train_ab.py REV_A REV_B [--collection tweets] [--tokens 600000] [--repeats 2]
                                         [--out archive/train-ab.json]

Each revision is checked out in a temporary git worktree and put first on PYTHONPATH: the CLI imports
it from there (checked before each run), and so do the embedded Ray's workers, which inherit the
driver's environment and its sys.path. The runs alternate A, B, A, B, …; each is the whole
`vecjob train` command with default settings but the token budget, in a fresh process. Recorded: the
command's wall time and each round's training tokens/s from the model manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from common import DATA, write_json  # noqa: E402


def collection(name: str) -> pl.DataFrame:
    if name == "lee":
        from quality import gensim_collections

        return gensim_collections()["lee"]
    return pl.read_parquet(DATA / {"tweets": "tweets_sentiment.parquet", "bbc": "bbc_news.parquet"}[name])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("revisions", nargs=2)
    ap.add_argument("--collection", default="tweets", choices=["tweets", "bbc", "lee"])
    ap.add_argument("--tokens", type=int, default=600_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="archive/train-ab.json", help="a path under bench/results/")
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-train-ab-"))
    data = scratch / f"{args.collection}.parquet"
    collection(args.collection).write_parquet(data)
    trees = {}
    for rev in args.revisions:
        tree = scratch / f"tree-{len(trees)}"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
        trees[rev] = tree
    vecjob = Path(sys.executable).parent / "vecjob"
    runs: dict[str, list[dict]] = {rev: [] for rev in args.revisions}
    try:
        for repeat in range(args.repeats):
            for rev, tree in trees.items():
                out = scratch / f"model-{len(runs[rev])}-{tree.name}"
                env = {**os.environ, "PYTHONPATH": str(tree)}
                check = subprocess.run([sys.executable, "-c", "import vecjob; print(vecjob.__file__)"], env=env,
                                       capture_output=True, text=True, check=True).stdout.strip()
                if not check.startswith(str(tree)):
                    raise SystemExit(f"{rev}: vecjob imports from {check}, not from its worktree")
                t0 = time.perf_counter()
                command = [str(vecjob), "train", str(data), "--out", str(out), "--tokens", str(args.tokens)]
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-3000:])
                manifest = json.loads((out / "manifest.json").read_text())
                rates = [round(h["train_tokens_per_s"]) for h in manifest["history"]]
                runs[rev].append({"repeat": repeat, "command_s": wall, "train_minutes": manifest["train_minutes"],
                                  "tokens_per_s": rates})
                print(rev, json.dumps(runs[rev][-1]), flush=True)
    finally:
        for tree in trees.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    summary = {rev: {"median_command_s": statistics.median(r["command_s"] for r in rs),
                     "median_round_tokens_per_s": statistics.median(x for r in rs for x in r["tokens_per_s"])}
               for rev, rs in runs.items()}
    for rev, figures in summary.items():
        print(f"{rev}: median command {figures['median_command_s']:.0f} s, "
              f"median round {figures['median_round_tokens_per_s']:,.0f} tokens/s")
    write_json(args.out, {"collection": args.collection, "tokens": args.tokens, "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
