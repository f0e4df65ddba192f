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


def test_ivf_is_tuned_to_the_target_recall(tmp_path):
    vecs = _clustered(4000, 16, seed=1)
    make_vectors_dir(tmp_path / "v", vecs, list(range(4000)))
    built = build_index(tmp_path / "v", IndexConfig(factory="IVF32,Flat", recall_queries=200))
    assert built.manifest["recall_at_10"] >= 0.95
    assert "nprobe" in built.manifest["search_params"]


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
