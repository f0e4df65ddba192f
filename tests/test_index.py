import json

import numpy as np
import pytest

from vecjob.config import IndexConfig
from vecjob.errors import ArtifactError, InputError
from vecjob.index import build_index, choose_factory, index_collection, load_index_dir, recall_at_k
from conftest import make_vectors_dir


def _clustered(n, dim, seed=0):  # noqa: D103
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, dim))
    return (centers[rng.integers(20, size=n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


def test_auto_factory_by_size():
    assert choose_factory(10_000, 128) == "Flat"
    assert choose_factory(1_000_000, 128) == "IVF4096,Flat"
    assert choose_factory(100_000, 128).startswith("IVF")
    assert choose_factory(50_000_000, 128, memory_budget=1 << 30).endswith(",PQ32")


def test_flat_index_finds_each_vector_first(tmp_path):
    vecs = _clustered(600, 16)
    ids = [f"d{i}" for i in range(600)]
    make_vectors_dir(tmp_path / "v", vecs, ids)
    manifest = index_collection(tmp_path / "v", tmp_path / "i", IndexConfig())
    assert manifest["factory"] == "Flat" and manifest["ntotal"] == 600 and manifest["recall_at_10"] > 0.99
    index = load_index_dir(tmp_path / "i")
    found, scores = index.search(vecs[[5, 400]], k=3)
    assert found[0][0] == "d5" and found[1][0] == "d400"
    assert scores[0][0] == pytest.approx(1.0, abs=1e-5)
    # A cosine similarity is at most 1: rounding gave a document's own vector 1.0000002 (97 of these 600).
    found, scores = index.search(vecs, k=1)
    assert [hit for hit, in found] == ids and scores.max() <= 1.0 and scores.min() > 0.99


def test_ivf_is_tuned_to_the_target_recall(tmp_path):
    vecs = _clustered(4000, 16, seed=1)
    make_vectors_dir(tmp_path / "v", vecs, list(range(4000)))
    built = build_index(tmp_path / "v", IndexConfig(factory="IVF32,Flat", recall_queries=200))
    assert built.manifest["recall_at_10"] >= 0.95
    assert "nprobe" in built.manifest["search_params"]


def test_an_ivf_query_whose_probed_lists_hold_fewer_than_k_vectors_still_gets_k_hits(tmp_path):
    """Forty lists of about 15 vectors, one list probed: a query for 100 neighbours came back with the
    dozen its list held."""
    vecs = _clustered(600, 16, seed=2)
    make_vectors_dir(tmp_path / "v", vecs, list(range(600)))
    index_collection(tmp_path / "v", tmp_path / "i", IndexConfig(factory="IVF40,Flat", target_recall=0.1))
    index = load_index_dir(tmp_path / "i")
    for nprobe in (None, 1):
        found, scores = index.search(vecs[:3], k=100, nprobe=nprobe)
        assert [len(row) for row in found] == [100, 100, 100]
        assert found[0][0] == 0 and len(set(found[0])) == 100
        assert np.all(np.diff(scores, axis=1) <= 1e-6)  # still best first
    assert len(index.search(vecs[:1], k=1000)[0][0]) == 600  # k above the collection: all of it


@pytest.mark.parametrize("factory", ["PCA16,IVF8,Flat", "HNSW8"])
def test_an_index_behind_a_transform_or_a_graph_builds_and_a_removal_rebuilds_it(tmp_path, factory):
    """An IVF behind a PCA takes no labels of its own (it failed to build); HNSW sits behind an id map
    (its efSearch was never tuned); neither can drop a vector, so a night that removes documents
    builds the index anew."""
    vecs = _clustered(2000, 32)
    ids = [f"d{i}" for i in range(2000)]
    make_vectors_dir(tmp_path / "v", vecs, ids, shards=4)
    built = index_collection(tmp_path / "v", tmp_path / "i", IndexConfig(factory=factory, target_recall=0.5))
    assert built["factory"] == factory and built["ntotal"] == 2000
    assert set(built["search_params"]) == {"efSearch" if "HNSW" in factory else "nprobe"}  # tuned to the target
    assert load_index_dir(tmp_path / "i").search(vecs[[7]], k=1)[0][0] == ["d7"]
    assert load_index_dir(tmp_path / "i").stored_vector("d7").shape == (32,)
    make_vectors_dir(tmp_path / "v", vecs[:1500], ids[:1500], shards=3)  # the last shard's documents left
    updated = index_collection(tmp_path / "v", tmp_path / "i", IndexConfig(factory=factory, target_recall=0.5),
                               update=True)
    assert updated["ntotal"] == 1500
    assert updated["updates"][-1]["action"] == "built" and "cannot remove vectors" in updated["updates"][-1]["why"]


def test_l2_metric(tmp_path):
    vecs = _clustered(300, 8)
    make_vectors_dir(tmp_path / "v", vecs, list(range(300)))
    index_collection(tmp_path / "v", tmp_path / "i", IndexConfig(metric="l2"))
    found, dist = load_index_dir(tmp_path / "i").search(vecs[:1], k=1)
    assert found[0] == [0] and dist[0][0] == pytest.approx(0.0, abs=1e-4)


def test_duplicate_ids_are_refused(tmp_path):
    make_vectors_dir(tmp_path / "v", _clustered(30, 8), ["a", "b", "c"] * 10)
    with pytest.raises(InputError, match="rows share an id"):
        index_collection(tmp_path / "v", tmp_path / "i", IndexConfig())
    assert not (tmp_path / "i" / "manifest.json").exists()


def test_query_dim_mismatch_and_incomplete_dir(tmp_path):
    make_vectors_dir(tmp_path / "v", _clustered(50, 8), list(range(50)))
    index_collection(tmp_path / "v", tmp_path / "i", IndexConfig())
    with pytest.raises(InputError, match="dim 4"):
        load_index_dir(tmp_path / "i").search(np.zeros((1, 4), np.float32), 3)
    (tmp_path / "i" / "ids.parquet").unlink()
    with pytest.raises(ArtifactError, match="ids.parquet missing"):
        load_index_dir(tmp_path / "i")


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2], [3, 4]]), np.array([[2, 1], [3, 5]])) == 0.75


@pytest.mark.parametrize("factory, target, saved_sample", [("IVF32,Flat", 0.95, "kept"), ("IVF32,PQ4", 0.0, "kept"),
                                                           ("IVF32,Flat", 0.95, "missing"),
                                                           ("IVF32,Flat", 0.95, "corrupt"),
                                                           ("IVF32,Flat", 0.95, "misshapen")])
def test_an_update_carries_the_recall_sample_forward_exactly(tmp_path, factory, target, saved_sample):
    """An update re-measures recall on the saved sample without searching everything again: its
    queries' neighbours must still be the exact ones over what the updated index holds. An index
    without a readable sample (written before it existed, or damaged) draws a new one."""
    import faiss

    from vecjob.parquet_io import write_json_atomic
    from vecjob.vectors import unit_rows

    vecs, ids = _clustered(5000, 16, seed=2), list(range(5000))
    make_vectors_dir(tmp_path / "v", vecs[:4000], ids[:4000], shards=4)
    cfg = IndexConfig(factory=factory, recall_queries=300, target_recall=target)
    index_collection(tmp_path / "v", tmp_path / "i", cfg)
    if saved_sample == "missing":
        (tmp_path / "i" / "recall_sample.npz").unlink()
    elif saved_sample == "corrupt":
        (tmp_path / "i" / "recall_sample.npz").write_bytes(b"PK\x03\x04 not a whole archive")
    elif saved_sample == "misshapen":
        np.savez(tmp_path / "i" / "recall_sample.npz", queries=np.zeros((300, 3), np.float32),
                 scores=np.zeros((300, 10), np.float32), labels=np.zeros((300, 10), np.int64))
    # A night: the first shard (ids 0..999) leaves, 1,000 new vectors arrive in a shard of their own.
    make_vectors_dir(tmp_path / "night", vecs[4000:], ids[4000:], shards=1)
    (tmp_path / "night" / "s0.parquet").rename(tmp_path / "v" / "s4.parquet")
    (tmp_path / "v" / "s0.parquet").unlink()
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][1:] + [{"output": "s4.parquet", "rows_out": 1000}]
    write_json_atomic(manifest, tmp_path / "v" / "manifest.json")

    updated = index_collection(tmp_path / "v", tmp_path / "i", cfg, update=True)
    assert updated["updates"][-1]["action"] == "updated" and updated["ntotal"] == 4000
    index = load_index_dir(tmp_path / "i")
    sample = index.recall_sample()
    _, exact = faiss.knn(sample.queries, unit_rows(vecs[1000:]), 10, metric=faiss.METRIC_INNER_PRODUCT)
    carried = [[index.id_of_slot[s] for s in row] for row in sample.labels]
    assert [set(row) for row in carried] == [set((exact_row + 1000).tolist()) for exact_row in exact]
    # The sample follows the collection: some queries are now new documents (each its own nearest).
    assert saved_sample != "kept" or any(row[0] >= 4000 for row in carried)


def test_a_vector_shard_without_its_columns_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vecjob.vectors import with_model_fingerprint

    make_vectors_dir(tmp_path / "v", _clustered(300, 8), list(range(300)))
    pq.write_table(with_model_fingerprint(pa.table({"doc": [1, 2]}), "m"), tmp_path / "v" / "s1.parquet")
    with pytest.raises(ArtifactError, match=r"s1\.parquet: vector shard has no column 'id'"):
        index_collection(tmp_path / "v", tmp_path / "i", IndexConfig())
    assert not (tmp_path / "i").exists()


def test_an_index_of_codes_reads_a_stored_vector_from_its_shard_and_refuses_vectors_that_moved_on(tmp_path):
    vecs = _clustered(300, 16)
    make_vectors_dir(tmp_path / "v", vecs, list(range(300)), shards=3)
    index_collection(tmp_path / "v", tmp_path / "i", IndexConfig(factory="SQ8"))
    loaded = load_index_dir(tmp_path / "i")
    assert loaded.manifest["vectors_dir"] == str(tmp_path / "v")
    np.testing.assert_array_equal(loaded.stored_vector(250), vecs[250])  # exact: read from the shard, not the codes
    np.testing.assert_array_equal(loaded.stored_vector("7"), vecs[7])
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    (tmp_path / "v" / "manifest.json").write_text(json.dumps({**manifest, "vectors_fingerprint": "another"}))
    with pytest.raises(ArtifactError, match="the vectors changed since the index was built from them; rebuild"):
        loaded.stored_vector(250)


def test_a_night_whose_ids_change_type_rebuilds_the_index_and_refits_the_clusters(tmp_path):
    # Upstream began writing the same documents with integer ids: the update joined the held string
    # ids to the new integer ones, a polars SchemaError every night from then on.
    import shutil

    import polars as pl

    from vecjob.cluster import cluster_collection
    from vecjob.config import ClusterConfig

    vecs = _clustered(120, 8)
    vdir = make_vectors_dir(tmp_path / "v", vecs, [str(i) for i in range(120)])
    index_collection(vdir, tmp_path / "i", IndexConfig(), update=True)
    cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), update=True)
    shutil.rmtree(vdir)
    make_vectors_dir(tmp_path / "v", vecs, list(range(120)))
    manifest = index_collection(vdir, tmp_path / "i", IndexConfig(), update=True)
    assert manifest["updates"][-1]["why"] == "the documents' ids changed type (String → Int64)"
    assert load_index_dir(tmp_path / "i").search(vecs[5], 1)[0] == [[5]]
    clusters = cluster_collection(vdir, tmp_path / "c", 3, ClusterConfig(), update=True)
    assert json.loads((tmp_path / "c" / "manifest.json").read_text()).get("action") != "assigned"
    assigned = pl.read_parquet(tmp_path / "c" / "assignments.parquet")
    assert assigned["id"].dtype == pl.Int64 and assigned.height == clusters["n"] == 120


def test_a_night_that_leaves_no_vector_is_refused_in_one_line_and_keeps_the_index(tmp_path):
    # Every document of the collection became blank: the update removed every vector and then
    # failed to draw its recall sample, a ValueError traceback.
    import shutil

    vecs = _clustered(120, 8)
    vdir = make_vectors_dir(tmp_path / "v", vecs, [str(i) for i in range(120)])
    index_collection(vdir, tmp_path / "i", IndexConfig(), update=True)
    before = (tmp_path / "i" / "manifest.json").read_bytes()
    shutil.rmtree(vdir)
    make_vectors_dir(tmp_path / "v", np.empty((0, 8), np.float32), [], shards=1)
    with pytest.raises(InputError, match="holds no vectors to index"):
        index_collection(vdir, tmp_path / "i", IndexConfig(), update=True)
    assert (tmp_path / "i" / "manifest.json").read_bytes() == before
    assert load_index_dir(tmp_path / "i").search(vecs[5], 1)[0] == [["5"]]
