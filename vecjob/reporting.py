"""Progress bars and summary tables (rich, on stderr so --json output on stdout stays clean)."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vecjob.errors import shown
from vecjob.timing import duration

# No markup or emoji codes: what is printed holds ids, texts, labels and paths from the user's data, where
# "[/]" stopped a command with rich's MarkupError, "[citation needed]" vanished and ":fire:" became 🔥.
console = Console(stderr=True, markup=False, emoji=False)


@contextlib.contextmanager
def row_progress(description: str) -> Iterator[tuple[Callable[[int, int], None], Callable[[int], None]]]:
    """Yields (on_plan(todo_rows, total_rows), on_rows(n)) callbacks driving one progress bar.
    The bar appears with the first encoded rows, so input refused before that prints only its error.
    In a log (no terminal), where a bar is drawn once at its end, a line every 30 s instead (`RowLines`)."""
    if not console.is_terminal:
        lines = RowLines(description)
        yield lines.on_plan, lines.on_rows
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )
    task = progress.add_task(description, total=None)

    def on_plan(todo: int, total: int) -> None:
        progress.update(task, total=todo)

    def on_rows(n: int) -> None:
        progress.start()
        progress.advance(task, n)

    try:
        yield on_plan, on_rows
    finally:
        if progress.live.is_started:  # a bar never shown would still end its line: an empty one before an error
            progress.stop()


class RowLines:
    """A long stage's progress as a line at most every `every_s` seconds, for `vecjob run`, whose output
    is most often a nightly job's log: rows done of those to do, the rate, the time left at that rate.
    A stage shorter than `every_s` prints none; `on_plan` and `on_rows` are `row_progress`'s callbacks."""

    def __init__(self, stage: str, every_s: float = 30.0):
        self.stage, self.every_s = stage, every_s
        self.todo = self.done = 0
        self.started = self.shown = time.monotonic()

    def on_plan(self, todo: int, total: int) -> None:
        self.todo, self.started = todo, time.monotonic()
        self.shown = self.started

    def on_rows(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.shown < self.every_s or not 0 < self.done < self.todo:
            return
        self.shown = now
        rate = self.done / max(now - self.started, 1e-9)
        line(f"{self.stage}: {self.done:,} of {self.todo:,} rows ({self.done / self.todo:.0%}), {rate:,.0f} rows/s, "
             f"about {duration((self.todo - self.done) / rate)} left")


def line(text: str) -> None:
    """One progress line, never wrapped: a nightly log keeps it whole whatever width rich guesses."""
    console.print(text, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    with console.status(message):
        yield


def summary(title: str, rows: dict[str, object]) -> None:
    """A titled two-column summary: a table in a terminal, plain aligned lines in a log (a nightly
    job's), where a table would be cut to the width rich guesses."""
    title, rows = shown(title), {shown(key): _fmt(value) for key, value in rows.items()}
    if not console.is_terminal:
        width = max(map(len, rows), default=0)
        console.print(title, highlight=False, soft_wrap=True)
        for key, value in rows.items():
            console.print(f"  {key:<{width}}  {value}", highlight=False, soft_wrap=True)
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return shown(value)
