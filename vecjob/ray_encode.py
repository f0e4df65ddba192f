"""`vecjob encode`: stream work items through encoder actors with Ray Data; the driver assembles and
writes one vector shard per input shard. `runner="local"` runs the same classes in-process (the
test path and the benchmark baseline)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from vecjob import storage
from vecjob.config import DataConfig, EncodeConfig
from vecjob.encode_shards import (
    STATS_DIR,
    PartEncoder,
    ShardAssembler,
    empty_part,
    generation_key,
    input_fingerprints,
    plan_items,
    remove_other_generations,
    shard_is_done,
    stats_name,
    vectors_fingerprint,
)
from vecjob.errors import ConfigError, InputError, VecjobError, from_worker
from vecjob.model_dir import read_model_info
from vecjob.outputs import check_output, output_lock
from vecjob.parquet_io import (
    MANIFEST,
    check_shards,
    clean_stale_temporaries,
    new_manifest,
    read_json,
    write_json_atomic,
)
from vecjob.vectors import MANIFEST_KIND


def resolve_concurrency(cfg: EncodeConfig, cpus: int, gpus: int, node_cpus: int | None = None
                        ) -> tuple[int, float, float, int]:
    """(actors, cpus per actor, gpus per actor, torch threads per actor), for a cluster of `cpus` in
    all whose largest node has `node_cpus` (an actor lives on one node)."""
    if cfg.device == "cuda" and gpus == 0:
        raise VecjobError("--device cuda, but the Ray cluster has no GPUs (the actors could never start)")
    use_gpu = cfg.device == "cuda" or (cfg.device == "auto" and gpus > 0)
    if use_gpu:
        actors = cfg.concurrency or max(1, gpus)
        return actors, 1.0, min(1.0, gpus / actors), 1
    # One single-threaded actor per CPU: a hidden-128 LSTM step is a small matrix product, and two
    # threads synchronise on every time step; on 2 CPUs, 2 actors × 1 thread encode 1.17× faster
    # than 1 actor × 2 threads (bench/README.md, Ray overhead).
    actors = cfg.concurrency or max(1, cpus)
    threads = max(1, min(cpus // actors, node_cpus or cpus))
    # A fraction below the threads it uses leaves the scheduler room for Ray Data's own tasks:
    # actors that hold every CPU starve them and the pipeline hangs (shared/RAY_NOTES.md).
    return actors, max(0.25, threads - 0.5), 0.0, threads


RUNNERS = ("ray", "local")
ACTORS_START_S = 300  # longest wait for the encoder actors to start before the run fails
RESERVED_COLUMNS = ("id", "vector")


def encode_collection(
    data: DataConfig,
    model_dir: str | Path,
    out_dir: str | Path,
    cfg: EncodeConfig,
    runner: str = "ray",
    on_rows: Callable[[int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    address: str | None = None,
) -> dict:
    """Encode every input shard not already done; returns the vectors dir manifest.
    `runner` "ray" connects to `address` (else RAY_ADDRESS, else a local Ray) once the checks pass.

    Everything that can be known before work starts is checked first (the output location, every
    shard's schema, null ids, --strict texts, the model dir), so bad input writes nothing.
    """
    if runner not in RUNNERS:
        raise ConfigError(f"--runner {runner!r}: expected one of {', '.join(RUNNERS)}")
    for col in cfg.keep_columns:
        if col in RESERVED_COLUMNS:
            raise ConfigError(f"--keep {col}: the vector shards already have a '{col}' column")
    out_dir = check_output(out_dir, "--out", data.paths, markers=(MANIFEST, STATS_DIR))
    t_start = time.perf_counter()
    shards = check_shards(data.paths, data.id_col, data.text_col, data.strict, tuple(cfg.keep_columns))
    if len({s.name for s in shards}) != len(shards):
        raise InputError("two input shards map to the same output name")
    model = read_model_info(model_dir)
    model_fp, dim = model.fingerprint, model.dim
    columns = {"id": data.id_col, "text": data.text_col, "keep": list(cfg.keep_columns)}

    with output_lock(out_dir):
        input_fps = input_fingerprints(shards)
        keys = [generation_key(fp, model_fp, columns) for fp in input_fps]
        for folder in (out_dir, out_dir / STATS_DIR):
            if folder.exists():
                clean_stale_temporaries(folder)
        todo = {i for i, s in enumerate(shards) if not shard_is_done(out_dir, s, keys[i], input_fps[i], model_fp)}
        items = [it for it in plan_items(shards, cfg.rows_per_task) if it.shard in todo]
        if on_plan:
            on_plan(sum(shards[i].num_rows for i in todo), sum(s.num_rows for s in shards))
        assembler = ShardAssembler(
            out_dir, shards, input_fps, keys, model_fp, todo,
            empty_table=lambda s_idx: empty_part(shards[s_idx], s_idx, data.id_col, cfg.keep_columns, dim),
            on_rows=on_rows,
        )
        encoder_kwargs = dict(
            model_dir=storage.absolute(model_dir), id_col=data.id_col, text_col=data.text_col,
            keep_columns=list(cfg.keep_columns), batch_size=cfg.batch_size, strict=data.strict,
        )
        t0 = time.perf_counter()
        if items and runner == "ray":
            from vecjob import runtime

            runtime.connect(address)
            actors = _run_ray(items, encoder_kwargs, cfg, assembler)
        elif items:
            actors = 1
            encoder = PartEncoder(**encoder_kwargs, device=cfg.device)
            for item in items:
                assembler.add(encoder.encode_item(item))
        else:
            actors = 0
        assembler.check_complete()
        encode_s = time.perf_counter() - t0

        stats = [read_json(out_dir / stats_name(s, keys[i])) for i, s in enumerate(shards)]
        manifest = new_manifest(
            MANIFEST_KIND,
            model_dir=storage.absolute(model_dir),
            model_fingerprint=model_fp,
            vectors_fingerprint=vectors_fingerprint(stats),
            dim=dim,
            columns=columns,
            config=cfg.model_dump(),
            runner=runner,
            actors=actors,
            counts={
                "shards": len(shards),
                "shards_encoded": len(todo),
                "shards_skipped_done": len(shards) - len(todo),
                "rows_in": sum(s["rows_in"] for s in stats),
                "rows_out": sum(s["rows_out"] for s in stats),
                "skipped_empty": sum(s["skipped_empty"] for s in stats),
                "tokens": sum(s["tokens"] for s in stats),
            },
            timings={"encode_wall_s": encode_s, "total_s": time.perf_counter() - t_start},
            shards=stats,
        )
        write_json_atomic(manifest, out_dir / MANIFEST)
        remove_other_generations(out_dir, stats)
    return manifest


def _run_ray(items, encoder_kwargs: dict, cfg: EncodeConfig, assembler: ShardAssembler) -> int:
    import pyarrow as pa
    import ray

    from vecjob.runtime import cluster_cpus_gpus, largest_node_cpus

    cpus, gpus = cluster_cpus_gpus()
    actors, cpus_per_actor, gpus_per_actor, threads = resolve_concurrency(cfg, cpus, gpus, largest_node_cpus())
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
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            assembler.add(block if isinstance(block, pa.Table) else pa.Table.from_pydict(block))
    except Exception as exc:  # noqa: BLE001 - surface the worker's own message (it names the file)
        raise from_worker(exc, "encoding") from exc
    return actors
