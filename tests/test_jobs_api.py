"""`ray job submit -- vecjob run JOB.toml` against a real Ray head started (and stopped) by this test."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_SPEC, write_collection




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head with the dashboard (Jobs API) on free loopback ports, in its own process group."""
    pytest.importorskip("ray.dashboard", reason="the Jobs API needs ray[default]")
    bin_dir = Path(sys.executable).parent
    # Every port on a free one: the session's own Ray (and anything else) holds the defaults.
    gcs, dash, agent, agent_grpc, metrics, runtime_env = (_free_port() for _ in range(6))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    # Processes of this cluster (workers inherit the raylet's environment) must not auto-detect a
    # cluster: with the session's own Ray also running, Ray Train's State API calls would find two.
    env["RAY_ADDRESS"] = f"127.0.0.1:{gcs}"
    temp_dir = Path("/tmp") / f"vj{os.getpid()}"
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--include-dashboard=true",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
         f"--temp-dir={temp_dir}", "--object-store-memory=400000000", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            probe = subprocess.run([str(bin_dir / "ray"), "job", "list", "--address", address],
                                   env=env, capture_output=True, text=True)
            if probe.returncode == 0:
                break
            assert head.poll() is None, "ray start --head exited early"
            time.sleep(2)
        else:
            pytest.fail("the Ray head's Jobs API did not come up within 120 s")
        yield address, env
    finally:
        # This head's process group only (never `ray stop`, which kills every Ray on the machine).
        # `ray start --block` stops its processes on Ctrl-C (SIGINT); it ignores SIGTERM.
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def test_submit_vecjob_run_through_the_jobs_api(ray_head, tmp_path):
    address, env = ray_head
    work = tmp_path / "job"
    write_collection(work / "data", [30, 20])
    (work / "job.toml").write_text(TINY_SPEC.format(name="submitted", factory="auto"))
    ray = str(Path(sys.executable).parent / "ray")
    deadline = time.time() + 120
    while True:  # the dashboard answers before its job agent is up: retry that one error
        submit = subprocess.run(
            [ray, "job", "submit", "--address", address, "--working-dir", str(work), "--no-wait",
             "--submission-id", "vecjob-test", "--", "vecjob", "run", "job.toml"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        if submit.returncode == 0 or "No available agent" not in submit.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert submit.returncode == 0, submit.stderr
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.time() + 420
    status = client.get_job_status("vecjob-test")
    while not status.is_terminal() and time.time() < deadline:
        time.sleep(3)
        status = client.get_job_status("vecjob-test")
    logs = subprocess.run([ray, "job", "logs", "--address", address, "vecjob-test"],
                          env=env, capture_output=True, text=True).stdout
    assert status == JobStatus.SUCCEEDED, logs[-8000:]
    assert "index" in logs and "ran in" in logs
