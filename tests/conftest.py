"""Shared fixtures: one real local Ray per session, synthetic Parquet collections, a tiny model.

Library tests need no Ray. Tests that use Ray take the `ray_session` fixture (started once).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# The suite's caches (remembered fingerprints, readers' published folders) go to a folder of its own,
# removed at the end, not to the home of whoever runs it; a test that needs a fresh one sets its own.
os.environ["VECJOB_CACHE"] = tempfile.mkdtemp(prefix="vecjob-test-cache-")
atexit.register(shutil.rmtree, os.environ["VECJOB_CACHE"], True)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "bbc_news.parquet").exists(),
    reason=f"shared data not found at {SHARED_DATA} (the ../shared checkout beside the repo)",
)

TOPICS = {
    "sport": "match goal team league coach season player win score cup striker final".split(),
    "tech": "software chip computer network phone data internet device robot code server".split(),
    "food": "recipe bake flour oven sugar butter taste dinner chef kitchen sauce spice".split(),
}
COMMON = "the a of and to in is was it for on with as at by".split()


# A job spec small enough for a test: a tiny model, one epoch, one worker.
TINY_SPEC = """
name = "{name}"
out = "out"
stages = ["train", "encode", "index"]
[data]
paths = ["data"]
[tokenizer]
max_vocab = 300
max_len = 16
[model]
dim = 16
hidden_dim = 24
[train]
epochs = 1
workers = 1
[encode]
concurrency = 1
[index]
factory = "{factory}"
"""


def synthetic_texts(n: int, seed: int = 0, min_words: int = 8, max_words: int = 60) -> tuple[list[str], list[str]]:
    """Documents made of one topic's words mixed with common words; returns (texts, topics)."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    texts, labels = [], []
    for _ in range(n):
        topic = names[rng.integers(len(names))]
        n_words = int(rng.integers(min_words, max_words))
        words = [rng.choice(TOPICS[topic]) if rng.random() < 0.6 else rng.choice(COMMON) for _ in range(n_words)]
        text = " ".join(words).capitalize() + "."
        texts.append(text)
        labels.append(topic)
    return texts, labels


def write_collection(
    folder: Path, shard_sizes: list[int], seed: int = 0, row_group_size: int = 64, id_prefix: str = "doc"
) -> list[Path]:
    """Parquet shards of uneven sizes (several row groups each) with columns id, text, label."""
    folder.mkdir(parents=True, exist_ok=True)
    texts, labels = synthetic_texts(sum(shard_sizes), seed)
    paths, start = [], 0
    for i, size in enumerate(shard_sizes):
        ids = [f"{id_prefix}-{j:05d}" for j in range(start, start + size)]
        table = pa.table({"id": ids, "text": texts[start : start + size], "label": labels[start : start + size]})
        path = folder / f"part-{i:02d}.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
        start += size
    return paths


def make_vectors_dir(folder: Path, vectors: np.ndarray, ids: list, shards: int = 3, extra: dict | None = None,
                     model: str = "m") -> Path:
    """A vectors dir as `vecjob encode` writes it, from given vectors and ids (made by the model whose
    fingerprint is `model`)."""
    from vecjob.parquet_io import new_manifest, write_json_atomic, write_parquet_atomic
    from vecjob.vectors import MANIFEST_KIND, vectors_table, with_model_fingerprint

    folder.mkdir(parents=True, exist_ok=True)
    stats = []
    for i, part in enumerate(np.array_split(np.arange(len(ids)), shards)):
        name = f"s{i}.parquet"
        cols = {k: pa.array([v[j] for j in part]) for k, v in (extra or {}).items()}
        table = vectors_table(pa.array([ids[j] for j in part]), vectors[part], cols)
        write_parquet_atomic(with_model_fingerprint(table, model), folder / name)
        stats.append({"output": name, "rows_out": len(part)})
    columns = {"id": "id", "text": "text", "keep": list(extra or {})}
    write_json_atomic(new_manifest(MANIFEST_KIND, dim=vectors.shape[1], shards=stats, model_fingerprint=model,
                                   vectors_fingerprint="v", columns=columns), folder / "manifest.json")
    return folder


def blobs(n: int, dim: int, centers: int, seed: int = 0, spread: float = 0.3,
          orthogonal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Vectors around `centers` random (or mutually orthogonal) directions, and the centre of each."""
    rng = np.random.default_rng(seed)
    c = np.linalg.qr(rng.normal(size=(dim, centers)))[0].T * 3 if orthogonal else rng.normal(size=(centers, dim))
    which = rng.integers(centers, size=n)
    return (c[which] + spread * rng.normal(size=(n, dim))).astype(np.float32), which


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=512 << 20, log_to_driver=False)
    from vecjob.runtime import connect

    connect()  # already initialised: only applies vecjob's Ray Data settings
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("collection")
    write_collection(folder, [150, 37, 95])
    return folder


def train_tiny_model(out: Path, collection: Path, seed: int = 0) -> Path:
    """A small model trained in-process (no Ray) on the synthetic collection."""
    import torch

    from vecjob.config import DataConfig, ModelConfig, TokenizerConfig, TrainConfig
    from vecjob.trainer import train_model

    torch.set_num_threads(1)
    train_model(DataConfig(paths=[str(collection)]), out, TokenizerConfig(max_vocab=200, min_count=1, max_len=16),
                ModelConfig(dim=16, embed_dim=16, hidden_dim=24), TrainConfig(epochs=2, batch_size=32, seed=seed))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, collection) -> Path:
    return train_tiny_model(tmp_path_factory.mktemp("model") / "model", collection)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory, collection) -> Path:
    """A second model of the same shape (another seed): same dim, different vectors and fingerprint."""
    return train_tiny_model(tmp_path_factory.mktemp("model-b") / "model", collection, seed=1)


# ---- real servers and clusters, started once per session and shared ------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free now: each socket stays bound until all are picked, since
    the OS may hand a just-closed port out again (on this machine, 8 of 2,000 runs of 14 picks
    one at a time held a repeat)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def free_port() -> int:
    return free_ports(1)[0]


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    """Stop a process this suite started, with its process group (never anything else)."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    root: str  # bucket, or bucket/prefix
    env: dict  # what a client needs: endpoint, region, the access key the server knows

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.root}", *parts])


@pytest.fixture(scope="session")
def s3_server():
    """A local S3 server (moto's server mode) on a free loopback port, checking credentials like S3.

    IAM checks are on (INITIAL_NO_AUTH_ACTION_COUNT): the first three calls create a user, its policy
    and its access key; every later call must be signed with that key.
    """
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the dev extra)")
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "moto_server did not start"
                time.sleep(0.2)
        anonymous = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                         aws_secret_access_key="setup")
        iam = boto3.client("iam", **anonymous)
        iam.create_user(UserName="vecjob")
        iam.put_user_policy(UserName="vecjob", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="vecjob")["AccessKey"]
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
               "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket="vecjob-test")
        yield S3Server(endpoint, "vecjob-test", env)
    finally:
        stop_group(server)


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """The S3 server's settings in this process's environment, a fresh local cache, and a fresh
    prefix in the bucket for this test."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VECJOB_CACHE", str(tmp_path / "vecjob-cache"))
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return S3Server(s3_server.endpoint, f"{s3_server.root}/{prefix}", s3_server.env)


@dataclass(frozen=True)
class RayCluster:
    gcs: str  # the address drivers connect to
    dashboard: str  # the Jobs API and the state API
    env: dict  # for a driver or `ray` CLI run against this cluster
    nodes: dict  # custom resource name → its node's id


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """Two Ray nodes on this machine, each a `ray start --block` process group with its own temp dir,
    one CPU and a custom resource naming it; the head serves the Jobs API. Every process of it has the
    S3 server's settings in its environment, as a cluster's nodes have their store's.

    A node's ports are picked free before it starts and bound by it only later, so another process
    on a busy machine can take one in between (once in CI, a head node exited while the second node
    joined). A start in which a node exits, or that does not come up in time, is reported as a
    warning with the end of what the nodes printed, and made again with fresh ports; the third such
    start fails the tests that need it."""
    pytest.importorskip("ray.dashboard", reason="the Jobs API and the state API need ray[default]")
    failed_starts: list[str] = []
    for attempt in range(3):
        processes: list[tuple[subprocess.Popen, Path]] = []
        try:
            try:
                cluster = _start_two_nodes(s3_server, f"vj{os.getpid()}-{attempt}", processes)
            except _StartFailed as failed:
                failed_starts.append(str(failed))
                warnings.warn(f"two-node cluster, start {attempt + 1}: {failed}", stacklevel=1)
                continue
            yield cluster
            return
        finally:
            # `ray start --block` stops its node on SIGINT (it ignores SIGTERM); the worker node first.
            # Alone, each stops in under 2 s; at the end of the whole suite both have waited out a
            # minute and been killed (not traced): 15 s, then the group is killed.
            for proc, _ in reversed(processes):
                stop_group(proc, signal.SIGINT, timeout=15)
    pytest.fail("\n\n".join(failed_starts))


class _StartFailed(Exception):
    pass


def _start_two_nodes(s3_server, name_prefix: str, processes: list) -> RayCluster:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **s3_server.env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    flags = ("node-manager-port", "object-manager-port", "metrics-export-port", "dashboard-agent-listen-port",
             "dashboard-agent-grpc-port", "runtime-env-agent-port")
    # Both nodes' ports are picked together: the head's agents bind theirs only after its Jobs API is
    # up, so a port picked for the second node then could be one the head was told to use.
    ports = iter(free_ports(2 + 2 * len(flags)))
    gcs = f"127.0.0.1:{next(ports)}"
    # Processes of this cluster must not find the session's own Ray: with two, the State API asks both.
    env["RAY_ADDRESS"] = gcs
    dashboard = f"http://127.0.0.1:{next(ports)}"

    def node(name: str, *role: str) -> None:
        node_ports = {flag: next(ports) for flag in flags}
        output = Path(f"/tmp/{name_prefix}-{name}.log")
        with output.open("wb") as log:
            processes.append((subprocess.Popen(
                [str(bin_dir / "ray"), "start", *role, "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                 f"--resources={json.dumps({name: 1})}", f"--temp-dir=/tmp/{name_prefix}-{name}",
                 "--object-store-memory=300000000", "--disable-usage-stats",
                 *(f"--{flag}={port}" for flag, port in node_ports.items())],
                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            ), output))

    from ray.util.state import list_nodes

    node("node_head", "--head", f"--port={gcs.split(':')[1]}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard.rsplit(':', 1)[1]}")
    _wait_for(lambda: subprocess.run([str(bin_dir / "ray"), "job", "list", "--address", dashboard], env=env,
                                     capture_output=True).returncode == 0, processes, "the head's Jobs API")
    node("node_worker", f"--address={gcs}")
    alive = lambda: [n for n in list_nodes(address=dashboard, detail=True) if n.state == "ALIVE"]  # noqa: E731
    _wait_for(lambda: len(alive()) == 2, processes, "the second node")
    nodes = {r: n.node_id for n in alive() for r in n.resources_total if r.startswith("node_")}
    return RayCluster(gcs, dashboard, env, nodes)


def _wait_for(ready, processes: list, what: str, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        for proc, output in processes:
            if proc.poll() is not None:
                raise _StartFailed(f"{output.stem} exited with {proc.returncode} while waiting for {what}; "
                                   f"{_tail(output)}")
        if time.time() > deadline:
            raise _StartFailed(f"{what} did not come up within {timeout_s:.0f} s; "
                               + "; ".join(_tail(output) for _, output in processes))
        time.sleep(2)


def _tail(output: Path) -> str:
    lines = output.read_text(errors="replace").splitlines()[-40:]
    return f"the end of what {output.stem} printed ({output}):\n" + "\n".join(lines)
