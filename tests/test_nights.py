"""Nightly runs over one growing collection (BBC articles split into days): the first night trains and
builds, later nights encode only their own shards and update the index in place, a retrain switches
model and index together, and a killed or refused night leaves the previous collection searchable."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import SHARED_DATA, TINY_SPEC, needs_shared
from vecjob.cli import app
from vecjob.errors import InputError
from vecjob.index import load_index_dir
from vecjob.search import search

VECJOB = [sys.executable, "-c", "from vecjob.cli import app; app(prog_name='vecjob')"]


def _spec(docs) -> str:
    """The tiny test spec over a collection of day folders, published into one folder."""
    return (TINY_SPEC.format(name="nightly-test", factory="Flat").replace('out = "out"', 'out = "collection"')
            .replace('paths = ["data"]', f'paths = ["{docs}/*/*.parquet"]'))


def _run(spec, *flags):
    r = CliRunner().invoke(app, ["run", str(spec), *flags])
    assert r.exit_code == 0, r.output
    return {**json.loads((spec.parent / "collection" / "run_manifest.json").read_text()), "log": r.output}


def _write_day(docs, day: str, frames: list[pl.DataFrame]) -> None:
    (docs / day).mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        frame.write_parquet(docs / day / f"part-{i}.parquet")


def _index_ids(index_dir) -> set:
    return set(load_index_dir(index_dir).labels.column("id").to_pylist())


def _stored(index_dir) -> dict:
    index = load_index_dir(index_dir)
    return {doc_id: index.stored_vector(doc_id) for doc_id in index.labels.column("id").to_pylist()}


@pytest.fixture(scope="module")
def articles():
    if not (SHARED_DATA / "bbc_news.parquet").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return pl.read_parquet(SHARED_DATA / "bbc_news.parquet").sample(900, seed=1).select("id", "text")


@needs_shared
def test_four_nights_over_a_growing_collection(ray_session, articles, tmp_path):
    docs, spec = tmp_path / "docs", tmp_path / "nightly.toml"
    spec.write_text(_spec(docs))
    index, model = tmp_path / "collection" / "index", tmp_path / "collection" / "model"
    day1, day2, day3 = articles[:400], articles[400:700], articles[700:]

    # Night 1: trains and builds everything.
    _write_day(docs, "2026-12-01", [day1[:200], day1[200:]])
    night = _run(spec)["night"]
    assert night["model"]["action"] == "trained" and night["model"]["why"] == "no model yet"
    assert night["index"]["action"] == "built" and night["index"]["ntotal"] == 400
    first_model = json.loads((model / "manifest.json").read_text())["model_fingerprint"]

    # Night 2: two new shards, encoded alone; the index is updated in place, the model kept.
    _write_day(docs, "2026-12-02", [day2[:150], day2[150:]])
    manifest = _run(spec)
    night, encode = manifest["night"], next(s for s in manifest["stages"] if s["stage"] == "encode")
    assert night["model"]["action"] == "kept" and abs(night["model"]["drift"]) <= 0.05  # same kind of text
    assert night["shards_new"] == 2 and night["shards_unchanged"] == 2
    assert "2 new, 0 changed, 0 removed, 2 unchanged" in manifest["log"]  # the night, in its log
    assert encode["metrics"]["shards_encoded"] == 2 and encode["metrics"]["shards_skipped_done"] == 2
    recall = night["index"].pop("recall_at_10")
    assert night["index"] == {"action": "updated", "why": "new or removed vector shards", "added": 300,
                              "removed": 0, "ntotal": 700} and recall >= 0.99
    new_id, new_text = day2["id"][10], day2["text"][10]
    assert search(index, doc_id=new_id, k=1)[0]["id"] == new_id
    assert new_id in [h["id"] for h in search(index, text=new_text, model_dir=model, k=3)]

    # Night 3: a shard deleted, a shard changed, and a day-1 article again in a new day's shard.
    removed_ids = set(day1[200:]["id"].to_list())
    (docs / "2026-12-01" / "part-1.parquet").unlink()
    changed = day2[:150].with_columns(pl.col("text").str.slice(0, 300) + " Updated late at night.")
    again = day1[:1].with_columns(pl.lit("A corrected article about the cup final and its goals.").alias("text"))
    _write_day(docs, "2026-12-02", [changed, day2[150:]])
    _write_day(docs, "2026-12-03", [pl.concat([day3, again])])
    night = _run(spec)["night"]
    assert (night["shards_new"], night["shards_changed"], night["shards_removed"]) == (1, 1, 1)
    assert night["index"]["action"] == "updated" and night["index"]["ntotal"] == 200 + 300 + 200
    assert night["index"]["removed"] == 200 + 150 + 1 and night["index"]["added"] == 150 + 201
    held = _index_ids(index)
    assert not removed_ids & held and len(held) == 700
    for doc_id in list(removed_ids)[:5]:
        with pytest.raises(InputError, match="no document with id"):
            search(index, doc_id=doc_id, k=1)
    from vecjob.encoder import DocumentEncoder

    encoder = DocumentEncoder(model, device="cpu")
    stored = load_index_dir(index)
    for doc_id, text in [(changed["id"][3], changed["text"][3]), (again["id"][0], again["text"][0])]:
        fresh = encoder.encode_texts([text]).vectors[0]  # a cosine index stores unit vectors
        np.testing.assert_allclose(stored.stored_vector(doc_id), fresh / np.linalg.norm(fresh), atol=1e-5)

    # Night 4: asked to retrain: a new model, everything encoded again, the index rebuilt, both switched.
    manifest = _run(spec, "--retrain")
    night = manifest["night"]
    assert night["model"]["action"] == "trained" and night["model"]["why"] == "asked (--retrain)"
    encode = next(s for s in manifest["stages"] if s["stage"] == "encode")
    assert encode["metrics"]["shards_encoded"] == 4
    assert night["index"]["action"] == "built" and night["index"]["why"] == "the vectors come from another model"
    new_model = json.loads((model / "manifest.json").read_text())["model_fingerprint"]
    assert new_model != first_model and load_index_dir(index).manifest["model_fingerprint"] == new_model
    assert [s["stage"] for s in manifest["stages"]][-1] == "publish model"
    # The new vectors and index name the model where it is now published, not the folder it waited in
    # (gone once it is published): a text query without a model given is encoded by it.
    vectors = json.loads((tmp_path / "collection" / "vectors" / "manifest.json").read_text())
    assert vectors["model_dir"] == load_index_dir(index).manifest["model_dir"] == str(model)
    assert search(index, text=new_text, k=3) == search(index, text=new_text, model_dir=model, k=3)


@needs_shared
def test_a_killed_night_resumes_to_the_same_index_and_a_refused_night_changes_nothing(ray_session, articles,
                                                                                    tmp_path):
    import ray

    docs = tmp_path / "docs"
    _write_day(docs, "2026-12-01", [articles[:200], articles[200:400]])
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for root in (killed, clean):
        root.mkdir()
        (root / "nightly.toml").write_text(_spec(docs))
    _run(killed / "nightly.toml")
    shutil.copytree(killed / "collection", clean / "collection", symlinks=True)
    for f in (clean / "collection").rglob("manifest.json"):  # the copy's manifests point at the copy
        f.write_text(f.read_text().replace(str(killed), str(clean)))

    # A night that adds a day is killed while publishing its index update, then run again.
    _write_day(docs, "2026-12-02", [articles[400:600]])
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.run([*VECJOB, "run", str(killed / "nightly.toml"), "--address", address],
                          env={**os.environ, "VECJOB_KILL_AT": "staged_before_swap:1"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _index_ids(killed / "collection" / "index") == set(articles[:400]["id"].to_list())  # the previous night's
    resumed = _run(killed / "nightly.toml")["night"]
    uninterrupted = _run(clean / "nightly.toml")["night"]
    assert resumed["index"]["action"] == uninterrupted["index"]["action"] == "updated"
    a, b = _stored(killed / "collection" / "index"), _stored(clean / "collection" / "index")
    assert a.keys() == b.keys() and len(a) == 600
    for doc_id in a:
        np.testing.assert_array_equal(a[doc_id], b[doc_id])

    # A night with a corrupt shard is refused with one line; the collection stays as it was.
    before = (killed / "collection" / "index" / "manifest.json").read_text()
    _write_day(docs, "2026-12-03", [articles[600:700]])
    (docs / "2026-12-03" / "part-0.parquet").write_bytes(b"PAR1 not parquet")
    r = CliRunner().invoke(app, ["run", str(killed / "nightly.toml")])
    assert r.exit_code == 2 and "part-0.parquet: not a readable Parquet file" in r.output
    assert (killed / "collection" / "index" / "manifest.json").read_text() == before
    doc_id = articles["id"][450]
    assert search(killed / "collection" / "index", doc_id=doc_id, k=1)[0]["id"] == doc_id

    # A retraining night killed before its index is published: searches still pair the old model with
    # the old index; the rerun reuses the waiting model, publishes the index, then the model.
    shutil.rmtree(docs / "2026-12-03")
    old_model = json.loads((killed / "collection" / "model" / "manifest.json").read_text())["model_fingerprint"]
    proc = subprocess.run([*VECJOB, "run", str(killed / "nightly.toml"), "--retrain", "--address", address],
                          # the 1st staged folder is the retrained model, the 2nd the index
                          env={**os.environ, "VECJOB_KILL_AT": "staged_before_swap:2"}, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed / "collection" / ".model-next" / "manifest.json").exists()
    text = articles["text"][450]
    hits = search(killed / "collection" / "index", text=text, model_dir=killed / "collection" / "model", k=3)
    assert doc_id in [h["id"] for h in hits]
    assert load_index_dir(killed / "collection" / "index").manifest["model_fingerprint"] == old_model
    manifest = _run(killed / "nightly.toml")
    assert manifest["night"]["model"]["why"].startswith("a retrained model is waiting")
    assert [s["stage"] for s in manifest["stages"]][-1] == "publish model"
    new_model = json.loads((killed / "collection" / "model" / "manifest.json").read_text())["model_fingerprint"]
    assert new_model != old_model == json.loads(
        (clean / "collection" / "model" / "manifest.json").read_text())["model_fingerprint"]
    assert load_index_dir(killed / "collection" / "index").manifest["model_fingerprint"] == new_model
    assert not (killed / "collection" / ".model-next").exists()


def test_a_model_that_lost_a_file_is_trained_again_published_or_waiting(tmp_path, tiny_model_dir, collection):
    # Kept as it was, it failed every later night's encode ("incomplete model dir"); the run's test in
    # test_pipeline.py loses the published model's vocabulary and checks the whole night.
    from vecjob.config import DataConfig, JobSpec
    from vecjob.lifecycle import decide

    spec, run = JobSpec(data=DataConfig(paths=[str(collection)])), tmp_path / "run"
    for waiting in (True, False):  # a retrained model waiting for its index; the published one alone
        shutil.copytree(tiny_model_dir, run / "model")
        if waiting:
            shutil.copytree(tiny_model_dir, run / ".model-next")
            assert not decide(spec, run / "model", run / "vectors", False)["train"]
        lost = run / (".model-next" if waiting else "model") / "vocab.tsv"
        lost.unlink()
        night = decide(spec, run / "model", run / "vectors", False)
        assert night["train"] and night["why"] == f"{lost} is missing" and night["target"] == run / ".model-next"
        shutil.rmtree(run)


def test_a_models_age_is_read_with_the_utc_offset_it_was_written_with():
    # Read as the reader's local time, a model written at noon in UTC+14 and one written at noon in
    # UTC-12 were the same age: `train.max_model_age_days` retrained a night early or late.
    from datetime import datetime, timezone

    from vecjob.lifecycle import created_at

    noon_utc = datetime(2026, 12, 1, 12, tzinfo=timezone.utc).timestamp()
    assert created_at({"created": "2026-12-01T12:00:00+0000"}) == noon_utc
    assert created_at({"created": "2026-12-01T12:00:00+1400"}) == noon_utc - 14 * 3600
    assert created_at({"created": "2026-12-01T12:00:00-1200"}) == noon_utc + 12 * 3600
