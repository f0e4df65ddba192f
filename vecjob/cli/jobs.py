"""`vecjob run JOB.toml`: the stages a job spec names (vecjob.pipeline), with a line a stage and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vecjob import storage
from vecjob.cli import (
    AddressOpt,
    app,
    friendly_errors,
)
from vecjob.config import ClusterConfig, SentimentConfig, load_job_spec


@app.command()
@friendly_errors
def run(
    job: Annotated[Path, typer.Argument(help="Job spec (TOML), e.g. jobs/quickstart.toml.")],
    force: Annotated[bool, typer.Option("--force", help="Redo stages that are up to date (and retrain).")] = False,
    retrain: Annotated[bool, typer.Option("--retrain", help="Train a new model; switch to it once its index is built.")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help="Run dir (a local path or s3://, gs://); overrides the spec's.")] = None,
    address: AddressOpt = None,
) -> None:
    """Run the stages a job spec names, skipping those whose outputs are up to date."""
    from rich.text import Text

    from vecjob import reporting
    from vecjob.errors import shown
    from vecjob.pipeline import headline, run_job

    if out:
        storage.check_location(out, "--out")
        storage.check_lasting(out, "--out")
        out = storage.lasting(out)
    spec = load_job_spec(job, out=out)
    if idle := [name for name, default in (("cluster", ClusterConfig()), ("sentiment", SentimentConfig()))
                if getattr(spec, name) != default and name not in spec.stages]:
        typer.echo(f"note: {job}: [{'] and ['.join(idle)}] set, but stages = [{', '.join(spec.stages)}] does not run "
                   f"{'it' if len(idle) == 1 else 'them'}: add {' and '.join(idle)} to stages", err=True)
    if address:
        spec = spec.model_copy(update={"address": address})

    def on_stage(stage: str, state: str) -> None:
        reporting.console.print(Text.assemble((stage, "bold"), f": {shown(state)}"),
                                soft_wrap=True)  # one line a stage, in a log too

    manifest = run_job(spec, force=force, on_stage=on_stage, retrain=retrain)
    rows = {r["stage"]: r["status"] + (f" in {r['seconds']:.0f}s: {headline(r['metrics'])}" if "seconds" in r else "")
            for r in manifest["stages"]}
    if "encode" in spec.stages:  # what the night brought, as a log reader asks first
        n = manifest["night"]
        rows["shards"] = (f"{n['shards_new']} new, {n['shards_changed']} changed, {n['shards_removed']} removed, "
                          f"{n['shards_unchanged']} unchanged")
    reporting.summary(f"job '{spec.name}' → {spec.out} in {manifest['seconds']:.0f}s", rows)
