"""Ray runtime: connect to a cluster (--address / RAY_ADDRESS) or start an embedded local Ray."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def connect(address: str | None = None) -> dict:
    """Initialise Ray once per process; returns the cluster's resources."""
    import ray

    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            log.info("connecting to Ray cluster at %s", address)
            ray.init(address=address, log_to_driver=True)
        else:
            # Local runs need no token auth; the default object store (30% of RAM) is far more than needed.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                object_store_memory=_local_object_store_bytes(),
                # Worker errors still reach the driver as exceptions; their chatter does not.
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        _quiet_ray_data()
    return ray.cluster_resources()


def _local_object_store_bytes() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return int(min(2 << 30, max(512 << 20, total // 10)))


def _quiet_ray_data() -> None:
    # vecjob shows its own progress; Ray Data's bars would interleave with it.
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def cluster_cpus_gpus() -> tuple[int, int]:
    import ray

    res = ray.cluster_resources()
    return int(res.get("CPU", 0)), int(res.get("GPU", 0))
