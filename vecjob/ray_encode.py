"""Encoding on Ray: `RayData` streams the units of work of `vecjob.encode_shards.encode_collection`
through a pool of encoder actors with Ray Data; each actor writes its units' vector shards and stats
itself, and the driver receives only the stats, or the error that stopped a unit."""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from typing import Callable

from vecjob.config import EncodeConfig
from vecjob.encode_shards import PartEncoder, WorkItem
from vecjob.errors import VecjobError, from_worker


def resolve_concurrency(cfg: EncodeConfig, cpus: int, gpus: int, node_cpus: int | None = None,
                        units: int | None = None) -> tuple[int, float, float, int]:
    """(actors, cpus per actor, gpus per actor, torch threads per actor), for a cluster of `cpus` in
    all whose largest node has `node_cpus` (an actor lives on one node), and `units` units of work
    (a night's few new shards): by default no more actors than units, as one without a unit would
    only load torch and the model, and those that start share the CPUs' threads."""
    if cfg.device == "cuda" and gpus == 0:
        raise VecjobError("--device cuda, but the Ray cluster has no GPUs (the actors could never start)")
    use_gpu = cfg.device == "cuda" or (cfg.device == "auto" and gpus > 0)
    if use_gpu:
        actors = cfg.concurrency or max(1, min(gpus, units or gpus))
        return actors, 1.0, min(1.0, gpus / actors), 1
    # One single-threaded actor per CPU: a hidden-128 LSTM step is a small matrix product, and two
    # threads synchronise on every time step; on 2 CPUs, 2 actors × 1 thread encode 1.17× faster
    # than 1 actor × 2 threads (bench/README.md, Ray overhead).
    actors = cfg.concurrency or max(1, min(cpus, units or cpus))
    threads = max(1, min(cpus // actors, node_cpus or cpus))
    # A fraction below the threads it uses leaves the scheduler room for Ray Data's own tasks:
    # actors that hold every CPU starve them and the pipeline hangs (shared/RAY_NOTES.md).
    return actors, max(0.25, threads - 0.5), 0.0, threads


ACTORS_START_S = 300  # longest wait for the encoder actors to start before the run fails


@dataclass
class RayData:
    """Encoder actors on the Ray cluster at `address` (else RAY_ADDRESS, else an embedded local Ray),
    one per CPU or GPU unless `encode.concurrency` says otherwise."""

    address: str | None = None
    name = "ray"

    @property
    def on_this_machine(self) -> bool:  # an embedded local Ray: the actors are processes of this machine
        from vecjob.runtime import names_a_cluster

        return not names_a_cluster(self.address)

    def encode(self, items: list[WorkItem], encoder_kwargs: dict, cfg: EncodeConfig,
               sink: Callable[[dict], None]) -> int:
        from vecjob import runtime

        runtime.connect(self.address)
        return _run_ray(items, encoder_kwargs, cfg, sink)


def _run_ray(items: list[WorkItem], encoder_kwargs: dict, cfg: EncodeConfig, sink: Callable[[dict], None]) -> int:
    import ray

    from vecjob.runtime import check_fits, cluster_cpus_gpus, largest_node_cpus

    cpus, gpus = cluster_cpus_gpus()
    actors, cpus_per_actor, gpus_per_actor, threads = resolve_concurrency(cfg, cpus, gpus, largest_node_cpus(),
                                                                          len(items))
    if cfg.concurrency:
        check_fits(f"encode.concurrency (--concurrency) = {actors}", actors, cpus_per_actor, gpus_per_actor)
    device = "cuda" if gpus_per_actor > 0 else ("cpu" if cfg.device == "auto" else cfg.device)
    # Start encoding once every actor is up: otherwise the first one ready takes the items while the
    # others wait for CPUs that, say, a finishing training run still holds (seen on two nodes).
    ray.data.DataContext.get_current().wait_for_min_actors_s = ACTORS_START_S
    ds = ray.data.from_items([asdict(it) for it in items], override_num_blocks=len(items))
    ds = ds.map_batches(
        PartEncoder,
        fn_constructor_kwargs={**encoder_kwargs, "device": device, "threads": threads},
        batch_size=1,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    try:
        for stats in ds.iter_rows():
            if "failed" in stats:
                raise pickle.loads(stats["failed"])
            sink(dict(stats))
    except Exception as exc:  # noqa: BLE001 - surface the worker's own message (it names the file)
        raise from_worker(exc, "encoding") from exc
    return actors
