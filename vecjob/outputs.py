"""Where vecjob writes on disk: checking an output location before any work, locking it, publishing it.
An output in an object store is written into a local mirror of this kind and published from there by
`vecjob.storage`, which has no rename or flock to rely on.

One promise for every output folder: a reader sees a complete generation (one run's files under
that run's manifest) or a folder that is visibly incomplete, never a mix. Two ways keep it:

- a folder rewritten as a whole (model, index, clusters, classifier) is built under a hidden
  temporary name beside it and swapped in (`staged_dir`);
- a folder that reruns update shard by shard (vectors, predictions) names each shard after its
  generation (what its content depends on), so no file is ever rewritten in place; its manifest is
  written last and lists the generation (`vecjob.encode_shards`, `vecjob.sentiment`).

Locks live beside the folder (`.<name>.lock`) so a swap never replaces the lock a writer holds, and
are removed on release so a refused or finished run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import glob
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from vecjob import faults, storage
from vecjob.errors import ConfigError, LockedError

MANIFEST = "manifest.json"


def temp_sibling(dest: Path) -> Path:
    """A hidden, unique name beside `dest` for what becomes `dest` (the cleaners know its pattern)."""
    return dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"


def _check_local(location: str | Path, what: str) -> None:
    """Refuse a location vecjob cannot use, and an object-store URI where a local folder is needed
    (callers publish to a store through `vecjob.storage.mirrored`, which hands them a local one)."""
    storage.check_location(location, what)
    if storage.is_uri(location):
        raise ConfigError(f"{what} {location}: an object-store location must be written through vecjob.storage")


def _uri_overlap(out: str, location: str) -> bool:
    """Whether a folder in a store and an input location there hold one another (a glob reads below
    its first wildcard-free prefix)."""
    if storage.is_glob(location) and not storage.exists(location):
        location = storage.glob_root(location)
    out_parts, in_parts = ([p for p in uri.rstrip("/").split("/") if p] for uri in (out, location))
    shared = min(len(out_parts), len(in_parts))
    return out_parts[:shared] == in_parts[:shared]


def _input_root(location: str) -> Path:
    """The folder (or file) an input location reads: a glob reads below its first wildcard-free prefix."""
    if storage.is_glob(location) and not os.path.exists(location):
        return Path(storage.glob_root(location) or ".").resolve()
    return Path(location).resolve()


def check_output(
    out: str | Path, what: str, inputs: Iterable[str | Path] = (), markers: tuple[str, ...] = (MANIFEST,),
    kind: str = "",
) -> Path:
    """Check an output location before any work starts; returns it resolved.

    Refused, with one line naming `what` (the flag or key): a URI, an existing file, a parent that
    is a file or cannot be written, a folder that overlaps an input (inputs are read recursively,
    so the outputs would become input), a non-empty folder holding none of the `markers` that show
    vecjob wrote it (its files would be replaced or removed; no markers: any folder will do), and a
    folder whose manifest is of another kind than `kind`, the manifest kind this writer makes (an
    index dir given as an encode's --out would be mixed with vector shards, a model dir given as an
    index's --out replaced whole).
    """
    _check_local(out, what)
    path = Path(out).resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {out}: exists and is not a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{what} {out}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {out}: cannot write in {ancestor} (permission denied)")
    published_at = storage.lasting(path)  # the store's URI when `out` is the local mirror of one
    for location in inputs:
        storage.check_location(location, "input")
        if storage.is_uri(location) != storage.is_uri(published_at):
            continue  # an object store never overlaps a local folder
        if storage.is_uri(location):
            overlap = _uri_overlap(published_at, str(location))
        else:
            root = _input_root(str(location))
            overlap = path == root or root in path.parents or path in root.parents
        if overlap:
            raise ConfigError(
                f"{what} {out}: overlaps the input {location}; write outputs outside the inputs' folders"
            )
    held = _manifest_kind(path / MANIFEST)
    if kind and held and held != kind:
        raise ConfigError(f"{what} {out}: holds a '{held}' output, not a '{kind}' one; refusing to write into it")
    if markers and path.is_dir() and not any((path / m).exists() for m in markers):
        if any(not p.name.startswith(".") for p in path.iterdir()):
            raise ConfigError(f"{what} {out}: is a folder vecjob did not write (no {markers[0]}); "
                              "refusing to write into it")
    return path


def _manifest_kind(manifest: Path) -> str:
    """The kind a vecjob manifest declares; "" when there is none or it cannot be read."""
    try:
        kind = json.loads(manifest.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return ""
    return kind if isinstance(kind, str) else ""


def first_missing(folder: Path, names: tuple[str, ...]) -> str | None:
    """The first of the files a published output holds beside its manifest that is not there (deleted
    by hand, lost in a copy), said as a run's log line says it."""
    return next((f"{folder / name} is missing" for name in names if not (folder / name).exists()), None)


@contextlib.contextmanager
def output_lock(dest: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on an output location; a second writer refuses at once.

    flock is released by the kernel when the holder dies, so a kill -9 never leaves a stale lock.
    The lock file is removed on release; a writer that opened it just before that sees a different
    inode at the path, and tries again on the new file rather than holding a lock nobody else sees.
    """
    dest = Path(dest).resolve()
    lock = dest.parent / f".{dest.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(f"{dest}: another vecjob run is writing here (lock held)") from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)


def remove_stale_siblings(dest: str | Path) -> None:
    """Remove what a killed run left beside `dest` (hidden, so never read): staging and swapped-out dirs."""
    dest = Path(dest)
    for kind in ("tmp", "old"):
        for stale in dest.parent.glob(f".{glob.escape(dest.name)}.{kind}-*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink()


@contextlib.contextmanager
def staged_dir(dest: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder beside `dest`; if the block succeeds, it replaces `dest` whole.

    Call it under `output_lock(dest)`. The swap is one atomic exchange where the file system offers
    it (Linux renameat2), else two renames with `dest` briefly absent: never a mix of two runs.
    """
    dest = Path(dest).resolve()
    remove_stale_siblings(dest)
    staging = temp_sibling(dest)
    staging.mkdir(parents=True)
    try:
        yield staging
        faults.reached("staged_before_swap")
        swap_into_place(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def swap_into_place(new: Path, dest: Path) -> None:
    """Put the folder `new` at `dest`; an existing `dest` is removed once it is out of the way."""
    if not dest.exists():
        os.replace(new, dest)
        return
    if _exchange(new, dest):
        shutil.rmtree(new)  # now holds the previous generation
        return
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old)
