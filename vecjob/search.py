"""Similarity search: a query (text encoded by the model, or a stored document's vector) → top-k."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from vecjob import storage
from vecjob.errors import ArtifactError, InputError, quoted
from vecjob.index import LoadedIndex, load_index_dir
from vecjob.outputs import MANIFEST
from vecjob.parquet_io import (
    discover,
    file_identity,
    footer,
    named,
    opened_in_store,
    path_order,
    read_json,
    read_row_groups,
    scan_by_id,
    scan_files_by_id,
    texts_as_text,
)

log = logging.getLogger(__name__)


def query_vector(index: LoadedIndex, *, text: str | None, doc_id: str | None, model_dir: str | Path | None):
    if (text is None) == (doc_id is None):
        raise InputError("give exactly one of --text or --id")
    if doc_id is not None:
        return index.stored_vector(doc_id)
    as_recorded = model_dir is None
    model_dir = recorded_model(index.manifest) if as_recorded else model_dir
    # Imported here: a search by id answers without loading torch.
    from vecjob.encoder import DocumentEncoder

    check_model_made_index(model_dir, index.manifest, as_recorded)
    encoder = DocumentEncoder(model_dir, device="cpu")
    encoded = encoder.encode_texts([text])
    if not encoded.ok[0]:
        raise InputError("the query text is empty")
    if not encoded.known[0]:
        raise InputError(f"--text {quoted(text)}: no word of it is in the model's vocabulary (its vector would match "
                         "nothing in particular)")
    return encoded.vectors[0]


def recorded_model(index_manifest: dict) -> str:
    """Where the model that made the index's vectors was published when they were encoded (a location
    any process reads: an absolute path or a URI): what encodes a text query when no --model is given."""
    recorded = index_manifest.get("model_dir")
    if not isinstance(recorded, str) or not recorded:  # an index built before vecjob recorded it
        raise InputError("--text needs --model to encode the query: this index does not record its model")
    return recorded


def check_model_made_index(model_dir: str | Path, index_manifest: dict, as_recorded: bool = False) -> None:
    """A query is encoded only by the model whose vectors the index holds (read without torch).
    `as_recorded`: `model_dir` is the index's own record, not a --model given (a folder moved since
    leaves a record that names nothing: the line then says to give --model)."""
    from vecjob.model_dir import read_model_info

    made_by = str(index_manifest.get("model_fingerprint"))
    try:
        info = read_model_info(model_dir)
    except ArtifactError as exc:
        if not as_recorded:
            raise
        raise ArtifactError(f"the index's model: {exc} (give --model)") from None
    if info.fingerprint != made_by:
        raise ArtifactError(f"{model_dir}: this model (fingerprint {info.fingerprint[:12]}) did not make the "
                            f"index's vectors ({made_by[:12]})" + ("; give --model" if as_recorded else ""))


def check_search_pair(index_dir: str | Path, model_dir: str | Path | None,
                      data: list[str] | None = None) -> tuple[str | Path | None, str]:
    """Refuse, before anything starts, an index that cannot be loaded, a model that did not make it,
    or texts (`data`) without the columns or the id type the hits' snippets are read by. Returns the
    model that encodes text queries (without `model_dir`: the index's recorded one, when it is there
    and made the index) and, when there is none, why."""
    index = load_index_dir(index_dir)
    if data:
        id_dtype = pl.from_arrow(index.labels.column("id").slice(0, 0)).dtype
        texts_as_text(scan_by_id(data, "id", {"text": "text"}, id_dtype), data, "text")
    if model_dir is not None:
        check_model_made_index(model_dir, index.manifest)
        return model_dir, ""
    return model_of_index(index.manifest)


def model_of_index(index_manifest: dict) -> tuple[str | None, str]:
    """The model a service given no --model encodes text queries with: the index's recorded one when it
    is there and made the index, else None and why."""
    try:
        recorded = recorded_model(index_manifest)
        check_model_made_index(recorded, index_manifest, as_recorded=True)
    except InputError:
        return None, "this index does not record its model (give --model)"
    except ArtifactError as exc:
        return None, str(exc)
    return recorded, ""


def search(
    index_dir: str | Path,
    *,
    text: str | None = None,
    doc_id: str | None = None,
    model_dir: str | Path | None = None,
    k: int = 10,
    data: list[str] | None = None,
    id_col: str = "id",
    text_col: str = "text",
    snippet_chars: int = 160,
) -> list[dict]:
    """Top-k hits as dicts: rank, id, score (and snippet when `data` gives the texts)."""
    if k < 1:
        raise InputError(f"-k must be at least 1, not {k}")
    index = load_index_dir(index_dir)
    try:
        vector = query_vector(index, text=text, doc_id=doc_id, model_dir=model_dir)
    except ArtifactError:
        if text is None:
            raise
        # A nightly run publishes a retrained model right after the index made with it: a search that
        # read the new index and the old model in between tries once more with a fresh read.
        time.sleep(0.5)
        index = load_index_dir(index_dir)
        vector = query_vector(index, text=text, doc_id=doc_id, model_dir=model_dir)
    ids, scores = index.search(vector[None, :], k)
    hits = [
        {"rank": r + 1, "id": i, "score": float(s)} for r, (i, s) in enumerate(zip(ids[0], scores[0]))
    ]
    if data:
        first = EncodedFrom(index)([h["id"] for h in hits])
        add_snippets(hits, lambda ids: DocumentFiles(data, id_col, text_col).texts(ids, first), snippet_chars)
    return hits


class EncodedFrom:
    """Which input file each of an index's vectors was encoded from: the id map's vector shard of the
    id, and the input the vectors' manifest names for that shard (one read). Where a hit's text is
    looked for first: the row its vector was made from, in one file of the collection, not a map of
    every file's ids. Knows nothing (every lookup then reads the map) where the vectors moved or the
    index's id map names no vector shard."""

    def __init__(self, index: LoadedIndex):
        self.files: list[str] = []
        self._file_of = pl.DataFrame()  # id → the number of its file in `files`, sorted by id
        if "shard" not in index.labels.column_names:
            return
        try:
            manifest = read_json(storage.join(index.manifest["vectors_dir"], MANIFEST))
            input_of = {Path(s["output"]).name: s["input"] for s in manifest["shards"] if isinstance(s["input"], str)}
        except (ArtifactError, OSError, KeyError, TypeError):
            return
        self.files = sorted(set(input_of.values()), key=path_order)
        position = {path: n for n, path in enumerate(self.files)}
        number = {shard: position[path] for shard, path in input_of.items()}
        shards = pl.from_arrow(index.labels.select(["id", "shard"]))
        file_of_shard = pl.col("shard").replace_strict(number, default=None, return_dtype=pl.UInt32)
        self._file_of = shards.select("id", file_of_shard.alias("file")).drop_nulls("file").sort("id")

    def __call__(self, ids: list) -> list[str]:
        """The files the vectors of `ids` were encoded from, in the collection's order."""
        if self._file_of.is_empty() or not ids:
            return []
        wanted = pl.Series("id", ids, dtype=self._file_of["id"].dtype, strict=False)
        at = self._file_of["id"].search_sorted(wanted).clip(upper_bound=self._file_of.height - 1)
        found = self._file_of[at.to_numpy()].filter(pl.col("id").is_in(wanted.implode()))
        return [self.files[n] for n in sorted(set(found["file"].to_list()))]


def add_snippets(hits: list[dict], texts_of: Callable[[list], dict], snippet_chars: int = 160) -> None:
    """Give each hit the start of its document's text, one line, from `texts_of(ids)`: id → text."""
    texts = texts_of([h["id"] for h in hits])
    for h in hits:
        snippet = " ".join((texts.get(h["id"]) or "").split())
        h["snippet"] = snippet[:snippet_chars] + ("…" if len(snippet) > snippet_chars else "")


class DocumentFiles:
    """A collection's texts by id, read from the row groups that hold the ids asked for: a service's
    for every search, a one-off `vecjob search --data`'s once. Reading the id column of every file
    for each search (a request per file, in a store) made a snippet cost more than the search. A
    hit's text is looked for first in the file its vector was encoded from (`look_first`, from
    `EncodedFrom`), whose ids are read once and kept while the file stays the same; nothing else is
    read for it. Only ids not found there (the vectors moved, a file rewritten without the id, `data`
    naming another copy of the collection) are looked up in a map of every file's ids to their rows,
    built when first needed and listed again, reading the ids of new and rewritten files only, after
    `refresh` and when an id is not where the map says: at once when its file is gone or rewritten,
    at most every `relist_s` seconds for ids no file held (an index may hold ids that the texts given
    do not)."""

    def __init__(self, data: list[str], id_col: str = "id", text_col: str = "text", relist_s: float = 10.0):
        self.data, self.id_col, self.text_col, self.relist_s = data, id_col, text_col, relist_s
        self._lock = threading.Lock()
        self._files: dict[str, tuple] = {}  # path → its identity, footer, ids and opened file, once read
        self._where: tuple[list, pl.DataFrame] = ([], pl.DataFrame())  # files listed; each id's file and row
        self._listed: set[str] | None = None  # the files of `data` as last listed
        self._told_unlisted = False
        self._dtype = None
        self._listed_at = self._stale_since = -math.inf

    def refresh(self) -> None:
        """List the files again: at start, and whenever the served index changes (a night that adds a
        shard of newer rows for old ids publishes a new index too). The map of every file's ids is
        brought up to date when next needed."""
        self._listed = set(discover(self.data))
        self._stale_since = time.monotonic()

    def texts(self, ids: list, look_first: list[str] = ()) -> dict:
        """id → text for the ids some file holds: the row in the files of `look_first` (those their
        vectors were encoded from), else a later file's row of an id, as the vectors take."""
        if not ids:
            return {}
        wanted = pl.Series("id", ids)
        texts = self._texts_where_encoded(look_first, wanted) if look_first else {}
        if len(texts) == wanted.n_unique():
            return texts
        wanted = wanted.filter(~wanted.is_in(pl.Series(list(texts), dtype=wanted.dtype).implode()))
        self._list(wanted.dtype, asked=self._stale_since)  # the first time, after a refresh, or for another type
        asked = time.monotonic()
        try:
            found, misplaced = self._read(wanted)
        except (OSError, InputError, pl.exceptions.PolarsError, pa.ArrowException):  # gone or rewritten since listed
            found, misplaced = {}, True
        if misplaced or (len(found) < wanted.n_unique() and asked - self._listed_at >= self.relist_s):
            self._list(wanted.dtype, asked)
            found, _ = self._read(wanted)
        return texts | found

    def _texts_where_encoded(self, files: list[str], wanted: pl.Series) -> dict:
        """Texts of the `wanted` ids in `files` that the data holds, a later file's row of an id first.
        A file that cannot be read now leaves its ids to the map, which says why."""
        if self._listed is None:
            self.refresh()
        self._use(wanted.dtype)
        listed = [path for path in files if path in self._listed]
        if files and not listed and not self._told_unlisted:  # every hit then costs a map of every file's ids
            self._told_unlisted = True
            log.warning("%s: the index's vectors were encoded from files it does not hold (such as %s): their "
                        "texts are looked up in every file", named(self.data), files[0])
        files = listed

        def mapped(path: str) -> tuple | None:
            try:
                identity = file_identity(path)
                entry = self._files.get(path)
                if entry is None or entry[0] != identity:
                    entry = self._files[path] = (identity, *self._ids_of([path], wanted.dtype)[0])
                return entry
            except (OSError, InputError, pl.exceptions.PolarsError, pa.ArrowException):
                return None

        entries = {path: entry for path, entry in zip(files, storage.each_file(mapped, files)) if entry is not None}
        if not entries:
            return {}
        # One search over the files' ids together: per file, a polars call costs more than the search.
        ids = pl.concat([entry[2] for entry in entries.values()], rechunk=False)
        at = np.flatnonzero(ids.is_in(wanted.implode()).to_numpy())
        expected = ids.gather(at).to_list()
        starts = np.cumsum([0] + [len(entry[2]) for entry in entries.values()])
        owner = np.searchsorted(starts, at, side="right") - 1
        paths = list(entries)
        hits_in = {paths[n]: np.flatnonzero(owner == n) for n in sorted(set(owner.tolist()))}
        first_row = dict(zip(paths, starts.tolist()))

        def in_file(path: str) -> tuple[list, list]:
            hits = hits_in[path]
            _, meta, _, opened = entries[path]
            try:
                ids_read, texts = self._rows(path, meta, at[hits] - first_row[path], opened)
            except (OSError, InputError, pl.exceptions.PolarsError, pa.ArrowException):
                return [], []
            return (ids_read, texts) if ids_read == [expected[h] for h in hits] else ([], [])

        texts = {}
        for ids_read, found in storage.each_file(in_file, list(hits_in)):
            texts.update(zip(ids_read, found))
        return texts

    def _use(self, dtype) -> None:
        with self._lock:
            if dtype != self._dtype:  # ids read as another type match none asked
                self._files, self._where, self._dtype, self._listed_at = {}, ([], pl.DataFrame()), dtype, -math.inf

    def _ids_of(self, paths: list[str], dtype) -> list[tuple]:
        """Each file's footer, ids in row order and (in a store) the file opened for the reads of its rows,
        the columns checked; in a store, files many at once."""
        opened = storage.each_file(opened_in_store, paths)
        handle_of = dict(zip(paths, opened))
        footers = storage.each_file(lambda path: footer(path, handle_of[path]), paths)
        texts_as_text(scan_files_by_id(paths, self.id_col, {"text": self.text_col}, dtype, footers=footers),
                      self.data, self.text_col)  # the checks
        read = {path: (meta, handle) for path, meta, handle in zip(paths, footers, opened)}

        def read_ids(path: str) -> pl.Series:
            meta, handle = read[path]
            groups = list(range(meta.num_row_groups))
            return pl.Series("id", read_row_groups(path, groups, [self.id_col], meta, opened=handle)[0]).cast(dtype)

        return list(zip(footers, storage.each_file(read_ids, paths), opened))

    def _rows(self, path: str, listed, rows, opened) -> tuple[list, list]:
        """The ids and texts at `rows` of one file (its footer `listed`): the row groups holding them
        only, the rows taken by position."""
        starts = np.cumsum([0] + [listed.row_group(g).num_rows for g in range(listed.num_row_groups)])
        group_of = np.searchsorted(starts, rows, side="right") - 1
        groups = sorted(set(group_of.tolist()))
        table = read_row_groups(path, groups, [self.id_col, self.text_col], listed, threads=False, opened=opened)
        read_from = dict(zip(groups, np.cumsum([0] + [starts[g + 1] - starts[g] for g in groups])))
        taken = table.take([read_from[g] + r - starts[g] for g, r in zip(group_of, rows)])
        return taken[self.id_col].to_pylist(), taken[self.text_col].to_pylist()

    def _read(self, wanted: pl.Series) -> tuple[dict, bool]:
        """Texts of the ids the map places, and whether one was not where the map says. Each file is
        read once: a search's ten hits cost ten row-group reads, not a frame of their rows to filter."""
        files, where = self._where
        if where.is_empty():
            return {}, False
        at = where["id"].search_sorted(wanted).clip(upper_bound=where.height - 1)  # the map is sorted by id
        placed = where[at.to_numpy()].filter(pl.col("id").is_in(wanted.implode())).unique("id")
        wanted_in = {n: (ids, rows) for n, ids, rows in placed.group_by("file").agg("id", "row").iter_rows()}

        def read(n: int) -> tuple[list, list]:
            path, identity, listed, opened = files[n]
            if file_identity(path) != identity:  # its footer and rows are not those mapped
                raise InputError(f"{path}: rewritten since it was listed")
            return self._rows(path, listed, wanted_in[n][1], opened)

        number_of = {files[n][0]: n for n in sorted(wanted_in)}
        texts, misplaced = {}, False
        read_files = storage.each_file(lambda path: read(number_of[path]), list(number_of))
        for n, (ids, found) in zip(number_of.values(), read_files):
            if ids != wanted_in[n][0]:  # the map is wrong about this file: listed again
                misplaced = True
                continue
            texts.update(zip(ids, found))
        return texts, misplaced

    def _list(self, dtype, asked: float) -> None:
        self._use(dtype)
        with self._lock:
            if self._listed_at > asked:
                return  # listed since this request asked
            paths = discover(self.data)
            identities = dict(zip(paths, storage.each_file(file_identity, paths)))
            changed = [p for p in paths if self._files.get(p, (None,))[0] != identities[p]]
            files = dict(self._files)
            if changed:
                files.update({p: (identities[p], *read) for p, read in zip(changed, self._ids_of(changed, dtype))})
            self._files = {p: files[p] for p in paths}
            ids_of = [entry[2] for entry in self._files.values()]
            sizes = np.array([len(ids) for ids in ids_of])
            row = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            where = pl.DataFrame({"id": pl.concat(ids_of, rechunk=True), "row": row,
                                  "file": np.repeat(np.arange(len(paths), dtype=np.uint32), sizes)})
            self._where = ([(p, entry[0], entry[1], entry[3]) for p, entry in self._files.items()],
                           where.unique("id", keep="last").sort("id"))
            self._listed, self._listed_at = set(paths), time.monotonic()
