"""The `vecjob` command line: flags → typed configs → library calls → progress and a summary.

One module a command group: `build` (corpus, train, encode, index, cluster), `query` (search,
serve), `labels` (sentiment train / eval / predict), `jobs` (run). The flags they share are
defined once, here.

Heavy modules (torch, ray, faiss) are imported inside commands so `vecjob --help` answers at once.
A VecjobError becomes one line on stderr and exit code 2, and so does a command line that cannot be parsed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import typing
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
import typer.core

from vecjob import storage
from vecjob.config import JobSpec, load_job_spec, override
from vecjob.errors import ConfigError, VecjobError, shown
from vecjob.tokenizer import unicode_problem

try:  # typer parses with a copy of click of its own in recent versions, with click itself before
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """A command line click cannot parse (an unknown flag or command, a value of the wrong type, a
    missing argument) is one line and exit code 2, as every other refusal, not a boxed usage text."""
    try:
        yield
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `vecjob`: the help is the answer
            raise
        hint = f" ({exc.ctx.command_path} --help)" if exc.ctx else ""
        typer.echo(f"error: {shown(exc.format_message().rstrip('.'))}{hint}", err=True)
        raise typer.Exit(2) from None


class _Commands(typer.core.TyperGroup):
    # The top group parses its own flags in make_context and each command's in invoke.
    def make_context(self, *args, **kwargs):
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line_usage_errors():
            return super().invoke(ctx)


app = typer.Typer(
    name="vecjob",
    cls=_Commands,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        from vecjob import __version__

        typer.echo(f"vecjob {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                               help="Print vecjob's version and exit.")] = False) -> None:
    """Batch document vectorisation on Ray: train an LSTM autoencoder, encode Parquet, index, search."""


DataArg = Annotated[list[str], typer.Argument(help="Parquet file(s), directories of them, or globs.")]
DataOpt = Annotated[Optional[list[str]], typer.Option("--data", help="Parquet collection: texts for snippets and top terms, labels for scores.")]
VectorsArg = Annotated[str, typer.Argument(help="Vectors dir written by `vecjob encode`.")]
IndexArg = Annotated[str, typer.Argument(help="Index dir written by `vecjob index`.")]
ClassifierArg = Annotated[str, typer.Argument(help="Classifier dir written by `vecjob sentiment train`.")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Model dir written by `vecjob train`.")]
QueryModelOpt = Annotated[Optional[str], typer.Option(
    "--model", help="Model dir that encodes text queries (default: the one the index records, that made its vectors).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Job spec (TOML) to take defaults from.")]
AddressOpt = Annotated[
    Optional[str], typer.Option("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")
]
IdColOpt = Annotated[Optional[str], typer.Option("--id-col", help="Id column name (default: id).")]
TextColOpt = Annotated[Optional[str], typer.Option("--text-col", help="Text column name (default: text).")]
LabelColOpt = Annotated[str, typer.Option("--label-col", help="Label column.")]
StrictOpt = Annotated[Optional[bool], typer.Option("--strict/--no-strict", help="Null or empty texts are an error.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
OutOpt = Annotated[str, typer.Option("--out", help="Folder to write: a local path or s3://, gs:// (see the command's help).")]


def friendly_errors(fn):
    """Expected failures print one line and exit 2; anything else keeps its traceback.

    An OSError (a folder that cannot be written, a disk that is full) is the environment's, not a
    bug: it is one line naming the file too. So is an argument that is empty or not valid Unicode
    (`check_arguments`). Ctrl-C, or SIGTERM from a scheduler, is one line too, and exit code
    128 + the signal's number, as a shell reports a process it stopped."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # The caller's handler comes back afterwards: a scheduler that runs the app in its own process
        # (a Python task calling `app()`) keeps its SIGTERM handling.
        caller_sigterm = None
        if threading.current_thread() is threading.main_thread():
            caller_sigterm = signal.signal(signal.SIGTERM, _stop)
        _stop_signals.clear()
        try:
            check_arguments(fn, kwargs)
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            signum = _stop_signals[-1] if _stop_signals else signal.SIGINT
            typer.echo(f"stopped by {signal.Signals(signum).name}: what was published stays whole; the same "
                       "command goes on from it", err=True)
            raise typer.Exit(128 + signum) from None
        except VecjobError as exc:
            typer.echo(f"error: {shown(storage.as_given(str(exc)))}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            typer.echo(f"error: {shown(where)}{shown(exc.strerror or exc)}", err=True)
            raise typer.Exit(2) from None
        finally:
            if caller_sigterm is not None:
                signal.signal(signal.SIGTERM, caller_sigterm)

    return wrapper


_stop_signals: list[int] = []  # what `_stop` was called for: Ray's get turns its exception into a bare KeyboardInterrupt


def _stop(signum: int, frame) -> None:
    """SIGTERM: unwind as Ctrl-C does (a KeyboardInterrupt, which no `except Exception` takes for a failure)."""
    _stop_signals.append(signum)
    raise KeyboardInterrupt


def check_arguments(command, arguments: dict) -> None:
    """Refuse, naming its flag, an argument Python decoded from bytes that are not UTF-8 (a file name
    in another encoding: it holds half surrogate pairs that no library below takes), and an empty
    one: an unset shell variable (`--out "$RUN_DIR"`) otherwise reads as the current folder, or as
    an empty column name. A query text or id says itself what is wrong with an empty one."""
    for name, value in arguments.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(item, str):  # a Path: typer reads an empty one as ".", a folder no spec is
                continue
            if item == "" and name not in _MAY_BE_EMPTY:
                raise ConfigError(f"{_flag(command, name)} is empty")
            if problem := unicode_problem(item):
                raise ConfigError(f"{_flag(command, name)} {item!r}: {problem}")


_MAY_BE_EMPTY = {"text", "doc_id", "address"}  # an empty address is the spec's own default: no cluster named


def _flag(command, name: str) -> str:
    """How the command line spells a parameter of `command`: its long option, or an argument's NAME."""
    for info in getattr(typing.get_type_hints(command, include_extras=True).get(name), "__metadata__", ()):
        if isinstance(info, typer.models.ArgumentInfo):
            return name.upper()
        if isinstance(info, typer.models.OptionInfo):  # typer reads a first argument "--id" as the declaration
            spellings = (*(info.param_decls or ()), *([info.default] if isinstance(info.default, str) else []))
            return next((d for d in spellings if d.startswith("--")), f"--{name.replace('_', '-')}")
    return f"--{name.replace('_', '-')}"


@contextlib.contextmanager
def writable(out: str, what: str = "--out") -> Iterator[str]:
    """The folder a command writes: `out` itself, or for an object-store URI its local mirror,
    published to the store when the command succeeds."""
    storage.check_location(out, what)
    storage.check_lasting(out, what)
    if not storage.is_uri(out):
        yield out
        return
    with storage.mirrored(out, what) as local:
        yield str(local)


def job_spec(config: Optional[Path], data: list[str], **data_flags) -> JobSpec:
    """The job spec's settings (or the defaults), with DATA and column flags applied."""
    for p in data:
        storage.check_location(p, "DATA")
    paths = [storage.lasting(p) for p in data]
    spec = load_job_spec(config, settings_only=True) if config else JobSpec(data={"paths": paths})
    return spec.model_copy(update={"data": override(spec.data, paths=paths, **data_flags)})


from vecjob.cli import build, jobs, labels, query  # noqa: E402,F401 - registers the commands
