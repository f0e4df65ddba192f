import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import blobs, make_vectors_dir
from vecjob.cluster import cluster_collection, label_metrics, top_terms
from vecjob.config import ClusterConfig, DataConfig, EncodeConfig
from vecjob.errors import InputError
from vecjob.encode_shards import encode_collection


def _labelled(tmp_path, n=300, centers=3):
    vecs, which = blobs(n, 16, centers, seed=2)
    ids = [f"d{i}" for i in range(n)]
    make_vectors_dir(tmp_path / "v", vecs, ids)
    data = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": ids, "text": ["x"] * n, "label": [f"c{w}" for w in which]}), data)
    return tmp_path / "v", data


def test_clusters_recover_separated_groups(tmp_path):
    vdir, data = _labelled(tmp_path)
    summary = cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), data=[str(data)])
    assert summary["metrics"]["nmi"] > 0.95 and summary["metrics"]["purity"] > 0.95
    assignments = pq.read_table(tmp_path / "c" / "assignments.parquet")
    assert assignments.num_rows == 300 and assignments.column_names == ["id", "cluster", "distance", "shard"]
    assert sorted(c["size"] for c in summary["clusters"]) == sorted(np.bincount(assignments.column("cluster").to_numpy()))
    assert np.load(tmp_path / "c" / "centroids.npy").shape == (3, 16)
    assert {p.name for p in (tmp_path / "c").iterdir()} >= {"summary.json", "manifest.json", "clusters.png"}
    assert all(len(c["example_ids"]) == 5 for c in summary["clusters"])


def test_label_metrics_count_the_labelled_documents_only(tmp_path):
    # A null label was a traceback (sklearn cannot order None among strings); a float column's NaN
    # was the class "NaN". Both are documents without a label.
    vdir, _ = _labelled(tmp_path)
    vecs, which = blobs(300, 16, 3, seed=2)
    labels = [float(w) for w in which]
    labels[::3] = [float("nan")] * len(labels[::3])
    labels[1::3] = [None] * len(labels[1::3])
    data = tmp_path / "some-labelled.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(300)], "text": ["x"] * 300,
                             "label": pa.array(labels, pa.float64())}), data)
    summary = cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), data=[str(data)])
    assert summary["metrics"]["labelled"] == 100 and summary["metrics"]["nmi"] > 0.95


def test_one_column_can_be_both_the_texts_and_the_labels(tmp_path):
    # A collection whose short texts are their labels: both were read under one name, and the second
    # role's column was not found (a polars traceback).
    vdir, data = _labelled(tmp_path)
    table = pq.read_table(data)
    words = {"c0": "alpha", "c1": "beta", "c2": "gamma"}
    pq.write_table(pa.table({"id": table.column("id"), "topic": [words[c] for c in table.column("label").to_pylist()]}),
                   data)
    summary = cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), data=[str(data)], text_col="topic",
                                 label_col="topic")
    assert summary["metrics"]["labelled"] == 300 and summary["metrics"]["nmi"] > 0.95
    assert sorted(term for c in summary["clusters"] for term in c["top_terms"]) == ["alpha", "beta", "gamma"]


def test_a_label_column_named_must_be_there(tmp_path):
    # A mistyped --label-col was passed over: the clustering was scored by its silhouette alone, and
    # nothing said that the labels were never read.
    vdir, data = _labelled(tmp_path)
    with pytest.raises(InputError, match=r"missing column 'topic' \(columns: id, text, label\)"):
        cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), data=[str(data)], label_col="topic")
    unnamed = cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), data=[str(data)])
    assert unnamed["metrics"]["labelled"] == 300  # none named: the column "label", where the data has one
    from typer.testing import CliRunner

    from vecjob.cli import app

    r = CliRunner().invoke(app, ["cluster", str(vdir), "--k", "3", "--out", str(tmp_path / "c2"), "--label-col", "label"])
    assert r.exit_code == 2 and "--label-col label: the vectors keep no such column" in r.output, r.output
    assert not (tmp_path / "c2").exists()


def test_labels_the_vector_shards_keep_score_the_clustering_without_the_collection(tmp_path):
    # `encode --keep label` copies the labels into the vector shards, and the sentiment stage reads them
    # there; cluster scored such vectors by silhouette alone and refused --label-col without --data.
    from typer.testing import CliRunner

    from vecjob.cli import app

    vecs, which = blobs(300, 16, 3, seed=2)
    labels = [None if i % 10 == 0 else int(w) for i, w in enumerate(which)]  # integers, some documents unlabelled
    vdir = make_vectors_dir(tmp_path / "v", vecs, [f"d{i}" for i in range(300)], extra={"topic": labels})
    named = cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), label_col="topic")
    assert named["metrics"]["labelled"] == 270 and named["metrics"]["nmi"] > 0.95, named["metrics"]
    r = CliRunner().invoke(app, ["cluster", str(vdir), "--k", "3", "--out", str(tmp_path / "c2"),
                                 "--label-col", "topic"])
    assert r.exit_code == 0 and "labelled" in r.output, r.output
    r = CliRunner().invoke(app, ["cluster", str(vdir), "--k", "3", "--out", str(tmp_path / "c3"),
                                 "--label-col", "label"])
    assert r.exit_code == 2 and "--label-col label: the vectors keep no such column" in r.output, r.output
    assert not (tmp_path / "c3").exists()
    kept_as_label = make_vectors_dir(tmp_path / "v2", vecs, [f"d{i}" for i in range(300)], extra={"label": labels})
    unnamed = cluster_collection(kept_as_label, tmp_path / "c4", 3, ClusterConfig())
    assert unnamed["metrics"]["labelled"] == 270  # none named: a kept column "label", as a collection's
    manifest = json.loads((kept_as_label / "manifest.json").read_text())
    (kept_as_label / "manifest.json").write_text(json.dumps({**manifest, "columns": ["label"]}))  # edited by hand
    edited = cluster_collection(kept_as_label, tmp_path / "c5", 3, ClusterConfig())  # was an AttributeError
    assert "silhouette" in edited["metrics"] and "labelled" not in edited["metrics"]


def test_texts_polars_cannot_scan_or_read_as_one_table_are_one_line_naming_them(tmp_path):
    # A file with two columns of one name, and files whose labels differ in type, were polars
    # tracebacks (DuplicateError, SchemaError) in cluster --data, sentiment --labels and search --data.
    vdir, data = _labelled(tmp_path)
    table = pq.read_table(data)
    (tmp_path / "twice").mkdir()
    pq.write_table(pa.Table.from_arrays([*table.columns, table.column("label")], [*table.column_names, "label"]),
                   tmp_path / "twice" / "a.parquet")
    with pytest.raises(InputError, match=r"a.parquet: 2 columns are named 'label' \(columns: id, text, label, label\)"):
        cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), data=[str(tmp_path / "twice")])
    (tmp_path / "mixed").mkdir()
    pq.write_table(table.slice(0, 150), tmp_path / "mixed" / "a.parquet")
    numbers = pa.array([int(v[1:]) for v in table.column("label").to_pylist()[150:]])
    pq.write_table(table.slice(150).set_column(2, "label", numbers), tmp_path / "mixed" / "b.parquet")
    with pytest.raises(InputError, match="mixed/b.parquet: column 'label' holds int, in .*mixed/a.parquet it holds string"):
        cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), data=[str(tmp_path / "mixed")])
    assert not (tmp_path / "c").exists()


def test_vectors_of_one_dimension_cluster_and_are_drawn_on_a_line(tmp_path):
    # `--dim 1` is a valid model: its clusters' picture needed a second principal axis (an IndexError).
    x = np.concatenate([np.full((50, 1), -1.0), np.full((50, 1), 1.0)]).astype(np.float32)
    x += np.random.default_rng(0).normal(0, 0.01, x.shape).astype(np.float32)
    make_vectors_dir(tmp_path / "v", x, list(range(100)))
    summary = cluster_collection(tmp_path / "v", tmp_path / "c", 2, ClusterConfig())
    assert sorted(c["size"] for c in summary["clusters"]) == [50, 50] and (tmp_path / "c" / "clusters.png").exists()


def test_without_labels_reports_silhouette(tmp_path):
    vecs, _ = blobs(200, 8, 4, seed=3)
    make_vectors_dir(tmp_path / "v", vecs, list(range(200)))
    summary = cluster_collection(tmp_path / "v", tmp_path / "c", 4, ClusterConfig())
    assert set(summary["metrics"]) == {"silhouette"} and summary["metrics"]["silhouette"] > 0.3


def test_an_undefined_silhouette_is_null_in_strict_json_files_and_output(tmp_path):
    """Identical vectors make one cluster, whose silhouette is undefined: Python wrote it as a bare
    NaN, which JavaScript, jq and strict parsers refuse."""
    from typer.testing import CliRunner

    from vecjob.cli import app

    make_vectors_dir(tmp_path / "v", np.ones((50, 8), np.float32), list(range(50)))

    def strict(text: str):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))

    result = CliRunner().invoke(app, ["cluster", str(tmp_path / "v"), "-k", "auto", "--out", str(tmp_path / "c"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert strict(result.output)["metrics"] == {"silhouette": None}
    assert strict((tmp_path / "c" / "summary.json").read_text())["metrics"] == {"silhouette": None}
    assert strict((tmp_path / "c" / "manifest.json").read_text())["metrics"] == {"silhouette": None}


def test_k_auto_picks_by_silhouette_and_reports_the_curve(tmp_path, capfd):
    vecs, _ = blobs(400, 8, 4, seed=4, spread=0.1, orthogonal=True)
    make_vectors_dir(tmp_path / "v", vecs, list(range(400)))
    summary = cluster_collection(tmp_path / "v", tmp_path / "c", "auto", ClusterConfig())
    assert summary["k"] == 4 and [c["k"] for c in summary["k_curve"]][:3] == [2, 3, 4]
    # 400 points are under FAISS's 39 per centroid from k = 11 on: its warning, one a k, filled nightly logs
    assert "WARNING clustering" not in capfd.readouterr().err


@pytest.mark.parametrize("k, message", [(0, "--k must be at least 2.* not 0"), (1, "--k must be at least 2"),
                                        (10, "--k 10 needs more vectors than clusters.* holds 10"),
                                        (11, "--k 11 needs more vectors than clusters.* holds 10")])
def test_a_k_that_cannot_make_clusters_is_refused_leaving_nothing(tmp_path, k, message):
    make_vectors_dir(tmp_path / "v", blobs(10, 4, 2)[0], list(range(10)))
    with pytest.raises(InputError, match=message):
        cluster_collection(tmp_path / "v", tmp_path / "c", k, ClusterConfig())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]  # no output dir, no lock


def test_k_one_below_the_vectors_clusters_and_scores_without_labels(tmp_path):
    make_vectors_dir(tmp_path / "v", blobs(10, 4, 2)[0], list(range(10)))
    summary = cluster_collection(tmp_path / "v", tmp_path / "c", 9, ClusterConfig())
    assert summary["k"] == 9 and "silhouette" in summary["metrics"]


def test_top_terms_are_distinctive_not_common():
    frame = pl.DataFrame({
        "cluster": [0, 0, 0, 1, 1, 1],
        "text": ["the goal and the match", "the striker and the goal", "the match and goal",
                 "the oven and the flour", "the recipe and flour", "the oven and the sauce"],
    })
    terms = top_terms(frame, 2, n_terms=2, min_count=2)
    assert set(terms[0]) == {"goal", "match"} and set(terms[1]) == {"oven", "flour"}


def test_label_metrics_perfect_and_permuted():
    m = label_metrics(np.array(["a", "a", "b", "b"]), np.array([1, 1, 0, 0]))
    assert m == {"nmi": 1.0, "ari": 1.0, "purity": 1.0}


def test_cluster_real_text_vectors_names_topic_words(collection, tiny_model_dir, tmp_path):
    encode_collection(DataConfig(paths=[str(collection)]), tiny_model_dir, tmp_path / "v", EncodeConfig())
    summary = cluster_collection(tmp_path / "v", tmp_path / "c", 3, ClusterConfig(), data=[str(collection)])
    words = {w for c in summary["clusters"] for w in c["top_terms"]}
    assert words and not words & {"the", "and", "of"}
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["n"] == 282


def test_an_update_assigns_new_vectors_to_the_existing_centroids(tmp_path):
    import json

    import pyarrow.parquet as pq

    from vecjob.vectors import vectors_table, with_model_fingerprint

    # "c[1]": a folder named with a glob's characters is read as named (polars globbed it: no file found).
    vecs, _ = blobs(600, 8, 3, seed=4, spread=0.1, orthogonal=True)
    vdir = make_vectors_dir(tmp_path / "v", vecs, list(range(600)))
    first = cluster_collection(vdir, tmp_path / "c[1]", 3, ClusterConfig(), update=True)
    centroids = np.load(tmp_path / "c[1]" / "centroids.npy")
    # The next night: shard s2 leaves, a shard of 30 new vectors (near the first 30's) comes.
    manifest = json.loads((vdir / "manifest.json").read_text())
    table = with_model_fingerprint(vectors_table(pa.array(list(range(1000, 1030))), vecs[:30] + 0.01), "m")
    pq.write_table(table, vdir / "s3.parquet")
    manifest["shards"] = manifest["shards"][:2] + [{"output": "s3.parquet", "rows_out": 30}]
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    second = cluster_collection(vdir, tmp_path / "c[1]", 3, ClusterConfig(), update=True)
    done = json.loads((tmp_path / "c[1]" / "manifest.json").read_text())
    assert done["action"] == "assigned" and done["added"] == 30 and done["removed"] == 200
    np.testing.assert_array_equal(np.load(tmp_path / "c[1]" / "centroids.npy"), centroids)
    assignments = pl.read_parquet(tmp_path / "c[1]" / "assignments.parquet", glob=False)
    assert assignments.height == 430 == second["n"] and not set(range(400, 600)) & set(assignments["id"])
    old = dict(zip(assignments["id"], assignments["cluster"]))
    assert all(old[1000 + i] == old[i] for i in range(30))  # each lands with its neighbour
    assert sum(c["size"] for c in second["clusters"]) == 430 and first["k"] == second["k"]


@pytest.mark.parametrize("damaged, content", [
    ("centroids.npy", b"not numpy"), ("summary.json", b"{"), ("summary.json", b'{"clusters": 3}'),
    ("assignments.parquet", b"not parquet"), ("manifest.json", b'{"kind": "vecjob.cluster", "k": "3"}'),
])
def test_an_update_over_a_damaged_clustering_fits_anew(tmp_path, damaged, content):
    # A damaged file of the clustering an update keeps was a traceback (np.load, json, a KeyError).
    vecs, _ = blobs(300, 8, 3, seed=4)
    vdir = make_vectors_dir(tmp_path / "v", vecs, list(range(300)))
    cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), update=True)
    (tmp_path / "c" / damaged).write_bytes(content)
    cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), update=True)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["action"] == "clustered" and manifest["n"] == 300
    assert np.load(tmp_path / "c" / "centroids.npy").shape == (3, 8)
    assert pl.read_parquet(tmp_path / "c" / "assignments.parquet").height == 300
