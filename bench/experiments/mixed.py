"""One collection of two kinds: BBC's articles and the tweets in one Parquet file, trained on together.

    python bench/experiments/mixed.py [--seeds 0,1,2] [--out bench/results/archive/mixed.json]

A team's collection is not always one kind of text: news beside social posts, reports beside
tickets. The quality suite trains one model per collection; this writes BBC's 2,225 articles and the
30,261 tweets into one file, trains vecjob on it with the default settings for each training seed
(one model: the token budget shared by both kinds), fits TF-IDF and LSA on the same 32,486 texts as a
user would (LSA for each seed of its SVD), and scores each method's vectors of each part with
`bench/quality.py`'s protocol for that corpus: BBC's probe on its split column, k-means NMI and ARI,
precision@10; the tweets' probe accuracy and macro-F1. Medians over the seeds, the per-seed rows beside.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import RowsFile  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "mixed.json"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    parts = {"bbc": pl.read_parquet(quality.DATA / "bbc_news.parquet"),
             "tweets": pl.read_parquet(quality.DATA / "tweets_sentiment.parquet")}
    mixed = pl.concat([df.select(id=pl.format("{}-{}", pl.lit(name), "id"), text="text") for name, df in parts.items()])
    rows_of = {"bbc": slice(0, parts["bbc"].height), "tweets": slice(parts["bbc"].height, mixed.height)}
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-mixed-"))
    path = scratch / "mixed.parquet"
    mixed.write_parquet(path)
    texts = mixed["text"].to_list()
    result = RowsFile(args.out, collection="BBC's articles and the tweets in one file", texts=mixed.height)

    def score(method: str, vectors, **extra) -> dict:
        return result.add({**quality.evaluate(method, {p: vectors[s] for p, s in rows_of.items()}, parts, {}),
                           **extra})

    score("TF-IDF 1-2gram", quality.tfidf_vectors(texts))
    lsa = [score("LSA 128", quality.lsa_vectors(texts, seed), seed=seed) for seed in seeds]
    vecjob = []
    for seed in seeds:
        encoded, info = quality.vecjob_vectors(path, scratch, "denoising", {}, seed)
        vecjob.append(score("vecjob default", encoded["auto"], seed=seed, train_s=info["train_s"],
                            epochs_seen=info["epochs_seen"], best_round=info["best_round"],
                            stop_reason=info["stop_reason"]))
    result.data["medians"] = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]
                                     if k.startswith(("bbc_", "tweets_")) or k == "train_s"}
                              for name, runs in (("LSA 128", lsa), ("vecjob default", vecjob)) if runs}
    result.write()
    print(json.dumps(result.data["medians"], indent=1))


if __name__ == "__main__":
    main()
