"""Where the 2,900-tweet sample's gap to LSA lies: how much of each LSA coordinate the trained vector holds.

    python bench/experiments/lsa_fit.py [--seed 0] [--out bench/results/archive/small-sentiment-lsa-fit.json]

Trains vecjob with the default settings on `small_sentiment.py`'s sample (training seed --seed), then
measures, with LSA fitted on vecjob's own tokens (words alone; with and without the one-character
tokens):
- per block of 16 LSA coordinates, the cross-validated R² of a ridge map from the vecjob vector to
  them (how much of those coordinates the vector holds, linearly);
- the probe's accuracy on LSA's first and last 64 coordinates (where the sentiment signal lies);
- the probe on vecjob's vector and on LSA 128 (the suite's), text by text on the same five folds, and
  an exact McNemar test on the texts that one gets right and the other wrong (whether the gap is
  more than one sample of 2,900 texts can show).
About 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bench" / "experiments"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
import small_sentiment  # noqa: E402
from common import machine  # noqa: E402


def correct_by_text(x, y: np.ndarray) -> np.ndarray:
    """Whether the suite's probe gets each text right when it is in the held-out fold (cv_probe's folds)."""
    from sklearn.model_selection import StratifiedKFold

    right = np.zeros(len(y), dtype=bool)
    for train, test in StratifiedKFold(5, shuffle=True, random_state=quality.SEED).split(np.zeros(len(y)), y):
        right[test] = quality.fitted_probe(x[train], y[train]).predict(x[test]) == y[test]
    return right


def held_coordinates(z: np.ndarray, target: np.ndarray) -> list[float]:
    """Cross-validated R² of a ridge map from z to each target coordinate."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_predict

    pred = cross_val_predict(Ridge(alpha=1.0), z, target, cv=5)
    return (1 - ((pred - target) ** 2).sum(0) / ((target - target.mean(0)) ** 2).sum(0)).tolist()


def main() -> None:
    from scipy.stats import binomtest

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "small-sentiment-lsa-fit.json"))
    args = ap.parse_args()
    df = small_sentiment.sample_tweets(2900)
    texts, y = df["text"].to_list(), df["label"].to_numpy()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "sample.parquet"
        df.write_parquet(path)
        vectors, info = quality.vecjob_vectors(path, Path(scratch), "denoising", {}, args.seed)
    z = vectors["auto"]
    result = {"collection": "2900 tweets sampled with seed 123", "seed": args.seed,
              "command": " ".join(["bench/experiments/lsa_fit.py"] + sys.argv[1:]), "machine": machine(),
              "vecjob_acc": quality.cv_probe(z, y), "train_s": info["train_s"], "lsa_on_vecjob_tokens": {}}
    for name, longer_than in (("words", 0), ("words of 2+ characters", 1)):
        lsa = small_sentiment.lsa_on_vecjob_tokens(texts, longer_than=longer_than, ngrams=1)
        r2 = held_coordinates(z, lsa)
        result["lsa_on_vecjob_tokens"][name] = {
            "acc": quality.cv_probe(lsa, y),
            "acc_first_64": quality.cv_probe(lsa[:, :64], y), "acc_last_64": quality.cv_probe(lsa[:, 64:], y),
            "r2_by_16_coordinates": [float(np.mean(r2[i:i + 16])) for i in range(0, len(r2), 16)]}
        print(name, result["lsa_on_vecjob_tokens"][name], flush=True)
    right_vecjob = correct_by_text(z, y)
    right_lsa = correct_by_text(quality.lsa_vectors(texts), y)
    only_lsa, only_vecjob = int((right_lsa & ~right_vecjob).sum()), int((right_vecjob & ~right_lsa).sum())
    result["paired"] = {"vecjob_acc": float(right_vecjob.mean()), "lsa_acc": float(right_lsa.mean()),
                        "texts_only_lsa_right": only_lsa, "texts_only_vecjob_right": only_vecjob,
                        "mcnemar_exact_p": binomtest(only_lsa, only_lsa + only_vecjob, 0.5).pvalue}
    print(result["paired"])
    Path(args.out).write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
