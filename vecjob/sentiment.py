"""Sentiment (or any label) classification on document vectors.

train:   join vectors to labels by id, fit standardised multinomial logistic regression (C by 3-fold
         CV on the training ids; balanced class weights), save it as plain arrays (no pickle).
eval:    accuracy, macro-F1, per-class precision/recall/F1, confusion matrix (+ PNG).
predict: one prediction shard per vector shard (id, label, prob_<class>...), written atomically.

Rows of split "train" train and rows of split "test" evaluate; labels without a split column are
split by id hash (a fifth for test), so an evaluation never scores the rows the classifier fitted.
"""

from __future__ import annotations

import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from vecjob import storage
from vecjob.config import SentimentConfig
from vecjob.dataset import TEST_SHARE, is_validation
from vecjob.errors import ArtifactError, InputError
from vecjob.outputs import MANIFEST, check_output, output_lock, staged_dir
from vecjob.parquet_io import (
    atomic_path,
    collect_scanned,
    discover,
    file_fingerprint,
    fingerprint,
    labels_as_text,
    named,
    new_manifest,
    read_json,
    read_manifest,
    scan_by_id,
    write_json_atomic,
    write_parquet_atomic,
)
from vecjob.vectors import VectorsDir, table_vectors

CLF_KIND = "vecjob.classifier"
WRITING_MARK = ".vecjob-predictions"  # marks a predictions dir vecjob writes, before its first manifest
PRED_KIND = "vecjob.predictions"
WEIGHTS = "classifier.npz"
LABELS = "labels.json"
REPORT, CONFUSION = "report.json", "confusion.png"  # what `eval` writes
REPORT_KIND = "vecjob.report"  # no manifest declares it: a `--report` folder holds no other kind's
CLASSIFIER_FILES = (WEIGHTS, LABELS, MANIFEST)


@dataclass
class Classifier:
    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # [classes, dim]
    intercept: np.ndarray  # [classes]

    @property
    def dim(self) -> int:
        return self.coef.shape[1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if x.shape[1] != self.dim:
            raise ArtifactError(f"vectors have dim {x.shape[1]}, the classifier was trained on dim {self.dim}")
        logits = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        if logits.shape[1] == 1:  # sklearn's binary form: one logit for the second class
            logits = np.hstack([np.zeros_like(logits), logits])
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[self.predict_proba(x).argmax(1)]

    def save(self, folder: Path) -> None:
        with open(folder / WEIGHTS, "wb") as f:
            np.savez(f, mean=self.mean, scale=self.scale, coef=self.coef, intercept=self.intercept)
        write_json_atomic({"classes": self.classes}, folder / LABELS)

    @classmethod
    def load(cls, folder: str | Path) -> tuple["Classifier", dict]:
        folder = storage.snapshot(str(folder), "classifier")
        manifest = read_manifest(folder, CLF_KIND)
        for name in (WEIGHTS, LABELS):
            if not (folder / name).exists():
                raise ArtifactError(f"{folder}: incomplete classifier dir, {name} missing")
        classes = read_json(folder / LABELS).get("classes")
        try:
            with np.load(folder / WEIGHTS) as arrays:
                clf = cls(classes, *(arrays[name] for name in ("mean", "scale", "coef", "intercept")))
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            raise ArtifactError(f"{folder / WEIGHTS}: not a classifier's weights (damaged, or not written by "
                                "vecjob): train the classifier again") from None
        n = len(classes) if isinstance(classes, list) and all(isinstance(c, str) for c in classes) else 0
        rows = 1 if n == 2 else n  # sklearn's binary form: one row of weights
        if (n < 2 or clf.coef.ndim != 2 or len(clf.coef) != rows or clf.intercept.shape != (rows,)
                or clf.mean.shape != (clf.dim,) or clf.scale.shape != (clf.dim,)):
            raise ArtifactError(f"{folder}: labels.json and {WEIGHTS} do not fit together (edited or damaged): "
                                "train the classifier again")
        return clf, manifest


def check_same_model(clf_dir, clf_manifest: dict, vdir: VectorsDir) -> None:
    """A classifier reads only vectors of the model whose vectors it was trained on: another model's
    vectors of the same dim would be classified without a word, and meaninglessly. Classifiers saved
    before the manifest recorded the model are not checked."""
    trained_on, made_by = clf_manifest.get("model_fingerprint"), str(vdir.manifest.get("model_fingerprint", ""))
    if trained_on and made_by != trained_on:
        raise ArtifactError(f"{vdir.location}: these vectors were made by model {made_by[:12]}, the classifier "
                            f"{clf_dir} was trained on vectors of model {str(trained_on)[:12]}; train it on these vectors "
                            "(vecjob sentiment train)")


def hashed_split(report: dict) -> str | None:
    """How an evaluation's test rows were chosen, in words, when no split column chose them."""
    return f"1 in {round(1 / TEST_SHARE)} ids by hash" if report.get("split_by") == "id hash" else None


def labelled_vectors(
    vdir: VectorsDir, labels: list[str] | str, cfg: SentimentConfig, id_col: str, split: str | None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Vectors joined to labels by id (optionally one split); returns x, y and join counts. Without a
    split column, split "test" is a stable TEST_SHARE of the ids by hash and "train" the rest."""
    table = vdir.read_all(["id", "vector"])
    vec_ids = pl.from_arrow(table.select(["id"])).with_row_index("row")
    frame = scan_by_id(labels, id_col, {"label": cfg.label_col}, vec_ids["id"].dtype,
                       optional={"split": cfg.split_col} if split is not None else None)
    use_split = "split" in frame.collect_schema()
    frame = collect_scanned(labels_as_text(frame, labels, cfg.label_col), labels)
    where = named(labels)
    splits_held = []
    if use_split:  # compared as text: a split column of integers or bools was a polars traceback
        frame = frame.with_columns(pl.col("split").cast(pl.String))
        splits_held = frame["split"].drop_nulls().unique().sort().to_list()
        frame = frame.filter(pl.col("split") == split)
    elif split is not None:
        if split not in ("train", "test"):
            raise InputError(f"{where}: no '{cfg.split_col}' column to choose the rows of split '{split}' by")
        test = pl.Series([is_validation(i, TEST_SHARE) for i in frame["id"].to_list()], dtype=pl.Boolean)
        frame = frame.filter(test if split == "test" else ~test)
    frame = frame.drop_nulls("label")
    joined = frame.join(vec_ids, on="id", how="inner")
    counts = {"labelled_rows": frame.height, "joined": joined.height, "labels_without_vector": frame.height - joined.height,
              "split_by": "column" if use_split else "id hash" if split is not None else "none"}
    in_split = f" (split '{split}'{'' if use_split else ', by id hash'})" if split is not None else ""
    if frame.height == 0 and use_split and split not in splits_held:  # "TRAIN", or a column of other values
        held = _first_few(splits_held) or "nulls only"
        raise InputError(f"{where}: no row of split '{split}': column '{cfg.split_col}' holds {held}")
    if frame.height == 0:
        raise InputError(f"{where}: no row has a '{cfg.label_col}' label{in_split}")
    if joined.height == 0:
        raise InputError(f"{where}: no id overlaps the vectors in {vdir.location}{in_split}")
    x = table_vectors(table)[joined["row"].to_numpy()]
    return x, joined["label"].to_numpy().astype(object), counts


def _locations(labels: str | Path | list) -> list:
    """The labels' location(s) as a list (a path, or the list `--labels` gives)."""
    return [labels] if isinstance(labels, (str, Path)) else list(labels)


def train_classifier(vectors_dir, labels, out, cfg: SentimentConfig, id_col: str = "id") -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    out = check_output(out, "--out", [vectors_dir, *_locations(labels)], kind=CLF_KIND)
    t0 = time.perf_counter()
    vdir = VectorsDir.open(vectors_dir)
    x, y, counts = labelled_vectors(vdir, labels, cfg, id_col, split="train")
    classes, per_class = np.unique(y, return_counts=True)
    # A label of one row cannot be cross-validated (a fold would train without it) nor learnt: left out.
    single = classes[per_class < 2]
    if len(single):
        shared = ~np.isin(y, single)
        x, y = x[shared], y[shared]
        classes, per_class = np.unique(y, return_counts=True)
    where = named(labels)
    if len(classes) == 0:
        raise InputError(f"{where}: each of the {len(single)} labelled rows has a label of its own in column "
                         f"'{cfg.label_col}'; a classifier needs labels shared by two or more rows")
    if len(classes) < 2:
        left_out = f"; {len(single)} label(s) of a single row left out" if len(single) else ""
        raise InputError(f"{where}: only one class ({classes[0]!r}) among {len(y)} labelled rows{left_out}; "
                         "need two or more")
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-12] = 1.0
    z = (x - mean) / scale
    folds = max(2, min(3, int(per_class.min())))
    grid = GridSearchCV(LogisticRegression(max_iter=2000, class_weight="balanced"), {"C": [0.01, 0.1, 1.0, 10.0]},
                        cv=StratifiedKFold(folds, shuffle=True, random_state=0), scoring="f1_macro", n_jobs=1)
    best = grid.fit(z, y).best_estimator_
    clf = Classifier([str(c) for c in best.classes_], mean, scale, best.coef_, best.intercept_)
    with output_lock(out), staged_dir(out) as staging:
        clf.save(staging)
        manifest = new_manifest(
            CLF_KIND, vectors_dir=vdir.location,
            model_fingerprint=vdir.manifest.get("model_fingerprint"), labels=[str(p) for p in discover(labels)],
            config=cfg.model_dump(), classes=clf.classes, dim=clf.dim, counts=counts,
            class_counts={str(c): int(n) for c, n in zip(classes, per_class)},
            labels_of_one_row=[str(c) for c in single],
            chosen_C=float(best.C), cv_macro_f1=float(grid.best_score_),
            cv_macro_f1_by_C={str(p["C"]): float(f)
                              for p, f in zip(grid.cv_results_["params"], grid.cv_results_["mean_test_score"])},
            timings={"train_s": time.perf_counter() - t0},
        )
        write_json_atomic(manifest, staging / MANIFEST)
    return manifest


def _first_few(values: list) -> str:
    return ", ".join(map(repr, values[:5])) + (", …" if len(values) > 5 else "")


def evaluate_classifier(clf_dir, vectors_dir, labels, cfg: SentimentConfig, id_col: str = "id",
                        split: str | None = "test", report_dir: str | Path | None = None) -> dict:
    """Scores on the labelled rows of `split`, written as REPORT and CONFUSION into `report_dir`, or,
    without one, beside the classifier (which then must be writable)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    if report_dir is not None:
        if storage.is_uri(str(report_dir)):
            with storage.mirrored(str(report_dir), "--report") as local:
                return evaluate_classifier(clf_dir, vectors_dir, labels, cfg, id_col, split, local)
        # Not into another output's folder: a classifier's own report would be replaced by this one.
        report_dir = check_output(report_dir, "--report", [vectors_dir, clf_dir, *_locations(labels)],
                                  markers=(REPORT,), kind=REPORT_KIND)
        local_clf = storage.snapshot(str(clf_dir), "classifier")
    elif storage.is_uri(str(clf_dir)):  # the report is written beside the classifier: in a store, through its mirror
        read_manifest(str(clf_dir), CLF_KIND)  # not another kind's folder, pulled and leased to be refused
        with storage.mirrored(str(clf_dir), "CLF") as local:
            return evaluate_classifier(local, vectors_dir, labels, cfg, id_col, split, None)
    else:
        local_clf = report_dir = Path(clf_dir)
    clf, clf_manifest = Classifier.load(local_clf)
    vdir = VectorsDir.open(vectors_dir)
    check_same_model(clf_dir, clf_manifest, vdir)
    x, y, counts = labelled_vectors(vdir, labels, cfg, id_col, split=split)
    if not np.isin(y, clf.classes).any():  # another labels file or column than the classifier's: nothing to score
        rows = f"{len(y)} labelled rows{f' of split {split!r}' if split else ''}"
        raise InputError(f"{named(labels)}: none of the {rows} holds a class the classifier knows "
                         f"({_first_few(clf.classes)}; here: {_first_few(np.unique(y).tolist())})")
    pred = clf.predict(x)
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=clf.classes, zero_division=0)
    # A class neither labelled nor predicted in these rows (a rare class the split lacks) has no F1:
    # counted as 0 it pulled a perfect score on the others down by its share, as sklearn does given labels.
    scored = np.isin(np.asarray(clf.classes), np.union1d(y, pred))
    report = {
        "split": split, "n": len(y), **counts,
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f[scored].mean()),
        "per_class": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
                      for i, c in enumerate(clf.classes)},
        "labels": clf.classes,
        "confusion": confusion_matrix(y, pred, labels=clf.classes).tolist(),
        # Rows whose label the classifier was never trained on: wrong in accuracy, absent from the
        # per-class scores and the confusion matrix, which cover its classes only.
        "unseen_labels": {str(c): int(n) for c, n in zip(*np.unique(y[~np.isin(y, clf.classes)], return_counts=True))},
    }
    write_json_atomic(report, report_dir / REPORT)
    plot_confusion(report, report_dir / CONFUSION)
    return report


def predict_collection(clf_dir, vectors_dir, out) -> dict:
    """One prediction shard per vector shard, named after the vector shard (whose name keys its
    content), which of its rows are live, and the classifier: a nightly rerun predicts only the shards
    that are new or changed and keeps the rest. Like the vectors dir, the manifest is written last
    and lists the generation; prediction shards of other generations are removed after it."""
    out = check_output(out, "--out", [vectors_dir, clf_dir], markers=(MANIFEST, WRITING_MARK), kind=PRED_KIND)
    local_clf = storage.snapshot(str(clf_dir), "classifier")
    clf, clf_manifest = Classifier.load(local_clf)
    clf_key = fingerprint(*(file_fingerprint(local_clf / name) for name in (WEIGHTS, LABELS)))
    vdir = VectorsDir.open(vectors_dir)
    check_same_model(clf_dir, clf_manifest, vdir)
    shards, predicted = [], 0
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        (out / WRITING_MARK).touch()
        for i, (path, live) in enumerate(zip(vdir.shard_paths, vdir.live_masks)):
            name = f"{path.stem}-{fingerprint(clf_key, np.packbits(live).tobytes().hex())[:8]}.parquet"
            if not (out / name).exists():
                table = vdir.read_shard(i, ["id", "vector"])
                proba = clf.predict_proba(table_vectors(table))
                labels = np.asarray(clf.classes, dtype=object)[proba.argmax(1)]
                cols = {"id": table.column("id"), "label": pa.array(labels.tolist(), pa.string())}
                cols.update({f"prob_{c}": pa.array(proba[:, j].astype(np.float32)) for j, c in enumerate(clf.classes)})
                write_parquet_atomic(pa.table(cols), out / name)
                predicted += 1
            shards.append({"output": name, "rows": int(live.sum())})
        manifest = new_manifest(PRED_KIND, classifier=storage.lasting(clf_dir), classifier_fingerprint=clf_key,
                                vectors_dir=vdir.location, classes=clf.classes,
                                rows=sum(s["rows"] for s in shards), shards=shards,
                                counts={"shards_predicted": predicted, "shards_kept": len(shards) - predicted})
        write_json_atomic(manifest, out / MANIFEST)
        listed = {s["output"] for s in shards}
        for stale in out.glob("*.parquet"):
            if stale.name not in listed:
                stale.unlink()
    return manifest


def plot_confusion(report: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.array(report["confusion"])
    fig, ax = plt.subplots(figsize=(1.2 * len(m) + 2.5, 1.2 * len(m) + 2))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(m)), report["labels"], rotation=45, ha="right")
    ax.set_yticks(range(len(m)), report["labels"])
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="black" if m[i, j] < m.max() / 2 else "white")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {report['accuracy']:.3f}, macro-F1 {report['macro_f1']:.3f}")
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
