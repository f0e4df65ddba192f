"""The foundation's acceptance run on real data: 600 BBC articles in 3 shards."""

import json

import numpy as np
import polars as pl
from typer.testing import CliRunner

from conftest import SHARED_DATA, needs_shared
from vecjob.cli import app
from vecjob.vectors import VectorsDir, table_vectors

runner = CliRunner()


@needs_shared
def test_bbc_600_articles_end_to_end(ray_session, tmp_path):
    import faiss

    articles = pl.read_parquet(SHARED_DATA / "bbc_news.parquet").sample(600, seed=0)
    data = tmp_path / "data"
    data.mkdir()
    for i, part in enumerate(np.array_split(np.arange(600), 3)):
        articles[part.tolist()].write_parquet(data / f"bbc-{i}.parquet")

    def run(*args):
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 0, r.output
        return r

    run("train", data, "--out", tmp_path / "M", "--epochs", "1", "--hidden-dim", "32", "--max-vocab", "3000",
        "--max-train-chunks", "800", "--workers", "2")
    run("encode", data, "--model", tmp_path / "M", "--out", tmp_path / "V")
    run("index", tmp_path / "V", "--out", tmp_path / "I")

    table = VectorsDir.open(tmp_path / "V").read_all()
    vecs = table_vectors(table)
    assert table.num_rows == 600 and sorted(table.column("id").to_pylist()) == sorted(articles["id"].to_list())
    assert np.isfinite(vecs).all() and vecs.std(axis=0).mean() > 1e-4
    assert faiss.read_index(str(tmp_path / "I" / "index.faiss")).ntotal == 600

    doc_id = articles["id"][17]
    hits = json.loads(run("search", tmp_path / "I", "--model", tmp_path / "M", "--id", doc_id, "-k", "5", "--json").stdout)["hits"]
    assert doc_id in [h["id"] for h in hits]
    hits = json.loads(run("search", tmp_path / "I", "--model", tmp_path / "M", "--text", "the election campaign",
                          "-k", "5", "--json").stdout)["hits"]
    assert len(hits) == 5
