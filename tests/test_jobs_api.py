"""`ray job submit --working-dir … -- vecjob run JOB.toml` against the suite's two-node cluster."""

import subprocess
import sys
import time
from pathlib import Path

from conftest import TINY_SPEC, write_collection


def submit(cluster, work: Path, submission_id: str, *command: str) -> tuple[str, str]:
    """Submit a job with `work` as its working dir; wait for it to end; return (status, logs)."""
    from ray.job_submission import JobSubmissionClient

    ray = str(Path(sys.executable).parent / "ray")
    deadline = time.time() + 120
    while True:  # the dashboard answers before its job agent is up: retry that one error
        submitted = subprocess.run(
            [ray, "job", "submit", "--address", cluster.dashboard, "--working-dir", str(work), "--no-wait",
             "--submission-id", submission_id, "--", *command],
            env=cluster.env, capture_output=True, text=True, timeout=120,
        )
        if submitted.returncode == 0 or "No available agent" not in submitted.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert submitted.returncode == 0, submitted.stderr
    client = JobSubmissionClient(cluster.dashboard)
    deadline = time.time() + 420
    status = client.get_job_status(submission_id)
    while not status.is_terminal() and time.time() < deadline:
        time.sleep(3)
        status = client.get_job_status(submission_id)
    logs = subprocess.run([ray, "job", "logs", "--address", cluster.dashboard, submission_id],
                          env=cluster.env, capture_output=True, text=True).stdout
    return str(status), logs


def test_a_submitted_job_writes_where_it_is_told_never_into_rays_copy_of_its_working_dir(ray_cluster, tmp_path):
    work = tmp_path / "job"
    write_collection(work / "data", [30, 20])
    (work / "job.toml").write_text(TINY_SPEC.format(name="submitted", factory="auto"))  # out = "out": relative

    status, logs = submit(ray_cluster, work, "vecjob-relative-out", "vecjob", "run", "job.toml")
    assert status == "FAILED", logs[-4000:]
    assert "job.toml: out out: a relative output path in a job submitted with a working dir" in logs, logs[-4000:]

    runs = tmp_path / "runs"
    status, logs = submit(ray_cluster, work, "vecjob-absolute-out", "vecjob", "run", "job.toml", "--out", str(runs))
    assert status == "SUCCEEDED", logs[-8000:]
    assert "index" in logs and "ran in" in logs
    assert (runs / "index" / "manifest.json").exists() and (runs / "run_manifest.json").exists()
    assert not (work / "out").exists()
