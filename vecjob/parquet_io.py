"""The data contract on disk: finding and checking input shards, atomic writes, manifests.

Input shards may be local paths or object-store URIs (`vecjob.storage`); they are read through
pyarrow.fs either way, so a shard's path is what Ray workers on any node open too.

Everything vecjob publishes goes through `atomic_path`: write to a hidden temporary name in the
destination folder, then `os.replace`, so a reader (or a rerun after `kill -9`) never sees half a file.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vecjob import FORMAT_VERSION, __version__, storage
from vecjob.errors import ArtifactError, InputError, quoted
from vecjob.outputs import MANIFEST, temp_sibling


@dataclass(frozen=True)
class Shard:
    """One input Parquet file, checked: its columns exist and have usable types."""

    path: str
    num_rows: int
    row_group_rows: tuple[int, ...]  # rows in each row group, to cut work into units
    id_type: str  # "string" or "int"
    kept_types: tuple[pa.DataType | None, ...] = ()  # of each column copied into the vector shards; None: absent

    @property
    def name(self) -> str:
        """Deterministic output name: the input stem plus a hash of the full path (stems may repeat)."""
        digest = hashlib.blake2b(self.path.encode(), digest_size=4).hexdigest()
        return f"{storage.basename(self.path).removesuffix('.parquet')}-{digest}"


def discover(paths: list[str] | str) -> list[str]:
    """Expand files, directories and globs into a sorted list of Parquet files."""
    if isinstance(paths, str):
        paths = [paths]
    found: list[str] = []
    unnamed: list[str] = []  # files in a folder not named *.parquet, as Hive writes its shards (000000_0)
    for p in paths:
        storage.check_location(p, "input")
    in_stores = [p for p in paths if storage.is_uri(p)]  # a list of many files there: requests at once
    listed = dict(zip(in_stores, storage.each_file(_discover_uri, in_stores)))
    for p in paths:
        if storage.is_uri(p):
            found += listed[p][0]
            unnamed += listed[p][1]
            continue
        if os.path.isdir(p):  # a name that exists is read as named, even with a glob's characters ("part[1]")
            files = [f for f in _walk(Path(p)) if not _hidden(f.relative_to(p))]  # a hidden file's name
            found += sorted(_linked(f) for f in files if f.name.endswith(".parquet"))
            unnamed += [str(f) for f in files if not f.name.endswith(".parquet")]
        elif os.path.isfile(p):
            found.append(p)
        elif os.path.exists(p):  # a named pipe or a device: opening one may wait forever
            raise InputError(f"{p}: not a regular file")
        elif storage.is_glob(p):
            found += [_linked(Path(f)) for f in _glob(p) if not _hidden_match(p, f)]
        else:
            raise InputError(f"{p}: no such file or directory")
    if not found:
        hint = (f" ({len(unnamed)} other file(s), such as {Path(unnamed[0]).name}: in a folder vecjob reads the "
                "files named *.parquet; a glob names others, as 'FOLDER/*')") if unnamed else ""
        raise InputError(f"{', '.join(paths)}: no Parquet files found{hint}")
    return sorted(dict.fromkeys(f if storage.is_uri(f) else os.path.abspath(f) for f in found), key=path_order)


def path_order(path: str) -> tuple:
    """The order of a collection's shards, in which a later shard's row of an id replaces an earlier
    one's: by name, with numbers compared as numbers. Spark writes an integer partition column
    unpadded, and by characters alone `month=10` came before `month=9`: September's vector of a
    document won over October's. Zero-padded names and ISO dates sort as they did."""
    parts = re.split(r"(\d+)", path)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), path


def _discover_uri(location: str) -> tuple[list[str], list[str]]:
    """Files, prefixes and globs in an object store, as URIs (a store lists; it has no directories);
    and the files of a prefix not named *.parquet."""
    scheme = location.split("://", 1)[0] + "://"
    storage.check_reachable(location, "input")
    fs, path = storage.filesystem(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [location], []
    if storage.is_glob(path) and info.type != pafs.FileType.Directory:  # a prefix that exists is read as named
        listed = storage.list_files(scheme + storage.glob_root(path))
        return sorted(scheme + i.path for i in listed.values()
                      if fnmatch.fnmatchcase(i.path, path) and not _hidden_match(path, i.path)), []
    listed = storage.list_files(location)
    if not listed and info.type == pafs.FileType.NotFound:
        raise InputError(f"{location}: no such file or prefix")
    visible = {rel: scheme + i.path for rel, i in listed.items() if not _hidden(Path(rel))}
    return (sorted(uri for rel, uri in visible.items() if rel.endswith(".parquet")),
            [uri for rel, uri in visible.items() if not rel.endswith(".parquet")])


def parquet_file(path: str, footer: pq.FileMetaData | None = None,
                 opened: pa.NativeFile | None = None) -> pq.ParquetFile:
    """Open a shard, local or in an object store (`opened`: already, by `opened_in_store`): its footer
    read, or the one given. Reads of a local file are not pre-buffered: that coalesces the requests a
    store answers slowly, and on local disk only adds a background read per column chunk (a search's
    snippets read ten small row groups)."""
    if storage.is_uri(path):
        return pq.ParquetFile(opened or opened_in_store(path), metadata=footer)
    return pq.ParquetFile(path, metadata=footer, pre_buffer=False)


def opened_in_store(path: str) -> pa.NativeFile | None:
    """A file in a store opened for reads at any offset, from any thread: opening asks the store for
    its size, a request that a reader of many small pieces of one file (a service's snippets) makes
    once. None for a local file, whose opening costs nothing worth keeping a descriptor for."""
    if not storage.is_uri(path):
        return None
    fs, inner = storage.filesystem(path)
    return fs.open_input_file(inner)


def _glob(pattern: str) -> list[str]:
    """The files (and links to nothing) a local glob names. Its `**` follows links to folders, each
    real folder once (`_walk`); the glob module's `**` followed a link back up the tree ~40 times over."""
    parts = Path(pattern).parts
    wild = next(i for i, part in enumerate(parts) if storage.is_glob(part))
    rest = tuple(part if part == "**" else part.replace("**", "*") for part in parts[wild:])  # "a**" is "a*"
    rest = tuple(part for i, part in enumerate(rest) if part != "**" or rest[i - 1 : i] != ("**",))  # **/** is **
    root = Path(*parts[:wild]) if wild else Path()
    if "**" not in rest or not root.is_dir():  # pathlib follows links to folders in a wildcard that is not `**`
        return [str(f) for f in root.glob(str(Path(*rest))) if f.is_file() or not f.exists()]
    names_hidden = any(part.startswith((".", "_")) for part in rest)
    return [str(f) for f in _walk(root, names_hidden) if _matches(f.relative_to(root).parts, rest)]


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether a relative path's parts match a glob's, `**` standing for any number of folders."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def _walk(root: Path, hidden: bool = False) -> Iterator[Path]:
    """The regular files below `root` (and links to nothing), in name order, following links to folders as
    pyarrow's and polars' readers do (shards kept on another disk, linked in), each real folder once:
    a link back up the tree lists nothing twice. Folders starting with "." or "_" are not entered
    unless `hidden` (a glob names such parts): a filer's `.snapshot` holds the whole tree again. A
    folder that cannot be listed is refused, as pyarrow's datasets refuse it, not skipped: its
    shards' vectors would be dropped as if deleted."""
    def refuse(exc: OSError) -> None:
        raise InputError(f"{exc.filename}: cannot list the folder ({exc.strerror}); name the folders or a glob "
                         "of the shards to read without it")

    seen = set()
    for folder, folders, files in os.walk(root, onerror=refuse, followlinks=True):
        status = os.stat(folder)
        if (status.st_dev, status.st_ino) in seen:
            folders.clear()
            continue
        seen.add((status.st_dev, status.st_ino))
        folders[:] = sorted(f for f in folders if hidden or not f.startswith((".", "_")))
        listed = (Path(folder, name) for name in sorted(files))
        yield from (f for f in listed if f.is_file() or not f.exists())  # not a named pipe: opening one waits


def _linked(path: Path) -> str:
    """A listed file's path; a link to nothing is refused: it reads as a shard gone missing (a disk
    not mounted), and a night would drop that shard's vectors."""
    if not path.exists():
        raise InputError(f"{path}: a link to {os.readlink(path)}, which does not exist")
    return str(path)


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def _hidden_match(pattern: str, match: str) -> bool:
    """A file or folder starting with "." or "_" that a wildcard matched and the pattern does not name
    (Spark's _SUCCESS and .crc files, a _temporary folder): skipped, as in a folder and as pyarrow's
    datasets skip them."""
    pattern_parts, parts = Path(pattern).parts, Path(match).parts
    wild = next(i for i, part in enumerate(pattern_parts) if storage.is_glob(part))
    named = [part for part in pattern_parts[wild:] if part.startswith((".", "_"))]
    return any(part.startswith((".", "_")) and not any(fnmatch.fnmatchcase(part, n) for n in named)
               for part in parts[wild:])


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # what Hive and Spark name the folder of a null partition value


def partition_values(path: str, names: list[str]) -> dict[str, str | None]:
    """The values of the Hive-style partition columns among `names` in a shard's folders
    (`…/dt=2026-12-07/part-0.parquet`: dt), which Spark and Hive write into the path, not the file;
    parsed by pyarrow (values URL-decoded, `__HIVE_DEFAULT_PARTITION__` null)."""
    if not names:
        return {}
    import pyarrow.dataset as pads

    partitioning = pads.HivePartitioning(pa.schema([(n, pa.string()) for n in names]), null_fallback=HIVE_NULL)
    try:  # pyarrow reads the last segment of a path as a file's name, so the folder ends with "/"
        return pads.get_partition_keys(partitioning.parse(path.rsplit("/", 1)[0] + "/"))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: its folders cannot be read as partition columns ({exc})") from None


def check_shard(path: str, id_col: str, text_col: str | None, keep_columns: tuple[str, ...] = ()) -> Shard:
    """Open a shard's footer and check its schema; raise InputError naming the file on any problem."""
    meta = footer(path)
    schema = meta.schema.to_arrow_schema()
    _require_column(path, schema, id_col)
    id_field = _value_type(schema.field(id_col).type)
    id_type = _kind(id_field)
    if id_type not in ("int", "string"):
        raise InputError(f"{path}: id column '{id_col}' has type {id_field}; expected string or integer"
                         f"{_bytes_hint(id_field)}")
    if text_col is not None:
        _require_column(path, schema, text_col)
        t = _value_type(schema.field(text_col).type)
        if not (_is_text(t) or pa.types.is_null(t)):  # null: every text missing, as pandas writes a column of Nones
            raise InputError(f"{path}: text column '{text_col}' has type {t}; expected string{_bytes_hint(t)}")
    for col in keep_columns:
        if col in schema.names:  # missing from some shards is nulls there (`require_kept_columns`)
            _require_column(path, schema, col)
    rg_rows = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    partitions = partition_values(path, [c for c in keep_columns if c not in schema.names])

    def kept_type(col: str) -> pa.DataType | None:  # a column in the file wins over a folder of that name
        if col in schema.names:
            return _value_type(schema.field(col).type)
        return pa.string() if col in partitions else None

    return Shard(path=path, num_rows=meta.num_rows, row_group_rows=rg_rows, id_type=id_type,
                 kept_types=tuple(kept_type(c) for c in keep_columns))


def footer(path: str, opened: pa.NativeFile | None = None) -> pq.FileMetaData:
    """A shard's footer; a file that is not Parquet is one line naming it."""
    try:
        return parquet_file(path, opened=opened).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from None


def _value_type(t: pa.DataType) -> pa.DataType:
    """A dictionary-encoded column (pandas' category, polars' Categorical) holds values of this type."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _kind(t: pa.DataType) -> str:
    """A column's type up to what readers promote across files: integer and float widths, string
    kinds, timestamp units."""
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_timestamp(t):
        return f"timestamp (time zone {t.tz})" if t.tz else "timestamp"
    return "string" if _is_text(t) else str(t)


def _mixes(kinds: set[str]) -> bool:
    """Whether no reader reads values of these kinds as one column. Integers beside floats read as
    floats: pandas writes a column of integers with a missing value as floats (NaN)."""
    return len(kinds - {"int"} if "float" in kinds else kinds) > 1


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


# Why a column of bytes is not read as text: its strings lack Parquet's UTF-8 annotation, as older Hive
# and Impala writers leave them (Spark reads them back as strings only under `binaryAsString`).
_BYTES_HINT = " (bytes without Parquet's UTF-8 annotation, as older Hive and Impala write strings: write it as strings)"


def _bytes_hint(t: pa.DataType) -> str:
    return _BYTES_HINT if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t) else ""


def _require_column(path: str, schema: pa.Schema, col: str) -> None:
    if schema.get_field_index(col) < 0:  # also -1 for a name two columns share, as a Parquet file may
        twice = f"{schema.names.count(col)} columns are named '{col}'" if col in schema.names else ""
        raise InputError(f"{path}: {twice or f'missing column {col!r}'} (columns: {', '.join(schema.names)})")


def check_shards(
    paths: list[str] | str,
    id_col: str,
    text_col: str | None,
    strict: bool = False,
    keep_columns: tuple[str, ...] = (),
    content: bool = True,
) -> list[Shard]:
    """Check every shard before any work starts, so bad input in the last shard is refused before
    the first is written: footers and schemas, one id type across shards, and with `content` what
    `check_content` reads. Without it, the caller checks the content of the shards it will read (a
    nightly encode reads only the new ones)."""
    shards = storage.each_file(lambda p: check_shard(p, id_col, text_col, tuple(keep_columns)), discover(paths))
    _one_kind(shards, lambda s: s.id_type, f"id column '{id_col}'")
    require_kept_columns(shards, keep_columns)
    for i, col in enumerate(keep_columns):  # the vector shards must read as one table; nulls only fit any type
        typed = [s for s in shards if _holds_values(s.kept_types[i])]
        _one_kind(typed, lambda s: _kind(s.kept_types[i]), f"--keep column '{col}'")
    for shard in shards if content else ():
        check_content(shard, id_col, text_col, strict)
    return shards


def require_kept_columns(shards: list[Shard], keep_columns: tuple[str, ...]) -> None:
    """A kept column may be missing from some shards, an older night's from before the column was
    added (its rows hold nulls there), but not from every one: a misspelt name."""
    for i, col in enumerate(keep_columns):
        if all(s.kept_types[i] is None for s in shards):
            _require_column(shards[0].path, footer(shards[0].path).schema.to_arrow_schema(), col)


def kept_column_types(shards: list[Shard]) -> list[pa.DataType]:
    """The type each kept column is written as in every vector shard, so that any reader of them,
    vecjob's or another's (polars reads a folder as its first file's types), reads one type: the
    shards' types promoted as readers promote them (int32 and int64: int64; integers and floats:
    floats; timestamps: the finest unit). A shard without the column, or with nulls only (pandas'
    column of Nones), holds no type; strings where none does."""
    types = []
    for column in zip(*(s.kept_types for s in shards)):
        held = [pa.schema([("c", _plain_type(t))]) for t in column if _holds_values(t)]
        types.append(pa.unify_schemas(held, promote_options="permissive").field("c").type if held else pa.string())
    return types


def _holds_values(t: pa.DataType | None) -> bool:
    return t is not None and not pa.types.is_null(t)


def _one_kind(shards: list[Shard], kind_of, column: str) -> None:
    first: dict[str, str] = {}  # each kind's first shard, in path order
    for s in shards:
        first.setdefault(kind_of(s), s.path)
    if _mixes(set(first)):
        raise InputError(f"{column} mixes types across shards: {first}")


def check_content(shard: Shard, id_col: str, text_col: str | None, strict: bool) -> None:
    """No null id and no id twice in one shard (a vector is stored and found by its id); under
    `strict`, no null or blank text. One read of the columns it checks."""
    import polars as pl

    checks_texts = strict and text_col is not None
    table = read_row_groups(shard.path, list(range(len(shard.row_group_rows))),
                            [id_col, text_col] if checks_texts else [id_col])
    ids = table.column(id_col)
    if ids.null_count:
        raise InputError(f"{shard.path}: {ids.null_count} row(s) with a null id in column '{id_col}'")
    id_series = pl.from_arrow(ids)
    if (twice := id_series.is_duplicated()).any():
        examples = ", ".join(map(quoted, id_series.filter(twice).unique(maintain_order=True).head(3).to_list()))
        raise InputError(f"{shard.path}: {int(twice.sum())} rows share an id in column '{id_col}' (e.g. {examples}); "
                         "ids must be unique within a shard")
    if id_series.dtype == pl.UInt64 and id_series.max() > np.iinfo(np.int64).max:  # vector shards hold int64 ids
        raise InputError(f"{shard.path}: id {id_series.max()} in column '{id_col}' is above 2^63 - 1, the largest "
                         "integer id vecjob keeps; write the ids as strings")
    if checks_texts and (blank := blank_texts(table.column(text_col))).any():
        first = ids[int(blank.argmax())].as_py()
        raise InputError(
            f"{shard.path}: {int(blank.sum())} null or empty text(s) (first id {quoted(first)}) and --strict is set"
        )


def blank_texts(texts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """True where a text is null, empty or whitespace only: such documents have nothing to encode."""
    import pyarrow.compute as pc

    stripped = pc.utf8_trim_whitespace(texts)
    return pc.fill_null(pc.equal(pc.utf8_length(stripped), 0), True).to_numpy(zero_copy_only=False)


def read_row_groups(path: str, row_groups: list[int], columns: list[str], footer: pq.FileMetaData | None = None,
                    threads: bool = True, opened: pa.NativeFile | None = None) -> pa.Table:
    """Read some row groups of one shard (`threads`: its columns decoded in parallel, which costs more
    than it saves on a row group or two); a corrupt page raises InputError naming the file."""
    try:
        table = parquet_file(path, footer, opened).read_row_groups(row_groups, columns=columns, use_threads=threads)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read row groups {row_groups}: {exc}") from None
    return _plain_columns(table, path)


def iter_rows(path: str, row_groups: list[int], columns: list[str], skip: int, rows: int,
              batch_rows: int) -> Iterator[pa.Table]:
    """Rows skip .. skip + rows of some row groups of one shard, at most `batch_rows` at a time: a row
    group of a million rows is never held whole. At least one table, empty for no rows; a corrupt page
    raises InputError naming the file."""
    seen, given = 0, False
    try:
        for batch in parquet_file(path).iter_batches(batch_size=batch_rows, row_groups=row_groups, columns=columns):
            start, seen = seen, seen + batch.num_rows
            if seen <= skip:
                continue
            if start >= skip + rows:
                break
            first = max(skip - start, 0)
            piece = pa.Table.from_batches([batch.slice(first, min(skip + rows, seen) - start - first)])
            given = True
            yield _plain_columns(piece, path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read row groups {row_groups}: {exc}") from None
    if not given:
        yield read_row_groups(path, [], columns)


def _plain_columns(table: pa.Table, path: str) -> pa.Table:
    for i, field in enumerate(table.schema):
        if (plain := _plain_type(field.type)) != field.type:
            table = table.set_column(i, field.name, table.column(i).cast(plain))
        if pa.types.is_string(plain) or pa.types.is_large_string(plain):
            _require_utf8(table.column(i), path, field.name)
    return table


def _require_utf8(texts: pa.ChunkedArray, path: str, name: str) -> None:
    """Parquet's strings are UTF-8 by spec, but pyarrow reads them unchecked: a writer that skipped the
    check leaves other bytes, which the tokeniser cuts into fragments without a word and polars (which
    reads the collection by id for search, cluster and sentiment) refuses. Refused here alike."""
    try:
        texts.validate(full=True)
    except pa.ArrowInvalid as exc:
        bad = next((t for t in texts.cast(pa.binary()).to_pylist() if t is not None and not _is_utf8(t)), None)
        if bad is None:
            raise InputError(f"{path}: cannot read column '{name}': {exc}") from None
        raise InputError(f"{path}: column '{name}' holds bytes that are not UTF-8 (e.g. {bad[:40]!r}); "
                         "write it as UTF-8") from None


def _is_utf8(text: bytes) -> bool:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _plain_type(t: pa.DataType) -> pa.DataType:
    """What a column is read as: a dictionary-encoded one as its values, a string view (pyarrow's
    `string_view`, which Arrow's take and sort kernels do not handle) and a column of nulls only as
    strings."""
    t = _value_type(t)
    return pa.string() if pa.types.is_string_view(t) or pa.types.is_null(t) else t


# ---- atomic writes -------------------------------------------------------------------------------


def _naming_dest(exc: OSError, dest: str | Path) -> OSError:
    """A failed write (a full disk) as an OSError naming `dest`, which the CLI prints as one line:
    Arrow's and matplotlib's errors name no file, or the temporary one ("Error writing bytes to file …
    File too large")."""
    return OSError(exc.errno, exc.strerror or str(exc), str(dest))


@contextlib.contextmanager
def naming(dest: str | Path) -> Iterator[None]:
    """A write by torch or FAISS that fails as an OSError naming `dest`: theirs are RuntimeErrors, which
    printed a traceback."""
    try:
        yield
    except OSError as exc:
        raise _naming_dest(exc, dest) from None
    except RuntimeError as exc:  # FAISS ends its message with the system's reason, "(File too large)"
        said = str(exc).strip().splitlines()[-1]
        reason = re.search(r"\(([^()]+)\)$", said)
        raise OSError(None, f"writing it failed ({reason.group(1) if reason else said})", str(dest)) from None


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it over `dest` only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(dest)
    try:
        try:
            yield tmp
        except OSError as exc:
            raise _naming_dest(exc, dest) from None
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet_atomic(table: pa.Table, dest: str | Path) -> None:
    """Write a Parquet file whole or not at all: on local disk through a temporary name, in a store as
    one object (an upload becomes visible only when it completes)."""
    if storage.is_uri(dest):
        fs, path = storage.filesystem(dest)
        pq.write_table(table, path, filesystem=fs, compression="zstd")
        return
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def plain_json(obj: Any, indent: int | None = None) -> str:
    """JSON that any parser reads: a NaN or an infinity (a silhouette undefined for one cluster) is
    null, not the bare NaN Python writes and JavaScript, jq and FastAPI's responses refuse."""
    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        return [finite(v) for v in value] if isinstance(value, (list, tuple)) else value

    return json.dumps(finite(obj), indent=indent, default=str, allow_nan=False)


def write_json_atomic(obj: Any, dest: str | Path) -> None:
    storage.write_bytes(str(dest), (plain_json(obj, indent=2) + "\n").encode())


def read_json(path: str | Path) -> dict:
    """A JSON object vecjob wrote (a manifest, a config, a record); damage is an ArtifactError naming it."""
    try:
        if storage.is_uri(path):
            value = json.loads(storage.read_bytes(str(path)))
        else:
            value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}): the file was damaged; write the folder again") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: a JSON {type(value).__name__}, not an object: the file was edited or damaged; "
                            "write the folder again")
    return value


def read_output_table(path: str | Path, columns: tuple[str, ...]) -> pa.Table:
    """A Parquet file of an output dir vecjob wrote, with the columns its reader needs; damage is an
    ArtifactError naming the file."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise ArtifactError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]}): the file was "
                            "damaged; write the folder again") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ArtifactError(f"{path}: no column '{missing[0]}': the file was edited or damaged; write the folder again")
    return table


def clean_stale_temporaries(folder: str | Path) -> int:
    """Remove temporaries left by a killed run (they are hidden, so never read, but take space)."""
    n = 0
    for f in Path(folder).glob(".*.tmp-*"):
        if f.is_file():
            f.unlink()
            n += 1
    return n


# ---- manifests and fingerprints ------------------------------------------------------------------


def file_fingerprint(path: str | Path) -> str:
    """Content hash of a file (blake2b, 16 bytes): stable across copies and machines. Remembered while
    the file stays the same file (on local disk: inode, size, modification and change times; in a
    store: size and modification time), in this process and in this machine's cache folder: every
    stage of a run and every night fingerprint every shard of the collection, and without the cache
    each night read the whole collection again (from a store, a download of every shard)."""
    return _content_hash(str(path), file_identity(path))


def file_identity(path: str | Path) -> tuple:
    """What changes when a file is rewritten: on local disk its inode, size, modification and change
    times; in a store its size and modification time."""
    if storage.is_uri(path):
        fs, inner = storage.filesystem(path)
        info = fs.get_file_info(inner)
        return info.size, info.mtime_ns
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@functools.lru_cache(maxsize=1 << 16)
def _content_hash(path: str, identity: tuple) -> str:
    key = fingerprint(path, identity)
    remembered = storage.cache_root() / "fingerprints" / key[:2] / key
    try:
        if re.fullmatch(r"[0-9a-f]{32}", known := remembered.read_text()):
            return known
    except (OSError, UnicodeDecodeError):
        pass  # not remembered, or damaged: hashed again
    h = hashlib.blake2b(digest_size=16)
    fs, inner = storage.filesystem(path)
    with fs.open_input_stream(inner) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    try:
        with atomic_path(remembered) as tmp:
            tmp.write_text(h.hexdigest())
    except OSError:
        pass  # a cache folder that cannot be written (a read-only home): hashed again next time
    return h.hexdigest()


def scan(paths: list[str], columns: pa.Schema):
    """A polars LazyFrame of `columns` over shards, local or in an object store (through pyarrow.fs).
    A file may hold other columns, and lack one of these (null in its rows): a collection's later
    shards may add a column. Categorical columns are read as their strings, as `read_row_groups`
    reads dictionary-encoded ones."""
    import polars as pl
    import polars.selectors as cs

    if not any(storage.is_uri(p) for p in paths):
        # `discover` expanded the globs; a "[" here is a name
        frame = pl.scan_parquet(paths, glob=False, schema=pl.from_arrow(columns.empty_table()).schema,
                                missing_columns="insert", extra_columns="ignore",
                                cast_options=pl.ScanCastOptions(integer_cast=["upcast", "allow-float"],
                                                                float_cast="upcast", datetime_cast="upcast",
                                                                categorical_to_string="allow"))
    else:
        import pyarrow.dataset as pads

        fs = storage.filesystem(paths[0])[0]
        frame = pl.scan_pyarrow_dataset(pads.dataset([storage.filesystem(p)[1] for p in paths], filesystem=fs,
                                                     format="parquet", schema=columns))
    return frame.with_columns(cs.categorical().cast(pl.String))


def scan_by_id(data: list[str] | str, id_col: str, columns: dict[str, str], id_dtype, optional: dict | None = None):
    """A collection's id column (as "id") and `columns` (the name given → its column; `optional` ones
    where present; one column may be given two names), read lazily to be joined to vectors by id. One
    line naming the file refuses a missing column, and ids of another type than `id_dtype` (the
    vectors'), which no row could match."""
    return scan_files_by_id(discover(data), id_col, columns, id_dtype, optional)


def scan_files_by_id(paths: list[str], id_col: str, columns: dict[str, str], id_dtype, optional: dict | None = None,
                     footers: list[pq.FileMetaData] | None = None):
    """`scan_by_id` over files already found by `discover` (and their `footers`, where read). Every
    file must hold the id column, and some file each of `columns` (a file without one, an older
    night's from before the column was added, reads as nulls there); an optional column is read where
    some file holds it."""
    import polars as pl

    footers = footers or storage.each_file(footer, paths)
    schemas = [f.schema.to_arrow_schema() for f in footers]
    for path, schema in zip(paths, schemas):
        for col in dict.fromkeys((id_col, *schema.names)):
            _require_column(path, schema, col)  # also refuses a name two columns share: polars reads no such file
    read = list(dict.fromkeys((id_col, *columns.values(), *(optional or {}).values())))
    held = [pa.schema([pa.field(c, _value_type(f.field(c).type)) for c in read if f.get_field_index(c) >= 0])
            for f in schemas]
    for col in read:  # a column of nulls only (a night's unlabelled shard) fits any other
        kinds = [(path, _kind(h.field(col).type)) for path, h in zip(paths, held)
                 if col in h.names and not pa.types.is_null(h.field(col).type)]
        if other := next(((path, kind) for path, kind in kinds if _mixes({kinds[0][1], kind})), None):
            raise InputError(f"{other[0]}: column '{col}' holds {other[1]}, in {kinds[0][0]} it holds {kinds[0][1]}")
    try:  # each column as the widest of its types in the files, as the training reader promotes them
        union = pa.unify_schemas(held, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise _not_one_table(f"{paths[0]}{' and the rest' if len(paths) > 1 else ''}", exc) from None
    frame = scan(paths, pa.schema([union.field(c) for c in read if c in union.names]))
    schema = frame.collect_schema()
    for col in (id_col, *columns.values()):
        if col not in schema:  # in no file
            _require_column(paths[0], schemas[0], col)
    ids = pl.col(id_col)
    if schema[id_col] != id_dtype:
        if not (schema[id_col].is_integer() and id_dtype.is_integer()):
            raise InputError(f"{paths[0]}: id column '{id_col}' is {schema[id_col]}, the vectors' ids are {id_dtype}")
        ids = ids.cast(id_dtype)
    present = {**columns, **{name: col for name, col in (optional or {}).items() if col in schema}}
    return frame.select(ids.alias("id"), *(pl.col(col).alias(name) for name, col in present.items()))


def collect_scanned(frame, data: list[str] | str):
    """`frame` (from `scan_by_id`) read: files whose columns differ in type (a label of integers in
    one, of strings in another) are one line naming the data, not a polars traceback."""
    import polars as pl

    try:  # one row an id, as in the vectors: a later shard's row replaces an earlier one's (shards in path order)
        return frame.unique("id", keep="last", maintain_order=True).collect()
    except pl.exceptions.PolarsError as exc:
        raise _not_one_table(named(data), exc) from None


def named(data: list[str] | str) -> str:
    """The data's paths as given, for a message."""
    return str(data) if isinstance(data, (str, Path)) else ", ".join(map(str, data))


def _not_one_table(where: str, exc: Exception) -> InputError:
    reason = str(exc).strip().splitlines()[0]
    if "utf-8" in reason.lower():  # Parquet's strings are UTF-8 by spec; a writer that skipped the check left other bytes
        return InputError(f"{where}: a string column holds bytes that are not UTF-8 ({reason}); write it as UTF-8")
    return InputError(f"{where}: its files cannot be read as one table ({reason})")


def texts_as_text(frame, data: list[str] | str, column: str):
    """`frame` with its "text" column (the data's `column`) as strings: a column of nulls only (pandas'
    Nones) is missing texts; another type is refused, as train and encode refuse it."""
    import polars as pl

    dtype = frame.collect_schema()["text"]
    if dtype not in (pl.String, pl.Null):
        hint = _BYTES_HINT if dtype == pl.Binary else ""
        raise InputError(f"{named(data)}: text column '{column}' holds {dtype}; expected strings{hint}")
    return frame.with_columns(pl.col("text").cast(pl.String))


def labels_as_text(frame, data: list[str] | str, column: str):
    """`frame` with its "label" column (the data's `column`) as strings, whatever their type. In a float
    column (how pandas writes integers with a missing value, and how integer shards read beside such
    a shard) NaN is a missing label, not the class "NaN", and a whole number is written as an integer:
    the class 4 stays "4" on the night a shard with a missing label arrives, not "4.0", a class the
    classifier never saw. An empty or blank string is a missing label too, as a CSV's empty field
    converted by some tools (not the class "", a blank row in every report and a `prob_` column). A list
    or struct is refused: a label is one value."""
    import polars as pl

    label, dtype = pl.col("label"), frame.collect_schema()["label"]
    if dtype.is_nested():
        raise InputError(f"{named(data)}: label column '{column}' holds {dtype}; a label is one value: a string, "
                         "a number or a bool")
    if dtype.is_float():
        number = label.fill_nan(None)
        whole = (number == number.round()) & (number.abs() < 2**53)  # exact as a float, so exact as an integer
        return frame.with_columns(pl.when(whole).then(number.cast(pl.Int64).cast(pl.String))
                                  .otherwise(number.cast(pl.String)).alias("label"))
    text = label.cast(pl.String)
    return frame.with_columns(pl.when(text.str.strip_chars() != "").then(text).alias("label"))


def fingerprint(*parts: Any) -> str:
    """Hash of JSON-serialisable parts (configs, other fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def new_manifest(kind: str, **fields: Any) -> dict:
    """The common head of every manifest: what wrote it and when."""
    return {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "vecjob_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        **fields,
    }


_A_TYPE = {int: "an integer", str: "a string", list: "a list", dict: "an object"}


def check_kind(folder: str | Path, manifest: dict, kind: str) -> None:
    """Refuse a manifest of another kind, naming it: a vectors dir given where an index belongs."""
    found = manifest.get("kind")
    if isinstance(found, str) and found != kind:
        what = f"a vecjob {found[7:]} dir" if found.startswith("vecjob.") else f"a manifest of kind {quoted(found)}"
        raise ArtifactError(f"{folder}: {what}, where a vecjob {kind.split('.')[-1]} dir belongs")


def read_manifest(folder: str | Path, kind: str, fields: dict[str, type] | None = None) -> dict:
    """Read and check a manifest; an absent, foreign or newer-format one is an ArtifactError, and so
    is one without the `fields` its reader needs (name → type), as a hand edit or damage leaves it."""
    path = storage.join(str(folder), MANIFEST)
    if not storage.exists(path):
        raise ArtifactError(f"{folder}: no {MANIFEST} (not a complete vecjob {kind.split('.')[-1]} dir)")
    manifest = read_json(path)
    check_kind(folder, manifest, kind)  # before its fields: another kind's folder lacks them
    for name, wanted in {"kind": str, **(fields or {})}.items():
        value = manifest.get(name)
        if not isinstance(value, wanted) or isinstance(value, bool):
            found = "missing" if name not in manifest else f"{json.dumps(value)[:40]}"
            raise ArtifactError(f"{path}: '{name}' is {found}, where {_A_TYPE[wanted]} belongs: the manifest was "
                                "edited or damaged; write the folder again")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format version {manifest.get('format_version')} is not supported "
            f"(this vecjob {__version__} reads version {FORMAT_VERSION})"
        )
    return manifest
