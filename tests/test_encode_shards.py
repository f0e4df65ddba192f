"""Encoding a collection in-process (the InProcess executor): the same classes the Ray pipeline maps."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_collection
from vecjob.config import DataConfig, EncodeConfig
from vecjob.encode_shards import plan_items
from vecjob.errors import InputError
from vecjob.parquet_io import check_shards
from vecjob.encode_shards import encode_collection
from vecjob.vectors import VectorsDir, table_vectors


def _encode(data_dir, model, out, **cfg):
    return encode_collection(DataConfig(paths=[str(data_dir)]), model, out,
                             EncodeConfig(**{"rows_per_task": 100, **cfg}))


def test_plan_cuts_large_shards_by_row_groups_into_units_with_their_own_names(collection):
    shards = check_shards(str(collection), "id", "text")
    items = plan_items(shards, ["fp"] * len(shards), "model", {}, rows_per_task=40)
    for s_idx, shard in enumerate(shards):
        mine = [it for it in items if it.shard == s_idx]
        assert sum(it.rows for it in mine) == shard.num_rows
        assert len(mine) > 1 or len(shard.row_group_rows) == 1
        # Each row once, in order: runs of row groups, and slices of the groups of 64 rows.
        first_row = np.cumsum([0, *shard.row_group_rows])
        rows = [r for it in mine for r in range(first_row[it.row_groups[0]] + it.skip,
                                                first_row[it.row_groups[0]] + it.skip + it.rows)]
        assert rows == list(range(shard.num_rows))
        assert all(it.rows <= 40 for it in mine)
        assert [it.output for it in mine] == sorted(it.output for it in mine)
    assert any(it.skip for it in items)
    assert len({it.output for it in items}) == len(items)
    # A shard that fits one unit keeps its one name, whatever rows_per_task is; a cut shard's names
    # depend on the cut, so a rerun with another rows_per_task never takes one cut's parts for another's.
    whole = plan_items(shards, ["fp"] * len(shards), "model", {}, rows_per_task=10_000)
    assert [it.output for it in whole] == [it.output for it in plan_items(shards, ["fp"] * 3, "model", {}, 20_000)]
    cut = {it.output for it in items if len(shards[it.shard].row_group_rows) > 1}
    assert cut and not cut & {it.output for it in plan_items(shards, ["fp"] * 3, "model", {}, 30)}


def test_a_row_group_larger_than_a_unit_is_sliced_and_encodes_as_smaller_groups_do(tiny_model_dir, tmp_path):
    # pandas writes up to a million rows to one row group: as one unit, one encoder read all of it
    # (memory grew with it) while the others waited.
    from vecjob.encode_shards import MAX_SLICES, shard_units

    assert shard_units((1_000,), 100) == [([0], skip, 100) for skip in range(0, 1_000, 100)]
    assert [rows for _, _, rows in shard_units((100_000,), 100)] == [6_250] * MAX_SLICES
    assert shard_units((30, 1_000, 30, 30), 100) == [([0], 0, 30), *[([1], s, 100) for s in range(0, 1_000, 100)],
                                                     ([2, 3], 0, 60)]
    write_collection(tmp_path / "whole", [1_000], row_group_size=1_000)
    write_collection(tmp_path / "groups", [1_000], row_group_size=100)
    whole = _encode(tmp_path / "whole", tiny_model_dir, tmp_path / "v_whole")
    groups = _encode(tmp_path / "groups", tiny_model_dir, tmp_path / "v_groups")
    assert whole["counts"]["parts_encoded"] == groups["counts"]["parts_encoded"] == 10
    assert [s["rows_in"] for s in whole["shards"]] == [100] * 10
    a, b = VectorsDir.open(tmp_path / "v_whole").read_all(), VectorsDir.open(tmp_path / "v_groups").read_all()
    assert a.column("id").to_pylist() == b.column("id").to_pylist() == [f"doc-{i:05d}" for i in range(1_000)]
    np.testing.assert_array_equal(table_vectors(a), table_vectors(b))


def test_vector_shards_hold_each_input_shard_in_order(collection, tiny_model_dir, tmp_path):
    manifest = _encode(collection, tiny_model_dir, tmp_path / "v", keep_columns=["label"])
    vdir = VectorsDir.open(tmp_path / "v")
    names = sorted(p.name for p in (tmp_path / "v").glob("*.parquet"))
    # 150 rows in row groups of 64 are cut into two units of ≤ 100 rows; 37 and 95 rows are one each.
    assert names == sorted(s["output"] for s in manifest["shards"]) and len(names) == 4
    assert [s["input"] for s in manifest["shards"]] == sorted(s["input"] for s in manifest["shards"])
    for source_path in sorted({s["input"] for s in manifest["shards"]}):
        parts = [pq.read_table(tmp_path / "v" / s["output"]) for s in manifest["shards"] if s["input"] == source_path]
        table, source = pa.concat_tables(parts), pq.read_table(source_path)
        assert table.column("id").to_pylist() == source.column("id").to_pylist()
        assert table.column("label").to_pylist() == source.column("label").to_pylist()
        assert table.schema.field("vector").type == pa.list_(pa.float32(), 16)
    assert manifest["counts"] == {**manifest["counts"], "rows_in": 282, "rows_out": 282, "skipped_empty": 0,
                                  "shards": 3, "shards_encoded": 3, "parts_encoded": 4}
    assert vdir.num_vectors == 282 and vdir.dim == 16
    assert not list((tmp_path / "v").glob(".*tmp*"))


def test_empty_texts_are_skipped_and_counted_strict_refuses(tiny_model_dir, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3, 4], "text": ["goal team", None, "  ", "oven bake"]}), data / "a.parquet")
    pq.write_table(pa.table({"id": pa.array([], pa.int64()), "text": pa.array([], pa.string())}), data / "empty.parquet")
    manifest = _encode(data, tiny_model_dir, tmp_path / "v")
    assert manifest["counts"]["rows_out"] == 2 and manifest["counts"]["skipped_empty"] == 2
    by_input = {os.path.basename(s["input"]): s for s in manifest["shards"]}
    assert by_input["empty.parquet"]["rows_out"] == 0
    assert pq.read_table(tmp_path / "v" / by_input["a.parquet"]["output"]).column("id").to_pylist() == [1, 4]
    with pytest.raises(InputError, match=r"a.parquet: 2 null or empty text\(s\) \(first id 2\)"):
        encode_collection(DataConfig(paths=[str(data)], strict=True), tiny_model_dir, tmp_path / "v2",
                          EncodeConfig())


def test_rerun_skips_done_shards_and_redoes_missing_ones_identically(collection, tiny_model_dir, tmp_path):
    out = tmp_path / "v"
    first = _encode(collection, tiny_model_dir, out)
    before = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    again = _encode(collection, tiny_model_dir, out)
    assert again["counts"]["shards_encoded"] == 0 and again["counts"]["shards_skipped_done"] == 3
    victim = first["shards"][1]["output"]
    (out / victim).unlink()
    third = _encode(collection, tiny_model_dir, out)
    assert third["counts"]["shards_encoded"] == 1 and third["counts"]["parts_encoded"] == 1
    # Only the re-encoded shard's rows count as encoded this run (docs/s was all shards' rows ÷ its time).
    assert third["counts"]["rows_encoded"] == first["shards"][1]["rows_in"] < third["counts"]["rows_in"] == 282
    assert again["counts"]["rows_encoded"] == 0 and first["counts"]["rows_encoded"] == 282
    after = {p.name: p.read_bytes() for p in out.glob("*.parquet")}
    for name in before:
        a, b = pq.read_table(out / name), pq.read_table(pa.BufferReader(before[name]))
        np.testing.assert_array_equal(table_vectors(a), table_vectors(b))
    assert after.keys() == before.keys()
    assert third["vectors_fingerprint"] == first["vectors_fingerprint"]


def test_changed_input_shard_is_reencoded(tiny_model_dir, tmp_path):
    data = write_collection(tmp_path / "in", [20, 20])
    _encode(tmp_path / "in", tiny_model_dir, tmp_path / "v")
    write_collection(tmp_path / "in", [20, 20], seed=9)  # same names, new content
    again = _encode(tmp_path / "in", tiny_model_dir, tmp_path / "v")
    assert again["counts"]["shards_encoded"] == 2 and len(data) == 2


def test_corrupt_shard_is_named_before_anything_is_written(collection, tiny_model_dir, tmp_path):
    data = tmp_path / "in"
    write_collection(data, [10, 10])
    (data / "part-01.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(InputError, match="part-01.parquet: not a readable Parquet file"):
        _encode(data, tiny_model_dir, tmp_path / "v")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output dir, no lock


def test_concurrency_follows_the_cluster():
    from vecjob.errors import VecjobError
    from vecjob.ray_encode import resolve_concurrency

    assert resolve_concurrency(EncodeConfig(), cpus=2, gpus=0) == (2, 0.5, 0.0, 1)
    assert resolve_concurrency(EncodeConfig(concurrency=1), cpus=2, gpus=0) == (1, 1.5, 0.0, 2)
    # Fewer units of work than CPUs (a small night): no idle actors; the ones there take the threads.
    assert resolve_concurrency(EncodeConfig(), cpus=2, gpus=0, units=1) == (1, 1.5, 0.0, 2)
    assert resolve_concurrency(EncodeConfig(), cpus=16, gpus=0, units=3) == (3, 4.5, 0.0, 5)
    assert resolve_concurrency(EncodeConfig(), cpus=16, gpus=4, units=2) == (2, 1.0, 1.0, 1)
    assert resolve_concurrency(EncodeConfig(concurrency=2), cpus=2, gpus=0, units=1)[0] == 2  # asked for
    # Single-threaded actors ask for half a CPU each, leaving room for Ray Data's own tasks.
    assert resolve_concurrency(EncodeConfig(), cpus=16, gpus=0) == (16, 0.5, 0.0, 1)
    assert resolve_concurrency(EncodeConfig(concurrency=4), cpus=16, gpus=0) == (4, 3.5, 0.0, 4)
    assert resolve_concurrency(EncodeConfig(), cpus=16, gpus=4) == (4, 1.0, 1.0, 1)
    # An actor lives on one node: on two 1-CPU nodes, one actor gets one thread, not two.
    assert resolve_concurrency(EncodeConfig(concurrency=1), cpus=2, gpus=0, node_cpus=1) == (1, 0.5, 0.0, 1)
    with pytest.raises(VecjobError, match="no GPUs"):
        resolve_concurrency(EncodeConfig(device="cuda"), cpus=2, gpus=0)


def test_the_encode_driver_and_search_by_id_do_not_import_torch():
    # The driver only plans work items and assembles shards; torch there costs ~0.2 GB of memory.
    import subprocess
    import sys

    code = "import sys, vecjob.ray_encode, vecjob.search, vecjob.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_an_id_twice_in_one_input_shard_is_refused_before_anything_is_written(tiny_model_dir, tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    ids = [f"d{i}" for i in range(60)] + ["d3"]  # d3 again, in the last row group: another unit of work
    pq.write_table(pa.table({"id": ids, "text": ["goal team match"] * 61}), data / "a.parquet", row_group_size=20)
    with pytest.raises(InputError, match=r"a.parquet: 2 rows share an id in column 'id' \(e.g. 'd3'\)"):
        _encode(data, tiny_model_dir, tmp_path / "v", rows_per_task=20)
    assert not (tmp_path / "v").exists()


def test_a_later_partition_numbered_without_padding_replaces_an_earlier_one_s_row(tiny_model_dir, tmp_path):
    # Spark writes an integer partition column unpadded: by characters, month=10 sorted before
    # month=9, and September's row of a document replaced October's.
    for month, text in [(9, "goal team league match"), (10, "market shares profit bank")]:
        (tmp_path / "data" / f"month={month}").mkdir(parents=True)
        pq.write_table(pa.table({"id": ["doc-1", f"only-{month}"], "text": [text, text]}),
                       tmp_path / "data" / f"month={month}" / "part-0.parquet")
    _encode(tmp_path / "data", tiny_model_dir, tmp_path / "v")
    vdir = VectorsDir.open(tmp_path / "v")
    live = dict(zip(*vdir.live_ids().to_dict(as_series=False).values()))
    assert live["doc-1"] == live["only-10"] != live["only-9"]


def test_an_encoder_returns_any_error_that_stops_a_unit_as_a_row_for_the_driver_to_raise(tiny_model_dir, collection,
                                                                                      tmp_path):
    """Ray Data logs a raised error with its traceback, which held the actor pool and its CPUs: the map
    entry returns the error, vecjob's or another (here a write under a file, as a full disk's)."""
    import pickle
    from dataclasses import asdict

    from vecjob.encode_shards import PartEncoder

    shards = check_shards(str(collection), "id", "text")
    item = plan_items(shards, ["fp"] * len(shards), "model", {}, rows_per_task=4_096)[0]
    (tmp_path / "a-file").write_text("")
    encoder = PartEncoder(str(tiny_model_dir), str(tmp_path / "a-file" / "out"), "id", "text", [], [], 0, "cpu", False)
    rows = encoder(pa.Table.from_pylist([asdict(item)])).to_pylist()
    assert len(rows) == 1 and set(rows[0]) == {"failed"}
    error = pickle.loads(rows[0]["failed"])
    assert isinstance(error, OSError) and "a-file" in str(error), error


def test_a_hive_partition_folder_is_kept_as_a_column_with_its_folder_s_value(tiny_model_dir, tmp_path):
    # Spark and Hive write a partition column into the folder names, not into the files.
    from vecjob.parquet_io import partition_values

    folders = {"dt=2026-12-06": "2026-12-06", "dt=2026-12-07%2012h": "2026-12-07 12h",
               "dt=__HIVE_DEFAULT_PARTITION__": None}
    for i, folder in enumerate(folders):
        (tmp_path / "data" / folder).mkdir(parents=True)
        pq.write_table(pa.table({"id": [f"{i}-a", f"{i}-b"], "text": ["goal team league", "market bank profit"]}),
                       tmp_path / "data" / folder / "part-00000.snappy.parquet")
    pq.write_table(pa.table({"id": ["flat"], "text": ["goal team"]}), tmp_path / "data" / "loose.parquet")
    expected = {f"{i}-{x}": value for i, value in enumerate(folders.values()) for x in "ab"}

    def kept(out):
        _encode(tmp_path / "data", tiny_model_dir, out, keep_columns=["dt"])
        return dict(zip(*VectorsDir.open(out).read_all(["id", "dt"]).to_pydict().values()))

    assert kept(tmp_path / "v") == {**expected, "flat": None}  # no file holds dt: the folders alone
    (tmp_path / "data" / "dt=2026-12-08").mkdir()  # a column of the name in the file wins over its folder
    pq.write_table(pa.table({"id": ["own"], "text": ["goal team"], "dt": ["in the file"]}),
                   tmp_path / "data" / "dt=2026-12-08" / "part-00000.parquet")
    assert kept(tmp_path / "v2") == {**expected, "flat": None, "own": "in the file"}
    assert partition_values("s3://b/docs/dt=2026-12-07/lang=en/k=v.parquet", ["dt", "lang", "k"]) == {
        "dt": "2026-12-07", "lang": "en"}
    # A folder whose value is not UTF-8 once decoded is named before anything is written.
    (tmp_path / "bad" / "dt=%ff").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["x"], "text": ["goal"]}), tmp_path / "bad" / "dt=%ff" / "part-0.parquet")
    with pytest.raises(InputError, match=r"dt=%ff/part-0.parquet: its folders cannot be read as partition columns"):
        _encode(tmp_path / "bad", tiny_model_dir, tmp_path / "v-bad", keep_columns=["dt"])
    assert not (tmp_path / "v-bad").exists()
