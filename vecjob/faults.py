"""Fault injection for the failure-behaviour tests, so a kill lands at a chosen point, not a lucky time.

VECJOB_KILL_AT="<point>:<n>" makes the process SIGKILL itself the n-th time it reaches <point>
(e.g. "part_written:2"). Unset, as in every real run, `reached` is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_seen: Counter[str] = Counter()


def reached(point: str) -> None:
    spec = os.environ.get("VECJOB_KILL_AT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != point:
        return
    _seen[point] += 1
    if _seen[point] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
