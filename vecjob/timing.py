"""Timing a block of work: the seconds go into the manifest's `timings` and into the log; a duration
as a progress line shows it."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Iterator

log = logging.getLogger("vecjob")


@contextlib.contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall seconds to `timings[key]` (also when it raises) and log them."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
        log.info("%s %.2fs", key, timings[key])


def duration(seconds: float) -> str:
    """A time left as a progress line shows it: seconds under a minute and a half, else minutes."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
