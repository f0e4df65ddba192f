"""`vecjob run` with its data and every output in object storage (a local S3 server), as a user runs
it: a fresh process, an embedded Ray, then search by id and by text on the published index."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import TINY_SPEC, synthetic_texts, write_collection
from typer.testing import CliRunner

from vecjob import storage
from vecjob.cli import app
from vecjob.index import load_index_dir
from vecjob.search import EncodedFrom

# The suite's tiny job, with its data and outputs at URIs and every stage after training.
S3_SPEC = (TINY_SPEC.replace('out = "out"', 'out = "{out}"').replace('paths = ["data"]', 'paths = ["{data}"]')
           .replace('"index"]', '"index", "cluster", "sentiment"]')
           .replace("concurrency = 1", 'concurrency = 1\nkeep_columns = ["label"]')
           .replace('"{factory}"', '"auto"').replace('"{name}"', '"in-the-bucket"') + "[cluster]\nk = 3\n")


def upload_collection(s3, tmp_path, sizes=(60, 40)) -> str:
    for p in write_collection(tmp_path / "staging", list(sizes)):
        storage.write_bytes(s3.uri("data", p.name), p.read_bytes())
    return s3.uri("data")


def vecjob(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "vecjob"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_job_in_a_bucket_runs_resumes_and_answers_searches(s3, tmp_path, monkeypatch):
    spec = tmp_path / "jobs" / "job.toml"
    spec.parent.mkdir()
    spec.write_text(S3_SPEC.format(out=s3.uri("runs", "nightly"), data=upload_collection(s3, tmp_path)))
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, "VECJOB_CACHE": os.environ["VECJOB_CACHE"], "RAY_ADDRESS": ""}

    first = vecjob("run", str(spec), cwd=work, env=env)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
    published = storage.list_files(s3.uri("runs", "nightly"))
    for name in ("model/manifest.json", "model/model.pt", "vectors/manifest.json", "index/manifest.json",
                 "clusters/manifest.json", "sentiment/manifest.json", "run_manifest.json"):
        assert name in published, sorted(published)
    assert not [n for n in published if storage.LEASE in n or "ray-train" in n or ".tmp-" in n]
    run = json.loads(storage.read_bytes(s3.uri("runs", "nightly", "run_manifest.json")))
    assert run["spec"]["out"] == s3.uri("runs", "nightly")
    assert [r["status"] for r in run["stages"]] == ["ran"] * 5
    # The labels have no split column: the classifier is tested on the fifth of the ids it never fitted.
    sentiment = run["stages"][4]["metrics"]
    assert sentiment["test_split"] == "1 in 5 ids by hash" and 0 < sentiment["test_rows"] < 50
    assert "test_split 1 in 5 ids by hash" in first.stderr + first.stdout
    index = json.loads(storage.read_bytes(s3.uri("runs", "nightly", "index", "manifest.json")))
    assert index["vectors_dir"] == s3.uri("runs", "nightly", "vectors")  # not the run's local mirror

    second = vecjob("run", str(spec), cwd=work, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    run = json.loads(storage.read_bytes(s3.uri("runs", "nightly", "run_manifest.json")))
    assert all(r["status"].startswith("skipped") for r in run["stages"]), run["stages"]
    assert list(work.iterdir()) == []  # nothing written where the job was started

    runner = CliRunner()
    by_id = runner.invoke(app, ["search", s3.uri("runs", "nightly", "index"), "--id", "doc-00003", "--json"])
    assert by_id.exit_code == 0, by_id.output
    hits = json.loads(by_id.output)["hits"]
    assert hits[0]["id"] == "doc-00003" and len(hits) == 10
    by_text = runner.invoke(app, ["search", s3.uri("runs", "nightly", "index"), "--model",
                                  s3.uri("runs", "nightly", "model"), "--text", "match goal team league", "--json"])
    assert by_text.exit_code == 0, by_text.output
    assert len(json.loads(by_text.output)["hits"]) == 10
    assert list(work.iterdir()) == []


def test_bad_run_locations_exit_2_with_one_line_and_create_nothing(s3, tmp_path, monkeypatch):
    spec = tmp_path / "job.toml"  # the data is there: only the run's location is wrong
    spec.write_text(S3_SPEC.format(out="unused", data=upload_collection(s3, tmp_path / "up", sizes=(20,))))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    runner = CliRunner()
    cases = {"s3:/x": "malformed URI", "ftp://x": "unsupported scheme", "s3://no-such-bucket-vj/runs": "the bucket does not exist"}
    for out, problem in cases.items():
        result = runner.invoke(app, ["run", str(spec), "--out", out])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and problem in lines[0], result.output
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    result = runner.invoke(app, ["run", str(spec), "--out", s3.uri("runs", "x")])
    assert result.exit_code == 2 and "credentials were rejected" in result.output, result.output
    assert "wrong" not in result.output.replace("credentials were rejected (wrong secret key)", "")
    assert list(work.iterdir()) == [] and not storage.cache_root().exists()


def test_a_prefix_vecjob_did_not_write_is_refused_naming_its_uri_and_kept(s3, tmp_path, tiny_model_dir):
    # The refusal named the local cache folder the prefix is mirrored in, not the --out the user gave.
    storage.write_bytes(s3.uri("theirs", "notes.csv"), b"a,b\n")
    write_collection(tmp_path / "data", [20])
    result = CliRunner().invoke(app, ["encode", str(tmp_path / "data"), "--model", str(tiny_model_dir),
                                      "--out", s3.uri("theirs"), "--runner", "local"])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: --out {s3.uri('theirs')}: is a folder vecjob did not write (no manifest.json); refusing to write "
        "into it"], result.output
    assert list(storage.list_files(s3.uri("theirs"))) == ["notes.csv"]


def test_an_output_inside_its_input_prefix_is_refused_and_leaves_the_bucket_as_it_was(s3, tmp_path, tiny_model_dir):
    # In a store the overlap went unchecked: the vectors were published inside the data prefix, and
    # every later read of it failed on them ("missing column 'text'"). A refused run leaves no empty
    # folder marker either, which pyarrow put where the run's lease had been.
    import pyarrow.fs as pafs

    data = upload_collection(s3, tmp_path, sizes=(20,))
    fs, root = storage.filesystem(s3.uri())
    listing = lambda: sorted((i.path, i.type) for i in fs.get_file_info(pafs.FileSelector(root, recursive=True)))  # noqa: E731
    before = listing()
    for source in (data, s3.uri("data", "*.parquet")):
        result = CliRunner().invoke(app, ["encode", source, "--model", str(tiny_model_dir), "--out",
                                          s3.uri("data", "v"), "--runner", "local"])
        assert result.exit_code == 2 and result.output.strip().splitlines() == [
            f"error: --out {s3.uri('data', 'v')}: overlaps the input {source}; write outputs outside the inputs' "
            "folders"], result.output
    assert listing() == before


def test_a_run_in_a_bucket_killed_mid_encode_resumes_shard_by_shard(s3, tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text(S3_SPEC.format(out=s3.uri("killed"), data=upload_collection(s3, tmp_path, (50, 40, 30)))
                    .replace(', "cluster", "sentiment"]', "]"))
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, "RAY_ADDRESS": ""}

    killed = vecjob("run", str(spec), cwd=work, env={**env, "VECJOB_KILL_AT": "part_written:2"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    published = storage.list_files(s3.uri("killed"))
    assert "model/manifest.json" in published and "vectors/manifest.json" not in published
    # The encoder actor wrote its vector shards straight to the bucket, not to the driver's mirror.
    written = [n for n in published if n.startswith("vectors/") and n.endswith(".parquet")]
    assert 2 <= len(written) <= 3 and len([n for n in published if n.startswith("vectors/_stats/")]) == len(written)
    # The killed run's lease stays until it expires (10 minutes); expire it as time would.
    lease = json.loads(storage.read_bytes(s3.uri("killed", storage.LEASE)))
    storage.write_bytes(s3.uri("killed", storage.LEASE), json.dumps({**lease, "expires": 0}).encode())

    rerun = vecjob("run", str(spec), cwd=work, env=env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stages = {r["stage"]: r for r in json.loads(storage.read_bytes(s3.uri("killed", "run_manifest.json")))["stages"]}
    assert stages["train"]["status"].startswith("skipped")  # the published model is kept
    assert stages["encode"]["metrics"]["shards_skipped_done"] == len(written)  # encoded before the kill
    assert stages["index"]["metrics"]["ntotal"] == 120


def test_each_command_reads_and_writes_a_bucket(s3, tmp_path, tiny_model_dir, monkeypatch):
    """encode → index → cluster → search, every input and output in the bucket (in-process runner)."""
    monkeypatch.chdir(tmp_path)
    data = upload_collection(s3, tmp_path, (40, 30))
    runner = CliRunner()
    steps = [
        ["encode", data, "--model", str(tiny_model_dir), "--out", s3.uri("v"), "--runner", "local", "--keep", "label"],
        ["index", s3.uri("v"), "--out", s3.uri("i"), "--factory", "Flat"],
        ["cluster", s3.uri("v"), "--k", "3", "--out", s3.uri("c"), "--data", data],
        ["sentiment", "train", s3.uri("v"), "--labels", data, "--out", s3.uri("s")],
        # A classifier in the bucket was read as a local path ("s3:/…: malformed URI"). Evaluated twice:
        # the report written beside it must leave it loadable (a file newer than its manifest is not).
        ["sentiment", "eval", s3.uri("s"), s3.uri("v"), "--labels", data],
        ["sentiment", "eval", s3.uri("s"), s3.uri("v"), "--labels", data],
        ["sentiment", "eval", s3.uri("s"), s3.uri("v"), "--labels", data, "--report", s3.uri("r")],
        ["sentiment", "predict", s3.uri("s"), s3.uri("v"), "--out", s3.uri("p")],
    ]
    for step in steps:
        result = runner.invoke(app, step)
        assert result.exit_code == 0, (step, result.output)
    published = storage.list_files(s3.uri())
    assert {"v/manifest.json", "i/manifest.json", "i/index.faiss", "c/manifest.json", "s/report.json",
            "s/confusion.png", "p/manifest.json", "r/report.json", "r/confusion.png"} <= set(published)
    hits = runner.invoke(app, ["search", s3.uri("i"), "--id", "doc-00007", "--json", "-k", "3"])
    assert hits.exit_code == 0 and json.loads(hits.output)["hits"][0]["id"] == "doc-00007", hits.output
    # The hits' texts are read from the files in the bucket that their vectors were encoded from.
    assert EncodedFrom(load_index_dir(s3.uri("i")))(["doc-00007", "doc-00045"]) == [s3.uri("data", "part-00.parquet"),
                                                                                   s3.uri("data", "part-01.parquet")]
    hits = runner.invoke(app, ["search", s3.uri("i"), "--id", "doc-00007", "--json", "-k", "3", "--data", data])
    assert hits.exit_code == 0 and all(h["snippet"] for h in json.loads(hits.output)["hits"]), hits.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging", "vecjob-cache"]  # nothing else written

    # An index of codes (SQ8) finds a stored vector in its vectors dir: the one in the bucket, which a
    # service on another machine reads too, not the local copy this one downloaded to build it.
    assert runner.invoke(app, ["index", s3.uri("v"), "--out", s3.uri("sq"), "--factory", "SQ8"]).exit_code == 0
    assert json.loads(storage.read_bytes(s3.uri("sq", "manifest.json")))["vectors_dir"] == s3.uri("v")
    shutil.rmtree(tmp_path / "vecjob-cache")
    hits = runner.invoke(app, ["search", s3.uri("sq"), "--id", "doc-00007", "--json", "-k", "3"])
    assert hits.exit_code == 0, hits.output
    # The codes cannot rank a document above its near-duplicates (one topic's synthetic texts share
    # their words), so the stored vector shows in the hits' topic: doc-00007's own, scored as itself.
    topics = dict(zip([f"doc-{i:05d}" for i in range(70)], synthetic_texts(70)[1]))
    found = json.loads(hits.output)["hits"]
    assert {topics[h["id"]] for h in found} == {topics["doc-00007"]} and found[0]["score"] > 0.99, hits.output
    assert [p.name for p in (tmp_path / "vecjob-cache").rglob("*.parquet")] == ["ids.parquet"]  # the index's only

    # A refusal of a folder read from the bucket names its URI, not the cache folder it was downloaded
    # to (the line named ~/.cache/vecjob/published/<hash>, a folder the user never wrote).
    for step, line in [
        (["search", s3.uri("i"), "--id", "no-such-doc"], f"error: {s3.uri('i')}: no document with id 'no-such-doc'"),
        (["index", s3.uri("i"), "--out", s3.uri("i2")], f"error: {s3.uri('i')}: a vecjob index dir, where a vecjob "
                                                        "vectors dir belongs"),
    ]:
        refused = runner.invoke(app, step)
        assert refused.exit_code == 2 and refused.output.strip().splitlines()[-1].startswith(line), refused.output
    # A vectors dir given as an index or a classifier was downloaded whole (and leased by eval) to be refused.
    shutil.rmtree(tmp_path / "vecjob-cache")
    for command, belongs in ((["search", s3.uri("v"), "--id", "doc-00007"], "index"),
                             (["sentiment", "eval", s3.uri("v"), s3.uri("v"), "--labels", data], "classifier"),
                             (["sentiment", "predict", s3.uri("v"), s3.uri("v"), "--out", s3.uri("p2")], "classifier")):
        refused = runner.invoke(app, command)
        assert refused.exit_code == 2, refused.output
        assert f"error: {s3.uri('v')}: a vecjob vectors dir, where a vecjob {belongs} dir belongs" in refused.output
    assert not list((tmp_path / "vecjob-cache").rglob("*.parquet"))
    assert not [name for name in storage.list_files(s3.uri()) if name.startswith(("p2/", "v/.")) or "lease" in name]
