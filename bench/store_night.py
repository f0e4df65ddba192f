"""What a night asks of a store before it encodes anything: every input shard's footer (the checks)
and its content hash (which shards are new), for a collection in a store some milliseconds away.

    python bench/store_night.py [--shards 1000] [--docs 200000] [--latency-ms 20]

A local S3 server (moto's server mode) holds the collection; the night's requests reach it through
a loopback proxy that holds every piece of a request for --latency-ms before passing it on, as a
store in another building would (the local server alone answers in about a millisecond). Each
night is a fresh process, as a scheduled run is: `discover`, `check_shards` and the fingerprints of
every shard, timed. The first night finds the machine's cache folder empty; the second finds what
the first remembered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from common import print_table, write_json
from s3_encode import start_s3_server
from scale import write_synthetic

BUCKET = "night-bench"

NIGHT = """
import json, sys, time
from vecjob import storage
from vecjob.parquet_io import check_shards, discover, file_fingerprint
t0 = time.perf_counter()
paths = discover(sys.argv[1])
t1 = time.perf_counter()
check_shards(sys.argv[1], "id", "text", content=False)
t2 = time.perf_counter()
each = getattr(storage, "each_file", lambda fn, paths: [fn(p) for p in paths])
each(file_fingerprint, paths)
t3 = time.perf_counter()
print(json.dumps({"shards": len(paths), "list s": t1 - t0, "footers s": t2 - t1, "fingerprints s": t3 - t2,
                  "night s": t3 - t0}))
"""


def proxy(listen_port: int, target_port: int, delay_s: float) -> None:
    """Forward loopback connections to the server, each piece from the client held for `delay_s`."""
    async def pipe(reader, writer, delay):
        try:
            while data := await reader.read(1 << 16):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_reader, client_writer):
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_reader, server_writer, delay_s), pipe(server_reader, client_writer, 0))

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def night(uri: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", NIGHT, uri], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def store_far_away(shards: int, docs: int, latency_ms: float) -> Iterator[tuple[str, dict]]:
    """A synthetic collection (`shards` files, `docs` documents) in a fresh local S3 server, reached
    through the delaying proxy: its URI, and the environment a process reaches it with."""
    work = Path(tempfile.mkdtemp(prefix="vecjob-store-far-"))
    server, endpoint = start_s3_server()
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "VECJOB_CACHE": str(work / "cache")}
    port = free_port()
    relay = multiprocessing.Process(target=proxy, args=(port, int(endpoint.rsplit(":", 1)[1]), latency_ms / 1e3),
                                    daemon=True)
    relay.start()
    try:
        import boto3

        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        write_synthetic(work / "docs", docs, shards, 0)
        from vecjob import storage

        for path in sorted((work / "docs").glob("*.parquet")):
            storage.write_bytes(f"s3://{BUCKET}/docs/{path.name}", path.read_bytes())
        yield f"s3://{BUCKET}/docs", {**env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    finally:
        relay.kill()
        os.kill(server, 9)
        shutil.rmtree(work, ignore_errors=True)


def store_arguments(ap: argparse.ArgumentParser, out: str) -> None:
    """The collection and the store's distance, as `store_far_away` takes them, and the result file."""
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--out", default=out)


def main() -> None:
    ap = argparse.ArgumentParser()
    store_arguments(ap, "store_night.json")
    args = ap.parse_args()
    with store_far_away(args.shards, args.docs, args.latency_ms) as (uri, far):
        rows = [{"night": "first (cache folder empty)", **night(uri, far)},
                {"night": "second (the first's fingerprints remembered)", **night(uri, far)}]
    print_table(f"a night's requests to a store {args.latency_ms:g} ms away", rows,
                ["night", "shards", "list s", "footers s", "fingerprints s", "night s"])
    write_json(args.out, {"latency_ms": args.latency_ms, "docs": args.docs, "rows": rows})


if __name__ == "__main__":
    main()
