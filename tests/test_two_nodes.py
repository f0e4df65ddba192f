"""The whole `vecjob run` job on a two-node Ray cluster with data and outputs only in object storage:
training workers and encoder actors run on both nodes, and the vectors equal, bit for bit, those the
same model gives in a single process."""

import json
import os

import numpy as np
import pyarrow as pa
from test_object_storage import S3_SPEC, upload_collection, vecjob

from vecjob import storage


def _actors(cluster) -> dict:
    from ray.util.state import list_actors

    return {a.actor_id: a for a in list_actors(address=cluster.dashboard, detail=True, limit=10_000)}


def _vectors(folder) -> dict:
    from vecjob.vectors import VectorsDir

    table = pa.concat_tables(t for _, t in VectorsDir.open(str(folder)).iter_shards(["id", "vector"]))
    return dict(zip(table.column("id").to_pylist(), table.column("vector").to_numpy(zero_copy_only=False)))


def test_a_job_runs_across_two_nodes_from_and_to_object_storage(ray_cluster, s3, tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text(S3_SPEC.format(out=s3.uri("cluster-run"), data=upload_collection(s3, tmp_path, (90, 70, 50)))
                    .replace("workers = 1", "workers = 2").replace("concurrency = 1", "concurrency = 2"))
    work = tmp_path / "cwd"
    work.mkdir()
    before = set(_actors(ray_cluster))

    env = {**ray_cluster.env, "VECJOB_CACHE": os.environ["VECJOB_CACHE"]}
    run = vecjob("run", str(spec), "--address", ray_cluster.gcs, cwd=work, env=env)
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-2000:]
    assert list(work.iterdir()) == []

    ran = [a for actor_id, a in _actors(ray_cluster).items() if actor_id not in before]
    on_nodes = lambda kind: {a.node_id for a in ran if kind in a.class_name}  # noqa: E731
    both = set(ray_cluster.nodes.values())
    assert on_nodes("RayTrainWorker") == both, [(a.class_name, a.node_id) for a in ran]
    assert on_nodes("PartEncoder") == both, [(a.class_name, a.node_id) for a in ran]
    # Each encoder actor wrote its own vector shards to the bucket: the writers are actors on both nodes.
    encoder_nodes = {a.pid: a.node_id for a in ran if "PartEncoder" in a.class_name}
    manifest = json.loads(storage.read_bytes(s3.uri("cluster-run", "vectors", "manifest.json")))
    writers = {int(s["written_by"].rsplit(":", 1)[1]) for s in manifest["shards"]}
    assert {encoder_nodes.get(pid) for pid in writers} == both, (writers, encoder_nodes)

    from vecjob.config import DataConfig, EncodeConfig
    from vecjob.encode_shards import InProcess, encode_collection

    # One thread, as each actor ran with: float sums depend on torch's thread count.
    single = tmp_path / "single-process"
    encode_collection(DataConfig(paths=[s3.uri("data")]), s3.uri("cluster-run", "model"), single,
                      EncodeConfig(keep_columns=["label"]), InProcess(threads=1))
    on_cluster, in_process = _vectors(s3.uri("cluster-run", "vectors")), _vectors(single)
    assert sorted(on_cluster) == sorted(in_process) and len(in_process) == 210
    for doc_id, vector in in_process.items():
        assert np.array_equal(on_cluster[doc_id], vector), doc_id
