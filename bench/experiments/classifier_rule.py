"""How the classifier stage should choose its regularisation: rules compared without a test split.

    python bench/experiments/classifier_rule.py [--cache DIR] [--out bench/results/archive/classifier-rule.json]

`vecjob sentiment train` (the quickstart's topic classifier) standardises the vectors and fits a
class-balanced logistic regression whose C is chosen by 3-fold cross-validated macro-F1 on the
training rows. Which C it keeps is a rule, and rules are compared here on labelled collections the
way the stage meets them, without touching any test split:

- vecjob vectors (default settings, training seed 0, trained on each collection by itself) of BBC,
  the tweets, a 2,900-tweet sample (as `small_sentiment.py` draws it), the gensim newsgroups and
  polarity samples; for BBC and the tweets only the rows of split "train" are used;
- each rule picks C inside the training part of an outer 5-fold stratified split, repeated with two
  shuffles; the score is the outer folds' accuracy and macro-F1.

The rules: the one the stage had (the smallest C within one standard error of the best, over
0.01…10 in decades), the best C over the same decades, and both over half-decades from 0.001 to
1,000. The decision, fixed before the first run: a rule replaces the stage's only if its mean
accuracy over the collections is higher and it loses no collection by more than 0.005. "best,
decades" met it (results/archive/classifier-rule.json) and is the stage's rule now.
Vectors are cached (--cache) so the rules can be rescored without training again (~20 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import machine  # noqa: E402

DECADES = [0.01, 0.1, 1.0, 10.0]
HALF_DECADES = [float(c) for c in np.logspace(-3, 3, 13)]
RULES = {"one-SE, decades (the former rule)": (DECADES, True), "best, decades (the rule now)": (DECADES, False),
         "one-SE, half-decades": (HALF_DECADES, True), "best, half-decades": (HALF_DECADES, False)}
SAMPLE_SEED = 123  # as small_sentiment.py


def collections() -> dict[str, tuple[pl.DataFrame, np.ndarray]]:
    """name → (frame with id, text, label; mask of the rows whose labels the rules may see)."""
    gensim = quality.gensim_collections()
    bbc = pl.read_parquet(quality.DATA / "bbc_news.parquet")
    tweets = pl.read_parquet(quality.DATA / "tweets_sentiment.parquet")
    sample = tweets.sample(2900, seed=SAMPLE_SEED, shuffle=True)
    found = {"bbc": (bbc, (bbc["split"] == "train").to_numpy()),
             "tweets": (tweets, (tweets["split"] == "train").to_numpy()),
             "tweets-2900": (sample, np.ones(sample.height, bool))}
    for name in ("newsgroups", "polarity"):
        found[name] = (gensim[name], np.ones(gensim[name].height, bool))
    return found


def labelled_vectors(cache: Path):
    """(name, vectors, labels) of each collection's visible rows; vectors trained once, then cached."""
    cache.mkdir(parents=True, exist_ok=True)
    for name, (df, visible) in collections().items():
        vectors_file = cache / f"{name}.npy"
        if not vectors_file.exists():
            path = cache / f"{name}.parquet"
            df.select("id", "text").write_parquet(path)
            vectors = quality.vecjob_vectors(path, cache, "denoising", {}, seed=0)[0]["auto"]
            np.save(vectors_file, vectors)
        yield name, np.load(vectors_file)[visible], df["label"].cast(pl.String).to_numpy()[visible]


def one_standard_error_C(cv_results: dict, folds: int) -> float:
    """The strongest regularisation (smallest C) whose cross-validated score is within one standard
    error of the best C's: the rule `vecjob sentiment train` had before this comparison."""
    scores, spread = cv_results["mean_test_score"], cv_results["std_test_score"]
    best = int(np.argmax(scores))
    good_enough = scores[best] - spread[best] / np.sqrt(folds)
    return min(p["C"] for p, score in zip(cv_results["params"], scores) if score >= good_enough)


def rule_predictions(x_train, y_train, x_test) -> dict[str, tuple[np.ndarray, float]]:
    """Each rule's predictions for x_test and its C: one grid search per grid, serving both of its rules."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    mean, scale = x_train.mean(0), x_train.std(0)
    scale[scale < 1e-12] = 1.0
    z_train, z_test = (x_train - mean) / scale, (x_test - mean) / scale
    folds = max(2, min(3, int(np.unique(y_train, return_counts=True)[1].min())))
    searches, fitted, found = {}, {}, {}
    for name, (grid, one_se) in RULES.items():
        if id(grid) not in searches:
            searches[id(grid)] = GridSearchCV(
                LogisticRegression(max_iter=2000, class_weight="balanced"), {"C": grid},
                cv=StratifiedKFold(folds, shuffle=True, random_state=0), scoring="f1_macro", n_jobs=1,
            ).fit(z_train, y_train)
        search = searches[id(grid)]
        c = one_standard_error_C(search.cv_results_, folds) if one_se else search.best_params_["C"]
        if c not in fitted:
            model = LogisticRegression(max_iter=2000, class_weight="balanced", C=c).fit(z_train, y_train)
            fitted[c] = model.predict(z_test)
        found[name] = (fitted[c], c)
    return found


def score_rules(x: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    scores = {name: {"acc": [], "macro_f1": [], "C": []} for name in RULES}
    for shuffle in (1, 2):
        for train, test in StratifiedKFold(5, shuffle=True, random_state=shuffle).split(x, y):
            for name, (pred, c) in rule_predictions(x[train], y[train], x[test]).items():
                scores[name]["acc"].append(accuracy_score(y[test], pred))
                scores[name]["macro_f1"].append(f1_score(y[test], pred, average="macro"))
                scores[name]["C"].append(c)
    return {name: {"acc": float(np.mean(s["acc"])), "macro_f1": float(np.mean(s["macro_f1"])),
                   "C_median": float(np.median(s["C"]))} for name, s in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "vecjob-classifier-rule"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "classifier-rule.json"))
    args = ap.parse_args()
    cache = Path(args.cache)
    result = {"command": " ".join(sys.argv), "machine": machine(), "rules": {k: list(v) for k, v in RULES.items()},
              "collections": {}}
    for name, x, y in labelled_vectors(cache):
        result["collections"][name] = {"rows": int(len(y)), **score_rules(x, y)}
        print(name, json.dumps(result["collections"][name], indent=1), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    rows = result["collections"].values()
    result["mean_acc"] = {rule: float(np.mean([r[rule]["acc"] for r in rows])) for rule in RULES}
    result["mean_macro_f1"] = {rule: float(np.mean([r[rule]["macro_f1"] for r in rows])) for rule in RULES}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({"mean_acc": result["mean_acc"], "mean_macro_f1": result["mean_macro_f1"]}, indent=1))


if __name__ == "__main__":
    main()
