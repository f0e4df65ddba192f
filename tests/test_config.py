import datetime as dt
from pathlib import Path

import pytest

from vecjob.config import JobSpec, ModelConfig, load_job_spec, override
from vecjob.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_spec_loads_and_resolves_paths():
    spec = load_job_spec(REPO / "jobs" / "quickstart.toml")
    assert spec.stages == ["corpus", "train", "encode", "index", "cluster", "sentiment"]
    assert Path(spec.data.paths[0]).is_absolute()
    assert spec.data.paths[0].startswith(str(REPO))


def test_every_job_spec_in_jobs_validates():
    for path in (REPO / "jobs").glob("*.toml"):
        assert isinstance(load_job_spec(path), JobSpec), path


def test_unknown_key_is_named(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('[data]\npaths = ["x"]\n[model]\nvariantt = "plain"\n')
    with pytest.raises(ConfigError, match="unknown key 'model.variantt'"):
        load_job_spec(spec)


def test_wrong_type_is_named(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('[data]\npaths = ["x"]\n[train]\nepochs = "many"\n')
    with pytest.raises(ConfigError, match="train.epochs"):
        load_job_spec(spec)


def test_date_expands_in_paths(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('out = "runs/{date}"\n[data]\npaths = ["in/{date}/*.parquet"]\n')
    loaded = load_job_spec(spec, run_date=dt.date(2026, 1, 2))
    assert loaded.out == str(tmp_path / "runs" / "2026-01-02")
    assert loaded.data.paths == [str(tmp_path / "in" / "2026-01-02" / "*.parquet")]


def test_cloud_paths_are_left_alone(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('out = "s3://bucket/runs/{date}"\n[data]\npaths = ["gs://b/x"]\n')
    loaded = load_job_spec(spec, run_date=dt.date(2026, 1, 2))
    assert loaded.out == "s3://bucket/runs/2026-01-02" and loaded.data.paths == ["gs://b/x"]


def test_override_applies_only_given_flags_and_revalidates():
    cfg = override(ModelConfig(), dim=64, variant=None)
    assert cfg.dim == 64 and cfg.variant == "denoising"
    with pytest.raises(ConfigError, match="variant"):
        override(ModelConfig(), variant="fancy")
