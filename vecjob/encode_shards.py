"""Encoding a sharded collection, without Ray: plan units of work, encode one unit, assemble shards.

`encode_collection` is the whole job; an executor runs its units of work: `InProcess` here, one
after another, or `vecjob.ray_encode.RayData` over a pool of encoder actors.

A unit of work (`WorkItem`) is a run of row groups of one input shard (≤ rows_per_task rows), so
large shards are spread over workers and small ones are not merged. `PartEncoder` turns one item into
an Arrow table of vectors. `ShardAssembler` collects the parts of each input shard; when all its rows
have arrived it writes the output shard (same order as the input, atomically), then a stats file.

Every output file is named after its generation: the input shard's name plus a key of its content,
the model and the columns (`generation_key`). A rerun with another model or changed input writes new
names beside the old ones and never rewrites a file the current manifest lists, so a run stopped part
way leaves the previous generation whole; a shard whose output and stats exist under its key is
skipped. Files of other generations are removed once the new manifest is published.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from vecjob import faults, storage
from vecjob.config import DataConfig, EncodeConfig
from vecjob.errors import ConfigError, InputError
from vecjob.model_dir import read_model_info
from vecjob.outputs import check_output, output_lock
from vecjob.parquet_io import (
    MANIFEST,
    Shard,
    check_shards,
    clean_stale_temporaries,
    file_fingerprint,
    fingerprint,
    new_manifest,
    parquet_file,
    read_json,
    read_row_groups,
    write_json_atomic,
    write_parquet_atomic,
)
from vecjob.vectors import MANIFEST_KIND, vectors_table, with_model_fingerprint

STATS_DIR = "_stats"
RESERVED_COLUMNS = ("id", "vector")


@dataclass(frozen=True)
class WorkItem:
    shard: int  # index into the plan's shard list
    part: int  # order within the shard
    path: str
    row_groups: list[int]
    rows: int


def plan_items(shards: list[Shard], rows_per_task: int) -> list[WorkItem]:
    items: list[WorkItem] = []
    for s_idx, shard in enumerate(shards):
        if shard.num_rows == 0:
            continue  # published empty by the assembler
        groups: list[int] = []
        rows = 0
        part = 0
        for rg, n in enumerate(shard.row_group_rows):
            if groups and rows + n > rows_per_task:
                items.append(WorkItem(s_idx, part, shard.path, groups, rows))
                groups, rows, part = [], 0, part + 1
            groups.append(rg)
            rows += n
        if groups:
            items.append(WorkItem(s_idx, part, shard.path, groups, rows))
    return items


def generation_key(input_fp: str, model_fp: str, columns: dict) -> str:
    """What an output shard's content depends on: the input's content, the model, the columns kept."""
    return fingerprint(input_fp, model_fp, columns)[:12]


def output_name(shard: Shard, key: str) -> str:
    return f"{shard.name}-{key}.parquet"


def stats_name(shard: Shard, key: str) -> str:
    return f"{STATS_DIR}/{shard.name}-{key}.json"


def shard_is_done(out_dir: Path, shard: Shard, key: str, input_fp: str, model_fp: str) -> bool:
    stats_path = out_dir / stats_name(shard, key)
    if not (stats_path.exists() and (out_dir / output_name(shard, key)).exists()):
        return False
    try:
        stats = read_json(stats_path)
    except Exception:  # noqa: BLE001 - an unreadable stats file means: redo the shard
        return False
    return stats.get("input_fingerprint") == input_fp and stats.get("model_fingerprint") == model_fp


class PartEncoder:
    """Reads one work item's rows and encodes them; the map step of the Ray Data pipeline."""

    def __init__(
        self,
        model_dir: str,
        id_col: str,
        text_col: str,
        keep_columns: list[str],
        batch_size: int,
        device: str,
        strict: bool,
        threads: int | None = None,
    ):
        # Imported here: the driver, which plans items and assembles shards, never loads torch.
        from vecjob.encoder import DocumentEncoder

        self.encoder = DocumentEncoder(model_dir, device=device, batch_size=batch_size, threads=threads)
        self.id_col, self.text_col = id_col, text_col
        self.keep_columns = keep_columns
        self.strict = strict

    def encode_item(self, item: WorkItem) -> pa.Table:
        t0 = time.perf_counter()
        table = read_row_groups(item.path, item.row_groups, [self.id_col, self.text_col, *self.keep_columns])
        read_s = time.perf_counter() - t0
        if table.column(self.id_col).null_count:
            raise InputError(f"{item.path}: {table.column(self.id_col).null_count} row(s) with a null id")
        encoded = self.encoder.encode_texts(pl.from_arrow(table.column(self.text_col)))
        if self.strict and not encoded.ok.all():
            first = table.column(self.id_col)[int(np.argmin(encoded.ok))].as_py()
            raise InputError(
                f"{item.path}: {int((~encoded.ok).sum())} null or empty text(s) (first id {first!r}) "
                "and --strict is set"
            )
        extra = {c: table.column(c) for c in self.keep_columns}
        out = vectors_table(table.column(self.id_col), encoded.vectors, extra)
        t = encoded.timings
        return tag_part(out, encoded.ok, item.shard, item.part, [read_s, t.tokenize, t.infer, t.tokens])

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Ray Data map_batches entry: a batch of work items (as rows) → their encoded rows."""
        items = [WorkItem(**row) for row in batch.to_pylist()]
        return pa.concat_tables([self.encode_item(item) for item in items])


def tag_part(table: pa.Table, ok: np.ndarray, shard: int, part: int, timing: list[float]) -> pa.Table:
    """Add the bookkeeping columns the assembler needs: ok flag, shard, part, row order, timings."""
    n = table.num_rows
    return (
        table.append_column("ok", pa.array(ok, pa.bool_()))
        .append_column("_shard", pa.array(np.full(n, shard, np.int32)))
        .append_column("_part", pa.array(np.full(n, part, np.int32)))
        .append_column("_row", pa.array(np.arange(n, dtype=np.int64)))
        # Per-part timings ride along as constant columns; the assembler reads them once per part.
        .append_column("_timing", pa.array([timing] * n, pa.list_(pa.float64())))
    )


def empty_part(shard: Shard, s_idx: int, id_col: str, keep_columns: list[str], dim: int) -> pa.Table:
    """The encoded form of a shard with no rows, typed like a real one."""
    schema = parquet_file(shard.path).schema_arrow
    extra = {c: pa.array([], schema.field(c).type) for c in keep_columns}
    table = vectors_table(pa.array([], schema.field(id_col).type), np.zeros((0, dim), np.float32), extra)
    return tag_part(table, np.zeros(0, bool), s_idx, 0, [0.0, 0.0, 0.0, 0.0])


@dataclass
class ShardStats:
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


class ShardAssembler:
    """Collects encoded parts (in any order, possibly split) and publishes each shard once complete."""

    def __init__(
        self,
        out_dir: Path,
        shards: list[Shard],
        input_fps: list[str],
        keys: list[str],
        model_fp: str,
        todo: set[int],
        empty_table: Callable[[int], pa.Table],
        on_rows: Callable[[int], None] | None = None,
    ):
        self.out_dir = out_dir
        self.shards = shards
        self.input_fps = input_fps
        self.keys = keys
        self.model_fp = model_fp
        self.pending: dict[int, list[pa.Table]] = {i: [] for i in todo}
        self.received: dict[int, int] = {i: 0 for i in todo}
        self.on_rows = on_rows
        for s_idx in sorted(todo):
            if shards[s_idx].num_rows == 0:  # no part will ever arrive for an empty shard
                self.pending[s_idx].append(empty_table(s_idx))
                self._publish(s_idx)

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        shard_ids = table.column("_shard").to_numpy()
        for s_idx in np.unique(shard_ids):
            part = table.filter(pa.array(shard_ids == s_idx))
            self.pending[int(s_idx)].append(part)
            self.received[int(s_idx)] += part.num_rows
            if self.received[int(s_idx)] == self.shards[int(s_idx)].num_rows:
                self._publish(int(s_idx))
        if self.on_rows:
            self.on_rows(table.num_rows)

    def _publish(self, s_idx: int) -> None:
        shard = self.shards[s_idx]
        parts = pa.concat_tables(self.pending.pop(s_idx)).sort_by([("_part", "ascending"), ("_row", "ascending")])
        # Sum timings once per part (each part's rows repeat the same values).
        first_rows = pl.from_arrow(parts.select(["_part", "_timing"])).unique("_part", keep="first")
        timing = np.array(first_rows["_timing"].to_list(), dtype=np.float64).reshape(-1, 4).sum(axis=0)
        ok = parts.column("ok").to_numpy(zero_copy_only=False)
        kept = parts.filter(pa.array(ok)).drop_columns(["ok", "_shard", "_part", "_row", "_timing"])
        t0 = time.perf_counter()
        name = output_name(shard, self.keys[s_idx])
        write_parquet_atomic(with_model_fingerprint(kept, self.model_fp), self.out_dir / name)
        stats = ShardStats(
            input=shard.path,
            output=name,
            rows_in=shard.num_rows,
            rows_out=kept.num_rows,
            skipped_empty=int((~ok).sum()),
            read_s=float(timing[0]),
            tokenize_s=float(timing[1]),
            infer_s=float(timing[2]),
            tokens=int(timing[3]),
            write_s=time.perf_counter() - t0,
            input_fingerprint=self.input_fps[s_idx],
            model_fingerprint=self.model_fp,
        )
        write_json_atomic(asdict(stats), self.out_dir / stats_name(shard, self.keys[s_idx]))
        faults.reached("shard_published")

    def check_complete(self) -> None:
        if self.pending:
            missing = [self.shards[i].path for i in self.pending]
            raise InputError(f"encoding ended with {len(missing)} shard(s) incomplete: {missing[:3]}")


def input_fingerprints(shards: list[Shard]) -> list[str]:
    return [file_fingerprint(s.path) for s in shards]


def vectors_fingerprint(stats: list[dict]) -> str:
    return fingerprint(sorted((s["output"], s["input_fingerprint"], s["model_fingerprint"]) for s in stats))


def remove_other_generations(out_dir: Path, stats: list[dict]) -> int:
    """After the manifest is published: delete the shards and stats it does not list (an earlier
    model's, a changed input's, a removed input's). Hidden files (temporaries, the lock) are kept."""
    listed = {s["output"] for s in stats} | {f"{STATS_DIR}/{Path(s['output']).stem}.json" for s in stats}
    removed = 0
    for path in [*out_dir.glob("*.parquet"), *(out_dir / STATS_DIR).glob("*.json")]:
        if path.relative_to(out_dir).as_posix() not in listed:
            path.unlink()
            removed += 1
    return removed


class Executor(Protocol):
    name: str  # recorded in the vectors manifest

    def encode(self, items: list[WorkItem], encoder_kwargs: dict, cfg: EncodeConfig,
               sink: Callable[[pa.Table], None]) -> int:
        """Encode every item with `PartEncoder(**encoder_kwargs)`, handing each part to `sink` in this
        process; returns the number of encoders that ran."""
        ...


class InProcess:
    """One encoder in this process, the items one after another (tests, the benchmarks' baseline)."""

    name = "local"

    def encode(self, items: list[WorkItem], encoder_kwargs: dict, cfg: EncodeConfig,
               sink: Callable[[pa.Table], None]) -> int:
        encoder = PartEncoder(**encoder_kwargs, device=cfg.device)
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
) -> dict:
    """Encode every input shard not already done; returns the vectors dir manifest. `executor` runs
    the work items (`InProcess` when None; `vecjob.ray_encode.RayData` maps them over encoder actors)
    and is started only once the checks pass.

    Everything that can be known before work starts is checked first (the output location, every
    shard's schema, null ids, --strict texts, the model dir), so bad input writes nothing.
    """
    executor = executor or InProcess()
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
        actors = executor.encode(items, encoder_kwargs, cfg, assembler.add) if items else 0
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
            runner=executor.name,
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
