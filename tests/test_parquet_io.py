import datetime
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_collection

from vecjob.errors import InputError, LockedError
from vecjob.outputs import output_lock
from vecjob.parquet_io import (atomic_path, check_shard, check_shards, discover, fingerprint, kept_column_types,
                               write_json_atomic)


def test_discover_files_dirs_and_globs(tmp_path):
    for name in ("a.parquet", "b.parquet", "_hidden/c.parquet", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [os.path.basename(p) for p in discover(str(tmp_path))] == ["a.parquet", "b.parquet"]
    assert [os.path.basename(p) for p in discover(str(tmp_path / "*.parquet"))] == ["a.parquet", "b.parquet"]
    with pytest.raises(InputError, match="no such file"):
        discover(str(tmp_path / "missing"))


def test_a_glob_skips_what_spark_writes_beside_the_shards_unless_it_names_them(tmp_path):
    for name in ("out/part-0.parquet", "out/part-1.parquet", "out/_SUCCESS", "out/.part-0.parquet.crc",
                 "out/_temporary/0/part-2.parquet", "out/_staged.parquet"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [os.path.basename(p) for p in discover(str(tmp_path / "out" / "*"))] == ["part-0.parquet", "part-1.parquet"]
    assert [os.path.basename(p) for p in discover(str(tmp_path / "out" / "**" / "*.parquet"))] == [
        "part-0.parquet", "part-1.parquet"]
    assert [os.path.basename(p) for p in discover(str(tmp_path / "out" / "_*.parquet"))] == ["_staged.parquet"]


def test_a_file_or_folder_named_with_a_glob_s_characters_is_read_as_named(tmp_path):
    # "part[1].parquet" (a browser's second download, a Spark-like name) was taken for a glob that
    # matched nothing: "no Parquet files found", and polars' readers globbed it again.
    import polars as pl

    from vecjob.outputs import check_output
    from vecjob.parquet_io import scan_by_id

    (tmp_path / "day[1]").mkdir()
    for name in ("day[1]/part[1].parquet", "part1.parquet"):
        pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", "y"], "label": [name, name]}), tmp_path / name)
    literal = str(tmp_path / "day[1]" / "part[1].parquet")
    assert discover(literal) == [literal] and discover(str(tmp_path / "day[1]")) == [literal]
    assert discover(str(tmp_path / "part[1].parquet")) == [str(tmp_path / "part1.parquet")]  # no such name: a glob
    labels = scan_by_id(literal, "id", {"label": "label"}, pl.String).collect()
    assert labels["label"].to_list() == ["day[1]/part[1].parquet"] * 2
    assert check_output(tmp_path / "day[1]" / "out", "--out", [literal]) == tmp_path / "day[1]" / "out"


def test_a_column_name_two_columns_share_is_named_as_such_not_as_missing(tmp_path):
    # Parquet allows two columns of one name; the line said "missing column 'text'" beside a list holding it.
    texts = pa.array(["a", "b"])
    pq.write_table(pa.Table.from_arrays([pa.array([1, 2]), texts, texts], names=["id", "text", "text"]),
                   tmp_path / "twice.parquet")
    with pytest.raises(InputError, match=r"twice.parquet: 2 columns are named 'text' \(columns: id, text, text\)"):
        check_shard(str(tmp_path / "twice.parquet"), "id", "text")


def test_an_unsigned_id_above_the_int64_range_is_named(tmp_path):
    # Vector shards hold integer ids as int64: such an id encoded, then failed every reader with a traceback.
    pq.write_table(pa.table({"id": pa.array([1, 2**64 - 1], pa.uint64()), "text": ["a", "b"]}), tmp_path / "u.parquet")
    with pytest.raises(InputError, match=r"u.parquet: id 18446744073709551615 in column 'id' is above 2\^63 - 1"):
        check_shards(str(tmp_path), "id", "text")
    pq.write_table(pa.table({"id": pa.array([1, 2**63 - 1], pa.uint64()), "text": ["a", "b"]}), tmp_path / "u.parquet")
    assert len(check_shards(str(tmp_path), "id", "text")) == 1


def test_a_kept_column_whose_type_differs_across_shards_is_named(tmp_path):
    # Copied as they are, the vector shards would not read as one table (polars, pyarrow datasets).
    pq.write_table(pa.table({"id": [1], "text": ["a"], "label": ["pos"], "stars": pa.array([4], pa.int32())}),
                   tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": [2], "text": ["b"], "label": [1], "stars": pa.array([5], pa.int64())}),
                   tmp_path / "b.parquet")
    assert len(check_shards(str(tmp_path), "id", "text", keep_columns=("stars",))) == 2  # widths promote
    pq.write_table(pa.table({"id": [3], "text": ["c"], "label": [2], "stars": [4.5]}), tmp_path / "c.parquet")
    shards = check_shards(str(tmp_path), "id", "text", keep_columns=("stars",))  # integers and floats: floats
    assert kept_column_types(shards) == [pa.float64()]
    with pytest.raises(InputError, match=r"--keep column 'label' mixes types across shards: .*a.parquet.*b.parquet"):
        check_shards(str(tmp_path), "id", "text", keep_columns=("stars", "label"))


def test_not_parquet_is_named(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"this is not parquet at all")
    with pytest.raises(InputError, match="bad.parquet: not a readable Parquet file"):
        check_shard(str(bad), "id", "text")


def test_truncated_shard_among_good_ones_is_named(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "trunc.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.parquet"):
        check_shards(str(tmp_path), "id", "text")


def test_missing_and_mistyped_columns(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"id": [1, 2], "body": ["a", "b"], "num": [1.0, 2.0]}), path)
    with pytest.raises(InputError, match="missing column 'text'"):
        check_shard(str(path), "id", "text")
    with pytest.raises(InputError, match="text column 'num' has type double"):
        check_shard(str(path), "id", "num")
    shard = check_shard(str(path), "id", "body")
    assert shard.id_type == "int" and shard.num_rows == 2
    # Strings written as bytes without the UTF-8 annotation (older Hive and Impala) say so.
    pq.write_table(pa.table({"id": pa.array([b"a"]), "text": pa.array([b"x"], pa.large_binary())}), path)
    with pytest.raises(InputError, match="id column 'id' has type binary; expected string or integer \\(bytes without"):
        check_shard(str(path), "id", "text")
    pq.write_table(pa.table({"id": ["a"], "text": pa.array([b"x"], pa.large_binary())}), path)
    with pytest.raises(InputError, match="text column 'text' has type large_binary; expected string \\(bytes without "
                                         "Parquet's UTF-8 annotation"):
        check_shard(str(path), "id", "text")
    import polars as pl

    from vecjob.parquet_io import scan_by_id, texts_as_text

    with pytest.raises(InputError, match="text column 'text' holds Binary; expected strings \\(bytes without"):
        texts_as_text(scan_by_id(str(path), "id", {"text": "text"}, pl.String), str(path), "text")  # search --data


def test_mixed_id_types_across_shards(tmp_path):
    pq.write_table(pa.table({"id": [1], "text": ["a"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": ["x"], "text": ["b"]}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match="mixes types"):
        check_shards(str(tmp_path), "id", "text")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    write_json_atomic({"a": 1}, dest)
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_second_writer_is_refused(tmp_path):
    with output_lock(tmp_path):
        with pytest.raises(LockedError, match="another vecjob run"):
            with output_lock(tmp_path):
                pass
    with output_lock(tmp_path):  # released after the first holder exits
        pass


def test_fingerprint_is_order_sensitive_and_stable():
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint([1, 2]) != fingerprint([2, 1])


def test_null_ids_are_found_after_a_nested_column(tmp_path):
    # Parquet numbers leaf columns: a list column before the id shifts them against the Arrow fields.
    pq.write_table(pa.table({"tags": [[1, 2], [3]], "id": ["a", None], "text": ["x", "y"]}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match="a.parquet: 1 row.s. with a null id"):
        check_shards(str(tmp_path), "id", "text")


def test_a_remembered_file_hash_follows_the_file_not_its_name(tmp_path):
    from vecjob.parquet_io import file_fingerprint

    shard = tmp_path / "a.bin"
    shard.write_bytes(b"aaaa")
    first = file_fingerprint(shard)
    assert file_fingerprint(shard) == first
    (tmp_path / "b.bin").write_bytes(b"bbbb")  # same size, swapped in at once: only the inode tells
    os.replace(tmp_path / "b.bin", shard)
    assert file_fingerprint(shard) != first
    with open(shard, "r+b") as f:  # rewritten in place
        f.write(b"a")
    (tmp_path / "c.bin").write_bytes(b"abbb")
    assert file_fingerprint(shard) == file_fingerprint(tmp_path / "c.bin")


def test_shards_are_ordered_by_name_with_numbers_compared_as_numbers(tmp_path):
    names = ["month=9/day=30", "month=10/day=2", "month=9/day=4", "2026-12-02", "2026-11-30"]
    for name in names:
        (tmp_path / name).mkdir(parents=True)
        pq.write_table(pa.table({"id": [1], "text": ["x"]}), tmp_path / name / "p.parquet")
    found = [os.path.relpath(os.path.dirname(p), tmp_path) for p in discover(str(tmp_path))]
    assert found == ["2026-11-30", "2026-12-02", "month=9/day=4", "month=9/day=30", "month=10/day=2"]


def test_links_to_folders_are_followed_each_folder_once_and_a_link_to_nothing_is_refused(tmp_path):
    # Links to folders were not followed: a night's shards kept on another disk and linked into the
    # collection were skipped without a word, as if deleted (pyarrow's and polars' readers follow
    # them). The glob module followed a link back up the tree ~40 times over, each copy a shard.
    (tmp_path / "data" / "day=1").mkdir(parents=True)
    pq.write_table(pa.table({"id": [1], "text": ["x"]}), tmp_path / "data" / "day=1" / "p.parquet")
    (tmp_path / "data" / "day=1" / "back").symlink_to("..")
    (tmp_path / "other-disk").mkdir()
    pq.write_table(pa.table({"id": [2], "text": ["y"]}), tmp_path / "other-disk" / "p.parquet")
    (tmp_path / "data" / "day=2").symlink_to(tmp_path / "other-disk")
    os.mkfifo(tmp_path / "data" / "day=1" / "pipe.parquet")  # not a file: reading it would wait for a writer
    with pytest.raises(InputError, match=r"pipe.parquet: not a regular file$"):  # named, it is refused
        discover(str(tmp_path / "data" / "day=1" / "pipe.parquet"))
    expected = [str(tmp_path / "data" / "day=1" / "p.parquet"), str(tmp_path / "data" / "day=2" / "p.parquet")]
    assert discover(str(tmp_path / "data")) == expected
    assert discover(str(tmp_path / "data" / "**" / "*.parquet")) == expected
    assert discover(str(tmp_path / "data" / "*" / "*.parquet")) == expected
    # A link to nothing reads as a shard gone missing (a disk not mounted): refused, naming it.
    (tmp_path / "data" / "day=3.parquet").symlink_to(tmp_path / "unmounted" / "p.parquet")
    for named in ("data", "data/**/*.parquet", "data/*.parquet"):
        with pytest.raises(InputError, match=r"day=3.parquet: a link to .*unmounted/p.parquet, which does not exist"):
            discover(str(tmp_path / named))
    (tmp_path / "data" / "_day=4.parquet").symlink_to(tmp_path / "unmounted" / "p.parquet")  # hidden: skipped
    (tmp_path / "data" / "day=3.parquet").unlink()
    assert discover(str(tmp_path / "data")) == expected
    # A folder that cannot be listed is refused, not skipped (os.walk and pathlib skip it); a hidden one
    # (Spark's _temporary, a filer's .snapshot) is not walked at all. Tests run as root, who lists any
    # folder: these folders' paths are longer than the system takes.
    for parent in ("_temporary", "day=5"):
        (tmp_path / "data" / parent).mkdir()
        folder = os.open(tmp_path / "data" / parent, os.O_RDONLY)
        for level in range(17):
            os.mkdir(f"{level:02d}{'d' * 250}", dir_fd=folder)
            folder, above = os.open(f"{level:02d}{'d' * 250}", os.O_RDONLY, dir_fd=folder), folder
            os.close(above)
        os.close(folder)
        if parent.startswith("_"):
            assert discover(str(tmp_path / "data")) == expected
            assert discover(str(tmp_path / "data" / "**" / "*.parquet")) == expected
    with pytest.raises(InputError, match=r"day=5/00d+/.*d: cannot list the folder \(File name too long\); name the"):
        discover(str(tmp_path / "data"))


def test_a_folder_of_shards_not_named_parquet_is_named_with_how_to_read_them(tmp_path):
    # Hive and Impala write their shards as 000000_0; "no Parquet files found" alone read as an empty folder.
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "000000_0").write_bytes(write_collection(tmp_path / "src", [5])[0].read_bytes())
    (tmp_path / "t" / "_SUCCESS").touch()
    with pytest.raises(InputError, match=r"t: no Parquet files found \(1 other file\(s\), such as 000000_0: in a "
                                         r"folder vecjob reads the files named \*.parquet; a glob names others"):
        discover(str(tmp_path / "t"))
    assert discover(str(tmp_path / "t" / "*")) == [str(tmp_path / "t" / "000000_0")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no Parquet files found$"):
        discover(str(tmp_path / "empty"))


def test_a_collection_read_by_id_keeps_the_later_shards_row_of_an_id(tmp_path):
    # As the vectors do. A document updated in a later shard (a night's) was read twice by the joins
    # to the vectors: its stale label trained the classifier, and both rows counted in the clustering's
    # label metrics ("labelled 340" of 300 vectors).
    import polars as pl

    from vecjob.parquet_io import collect_scanned, scan_by_id

    data = tmp_path / "d"
    data.mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "label": ["x", "y", "z"]}), data / "part-9.parquet")
    pq.write_table(pa.table({"id": ["b"], "label": ["new"]}), data / "part-10.parquet")  # after part-9
    frame = collect_scanned(scan_by_id(str(data), "id", {"label": "label"}, pl.String), str(data))
    assert frame.height == 3 and dict(zip(frame["id"], frame["label"])) == {"a": "x", "b": "new", "c": "z"}



@pytest.mark.parametrize("where", ["local disk", "store"])
def test_shards_that_differ_as_training_allows_are_read_by_id_too(request, tmp_path, where):
    # A night's shard that adds a column, widens the ids or dictionary-encodes the texts trains and
    # encodes, but search --data, cluster and sentiment refused the collection ("extra column in file
    # outside of expected schema", "data type mismatch"): polars read every file as the first one.
    import polars as pl

    from vecjob import storage
    from vecjob.parquet_io import collect_scanned, scan_by_id

    data = request.getfixturevalue("s3").uri("d") if where == "store" else str(tmp_path / "d")

    def write(table: pa.Table, name: str) -> None:
        fs, path = storage.filesystem(storage.join(data, name))
        fs.create_dir(storage.parent(path))
        pq.write_table(table, path, filesystem=fs)

    write(pa.table({"id": [0], "text": ["z"], "label": pa.nulls(1)}), "part-0.parquet")  # a column of nulls only
    write(pa.table({"id": pa.array([1, 2], pa.int32()), "text": ["a", "b"]}), "part-1.parquet")
    write(pa.table({"id": pa.array([3], pa.int64()), "text": pa.array(["c"]).dictionary_encode(),
                    "label": ["x"], "source": ["feed"]}), "part-2.parquet")
    write(pa.table({"id": pa.array([4], pa.int64()), "text": pa.array(["d"], pa.large_string()), "label": ["y"]}),
          "part-3.parquet")
    frame = collect_scanned(scan_by_id(data, "id", {"text": "text"}, pl.Int64, {"label": "label"}), data)
    assert frame.sort("id").rows() == [(0, "z", None), (1, "a", None), (2, "b", None), (3, "c", "x"), (4, "d", "y")]
    # A column asked for may be missing from some files (a night's unlabelled shard: nulls), not from all.
    frame = collect_scanned(scan_by_id(data, "id", {"label": "label"}, pl.Int64), data)
    assert frame.sort("id").rows() == [(0, None), (1, None), (2, None), (3, "x"), (4, "y")]
    with pytest.raises(InputError, match=r"part-0.parquet: missing column 'tag' \(columns: id, text, label\)"):
        scan_by_id(data, "id", {"tag": "tag"}, pl.Int64)
    # Integers beside floats (pandas writes a column of integers with a missing value as floats), and
    # timestamps of two units, read as one column: floats, the finer unit (both were refused).
    write(pa.table({"id": [6], "text": ["f"], "stars": pa.array([4], pa.int64()),
                    "seen": pa.array([1_000], pa.timestamp("ms"))}), "part-5.parquet")
    write(pa.table({"id": [7], "text": ["g"], "stars": [4.5], "seen": pa.array([2_000], pa.timestamp("us"))}),
          "part-6.parquet")
    frame = collect_scanned(scan_by_id(data, "id", {"stars": "stars", "seen": "seen"}, pl.Int64), data)
    assert frame.schema["stars"] == pl.Float64 and frame.schema["seen"] == pl.Datetime("us")
    assert frame.filter(pl.col("id") >= 6).sort("id").rows() == [
        (6, 4.0, datetime.datetime(1970, 1, 1, 0, 0, 1)), (7, 4.5, datetime.datetime(1970, 1, 1, 0, 0, 0, 2_000))]
    write(pa.table({"id": [5], "text": ["e"], "label": [7]}), "part-4.parquet")
    with pytest.raises(InputError, match=r"part-4.parquet: column 'label' holds int, in .*part-2.parquet it holds string"):
        scan_by_id(data, "id", {"text": "text"}, pl.Int64, {"label": "label"})


def test_texts_that_are_not_utf8_are_named_as_such_where_a_collection_is_read_by_id(tmp_path):
    # A writer that skips the check (pyarrow's cast with safe=False) leaves other bytes in a string
    # column; polars refuses them, and the line said the files could not be read "as one table".
    import polars as pl

    from vecjob.parquet_io import collect_scanned, scan_by_id

    texts = pa.array([b"fine", b"bad \xff bytes"], type=pa.binary()).cast(pa.string(), safe=False)
    pq.write_table(pa.table({"id": ["a", "b"], "text": texts}), tmp_path / "d.parquet")
    data = str(tmp_path / "d.parquet")
    with pytest.raises(InputError, match=r"d\.parquet: a string column holds bytes that are not UTF-8 .*write it as UTF-8"):
        collect_scanned(scan_by_id(data, "id", {"text": "text"}, pl.String), data)


def test_rows_of_a_row_group_are_read_a_slice_at_a_time(tmp_path):
    from vecjob.parquet_io import iter_rows

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": list(range(100)), "text": [f"t{i}" for i in range(100)]}), path, row_group_size=60)
    pieces = list(iter_rows(str(path), [0, 1], ["id"], skip=10, rows=55, batch_rows=7))
    assert [i for p in pieces for i in p.column("id").to_pylist()] == list(range(10, 65))
    assert max(p.num_rows for p in pieces) <= 7
    assert [p.num_rows for p in iter_rows(str(path), [1], ["id", "text"], skip=0, rows=0, batch_rows=7)] == [0]
