"""`vecjob sentiment train | eval | predict`: a classifier (e.g. sentiment) on document vectors."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vecjob.cli import (
    ClassifierArg,
    IdColOpt,
    JsonOpt,
    LabelColOpt,
    OutOpt,
    VectorsArg,
    app,
    friendly_errors,
    writable,
)
from vecjob.config import SentimentConfig, override
from vecjob.parquet_io import plain_json

sentiment_app = typer.Typer(help="Train, evaluate and apply a classifier (e.g. sentiment) on document vectors.",
                            no_args_is_help=True)
app.add_typer(sentiment_app, name="sentiment")
LabelsOpt = Annotated[list[str], typer.Option("--labels", help="Parquet with id and label columns (and split).")]


@sentiment_app.command("train")
@friendly_errors
def sentiment_train(
    vectors: VectorsArg,
    labels: LabelsOpt,
    out: OutOpt,
    label_col: LabelColOpt = "label",
    id_col: IdColOpt = None,
) -> None:
    """Fit logistic regression on labelled vectors: rows with split == 'train' (without a split column,
    all but the fifth of the ids that eval tests on)."""
    from vecjob import reporting
    from vecjob.sentiment import train_classifier

    with writable(out) as target:
        m = train_classifier(vectors, labels, target, override(SentimentConfig(), label_col=label_col),
                             id_col=id_col or "id")
    reporting.summary(f"classifier → {out}", {
        "classes": ", ".join(m["classes"]), "training rows": m["counts"]["joined"],
        "labels without a vector": m["counts"]["labels_without_vector"], "C (by CV)": m["chosen_C"],
        "CV macro-F1": m["cv_macro_f1"],
        **({"labels of one row (left out)": len(m["labels_of_one_row"])} if m["labels_of_one_row"] else {}),
    })


@sentiment_app.command("eval")
@friendly_errors
def sentiment_eval(
    clf: ClassifierArg,
    vectors: VectorsArg,
    labels: LabelsOpt,
    label_col: LabelColOpt = "label",
    split: Annotated[str, typer.Option(help="Rows of this split ('all' = every labelled row). Without a split "
                                            "column, 'test' is a fifth of the ids, by hash, that train left out.")] = "test",
    id_col: IdColOpt = None,
    as_json: JsonOpt = False,
    report_dir: Annotated[Optional[str], typer.Option(
        "--report", help="Folder for report.json and confusion.png (default: the classifier dir, left "
                         "untouched when this is given).")] = None,
) -> None:
    """Accuracy, macro-F1, per-class scores and confusion matrix on labelled vectors."""
    from vecjob import reporting
    from vecjob.sentiment import evaluate_classifier, hashed_split

    report = evaluate_classifier(clf, vectors, labels, override(SentimentConfig(), label_col=label_col),
                                 id_col=id_col or "id", split=None if split == "all" else split,
                                 report_dir=report_dir)
    if as_json:
        typer.echo(plain_json(report))
        return
    chosen = f", {by_hash}" if (by_hash := hashed_split(report)) else ""
    reporting.summary(f"evaluation ({report['n']:,} rows, split {split}{chosen})", {
        "accuracy": report["accuracy"], "macro-F1": report["macro_f1"],
        **{f"F1 {c}": v["f1"] for c, v in report["per_class"].items()},
        **{f"rows of unseen label {c}": n for c, n in report["unseen_labels"].items()},
    })


@sentiment_app.command("predict")
@friendly_errors
def sentiment_predict(
    clf: ClassifierArg,
    vectors: VectorsArg,
    out: OutOpt,
) -> None:
    """Write one prediction shard (id, label, prob_<class>) per vector shard."""
    from vecjob import reporting
    from vecjob.sentiment import predict_collection

    with writable(out) as target:
        m = predict_collection(clf, vectors, target)
    reporting.summary(f"predictions → {out}", {"rows": m["rows"], "shards": len(m["shards"])})
