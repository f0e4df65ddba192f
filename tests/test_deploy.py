"""Every YAML in deploy/ parses, and the manifests have the kinds and fields vecjob relies on."""

from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _docs(name):
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


@pytest.mark.parametrize("path", sorted(p.relative_to(DEPLOY) for p in DEPLOY.rglob("*.yaml")))
def test_yaml_parses(path):
    assert _docs(path)


def test_raycluster_has_cpu_head_and_gpu_workers_on_shared_storage():
    cluster, claim = _docs("kuberay/raycluster.yaml")
    assert cluster["kind"] == "RayCluster" and cluster["apiVersion"] == "ray.io/v1"
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "nvidia.com/gpu" not in head["template"]["spec"]["containers"][0]["resources"]["limits"]
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert group["minReplicas"] >= 1  # use_gpu = "auto" decides from the GPUs present at job start
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rayjob_runs_vecjob():
    (job,) = _docs("kuberay/rayjob.yaml")
    assert job["kind"] == "RayJob" and job["spec"]["entrypoint"].startswith("vecjob run ")
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_cronjob_submits_the_nightly_job_through_the_jobs_api():
    (cron,) = _docs("kuberay/cronjob.yaml")
    assert cron["kind"] == "CronJob" and cron["apiVersion"] == "batch/v1"
    assert len(cron["spec"]["schedule"].split()) == 5 and cron["spec"]["concurrencyPolicy"] == "Forbid"
    command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["ray", "job", "submit"] and command[-3:] == ["vecjob", "run", "/opt/vecjob/jobs/nightly.toml"]


def test_ray_up_file_has_gpu_workers():
    (cfg,) = _docs("ray-cluster.yaml")
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert cfg["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert cfg["available_node_types"]["gpu_worker"]["min_workers"] >= 1
    assert "--gpus all" in cfg["docker"]["worker_run_options"]


def test_dockerfile_installs_the_cluster_extra_and_a_cuda_variant():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "ARG BASE=rayproject/ray:2.60.0-py311-cpu" in text and "py311-gpu" in text
    assert '".[cluster]"' in text


def test_rayservice_serves_the_search_application_from_the_shared_volume():
    (service,) = _docs("kuberay/rayservice.yaml")
    assert service["kind"] == "RayService" and service["apiVersion"] == "ray.io/v1"
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (application,) = config["applications"]
    assert application["import_path"] == "vecjob.ray_serve:build_app"
    assert application["args"]["index"].startswith("/data/") and application["args"]["model"].startswith("/data/")
    module, _, name = application["import_path"].partition(":")
    pytest.importorskip("ray.serve")
    import importlib

    assert callable(getattr(importlib.import_module(module), name))
    worker = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert {"name": "vecjob-data", "mountPath": "/data"} in worker["containers"][0]["volumeMounts"]
