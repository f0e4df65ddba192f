"""Index (issue 4, benchmark 6): for 100k and 1M clustered 128-d vectors, the factory `auto` picks:
build time, search QPS vs exact search on the same queries, recall@10 against exact.

    python bench/index_speed.py [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from common import PeakRSS, print_table, write_json


def write_vectors_dir(folder: Path, n: int, dim: int = 128, shards: int = 20, seed: int = 0,
                      model_fp: str = "synthetic", parts: list[np.ndarray] | None = None,
                      inputs: list[str] | None = None) -> None:
    """Vectors around 1,000 random centres (document vectors are clustered, not uniform), as if the
    model with fingerprint `model_fp` had written them: ids 0 … n-1 in `shards` shards, or the ids of
    `parts` a shard each, encoded from the files `inputs` names (one a shard), as the manifest says."""
    from vecjob.parquet_io import new_manifest, write_json_atomic, write_parquet_atomic
    from vecjob.vectors import MANIFEST_KIND, vectors_table, with_model_fingerprint

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    stats = []
    for s, part in enumerate(parts if parts is not None else np.array_split(np.arange(n), shards)):
        x = centres[rng.integers(1000, size=len(part))] + 0.5 * rng.normal(size=(len(part), dim)).astype(np.float32)
        table = with_model_fingerprint(vectors_table(pa.array(part), x), model_fp)
        write_parquet_atomic(table, folder / f"s{s:04d}.parquet")
        stats.append({"output": f"s{s:04d}.parquet", "rows_out": len(part), "input": inputs[s] if inputs else None})
    write_json_atomic(new_manifest(MANIFEST_KIND, dim=dim, shards=stats, model_fingerprint=model_fp,
                                   vectors_fingerprint=f"synthetic-{n}-{seed}"), folder / "manifest.json")


def _compare_with_exact(vectors_dir: Path, index_dir: Path, queries: int = 1000, k: int = 10):
    """QPS of the built index and of an in-memory exact IndexFlatIP on the same queries; recall@10."""
    import faiss

    from vecjob.index import load_index_dir, recall_at_k
    from vecjob.vectors import VectorsDir, table_vectors

    x = table_vectors(VectorsDir.open(vectors_dir).read_all(["vector"])).copy()
    faiss.normalize_L2(x)
    q = x[np.random.default_rng(1).choice(len(x), queries, replace=False)]
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    t0 = time.perf_counter()
    _, exact = flat.search(q, k)
    exact_s = time.perf_counter() - t0
    index = load_index_dir(index_dir).index
    t0 = time.perf_counter()
    _, approx = index.search(q, k)
    approx_s = time.perf_counter() - t0
    return queries / approx_s, queries / exact_s, recall_at_k(approx, exact)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args()

    from vecjob.config import IndexConfig
    from vecjob.index import index_collection

    work = Path(tempfile.mkdtemp(prefix="vecjob-index-"))
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        write_vectors_dir(work / f"v{n}", n)
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            m = index_collection(work / f"v{n}", work / f"i{n}", IndexConfig(recall_queries=1000))
            wall = time.perf_counter() - t0
        qps, exact_qps, recall = _compare_with_exact(work / f"v{n}", work / f"i{n}")
        rows.append({"vectors": n, "factory": m["factory"], "search params": m["search_params"],
                     "build s": m["timings"]["train_s"] + m["timings"]["add_s"], "total s": wall,
                     "recall@10": recall, "manifest recall@10": m["recall_at_10"], "QPS": qps,
                     "exact QPS": exact_qps, "speed-up": qps / exact_qps, "peak RSS GB": rss.peak / 1e9})
        print(rows[-1], flush=True)
        shutil.rmtree(work / f"v{n}")
    print_table("FAISS index chosen by factory=auto (queries: 1,000 sampled vectors, k=10)", rows,
                ["vectors", "factory", "search params", "build s", "recall@10", "QPS", "exact QPS", "speed-up", "peak RSS GB"])
    write_json("index_speed.json", {"rows": rows})
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
