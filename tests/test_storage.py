"""vecjob.storage against a real S3 server (moto, started once per session): the publish protocol,
readers that never see a mix of generations, the lease, and bad locations. No Ray here."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import write_collection

from vecjob import storage
from vecjob.errors import ArtifactError, ConfigError, InputError, LockedError


def _folder(root, generation: int, shards: int) -> None:
    """A published folder of one generation: data files named after it, a manifest listing them."""
    (root / "index").mkdir(parents=True, exist_ok=True)
    for old in (root / "index").iterdir():
        old.unlink()
    names = [f"part-{generation}-{i}.bin" for i in range(shards)]
    for name in names:
        (root / "index" / name).write_bytes(f"gen {generation} {name}".encode() * 100)
    (root / "index" / "weights.bin").write_bytes(f"weights of generation {generation}".encode())
    (root / "index" / "manifest.json").write_text(json.dumps({"generation": generation, "files": names}))


def test_push_publishes_a_folder_and_a_rerun_replaces_it_whole(s3, tmp_path):
    local = tmp_path / "mirror"
    _folder(local, 1, shards=3)
    assert storage.push(local, s3.uri("run"))["uploaded"] == 5
    _folder(local, 2, shards=2)
    storage.push(local, s3.uri("run"))
    remote = storage.list_files(s3.uri("run"))
    assert sorted(remote) == ["index/manifest.json", "index/part-2-0.bin", "index/part-2-1.bin",
                              "index/weights.bin"]
    got = storage.snapshot(s3.uri("run", "index"), "index")
    assert json.loads((got / "manifest.json").read_text())["generation"] == 2
    assert (got / "weights.bin").read_bytes() == b"weights of generation 2"
    assert storage.push(local, s3.uri("run"))["uploaded"] == 0  # nothing changed, nothing sent

    elsewhere = tmp_path / "another-machine"
    assert storage.pull(s3.uri("run"), elsewhere) == 4
    assert (elsewhere / "index" / "weights.bin").read_bytes() == b"weights of generation 2"
    assert storage.pull(s3.uri("run"), elsewhere) == 0


def test_files_workers_wrote_to_the_store_are_taken_into_the_mirror_and_not_uploaded_again(s3, tmp_path):
    with storage.mirrored(s3.uri("run"), "--out") as local:
        (local / "vectors").mkdir()
        with storage.adopting(local / "vectors") as take:
            for i in range(3):  # as encoder actors on other nodes write them, one unit at a time
                storage.write_bytes(s3.uri("run", "vectors", f"part-{i}.parquet"), f"vectors {i}".encode())
                take([f"part-{i}.parquet"])
        assert (local / "vectors" / "part-2.parquet").read_bytes() == b"vectors 2"
        (local / "vectors" / "manifest.json").write_text("{}")
        written = {rel: info.mtime_ns for rel, info in storage.list_files(s3.uri("run", "vectors")).items()}
        time.sleep(1.1)  # an upload now would stamp a later second
    published = storage.list_files(s3.uri("run", "vectors"))
    assert sorted(published) == ["manifest.json", "part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert all(published[rel].mtime_ns == mtime for rel, mtime in written.items())
    assert storage.push(local, s3.uri("run"))["uploaded"] == 0


def test_a_publish_killed_midway_leaves_no_folder_a_reader_accepts(s3, tmp_path):
    """Killed after the next generation's data went up, before its manifest: readers refuse the
    folder (its manifest was deleted first) instead of pairing the old manifest with new files."""
    local = tmp_path / "mirror"
    _folder(local, 1, shards=2)
    storage.push(local, s3.uri("run"))
    _folder(local, 2, shards=2)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from vecjob import storage
        storage.push(Path({str(local)!r}), {s3.uri("run")!r})
    """)
    killed = subprocess.run([sys.executable, "-c", script], env={**os.environ, "VECJOB_KILL_AT": "pushed_data:1"})
    assert killed.returncode == -9
    assert "index/weights.bin" in storage.list_files(s3.uri("run"))  # the new data went up
    with pytest.raises(ArtifactError, match="no manifest.json"):
        storage.snapshot(s3.uri("run", "index"), "index")
    storage.push(local, s3.uri("run"))  # the rerun completes the publish
    got = storage.snapshot(s3.uri("run", "index"), "index")
    assert json.loads((got / "manifest.json").read_text())["generation"] == 2
    assert sorted(p.name for p in got.iterdir()) == ["manifest.json", "part-2-0.bin", "part-2-1.bin", "weights.bin"]


def test_one_writer_per_run_dir(s3):
    with storage.lease(s3.uri("run")):
        with pytest.raises(LockedError, match="another vecjob run is writing here"):
            with storage.lease(s3.uri("run")):
                pass
    assert storage.LEASE not in storage.list_files(s3.uri("run"))  # released
    # A holder that died stops renewing: once its lease expires, the next run takes over.
    storage.write_bytes(s3.uri("run", storage.LEASE), json.dumps({"token": "dead", "expires": 0}).encode())
    with storage.lease(s3.uri("run")):
        assert json.loads(storage.read_bytes(s3.uri("run", storage.LEASE)))["token"] != "dead"


@pytest.mark.parametrize("where", ["local disk", "store"])
def test_a_shards_content_hash_is_remembered_on_this_machine_while_the_shard_stays_the_same(request, tmp_path,
                                                                                          monkeypatch, where):
    """Every night fingerprints every shard of the collection; each process hashed each one again,
    which in a store is a download of the whole collection every night."""
    import hashlib

    from vecjob.parquet_io import _content_hash, file_fingerprint

    if where == "store":
        s3 = request.getfixturevalue("s3")
        path = s3.uri("docs", "part-0.parquet")
    else:
        monkeypatch.setenv("VECJOB_CACHE", str(tmp_path / "cache"))
        path = str(tmp_path / "part-0.parquet")
    storage.write_bytes(path, b"the first night")
    assert file_fingerprint(path) == hashlib.blake2b(b"the first night", digest_size=16).hexdigest()
    (entry,) = [p for p in (storage.cache_root() / "fingerprints").rglob("*") if p.is_file()]
    entry.write_text("0" * 32)  # what a later process answers must come from here, not from the file
    _content_hash.cache_clear()  # as in a later process
    assert file_fingerprint(path) == "0" * 32
    storage.write_bytes(path, b"the shard rewritten")  # another size: another file, whatever the clock
    assert file_fingerprint(path) == hashlib.blake2b(b"the shard rewritten", digest_size=16).hexdigest()
    for entry in (storage.cache_root() / "fingerprints").rglob("*"):
        if entry.is_file():
            entry.write_bytes(b"\xff damaged")
    _content_hash.cache_clear()
    assert file_fingerprint(path) == hashlib.blake2b(b"the shard rewritten", digest_size=16).hexdigest()


def test_shards_in_a_store_checked_together_keep_path_order_and_name_the_first_bad_one(s3, tmp_path):
    from vecjob.parquet_io import check_shards, discover

    paths = write_collection(tmp_path / "data", [5] * 12)
    for i, p in enumerate(paths):
        storage.write_bytes(s3.uri("data", p.name), b"not parquet" if i in (7, 3, 10) else p.read_bytes())
    with pytest.raises(InputError, match=r"part-03\.parquet: not a readable Parquet file"):
        check_shards(s3.uri("data"), "id", "text", content=False)
    storage.write_bytes(s3.uri("data", "part-03.parquet"), paths[3].read_bytes())
    with pytest.raises(InputError, match=r"part-07\.parquet: not a readable Parquet file"):
        check_shards(s3.uri("data"), "id", "text", content=False)
    for i in (7, 10):
        storage.write_bytes(s3.uri("data", paths[i].name), paths[i].read_bytes())
    shards = check_shards(s3.uri("data"), "id", "text", content=False)
    assert [s.path for s in shards] == [s3.uri("data", p.name) for p in paths]
    named = [s3.uri("data", p.name) for p in reversed(paths)]  # a data path listing files one by one
    assert discover(named) == [s.path for s in shards]
    for first, second in (("part-99", "part-98"), ("part-98", "part-99")):  # the first missing one, as given
        with pytest.raises(InputError, match=rf"{first}\.parquet: no such file or prefix"):
            discover(named[:3] + [s3.uri("data", f"{first}.parquet"), s3.uri("data", f"{second}.parquet")])


def test_shards_are_discovered_and_read_from_the_store(s3, tmp_path):
    from vecjob.parquet_io import check_shards, discover, file_fingerprint, read_row_groups

    paths = write_collection(tmp_path / "data", [30, 20])
    for p in paths:
        storage.write_bytes(s3.uri("data", "day=1", p.name), p.read_bytes())
    found = discover(s3.uri("data"))
    assert found == [s3.uri("data", "day=1", p.name) for p in paths]
    assert discover(s3.uri("data", "*", "part-01.parquet")) == [found[1]]
    storage.write_bytes(s3.uri("data", "day=1", "_SUCCESS"), b"")  # Spark's marker: skipped, as in a folder
    assert discover(s3.uri("data", "day=1", "*")) == found
    shards = check_shards(s3.uri("data"), "id", "text")
    assert [s.num_rows for s in shards] == [30, 20]
    assert file_fingerprint(found[0]) == file_fingerprint(paths[0])  # same content, same fingerprint
    assert read_row_groups(found[1], [0], ["id"]).column("id")[0].as_py() == "doc-00030"
    named = s3.uri("data", "day=2", "part[1].parquet")  # a glob's characters in an object's name
    storage.write_bytes(named, paths[0].read_bytes())
    assert discover(named) == [named]
    prefix = s3.uri("data", "day[3]")  # and in a prefix's: listed as named, as a local folder is read
    storage.write_bytes(prefix + "/part-00.parquet", paths[0].read_bytes())
    assert discover(prefix) == [prefix + "/part-00.parquet"]
    storage.write_bytes(s3.uri("hive", "000000_0"), paths[0].read_bytes())  # Hive names shards so
    with pytest.raises(InputError, match="hive: no Parquet files found .1 other file.s., such as 000000_0: "):
        discover(s3.uri("hive"))
    assert discover(s3.uri("hive", "*")) == [s3.uri("hive", "000000_0")]


@pytest.mark.parametrize("location, problem", [
    ("s3:/x", "malformed URI"),
    ("ftp://host/x", "unsupported scheme 'ftp:'"),
    ("s3://Not_A_Bucket/x", "malformed URI"),
    ("s3://no-such-bucket-vecjob/x", "the bucket does not exist"),
])
def test_a_bad_location_is_named_before_anything_is_created(s3, location, problem):
    with pytest.raises(ConfigError, match=problem):
        with storage.mirrored(location, "--out"):
            pass
    assert not storage.cache_root().exists()


def test_wrong_credentials_are_refused_without_echoing_them(s3, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(ConfigError) as refused:
        storage.check_reachable(s3.uri("run"), "--out")
    assert "credentials were rejected" in str(refused.value) or "access denied" in str(refused.value)
    assert "not-the-secret" not in str(refused.value) and s3.env["AWS_ACCESS_KEY_ID"] not in str(refused.value)


def test_a_relative_output_in_a_job_with_a_working_dir_is_refused(monkeypatch):
    storage.check_lasting("runs/x", "out")  # outside a submitted job: fine
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x"}}))
    with pytest.raises(ConfigError, match="out runs/x: a relative output path .* use an absolute path or a URI"):
        storage.check_lasting("runs/x", "out")
    storage.check_lasting("/abs/runs/x", "out")
    storage.check_lasting("s3://bucket/runs/x", "out")


def test_a_run_whose_lease_was_taken_over_publishes_nothing_more(s3, tmp_path):
    local = tmp_path / "mirror"
    _folder(local, 1, shards=1)
    with storage.lease(s3.uri("run"), ttl_s=0.6):
        storage.push(local, s3.uri("run"))
        # Another run took the lease (this one stalled past its expiry); the renewal notices.
        storage.write_bytes(s3.uri("run", storage.LEASE), json.dumps({"token": "other", "expires": 1e12}).encode())
        time.sleep(0.5)
        _folder(local, 2, shards=1)
        with pytest.raises(LockedError, match="lease was taken over"):
            storage.push(local, s3.uri("run"))
    assert json.loads(storage.read_bytes(s3.uri("run", "index", "manifest.json")))["generation"] == 1
    assert json.loads(storage.read_bytes(s3.uri("run", storage.LEASE)))["token"] == "other"  # not ours to delete


def test_the_services_snapshot_of_an_index_in_a_bucket_follows_a_newer_generation(s3, tmp_path):
    """What each search-service replica does on its poll: load an index from the bucket, notice that a
    newer one was published there, load that one (by id queries; no model needed)."""
    from conftest import blobs, make_vectors_dir
    from vecjob.config import IndexConfig
    from vecjob.index import index_collection
    from vecjob.service import Snapshot

    ids = [f"d{i}" for i in range(60)]
    for generation, seed in ((1, 0), (2, 1)):
        vectors = make_vectors_dir(tmp_path / f"vectors-{generation}", blobs(60, 8, 3, seed=seed)[0], ids)
        index_collection(vectors, tmp_path / f"index-{generation}", IndexConfig(factory="Flat"))
    storage.push(tmp_path / "index-1", s3.uri("collection", "index"))

    first = Snapshot.load(s3.uri("collection", "index"), None)
    assert first.is_current() and first.index.manifest["ntotal"] == 60
    storage.push(tmp_path / "index-2", s3.uri("collection", "index"))
    assert not first.is_current()
    second = Snapshot.load(s3.uri("collection", "index"), None)
    assert second.generation != first.generation and second.is_current()
    expected = json.loads((tmp_path / "index-2" / "manifest.json").read_text())
    assert second.index.manifest["created"] == expected["created"]


def test_a_folder_with_a_file_newer_than_its_manifest_is_refused(s3):
    """Copied file by file with the manifest first (or caught mid-publish): readers do not take it."""
    storage.write_bytes(s3.uri("copied", "manifest.json"), json.dumps({"generation": 1}).encode())
    time.sleep(1.1)  # the store stamps uploads to the second
    storage.write_bytes(s3.uri("copied", "weights.bin"), b"weights of another generation")
    with pytest.raises(ArtifactError, match="a file is newer than its manifest.json"):
        storage.snapshot(s3.uri("copied"), "model", tries=2)
    assert not list((storage.cache_root() / "published").glob("[!.]*"))


def test_a_readers_cache_keeps_the_last_two_generations_of_a_location(s3, tmp_path):
    """A service that follows nightly publishes downloads one generation a night: older ones go."""
    local = tmp_path / "mirror"
    seen = []
    for generation in (1, 2, 3, 4):
        _folder(local, generation, shards=1)
        storage.push(local, s3.uri("nightly"))
        seen.append(storage.snapshot(s3.uri("nightly", "index"), "index"))
        time.sleep(0.01)  # distinct modification times
    storage.push(local, s3.uri("elsewhere"))
    other = storage.snapshot(s3.uri("elsewhere", "index"), "index")  # another location: pruned apart
    cached = sorted(p for p in (storage.cache_root() / "published").iterdir() if not p.name.startswith("."))
    assert seen[2] in cached and seen[3] in cached and other in cached
    assert seen[0] not in cached and seen[1] not in cached
    assert json.loads((seen[3] / "manifest.json").read_text())["generation"] == 4
