import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import blobs, make_vectors_dir
from vecjob.cli import app
from vecjob.config import SentimentConfig
from vecjob.dataset import TEST_SHARE, is_validation
from vecjob.errors import ArtifactError, InputError
from vecjob.parquet_io import labels_as_text
from vecjob.sentiment import Classifier, evaluate_classifier, predict_collection, train_classifier

runner = CliRunner()
CLASSES = ["negative", "neutral", "positive"]


def _data(tmp_path, n=600, dim=12, spread=0.8):
    vecs, which = blobs(n, dim, 3, seed=7, spread=spread)
    ids = list(range(n))
    make_vectors_dir(tmp_path / "v", vecs, ids)
    labels = tmp_path / "labels.parquet"
    split = ["test" if i % 5 == 0 else "train" for i in ids]
    pq.write_table(pa.table({"id": ids, "label": [CLASSES[w] for w in which], "split": split}), labels)
    return tmp_path / "v", labels


def test_train_eval_predict(tmp_path):
    vdir, labels = _data(tmp_path)
    manifest = train_classifier(vdir, str(labels), tmp_path / "clf", SentimentConfig())
    assert manifest["classes"] == CLASSES and manifest["counts"]["joined"] == 480
    report = evaluate_classifier(tmp_path / "clf", vdir, str(labels), SentimentConfig())
    assert report["n"] == 120 and report["accuracy"] > 0.9 and report["macro_f1"] > 0.9
    assert np.array(report["confusion"]).sum() == 120
    assert (tmp_path / "clf" / "confusion.png").exists() and (tmp_path / "clf" / "report.json").exists()
    pred = predict_collection(tmp_path / "clf", vdir, tmp_path / "pred")
    assert pred["rows"] == 600 and len(pred["shards"]) == 3
    table = pq.read_table(next((tmp_path / "pred").glob("s0-*.parquet")))
    probs = np.stack([table.column(f"prob_{c}").to_numpy() for c in CLASSES], axis=1)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert set(table.column("label").to_pylist()) <= set(CLASSES)


def test_labels_kept_in_the_vector_shards_are_read_there(tmp_path):
    # README: `encode --keep label` copies the labels into the vector shards, for `--labels VECTORS`.
    vecs, which = blobs(600, 12, 3, seed=7, spread=0.8)
    vdir = make_vectors_dir(tmp_path / "v", vecs, list(range(600)), extra={"label": [CLASSES[w] for w in which]})
    manifest = train_classifier(vdir, str(vdir), tmp_path / "clf", SentimentConfig())
    report = evaluate_classifier(tmp_path / "clf", vdir, str(vdir), SentimentConfig())
    assert manifest["classes"] == CLASSES and manifest["counts"]["joined"] + report["n"] == 600  # a fifth held out
    assert abs(report["n"] - 600 * TEST_SHARE) < 40 and report["accuracy"] > 0.9


def test_macro_f1_leaves_out_a_class_the_evaluated_rows_neither_hold_nor_are_predicted_as(tmp_path):
    # A test split without a rare class scored every prediction right at accuracy 1.0 and macro-F1 0.33:
    # the two absent classes counted as F1 0.
    vdir, labels = _data(tmp_path)
    train_classifier(vdir, str(labels), tmp_path / "clf", SentimentConfig())
    table = pq.read_table(labels)
    only_negative = [s if c == "negative" else "train" for s, c in zip(table["split"].to_pylist(),
                                                                      table["label"].to_pylist())]
    pq.write_table(table.set_column(2, "split", pa.array(only_negative)), tmp_path / "one.parquet")
    report = evaluate_classifier(tmp_path / "clf", vdir, str(tmp_path / "one.parquet"), SentimentConfig())
    assert report["per_class"]["positive"]["support"] == report["per_class"]["neutral"]["support"] == 0
    predicted_as = np.array(report["confusion"]).sum(axis=0)  # columns: predictions per class
    scored = [c for i, c in enumerate(CLASSES) if report["per_class"][c]["support"] or predicted_as[i]]
    assert "negative" in scored and report["accuracy"] > 0.9
    assert report["macro_f1"] == pytest.approx(np.mean([report["per_class"][c]["f1"] for c in scored]))
    assert report["macro_f1"] > 0.9


def test_cli_eval_json(tmp_path):
    vdir, labels = _data(tmp_path)
    assert runner.invoke(app, ["sentiment", "train", str(vdir), "--labels", str(labels), "--out", str(tmp_path / "c")]).exit_code == 0
    r = runner.invoke(app, ["sentiment", "eval", str(tmp_path / "c"), str(vdir), "--labels", str(labels), "--json"])
    assert r.exit_code == 0 and '"macro_f1"' in r.stdout


def test_eval_writes_its_report_into_another_folder_leaving_the_classifier_untouched(tmp_path):
    # A classifier in a shared, read-only place (a registry, a bucket of someone else's) could not be
    # evaluated: eval wrote its report beside it.
    vdir, labels = _data(tmp_path)
    train_classifier(vdir, str(labels), tmp_path / "clf", SentimentConfig())
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "clf").iterdir()}
    eval_into = ["sentiment", "eval", str(tmp_path / "clf"), str(vdir), "--labels", str(labels), "--report"]
    for _ in range(2):  # again into its own report folder
        r = runner.invoke(app, [*eval_into, str(tmp_path / "report")])
        assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["confusion.png", "report.json"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "clf").iterdir()} == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    for where, why in ((vdir / "report", f"overlaps the input {vdir}"),
                       (tmp_path / "notes", "is a folder vecjob did not write (no report.json)"),
                       (tmp_path / "clf", "overlaps the input"),
                       (labels, "exists and is not a directory")):
        r = runner.invoke(app, [*eval_into, str(where)])
        assert r.exit_code == 2 and f"error: --report {where}: {why}" in r.output, r.output
    assert not (vdir / "report").exists() and [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]
    train_classifier(vdir, str(labels), tmp_path / "clf2", SentimentConfig())  # another output's folder
    r = runner.invoke(app, [*eval_into, str(tmp_path / "clf2")])
    assert r.exit_code == 2 and "holds a 'vecjob.classifier' output" in r.output
    assert not (tmp_path / "clf2" / "report.json").exists()


def test_a_label_column_that_is_the_split_column_is_refused_in_one_line(tmp_path):
    # It was a KeyError traceback: both columns were read under one name.
    vdir, labels = _data(tmp_path)
    for command in (["train", str(vdir), "--labels", str(labels), "--out", str(tmp_path / "c")],
                    ["eval", str(tmp_path / "c"), str(vdir), "--labels", str(labels)]):
        r = runner.invoke(app, ["sentiment", *command, "--label-col", "split"])
        assert r.exit_code == 2 and "--label-col: 'split' is the split column too" in r.output, r.output
    spec = tmp_path / "job.toml"
    spec.write_text(f'stages = ["sentiment"]\n[data]\npaths = ["{labels}"]\n[sentiment]\nlabel_col = "split"\n')
    r = runner.invoke(app, ["run", str(spec)])
    assert r.exit_code == 2 and f"{spec}: sentiment.label_col: 'split' is the split column too" in r.output
    assert not (tmp_path / "c").exists()


def test_missing_label_column(tmp_path):
    vdir, _ = _data(tmp_path)
    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "nolabel.parquet")
    with pytest.raises(InputError, match="nolabel.parquet: missing column 'label'"):
        train_classifier(vdir, str(tmp_path / "nolabel.parquet"), tmp_path / "c", SentimentConfig())


def test_labels_of_a_collection_whose_newest_shard_has_no_label_column_are_read(tmp_path):
    # A night's shard of new, unlabelled documents without the column refused the whole collection's
    # labels ("missing column 'label'"); its rows are unlabelled now, as null labels are.
    vdir, labels = _data(tmp_path)
    (tmp_path / "night").mkdir()
    pq.write_table(pq.read_table(labels), tmp_path / "night" / "part-0.parquet")
    pq.write_table(pa.table({"id": [600, 601], "split": ["train", "train"]}), tmp_path / "night" / "part-1.parquet")
    whole = train_classifier(vdir, str(labels), tmp_path / "c1", SentimentConfig())
    grown = train_classifier(vdir, str(tmp_path / "night"), tmp_path / "c2", SentimentConfig())
    assert grown["counts"] == whole["counts"] and grown["counts"]["labelled_rows"] > 0


def test_no_id_overlap(tmp_path):
    vdir, _ = _data(tmp_path)
    pq.write_table(pa.table({"id": [10_000, 10_001], "label": ["a", "b"]}), tmp_path / "other.parquet")
    with pytest.raises(InputError, match="no id overlaps the vectors"):
        train_classifier(vdir, str(tmp_path / "other.parquet"), tmp_path / "c", SentimentConfig())


def test_labels_that_are_all_null_are_named_as_such_not_as_ids_that_miss(tmp_path):
    vdir, _ = _data(tmp_path)
    pq.write_table(pa.table({"id": [1, 2], "label": pa.array([None, None], pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(InputError, match=r"empty.parquet: no row has a 'label' label \(split 'train', by id hash\)$"):
        train_classifier(vdir, str(tmp_path / "empty.parquet"), tmp_path / "c", SentimentConfig())


def test_a_missing_number_or_blank_label_is_no_label_and_whole_numbers_stay_integers(tmp_path):
    # pandas writes a float column's missing values as NaN, which a cast to text made the class "NaN";
    # and integer labels read as floats beside such a shard became "1.0": the night a shard with a
    # missing label arrived, every row held a class the classifier trained on integers never saw.
    vdir, _ = _data(tmp_path)
    rng = np.random.default_rng(0)
    stars = rng.integers(1, 4, 400)
    (tmp_path / "stars").mkdir()
    pq.write_table(pa.table({"id": list(range(200)), "label": stars[:200]}), tmp_path / "stars" / "a.parquet")
    train_classifier(vdir, str(tmp_path / "stars"), tmp_path / "ints", SentimentConfig())
    later = stars[200:].astype(float)
    later[::4] = np.nan
    later = pa.array(later.tolist()[:-1] + [None])
    pq.write_table(pa.table({"id": list(range(200, 400)), "label": later}), tmp_path / "stars" / "b.parquet")
    report = evaluate_classifier(tmp_path / "ints", vdir, str(tmp_path / "stars"), SentimentConfig())
    assert report["unseen_labels"] == {} and report["n"] == sum(
        1 for i in range(399) if is_validation(i, TEST_SHARE) and not (i >= 200 and i % 4 == 0))
    manifest = train_classifier(vdir, str(tmp_path / "stars" / "b.parquet"), tmp_path / "c", SentimentConfig())
    trained = [i for i in range(200, 399) if i % 4 and not is_validation(i, TEST_SHARE)]  # no split column: by id hash
    assert manifest["classes"] == ["1", "2", "3"] and manifest["counts"]["labelled_rows"] == len(trained)
    pq.write_table(pa.table({"id": [0, 1, 2], "label": [0.5, 2.0, 1e20]}), tmp_path / "halves.parquet")
    frame = labels_as_text(pl.read_parquet(tmp_path / "halves.parquet").lazy(), "halves.parquet", "label")
    assert frame.collect()["label"].to_list() == ["0.5", "2", "1e+20"]
    # An empty or blank string label is no label either (it was the class "", and predictions a `prob_` column).
    pq.write_table(pa.table({"id": [0, 1, 2, 3], "label": ["pos", "", " \t", None]}), tmp_path / "blank.parquet")
    frame = labels_as_text(pl.read_parquet(tmp_path / "blank.parquet").lazy(), "blank.parquet", "label")
    assert frame.collect()["label"].to_list() == ["pos", None, None, None]


def test_labels_without_a_split_column_are_evaluated_on_ids_the_classifier_never_fitted(tmp_path):
    # Train took every labelled row and eval scored the same rows: an in-sample accuracy reported as
    # the test split's.
    vdir, labels = _data(tmp_path)
    pq.write_table(pq.read_table(labels).drop_columns(["split"]), tmp_path / "nosplit.parquet")
    nosplit = str(tmp_path / "nosplit.parquet")
    test_ids = [i for i in range(600) if is_validation(i, TEST_SHARE)]
    manifest = train_classifier(vdir, nosplit, tmp_path / "clf", SentimentConfig())
    report = evaluate_classifier(tmp_path / "clf", vdir, nosplit, SentimentConfig())
    assert 80 < len(test_ids) < 160 and report["n"] == len(test_ids) and report["split_by"] == "id hash"
    assert manifest["counts"]["joined"] == 600 - len(test_ids) and report["accuracy"] > 0.9
    r = runner.invoke(app, ["sentiment", "eval", str(tmp_path / "clf"), str(vdir), "--labels", nosplit])
    assert r.exit_code == 0 and f"evaluation ({len(test_ids)} rows, split test, 1 in 5 ids by hash)" in r.output
    r = runner.invoke(app, ["sentiment", "eval", str(tmp_path / "clf"), str(vdir), "--labels", nosplit, "--split", "val"])
    assert r.exit_code == 2 and "nosplit.parquet: no 'split' column to choose the rows of split 'val' by" in r.output


def test_evaluation_names_labels_the_classifier_never_saw(tmp_path):
    # They count as wrong in accuracy, but the per-class scores and the confusion matrix cover the
    # classifier's classes only: without a word, those rows vanished from both.
    vdir, labels = _data(tmp_path)
    train_classifier(vdir, str(labels), tmp_path / "clf", SentimentConfig())
    table = pq.read_table(labels)
    relabelled = [("sarcastic" if i % 10 == 0 else lab) for i, lab in enumerate(table.column("label").to_pylist())]
    pq.write_table(table.set_column(1, "label", pa.array(relabelled)), tmp_path / "more.parquet")
    report = evaluate_classifier(tmp_path / "clf", vdir, str(tmp_path / "more.parquet"), SentimentConfig())
    assert report["unseen_labels"] == {"sarcastic": 60} and report["n"] == 120
    assert sum(map(sum, report["confusion"])) == 60
    # Labels of which none is the classifier's (another file, another column) were a scikit-learn
    # traceback; so are split values other than "train"/"test" one line naming what the column holds.
    pq.write_table(table.set_column(1, "label", pa.array(["a", "b"] * 300)), tmp_path / "other.parquet")
    with pytest.raises(InputError, match=r"other.parquet: none of the 120 labelled rows of split 'test' holds a class "
                                         r"the classifier knows \('negative', 'neutral', 'positive'; here: 'a', 'b'\)"):
        evaluate_classifier(tmp_path / "clf", vdir, str(tmp_path / "other.parquet"), SentimentConfig())
    pq.write_table(table.set_column(2, "split", pa.array(["Train", "Test"] * 300)), tmp_path / "cased.parquet")
    with pytest.raises(InputError, match="cased.parquet: no row of split 'test': column 'split' holds 'Test', 'Train'"):
        evaluate_classifier(tmp_path / "clf", vdir, str(tmp_path / "cased.parquet"), SentimentConfig())
    pq.write_table(table.set_column(2, "split", pa.array([0, 1] * 300)), tmp_path / "numbered.parquet")
    with pytest.raises(InputError, match="numbered.parquet: no row of split 'test': column 'split' holds '0', '1'"):
        evaluate_classifier(tmp_path / "clf", vdir, str(tmp_path / "numbered.parquet"), SentimentConfig())


def test_single_class(tmp_path):
    vdir, _ = _data(tmp_path)
    pq.write_table(pa.table({"id": list(range(50)), "label": ["pos"] * 50}), tmp_path / "one.parquet")
    with pytest.raises(InputError, match="only one class"):
        train_classifier(vdir, str(tmp_path / "one.parquet"), tmp_path / "c", SentimentConfig())


def test_a_label_of_one_row_is_left_out_and_labels_all_different_are_one_line(tmp_path):
    # One row of its own label made every cross-validation fit fail (a fold trained without it):
    # C was chosen among NaN scores; a label per row (the id column named as labels) was a traceback.
    vdir, labels = _data(tmp_path)
    table = pq.read_table(labels)
    names = table.column("label").to_pylist()
    names[3] = "typo"
    pq.write_table(table.set_column(1, "label", pa.array(names)), tmp_path / "one.parquet")
    manifest = train_classifier(vdir, str(tmp_path / "one.parquet"), tmp_path / "c", SentimentConfig())
    assert manifest["classes"] == CLASSES and manifest["labels_of_one_row"] == ["typo"]
    assert all(np.isfinite(list(manifest["cv_macro_f1_by_C"].values()))) and manifest["cv_macro_f1"] > 0.9
    r = runner.invoke(app, ["sentiment", "train", str(vdir), "--labels", str(labels), "--label-col", "id",
                            "--out", str(tmp_path / "ids")])
    assert r.exit_code == 2 and "each of the 480 labelled rows has a label of its own in column 'id'" in r.output
    assert not (tmp_path / "ids").exists()


def test_vectors_of_another_dim_are_refused(tmp_path):
    vdir, labels = _data(tmp_path)
    train_classifier(vdir, str(labels), tmp_path / "clf", SentimentConfig())
    make_vectors_dir(tmp_path / "v8", blobs(30, 8, 2)[0], list(range(30)))
    with pytest.raises(ArtifactError, match="dim 8, the classifier was trained on dim 12"):
        predict_collection(tmp_path / "clf", tmp_path / "v8", tmp_path / "p")


def test_vectors_another_model_made_are_refused_by_eval_and_predict(tmp_path):
    # Same dim, same ids: only the model fingerprint says they are not the vectors it was trained on.
    vdir, labels = _data(tmp_path)
    manifest = train_classifier(vdir, str(labels), tmp_path / "clf", SentimentConfig())
    assert manifest["model_fingerprint"] == "m"
    vecs, _ = blobs(600, 12, 3, seed=8)
    other = make_vectors_dir(tmp_path / "retrained", vecs, list(range(600)), model="retrained-model")
    with pytest.raises(ArtifactError, match="retrained: these vectors were made by model retrained-mo, the classifier .*sentiment train"):
        evaluate_classifier(tmp_path / "clf", other, str(labels), SentimentConfig())
    r = runner.invoke(app, ["sentiment", "predict", str(tmp_path / "clf"), str(other), "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "these vectors were made by model retrained-mo" in r.output and not (tmp_path / "p").exists()
    assert evaluate_classifier(tmp_path / "clf", vdir, str(labels), SentimentConfig())["accuracy"] > 0.9


def test_binary_classifier_probabilities():
    clf = Classifier(["a", "b"], np.zeros(2), np.ones(2), np.array([[1.0, 0.0]]), np.array([0.0]))
    p = clf.predict_proba(np.array([[5.0, 0.0], [-5.0, 0.0]]))
    assert p.shape == (2, 2) and p[0, 1] > 0.99 and p[1, 0] > 0.99


def test_predictions_follow_the_collection_shard_by_shard(tmp_path):
    import json

    from vecjob.vectors import vectors_table, with_model_fingerprint

    vdir, labels = _data(tmp_path)
    train_classifier(vdir, str(labels), tmp_path / "clf", SentimentConfig())
    first = predict_collection(tmp_path / "clf", vdir, tmp_path / "pred")
    assert first["counts"] == {"shards_predicted": 3, "shards_kept": 0}
    assert predict_collection(tmp_path / "clf", vdir, tmp_path / "pred")["counts"]["shards_predicted"] == 0

    # The next night: shard s2 leaves; a new shard brings 50 new documents and id 0 again (it replaces
    # the older row in s0, so s0's live rows change and its predictions are made again).
    manifest = json.loads((vdir / "manifest.json").read_text())
    vecs = blobs(51, 12, 3, seed=8)[0]
    table = with_model_fingerprint(vectors_table(pa.array([0] + list(range(1000, 1050))), vecs), "m")
    pq.write_table(table, vdir / "s3.parquet")
    manifest["shards"] = manifest["shards"][:2] + [{"output": "s3.parquet", "rows_out": 51}]
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    second = predict_collection(tmp_path / "clf", vdir, tmp_path / "pred")
    assert second["counts"] == {"shards_predicted": 2, "shards_kept": 1} and second["rows"] == 199 + 200 + 51
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "pred").glob("*.parquet"))
    assert names == ["s0", "s1", "s3"]
    s0 = pq.read_table(next((tmp_path / "pred").glob("s0-*.parquet")))
    assert 0 not in s0.column("id").to_pylist() and s0.num_rows == 199


def test_c_is_the_best_of_the_cross_validated_choices_and_the_manifest_shows_them_all(tmp_path):
    vdir, labels = _data(tmp_path, spread=1.2)  # overlapping: C = 0.1 scores best, 0.01 within a standard error
    manifest = train_classifier(vdir, str(labels), tmp_path / "clf", SentimentConfig())
    by_c = manifest["cv_macro_f1_by_C"]
    assert set(by_c) == {"0.01", "0.1", "1.0", "10.0"}
    assert by_c[str(manifest["chosen_C"])] == max(by_c.values()) == manifest["cv_macro_f1"]
