"""The vectors dir contract: Parquet shards of (id, vector fixed_size_list<float32>[dim], passthrough...)
listed in manifest.json. Readers follow the manifest, never a glob, so stray files are never read, and
each shard carries the fingerprint of the model that wrote it (Parquet key-value metadata): a shard
of another generation under the manifest is refused, never read as if it belonged.

A collection grows shard by shard, and a document may come again in a newer shard (an edit, a
correction). The newer is the shard later in the manifest's order, which is the sorted order of the
input paths (e.g. one folder per day, named by date): its row replaces the older ones, and readers
see only each id's *live* row. An id twice in one shard is an error."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vecjob import storage
from vecjob.errors import ArtifactError, InputError, quoted
from vecjob.parquet_io import read_manifest

MANIFEST_KIND = "vecjob.vectors"
MODEL_KEY = b"vecjob.model_fingerprint"
# A damaged shard is only found by its reader; deleting it is enough, since encoding the collection
# again (a rerun, or the next night) writes only the shards its folder lacks. "If": the same errors
# come from a store that did not answer or a file that may not be read, which deleting does not mend.
_DAMAGED_SHARD = "if it is damaged, delete it and encode again: only its shard is encoded"


def vectors_table(ids: pa.Array, vectors: np.ndarray, extra: dict[str, pa.Array] | None = None) -> pa.Table:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    return pa.table({"id": ids, "vector": column, **(extra or {})})


def with_model_fingerprint(table: pa.Table, model_fp: str) -> pa.Table:
    return table.replace_schema_metadata({**(table.schema.metadata or {}), MODEL_KEY: model_fp.encode()})


def _one_id_type(table: pa.Table) -> pa.Table:
    """Ids as int64 or string, whatever width or string kind the input shard held: shards written by
    different tools (int32 and int64 ids, string and large_string) make one collection."""
    if "id" not in table.column_names:
        return table
    kind = table.schema.field("id").type
    want = pa.int64() if pa.types.is_integer(kind) else pa.string() if pa.types.is_large_string(kind) else kind
    return table if want == kind else table.set_column(table.column_names.index("id"), "id",
                                                       table.column("id").cast(want))


def table_vectors(table: pa.Table) -> np.ndarray:
    """The vector column as a [n, dim] float32 array (zero-copy where Arrow allows)."""
    col = table.column("vector").combine_chunks()
    dim = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (a zero row stays zero), as contiguous float32, as FAISS takes them."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class VectorsDir:
    path: Path  # a local folder: the dir itself, or a snapshot of one in an object store
    manifest: dict
    location: str  # where it is published (`storage.lasting`): what the manifests made from it record

    @classmethod
    def open(cls, location: str | Path) -> "VectorsDir":
        path = storage.snapshot(str(location), "vectors")
        if not path.is_dir():
            raise ArtifactError(f"{path}: vectors dir not found")
        manifest = read_manifest(path, MANIFEST_KIND, {"dim": int, "shards": list})
        if not all(isinstance(shard, dict) and isinstance(shard.get("output"), str) for shard in manifest["shards"]):
            raise ArtifactError(f"{path}: a shard listed in the manifest has no output file name: the manifest was "
                                "edited or damaged; write the folder again")
        for shard in manifest["shards"]:
            if not (path / shard["output"]).exists():
                raise ArtifactError(f"{path}: shard {shard['output']} listed in the manifest is missing")
        return cls(path, manifest, storage.lasting(location))

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def num_vectors(self) -> int:
        """Live vectors: one per document id."""
        return int(sum(int(mask.sum()) for mask in self.live_masks))

    @cached_property
    def live_masks(self) -> list[np.ndarray]:
        """Per listed shard, which rows are live: an id's row in the latest shard that holds it."""
        rows, live = self._rows_and_live
        bounds = np.searchsorted(rows["shard"].to_numpy(), np.arange(len(self.shard_paths) + 1))
        return [live[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def live_ids(self) -> pl.DataFrame:
        """Every live row's id and vector shard (file name), in order."""
        rows, live = self._rows_and_live
        names = pl.Series("shard", [p.name for p in self.shard_paths], pl.String)
        return rows.select("id", names.gather(rows["shard"])).filter(pl.Series(live))

    @cached_property
    def _rows_and_live(self) -> tuple[pl.DataFrame, np.ndarray]:
        """Every listed row's id and shard number, in order, and whether it is live."""
        frames = [pl.from_arrow(table.select(["id"])) for _, table in self._read_shards(["id"])]
        if not frames:
            return pl.DataFrame({"id": [], "shard": pl.Series([], dtype=pl.UInt32)}), np.zeros(0, bool)
        shard_of_row = np.repeat(np.arange(len(frames), dtype=np.uint32), [f.height for f in frames])
        rows = pl.concat(frames).with_columns(shard=pl.Series(shard_of_row))
        live = rows["id"].is_last_distinct()
        if not live.all():  # an id appears twice: fine across input shards, an error within one
            # (an input shard cut into units has a vector shard per unit)
            inputs = [s.get("input", s["output"]) for s in self.manifest["shards"]]
            source = pl.Series("source", inputs).gather(rows["shard"])
            if (dup := rows.select("id").with_columns(source).is_duplicated()).any():
                first = source.filter(dup)[0]
                ids = rows["id"].filter(dup & (source == first))
                raise InputError(f"{first}: {len(ids)} rows share an id (e.g. {', '.join(map(quoted, ids.unique().head(3)))}); ids "
                                 "must be unique within a shard")
        return rows, live.to_numpy()

    @cached_property  # read once per shard: a collection of years of nights lists tens of thousands
    def shard_paths(self) -> list[Path]:
        return [self.path / s["output"] for s in self.manifest["shards"]]

    def iter_shards(self, columns: list[str] | None = None) -> Iterator[tuple[Path, pa.Table]]:
        """Each shard's live rows, in order."""
        for i, path in enumerate(self.shard_paths):
            yield path, self.read_shard(i, columns)

    def new_rows(self, new: pl.DataFrame) -> Iterator[tuple[Path, pa.Table]]:
        """The id and vector of each (id, shard) row in `new`, shard by shard, reading only those shards."""
        wanted_in = new.partition_by("shard", as_dict=True, include_key=False)
        for i, path in enumerate(self.shard_paths):
            if (wanted := wanted_in.get((path.name,))) is None:
                continue
            table = self.read_shard(i, ["id", "vector"])
            rows = pl.from_arrow(table.select(["id"])).with_row_index("row").join(
                wanted.select("id"), on="id", how="semi")["row"].to_numpy()
            yield path, table.take(pa.array(rows))

    def read_shard(self, i: int, columns: list[str] | None = None) -> pa.Table:
        """The live rows of the i-th listed shard."""
        (_, table), live = next(self._read_shards(columns, [self.shard_paths[i]])), self.live_masks[i]
        return table if live.all() else table.filter(pa.array(live))

    def _read_shards(self, columns: list[str] | None, paths: list[Path] | None = None
                     ) -> Iterator[tuple[Path, pa.Table]]:
        expected = str(self.manifest.get("model_fingerprint", "")).encode()
        for p in paths or self.shard_paths:
            try:
                with pq.ParquetFile(p) as shard:  # a file, not a dataset: twice as fast to open as read_table
                    table = shard.read(columns=columns)
            except (pa.ArrowException, OSError) as exc:
                raise ArtifactError(f"{p}: cannot read vector shard ({exc}); {_DAMAGED_SHARD}") from None
            if missing := [c for c in columns or [] if c not in table.column_names]:  # read() skips them silently
                raise ArtifactError(f"{p}: vector shard has no column '{missing[0]}'")
            table = _one_id_type(table)
            written_by = (table.schema.metadata or {}).get(MODEL_KEY)
            if written_by != expected:
                raise ArtifactError(
                    f"{self.path}: shard {p.name} was not written by the manifest's model "
                    f"({(written_by or b'unknown').decode()[:12]} vs {expected.decode()[:12]}); "
                    "the folder mixes two runs: encode it again"
                )
            yield p, table

    def sample(self, count: int, seed: int, columns: list[str]) -> pa.Table:
        """A uniform sample of min(count, all) rows in collection order, read shard by shard (memory:
        the sample only)."""
        n = self.num_vectors
        chosen = np.sort(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False))
        parts, start = [], 0
        for _, table in self.iter_shards(columns):
            parts.append(table.take(pa.array(chosen[(chosen >= start) & (chosen < start + table.num_rows)] - start)))
            start += table.num_rows
        if not parts:
            raise ArtifactError(f"{self.path}: holds no vectors")
        return pa.concat_tables(parts, promote_options="permissive")

    def read_all(self, columns: list[str] | None = None) -> pa.Table:
        tables = [t for _, t in self.iter_shards(columns)]
        if not tables:
            raise ArtifactError(f"{self.path}: holds no vectors")
        return pa.concat_tables(tables, promote_options="permissive")  # a kept column's int32 and int64


def vector_in_shard(location: str, shard: str, doc_id: object) -> np.ndarray:
    """One document's vector, read from the one shard of a published vectors dir (local or in an
    object store) that holds it: a lookup downloads neither the folder nor its other shards."""
    fs, inner = storage.filesystem(storage.join(location, shard))
    try:
        table = _one_id_type(pq.read_table(inner, filesystem=fs, columns=["id", "vector"]))
    except (pa.ArrowException, OSError) as exc:
        raise ArtifactError(
            f"{storage.join(location, shard)}: cannot read vector shard ({exc}); {_DAMAGED_SHARD}") from None
    ids = table.column("id")
    hit = table.filter(pc.equal(ids, pa.scalar(_coerce_id(doc_id, ids.type), ids.type)))
    if not hit.num_rows:
        raise ArtifactError(f"{location}: shard {shard} holds no document with id {doc_id!r}")
    return table_vectors(hit)[0]


def _coerce_id(doc_id: object, arrow_type: pa.DataType) -> object:
    if pa.types.is_integer(arrow_type):
        try:
            return int(doc_id)
        except (TypeError, ValueError):
            raise ArtifactError(f"id {doc_id!r} is not an integer, but ids here are integers") from None
    return str(doc_id)

