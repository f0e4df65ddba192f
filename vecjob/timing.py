"""Timing a block of work: the seconds go into the manifest's `timings` and into the log."""

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
