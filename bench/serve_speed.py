"""The search service (issue 28): closed-loop clients (1, 8, 32 at once) against `vecjob serve` on this
machine's loopback, for id, vector and text queries, over the BBC collection (2,225 vectors) and 1M
vectors; QPS and p50/p99 latency, beside `vecjob search`'s time per query (a process per query, as a
user runs it) in the same run.

The model has the default architecture and random weights (a query's cost does not depend on
training); the 1M vectors are clustered synthetic vectors written as if that model had made them, so
text queries are encoded by the model and searched in the 1M index; "text+snippets" are those text
queries again with the hits' texts (`--data`: tweets under the synthetic ids, in 1,000 files; the
vectors' manifest names the file each vector shard was encoded from, as an encoded collection's does,
so a replica reads a hit's text from its own file).
Every loop is bounded: at most `--seconds` per setting and `--max-requests` per client.

    python bench/serve_speed.py [--seconds 8] [--sizes 2225,1000000] [--kinds id,vector,text,text+snippets]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from common import DATA, print_table, untrained_model_dir, write_json

TEXTS = ["the film won an award at the festival", "shares fell after the bank reported losses",
         "the minister said the election would be held in may", "the striker scored twice in the final"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(port: int, bodies: list[bytes], stop_at: float, max_requests: int, latencies: list, errors: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(max_requests):
        if time.perf_counter() >= stop_at:
            break
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/search", bodies[i % len(bodies)], {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            ok = response.status == 200
        except OSError:
            ok = False
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        (latencies if ok else errors).append(time.perf_counter() - t0)
    conn.close()


def _answer(port: int, body: bytes) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/search", body, {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    conn.close()
    return answer


def closed_loop(port: int, bodies: list[bytes], clients: int, seconds: float, max_requests: int) -> dict:
    latencies: list[float] = []
    errors: list[float] = []
    start = time.perf_counter()
    threads = [threading.Thread(target=_client, args=(port, bodies[c::clients] or bodies, start + seconds,
                                                      max_requests, latencies, errors)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "qps": len(latencies) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def cli_seconds(args: list[str], repeats: int = 3) -> float:
    """Median wall time of one `vecjob search` process."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "vecjob"), "search", *args], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_collection(size: int, work: Path, model: Path, texts: tuple | None = None) -> tuple[Path, list, list]:
    """An index of `size` vectors made (or, for the synthetic sizes, labelled) by `model`; its ids and
    vectors. `texts`: the synthetic vectors' ids a shard each and the file of texts each was encoded
    from (`write_texts`), as the vectors' manifest of an encoded collection names them."""
    from vecjob.config import DataConfig, EncodeConfig, IndexConfig
    from vecjob.index import index_collection
    from vecjob.model_dir import read_model_info
    from vecjob.encode_shards import encode_collection
    from vecjob.vectors import VectorsDir, table_vectors

    vectors = work / f"v-{size}"
    if size == 2225:
        encode_collection(DataConfig(paths=[str(DATA / "bbc_news.parquet")]), model, vectors, EncodeConfig())
    else:
        from index_speed import write_vectors_dir

        parts, inputs = texts or (None, None)
        write_vectors_dir(vectors, size, model_fp=read_model_info(model).fingerprint, parts=parts, inputs=inputs)
    index_collection(vectors, work / f"i-{size}", IndexConfig())
    sample = VectorsDir.open(vectors).read_all().slice(0, 200)
    return work / f"i-{size}", sample.column("id").to_pylist(), table_vectors(sample).tolist()


def write_texts(folder: Path, n: int, shards: int = 1000, sorted_ids: bool = False) -> tuple[list, list[str]]:
    """The texts of the synthetic sizes' ids (0 … n-1), tweets cycled, in `shards` files: what
    `--data` gives the service for snippets; the ids of each file and its path. The ids are spread
    over the files at random (ids that do not follow the files, as hashes or UUIDs do), unless
    `sorted_ids` (a range per file, which lets a reader skip files by their statistics)."""
    import polars as pl

    tweets = pl.read_parquet(DATA / "tweets_sentiment.parquet", columns=["text"])["text"]
    ids = np.arange(n) if sorted_ids else np.random.default_rng(0).permutation(n)
    parts, paths = np.array_split(ids, shards), []
    for s, part in enumerate(parts):
        paths.append(str(folder / f"part-{s:04d}.parquet"))
        pl.DataFrame({"id": part, "text": tweets.gather(part % len(tweets))}).write_parquet(paths[-1], mkdir=True)
    return parts, paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2225,1000000")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--max-requests", type=int, default=5000)
    ap.add_argument("--kinds", default="id,vector,text,text+snippets",
                    help="query kinds to time (text+snippets: hits with their texts, --data; at the synthetic sizes)")
    ap.add_argument("--sorted-ids", action="store_true", help="text+snippets: each file holds a range of ids")
    ap.add_argument("--out", default="serve_speed.json")
    args = ap.parse_args()

    import polars as pl
    import ray
    from ray import serve

    from vecjob import runtime
    from vecjob.ray_serve import deploy

    work = Path(tempfile.mkdtemp(prefix="vecjob-serve-bench-"))
    texts = pl.read_parquet(DATA / "bbc_news.parquet", columns=["text"])["text"]
    model = untrained_model_dir(texts, work / "model")
    runtime.connect()
    port = _free_port()
    rows = []
    kinds = args.kinds.split(",")
    for size in [int(s) for s in args.sizes.split(",")]:
        texts_dir = work / f"texts-{size}"  # hits with their texts from 1,000 files (`--data`)
        with_texts = size != 2225 and "text+snippets" in kinds
        encoded_from = write_texts(texts_dir, size, sorted_ids=args.sorted_ids) if with_texts else None
        t0 = time.perf_counter()
        index, ids, vectors = build_collection(size, work, model, encoded_from)
        build_s = time.perf_counter() - t0
        deploy(str(index), str(model), None, port=port, poll_s=3600)
        bodies = {
            "id": [json.dumps({"id": i, "k": 10}).encode() for i in ids],
            "vector": [json.dumps({"vector": v, "k": 10}).encode() for v in vectors],
            "text": [json.dumps({"text": t, "k": 10}).encode() for t in TEXTS],
        }
        cli = {"id": cli_seconds([str(index), "--id", str(ids[0]), "-k", "10", "--json"]),
               "text": cli_seconds([str(index), "--model", str(model), "--text", TEXTS[0], "-k", "10", "--json"])}
        if with_texts:
            bodies["text+snippets"] = bodies["text"]
            cli["text+snippets"] = cli_seconds([str(index), "--model", str(model), "--text", TEXTS[0], "-k", "10",
                                                 "--json", "--data", str(texts_dir)])
        for kind, kind_bodies in bodies.items():
            if kind not in kinds:
                continue
            if kind == "text+snippets":
                deploy(str(index), str(model), [str(texts_dir)], port=port, poll_s=3600)
                answer = _answer(port, kind_bodies[0])
                assert all(h.get("snippet") for h in answer["hits"]), answer
            closed_loop(port, kind_bodies, 1, 1.0, 50)  # warm-up
            for clients in [int(c) for c in args.clients.split(",")]:
                r = closed_loop(port, kind_bodies, clients, args.seconds, args.max_requests)
                rows.append({"vectors": size, "query": kind, **r, "cli_s_per_query": cli.get(kind),
                             "index_build_s": build_s})
                print_table(f"{size:,} vectors, {kind} queries", [rows[-1]],
                            ["clients", "requests", "errors", "qps", "p50_ms", "p99_ms", "cli_s_per_query"])
    serve.shutdown()
    ray.shutdown()
    write_json(args.out, {"replicas": 1, "seconds_per_setting": args.seconds, "rows": rows})
    print_table("service, closed loop", rows,
                ["vectors", "query", "clients", "requests", "errors", "qps", "p50_ms", "p99_ms", "cli_s_per_query"])


if __name__ == "__main__":
    main()
