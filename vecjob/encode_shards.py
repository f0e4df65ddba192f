"""Encoding a sharded collection, without Ray: plan units of work, encode each one where it runs.

`encode_collection` is the whole job; an executor runs its units of work: `InProcess` here, one
after another, or `vecjob.ray_encode.RayData` over a pool of encoder actors.

A unit of work (`WorkItem`) is an input shard, or a run of its row groups (≤ rows_per_task rows)
when it holds more, or a slice of a row group larger than that, so large shards are spread over
workers and small ones are not merged; a unit is read and encoded READ_ROWS rows at a time. Each unit
has its own vector shard. `PartEncoder` reads a unit's rows, encodes them, and writes the unit's
vector shard and stats file itself, straight to where the vectors are published (the store, when the
run dir is in one), then returns the stats: the driver plans the units and writes the manifest, and
never holds a vector, so its memory does not grow with the collection and encoding scales out.

Every output file is named after its generation: the input shard's name plus a key of its content,
the model and the columns (their names, and the types kept columns are written as: `generation_key`).
A rerun with another model or changed input writes new names beside the old ones and never rewrites
a file the current manifest lists, so a run stopped part way leaves the previous generation whole; a
unit whose output and stats exist under its key is skipped. Files of other generations are removed
once the new manifest is published.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from vecjob import faults, storage
from vecjob.config import DataConfig, EncodeConfig
from vecjob.errors import InputError, VecjobError, quoted
from vecjob.model_dir import read_model_info
from vecjob.outputs import check_output, output_lock
from vecjob.parquet_io import (
    MANIFEST,
    Shard,
    check_content,
    check_shards,
    clean_stale_temporaries,
    file_fingerprint,
    fingerprint,
    iter_rows,
    kept_column_types,
    new_manifest,
    partition_values,
    read_json,
    write_json_atomic,
    write_parquet_atomic,
)
from vecjob.timing import timed
from vecjob.vectors import MANIFEST_KIND, vectors_table, with_model_fingerprint

STATS_DIR = "_stats"
READ_ROWS = 4_096  # rows a unit reads, tokenises and encodes at a time: its memory does not grow with it


@dataclass(frozen=True)
class WorkItem:
    shard: int  # index into the plan's shard list
    path: str
    row_groups: list[int]
    rows: int
    output: str  # the vector shard's file name: its generation
    input_fingerprint: str
    skip: int = 0  # rows of the row groups before the unit's own: a slice of a row group larger than a unit


def row_group_runs(row_group_rows: tuple[int, ...], rows_per_task: int) -> list[list[int]]:
    """Consecutive row groups cut into runs of ≤ rows_per_task rows (a larger group is a run alone)."""
    runs: list[list[int]] = []
    rows = 0
    for rg, n in enumerate(row_group_rows):
        if not runs or rows + n > rows_per_task:
            runs.append([])
            rows = 0
        runs[-1].append(rg)
        rows += n
    return runs


# A row group of more than rows_per_task rows (pandas writes a million rows to one) is cut into slices
# of rows_per_task rows, at most this many: each slice's reader decodes the group up to its own rows,
# so more slices would add decoding, while this many already spread a group over 16 encoders.
MAX_SLICES = 16


def shard_units(row_group_rows: tuple[int, ...], rows_per_task: int) -> list[tuple[list[int], int, int]]:
    """(row groups, rows skipped, rows) of each unit of one shard: runs of consecutive row groups of
    ≤ rows_per_task rows, and slices of a larger row group."""
    units = []
    for groups in row_group_runs(row_group_rows, rows_per_task):
        rows = sum(row_group_rows[g] for g in groups)
        if rows <= rows_per_task:
            units.append((groups, 0, rows))
            continue
        step = max(rows_per_task, math.ceil(rows / MAX_SLICES))
        units += [(groups, skip, min(step, rows - skip)) for skip in range(0, rows, step)]
    return units


def generation_key(input_fp: str, model_fp: str, columns: dict, split: int | tuple | None = None) -> str:
    """What a vector shard's content depends on: the input's content, the model, the columns kept,
    and for a shard cut into units, the cut."""
    return fingerprint(input_fp, model_fp, columns, *([split] if split else []))[:12]


def plan_items(shards: list[Shard], input_fps: list[str], model_fp: str, columns: dict,
               rows_per_task: int) -> list[WorkItem]:
    items: list[WorkItem] = []
    for s_idx, shard in enumerate(shards):
        units = shard_units(shard.row_group_rows, rows_per_task) if shard.num_rows else [([], 0, 0)]
        # The key covers the cut, so a rerun with another rows_per_task never takes one cut's parts for
        # another's; a shard cut by runs alone keeps the name it had before row groups were sliced.
        sliced = any(skip for _, skip, _ in units)
        split = (rows_per_task, MAX_SLICES) if sliced else rows_per_task if len(units) > 1 else None
        stem = f"{shard.name}-{generation_key(input_fps[s_idx], model_fp, columns, split)}"
        for part, (groups, skip, rows) in enumerate(units):
            name = f"{stem}-{part:04d}.parquet" if split else f"{stem}.parquet"
            items.append(WorkItem(s_idx, shard.path, groups, rows, name, input_fps[s_idx], skip))
    return items


def stats_name(output: str) -> str:
    return f"{STATS_DIR}/{output.removesuffix('.parquet')}.json"


def is_done(out_dir: Path, item: WorkItem, model_fp: str) -> bool:
    stats_path = out_dir / stats_name(item.output)
    if not (stats_path.exists() and (out_dir / item.output).exists()):
        return False
    try:
        stats = read_json(stats_path)
    except Exception:  # noqa: BLE001 - an unreadable stats file means: redo the unit
        return False
    return stats.get("input_fingerprint") == item.input_fingerprint and stats.get("model_fingerprint") == model_fp


@dataclass
class PartStats:
    input: str
    output: str
    rows_in: int
    rows_out: int
    skipped_empty: int
    read_s: float
    tokenize_s: float
    infer_s: float
    tokens: int
    write_s: float
    input_fingerprint: str
    model_fingerprint: str
    written_by: str  # host:pid of the process that encoded and wrote the unit
    precision: str  # the encoder's arithmetic where it ran: fp32 or bf16 (EncodeConfig.precision)


class PartEncoder:
    """Encodes units of work and writes their vector shards and stats into `out`; the map step of
    the Ray Data pipeline."""

    def __init__(self, model_dir: str, out: str, id_col: str, text_col: str, keep_columns: list[str],
                 keep_types: list[pa.DataType], batch_size: int, device: str, strict: bool,
                 precision: str = "auto", threads: int | None = None):
        # Imported here: the driver, which plans the units and writes the manifest, never loads torch.
        from vecjob.encoder import DocumentEncoder

        self.encoder = DocumentEncoder(model_dir, device=device, batch_size=batch_size, threads=threads,
                                       precision=precision)
        self.model_fp = self.encoder.loaded.fingerprint
        self.out = out
        self.id_col, self.text_col = id_col, text_col
        self.keep_columns, self.keep_types = keep_columns, keep_types  # the types: `kept_column_types`
        self.strict = strict

    def encode_item(self, item: WorkItem) -> dict:
        timings: dict[str, float] = {"read_s": 0.0}
        pieces = iter_rows(item.path, item.row_groups, [self.id_col, self.text_col, *self.keep_columns],
                           item.skip, item.rows, READ_ROWS)
        partitions = partition_values(item.path, self.keep_columns)
        kept, encoded = [], []
        while True:
            with timed(timings, "read_s"):
                table = next(pieces, None)
            if table is None:
                break
            vectors, done = self._encode_piece(item.path, table, partitions)
            kept.append(vectors)
            encoded.append((table.num_rows, done.timings))
        vectors = pa.concat_tables(kept)
        with timed(timings, "write_s"):
            write_parquet_atomic(with_model_fingerprint(vectors, self.model_fp), storage.join(self.out, item.output))
        rows_in = sum(rows for rows, _ in encoded)
        stats = asdict(PartStats(
            input=item.path, output=item.output, rows_in=rows_in, rows_out=vectors.num_rows,
            skipped_empty=rows_in - vectors.num_rows, read_s=timings["read_s"],
            tokenize_s=sum(t.tokenize for _, t in encoded), infer_s=sum(t.infer for _, t in encoded),
            tokens=sum(t.tokens for _, t in encoded), write_s=timings["write_s"],
            input_fingerprint=item.input_fingerprint, model_fingerprint=self.model_fp,
            written_by=f"{platform.node()}:{os.getpid()}", precision=self.encoder.precision,
        ))
        write_json_atomic(stats, storage.join(self.out, stats_name(item.output)))
        return stats

    def _encode_piece(self, path: str, table: pa.Table, partitions: dict[str, str | None]):
        """Rows of a unit → the vectors table of those with a text (id, vector, kept columns, those of
        the unit's partition folders among them), and the encoder's result (its timings)."""
        if table.column(self.id_col).null_count:
            raise InputError(f"{path}: {table.column(self.id_col).null_count} row(s) with a null id")
        encoded = self.encoder.encode_texts(pl.from_arrow(table.column(self.text_col)))
        if self.strict and not encoded.ok.all():
            first = table.column(self.id_col)[int(np.argmin(encoded.ok))].as_py()
            raise InputError(
                f"{path}: {int((~encoded.ok).sum())} null or empty text(s) (first id {quoted(first)}) "
                "and --strict is set"
            )
        extra = {c: self._kept(table, c, kind, partitions)
                 for c, kind in zip(self.keep_columns, self.keep_types, strict=True)}
        return vectors_table(table.column(self.id_col), encoded.vectors, extra).filter(encoded.ok), encoded

    @staticmethod
    def _kept(table: pa.Table, name: str, kind: pa.DataType,
              partitions: dict[str, str | None]) -> pa.ChunkedArray | pa.Array:
        """A kept column as `kind`, the one type every vector shard holds it in: the shard's folder's
        value where the column is a Hive-style partition (`dt=2026-12-07/`), nulls where this shard
        lacks it (an older night's) or holds nulls only, its values cast (int32 to int64)."""
        if name not in table.column_names and name in partitions:
            return pa.array([partitions[name]] * table.num_rows, pa.string()).cast(kind)
        column = table.column(name) if name in table.column_names else None
        if column is None or column.null_count == len(column):
            return pa.nulls(table.num_rows, kind)
        return column if column.type == kind else column.cast(kind)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Ray Data map_batches entry: a batch of units (as rows) → their stats (as rows), or one row
        `failed`, the pickled error that stopped a unit. Returned, not raised: Ray Data logs a raised
        error with its traceback, which holds the actor pool, so the actors kept their CPUs for as long
        as a log handler kept the record or until a garbage collection ran, and a training started
        next in the same Ray waited past its start timeout. An error that is not vecjob's (a disk that
        is full, a bug) is returned too; its traceback goes to this actor's log."""
        try:
            return pa.Table.from_pylist([self.encode_item(WorkItem(**row)) for row in batch.to_pylist()])
        except Exception as exc:  # noqa: BLE001 - the driver raises it
            if not isinstance(exc, VecjobError):
                logging.getLogger(__name__).exception("encoding failed")
            try:
                failed = pickle.dumps(exc)
            except Exception:  # noqa: BLE001 - an error that does not pickle, as its text
                failed = pickle.dumps(VecjobError(f"{type(exc).__name__}: {exc}"))
            return pa.table({"failed": [failed]})


def vectors_fingerprint(stats: list[dict]) -> str:
    return fingerprint(sorted((s["output"], s["input_fingerprint"], s["model_fingerprint"]) for s in stats))


def remove_other_generations(out_dir: Path, stats: list[dict]) -> int:
    """After the manifest is published: delete the shards and stats it does not list (an earlier
    model's, a changed input's, a removed input's). Hidden files (temporaries, the lock) are kept."""
    listed = {s["output"] for s in stats} | {stats_name(s["output"]) for s in stats}
    removed = 0
    for path in [*out_dir.glob("*.parquet"), *(out_dir / STATS_DIR).glob("*.json")]:
        if path.relative_to(out_dir).as_posix() not in listed:
            path.unlink()
            removed += 1
    return removed


class Executor(Protocol):
    name: str  # recorded in the vectors manifest
    on_this_machine: bool  # its encoders run on this machine's CPU (or GPU), not on a cluster's nodes

    def encode(self, items: list[WorkItem], encoder_kwargs: dict, cfg: EncodeConfig,
               sink: Callable[[dict], None]) -> int:
        """Run `PartEncoder(**encoder_kwargs).encode_item` on every item, handing each one's stats to
        `sink` in this process; returns the number of encoders that ran."""
        ...


def check_local_encoders(cfg: EncodeConfig) -> None:
    """Refuse, before any work, what encoders on this machine would fail on: a device it lacks, or
    bfloat16 on a CPU with no kernel for it. Other settings are not checked: the driver need not load
    torch for them."""
    if cfg.precision == "bf16" or cfg.device == "cuda":
        from vecjob.encoder import resolve_device, resolve_precision

        resolve_precision(cfg.precision, resolve_device(cfg.device))


@dataclass
class InProcess:
    """One encoder in this process, the items one after another (tests, the benchmarks' baseline).
    `threads` pins torch's thread count: vectors are bit-identical across runs with the same count."""

    threads: int | None = None
    name = "local"
    on_this_machine = True

    def encode(self, items: list[WorkItem], encoder_kwargs: dict, cfg: EncodeConfig,
               sink: Callable[[dict], None]) -> int:
        encoder = PartEncoder(**encoder_kwargs, device=cfg.device, threads=self.threads)
        for item in items:
            sink(encoder.encode_item(item))
        return 1


def encode_collection(
    data: DataConfig,
    model_dir: str | Path,
    out_dir: str | Path,
    cfg: EncodeConfig,
    executor: Executor | None = None,
    on_rows: Callable[[int], None] | None = None,
    on_plan: Callable[[int, int], None] | None = None,
    model_published_at: str | Path | None = None,
) -> dict:
    """Encode every unit of work not already done; returns the vectors dir manifest. `executor` runs
    the units (`InProcess` when None; `vecjob.ray_encode.RayData` maps them over encoder actors) and
    is started only once the checks pass. The manifest names the model by `model_published_at` when
    `model_dir` is a copy that will be published there (a retrained model waiting for its index), so
    that it names a model that is still there once the copy is published.

    Everything that can be known before work starts is checked first (the output location, every
    shard's schema, null ids, --strict texts, the model dir), so bad input writes nothing. When
    `out_dir` is an object store's local mirror, the encoders write to the store and the driver then
    downloads what they wrote into the mirror as each unit ends (`vecjob.storage.adopting`).
    """
    executor = executor or InProcess()
    out_dir = check_output(out_dir, "--out", data.paths, markers=(MANIFEST, STATS_DIR), kind=MANIFEST_KIND)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if executor.on_this_machine:
        check_local_encoders(cfg)
    shards = check_shards(data.paths, data.id_col, data.text_col, data.strict, tuple(cfg.keep_columns), content=False)
    if len({s.name for s in shards}) != len(shards):
        raise InputError("two input shards map to the same output name")
    model = read_model_info(model_dir)
    model_fp, dim = model.fingerprint, model.dim
    columns = {"id": data.id_col, "text": data.text_col, "keep": list(cfg.keep_columns)}
    keep_types = kept_column_types(shards)
    # A kept column's type may change with the collection (its first values arrive, an int32 shard beside
    # int64 ones): every vector shard is then written again, as the folder holds one type per column.
    key_columns = {**columns, "keep_types": [str(t) for t in keep_types]} if keep_types else columns

    with output_lock(out_dir):
        input_fps = storage.each_file(file_fingerprint, [s.path for s in shards])
        items = plan_items(shards, input_fps, model_fp, key_columns, cfg.rows_per_task)
        for folder in (out_dir, out_dir / STATS_DIR):
            if folder.exists():
                clean_stale_temporaries(folder)
        todo = [it for it in items if not is_done(out_dir, it, model_fp)]
        # Before the first write. A done unit's shard had its ids checked when it was encoded; --strict
        # asks for every text to be checked, whenever it was encoded.
        for s_idx in range(len(shards)) if data.strict else sorted({it.shard for it in todo}):
            check_content(shards[s_idx], data.id_col, data.text_col, data.strict)
        if on_plan:
            on_plan(sum(it.rows for it in todo), sum(s.num_rows for s in shards))
        write_to = storage.lasting(out_dir)
        if todo and storage.is_uri(write_to):  # the folder in the store is incomplete from here on
            storage.delete(storage.join(write_to, MANIFEST))
        encoder_kwargs = dict(
            model_dir=storage.lasting(model_dir), out=write_to, id_col=data.id_col, text_col=data.text_col,
            keep_columns=list(cfg.keep_columns), keep_types=keep_types, batch_size=cfg.batch_size,
            strict=data.strict, precision=cfg.precision,
        )

        with timed(timings, "encode_wall_s"), storage.adopting(out_dir) as take_in:
            def received(stats: dict) -> None:
                faults.reached("part_written")
                take_in([stats["output"], stats_name(stats["output"])])  # while the other units encode
                if on_rows:
                    on_rows(stats["rows_in"])

            actors = executor.encode(todo, encoder_kwargs, cfg, received) if todo else 0

        stats = [read_json(out_dir / stats_name(it.output)) for it in items]
        encoded, fresh = {it.shard for it in todo}, {it.output for it in todo}
        timings["total_s"] = time.perf_counter() - t_start
        manifest = new_manifest(
            MANIFEST_KIND,
            model_dir=storage.lasting(model_published_at or model_dir),
            model_fingerprint=model_fp,
            vectors_fingerprint=vectors_fingerprint(stats),
            dim=dim,
            columns=columns,
            config=cfg.model_dump(),
            runner=executor.name,
            actors=actors,
            # Shards encoded before the setting existed were fp32.
            precision=sorted({s.get("precision", "fp32") for s in stats}),
            counts={
                "shards": len(shards),
                "shards_encoded": len(encoded),
                "shards_skipped_done": len(shards) - len(encoded),
                "parts_encoded": len(todo),
                "rows_encoded": sum(s["rows_in"] for s in stats if s["output"] in fresh),
                "rows_in": sum(s["rows_in"] for s in stats),
                "rows_out": sum(s["rows_out"] for s in stats),
                "skipped_empty": sum(s["skipped_empty"] for s in stats),
                "tokens": sum(s["tokens"] for s in stats),
            },
            timings=timings,
            shards=stats,
        )
        write_json_atomic(manifest, out_dir / MANIFEST)
        remove_other_generations(out_dir, stats)
    return manifest
