"""Progress bars and summary tables (rich, on stderr so --json output on stdout stays clean)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vecjob.errors import shown

# No markup or emoji codes: what is printed holds ids, texts, labels and paths from the user's data, where
# "[/]" stopped a command with rich's MarkupError, "[citation needed]" vanished and ":fire:" became 🔥.
console = Console(stderr=True, markup=False, emoji=False)


@contextlib.contextmanager
def row_progress(description: str) -> Iterator[tuple[Callable[[int, int], None], Callable[[int], None]]]:
    """Yields (on_plan(todo_rows, total_rows), on_rows(n)) callbacks driving one progress bar.
    The bar appears with the first encoded rows, so input refused before that prints only its error."""
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
