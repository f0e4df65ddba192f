"""Every YAML in deploy/ parses, and the manifests have the kinds and fields vecjob relies on."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


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


def test_ray_up_file_passes_rays_own_cluster_schema():
    """`ray up` checks its file against ray/autoscaler/ray-schema.json after filling in the provider's
    defaults; the same two calls, offline, catch a misspelt or misplaced key before a cloud bill."""
    from jsonschema.exceptions import ValidationError
    from ray.autoscaler._private.util import prepare_config, validate_config

    (cfg,) = _docs("ray-cluster.yaml")
    validate_config(prepare_config(cfg))
    (misspelt,) = _docs("ray-cluster.yaml")
    misspelt["available_node_types"]["gpu_worker"]["min_worker"] = 1
    with pytest.raises(ValidationError, match="min_worker"):
        validate_config(prepare_config(misspelt))


def test_dockerfile_installs_the_cluster_extra_a_cpu_torch_and_a_cuda_variant():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "ARG BASE=rayproject/ray:2.60.0-py311-cpu" in text and "py311-gpu" in text
    assert '[cluster]"' in text
    # The CPU image takes torch from PyTorch's CPU index (PyPI's Linux torch is the CUDA build).
    assert 'ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"' in text
    assert '${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "${TORCH}"' in text and "TORCH_INDEX= " in text


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="replaying as another user needs root")
def test_dockerfile_install_steps_work_for_a_non_root_user_on_root_owned_sources():
    """No Docker daemon here: replay the Dockerfile's COPY steps as root (files root-owned, as COPY
    leaves them) and its install RUN steps as `nobody`, as Ray's images run them as `ray`. Offline:
    the torch step is left out (torch is installed here) and pip takes no dependencies or index."""
    lines = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text()).splitlines()
    image = Path(tempfile.mkdtemp(prefix="vecjob-image-", dir="/tmp"))
    try:
        image.chmod(0o755)
        for line in lines:
            if line.startswith("COPY "):
                *sources, dest = line.split()[1:]
                target = image / dest.lstrip("/")
                target.mkdir(parents=True, exist_ok=True)
                for source in sources:  # as COPY does: a folder's contents, a file into the folder
                    if (REPO / source).is_dir():
                        shutil.copytree(REPO / source, target, dirs_exist_ok=True,
                                        ignore=shutil.ignore_patterns("__pycache__"))
                    else:
                        shutil.copy(REPO / source, target)
        for path in [image, *image.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        home, site = image / "home-nobody", image / "site-packages"
        for folder in (home, site):
            folder.mkdir()
            shutil.chown(folder, "nobody")
        env = {"HOME": str(home), "TMPDIR": str(home), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
               "PIP_TARGET": str(site), "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"}
        steps = [line[4:].replace("/opt/vecjob", f"{image}/opt/vecjob") for line in lines
                 if line.startswith("RUN ") and "TORCH" not in line]
        assert steps, "no install step found in the Dockerfile"
        for step in steps:
            done = subprocess.run(["sh", "-c", step], user="nobody", env=env, cwd=home, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert (site / "vecjob" / "cli" / "__init__.py").exists() and (site / "bin" / "vecjob").exists()
    finally:
        shutil.rmtree(image, ignore_errors=True)


def test_rayservice_serves_the_search_application_from_the_bucket():
    (service,) = _docs("kuberay/rayservice.yaml")
    assert service["kind"] == "RayService" and service["apiVersion"] == "ray.io/v1"
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (application,) = config["applications"]
    assert application["import_path"] == "vecjob.ray_serve:build_app"
    assert application["args"]["index"].startswith("s3://") and application["args"]["model"].startswith("s3://")
    module, _, name = application["import_path"].partition(":")
    pytest.importorskip("ray.serve")
    import importlib

    assert callable(getattr(importlib.import_module(module), name))
    from ray.serve.schema import ServeDeploySchema

    assert ServeDeploySchema.model_validate(config).logging_config.enable_access_log is False
    worker = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert {"name": "vecjob-data", "mountPath": "/data"} in worker["containers"][0]["volumeMounts"]
