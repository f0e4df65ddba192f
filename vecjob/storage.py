"""Where vecjob reads and writes: a local path, or an object-store URI (s3://, gs://) through pyarrow.fs.

Object stores have no rename and no flock, so a run dir on one is worked on in a local mirror
(`workspace`) and published to the store with one protocol (`push`), the same for every folder:

1. in each folder whose files changed, the manifest is deleted first (the folder is then visibly
   incomplete: readers refuse a folder without its manifest);
2. the changed data objects are uploaded;
3. the manifests are uploaded, the run dir's own state files last;
4. objects the local generation no longer has (an earlier generation's shards) are deleted.

A reader (`snapshot`) downloads a folder, then checks that its manifest did not change meanwhile
and that no file is newer than the manifest (the store stamps every upload, so a file of the next
generation always is): a reader never pairs one generation's manifest with another's files.

One writer per run dir: a lease object beside it, created with a conditional put (S3's
If-None-Match), renewed while the run lives and deleted when it ends; a lease whose holder stopped
renewing it expires. gs:// has no conditional put through pyarrow: its lease is checked, then written.

Credentials come only from the standard environment (AWS_*, with AWS_ENDPOINT_URL for an
S3-compatible store; GOOGLE_APPLICATION_CREDENTIALS); they never enter a message or a manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import posixpath
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pyarrow.fs as pafs

from vecjob import faults
from vecjob.errors import ArtifactError, ConfigError, LockedError, VecjobError

SCHEMES = ("s3", "gs")
MANIFESTS = ("manifest.json",)
RUN_STATE_FILES = ("run_state.json", "run_manifest.json")  # the run dir's own, published last
LEASE = ".vecjob-lease.json"
TRAIN_STORAGE = ".ray-train"  # Ray Train's checkpoints while a model trains; never mirrored
SYNC_RECORD = ".vecjob-sync.json"  # in a workspace: what it holds of the store, file by file
LEASE_TTL_S = 600.0
DOWNLOADS = 8  # files fetched at once when the driver takes in what encoder actors wrote
# Requests in flight at once for a file each (a footer, a size, a file's ids or a hit's row groups, the
# first hash of a new shard): most wait on a round trip to the store, not on bandwidth, so more at once
# is shorter where the store is far (bench/README.md, "A night over shards in a store").
REQUESTS_AT_ONCE = 32
_MIRRORS: dict[Path, str] = {}  # local mirror → its store URI, while a `mirrored` block runs
_LOST: set[str] = set()  # run dirs whose lease this process held and another run took over
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(.*)$")


def is_uri(location: str | Path) -> bool:
    return bool(_SCHEME.match(str(location)))


def is_glob(location: str) -> bool:
    """Whether a location names files by wildcards ("*", "?", "[…]") rather than by name."""
    return any(ch in location for ch in "*?[")


def glob_root(location: str) -> str:
    """The folder a glob reads below: its path up to the last "/" before the first wildcard ("" when
    the wildcard is in the first part)."""
    return posixpath.dirname(re.split(r"[*?\[]", location, maxsplit=1)[0])


def check_location(location: str | Path, what: str) -> None:
    """Refuse a URI vecjob cannot use, naming `what` (the flag or key): an unknown scheme or a
    malformed URI (s3:/x, s3://, a bucket with characters no store allows)."""
    match = _SCHEME.match(str(location))
    if not match:
        return
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme not in SCHEMES:
        raise ConfigError(f"{what} {location}: unsupported scheme '{scheme}:' (use a local path, s3:// or gs://)")
    bucket, _, key = rest[2:].partition("/") if rest.startswith("//") else ("", "", "")
    if not bucket:
        raise ConfigError(f"{what} {location}: malformed URI (expected {scheme}://BUCKET/PATH)")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]", bucket):
        raise ConfigError(f"{what} {location}: malformed URI (bucket {bucket!r}: a bucket's name is 3 to 63 "
                          "lowercase letters, digits, '.', '-' or '_', beginning and ending with a letter or digit)")
    if key.rstrip("/") and {"", ".", ".."} & set(key.rstrip("/").split("/")):
        # An object key is a name, not a path: pyarrow refuses an empty part only when it first lists or
        # writes, and keeps '..' as a name, which Ray Train's checkpointing then fails to find.
        raise ConfigError(f"{what} {location}: malformed URI (an empty, '.' or '..' part in its path)")


def join(location: str, *parts: str) -> str:
    """A location below `location`: posix joins for a URI, the OS's for a local path."""
    return posixpath.join(location, *parts) if is_uri(location) else os.path.join(location, *parts)


def parent(location: str) -> str:
    return posixpath.dirname(location.rstrip("/")) if is_uri(location) else os.path.dirname(location)


def basename(location: str) -> str:
    return posixpath.basename(location.rstrip("/"))


_FILESYSTEMS: dict[tuple, pafs.FileSystem] = {}
_FS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
           "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")


def filesystem(location: str | Path) -> tuple[pafs.FileSystem, str]:
    """The pyarrow file system holding `location`, and the path within it."""
    location = str(location)
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    check_location(location, "location")
    scheme, rest = location.split("://", 1)
    scheme = scheme.lower()
    key = (scheme, *(os.environ.get(k) for k in _FS_ENV))  # one per store and identity, not per call
    if key not in _FILESYSTEMS:
        if scheme == "s3":
            # Credentials come from the environment (the AWS SDK's own chain); an S3-compatible store's
            # endpoint from AWS_ENDPOINT_URL(_S3), as the AWS CLI and boto3 read it.
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
            url_scheme, _, host = endpoint.rpartition("://")
            _FILESYSTEMS[key] = pafs.S3FileSystem(
                region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                endpoint_override=host or None, scheme=url_scheme or "https",
                connect_timeout=10, request_timeout=60,
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3),
            )
        else:
            _FILESYSTEMS[key] = pafs.GcsFileSystem(retry_time_limit=60)
    return _FILESYSTEMS[key], rest.rstrip("/")


def check_lasting(location: str | Path, what: str) -> None:
    """Refuse a relative output location in a job submitted with a working dir (`ray job submit
    --working-dir`): it would resolve inside Ray's temporary copy of that dir, deleted with the job."""
    location = str(location)
    if is_uri(location) or os.path.isabs(location):
        return
    try:
        runtime_env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    except json.JSONDecodeError:
        return
    if runtime_env.get("working_dir"):
        raise ConfigError(f"{what} {location}: a relative output path in a job submitted with a working dir would "
                          f"be written into Ray's temporary copy of it and lost; use an absolute path or a URI")


def _problem(exc: OSError) -> str:
    """A store's error in a few words, never with credentials (pyarrow's messages carry none)."""
    text = str(exc)
    for marker, words in (
        ("NO_SUCH_BUCKET", "the bucket does not exist"),
        ("INVALID_ACCESS_KEY_ID", "the credentials were rejected (unknown access key)"),
        ("SIGNATURE_DOES_NOT_MATCH", "the credentials were rejected (wrong secret key)"),
        ("ACCESS_DENIED", "access denied (check the AWS_* credentials and the bucket's policy)"),
        ("credentials", "no usable credentials in the environment"),
        ("Couldn't connect", "cannot reach the store's endpoint"),
        ("Connection refused", "cannot reach the store's endpoint"),
    ):
        if marker in text:
            return words
    return text.split(" (Request ID")[0].splitlines()[0]


def check_reachable(location: str, what: str) -> None:
    """Before any work: the bucket exists and the credentials may list it; else one line, nothing written."""
    if not is_uri(location):
        return
    fs, path = filesystem(location)
    try:  # a listing names the problem (a HEAD request's error has no body to say which)
        fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
        bucket = fs.get_file_info(path.split("/", 1)[0])
    except OSError as exc:
        raise ConfigError(f"{what} {location}: {_problem(exc)}") from None
    if bucket.type == pafs.FileType.NotFound:
        raise ConfigError(f"{what} {location}: the bucket does not exist")


# ---- objects -------------------------------------------------------------------------------------


def each_file(fn: Callable[[str], object], paths: list[str]) -> list:
    """fn(path) for every path, in order. Paths in a store are taken many at once: there each is a
    request or two (a footer, a file's size) whose wait, not its bytes, is the cost, and every night
    asks it of every shard of the collection."""
    if not any(is_uri(p) for p in paths):
        return [fn(p) for p in paths]
    with ThreadPoolExecutor(REQUESTS_AT_ONCE) as pool:
        return list(pool.map(fn, paths))


def read_bytes(location: str) -> bytes:
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise ArtifactError(f"{location}: missing") from None


def write_bytes(location: str, data: bytes) -> None:
    """Write a whole object (on local disk: a temporary name, then a rename)."""
    if not is_uri(location):
        from vecjob.parquet_io import atomic_path

        with atomic_path(location) as tmp:
            tmp.write_bytes(data)
        return
    fs, path = filesystem(location)
    with fs.open_output_stream(path) as f:
        f.write(data)


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete(location: str) -> None:
    fs, path = filesystem(location)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def remove(location: str) -> None:
    """Delete a file or a whole folder (prefix), if there."""
    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def list_files(location: str) -> dict[str, pafs.FileInfo]:
    """Every file below `location`, by its path relative to it (empty when there is none)."""
    fs, root = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {posixpath.relpath(i.path, root): i for i in infos if i.type == pafs.FileType.File}


def _published(uri: str) -> dict[str, pafs.FileInfo]:
    return {rel: info for rel, info in list_files(uri).items()
            if rel != LEASE and not _training_scratch(rel)}


def _training_scratch(rel: str) -> bool:
    return rel.split("/", 1)[0].endswith(TRAIN_STORAGE)


def _stamp(info: pafs.FileInfo) -> list:
    return [info.size, info.mtime_ns]


# ---- a run dir in the store, worked on in a local mirror -------------------------------------------


def cache_root() -> Path:
    return Path(os.environ.get("VECJOB_CACHE") or Path.home() / ".cache" / "vecjob")


def workspace(uri: str) -> Path:
    """The local mirror of a run dir in the store: one per URI, reused by later runs on this machine."""
    return cache_root() / "runs" / hashlib.blake2b(uri.encode(), digest_size=8).hexdigest()


def _load_record(local: Path) -> dict:
    try:
        return json.loads((local / SYNC_RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_record(local: Path, record: dict) -> None:
    write_bytes(str(local / SYNC_RECORD), json.dumps(record).encode())


def _local_files(local: Path) -> dict[str, os.stat_result]:
    found = {}
    for path in local.rglob("*"):
        rel = path.relative_to(local).as_posix()
        if path.is_file() and rel != SYNC_RECORD and ".tmp-" not in rel and not path.name.endswith(".lock") \
                and not _training_scratch(rel):
            found[rel] = path.stat()
    return found


def pull(uri: str, local: Path) -> int:
    """Bring the local mirror up to the store's published state; returns the files downloaded.
    A file is downloaded when the store's copy differs from what the mirror last saw of it: what the
    store publishes wins over the mirror's copy."""
    local.mkdir(parents=True, exist_ok=True)
    record, fs = _load_record(local), filesystem(uri)[0]
    remote = _published(uri)
    here = _local_files(local)
    downloaded = 0
    for rel, info in remote.items():
        seen = record.get(rel)
        if seen and seen["remote"] == _stamp(info) and rel in here and seen["local"] == _local_stamp(here[rel]):
            continue
        dest = local / rel
        _download(fs, info.path, dest)
        record[rel] = {"remote": _stamp(info), "local": _local_stamp(dest.stat())}
        downloaded += 1
    for rel in set(here) - set(remote):
        if rel in record:  # published once and removed from the store since: an earlier generation
            (local / rel).unlink()
        # else: made here by a run that stopped before publishing it (an encoded shard): the rerun
        # resumes from it; the stage that made it publishes or removes it
    for rel in set(record) - set(remote):
        del record[rel]
    _save_record(local, record)
    return downloaded


def _is_manifest(rel: str) -> bool:
    return posixpath.basename(rel) in MANIFESTS or rel in RUN_STATE_FILES


def _download(fs: pafs.FileSystem, path: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())


def _upload(source: Path, dest: str, fs: pafs.FileSystem) -> None:
    pafs.copy_files(str(source), dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def _local_stamp(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns]


def push(local: Path, uri: str) -> dict:
    """Publish the local mirror's state to the store by the protocol in this module's docstring."""
    record, (fs, root) = _load_record(local), filesystem(uri)
    here = _local_files(local)
    remote = _published(uri)
    changed = [rel for rel, st in here.items()
               if rel not in remote or record.get(rel, {}).get("local") != _local_stamp(st)
               or record[rel]["remote"] != _stamp(remote[rel])]
    if uri in _LOST:
        raise LockedError(f"{uri}: this run's lease was taken over by another run; nothing more is published")
    touched = {posixpath.dirname(rel) for rel in changed if not _is_manifest(rel)}
    for rel in remote:
        if _is_manifest(rel) and posixpath.dirname(rel) in touched and rel not in RUN_STATE_FILES:
            fs.delete_file(remote[rel].path)
    data = [rel for rel in changed if not _is_manifest(rel)]
    for rel in data:
        _upload(local / rel, f"{root}/{rel}", fs)
    faults.reached("pushed_data")
    manifests = sorted((rel for rel in here if _is_manifest(rel) and (rel in changed or posixpath.dirname(rel) in touched)),
                       key=lambda rel: (rel in RUN_STATE_FILES, -rel.count("/"), rel))
    for rel in manifests:
        _upload(local / rel, f"{root}/{rel}", fs)
    after = list_files(uri)
    for rel in set(remote) - set(here):
        fs.delete_file(remote[rel].path)
    for rel in data + manifests:
        record[rel] = {"remote": _stamp(after[rel]), "local": _local_stamp(here[rel])}
    for rel in set(record) - set(here):
        del record[rel]
    _save_record(local, record)
    return {"uploaded": len(data) + len(manifests), "deleted": len(set(remote) - set(here))}


@contextlib.contextmanager
def mirrored(uri: str, what: str) -> Iterator[Path]:
    """Work on a folder in the store through its local mirror, under its lease: checked before
    anything is created, pulled, handed to the block, pushed when the block succeeds."""
    check_location(uri, what)
    check_reachable(uri, what)
    with lease(uri):
        local = workspace(uri)
        pull(uri, local)
        _MIRRORS[local.resolve()] = uri
        _show_as(local, uri)
        try:
            yield local
        except VecjobError as exc:  # a refusal names the location the user gave, not this cache folder
            raise type(exc)(as_given(str(exc))) from None
        finally:
            _MIRRORS.pop(local.resolve(), None)
        push(local, uri)


def _mirror_of(local: Path) -> tuple[Path, str] | None:
    local = Path(local).resolve()
    return next(((root, uri) for root, uri in _MIRRORS.items() if local == root or root in local.parents), None)


def lasting(location: str | Path) -> str:
    """Where any process, on any node and whatever its working dir, finds a file or folder again: a
    URI as it is; a path inside a local mirror of a store, its URI there (workers on other nodes
    cannot reach this machine's disk); any other path, made absolute."""
    if is_uri(location):
        return str(location)
    found = _mirror_of(Path(location))
    if not found:
        return os.path.abspath(location)
    root, uri = found
    rel = Path(location).resolve().relative_to(root).as_posix()
    return uri if rel == "." else join(uri, rel)


@contextlib.contextmanager
def adopting(local: str | Path) -> Iterator[Callable[[list[str]], None]]:
    """Yields `take(rels)`: download files that workers wrote straight to the store (below the
    mirror's folder `local`) into the mirror, in the background as they are named, so the downloads
    overlap the work still running. When the block ends, the files are recorded as published there,
    so `push` does not upload them again. Outside a mirror, `take` does nothing."""
    found = _mirror_of(Path(local))
    if not found:
        yield lambda rels: None
        return
    root, uri = found
    prefix = Path(local).resolve().relative_to(root).as_posix()
    where = join(uri, prefix) if prefix != "." else uri
    taken: list[str] = []

    def download(rel: str) -> None:
        _download(*filesystem(join(where, rel)), Path(local) / rel)

    with ThreadPoolExecutor(DOWNLOADS) as pool:  # a store answers one request slowly, many at once well
        pending = []

        def take(rels: list[str]) -> None:
            taken.extend(rels)
            pending.extend(pool.submit(download, rel) for rel in rels)

        yield take
        for future in pending:
            future.result()
    if taken:
        record, remote = _load_record(root), list_files(where)
        for rel in taken:
            key = rel if prefix == "." else f"{prefix}/{rel}"
            record[key] = {"remote": _stamp(remote[rel]), "local": _local_stamp((Path(local) / rel).stat())}
        _save_record(root, record)


# ---- reading a published folder ---------------------------------------------------------------------


KEPT_GENERATIONS = 2  # per location in a reader's cache: the one in use and the one before it


def snapshot(location: str, what: str, tries: int = 3) -> Path:
    """A local copy of a published folder of kind `vecjob.<what>` (model, index, vectors, classifier):
    the folder itself when local, else a download into the cache keyed by its location and its
    manifest's content, checked to be one generation. Downloading a generation removes the
    location's older ones beyond KEPT_GENERATIONS, so a service that follows nightly publishes keeps
    a bounded cache."""
    if not is_uri(location):
        return Path(location)
    check_reachable(location, what)
    manifest_uri = join(location, MANIFESTS[0])
    place = hashlib.blake2b(location.rstrip("/").encode(), digest_size=6).hexdigest()
    for _ in range(tries):
        try:
            before = read_bytes(manifest_uri)
        except ArtifactError:
            raise ArtifactError(f"{location}: no {MANIFESTS[0]} (not a complete vecjob folder)") from None
        _check_kind(location, before, what)
        key = hashlib.blake2b(before, digest_size=12).hexdigest()
        dest = cache_root() / "published" / f"{place}-{key}"
        _show_as(dest, location)
        if (dest / MANIFESTS[0]).exists():
            return dest
        files = list_files(location)
        staging = dest.parent / f".{key}.tmp-{uuid.uuid4().hex[:8]}"
        fs = filesystem(location)[0]
        for rel, info in files.items():
            _download(fs, info.path, staging / rel)
        manifest_time = files.get(MANIFESTS[0])
        newer = manifest_time is None or any(i.mtime_ns > manifest_time.mtime_ns for i in files.values())
        if not newer and read_bytes(manifest_uri) == before:
            with contextlib.suppress(OSError):
                os.replace(staging, dest)
            shutil.rmtree(staging, ignore_errors=True)
            _prune(dest, place)
            return dest
        shutil.rmtree(staging, ignore_errors=True)
        time.sleep(1.0)
    raise ArtifactError(f"{location}: a file is newer than its {MANIFESTS[0]} in every one of {tries} reads: a run "
                        f"is publishing it, or it was copied there file by file (publish the manifest last)")


def _check_kind(location: str, manifest: bytes, what: str) -> None:
    """Another kind's folder (a vectors dir given as an index) is refused from its manifest, before
    the whole folder is downloaded to be refused."""
    from vecjob.parquet_io import check_kind  # parquet_io imports this module

    with contextlib.suppress(ValueError):  # damaged: its reader names it, once downloaded
        if isinstance(found := json.loads(manifest), dict):
            check_kind(location, found, f"vecjob.{what}")


_SHOWN_AS: dict[str, str] = {}  # a local copy of a store's folder (a mirror, a downloaded generation) → its URI


def _show_as(local: Path, uri: str) -> None:
    for name in (str(local.resolve()), str(local)):
        _SHOWN_AS[name] = uri.rstrip("/")


def as_given(message: str) -> str:
    """`message` naming the locations the user gave where it names their local copies: a refusal of
    a folder in a store names the store's URI, not a cache folder the user never wrote."""
    for local in sorted(_SHOWN_AS, key=len, reverse=True):  # a resolved path holds its relative form
        message = message.replace(local, _SHOWN_AS[local])
    return message


def _prune(kept: Path, place: str) -> None:
    """Remove a location's cached generations beyond the KEPT_GENERATIONS newest (`kept` included)."""

    def age(p: Path) -> int:
        try:
            return p.stat().st_mtime_ns
        except FileNotFoundError:  # another reader on this machine pruned it first
            return 0
    older = sorted((p for p in kept.parent.glob(f"{place}-*") if p != kept), key=age, reverse=True)
    for stale in older[KEPT_GENERATIONS - 1:]:
        shutil.rmtree(stale, ignore_errors=True)


# ---- one writer per run dir ----------------------------------------------------------------------------


@contextlib.contextmanager
def lease(uri: str, ttl_s: float = LEASE_TTL_S) -> Iterator[None]:
    """Hold the run dir's lease object while the block runs; a second writer refuses at once."""
    location = join(uri, LEASE)
    token = uuid.uuid4().hex
    body = lambda: json.dumps({"token": token, "host": platform.node(), "pid": os.getpid(),  # noqa: E731
                               "expires": time.time() + ttl_s}).encode()
    if not _create(location, body()):
        held = _lease_holder(location)
        if held and held.get("expires", 0) > time.time():
            raise LockedError(f"{uri}: another vecjob run is writing here (lease held by {held.get('host')} "
                              f"pid {held.get('pid')}, expires in {held['expires'] - time.time():.0f}s)")
        delete(location)  # expired: its holder stopped renewing it
        if not _create(location, body()):
            raise LockedError(f"{uri}: another vecjob run took the lease just now")

    def renew() -> bool:
        try:
            held = _lease_holder(location)
            if held is None or held.get("token") != token:
                _LOST.add(uri)  # taken over (this run stalled past the expiry): its pushes are refused
                return False
            write_bytes(location, body())
        except OSError:
            pass  # the store did not answer this time; the lease lasts three renewals
        return True

    try:
        with every(ttl_s / 3, renew):
            yield
    finally:
        _LOST.discard(uri)
        held = _lease_holder(location)
        if held and held.get("token") == token:
            delete(location)
            # A refused run's folder: pyarrow leaves an empty folder marker where the lease was (never a bucket)
            if "/" in filesystem(uri)[1].strip("/") and not list_files(uri):
                with contextlib.suppress(OSError):
                    remove(uri)


@contextlib.contextmanager
def every(seconds: float, fn: Callable[[], object]) -> Iterator[None]:
    """Call `fn` every `seconds` in a background thread while the block runs, until it returns False."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(seconds) and fn() is not False:
            pass

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _lease_holder(location: str) -> dict | None:
    try:
        return json.loads(read_bytes(location))
    except (ArtifactError, json.JSONDecodeError):
        return None


def _create(location: str, data: bytes) -> bool:
    """Write an object only if none exists; False if one does."""
    if location.startswith("s3://"):
        import boto3
        from botocore.exceptions import ClientError

        bucket, key = location[5:].split("/", 1)
        try:
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise ConfigError(f"{location}: {exc.response.get('Error', {}).get('Code', 'refused')}") from None
        return True
    if exists(location):
        return False
    write_bytes(location, data)
    return True
