"""Faults with real processes and real files: kill -9 mid-encode, a second writer, a huge document,
a training worker that dies."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_collection
from vecjob.config import DataConfig, EncodeConfig, IndexConfig, ModelConfig, TokenizerConfig, TrainConfig
from vecjob.outputs import output_lock
from vecjob.encode_shards import encode_collection
from vecjob.vectors import VectorsDir, table_vectors

VECJOB = [sys.executable, "-c", "from vecjob.cli import app; app(prog_name='vecjob')"]


def _vectors_by_shard(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: table_vectors(pq.read_table(p)) for p in VectorsDir.open(folder).shard_paths}


def _gcs_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def _encode_args(data, model, out, runner: str) -> list[str]:
    args = [*VECJOB, "encode", str(data), "--model", str(model), "--out", str(out), "--runner", runner,
            "--batch-size", "8"]
    return args + (["--address", _gcs_address()] if runner == "ray" else [])


def _killed_at(point: str, count: int, args: list[str]) -> None:
    """Run a vecjob command that SIGKILLs itself the count-th time it reaches `point` (vecjob.faults)."""
    env = {**os.environ, "VECJOB_KILL_AT": f"{point}:{count}"}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_kill_9_mid_encode_then_rerun_finishes_only_missing_shards(request, tiny_model_dir, tmp_path, runner):
    if runner == "ray":
        request.getfixturevalue("ray_session")  # a second driver joins the session's Ray
    data = tmp_path / "in"
    write_collection(data, [120] * 12, seed=3)
    out = tmp_path / "v"
    _killed_at("part_written", 3, _encode_args(data, tiny_model_dir, out, runner))
    # Killed when the driver heard of the third shard written; encoder actors may have finished more.
    written = len(list((out / "_stats").glob("*.json")))
    assert written == 3 if runner == "local" else 3 <= written < 12
    assert not (out / "manifest.json").exists()
    visible = [p for p in out.iterdir() if not p.name.startswith((".", "_"))]
    assert 3 <= len(visible) < 12
    for p in visible:  # whatever is visible is a complete shard
        assert pq.read_table(p).num_rows == 120

    # The same command again, and an uninterrupted run (same process settings: float results depend on
    # the torch thread count, so bit-identity is promised for the same command on the same machine).
    for target in (out, tmp_path / "clean"):
        subprocess.run(_encode_args(data, tiny_model_dir, target, runner), check=True, capture_output=True,
                       timeout=300)
    resumed = VectorsDir.open(out).manifest
    assert resumed["counts"]["shards_encoded"] == 9 if runner == "local" else resumed["counts"]["shards_encoded"] <= 9
    assert resumed["counts"]["rows_out"] == 1440
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert VectorsDir.open(tmp_path / "clean").manifest["vectors_fingerprint"] == resumed["vectors_fingerprint"]
    a, b = _vectors_by_shard(out), _vectors_by_shard(tmp_path / "clean")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("killed_after", [1, 3])
def test_a_rerun_with_another_model_killed_part_way_leaves_the_old_generation(
        tiny_model_dir, other_model_dir, tmp_path, killed_after):
    from vecjob.errors import ArtifactError
    from vecjob.index import index_collection, load_index_dir
    from vecjob.search import search

    data = tmp_path / "in"
    write_collection(data, [40] * 4, seed=5)
    out = tmp_path / "v"
    first = encode_collection(DataConfig(paths=[str(data)]), tiny_model_dir, out, EncodeConfig())
    before = _vectors_by_shard(out)
    _killed_at("part_written", killed_after, _encode_args(data, other_model_dir, out, "local"))

    # Readers see model A's complete generation: its manifest, its shards, untouched.
    vdir = VectorsDir.open(out)
    assert vdir.manifest["model_fingerprint"] == first["model_fingerprint"]
    after = _vectors_by_shard(out)
    assert after.keys() == before.keys()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    index_collection(out, tmp_path / "i", IndexConfig())
    assert load_index_dir(tmp_path / "i").manifest["model_fingerprint"] == first["model_fingerprint"]
    with pytest.raises(ArtifactError, match="did not make the index's vectors"):
        search(tmp_path / "i", text="goal team", model_dir=other_model_dir)

    # Finishing the rerun publishes model B's generation whole and removes A's files.
    second = encode_collection(DataConfig(paths=[str(data)]), other_model_dir, out, EncodeConfig())
    assert second["counts"]["shards_encoded"] == 4 - killed_after
    names = {p.name for p in out.glob("*.parquet")}
    assert names == {s["output"] for s in second["shards"]} and not names & before.keys()
    assert len(list((out / "_stats").glob("*.json"))) == 4
    # The index built from A answers from its own stored vectors, not from the vectors dir that moved on.
    hits = search(tmp_path / "i", doc_id="doc-00001", k=1)
    assert hits[0]["id"] == "doc-00001" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_a_shard_of_another_generation_under_the_manifest_is_refused(tiny_model_dir, other_model_dir, tmp_path):
    from vecjob.errors import ArtifactError
    from vecjob.index import index_collection

    data = tmp_path / "in"
    write_collection(data, [30, 30], seed=6)
    encode_collection(DataConfig(paths=[str(data)]), tiny_model_dir, tmp_path / "a", EncodeConfig())
    encode_collection(DataConfig(paths=[str(data)]), other_model_dir, tmp_path / "b", EncodeConfig())
    listed = VectorsDir.open(tmp_path / "a").shard_paths[1]
    foreign = next(p for p in VectorsDir.open(tmp_path / "b").shard_paths if p.name.split("-")[:2] == listed.name.split("-")[:2])
    shutil.copyfile(foreign, listed)  # what an in-place rewrite by another model would leave
    with pytest.raises(ArtifactError, match="not written by the manifest's model"):
        VectorsDir.open(tmp_path / "a").read_all()
    with pytest.raises(ArtifactError, match="not written by the manifest's model"):
        index_collection(tmp_path / "a", tmp_path / "i", IndexConfig())
    assert not (tmp_path / "i").exists()


def test_a_killed_rewrite_of_a_whole_folder_leaves_the_previous_one(tmp_path):
    from conftest import blobs, make_vectors_dir

    from vecjob.index import load_index_dir

    vectors = make_vectors_dir(tmp_path / "v", blobs(200, 8, 3)[0], list(range(200)))
    subprocess.run([*VECJOB, "index", str(vectors), "--out", str(tmp_path / "i"), "--factory", "Flat"], check=True,
                   capture_output=True, timeout=120)
    built = (tmp_path / "i" / "manifest.json").read_text()
    _killed_at("staged_before_swap", 1,
               [*VECJOB, "index", str(vectors), "--out", str(tmp_path / "i"), "--factory", "HNSW32"])
    assert (tmp_path / "i" / "manifest.json").read_text() == built
    assert load_index_dir(tmp_path / "i").manifest["factory"] == "Flat"
    assert [p.name for p in tmp_path.glob(".i.tmp-*")], "the killed run's staging folder is hidden beside it"
    subprocess.run([*VECJOB, "index", str(vectors), "--out", str(tmp_path / "i"), "--factory", "HNSW32"], check=True,
                   capture_output=True, timeout=120)
    assert load_index_dir(tmp_path / "i").manifest["factory"] == "HNSW32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i", "v"]  # staging and lock are gone


def test_a_second_writer_to_the_same_output_is_refused(tiny_model_dir, collection, tmp_path):
    out = tmp_path / "v"
    with output_lock(out):  # another run holds the directory
        r = subprocess.run([*VECJOB, "encode", str(collection), "--model", str(tiny_model_dir), "--out", str(out),
                            "--runner", "local"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "another vecjob run is writing here" in r.stderr
    assert not list(out.glob("*.parquet"))


def test_a_write_that_fails_names_its_file_and_publishes_nothing(tiny_model_dir, tmp_path):
    """A disk that fills up (here the process's file-size limit, RLIMIT_FSIZE: a real failed write)
    stopped the encode with Arrow's "Error writing bytes to file … File too large", naming no file,
    and the index with FAISS's RuntimeError and its traceback."""
    import re
    import resource

    data = tmp_path / "in"
    write_collection(data, [120] * 3, seed=3)
    out = tmp_path / "v"
    limit = 2048  # the vector shards are larger; the stats written after them never come

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(_encode_args(data, tiny_model_dir, out, "local"), capture_output=True, text=True,
                          timeout=300, preexec_fn=limited)
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: {re.escape(str(out))}/part-0\d-\w+-\w+\.parquet: .*File too large", line), line
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.parquet"))  # nor a temporary
    # FAISS's failed write was a RuntimeError, a traceback
    subprocess.run(_encode_args(data, tiny_model_dir, out, "local"), check=True, capture_output=True, timeout=300)
    index = tmp_path / "index"
    proc = subprocess.run([*VECJOB, "index", str(out), "--out", str(index)], capture_output=True, text=True,
                          timeout=300, preexec_fn=limited)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"error: {index}/index.faiss: writing it failed (File too large)"), proc.stderr[-2000:]
    assert not index.exists()


def test_a_multi_megabyte_document_is_encoded_whole(tiny_model_dir, tmp_path):
    words = "match goal team league coach oven flour sugar chip robot ".split()
    rng = np.random.default_rng(0)
    huge = " ".join(rng.choice(words, size=400_000))  # ≈ 2.6 MB, 400k tokens
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(pa.table({"id": ["huge", "small"], "text": [huge, "goal team"]}), data / "a.parquet")
    manifest = encode_collection(DataConfig(paths=[str(data)]), tiny_model_dir, tmp_path / "v", EncodeConfig())
    assert len(huge) > 2_000_000
    assert manifest["counts"]["rows_out"] == 2 and manifest["counts"]["tokens"] == 400_002
    vecs = table_vectors(VectorsDir.open(tmp_path / "v").read_all())
    assert np.isfinite(vecs).all() and not np.allclose(vecs[0], vecs[1])


def _our_ray_train_workers() -> list[int]:
    """RayTrainWorker processes of the Ray this test process started (its descendants), no one else's."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def test_a_dead_training_worker_restarts_from_the_last_checkpoint(ray_session, tmp_path):
    pytest.importorskip("psutil")
    ROUNDS = 16  # about a second each: the kill lands mid-run even when the controller registers late
    from vecjob.ray_train import RayTrain
    from vecjob.trainer import train_model

    write_collection(tmp_path / "in", [1500, 1500], seed=4)
    out = tmp_path / "m"
    result: dict = {}

    def train() -> None:
        try:
            result["manifest"] = train_model(
                DataConfig(paths=[str(tmp_path / "in")]), out, TokenizerConfig(max_vocab=300, max_len=16),
                ModelConfig(dim=16, embed_dim=16, hidden_dim=32),
                TrainConfig(epochs=ROUNDS, workers=2, use_gpu="no", max_failures=1, patience=ROUNDS), RayTrain(),
            )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    checkpoints = tmp_path / ".m.ray-train"
    # Kill once the controller has registered a checkpoint: it writes its snapshot on registration.
    # Files of checkpoint folders alone say nothing (a starved controller registers them late, in a burst).
    deadline = time.time() + 300
    while time.time() < deadline and not any(checkpoints.glob("*/checkpoint_manager_snapshot.json")):
        assert thread.is_alive(), f"training ended before a checkpoint was registered: {result}"
        time.sleep(0.1)
    victims = _our_ray_train_workers()
    assert len(victims) == 2, victims
    os.kill(victims[-1], signal.SIGKILL)
    thread.join(timeout=600)
    assert "error" not in result, result.get("error")
    manifest = result["manifest"]
    # The restarted group resumed from a checkpoint (at least one round done), not from scratch.
    assert len(manifest["resumed_after_rounds"]) == 1 and 1 <= manifest["resumed_after_rounds"][0] < ROUNDS
    assert manifest["rounds_run"] == ROUNDS and [h["round"] for h in manifest["history"]] == list(range(1, ROUNDS + 1))
    assert (out / "model.pt").exists() and (out / "manifest.json").exists()
    assert victims[-1] not in _our_ray_train_workers()


def test_a_dead_encoder_actor_is_started_again_and_the_run_writes_every_vector(ray_session, tiny_model_dir, tmp_path):
    """An encoder actor's process killed mid-run (the kernel's OOM killer, a node going away): Ray
    starts it again and runs its unit again, and the run ends with every vector."""
    psutil = pytest.importorskip("psutil")
    from vecjob.ray_encode import RayData

    data = tmp_path / "in"
    write_collection(data, [120] * 12, seed=3)
    killed: list[int] = []

    def kill_an_encoder(_rows: int) -> None:  # once the first unit's vectors are written, eleven to go
        for child in [] if killed else psutil.Process().children(recursive=True):
            try:
                if "MapWorker(MapBatches(PartEncoder))" in " ".join(child.cmdline()):
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.pid)
                    return
            except psutil.NoSuchProcess:
                continue

    manifest = encode_collection(DataConfig(paths=[str(data)]), tiny_model_dir, tmp_path / "v",
                                 EncodeConfig(batch_size=8), RayData(), on_rows=kill_an_encoder)
    assert len(killed) == 1 and not psutil.pid_exists(killed[0])
    assert manifest["counts"]["shards_encoded"] == 12 and manifest["counts"]["rows_out"] == 1440
    encode_collection(DataConfig(paths=[str(data)]), tiny_model_dir, tmp_path / "clean", EncodeConfig(batch_size=8))
    a, b = _vectors_by_shard(tmp_path / "v"), _vectors_by_shard(tmp_path / "clean")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)


def test_a_killed_one_worker_training_resumes_from_its_last_round_to_the_same_model(ray_session, collection, tmp_path):
    # One CPU worker on the Ray a command started trains in the command's own process, not on a Ray
    # Train worker: its round checkpoints must outlive that process, or a killed run trains from scratch.
    from typer.testing import CliRunner

    from vecjob.cli import app

    out = tmp_path / "model"
    spec = tmp_path / "spec.toml"
    spec.write_text("[train]\nepochs = 6\npatience = 6\n")
    args = ["train", str(collection), "--out", str(out), "--config", str(spec), "--workers", "1", "--dim", "8",
            "--hidden-dim", "16", "--max-len", "16"]
    env = {**os.environ, "RAY_ADDRESS": "", "VECJOB_KILL_AT": "round_saved:2"}  # its own embedded Ray
    killed = subprocess.run([*VECJOB, *args], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "train round 2/6" in killed.stderr and not out.exists()
    rerun = CliRunner().invoke(app, args)  # this process started the session's Ray: it trains here too
    assert rerun.exit_code == 0, rerun.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["resumed_after_rounds"] == [2] and manifest["rounds_run"] == 6
    assert not [p for p in tmp_path.glob(".model.ray-train/*") if p.is_file()]  # the checkpoint goes once published
    # ... to the model a run never killed trains: every round's losses, and the weights, bit for bit.
    whole = CliRunner().invoke(app, [*args[:3], str(tmp_path / "whole"), *args[4:]])
    assert whole.exit_code == 0, whole.output
    unkilled = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert [h["val_loss"] for h in manifest["history"]] == [h["val_loss"] for h in unkilled["history"]]
    assert (out / "model.pt").read_bytes() == (tmp_path / "whole" / "model.pt").read_bytes()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_run_stopped_by_a_signal_says_so_in_one_line_and_the_same_command_goes_on(collection, tmp_path, sig):
    # Ctrl-C during training exited with status 1 and said nothing (Ray Train's own handler aborts the
    # run and calls sys.exit); SIGTERM, what a scheduler sends at its time limit, printed Ray's C++
    # stack dump and aborted, which reads like a crash in a nightly log.
    out = tmp_path / "model"
    # Rounds of a fraction of a second: 20 of them, without early stopping, leave the signal seconds
    # to arrive mid-run.
    spec = tmp_path / "spec.toml"
    spec.write_text("[train]\nepochs = 20\npatience = 20\n")
    train = [*VECJOB, "train", str(collection), "--out", str(out), "--config", str(spec), "--dim", "8",
             "--hidden-dim", "16", "--max-len", "16"]
    proc = subprocess.Popen(train, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stderr:  # round 2 has ended: round 1's checkpoint, at least, is reported
            if line.startswith("train round 2/"):
                break
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = stderr.strip().splitlines()
    assert proc.returncode == 128 + sig, stderr
    assert lines and lines[-1] == (f"stopped by {signal.Signals(sig).name}: what was published stays whole; the "
                                   "same command goes on from it"), stderr
    assert "SIGTERM received" not in stderr and "Traceback" not in stderr, stderr
    assert not out.exists()
    if sig == signal.SIGTERM:  # once is enough to show the rerun resumes from the last checkpoint
        done = subprocess.run(train, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["rounds_run"] == 20 and manifest["resumed_after_rounds"][0] >= 1


def test_a_command_run_in_process_gives_the_caller_its_sigterm_handler_back(tmp_path):
    # A scheduler that runs `app()` in its own Python process keeps its SIGTERM handling after the
    # command; the command's own handler lasts as long as the command.
    from typer.testing import CliRunner

    from vecjob.cli import app

    def callers_handler(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, callers_handler)
    try:
        result = CliRunner().invoke(app, ["search", str(tmp_path / "no-index"), "--id", "x"])
        assert result.exit_code == 2 and "no-index" in result.output, result.output
        assert signal.getsignal(signal.SIGTERM) is callers_handler
    finally:
        signal.signal(signal.SIGTERM, before)
