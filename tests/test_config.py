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


def test_a_path_starting_with_a_tilde_is_in_the_home_folder_not_in_a_folder_named_tilde(tmp_path, monkeypatch):
    # TOML expands nothing: out = "~/runs" wrote the run into a folder "~" beside the spec.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    spec = tmp_path / "job.toml"
    spec.write_text('out = "~/runs/{date}"\n[data]\npaths = ["~/data/*.parquet"]\n'
                    '[sentiment]\nlabels = ["~/l.parquet"]\n[train]\nstorage_path = "~/ckpt"\n')
    loaded = load_job_spec(spec, run_date=dt.date(2026, 1, 2))
    home = tmp_path / "home"
    assert loaded.out == str(home / "runs" / "2026-01-02") and loaded.data.paths == [str(home / "data" / "*.parquet")]
    assert loaded.sentiment.labels == [str(home / "l.parquet")] and loaded.train.storage_path == str(home / "ckpt")


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


def test_object_store_uris_in_a_spec_are_kept_as_they_are(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('out = "s3://bucket/runs/{date}"\n[data]\npaths = ["gs://bucket/in/*.parquet", "local"]\n')
    loaded = load_job_spec(spec, run_date=dt.date(2026, 1, 2))
    assert loaded.out == "s3://bucket/runs/2026-01-02"
    assert loaded.data.paths == ["gs://bucket/in/*.parquet", str(tmp_path / "local")]


@pytest.mark.parametrize("key, toml, problem", [
    ("out", 'out = "s3:/bucket"\n[data]\npaths = ["d"]', "malformed URI"),
    ("data.paths", '[data]\npaths = ["gs://b/x"]', "malformed URI \\(bucket 'b': a bucket's name is 3 to 63"),
    ("train.storage_path", '[data]\npaths = ["d"]\n[train]\nstorage_path = "ftp://host/x"', "unsupported scheme"),
    ("out", 'out = "runs/{dat}"\n[data]\npaths = ["d"]', r"\{dat\} is not filled in"),  # a mistyped {date}
    ("data.paths", '[data]\npaths = ["d/{out}/x"]', r"\{out\} is not filled in"),  # {out} only at the start
    ("out", 'out = "{out}/x"\n[data]\npaths = ["d"]', r"\{out\} stands for the run dir, which this key names"),
])
def test_malformed_or_foreign_uris_in_a_spec_are_refused(tmp_path, key, toml, problem):
    spec = tmp_path / "job.toml"
    spec.write_text(toml + "\n")
    with pytest.raises(ConfigError, match=f"^{spec}: {key} .*{problem}"):
        load_job_spec(spec, run_date=dt.date(2026, 1, 2))
    assert list(tmp_path.iterdir()) == [spec]


def test_stages_run_in_pipeline_order_whatever_the_spec_lists():
    spec = JobSpec(data={"paths": ["d"]}, stages=["index", "encode", "train"])
    assert spec.stages == ["train", "encode", "index"]
    with pytest.raises(ValueError, match="listed twice"):
        JobSpec(data={"paths": ["d"]}, stages=["train", "train"])
    with pytest.raises(ValueError, match="unknown stage 'embed' \\(the stages: corpus, train, encode"):
        JobSpec(data={"paths": ["d"]}, stages=["train", "embed"])
    with pytest.raises(ValueError, match="no stage to run"):
        JobSpec(data={"paths": ["d"]}, stages=[])


@pytest.mark.parametrize("body, message", [
    ('out = ""\n[data]\npaths = ["d"]', "job.toml: out is empty"),
    ('[data]\npaths = ["d", " "]', "job.toml: data.paths is empty or holds an empty path"),
])
def test_an_empty_out_or_data_path_is_refused_not_read_as_the_specs_folder(tmp_path, body, message):
    spec = tmp_path / "job.toml"
    spec.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_job_spec(spec)


def test_a_removed_setting_loads_at_the_value_vecjob_keeps_and_is_refused_at_another(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('[data]\npaths = ["d"]\n[model]\nshuffle_window = 0\npooling = "meanmax"\nnum_layers = 1\n'
                    'bidirectional = true\noutput_layer = "adaptive"\ninit_embeddings = "lsa"\n[train]\n'
                    'lr_schedule = "constant"\nlr_min_fraction = 0.3\ngrad_clip = 1.0\nweight_decay = 0.0\nprecision = "fp32"\n')
    assert load_job_spec(spec).train.lr == 2e-3
    spec.write_text('[data]\npaths = ["d"]\n[model]\npooling = "mean"\n')
    with pytest.raises(ConfigError, match="model: pooling = 'mean' is no longer supported"):
        load_job_spec(spec)
    for body, key in [('[model]\noutput_layer = "full"', "output_layer"), ('[model]\ninit_embeddings = "random"',
                      "init_embeddings"), ('[train]\nprecision = "bf16"', "precision")]:
        spec.write_text(f'[data]\npaths = ["d"]\n{body}\n')
        with pytest.raises(ConfigError, match=f"{key} = .* is no longer supported"):
            load_job_spec(spec)
    spec.write_text('[data]\npaths = ["d"]\n[train]\nlr_schedule = "cosine"\n')
    with pytest.raises(ConfigError, match="job.toml: train: lr_schedule = 'cosine' is no longer supported .vecjob now "
                                          "always behaves as lr_schedule = 'constant'.: remove the key$"):
        load_job_spec(spec)


@pytest.mark.parametrize("table, key, value", [
    ("tokenizer", "max_len", 0), ("tokenizer", "max_vocab", 2), ("tokenizer", "min_count", 0), ("model", "dim", 0),
    ("model", "hidden_dim", -3), ("model", "hidden_dim", 8), ("model", "dropout", 1.5), ("model", "word_dropout", 2), ("model", "bow_weight", -1),
    ("model", "bow_context", 1025),
    ("train", "batch_size", 0), ("train", "lr", -1), ("train", "val_fraction", 1.0), ("train", "patience", 0),
    ("train", "workers", -1), ("train", "seed", -1), ("encode", "rows_per_task", 0), ("encode", "concurrency", -2),
    ("index", "recall_queries", 0), ("index", "target_recall", 2), ("cluster", "iterations", 0), ("cluster", "seeds", 0),
])
def test_a_value_out_of_its_range_is_one_line_naming_the_key(tmp_path, table, key, value):
    spec = tmp_path / "job.toml"
    spec.write_text(f'[data]\npaths = ["d"]\n[{table}]\n{key} = {value}\n')
    with pytest.raises(ConfigError, match=f"^.*job.toml: {table}.{key}: Input should be [^\n]*$"):
        load_job_spec(spec)


@pytest.mark.parametrize("table, key, value, message", [
    ("train", "epochs", 0, 'must be "auto" or at least 1'), ("cluster", "k", 1, 'must be "auto" or at least 2'),
])
def test_a_count_that_may_also_be_auto_is_refused_out_of_range_when_the_spec_loads(tmp_path, table, key, value,
                                                                                   message):
    spec = tmp_path / "job.toml"  # not when its stage starts, after the training before it
    spec.write_text(f'[data]\npaths = ["d"]\n[{table}]\n{key} = {value}\n')
    with pytest.raises(ConfigError, match=f"^.*job.toml: {table}.{key}: {message}$"):
        load_job_spec(spec)


@pytest.mark.parametrize("body, message", [
    ('[model]\ndim = true', "model.dim: Input should be a valid integer$"),  # not 1
    ('[cluster]\nk = true', "cluster.k: Input should be a valid integer or Input should be 'auto'$"),  # not 1
    ('strict = "no"', "data.strict: Input should be a valid boolean$"),  # a string, not false
    ('[tokenizer]\nmax_vocab = 99999999999999999999', "tokenizer.max_vocab: Input should be less than or equal to"),
    ('[train]\nepochs = 1.5', "train.epochs: Input should be a valid integer or Input should be 'auto'$"),
    # TOML reads inf: an infinite learning rate or loss weight trained a model of NaN weights
    ('[train]\nlr = inf', "train.lr: Input should be a finite number$"),
    ('[model]\ntfidf_weight = +inf', "model.tfidf_weight: Input should be a finite number$"),
])
def test_a_value_of_the_wrong_kind_is_one_line_naming_the_key_alone(tmp_path, body, message):
    spec = tmp_path / "job.toml"
    spec.write_text(f'[data]\npaths = ["d"]\n{body}\n')
    with pytest.raises(ConfigError, match=f"job.toml: {message}"):
        load_job_spec(spec)


def test_a_spec_that_is_not_utf8_text_is_one_line(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_bytes(b"\xff\xfe name = 'x'")
    with pytest.raises(ConfigError, match="job.toml: not UTF-8 text"):
        load_job_spec(spec)


def test_a_folder_given_as_the_spec_is_one_line(tmp_path):
    # `--config ""` (an unset variable) reaches vecjob as ".": the line was "error: .: Is a directory".
    with pytest.raises(ConfigError, match=f"^{tmp_path}: a folder, not a job spec"):
        load_job_spec(tmp_path)


def test_a_spec_saved_with_a_byte_order_mark_loads(tmp_path):
    spec = tmp_path / "job.toml"  # as Windows Notepad saves UTF-8
    spec.write_bytes(b'\xef\xbb\xbfname = "caf\xc3\xa9"\n[data]\npaths = ["d"]\n')
    assert load_job_spec(spec).name == "caf\u00e9"


def test_a_flag_out_of_its_range_is_one_line_naming_it(tmp_path):
    from typer.testing import CliRunner

    from vecjob.cli import app

    result = CliRunner().invoke(app, ["train", str(tmp_path), "--out", str(tmp_path / "m"), "--hidden-dim", "0"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == "error: --hidden-dim: Input should be greater than or equal to 16"
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_override_applies_only_given_flags_and_revalidates():
    cfg = override(ModelConfig(), dim=64, variant=None)
    assert cfg.dim == 64 and cfg.variant == "denoising"
    with pytest.raises(ConfigError, match="variant"):
        override(ModelConfig(), variant="fancy")


def test_the_nightly_spec_loads_with_its_model_policy():
    spec = load_job_spec(REPO / "jobs" / "nightly.toml")
    assert spec.out == "s3://vecjob-data/collection" and spec.data.paths == ["s3://vecjob-data/docs/*/*.parquet"]
    assert spec.train.max_model_age_days == 90 and spec.train.retrain_drift == 0.07
    assert spec.stages[:3] == ["train", "encode", "index"]


def test_a_spec_given_to_a_command_for_its_settings_needs_no_data(tmp_path):
    # `vecjob train DATA --config settings.toml` refused a spec without data.paths, though DATA names it;
    # `vecjob run` still needs the spec's own.
    from vecjob.cli import job_spec

    spec = tmp_path / "settings.toml"
    spec.write_text("[train]\nlr = 0.001\n")
    settings = job_spec(spec, [str(tmp_path / "docs.parquet")])
    assert settings.data.paths == [str(tmp_path / "docs.parquet")] and settings.train.lr == 0.001
    with pytest.raises(ConfigError, match="settings.toml: data.paths is empty"):
        load_job_spec(spec)
