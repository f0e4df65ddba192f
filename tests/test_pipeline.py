"""`vecjob run JOB.toml`: stages in order, up-to-date stages skipped, --force redoes them."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from typer.testing import CliRunner

from conftest import TINY_SPEC, write_collection
from vecjob.cli import app

runner = CliRunner()


def test_the_train_stage_fingerprint_follows_the_tokenizer_version(tmp_path, monkeypatch):
    from vecjob import stages
    from vecjob.config import load_job_spec

    write_collection(tmp_path / "data", [10])
    (tmp_path / "job.toml").write_text(TINY_SPEC.format(name="tiny", factory="auto"))
    spec = load_job_spec(tmp_path / "job.toml")
    run = stages.RunContext(spec, tmp_path / "run")
    current = stages.STAGES["train"].fingerprint(run)
    monkeypatch.setattr(stages, "TOKENIZER_VERSION", stages.TOKENIZER_VERSION - 1)
    assert stages.STAGES["train"].fingerprint(run) != current


def test_the_sentiment_stage_fingerprint_follows_the_split_rule_for_labels_without_a_split_column(tmp_path, monkeypatch):
    # A run dir whose report was scored on the rows the classifier fitted (labels without a split
    # column, before they were split by id hash) redoes the stage instead of keeping that report.
    from vecjob import dataset, stages
    from vecjob.config import load_job_spec

    write_collection(tmp_path / "data", [10])
    (tmp_path / "job.toml").write_text(TINY_SPEC.format(name="tiny", factory="auto"))
    run = stages.RunContext(load_job_spec(tmp_path / "job.toml"), tmp_path / "run")
    run.folder("encode").mkdir(parents=True)
    (run.folder("encode") / "manifest.json").write_text('{"vectors_fingerprint": "v"}')
    current = stages.STAGES["sentiment"].fingerprint(run)
    monkeypatch.setattr(dataset, "TEST_SHARE", 0.25)
    assert stages.STAGES["sentiment"].fingerprint(run) != current


def test_the_train_stage_reports_the_published_round_not_the_last():
    from vecjob.stages import train_headline

    history = [{"round": 1, "val_loss": 5.0, "val_token_acc": 0.2}, {"round": 2, "val_loss": 4.0, "val_token_acc": 0.3},
               {"round": 3, "val_loss": 4.5, "val_token_acc": 0.31}]
    headline = train_headline({"best_round": 2, "rounds_run": 3, "epochs_seen": 1.5, "stop_reason": "patience",
                               "history": history})
    assert headline == {"best_round": 2, "rounds_run": 3, "epochs_seen": 1.5, "stop_reason": "patience",
                        "val_loss": 4.0, "val_token_acc": 0.3}


def test_run_twice_skips_every_stage_and_force_redoes(ray_session, tmp_path):
    write_collection(tmp_path / "data", [40, 25])
    spec = tmp_path / "job.toml"
    # A vocabulary smaller than the collection's: its training data holds unknown words (drift's baseline).
    spec_text = TINY_SPEC.replace("max_vocab = 300", "max_vocab = 24")
    spec.write_text(spec_text.format(name="tiny", factory="auto"))

    from vecjob.parquet_io import _content_hash

    _content_hash.cache_clear()
    first = runner.invoke(app, ["run", str(spec)])
    assert first.exit_code == 0, first.output
    # Each input shard is read to be hashed once in the run (five stages' worth of fingerprints),
    # the model's three files once.
    assert _content_hash.cache_info().misses == 2 + 3
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert [s["status"] for s in manifest["stages"]] == ["ran"] * 3
    assert manifest["stages"][2]["metrics"]["ntotal"] == 65
    model = json.loads((tmp_path / "out" / "model" / "manifest.json").read_text())
    best = model["history"][model["best_round"] - 1]  # the published weights' round, not the last one
    assert manifest["stages"][0]["metrics"]["val_loss"] == best["val_loss"]

    second = runner.invoke(app, ["run", str(spec)])
    assert second.exit_code == 0, second.output
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    kept = "skipped: kept (drift 0.000 ≤ 0.07)"  # the model is pinned: no new documents, no drift
    assert [s["status"] for s in manifest["stages"]] == [kept] + ["skipped (up to date)"] * 2
    assert manifest["night"]["model"]["action"] == "kept" and manifest["night"]["shards_unchanged"] == 2

    # A night of blank texts holds no word to measure drift by (it read as a drift of minus the
    # training data's unknown share): the model is kept at drift 0.
    pq.write_table(pa.table({"id": ["blank-0", "blank-1"], "text": ["", None]}), tmp_path / "data" / "part-99.parquet")
    blank = runner.invoke(app, ["run", str(spec)])
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert blank.exit_code == 0 and manifest["stages"][0]["status"] == kept, manifest["stages"][0]
    assert manifest["stages"][0]["metrics"]["sampled_documents"] == 2 == manifest["stages"][1]["metrics"]["skipped_empty"]

    # A damaged run state (what each stage last ran with) was a traceback on every later night: each
    # stage now checks its own output again; nothing is trained or encoded anew.
    (tmp_path / "out" / "run_state.json").write_bytes(b'{"train": ')
    damaged = runner.invoke(app, ["run", str(spec)])
    manifest = json.loads((tmp_path / "out" / "run_manifest.json").read_text())
    assert damaged.exit_code == 0 and "run_state.json did not read" in damaged.output, damaged.output
    assert manifest["stages"][0]["status"] == kept and manifest["stages"][1]["metrics"]["shards_encoded"] == 0
    assert json.loads((tmp_path / "out" / "run_state.json").read_text())["index"]

    # Files of a published output that are lost (deleted by hand, a partial copy) were skipped as up to
    # date, leaving the index unreadable: the stage that made them runs again and redoes what is gone.
    vectors, model = tmp_path / "out" / "vectors", tmp_path / "out" / "model"
    lost = sorted(vectors.glob("*.parquet"))[0]
    lost.unlink()
    (tmp_path / "out" / "index" / "index.faiss").unlink()
    healed = runner.invoke(app, ["run", str(spec)])
    stages = json.loads((tmp_path / "out" / "run_manifest.json").read_text())["stages"]
    assert healed.exit_code == 0, healed.output
    assert f"encode: running: {vectors}: shard {lost.name} listed in the manifest is missing" in healed.output
    assert stages[1]["metrics"]["shards_encoded"] == 1 and lost.exists()
    assert stages[2]["metrics"]["action"] == "built" and "index.faiss missing" in stages[2]["metrics"]["why"]
    (model / "vocab.tsv").unlink()
    retrained = runner.invoke(app, ["run", str(spec)])
    stages = json.loads((tmp_path / "out" / "run_manifest.json").read_text())["stages"]
    assert retrained.exit_code == 0 and stages[0]["metrics"]["why"] == f"{model / 'vocab.tsv'} is missing"
    assert (model / "vocab.tsv").exists()
    again = runner.invoke(app, ["run", str(spec)])
    statuses = [s["status"] for s in json.loads((tmp_path / "out" / "run_manifest.json").read_text())["stages"]]
    assert again.exit_code == 0 and statuses == [kept] + ["skipped (up to date)"] * 2

    # A changed index setting reruns only the index stage.
    spec.write_text(spec_text.format(name="tiny", factory="Flat"))
    third = runner.invoke(app, ["run", str(spec)])
    statuses = [s["status"] for s in json.loads((tmp_path / "out" / "run_manifest.json").read_text())["stages"]]
    assert third.exit_code == 0 and statuses == [kept, "skipped (up to date)", "ran"]

    forced = runner.invoke(app, ["run", str(spec), "--force", "--address", ""])
    stages = json.loads((tmp_path / "out" / "run_manifest.json").read_text())["stages"]
    # The retrained model is the same (same data, settings and seed), so it is published at once.
    assert forced.exit_code == 0 and [s["status"] for s in stages] == ["ran"] * 4
    assert [s["stage"] for s in stages] == ["train", "publish model", "encode", "index"]
    assert not (tmp_path / "out" / ".model-next").exists()


def test_invalid_spec_is_one_line(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('[data]\npaths = ["x"]\n[trian]\nepochs = 1\n')
    r = runner.invoke(app, ["run", str(spec)])
    assert r.exit_code == 2 and "unknown key 'trian'" in r.output


def test_each_stage_whose_published_output_lost_a_file_runs_again(tmp_path):
    # The run's integration test above loses a vector shard, the FAISS index and the vocabulary; here
    # every file of the other outputs, one at a time.
    from vecjob import stages
    from vecjob.config import JobSpec
    from vecjob.parquet_io import new_manifest
    from vecjob.sentiment import PRED_KIND

    ctx = stages.RunContext(JobSpec(data={"paths": ["d"]}), tmp_path)
    manifest = json.dumps(new_manifest(PRED_KIND, shards=[{"output": "part-0-a1b2.parquet"}]))  # only this one is read
    parts = {"index": ["index.faiss", "ids.parquet"],
             "cluster": ["assignments.parquet", "centroids.npy", "summary.json"],
             "sentiment": ["classifier/classifier.npz", "classifier/labels.json", "classifier/manifest.json",
                           "predictions/manifest.json", "predictions/part-0-a1b2.parquet"]}
    for name, files in parts.items():
        folder, stage = ctx.folder(name), stages.STAGES[name]
        for part in ["manifest.json", *files]:
            (folder / part).parent.mkdir(parents=True, exist_ok=True)
            (folder / part).write_text(manifest)
        assert stage.plan(ctx, "fp", "fp", force=False).run is False
        for part in files:
            (folder / part).rename(tmp_path / "aside")
            plan = stage.plan(ctx, "fp", "fp", force=False)
            assert plan.run and plan.status == f"running: {folder / part} is missing", (part, plan.status)
            (tmp_path / "aside").rename(folder / part)
    (folder / "predictions" / "manifest.json").write_text(json.dumps(new_manifest(PRED_KIND)))  # edited: no shards
    assert "'shards' is missing" in stages.STAGES["sentiment"].plan(ctx, "fp", "fp", force=False).status


def test_a_nights_cluster_line_says_whether_it_fitted_or_assigned_the_new_vectors(tmp_path):
    # A night's log said "k 3" either way: whether the clustering was fitted anew or kept its centroids
    # and assigned the night's vectors was in the cluster manifest alone.
    from conftest import blobs, make_vectors_dir
    from vecjob import stages
    from vecjob.config import JobSpec
    from vecjob.pipeline import headline
    from vecjob.vectors import vectors_table, with_model_fingerprint

    vecs, _ = blobs(600, 8, 3, seed=4, spread=0.1, orthogonal=True)
    ids = list(range(600)) + list(range(1000, 1030))
    pq.write_table(pa.table({"id": ids, "text": [f"document {i}" for i in ids]}), tmp_path / "docs.parquet")
    ctx = stages.RunContext(JobSpec(data={"paths": [str(tmp_path / "docs.parquet")]}, cluster={"k": 3}), tmp_path)
    vdir = make_vectors_dir(ctx.folder("encode"), vecs, list(range(600)))
    fitted = stages.STAGES["cluster"].run(ctx, None)
    assert fitted["action"] == "clustered" and "silhouette" in fitted
    assert headline(fitted).startswith("k 3, action clustered, silhouette ")
    assert headline(fitted).endswith("(why: no clustering yet)")

    manifest = json.loads((vdir / "manifest.json").read_text())  # the next night: s2 gone, 30 new vectors
    table = with_model_fingerprint(vectors_table(pa.array(list(range(1000, 1030))), vecs[:30] + 0.01), "m")
    pq.write_table(table, vdir / "s3.parquet")
    manifest["shards"] = manifest["shards"][:2] + [{"output": "s3.parquet", "rows_out": 30}]
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    assigned = stages.STAGES["cluster"].run(ctx, None)
    # No silhouette: it would be the fit's, not the night's.
    assert headline(assigned) == "k 3, action assigned, added 30, removed 200 (why: new or removed vector shards)"

    # Past half as many vectors assigned since the fit as it was fitted on (200 + 30 of 600, then 300
    # more), the night fits anew and says why.
    table = with_model_fingerprint(vectors_table(pa.array(list(range(2000, 2300))), vecs[:300] - 0.01), "m")
    pq.write_table(table, vdir / "s4.parquet")
    manifest["shards"].append({"output": "s4.parquet", "rows_out": 300})
    (vdir / "manifest.json").write_text(json.dumps(manifest))
    grown = stages.STAGES["cluster"].run(ctx, None)
    assert grown["action"] == "assigned" and grown["added"] == 300  # 30 assigned since the fit: under 300
    refit = stages.STAGES["cluster"].run(ctx, None)
    assert headline(refit).startswith("k 3, action clustered") and headline(refit).endswith(
        "(why: 330 vectors assigned since a fit on 600)")
