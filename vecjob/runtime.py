"""Ray runtime: connect to a cluster (--address / RAY_ADDRESS) or start an embedded local Ray."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading

from vecjob.errors import ConfigError

log = logging.getLogger(__name__)


TRAIN_POLL_S = 0.5  # seconds between Ray Train's polls of its workers on the embedded local Ray


def names_a_cluster(address: str | None) -> bool:
    """Whether `connect(address)` joins a running cluster rather than starting a Ray of this process's own."""
    return (address or os.environ.get("RAY_ADDRESS") or "local") != "local"


def connect(address: str | None = None) -> dict:
    """Initialise Ray once per process; returns the cluster's resources."""
    import ray

    if not ray.is_initialized():
        stop_handler = signal.getsignal(signal.SIGTERM)
        source = "address (--address)" if address else "RAY_ADDRESS"
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address == "local":  # Ray's word for a Ray of this process's own, as with no address
            address = None
        if address:
            _check_answers(address, source)
            log.info("connecting to Ray cluster at %s", address)
            try:
                ray.init(address=address, log_to_driver=True, **_storage_env())
            except ConnectionError as exc:  # no local cluster for "auto"; a Ray Client that never answered
                raise ConfigError(f"{source} {address}: {exc}") from None
        else:
            _note_a_cluster_started_here()
            # Local runs need no token auth; the default object store (30% of RAM) is far more than needed.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            # Ray Train's controller acts on a run's events (start, each round's report, the end) only when
            # it next polls its workers, every 2 s by default: each event would wait up to that long.
            os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(TRAIN_POLL_S))
            ray.init(
                # "local": a Ray of this process's own. With no address Ray joins the cluster a `ray start`
                # on this machine left its address for, and refuses the settings below (a ValueError).
                address="local",
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                object_store_memory=_local_object_store_bytes(),
                # Worker errors still reach the driver as exceptions; their chatter does not.
                log_to_driver=False,
                logging_level=logging.WARNING,
                **_storage_env(),
            )
        _quiet_ray_data()
        # ray.init replaces a SIGTERM handler with its own, which exits after a C++ stack dump that reads
        # like a crash in a nightly log: the caller's (the CLI's one line) stays.
        if callable(stop_handler) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop_handler)
    return ray.cluster_resources()


def _note_a_cluster_started_here() -> None:
    """Say so when a cluster that `ray start` began on this machine answers (a `ray up` head node):
    vecjob runs beside it, on a Ray of its own, unless told to use it."""
    import socket

    try:
        from ray._private.utils import read_ray_address  # where `ray start` leaves it; private, so guarded

        address = read_ray_address()
        host, _, port = (address or "").rpartition(":")
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except (ImportError, OSError, ValueError):  # none, one that has stopped, or a Ray that keeps it elsewhere
        return
    log.warning("a Ray cluster started on this machine answers at %s; vecjob starts a Ray of its own "
                "(use that cluster with --address auto or RAY_ADDRESS)", address)


CONNECT_CHECK_S = 10.0  # a cluster's GCS answers at once; a host that drops packets is given this long
RAY_CLIENT_PORT = "10001"  # Ray Client's port when a ray:// address names none


def _check_answers(address: str, source: str) -> None:
    """Refuse a cluster address (host:port of its GCS, or ray://host[:port] of its Ray Client server)
    that is malformed or where nothing listens: Ray would raise a traceback for the first and, for the
    second, retry for minutes printing warnings (Ray Client: 30 s, then a line naming no address)."""
    import socket

    scheme, client, rest = address.rpartition("://")
    if address == "auto" or (client and scheme != "ray"):  # this machine's cluster; another client builder's
        return
    host, colon, port = rest.rpartition(":")
    if client and (not colon or "]" in port):  # ray://HOST ([IPv6] too): Ray Client's own port
        host, port = rest, RAY_CLIENT_PORT
    if not host or not port.isdecimal() or not 0 < int(port) < 65536:
        raise ConfigError(f"{source} {address}: not a Ray cluster address (HOST:PORT, auto, local or ray://HOST:PORT)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_CHECK_S).close()
    except OSError as exc:
        what = "Ray Client server" if client else "Ray cluster"
        raise ConfigError(f"{source} {address}: no {what} answers there ({exc.strerror or exc})") from None


STORAGE_ENV = ("AWS_", "GOOGLE_", "VECJOB_CACHE")


def _storage_env() -> dict:
    """Object-store settings (endpoint, region, credentials) for every worker, as the driver has them.
    A job submitted through the Jobs API already carries its own runtime env, which this would replace."""
    env = {k: v for k, v in os.environ.items() if k.startswith(STORAGE_ENV)}
    if not env or "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        return {}
    return {"runtime_env": {"env_vars": env}}


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30


def _local_object_store_bytes() -> int:
    return int(min(2 << 30, max(512 << 20, machine_memory_bytes() // 10)))


def _quiet_ray_data() -> None:
    # vecjob shows its own progress and a summary per stage: Ray Data's bars would interleave with it,
    # and its per-run lines (execution finished, "progress bars disabled") say nothing vecjob's do not.
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def check_fits(setting: str, count: int, cpus_each: float, gpus_each: float = 0.0, hint: str = "") -> None:
    """`count` workers of `cpus_each` CPUs and `gpus_each` GPUs, which `setting` (a key and its value)
    asks for, more than the Ray cluster holds: refused on a Ray this process started (one machine that
    never grows: the work would wait for ever); on a cluster, a warning, as its autoscaler may add the
    nodes the work waits for."""
    cpus, gpus = cluster_cpus_gpus()
    if count * cpus_each <= cpus and count * gpus_each <= gpus:
        return
    each = f"{cpus_each:g} CPU" + (f" and {gpus_each:g} GPU" if gpus_each else "")
    message = (f"{setting}: {count} × {each} is more than the Ray cluster's {cpus} CPUs"
               + (f" and {gpus} GPUs" if gpus_each else ""))
    if started_here():
        fits = int(min(cpus / cpus_each if cpus_each else math.inf, gpus / gpus_each if gpus_each else math.inf))
        raise ConfigError(f"{message} ({hint or f'at most {fits} fit'})")
    log.warning("%s: waiting for nodes to join", message)


def started_here() -> bool:
    """Whether this process started the Ray it is connected to (a local Ray, not a cluster's head)."""
    import ray._private.worker

    node = getattr(ray._private.worker, "_global_node", None)
    return bool(node is not None and node.is_head())


def cluster_cpus_gpus() -> tuple[int, int]:
    import ray

    res = ray.cluster_resources()
    return int(res.get("CPU", 0)), int(res.get("GPU", 0))


def largest_node_cpus() -> int:
    import ray

    return int(max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0))
