"""The CLI end to end on a real local Ray: train (Ray Train, 2 workers) → encode (Ray Data) → index → search."""

import json
import os
import re
import shutil
import signal
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import write_collection
from vecjob.cli import app
from vecjob.search import check_search_pair
from vecjob.vectors import VectorsDir, table_vectors

runner = CliRunner()
TINY = ["--dim", "16", "--hidden-dim", "24", "--max-vocab", "300", "--max-len", "16", "--epochs", "2",
        "--workers", "2", "--use-gpu", "no"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def pipeline(ray_session, collection, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    r = invoke("train", collection, "--out", root / "m", *TINY)
    assert r.exit_code == 0, r.output
    # A line per round reaches the driver's terminal, though the embedded Ray forwards no worker output.
    assert "train round 1/2: 1.00 epochs" in r.output and "train round 2/2: 2.00 epochs" in r.output
    # Each round's line stays whole in a log (not a terminal: rich would wrap at 80 columns).
    assert re.search(r"^train round 2/2: .*val loss .*tokens/s, ≤ [\d.]+ (s|min) left$", r.output, re.M), r.output
    assert not list((root / ".m.ray-train").glob("*.progress"))
    r = invoke("encode", collection, "--model", root / "m", "--out", root / "v", "--keep", "label")
    assert r.exit_code == 0, r.output
    assert "━" not in r.output, r.output  # a log gets progress lines, not a bar drawn once at its end
    r = invoke("index", root / "v", "--out", root / "i")
    assert r.exit_code == 0, r.output
    return root


@pytest.mark.parametrize("command", ["train", "encode", "index", "search", "serve", "run", "corpus"])
def test_every_command_has_help(command):
    r = invoke(command, "--help")
    assert r.exit_code == 0 and "Usage" in r.output


def test_top_level_help_lists_commands():
    r = invoke("--help")
    for command in ("train", "encode", "index", "search"):
        assert command in r.output


def test_version_is_the_package_s():
    from vecjob import __version__

    r = invoke("--version")
    assert r.exit_code == 0 and r.output.strip() == f"vecjob {__version__}"


def test_settings_of_a_stage_the_spec_does_not_run_are_pointed_out(tmp_path):
    # [cluster] and [sentiment] are read by their stages alone: set without them, they did nothing, silently.
    spec = tmp_path / "job.toml"
    spec.write_text('out = "run"\nstages = ["corpus"]\ncorpus = "bbc"\n[data]\npaths = ["{out}/data"]\n'
                    '[cluster]\nk = 4\n')
    r = invoke("run", spec)
    assert r.exit_code == 0 and "note: " in r.output, r.output
    assert "corpus: ran in" in r.output and "documents 2225, shards_written 3" in r.output, r.output  # not "-"
    assert f"{spec}: [cluster] set, but stages = [corpus] does not run it: add cluster to stages" in r.output
    spec.write_text(spec.read_text().replace("[cluster]\nk = 4\n", ""))
    r = invoke("run", spec)
    assert r.exit_code == 0 and "note: " not in r.output, r.output


def test_a_long_stage_of_a_run_prints_a_progress_line_at_most_every_interval(capsys):
    from vecjob.reporting import RowLines

    progress = RowLines("encode", every_s=0.0)
    progress.on_plan(1000, 5000)
    progress.on_rows(250)
    progress.on_rows(750)  # the last rows: the stage's own line follows
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"encode: 250 of 1,000 rows \(25%\), [\d,]+ rows/s, about [\d.]+ (s|min) left",
                                            lines[0]), lines
    quiet = RowLines("encode", every_s=3600.0)  # a stage shorter than the interval prints nothing
    quiet.on_plan(1000, 1000)
    quiet.on_rows(500)
    assert capsys.readouterr().err == ""


def test_the_train_summary_says_what_ended_training():
    from vecjob.cli.build import _stopped

    def manifest(stop_reason, budget=None, epochs=3.2):
        return {"stop_reason": stop_reason, "epochs_seen": epochs, **({"budget": budget} if budget else {})}

    assert _stopped(manifest("budget", "tokens")) == _stopped(manifest("budget")) == "token budget done"
    assert _stopped(manifest("budget", "epoch cap", 100.0)) == (
        "planned steps done (100 epochs: the cap of a small collection)")
    assert _stopped(manifest("budget", "epochs", 5.0)) == "planned epochs done"
    assert _stopped(manifest("patience", "epoch cap")) == "validation loss flat"
    assert _stopped(manifest("time")) == "max_minutes reached"


def test_tokens_trains_for_a_token_budget_in_place_of_the_specs_epochs(ray_session, collection, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text("[train]\nepochs = 7\n")
    flags = [*TINY[:TINY.index("--epochs")], *TINY[TINY.index("--epochs") + 2:]]
    r = invoke("train", collection, "--out", tmp_path / "both", "--config", spec, "--epochs", "2", "--tokens", "900")
    assert r.exit_code == 2 and r.output.strip() == (
        "error: --epochs and --tokens: give one of them (a number of epochs, or a token budget)"), r.output
    assert not (tmp_path / "both").exists()

    r = invoke("train", collection, "--out", tmp_path / "m", "--config", spec, "--tokens", "900", *flags)
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["config"]["train"]["epochs"] == "auto" and manifest["config"]["train"]["tokens"] == 900
    assert manifest["budget"] == "tokens" and manifest["epochs_seen"] < 1  # 900 tokens: part of one epoch
    assert "stopped          token budget done" in r.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_waits_for_a_stop_signal_and_gives_the_caller_its_handlers_back(sig, capsys):
    # `vecjob serve` in a Python process (a notebook, a test runner) left its own handlers installed:
    # Ctrl-C there no longer interrupted anything after the service had stopped.
    from vecjob.cli.query import wait_for_a_stop_signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threading.Timer(0.3, os.kill, (os.getpid(), sig)).start()
    wait_for_a_stop_signal("serving", poll_s=0.05)
    assert {s: signal.getsignal(s) for s in before} == before
    assert capsys.readouterr().err == "serving\n"


def test_model_dir_is_complete(pipeline):
    m = pipeline / "m"
    assert {p.name for p in m.iterdir()} == {"config.json", "vocab.tsv", "model.pt", "manifest.json", "curves.png"}
    manifest = json.loads((m / "manifest.json").read_text())
    assert manifest["workers"] == 2 and manifest["use_gpu"] is False
    assert len(manifest["history"]) == manifest["rounds_run"] >= 1
    assert 1 <= manifest["best_round"] <= manifest["rounds_run"]
    assert manifest["stop_reason"] in ("budget", "patience") and manifest["epochs_seen"] > 0
    assert manifest["budget"] == "epochs"  # the spec sets them
    assert not list(pipeline.glob(".m.ray-train/*")), "Ray Train scratch is removed after publishing"


def test_vectors_match_the_input_ids_and_are_not_degenerate(pipeline, collection):
    vdir = VectorsDir.open(pipeline / "v")
    table = vdir.read_all()
    source = pq.read_table(collection)
    assert sorted(table.column("id").to_pylist()) == sorted(source.column("id").to_pylist())
    vecs = table_vectors(table)
    assert np.isfinite(vecs).all() and vecs.std(axis=0).mean() > 1e-4
    assert len(np.unique(vecs.round(5), axis=0)) == len(vecs)
    assert vdir.manifest["runner"] == "ray" and vdir.manifest["counts"]["rows_out"] == 282


def test_ray_and_local_runners_give_the_same_vectors(pipeline, collection, tmp_path):
    r = invoke("encode", collection, "--model", pipeline / "m", "--out", tmp_path / "local", "--runner", "local",
               "--keep", "label")
    assert r.exit_code == 0, r.output
    for ray_path, local_path in zip(VectorsDir.open(pipeline / "v").shard_paths, VectorsDir.open(tmp_path / "local").shard_paths):
        assert ray_path.name == local_path.name  # same input, model and columns: the same generation
        # Ray's actors run one torch thread each and the local runner two: the same vectors up to
        # float32 rounding (the thread count changes the order of the sums inside the kernels).
        np.testing.assert_allclose(table_vectors(pq.read_table(ray_path)), table_vectors(pq.read_table(local_path)),
                                   rtol=0, atol=1e-6)


def test_the_encoders_arithmetic_is_chosen_and_recorded(pipeline, collection, tmp_path):
    from vecjob.encoder import cpu_runs_bf16_lstm, native_bf16

    assert VectorsDir.open(pipeline / "v").manifest["precision"] == ["bf16" if native_bf16() else "fp32"]
    r = invoke("encode", collection, "--model", pipeline / "m", "--out", tmp_path / "fp32", "--runner", "local",
               "--precision", "fp32")
    assert r.exit_code == 0, r.output
    manifest = VectorsDir.open(tmp_path / "fp32").manifest
    assert manifest["precision"] == ["fp32"] and {s["precision"] for s in manifest["shards"]} == {"fp32"}
    # Rounding apart, the vectors are the same: a change of precision alone encodes nothing again (where
    # this CPU runs bf16 at all: elsewhere it is refused, even with nothing to encode, as a later night's
    # new shards would be).
    r = invoke("encode", collection, "--model", pipeline / "m", "--out", tmp_path / "fp32", "--runner", "local",
               "--precision", "bf16")
    if cpu_runs_bf16_lstm():
        assert r.exit_code == 0 and VectorsDir.open(tmp_path / "fp32").manifest["counts"]["shards_encoded"] == 0
    else:
        assert r.exit_code == 2 and "cannot run the encoder's LSTM in bfloat16" in r.output, r.output
    assert VectorsDir.open(tmp_path / "fp32").manifest["precision"] == ["fp32"]
    r = invoke("encode", collection, "--model", pipeline / "m", "--out", tmp_path / "half", "--precision", "fp16")
    assert r.exit_code == 2 and "--precision" in r.output and not (tmp_path / "half").exists()


def test_search_by_id_returns_the_document_itself(pipeline, collection):
    r = invoke("search", pipeline / "i", "--id", "doc-00003", "-k", "5", "--json", "--data", collection)
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)["hits"]
    assert len(hits) == 5 and "doc-00003" in [h["id"] for h in hits]
    assert all(h["snippet"] for h in hits)


def test_search_by_text(pipeline):
    r = invoke("search", pipeline / "i", "--model", pipeline / "m", "--text", "goal team league", "--k", "3", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["hits"]) == 3


def test_a_text_query_without_model_is_encoded_by_the_model_the_index_records(pipeline, collection, tmp_path):
    r = invoke("search", pipeline / "i", "--text", "goal team league", "--k", "3", "--json")
    assert r.exit_code == 0, r.output
    given = invoke("search", pipeline / "i", "--model", pipeline / "m", "--text", "goal team league", "--k", "3",
                   "--json")
    assert json.loads(r.stdout)["hits"] == json.loads(given.stdout)["hits"]
    # The model moved since: the record names nothing, and the line says so and what to do.
    shutil.copytree(pipeline / "m", tmp_path / "m")
    for step in (["encode", collection, "--model", tmp_path / "m", "--out", tmp_path / "v", "--runner", "local"],
                 ["index", tmp_path / "v", "--out", tmp_path / "i"]):
        assert invoke(*step).exit_code == 0
    (tmp_path / "m").rename(tmp_path / "moved")
    r = invoke("search", tmp_path / "i", "--text", "goal team league")
    assert r.exit_code == 2 and f"the index's model: {tmp_path / 'm'}: model dir not found (give --model)" in r.output
    # `vecjob serve` starts all the same, answering id and vector queries, and says why not text ones.
    assert check_search_pair(pipeline / "i", None) == (str(pipeline / "m"), "")
    model, why = check_search_pair(tmp_path / "i", None)
    assert model is None and why.endswith("model dir not found (give --model)")
    assert invoke("search", tmp_path / "i", "--model", tmp_path / "moved", "--text", "goal team league").exit_code == 0
    # An index made before vecjob recorded its model.
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    del manifest["model_dir"]
    (tmp_path / "i" / "manifest.json").write_text(json.dumps(manifest))
    r = invoke("search", tmp_path / "i", "--text", "goal team league")
    assert r.exit_code == 2 and "--text needs --model to encode the query: this index does not record its model" \
        in r.output


def test_a_text_query_of_unknown_words_only_is_refused(pipeline):
    # Every token reads as <unk>: the vector is the same for any such text, and it answered with hits
    # scored as high as a real query's.
    r = invoke("search", pipeline / "i", "--model", pipeline / "m", "--text", "zzqx qqzv")
    assert r.exit_code == 2 and "--text 'zzqx qqzv': no word of it is in the model's vocabulary" in r.output


@pytest.mark.parametrize("command, flag", [
    (["search", "{i}", "--model", "{m}", "--text", "goal \udcff team"], "--text 'goal \\udcff team'"),
    (["search", "{i}", "--id", "doc-\udcff"], "--id 'doc-\\udcff'"),
    (["encode", "{tmp}/x\udcff.parquet", "--model", "{m}", "--out", "{tmp}/v"], "DATA '{tmp}/x\\udcff.parquet'"),
    (["index", "{tmp}/v", "--out", "{tmp}/i\udcff"], "--out '{tmp}/i\\udcff'"),
])
def test_an_argument_of_bytes_that_are_not_utf8_is_refused_in_one_line_naming_its_flag(pipeline, tmp_path, command,
                                                                                       flag):
    # Python hands such argv bytes (a file name in another encoding) over as half surrogate pairs
    # ("\\udcff"), which no encoding writes: pyarrow, Ray and the tokeniser raised UnicodeEncodeError
    # and the command ended in a traceback.
    where = {"i": pipeline / "i", "m": pipeline / "m", "tmp": tmp_path}
    r = invoke(*[arg.format(**where) for arg in command])
    assert r.exit_code == 2 and f"{flag.format(**where)}: not valid Unicode: character" in r.output, r.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command, flag", [
    (["corpus", "bbc", "--out", ""], "--out"),
    (["encode", "", "--model", "{m}", "--out", "{tmp}/v", "--runner", "local"], "DATA"),
    (["encode", "{data}", "--model", "{m}", "--out", "", "--runner", "local"], "--out"),
    (["cluster", "{p}/v", "--k", "2", "--out", "{tmp}/c", "--data", ""], "--data"),
    (["search", "", "--id", "doc-00003"], "INDEX_DIR"),
])
def test_an_empty_argument_is_refused_naming_its_flag_not_read_as_the_current_folder(
        pipeline, collection, tmp_path, monkeypatch, command, flag):
    # An unset shell variable (`--out "$RUN_DIR"`) is an empty argument, which the file system reads
    # as the current folder: `corpus --out ""` wrote the corpus into it, `encode ""` read its Parquet.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    where = {"p": pipeline, "m": pipeline / "m", "tmp": tmp_path, "data": collection}
    r = invoke(*[arg.format(**where) for arg in command])
    assert r.exit_code == 2 and r.output.strip().splitlines()[-1] == f"error: {flag} is empty", r.output
    assert [p.name for p in tmp_path.iterdir()] == ["cwd"] and not list(cwd.iterdir())


def test_search_with_a_different_model_is_refused(pipeline, tiny_model_dir):
    r = invoke("search", pipeline / "i", "--model", tiny_model_dir, "--text", "goal")
    assert r.exit_code == 2 and "did not make the index's vectors" in r.output


def test_bad_input_gives_one_line_and_exit_2(ray_session, pipeline, tmp_path):
    write_collection(tmp_path / "in", [5])
    (tmp_path / "in" / "zz.parquet").write_text("not parquet")
    r = invoke("encode", tmp_path / "in", "--model", pipeline / "m", "--out", tmp_path / "v")
    assert r.exit_code == 2
    assert "zz.parquet: not a readable Parquet file" in r.output
    r = invoke("encode", tmp_path / "in" / "part-00.parquet", "--model", pipeline / "m", "--out", tmp_path / "v",
               "--text-col", "body")
    assert r.exit_code == 2 and "missing column 'body'" in r.output
