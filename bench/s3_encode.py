"""Encoding with input and output in object storage against local disk (issue 26), in one run.

    python bench/s3_encode.py [--docs 100000] [--shards 10] [--repeats 3] [--rss-docs 1000000]

A local S3 server (moto's server mode, a process on a free loopback port) holds a copy of the same
synthetic collection (tweet-length documents, bench/scale.py) and of the same untrained model dir
(default architecture; speed does not depend on the weights). Each repeat encodes the collection
twice with the embedded local Ray, as `vecjob encode` does, in alternating order: from local disk
to a fresh local folder, and from the bucket to a fresh prefix of the bucket (encoder actors write
the vector shards to the bucket; the driver downloads each into its local mirror as it is reported
and publishes the manifest, which is counted). Medians of the wall times, and their ratio; for
each run, the encoder actors' own seconds summed over the units (read, tokenize, infer, write), and for
each bucket run, the CPU seconds the S3 server itself spent (it shares the machine's cores with the
encoders, which a real bucket would not). With --rss-docs, one more run encodes a collection of that
size from and to the bucket while the memory of the driver and of every Ray process is sampled
(PeakRSS).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import PeakRSS, print_table, write_json
from scale import in_child, make_model, write_synthetic


def driver_peak_gb() -> float:
    """This process's (the driver's) peak RSS so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def start_s3_server() -> tuple[int, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Started by a shell that exits at once, so the server is not this process's descendant and its
    # memory (it keeps every object in RAM) stays out of the driver + Ray figures PeakRSS sums.
    launcher = subprocess.run(
        ["setsid", "sh", "-c", f'"{Path(sys.executable).parent / "moto_server"}" -H 127.0.0.1 -p {port} '
                               '>/dev/null 2>&1 & echo $!'], capture_output=True, text=True, check=True)
    server = int(launcher.stdout.strip())
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2)
            return server, endpoint
        except OSError:
            time.sleep(0.2)
    raise SystemExit("moto_server did not start")


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the S3 server process has used so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def upload(local: Path, uri: str) -> None:
    """Publish a folder as vecjob does (its manifest last: readers check that no file is newer)."""
    from vecjob import storage

    storage.push(local, uri)


def encode(data: str, model: str, out: str) -> dict:
    """What `vecjob encode DATA --model M --out OUT` does, timed end to end (for a bucket, the mirror's
    download and the publish included)."""
    from vecjob import storage
    from vecjob.config import DataConfig, EncodeConfig
    from vecjob.encode_shards import encode_collection
    from vecjob.ray_encode import RayData

    t0 = time.perf_counter()
    if storage.is_uri(out):
        with storage.mirrored(out, "--out") as local:
            manifest = encode_collection(DataConfig(paths=[data]), model, local, EncodeConfig(), RayData())
    else:
        manifest = encode_collection(DataConfig(paths=[data]), model, out, EncodeConfig(), RayData())
    # Where the encoder actors spent their time, summed over the units: what the store adds shows as
    # read_s (the input shard) and write_s (the vector shard and its stats).
    actor_s = {part: sum(unit[part] for unit in manifest["shards"])
               for part in ("read_s", "tokenize_s", "infer_s", "write_s")}
    return {"seconds": time.perf_counter() - t0, "rows": manifest["counts"]["rows_out"],
            "encode_wall_s": manifest["timings"]["encode_wall_s"], "actor_s": actor_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-docs", type=int, default=0)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vecjob-s3-bench-"))
    server, endpoint = start_s3_server()
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", VECJOB_CACHE=str(work / "cache"))
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket="vecjob-bench")
        bucket = "s3://vecjob-bench"
        in_child(write_synthetic, work / "data", args.docs, args.shards)
        in_child(make_model, str(work / "model"))
        upload(work / "data", f"{bucket}/data")
        upload(work / "model", f"{bucket}/model")

        from vecjob import runtime

        runtime.connect()
        runs = {"local disk": [], "S3 server": []}
        for r in range(args.repeats):
            order = ["local disk", "S3 server"] if r % 2 == 0 else ["S3 server", "local disk"]
            for where in order:
                if where == "local disk":
                    got = encode(str(work / "data"), str(work / "model"), str(work / f"vectors-{r}"))
                else:
                    before = server_cpu_s(server)
                    got = encode(f"{bucket}/data", f"{bucket}/model", f"{bucket}/vectors-{r}")
                    got["server_cpu_s"] = server_cpu_s(server) - before
                    shutil.rmtree(work / "cache" / "runs", ignore_errors=True)
                runs[where].append(got)
                parts = ", ".join(f"{k[:-2]} {v:.1f}" for k, v in got["actor_s"].items())
                print(f"repeat {r}: {where}: {got['seconds']:.1f} s ({got['rows'] / got['seconds']:,.0f} docs/s; "
                      f"actors' s: {parts})"
                      + (f", S3 server CPU {got['server_cpu_s']:.1f} s" if "server_cpu_s" in got else ""), flush=True)
        rows = []
        for where, got in runs.items():
            seconds = statistics.median(g["seconds"] for g in got)
            rows.append({"where": where, "docs": args.docs, "median s": seconds, "docs/s": args.docs / seconds,
                         "runs s": ", ".join(f"{g['seconds']:.1f}" for g in got)})
        ratio = rows[1]["docs/s"] / rows[0]["docs/s"]
        print_table(f"encode {args.docs:,} docs, input and output on local disk vs in the S3 server "
                    f"(S3 / local = {ratio:.2f})", rows, ["where", "docs", "median s", "docs/s", "runs s"])

        memory, driver_small = None, driver_peak_gb()
        if args.rss_docs:
            in_child(write_synthetic, work / "big", args.rss_docs, 100)
            upload(work / "big", f"{bucket}/big")
            shutil.rmtree(work / "big")
            with PeakRSS() as peak:
                got = encode(f"{bucket}/big", f"{bucket}/model", f"{bucket}/big-vectors")
            memory = {"docs": args.rss_docs, "seconds": got["seconds"], "peak_rss_gb": peak.peak / 1e9,
                      "peak_pss_gb": peak.peak_pss / 1e9, "breakdown_at_peak_pss": peak.breakdown,
                      "driver_peak_rss_gb_after_small_runs": driver_small,
                      "driver_peak_rss_gb_after_this_run": driver_peak_gb()}
            print(f"\n{args.rss_docs:,} docs from and to the bucket: {got['seconds']:.0f} s, peak RSS "
                  f"{peak.peak / 1e9:.2f} GB, peak PSS {peak.peak_pss / 1e9:.2f} GB")
        write_json("s3_encode.json", {"docs": args.docs, "shards": args.shards, "runs": runs, "table": rows,
                                      "s3_over_local": ratio, "target": ">= 0.9", "memory": memory})
    finally:
        os.kill(server, 15)  # the server this script started, by its pid
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
