"""Faults with real processes and real files: kill -9 mid-encode, a second writer, a huge document,
a training worker that dies."""

import os
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
from vecjob.config import DataConfig, EncodeConfig, ModelConfig, TokenizerConfig, TrainConfig
from vecjob.parquet_io import dir_lock
from vecjob.ray_encode import encode_collection
from vecjob.vectors import VectorsDir, table_vectors

VECJOB = [sys.executable, "-c", "from vecjob.cli import app; app(prog_name='vecjob')"]


def _vectors_by_shard(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: table_vectors(pq.read_table(p)) for p in VectorsDir.open(folder).shard_paths}


def test_kill_9_mid_encode_then_rerun_finishes_only_missing_shards(tiny_model_dir, tmp_path):
    data = tmp_path / "in"
    write_collection(data, [120] * 40, seed=3)
    out = tmp_path / "v"
    proc = subprocess.Popen([*VECJOB, "encode", str(data), "--model", str(tiny_model_dir), "--out", str(out),
                             "--runner", "local", "--batch-size", "8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stats = out / "_stats"
    deadline = time.time() + 120
    while time.time() < deadline and not (stats.exists() and len(list(stats.glob("*.json"))) >= 3):
        assert proc.poll() is None, "encode finished before it could be killed: make the input larger"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(stats.glob("*.json")))
    assert 3 <= done_before < 40, done_before
    assert not (out / "manifest.json").exists()
    visible = [p for p in out.iterdir() if not p.name.startswith((".", "_"))]
    for p in visible:  # whatever is visible is a complete shard
        assert pq.read_table(p).num_rows == 120

    # The same command again, and an uninterrupted run (same process settings: float results depend on
    # the torch thread count, so bit-identity is promised for the same command on the same machine).
    for target in (out, tmp_path / "clean"):
        subprocess.run([*VECJOB, "encode", str(data), "--model", str(tiny_model_dir), "--out", str(target),
                        "--runner", "local", "--batch-size", "8"], check=True, capture_output=True, timeout=300)
    resumed = VectorsDir.open(out).manifest
    assert resumed["counts"]["shards_encoded"] == 40 - done_before
    assert resumed["counts"]["rows_out"] == 4800
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert VectorsDir.open(tmp_path / "clean").manifest["vectors_fingerprint"] == resumed["vectors_fingerprint"]
    a, b = _vectors_by_shard(out), _vectors_by_shard(tmp_path / "clean")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_a_second_writer_to_the_same_output_is_refused(tiny_model_dir, collection, tmp_path):
    out = tmp_path / "v"
    with dir_lock(out):  # another run holds the directory
        r = subprocess.run([*VECJOB, "encode", str(collection), "--model", str(tiny_model_dir), "--out", str(out),
                            "--runner", "local"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "another vecjob run is writing here" in r.stderr
    assert not list(out.glob("*.parquet"))


def test_a_multi_megabyte_document_is_encoded_whole(tiny_model_dir, tmp_path):
    words = "match goal team league coach oven flour sugar chip robot ".split()
    rng = np.random.default_rng(0)
    huge = " ".join(rng.choice(words, size=400_000))  # ≈ 2.6 MB, 400k tokens
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(pa.table({"id": ["huge", "small"], "text": [huge, "goal team"]}), data / "a.parquet")
    manifest = encode_collection(DataConfig(paths=[str(data)]), tiny_model_dir, tmp_path / "v", EncodeConfig(),
                                 runner="local")
    assert len(huge) > 2_000_000
    assert manifest["counts"]["rows_out"] == 2 and manifest["counts"]["tokens"] == 400_002
    vecs = table_vectors(VectorsDir.open(tmp_path / "v").read_all())
    assert np.isfinite(vecs).all() and not np.allclose(vecs[0], vecs[1])


def _ray_train_worker_pids() -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "RayTrainWorker" in cmd and "ray::" in cmd:
            pids.append(p.pid)
    return pids


def test_a_dead_training_worker_restarts_from_the_last_checkpoint(ray_session, tmp_path):
    pytest.importorskip("psutil")
    from vecjob.ray_train import train_model

    write_collection(tmp_path / "in", [1500, 1500], seed=4)
    out = tmp_path / "m"
    result: dict = {}

    def train() -> None:
        try:
            result["manifest"] = train_model(
                DataConfig(paths=[str(tmp_path / "in")]), out, TokenizerConfig(max_vocab=300, max_len=16),
                ModelConfig(dim=16, embed_dim=16, hidden_dim=32),
                TrainConfig(epochs=5, workers=2, use_gpu="no", max_failures=1, patience=10),
            )
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    checkpoints = tmp_path / ".m.ray-train"
    deadline = time.time() + 300
    while time.time() < deadline and not list(checkpoints.glob("*/checkpoint_*")):
        assert thread.is_alive(), f"training ended before a checkpoint: {result}"
        time.sleep(0.2)
    victims = _ray_train_worker_pids()
    assert victims, "no RayTrainWorker process found"
    os.kill(victims[-1], signal.SIGKILL)
    thread.join(timeout=600)
    assert "error" not in result, result.get("error")
    manifest = result["manifest"]
    assert manifest["epochs_run"] == 5 and [h["epoch"] for h in manifest["history"]] == [1, 2, 3, 4, 5]
    assert (out / "model.pt").exists() and (out / "manifest.json").exists()
    assert victims[-1] not in _ray_train_worker_pids()
