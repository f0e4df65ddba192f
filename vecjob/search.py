"""Similarity search: a query (text encoded by the model, or a stored document's vector) → top-k."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from vecjob import storage
from vecjob.errors import ArtifactError, InputError, quoted
from vecjob.index import LoadedIndex, load_index_dir
from vecjob.outputs import MANIFEST
from vecjob.parquet_io import (
    collect_scanned,
    discover,
    file_identity,
    footer,
    path_order,
    read_json,
    read_row_groups,
    scan_by_id,
    scan_files_by_id,
    texts_as_text,
)


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
        first = encoded_from(index, [h["id"] for h in hits])
        add_snippets(hits, lambda ids: lookup_texts(data, ids, id_col, text_col, look_first=first), snippet_chars)
    return hits


def encoded_from(index: LoadedIndex, ids: list) -> list[str]:
    """The input files that the vectors of `ids` were encoded from, as the vectors' manifest names
    them: where a one-off lookup of their texts looks first. An empty list where that is not known
    (the vectors moved, or an index whose id map names no vector shard)."""
    if "shard" not in index.labels.column_names or not ids:
        return []
    try:
        manifest = read_json(storage.join(index.manifest["vectors_dir"], MANIFEST))
        input_of = {Path(s["output"]).name: s["input"] for s in manifest["shards"]}
    except (ArtifactError, OSError, KeyError, TypeError):
        return []
    labels = index.labels
    held = labels.filter(pc.is_in(labels.column("id"), value_set=pa.array(ids, labels.schema.field("id").type)))
    return sorted({input_of[s] for s in held.column("shard").to_pylist() if s in input_of}, key=path_order)


def add_snippets(hits: list[dict], texts_of: Callable[[list], dict], snippet_chars: int = 160) -> None:
    """Give each hit the start of its document's text, one line, from `texts_of(ids)`: id → text."""
    texts = texts_of([h["id"] for h in hits])
    for h in hits:
        snippet = " ".join((texts.get(h["id"]) or "").split())
        h["snippet"] = snippet[:snippet_chars] + ("…" if len(snippet) > snippet_chars else "")


def lookup_texts(data: list[str], ids: list, id_col: str = "id", text_col: str = "text",
                 look_first: list[str] = ()) -> dict:
    """id → text for a one-off search (a process per query): the texts of the matching rows in the
    files of `look_first` that the data holds (those the hits' vectors were encoded from), and for
    ids not found there, in every file (a read of each file's id column: in a store, requests per
    file). A service, which answers many searches, keeps a `DocumentFiles` map instead."""
    if not ids:
        return {}
    wanted = pl.Series("id", ids)
    files, texts = discover(data), {}
    listed = set(files)
    if first := [p for p in look_first if p in listed]:
        texts = _texts_in(first, first, wanted, id_col, text_col)
        wanted = wanted.filter(~wanted.is_in(pl.Series(list(texts), dtype=wanted.dtype).implode()))
        if wanted.is_empty():
            return texts
    return texts | _texts_in(data, files, wanted, id_col, text_col)


def _texts_in(data: list[str], files: list[str], wanted: pl.Series, id_col: str, text_col: str) -> dict:
    """id → text of the `wanted` ids in `files` (of `data`, which a message names)."""
    frame = texts_as_text(scan_files_by_id(files, id_col, {"text": text_col}, wanted.dtype), data, text_col)
    frame = frame.filter(pl.col("id").is_in(wanted.implode()))
    return dict(collect_scanned(frame, data).select("id", "text").iter_rows())


class DocumentFiles:
    """A collection's texts by id, read from the row groups that hold the ids asked for. A service
    answers many searches, and reading the id column of every file for each (a request per file, in
    a store) made a snippet cost more than the search. So the files are listed once and each id's
    file and row mapped, and listed again, reading the ids of new and rewritten files only, on
    `refresh` and when an id is not where the map says: at once when its file is gone or rewritten,
    at most every `relist_s` seconds for ids no file held (an index may hold ids that the texts
    given do not)."""

    def __init__(self, data: list[str], id_col: str = "id", text_col: str = "text", relist_s: float = 10.0):
        self.data, self.id_col, self.text_col, self.relist_s = data, id_col, text_col, relist_s
        self._lock = threading.Lock()
        self._files: dict[str, tuple] = {}  # path → (its identity, footer and ids when read)
        self._where: tuple[list, pl.DataFrame] = ([], pl.DataFrame())  # files listed; each id's file and row
        self._dtype = None
        self._listed_at = -math.inf

    def refresh(self, id_type: pa.DataType) -> None:
        """List the files again and read the ids (of the index's type) of new and rewritten ones: at
        start, and whenever the served index changes (a night that adds a shard of newer rows for
        old ids publishes a new index too, and no search would miss those ids)."""
        self._list(pl.from_arrow(pa.array([], id_type)).dtype, asked=time.monotonic())

    def texts(self, ids: list) -> dict:
        """id → text for the ids some file holds (a later file's row of an id, as the vectors take)."""
        if not ids:
            return {}
        wanted = pl.Series("id", ids)
        self._list(wanted.dtype, asked=-math.inf)  # the first time, or after ids of another type
        asked = time.monotonic()
        try:
            texts, misplaced = self._read(wanted)
        except (OSError, InputError, pl.exceptions.PolarsError, pa.ArrowException):  # gone or rewritten since listed
            texts, misplaced = {}, True
        if misplaced or (len(texts) < wanted.n_unique() and asked - self._listed_at >= self.relist_s):
            self._list(wanted.dtype, asked)
            texts, _ = self._read(wanted)
        return texts

    def _read(self, wanted: pl.Series) -> tuple[dict, bool]:
        """Texts of the ids the map places, and whether one was not where the map says. Each file is
        read once, the row groups holding its rows only, and the rows taken by position: a search's
        ten hits cost ten row-group reads, not a frame of their rows to filter."""
        files, where = self._where
        if where.is_empty():
            return {}, False
        at = where["id"].search_sorted(wanted).clip(upper_bound=where.height - 1)  # the map is sorted by id
        placed = where[at.to_numpy()].filter(pl.col("id").is_in(wanted.implode())).unique("id")
        wanted_in = {n: (ids, rows) for n, ids, rows in placed.group_by("file").agg("id", "row").iter_rows()}

        def read(n: int) -> tuple[list, list]:
            path, identity, listed = files[n]
            if file_identity(path) != identity:  # its footer and rows are not those mapped
                raise InputError(f"{path}: rewritten since it was listed")
            ids, rows = wanted_in[n]
            starts = np.cumsum([0] + [listed.row_group(g).num_rows for g in range(listed.num_row_groups)])
            group_of = np.searchsorted(starts, rows, side="right") - 1
            groups = sorted(set(group_of.tolist()))
            table = read_row_groups(path, groups, [self.id_col, self.text_col], listed, threads=False)
            read_from = dict(zip(groups, np.cumsum([0] + [starts[g + 1] - starts[g] for g in groups])))
            taken = table.take([read_from[g] + r - starts[g] for g, r in zip(group_of, rows)])
            return taken[self.id_col].to_pylist(), taken[self.text_col].to_pylist()

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
        with self._lock:
            if self._listed_at > asked and dtype == self._dtype:
                return  # listed since this request asked
            if dtype != self._dtype:
                self._files, self._dtype = {}, dtype
            paths = discover(self.data)
            identities = dict(zip(paths, storage.each_file(file_identity, paths)))
            changed = [p for p in paths if self._files.get(p, (None,))[0] != identities[p]]
            files = dict(self._files)
            if changed:
                footers = storage.each_file(footer, changed)
                scan_files_by_id(changed, self.id_col, {"text": self.text_col}, dtype, footers=footers)  # the checks
                read = dict(zip(changed, footers))

                def read_ids(path: str) -> pl.Series:  # a file's ids in row order; in a store, files many at once
                    groups = list(range(read[path].num_row_groups))
                    return pl.Series("id", read_row_groups(path, groups, [self.id_col], read[path])[0]).cast(dtype)

                ids = storage.each_file(read_ids, changed)
                files.update({p: (identities[p], read[p], ids_read) for p, ids_read in zip(changed, ids)})
            self._files = {p: files[p] for p in paths}
            ids_of = [ids for *_, ids in self._files.values()]
            sizes = np.array([len(ids) for ids in ids_of])
            row = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            where = pl.DataFrame({"id": pl.concat(ids_of, rechunk=True), "row": row,
                                  "file": np.repeat(np.arange(len(paths), dtype=np.uint32), sizes)})
            self._where = ([(p, *entry[:2]) for p, entry in self._files.items()],
                           where.unique("id", keep="last").sort("id"))
            self._listed_at = time.monotonic()
