"""Hostile inputs through the CLI: each is refused with one line naming the file, flag or value and
exit code 2, leaving nothing behind, or works as documented."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import blobs, make_vectors_dir, write_collection
from vecjob.cli import app
from vecjob.config import DataConfig, IndexConfig, ModelConfig, SentimentConfig, TokenizerConfig, TrainConfig
from vecjob.errors import InputError
from vecjob.index import index_collection
from vecjob.outputs import output_lock
from vecjob.sentiment import train_classifier

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(result, *fragments: str) -> str:
    """Exit 2 with exactly one line, starting 'error:', holding every fragment (no empty line before it:
    a progress bar never shown ended its line all the same)."""
    lines = result.output.rstrip("\n").split("\n")
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def listing(folder: Path) -> list[str]:
    """Everything under a folder, hidden files included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def vectors(tmp_path) -> Path:
    return make_vectors_dir(tmp_path / "v", blobs(60, 8, 3)[0], [f"d{i}" for i in range(60)])


# ---- bad input in a later shard: refused before the first write -------------------------------


def _spoil(path: Path, problem: str) -> None:
    table = pq.read_table(path)
    if problem in ("null id", "id twice"):
        ids = table.column("id").to_pylist()
        first = None if problem == "null id" else ids[-1]
        table = table.set_column(0, "id", pa.array([first] + ids[1:], pa.string()))
    else:
        texts = table.column("text").to_pylist()
        table = table.set_column(1, "text", pa.array(texts[:5] + ["   "] + texts[6:]))
    pq.write_table(table, path)


@pytest.mark.parametrize("runner", ["local", "ray"])
@pytest.mark.parametrize("problem, flags, message", [
    ("null id", [], "1 row(s) with a null id"),
    ("id twice", [], "2 rows share an id in column 'id' (e.g. 'doc-00089')"),
    ("blank text", ["--strict"], "null or empty text(s) (first id 'doc-00065') and --strict is set"),
])
def test_bad_input_in_the_last_shard_is_refused_before_the_first_is_written(request, tiny_model_dir, tmp_path, problem,
                                                                            flags, message, runner):
    if runner == "ray":
        request.getfixturevalue("ray_session")
    data = tmp_path / "in"
    write_collection(data, [30, 30, 30])
    _spoil(data / "part-02.parquet", problem)
    before = listing(tmp_path)
    r = invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v", "--runner", runner, *flags)
    refused(r, "part-02.parquet", message)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_a_corrupt_page_found_by_an_encoder_names_its_shard(request, tiny_model_dir, tmp_path, runner):
    """The footer reads, a data page does not: only the encoder that reads the page finds out. On Ray
    its InputError came back wrapped by Ray Data, and the line was Ray's advice on retries."""
    if runner == "ray":
        request.getfixturevalue("ray_session")
        import ray

        free_cpus = ray.available_resources().get("CPU", 0)
    data = tmp_path / "in"
    write_collection(data, [30, 30])
    shard = data / "part-01.parquet"
    pq.write_table(pq.read_table(shard), shard, compression="zstd")
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3: len(raw) // 3 + 64] = bytes(64)  # inside the first column's pages, clear of the footer
    shard.write_bytes(bytes(raw))
    r = invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v", "--runner", runner)
    last = r.output.strip().splitlines()[-1]  # after the progress bar of the shard that did encode
    assert r.exit_code == 2 and last.startswith("error: ") and "part-01.parquet: cannot read row groups [0]" in last, \
        r.output
    if runner == "ray":  # the failed run's actors give their CPUs back: they held them while a log handler
        # kept Ray Data's record of the error, and a training started next in the same Ray waited past its timeout
        for _ in range(50):
            if ray.available_resources().get("CPU", 0) >= free_cpus:
                break
            time.sleep(0.2)
        assert ray.available_resources().get("CPU", 0) >= free_cpus, ray.available_resources()


def _not_utf8(path: Path) -> None:
    """Row 5's text with a byte UTF-8 never holds, as a writer that skips the check leaves it
    (pyarrow's unsafe cast): a pyarrow read takes it without a word."""
    table = pq.read_table(path)
    texts = [t.encode() for t in table.column("text").to_pylist()]
    texts[5] = b"caf\xe9 " + texts[5]
    pq.write_table(table.set_column(1, "text", pa.array(texts, pa.binary()).cast(pa.string(), safe=False)), path)


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_texts_that_are_not_utf8_are_refused_by_encode_and_train_as_by_the_readers_by_id(request, tiny_model_dir,
                                                                                          tmp_path, runner):
    """The tokeniser cut such a text into fragments ("caf\\xe9" lost its word) while search, cluster and
    sentiment, which read the collection with polars, refused it: every reader now refuses alike."""
    if runner == "ray":
        request.getfixturevalue("ray_session")
    data = tmp_path / "in"
    write_collection(data, [30, 30])
    _not_utf8(data / "part-01.parquet")
    r = invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v", "--runner", runner)
    last = r.output.strip().splitlines()[-1]  # after the progress bar of the shard that did encode
    assert r.exit_code == 2 and last.startswith("error: ") and "part-01.parquet: column 'text' holds bytes that " \
        "are not UTF-8 (e.g. b'caf\\xe9 " in last and last.endswith("write it as UTF-8"), r.output
    if runner == "local":
        before = listing(tmp_path)
        refused(invoke("train", data, "--out", tmp_path / "m"), "part-01.parquet: column 'text'", "not UTF-8")
        assert listing(tmp_path) == before


def test_dictionary_encoded_and_string_view_columns_encode_as_their_values(tiny_model_dir, tmp_path):
    """pandas' category and polars' Categorical columns are written dictionary-encoded; pyarrow's
    string_view columns keep that type in the file (Arrow's take kernel has none for it: a traceback)."""
    plain = tmp_path / "plain"
    write_collection(plain, [40])
    table = pq.read_table(plain / "part-00.parquet")
    for name, recode in (("dict", lambda col: col.dictionary_encode()), ("view", lambda col: col.cast(pa.string_view()))):
        (tmp_path / name).mkdir()
        pq.write_table(table.set_column(0, "id", recode(table.column("id")))
                       .set_column(1, "text", recode(table.column("text"))), tmp_path / name / "part-00.parquet")
    for name in ("plain", "dict", "view"):
        r = invoke("encode", tmp_path / name, "--model", tiny_model_dir, "--out", tmp_path / f"v-{name}",
                   "--runner", "local")
        assert r.exit_code == 0, r.output
    from vecjob.vectors import VectorsDir

    a, *others = (pq.read_table(VectorsDir.open(tmp_path / f"v-{n}").shard_paths[0]) for n in ("plain", "dict", "view"))
    for b in others:
        assert b.column("id").type == pa.string() and b.column("id").to_pylist() == a.column("id").to_pylist()
        assert np.allclose(np.stack(b.column("vector").to_numpy(zero_copy_only=False)),
                           np.stack(a.column("vector").to_numpy(zero_copy_only=False)), atol=1e-6)


def test_a_shard_whose_text_column_holds_only_nulls_is_read_as_missing_texts(tiny_model_dir, tmp_path):
    """pandas writes a column of Nones as Arrow's null type: such a shard (a night with no text yet)
    was refused as "type null; expected string", where null texts of a string column are skipped; a
    kept column of Nones, as "--keep column mixes types across shards", beside the others' strings or
    integers."""
    data = tmp_path / "in"
    titled, untitled, empty = write_collection(data, [30, 10, 20])
    pq.write_table(pq.read_table(titled).append_column("title", pa.array(["a title"] * 30))
                   .append_column("year", pa.array([2026] * 30)), titled)
    pq.write_table(pq.read_table(untitled).append_column("title", pa.nulls(10)).append_column("year", pa.nulls(10)),
                   untitled)
    ids = pq.read_table(empty).column("id")
    pq.write_table(pa.table({"id": ids, "text": pa.nulls(len(ids)), "title": pa.nulls(len(ids)),
                             "year": pa.array([2025] * len(ids))}), empty)
    r = invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v", "--runner", "local",
               "--keep", "title", "--keep", "year")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "v" / "manifest.json").read_text())
    assert sorted((s["rows_out"], s["skipped_empty"]) for s in manifest["shards"]) == [(0, 20), (10, 0), (30, 0)]
    from vecjob.vectors import VectorsDir

    kept = VectorsDir.open(tmp_path / "v").read_all(["title", "year"])
    assert kept.column("title").to_pylist() == ["a title"] * 30 + [None] * 10
    assert kept.column("year").to_pylist() == [2026] * 30 + [None] * 10 and pa.types.is_integer(kept["year"].type)
    shards = list((tmp_path / "v").glob("*.parquet"))
    written = {c: {pq.read_schema(f).field(c).type for f in shards} for c in ("title", "year")}
    assert written == {"title": {pa.string()}, "year": {pa.int64()}}  # one type in every shard, as other readers need
    refused(invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v2", "--strict"),
            "part-02.parquet: 20 null or empty text(s)")
    from vecjob.trainer import InProcess, train_model

    train_model(DataConfig(paths=[str(data)]), tmp_path / "m", TokenizerConfig(min_count=1),
                ModelConfig(dim=16, embed_dim=16, hidden_dim=24), TrainConfig(epochs=1), InProcess())
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["counts"]["skipped_empty"] == 20


def test_a_kept_column_older_shards_lack_is_kept_as_nulls_there_and_one_no_shard_holds_is_refused(tiny_model_dir,
                                                                                                 tmp_path):
    """A collection that gains a column one night: keeping it refused the whole collection ("missing
    column 'stars'") until every older shard was rewritten."""
    from vecjob.config import JobSpec
    from vecjob.stages import check_data_columns
    from vecjob.vectors import VectorsDir

    data = tmp_path / "in"
    older, newer, newest = write_collection(data, [20, 30, 5])
    pq.write_table(pq.read_table(newer).append_column("stars", pa.array(range(30), pa.int32())), newer)
    pq.write_table(pq.read_table(newest).append_column("stars", pa.array(range(5), pa.int64())), newest)
    r = invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v", "--runner", "local",
               "--keep", "stars")
    assert r.exit_code == 0, r.output
    stars = VectorsDir.open(tmp_path / "v").read_all(["stars"]).column("stars")
    assert stars.to_pylist() == [None] * 20 + list(range(30)) + list(range(5))
    # One type in every vector shard (int32 and int64 promoted, as readers do): polars reads the folder whole
    assert {pq.read_schema(f).field("stars").type for f in (tmp_path / "v").glob("*.parquet")} == {pa.int64()}
    assert pl.read_parquet(tmp_path / "v" / "*.parquet")["stars"].null_count() == 20
    # A night whose shard holds the column's first values: the vectors written before, when no shard held a
    # type and the column was written as strings, are written again (the folder mixed string and int64)
    night = tmp_path / "night"
    night.mkdir()
    pq.write_table(pq.read_table(older).append_column("stars", pa.nulls(20)), night / older.name)
    for _ in range(2):
        assert invoke("encode", night, "--model", tiny_model_dir, "--out", tmp_path / "vn", "--runner", "local",
                      "--keep", "stars").exit_code == 0
        shutil.copy(newer, night / newer.name)
    manifest = json.loads((tmp_path / "vn" / "manifest.json").read_text())
    assert manifest["counts"]["shards_encoded"] == 2
    assert {pq.read_schema(f).field("stars").type for f in (tmp_path / "vn").glob("*.parquet")} == {pa.int32()}
    assert pl.read_parquet(tmp_path / "vn" / "*.parquet")["stars"].null_count() == 20
    check_data_columns(JobSpec(data={"paths": [str(data)]}, encode={"keep_columns": ["stars"]}))  # in the last shard
    with pytest.raises(InputError, match=r"part-00.parquet: missing column 'starz' \(columns: id, text"):
        check_data_columns(JobSpec(data={"paths": [str(data)]}, encode={"keep_columns": ["starz"]}))
    refused(invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v2", "--runner", "local",
                   "--keep", "starz"), "part-00.parquet: missing column 'starz'")
    assert not (tmp_path / "v2").exists()


def test_training_refuses_a_null_id_before_anything_starts(tmp_path):
    from vecjob.trainer import train_model

    data = tmp_path / "in"
    write_collection(data, [30, 30])
    _spoil(data / "part-01.parquet", "null id")
    before = listing(tmp_path)
    with pytest.raises(InputError, match="part-01.parquet: 1 row.s. with a null id"):
        train_model(DataConfig(paths=[str(data)]), tmp_path / "m", TokenizerConfig(), ModelConfig(), TrainConfig())
    assert listing(tmp_path) == before


def test_an_id_quoted_in_an_error_is_cut_short_and_the_id_column_cannot_be_the_text_column(tmp_path):
    """A whole article used as the id (id_col = text_col, or a scraped collection's ids) once filled the
    one line with the article; the line now quotes 40 characters of it."""
    data = tmp_path / "in"
    data.mkdir()
    article = "A long article that someone used as its own id. " * 20
    pq.write_table(pa.table({"id": [article, article, "b"], "text": ["one two", "three four", "five six"]}),
                   data / "part-00.parquet")
    line = refused(invoke("train", data, "--out", tmp_path / "m"), "2 rows share an id in column 'id'")
    assert "(e.g. 'A long article that someone used as it…)" in line and len(line) < 250
    refused(invoke("train", data, "--id-col", "text", "--out", tmp_path / "m"),
            "id_col and text_col are both 'text'")
    assert not (tmp_path / "m").exists()


def test_training_on_texts_without_a_repeated_word_is_one_line_naming_the_data(tmp_path):
    from vecjob.trainer import train_model

    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["   ", None, "one lonely sentence"]}), data / "x.parquet")
    before = listing(tmp_path)
    with pytest.raises(InputError, match=r"x.parquet: nothing to train on: no word occurs at least 2 times "
                                         r"\(tokenizer.min_count\) among the 3 distinct words"):
        train_model(DataConfig(paths=[str(data)]), tmp_path / "m", TokenizerConfig(), ModelConfig(), TrainConfig())
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["   ", None, "\u200b"]}), data / "x.parquet")
    with pytest.raises(InputError, match=r"x.parquet: nothing to train on: its texts hold no words$"):  # not "0 words"
        train_model(DataConfig(paths=[str(data)]), tmp_path / "m", TokenizerConfig(), ModelConfig(), TrainConfig())
    assert listing(tmp_path) == before


# ---- locks --------------------------------------------------------------------------------------


def test_train_and_run_refuse_an_output_another_run_holds(collection, tmp_path):
    with output_lock(tmp_path / "m"):
        refused(invoke("train", collection, "--out", tmp_path / "m"), "another vecjob run is writing here")
    spec = tmp_path / "job.toml"
    spec.write_text(f'out = "out"\n[data]\npaths = ["{collection}"]\n')
    with output_lock(tmp_path / "out"):
        refused(invoke("run", spec), "another vecjob run is writing here")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml"]  # locks are removed on release


# ---- locations: URIs, overlaps, files, unwritable folders ---------------------------------------


@pytest.mark.parametrize("uri", ["gs://b/x", "s3:/x", "s3://Bucket_Name/x", "ftp://host/x", "s3://bucket//x",
                                 "s3://bucket/a/../x", "gs://bucket/./x"])
def test_unusable_uris_are_refused_and_nothing_is_created(tiny_model_dir, collection, vectors, tmp_path, uri,
                                                         monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    commands = [
        ["train", collection, "--out", uri],
        ["encode", collection, "--model", tiny_model_dir, "--out", uri, "--runner", "local"],
        ["encode", uri, "--model", tiny_model_dir, "--out", "v2", "--runner", "local"],
        ["encode", collection, "--model", uri, "--out", "v2", "--runner", "local"],
        ["index", vectors, "--out", uri],
        ["index", uri, "--out", "i"],
        ["cluster", vectors, "--k", "2", "--out", uri],
        ["sentiment", "predict", "clf", vectors, "--out", uri],
        ["search", uri, "--id", "d1"],
    ]
    for command in commands:
        line = refused(invoke(*command), uri)
        assert "malformed URI" in line or "unsupported scheme" in line, line
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("where", ["same", "inside"])
def test_an_output_overlapping_an_input_is_refused(tiny_model_dir, tmp_path, where, vectors):
    data = tmp_path / "in"
    write_collection(data, [20])
    out = data if where == "same" else data / "vectors"
    before = listing(tmp_path)
    refused(invoke("encode", data, "--model", tiny_model_dir, "--out", out, "--runner", "local"), "overlaps the input")
    refused(invoke("train", data, "--out", data / "model" if where == "inside" else data), "overlaps the input")
    refused(invoke("index", vectors, "--out", vectors / "index" if where == "inside" else vectors), "overlaps the input")
    assert listing(tmp_path) == before


def test_output_locations_that_cannot_be_used_are_one_line(tiny_model_dir, collection, vectors, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    refused(invoke("index", vectors, "--out", afile), "exists and is not a directory")
    refused(invoke("cluster", vectors, "--k", "2", "--out", afile), "exists and is not a directory")
    refused(invoke("encode", collection, "--model", tiny_model_dir, "--out", afile, "--runner", "local"),
            "exists and is not a directory")
    refused(invoke("index", vectors, "--out", afile / "sub"), "is a file, not a directory")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    refused(invoke("index", vectors, "--out", theirs), "vecjob did not write")
    refused(invoke("encode", collection, "--model", tiny_model_dir, "--out", theirs, "--runner", "local"),
            "vecjob did not write")
    assert listing(theirs) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "theirs", "v"]


def test_an_output_holding_another_kind_of_vecjob_output_is_refused_and_kept(tiny_model_dir, collection, vectors,
                                                                             tmp_path):
    """A model, vectors or index dir given as another command's --out would be replaced whole or mixed
    with the other command's files; each is refused and left as it was."""
    index = tmp_path / "i"
    index_collection(vectors, index, IndexConfig())
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    held = {folder: {p.name: p.read_bytes() for p in folder.iterdir()} for folder in (index, model, vectors)}
    refused(invoke("encode", collection, "--model", model, "--out", index, "--runner", "local"),
            f"--out {index}: holds a 'vecjob.index' output, not a 'vecjob.vectors' one")
    refused(invoke("index", vectors, "--out", model), "holds a 'vecjob.model' output, not a 'vecjob.index' one")
    refused(invoke("cluster", vectors, "--k", "2", "--out", index), "holds a 'vecjob.index' output")
    refused(invoke("train", collection, "--out", vectors), "holds a 'vecjob.vectors' output")
    refused(invoke("corpus", "bbc", "--out", model), "holds a 'vecjob.model' output")
    spec = tmp_path / "job.toml"
    spec.write_text(f'out = "{index}"\n[data]\npaths = ["{collection}"]\n')
    refused(invoke("run", spec), "holds a 'vecjob.index' output")
    assert {folder: {p.name: p.read_bytes() for p in folder.iterdir()} for folder in held} == held


def test_an_unwritable_output_folder_is_one_line(vectors, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    # Root ignores permission bits; an immutable folder refuses even root.
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        refused(invoke("index", vectors, "--out", locked / "i"), "cannot write in", "permission denied")
        assert list(locked.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)


# ---- values of flags ----------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    (["train", "{data}", "--out", "{out}", "--epochs", "abc"],
     ["'--epochs'", "valid integer", "(vecjob train --help)"]),
    (["train", "{data}", "--out", "{out}", "--tokens", "3e6"], ["'--tokens'", "valid integer"]),
    (["search", "{out}", "--id", "d1", "--k", "many"], ["'-k' / '--k'", "(vecjob search --help)"]),
    (["train", "{data}", "--out", "{out}", "--bogus"], ["No such option: --bogus"]),
    (["encode", "{data}", "--model", "{out}"], ["Missing option '--out'", "(vecjob encode --help)"]),
    (["train"], ["Missing argument"]),
    (["--bogus"], ["No such option: --bogus", "(vecjob --help)"]),
    (["embed", "{data}"], ["No such command 'embed'"]),
    (["sentiment", "fit"], ["No such command 'fit'", "(vecjob sentiment --help)"]),
])
def test_a_command_line_that_cannot_be_parsed_is_one_line_naming_the_flag(tmp_path, args, fragments):
    # Click's own refusals (an unknown flag or command, a value of the wrong type, a missing argument)
    # were a usage text and a box of six lines; every other refusal is one line.
    (tmp_path / "data").mkdir()
    got = invoke(*[a.format(data=tmp_path / "data", out=tmp_path / "out") for a in args])
    refused(got, *fragments)
    assert not (tmp_path / "out").exists()


def test_search_k_below_one_is_one_line(vectors, tmp_path):
    index_collection(vectors, tmp_path / "i", IndexConfig())
    for k in ("0", "-3"):
        refused(invoke("search", tmp_path / "i", "--id", "d1", "-k", k), f"-k must be at least 1, not {k}")
    assert invoke("search", tmp_path / "i", "--id", "d1", "-k", "3", "--json").exit_code == 0


def test_an_id_of_digits_int_refuses_is_looked_up_as_a_string(tmp_path):
    # "²" is a digit to str.isdigit() and not to int(): a lookup in an index of integer ids raised.
    vecs, _ = blobs(30, 8, 3)
    make_vectors_dir(tmp_path / "v", vecs, list(range(30)))
    index_collection(tmp_path / "v", tmp_path / "i", IndexConfig())
    refused(invoke("search", tmp_path / "i", "--id", "-\u00b2"), "no document with id '-\u00b2'")
    assert invoke("search", tmp_path / "i", "--id", "7", "--json").exit_code == 0


def test_cluster_k_edge_values_are_one_line_and_leave_nothing(vectors, tmp_path):
    refused(invoke("cluster", vectors, "--k", "0", "--out", tmp_path / "c"), "--k must be at least 2")
    refused(invoke("cluster", vectors, "--k", "60", "--out", tmp_path / "c"), "--k 60 needs more vectors than clusters")
    refused(invoke("cluster", vectors, "--k", "-3", "--out", tmp_path / "c"), "'-3'")
    refused(invoke("cluster", vectors, "--k", "\u00b2", "--out", tmp_path / "c"), "'\u00b2'")  # a digit int() refuses
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


def test_a_model_dir_whose_config_disagrees_with_its_weights_names_the_field(tiny_model_dir, collection, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["model"]["hidden_dim"] = 32
    (model / "config.json").write_text(json.dumps(config))
    line = refused(invoke("encode", collection, "--model", model, "--out", tmp_path / "v", "--runner", "local"),
                   "config.json disagrees with model.pt", "hidden_dim=32")
    assert len(line) < 400
    assert not (tmp_path / "v" / "manifest.json").exists()


def test_keep_columns_are_checked_as_columns_not_as_ids(tiny_model_dir, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["goal team", "chip robot"], "score": [0.5, 1.5]}),
                   data / "a.parquet")
    r = invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v", "--keep", "score", "--runner", "local")
    assert r.exit_code == 0, r.output
    shard = next((tmp_path / "v").glob("*.parquet"))
    assert pq.read_table(shard).column("score").to_pylist() == [0.5, 1.5]
    refused(invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v2", "--keep", "nope",
                   "--runner", "local"), "a.parquet: missing column 'nope'")
    refused(invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v2", "--keep", "id",
                   "--runner", "local"), "--keep: 'id': every vector shard has a column of that name already")
    refused(invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v2", "--runner", "foo"),
            "--runner 'foo'")
    assert not (tmp_path / "v2").exists()
    assert np.isfinite(pq.read_table(shard).column("vector").combine_chunks().values.to_numpy()).all()


@pytest.mark.parametrize("tamper", ["head too small for its tails", "head beyond the vocabulary",
                                    "a tail missing between others"])
def test_a_model_whose_output_layer_cannot_be_rebuilt_is_one_line(tiny_model_dir, collection, tmp_path, tamper):
    import torch

    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    state = torch.load(model / "model.pt", weights_only=True)
    if tamper == "head too small for its tails":
        state["output.head.weight"] = state["output.head.weight"][:1]
    elif tamper == "head beyond the vocabulary":
        state["output.head.weight"] = state["output.head.weight"].repeat(1000, 1)
    else:
        state["output.tail.5.1.weight"] = state.pop("output.tail.0.1.weight")
        state["output.tail.6.1.weight"] = state["output.tail.5.1.weight"]
    torch.save(state, model / "model.pt")
    line = refused(invoke("encode", collection, "--model", model, "--out", tmp_path / "v", "--runner", "local"),
                   "model.pt")
    assert len(line) < 400
    assert not (tmp_path / "v" / "manifest.json").exists()


def test_a_model_trained_with_a_removed_setting_is_refused_with_retrain_and_a_night_retrains_it(tiny_model_dir,
                                                                                                 collection, tmp_path):
    from vecjob.config import DataConfig, JobSpec
    from vecjob.lifecycle import decide

    model = tmp_path / "run" / "model"
    shutil.copytree(tiny_model_dir, model)
    for name in ("config.json", "manifest.json"):  # a full-softmax model, from before the setting went
        saved = json.loads((model / name).read_text())
        (saved["config"] if name == "manifest.json" else saved)["model"]["output_layer"] = "full"
        (model / name).write_text(json.dumps(saved))
    line = refused(invoke("encode", collection, "--model", model, "--out", tmp_path / "v", "--runner", "local"),
                   "config.json", "output_layer = 'full' is no longer supported", "retrain the model")
    assert "remove the key" not in line
    night = decide(JobSpec(data=DataConfig(paths=[str(collection)])), model, tmp_path / "run" / "vectors", False)
    assert night["train"] and "output_layer = 'full'" in night["why"] and night["target"].name == ".model-next"


def test_texts_or_labels_that_cannot_join_the_vectors_are_one_line(tmp_path):
    ids = [f"doc-{i}" for i in range(60)]
    vectors = make_vectors_dir(tmp_path / "v", blobs(60, 8, 3)[0], ids)
    index_collection(vectors, tmp_path / "index", IndexConfig(factory="Flat"))
    for name, table in (("ints", pa.table({"id": list(range(60)), "text": ["a"] * 60, "label": ["x", "y"] * 30})),
                        ("untitled", pa.table({"id": ids, "label": ["x", "y"] * 30})),
                        ("tagged", pa.table({"id": ids, "text": ["a"] * 60, "tags": [["x"], ["y", "z"]] * 30})),
                        ("numbers", pa.table({"id": ids, "text": list(range(60))})),
                        ("untexted", pa.table({"id": ids, "text": pa.nulls(60)}))):
        (tmp_path / name).mkdir()
        pq.write_table(table, tmp_path / name / "part.parquet")
    # Texts of another type than strings were a traceback (polars' str.to_lowercase, or the snippet's split)
    for args in (["search", tmp_path / "index", "--id", "doc-1", "--data"], ["cluster", vectors, "--k", "3", "--out",
                                                                             tmp_path / "c", "--data"]):
        refused(invoke(*args, tmp_path / "numbers"), "numbers: text column 'text' holds Int64; expected strings")
    r = invoke("cluster", vectors, "--k", "3", "--out", tmp_path / "c0", "--data", tmp_path / "untexted")
    assert r.exit_code == 0 and "silhouette" in r.output, r.output  # a column of nulls only: no texts, no terms
    wrong_type, no_text = "id column 'id' is Int64, the vectors' ids are String", "missing column 'text'"
    listed = "label column 'tags' holds List(String); a label is one value"
    refused(invoke("cluster", vectors, "--out", tmp_path / "c", "--k", "3", "--data", tmp_path / "tagged",
                   "--label-col", "tags"), "tagged", listed)
    refused(invoke("sentiment", "train", vectors, "--labels", tmp_path / "tagged", "--label-col", "tags",
                   "--out", tmp_path / "s"), "tagged", listed)
    for args, fragment in ((["search", tmp_path / "index", "--id", "doc-1", "--data", tmp_path / "ints"], wrong_type),
                           (["search", tmp_path / "index", "--id", "doc-1", "--data", tmp_path / "untitled"], no_text),
                           (["cluster", vectors, "--out", tmp_path / "c", "--k", "3", "--data", tmp_path / "ints"],
                            wrong_type),
                           (["sentiment", "train", vectors, "--labels", tmp_path / "ints", "--out", tmp_path / "s"],
                            wrong_type)):
        refused(invoke(*args), "part.parquet", fragment)
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists()


def test_an_unusable_faiss_factory_is_one_line_without_faiss_internals(tmp_path):
    vectors = make_vectors_dir(tmp_path / "v", blobs(40, 8, 2)[0], [f"d{i}" for i in range(40)])
    line = refused(invoke("index", vectors, "--out", tmp_path / "i", "--factory", "Bogus12"),
                   "FAISS factory 'Bogus12' is not valid for dim 8: could not parse index string Bogus12")
    assert "faiss::" not in line and ".cpp" not in line
    refused(invoke("index", vectors, "--out", tmp_path / "i", "--factory", "IVF4096,Flat"),
            "'IVF4096,Flat' needs more training vectors than the 40 available")
    assert not (tmp_path / "i").exists()


@pytest.mark.parametrize("factory, dim, problem", [  # which signal, or which FAISS check, depends on the CPU
    ("HNSW1", 8, "': building it on 1000 random vectors of dim 8 crashed FAISS (SIG"),
    ("HNSW0", 128, "': building it on 1000 random vectors of dim 128 crashed FAISS (SIG"),
    ("PQ4x0", 8, "'"),  # AVX2: "cannot be built: 'ksub % 8 == 0' failed"
])
def test_a_faiss_factory_that_would_crash_faiss_is_one_line_in_index_and_before_a_run(tmp_path, collection, factory,
                                                                                   dim, problem):
    """FAISS parses these but crashes building them (or, polysemous training aside, fails only once
    searched): refused from a child process's trial build, by `vecjob index` and by `vecjob run`
    before the run trains anything."""
    vectors = make_vectors_dir(tmp_path / "v", blobs(40, dim, 2)[0], [f"d{i}" for i in range(40)])
    refused(invoke("index", vectors, "--out", tmp_path / "i", "--factory", factory), f"FAISS factory '{factory}{problem}")
    spec = tmp_path / "job.toml"
    spec.write_text(f'out = "run"\n[data]\npaths = ["{collection}"]\n[model]\ndim = {dim}\n'
                    f'[index]\nfactory = "{factory}"\n')
    refused(invoke("run", spec), f"index.factory: FAISS factory '{factory}'")  # the spec's key, as run reads it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml", "v"]


def test_a_stage_whose_input_no_stage_makes_is_refused_before_the_run_dir_exists(tmp_path, collection):
    spec = tmp_path / "job.toml"
    spec.write_text(f'out = "run"\nstages = ["index", "cluster"]\n[data]\npaths = ["{collection}"]\n')
    refused(invoke("run", spec), 'stages: index reads what the encode stage writes', 'add "encode" to stages')
    assert not (tmp_path / "run").exists()


def test_a_run_dir_inside_its_input_folder_is_refused_before_it_exists(tmp_path, collection):
    # Its stage folders would be read as input on the next night; the run dir was made (empty) first.
    data = tmp_path / "docs"
    shutil.copytree(collection, data)
    spec = tmp_path / "job.toml"
    for out in (data / "run", data):
        spec.write_text(f'out = "{out}"\n[data]\npaths = ["{data}"]\n')
        refused(invoke("run", spec), f"out {out / 'model'}: overlaps the input {data}")
        assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in Path(collection).iterdir())


def test_a_mistyped_data_path_or_column_in_a_job_spec_is_refused_before_the_run_dir_exists(tmp_path, collection):
    spec = tmp_path / "job.toml"
    for data, line in ((f'paths = ["{collection}"]\nid_col = "ident"', "missing column 'ident' (columns: id, text"),
                       (f'paths = ["{collection}"]\ntext_col = "body"', "missing column 'body'"),
                       (f'paths = ["{tmp_path / "nowhere"}"]', "nowhere: no such file or directory")):
        spec.write_text(f'out = "run"\n[data]\n{data}\n')
        refused(invoke("run", spec), line)
        assert not (tmp_path / "run").exists()
    # The labels' column too: it was refused only once training and encoding were done.
    spec.write_text(f'out = "run"\nstages = ["train", "encode", "sentiment"]\n[data]\npaths = ["{collection}"]\n'
                    '[sentiment]\nlabel_col = "stars"\n')
    refused(invoke("run", spec), "missing column 'stars' (columns: id, text")
    assert not (tmp_path / "run").exists()
    # The kept columns too (they were refused after training) and the corpus (after the run dir was made).
    for extra, line in (('[encode]\nkeep_columns = ["stars"]', "missing column 'stars' (columns: id, text"),
                        ('[encode]\nkeep_columns = ["id"]', "encode.keep_columns: 'id': every vector shard has"),
                        ('[encode]\nkeep_columns = ["text", "text"]', "encode.keep_columns: a column named twice")):
        spec.write_text(f'out = "run"\nstages = ["train", "encode"]\n[data]\npaths = ["{collection}"]\n{extra}\n')
        refused(invoke("run", spec), line)
        assert not (tmp_path / "run").exists()
    spec.write_text('out = "run"\ncorpus = "bbcx"\nstages = ["corpus", "train"]\n[data]\npaths = ["{out}/data"]\n')
    refused(invoke("run", spec), "corpus: 'bbcx' is not a corpus vecjob ships (available: bbc)")
    assert not (tmp_path / "run").exists()
    spec.write_text('out = "run"\ncorpus = "bbc"\nstages = ["corpus", "train"]\n'
                    '[data]\npaths = ["{out}/data/*.parquet"]\n')
    refused(invoke("run", spec), "data.paths: the corpus stage writes into the first path, a folder, and", "is a glob")
    assert not (tmp_path / "run").exists()  # it wrote the corpus into a folder named "*.parquet"


def test_more_workers_than_the_local_ray_holds_is_one_line_not_a_wait_for_ever(ray_session, tiny_model_dir,
                                                                                 collection, vectors, tmp_path):
    # The local Ray never grows: Ray Train, Ray Data and Serve would wait for the CPUs without a word
    # (Ray Data gives up after encode's 300 s wait for its actors; Ray Train and Serve never do).
    import socket

    from vecjob.errors import ConfigError
    from vecjob.ray_train import resolve_workers

    with pytest.raises(ConfigError, match=r"train.workers \(--workers\) = 3: 3 × 1 CPU .* 2 CPUs \(at most 2 fit\)"):
        resolve_workers(TrainConfig(workers=3))
    assert resolve_workers(TrainConfig(workers=2, use_gpu="no")) == (2, False)
    refused(invoke("encode", collection, "--model", tiny_model_dir, "--out", tmp_path / "encoded", "--concurrency",
                   "64"), "encode.concurrency (--concurrency) = 64", "2 CPUs")
    assert not (tmp_path / "encoded").exists()
    index_collection(vectors, tmp_path / "index", IndexConfig())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused(invoke("serve", tmp_path / "index", "--replicas", "8", "--port", port),
            "--replicas 8: 8 × 0.5 CPU", "2 CPUs (at most 4 fit)")


def test_encoding_on_gpus_a_cluster_lacks_is_refused_before_the_run_trains(ray_session, collection, tmp_path):
    import ray

    if ray.cluster_resources().get("GPU"):
        pytest.skip("this machine's Ray has GPUs")
    spec = tmp_path / "job.toml"  # it was refused when the encode stage began, after training
    spec.write_text(f'out = "run"\n[data]\npaths = ["{collection}"]\n[encode]\ndevice = "cuda"\n')
    refused(invoke("run", spec), 'encode.device = "cuda", but the Ray cluster has no GPUs')
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_bf16_on_a_cpu_without_a_kernel_for_it_is_one_line_before_anything_is_written(request, tiny_model_dir,
                                                                                      collection, tmp_path, runner):
    # On an AVX2-only CPU oneDNN has no bfloat16 LSTM: a traceback from each encoder after the run had
    # trained, or, on Ray, a page of Ray's own for each actor that could not start.
    from vecjob.encoder import cpu_runs_bf16_lstm

    if runner == "ray":
        request.getfixturevalue("ray_session")
    r = invoke("encode", collection, "--model", tiny_model_dir, "--out", tmp_path / "v", "--precision", "bf16",
               "--runner", runner)
    if cpu_runs_bf16_lstm():
        assert r.exit_code == 0 and json.loads((tmp_path / "v" / "manifest.json").read_text())["precision"] == ["bf16"]
        return
    refused(r, "encode.precision (--precision) = 'bf16', but this CPU cannot run the encoder's LSTM in bfloat16")
    assert not (tmp_path / "v").exists()
    if runner == "local":  # a run is refused by the encode stage's check, whichever the runner
        spec = tmp_path / "job.toml"
        spec.write_text(f'out = "run"\n[data]\npaths = ["{collection}"]\n[encode]\nprecision = "bf16"\n')
        refused(invoke("run", spec), "cannot run the encoder's LSTM in bfloat16")
        assert not (tmp_path / "run").exists()


def test_a_one_document_collection_trains_on_one_worker_unless_more_are_asked_for(ray_session, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["the cat sat on the mat with the dog and the cat"]}),
                   data / "x.parquet")
    refused(invoke("train", data, "--out", tmp_path / "two", "--workers", "2", "--epochs", "1"),
            "only 1 training chunks for 2 workers", "train.workers (--workers)")
    assert not (tmp_path / "two").exists()
    r = invoke("train", data, "--out", tmp_path / "auto", "--epochs", "1")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "auto" / "manifest.json").read_text())["workers"] == 1


def test_a_model_too_large_for_the_machine_is_one_line_before_training(ray_session, collection, tmp_path):
    # A mistyped --dim ended, after Ray Train had started its workers, in torch's allocation error,
    # which names no setting; the size is known from the config and the vocabulary before any of that.
    from vecjob.errors import ConfigError
    from vecjob.trainer import InProcess, train_model

    with pytest.raises(ConfigError, match=r"model.hidden_dim = 300000 \(--hidden-dim\) .* GiB of weights"):
        train_model(DataConfig(paths=[str(collection)]), tmp_path / "m", TokenizerConfig(),
                    ModelConfig(hidden_dim=300_000), TrainConfig(), InProcess())
    refused(invoke("train", collection, "--out", tmp_path / "m", "--dim", "1000000000"),
            "model.dim = 1000000000 (--dim)", "more than this machine's")
    assert [p for p in listing(tmp_path) if p.startswith(("m", ".m"))] == []  # no model dir, lock or checkpoints


def test_an_input_folder_of_another_kind_is_named_as_such_not_as_damaged(tiny_model_dir, tmp_path):
    # Its manifest lacks the keys the reader needs, as another kind's should: the line called it
    # "edited or damaged; write the folder again", and a user rewrote a good index.
    vectors = make_vectors_dir(tmp_path / "v", blobs(40, 8, 2)[0], [f"d{i}" for i in range(40)])
    assert invoke("index", vectors, "--out", tmp_path / "i").exit_code == 0
    for args, line in [
        (["index", tmp_path / "i", "--out", tmp_path / "i2"], f"{tmp_path / 'i'}: a vecjob index dir, where a "
                                                              "vecjob vectors dir belongs"),
        (["cluster", tmp_path / "i", "--k", "2", "--out", tmp_path / "c"], f"{tmp_path / 'i'}: a vecjob index dir"),
        (["search", vectors, "--id", "d1"], f"{vectors}: a vecjob vectors dir, where a vecjob index dir belongs"),
        (["search", tmp_path / "i", "--model", vectors, "--text", "goal"], f"{vectors}: a vecjob vectors dir, "
                                                                           "where a vecjob model dir belongs"),
        (["encode", write_collection(tmp_path / "d", [10])[0], "--model", tmp_path / "i", "--out", tmp_path / "v2"],
         f"{tmp_path / 'i'}: a vecjob index dir, where a vecjob model dir belongs"),
    ]:
        refused(invoke(*args), line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "i", "v"]


def test_a_cluster_address_that_is_malformed_or_where_nothing_listens_is_one_line(collection, tmp_path):
    # Ray raised a traceback for the first; for the second it retried for minutes, printing warnings.
    # A process of its own: this one's Ray may already be started, and then no address is read.
    import os
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    vecjob = [sys.executable, "-c", "from vecjob.cli import app; app()"]
    for flags, env, fragment in [
        ([], {"RAY_ADDRESS": "head-node"}, "RAY_ADDRESS head-node: not a Ray cluster address"),
        ([], {"RAY_ADDRESS": "head-node:\u00b2"}, "RAY_ADDRESS head-node:\u00b2: not a Ray cluster address"),
        (["--address", f"127.0.0.1:{closed_port}"], {}, f"address (--address) 127.0.0.1:{closed_port}: no Ray "
                                                         "cluster answers there"),
        # Ray Client waited 30 s and said "ray client connection timeout", naming no address.
        (["--address", f"ray://127.0.0.1:{closed_port}"], {}, f"address (--address) ray://127.0.0.1:{closed_port}: "
                                                               "no Ray Client server answers there"),
        ([], {"RAY_ADDRESS": "ray://head-node:port"}, "RAY_ADDRESS ray://head-node:port: not a Ray cluster address"),
    ]:
        done = subprocess.run([*vecjob, "train", str(collection), "--out", str(tmp_path / "m"), *flags],
                              capture_output=True, text=True, timeout=120, env={**os.environ, **env})
        lines = done.stderr.strip().splitlines() + done.stdout.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and fragment in lines[0], (done.stdout, done.stderr)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("ray_address", [None, "local"])
def test_a_cluster_ray_start_left_on_this_machine_does_not_stop_the_embedded_ray(collection, tiny_model_dir,
                                                                                tmp_path, ray_address):
    """`ray start --head` (a `ray up` head node, a laptop) leaves its address in Ray's temp folder, and
    Ray's init with no address joins that cluster, then refuses the embedded Ray's settings: vecjob with
    no address ended in a ValueError traceback. It runs on a Ray of its own, with a line saying how to
    use the cluster instead; so it does with Ray's own word for that, "local" (refused as malformed)."""
    import os
    import socket
    import sys
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="vj", dir="/tmp"))  # short: Ray's socket paths lie below it
    (ray_tmp / "ray").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(ray_tmp)}
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    try:
        with socket.socket() as gcs:  # stands for the cluster's GCS: all that is asked of it is to answer
            gcs.bind(("127.0.0.1", 0))
            gcs.listen()
            address = f"127.0.0.1:{gcs.getsockname()[1]}"
            (ray_tmp / "ray" / "ray_current_cluster").write_text(address)
            done = subprocess.run([sys.executable, "-c", "from vecjob.cli import app; app()", "encode", str(collection),
                                   "--model", str(tiny_model_dir), "--out", str(tmp_path / "v")],
                                  capture_output=True, text=True, timeout=300, env=env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"a Ray cluster started on this machine answers at {address}; vecjob starts a Ray of its own" in done.stderr
    assert (tmp_path / "v" / "manifest.json").exists()


def test_training_that_diverges_stops_with_one_line_naming_the_learning_rate(collection, tmp_path):
    # Every round's loss was NaN, so no round was ever the best: publishing the model then failed on
    # its missing weights (a TypeError) after the whole budget had run.
    from vecjob.errors import VecjobError
    from vecjob.trainer import InProcess, train_model

    with pytest.raises(VecjobError, match=r"^training diverged: the loss is nan after round 1 \(train.lr = 1e\+30\)"):
        train_model(DataConfig(paths=[str(collection)]), tmp_path / "m", TokenizerConfig(max_len=16),
                    ModelConfig(dim=8, embed_dim=8, hidden_dim=16), TrainConfig(epochs=3, lr=1e30), InProcess())
    assert not (tmp_path / "m").exists()


def test_shards_whose_integer_ids_differ_in_width_make_one_collection(tiny_model_dir, tmp_path):
    # int32 ids in one shard and int64 in the next (two tools wrote them) were accepted by encode, and
    # then every reader of the vectors failed on polars' "type Int64 is incompatible with Int32".
    data = tmp_path / "in"
    data.mkdir()
    texts = ["the cat sat on the mat", "a dog ran in the park", "the bank raised its rates"] * 10
    pq.write_table(pa.table({"id": pa.array(range(15), pa.int32()), "text": texts[:15]}), data / "a.parquet")
    pq.write_table(pa.table({"id": pa.array(range(15, 30), pa.int64()), "text": texts[15:]}), data / "b.parquet")
    assert invoke("encode", data, "--model", tiny_model_dir, "--out", tmp_path / "v", "--runner", "local").exit_code == 0
    r = invoke("index", tmp_path / "v", "--out", tmp_path / "i")
    assert r.exit_code == 0, r.output
    r = invoke("search", tmp_path / "i", "--id", "20", "-k", "1", "--json")
    top = json.loads(r.stdout)["hits"][0] if r.exit_code == 0 else r.output
    assert top["id"] in (2, 5, 8, 11, 14, 17, 20, 23, 26, 29) and top["score"] > 0.999, top  # the same text


def test_the_corpus_is_written_alone_in_its_folder_and_a_rewrite_leaves_no_shard_over(tmp_path):
    # It joined a folder holding another collection (its shards became part of it), a rewrite with
    # fewer shards left the others behind with their rows a second time, and --shards 0 was a
    # ZeroDivisionError.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "part-0.parquet").write_bytes(b"theirs")
    refused(invoke("corpus", "bbc", "--out", mine), f"--out {mine}: holds part-0.parquet, not the bbc corpus's shards")
    assert [p.name for p in mine.iterdir()] == ["part-0.parquet"]
    for shards, problem in ((0, "must be at least 1"), (2226, "more than the corpus's 2,225 documents")):
        refused(invoke("corpus", "bbc", "--out", tmp_path / "c", "--shards", shards), f"--shards {shards}: {problem}")
    assert not (tmp_path / "c").exists()
    r = invoke("corpus", "bbc", "--out", tmp_path / "c", "--shards", 4)
    assert r.exit_code == 0 and f"wrote 2,225 documents in 4 shards to {tmp_path / 'c'}" in r.output, r.output
    assert invoke("corpus", "bbc", "--out", tmp_path / "c", "--shards", 2).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["bbc-000.parquet", "bbc-001.parquet"]
    assert pq.read_table(tmp_path / "c").num_rows == 2225


DELETED = object()


def _output_dirs(tmp_path, tiny_model_dir) -> np.ndarray:
    """Vectors (v, 60 of 3 blobs), their index (i) and a model dir (m) under tmp_path; the blob labels."""
    vecs, labels = blobs(60, 8, 3)
    make_vectors_dir(tmp_path / "v", vecs, list(range(60)))
    index_collection(tmp_path / "v", tmp_path / "i", IndexConfig())
    shutil.copytree(tiny_model_dir, tmp_path / "m")
    return labels


@pytest.mark.parametrize("folder, key, value, problem", [
    ("v", "shards", DELETED, "'shards' is missing, where a list belongs"),
    ("v", "dim", "x", "'dim' is \"x\", where an integer belongs"),
    ("v", "shards", [1], "a shard listed in the manifest has no output file name"),
    ("v", None, [1, 2], "a JSON list, not an object"),
    ("i", "ntotal", DELETED, "'ntotal' is missing, where an integer belongs"),
    ("i", "factory", None, "'factory' is null, where a string belongs"),
    ("m", "model_fingerprint", 5, "'model_fingerprint' is 5, where a string belongs"),
])
def test_a_manifest_edited_by_hand_or_damaged_is_one_line_naming_the_key(tmp_path, tiny_model_dir, folder, key, value,
                                                                         problem):
    # Valid JSON without the keys its reader needs was a KeyError, TypeError or AttributeError traceback.
    _output_dirs(tmp_path, tiny_model_dir)
    manifest_path = tmp_path / folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if key is None:
        manifest = value
    elif value is DELETED:
        del manifest[key]
    else:
        manifest[key] = value
    manifest_path.write_text(json.dumps(manifest))
    command = {"v": ["index", tmp_path / "v", "--out", tmp_path / "i2"], "i": ["search", tmp_path / "i", "--id", "1"],
               "m": ["search", tmp_path / "i", "--model", tmp_path / "m", "--text", "goal"]}[folder]
    refused(invoke(*command), str(manifest_path if "shard listed" not in problem else tmp_path / "v"), problem)
    assert not (tmp_path / "i2").exists()


@pytest.mark.parametrize("folder, name, content, problem", [
    ("m", "config.json", b"[1]", "config.json: a JSON list, not an object"),
    ("m", "config.json", b"\xff{", "config.json: not valid JSON"),
    ("i", "ids.parquet", b"not parquet", "ids.parquet: not a readable Parquet file"),
    ("s", "classifier.npz", b"not numpy", "classifier.npz: not a classifier's weights"),
    ("s", "labels.json", b'{"classes": ["a"]}', "labels.json and classifier.npz do not fit together"),
    # The way back is named where it is one file: a run writes again a folder that lost a file.
    ("i", "index.faiss", b"not an index", ("index.faiss: not a readable FAISS index", "delete it and index again")),
    ("m", "model.pt", b"not torch", ("model.pt: cannot load weights", "delete it and train again")),
])
def test_a_damaged_file_of_an_output_dir_is_one_line_naming_it(tmp_path, tiny_model_dir, folder, name, content,
                                                               problem):
    # Each was a traceback: JSONDecodeError, ArrowInvalid, a pickle ValueError, an IndexError.
    labels = _output_dirs(tmp_path, tiny_model_dir)
    pq.write_table(pa.table({"id": list(range(60)), "label": [f"c{c}" for c in labels]}), tmp_path / "labels.parquet")
    train_classifier(tmp_path / "v", str(tmp_path / "labels.parquet"), tmp_path / "s", SentimentConfig())
    (tmp_path / folder / name).write_bytes(content)
    command = {"m": ["search", tmp_path / "i", "--model", tmp_path / "m", "--text", "goal"],
               "i": ["search", tmp_path / "i", "--id", "1"],
               "s": ["sentiment", "eval", tmp_path / "s", tmp_path / "v", "--labels", tmp_path / "labels.parquet"]}
    refused(invoke(*command[folder]), *((problem,) if isinstance(problem, str) else problem))


def test_a_damaged_vector_shard_is_named_with_the_way_back_and_deleting_it_is_the_way(tiny_model_dir, collection,
                                                                                     tmp_path):
    # The line said only "cannot read vector shard"; every rerun skipped the encode (its shards were all
    # there) and stopped at the same line, and a user had no hint that deleting the shard is enough.
    encode = ("encode", collection, "--model", tiny_model_dir, "--out", tmp_path / "v", "--runner", "local")
    assert invoke(*encode).exit_code == 0
    shard = sorted((tmp_path / "v").glob("part-01*.parquet"))[0]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    refused(invoke("index", tmp_path / "v", "--out", tmp_path / "i"), str(shard), "delete it and encode again")
    assert not (tmp_path / "i").exists()

    shard.unlink()
    again = invoke(*encode)
    assert again.exit_code == 0 and "1 encoded, 2 already done" in again.output, again.output
    assert shard.read_bytes() == good  # the same bytes: the same model, the same rows
    assert invoke("index", tmp_path / "v", "--out", tmp_path / "i").exit_code == 0


def test_ids_texts_and_labels_print_as_they_are_with_control_characters_escaped(tmp_path):
    # rich read them as markup: "[/]" in a snippet, id or label stopped the command with a MarkupError
    # traceback, "[cite]" vanished, ":fire:" became an emoji; an ESC sequence reached the terminal.
    marked = ["[/]", "[red]x", ":fire:"]
    vecs, centre = blobs(60, 8, 3, orthogonal=True)
    ids = [f"{marked[c]}{i}" for i, c in enumerate(centre)]
    make_vectors_dir(tmp_path / "v", vecs, ids)
    index_collection(tmp_path / "v", tmp_path / "i", IndexConfig())
    texts = [f"{marked[c]} [cite] \x1b]0;owned\x07" for c in centre]
    splits = ["test" if i % 4 == 0 else "train" for i in range(60)]
    pq.write_table(pa.table({"id": ids, "text": texts, "label": [marked[c] for c in centre], "split": splits}),
                   tmp_path / "docs.parquet")

    r = invoke("search", tmp_path / "i", "--id", ids[0], "-k", "2", "--data", tmp_path / "docs.parquet")
    assert r.exit_code == 0, r.output
    assert f"top 2 for id '{ids[0]}'" in r.output and f"{marked[centre[0]]} [cite]" in r.output, r.output
    assert "\\x1b]0;owned\\x07" in r.output and "\x1b" not in r.output, r.output
    r = invoke("sentiment", "train", tmp_path / "v", "--labels", tmp_path / "docs.parquet", "--out", tmp_path / "c")
    assert r.exit_code == 0, r.output
    r = invoke("sentiment", "eval", tmp_path / "c", tmp_path / "v", "--labels", tmp_path / "docs.parquet")
    assert r.exit_code == 0, r.output
    assert all(f"F1 {label}" in r.output for label in marked), r.output
    refused(invoke("search", tmp_path / "no\nwhere", "--id", ids[0]), "no\\nwhere")  # the one line stays one
