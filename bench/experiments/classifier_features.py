"""What the classifier stage should fit on: the vectors standardised (the stage now), or scaled to
unit length first. Compared without a test split, as classifier_rule.py compares rules for C.

    python bench/experiments/classifier_features.py [--cache DIR] [--out bench/results/archive/classifier-features.json]

The index and the clustering compare vectors by cosine, so a document's vector length carries
nothing they use; the classifier stage standardises each dimension and leaves the length in.
Both ways are scored on classifier_rule.py's collections and folds (vecjob vectors, default
settings, seed 0, each collection trained on by itself; BBC and the tweets: their train rows only;
an outer 5-fold stratified split repeated with two shuffles; C chosen inside each training part by
the stage's rule, the best 3-fold macro-F1 over 0.01…10). The decision, fixed before the first run
(as classifier_rule.py's): unit length replaces the stage's features only if its mean accuracy over
the collections is higher and it loses no collection by more than 0.005.
Vectors are cached (--cache; classifier_rule.py's cache serves too) (~20 min on 2 cores without).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "experiments"))

from classifier_rule import DECADES, labelled_vectors, machine  # noqa: E402

FEATURES = {"standardised (the stage now)": False, "unit length, then standardised": True}


def predictions(x_train, y_train, x_test, unit: bool) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    if unit:
        x_train = x_train / np.maximum(np.linalg.norm(x_train, axis=1, keepdims=True), 1e-12)
        x_test = x_test / np.maximum(np.linalg.norm(x_test, axis=1, keepdims=True), 1e-12)
    mean, scale = x_train.mean(0), x_train.std(0)
    scale[scale < 1e-12] = 1.0
    folds = max(2, min(3, int(np.unique(y_train, return_counts=True)[1].min())))
    search = GridSearchCV(LogisticRegression(max_iter=2000, class_weight="balanced"), {"C": DECADES},
                          cv=StratifiedKFold(folds, shuffle=True, random_state=0), scoring="f1_macro", n_jobs=1)
    return search.fit((x_train - mean) / scale, y_train).predict((x_test - mean) / scale)


def score(x: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    scores = {name: {"acc": [], "macro_f1": []} for name in FEATURES}
    for shuffle in (1, 2):
        for train, test in StratifiedKFold(5, shuffle=True, random_state=shuffle).split(x, y):
            for name, unit in FEATURES.items():
                pred = predictions(x[train], y[train], x[test], unit)
                scores[name]["acc"].append(accuracy_score(y[test], pred))
                scores[name]["macro_f1"].append(f1_score(y[test], pred, average="macro"))
    return {name: {k: float(np.mean(v)) for k, v in s.items()} for name, s in scores.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "vecjob-classifier-rule"))
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "classifier-features.json"))
    args = ap.parse_args()
    cache = Path(args.cache)
    result = {"command": " ".join(sys.argv), "machine": machine(), "features": list(FEATURES), "collections": {}}
    for name, x, y in labelled_vectors(cache):
        result["collections"][name] = {"rows": int(len(y)), **score(x, y)}
        print(name, json.dumps(result["collections"][name], indent=1), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    rows = result["collections"].values()
    for key in ("acc", "macro_f1"):
        result[f"mean_{key}"] = {f: float(np.mean([r[f][key] for r in rows])) for f in FEATURES}
    base, unit = FEATURES
    result["largest_loss"] = float(max(r[base]["acc"] - r[unit]["acc"] for r in rows))
    result["adopt"] = result["mean_acc"][unit] > result["mean_acc"][base] and result["largest_loss"] <= 0.005
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("mean_acc", "mean_macro_f1", "largest_loss", "adopt")}, indent=1))


if __name__ == "__main__":
    main()
