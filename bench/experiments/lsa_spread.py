"""How far the LSA baseline moves on its own: the small collections' targets against LSA's own spread.

    python bench/experiments/lsa_spread.py [--train-seeds 0] [--out bench/results/archive/lsa-spread.json]

The suite fits LSA once (128 dimensions, the SVD's random_state 0) and takes vecjob's median over
three training seeds. This scores LSA as the suite fits it but with other SVD seeds (0-4) and other
widths (96-160, 256 at seed 0), each with the suite's task for the collection: the 2,900-tweet sample
of `small_sentiment.py` and polarity (probe accuracy, 5-fold), newsgroups (probe accuracy), Lee
(Pearson r with the human judgments). With --train-seeds, vecjob's default is trained on the tweet
sample for each seed and scored three ways: its vector alone; its vector and LSA's side by side
(each standardised, 256 features: does the trained vector hold what LSA lacks?); and, as the
control for the width, LSA at 256. A minute or two without training; about 4 minutes a training seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bench" / "experiments"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import machine  # noqa: E402
from small_sentiment import sample_tweets  # noqa: E402

SVD_SEEDS = (0, 1, 2, 3, 4)
WIDTHS = (96, 112, 128, 144, 160, 256)


def standardised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-seeds", default="", help="train vecjob on the tweet sample with these seeds")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "lsa-spread.json"))
    args = ap.parse_args()
    sample = sample_tweets(2900)
    gensim = quality.gensim_collections()
    lee = gensim["lee"]
    judged = np.flatnonzero(lee["judged"].to_numpy())

    tasks = {  # collection → (texts, score of a vector set)
        "tweets-2900": (sample["text"].to_list(), lambda x: quality.cv_probe(x, sample["label"].to_numpy())),
        "polarity": (gensim["polarity"]["text"].to_list(),
                     lambda x: quality.cv_probe(x, gensim["polarity"]["label"].to_numpy())),
        "newsgroups": (gensim["newsgroups"]["text"].to_list(),
                       lambda x: quality.cv_probe(x, gensim["newsgroups"]["label"].to_numpy())),
        "lee": (lee["text"].to_list(), lambda x: quality.human_similarity_pearson(x, judged, quality.LEE_HUMAN)),
    }
    result = {"command": " ".join(sys.argv), "machine": machine(), "collections": {}}

    def save() -> None:
        Path(args.out).write_text(json.dumps(result, indent=2, default=float))

    for name, (texts, score) in tasks.items():
        rows = {f"svd seed {s}": score(quality.lsa_vectors(texts, s)) for s in SVD_SEEDS}
        rows |= {f"width {w}": score(quality.lsa_vectors(texts, dim=w)) for w in WIDTHS if w != quality.DIM}
        seeds = [rows[f"svd seed {s}"] for s in SVD_SEEDS]
        result["collections"][name] = {"rows": rows, "svd_seed_median": statistics.median(seeds),
                                       "svd_seed_range": [min(seeds), max(seeds)]}
        print(name, json.dumps(result["collections"][name], default=float), flush=True)
        save()

    texts, score = tasks["tweets-2900"]
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-lsa-spread-"))
    path = scratch / "tweets-2900.parquet"
    sample.write_parquet(path)
    lsa128 = quality.lsa_vectors(texts)
    for seed in [int(s) for s in args.train_seeds.split(",") if s]:
        z = quality.vecjob_vectors(path, scratch, "denoising", {}, seed)[0]["auto"]
        row = {"seed": seed, "vecjob": score(z), "vecjob and LSA 128": score(np.hstack([standardised(z),
                                                                                     standardised(lsa128)]))}
        result.setdefault("vecjob on tweets-2900", []).append(row)
        print(json.dumps(row, default=float), flush=True)
        save()
    save()


if __name__ == "__main__":
    main()
