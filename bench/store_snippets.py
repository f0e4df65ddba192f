"""Snippets from a collection in a store some milliseconds away: what a search's hits cost when the
service gives them their texts (`vecjob serve --data s3://…`), and when a one-off `vecjob search
--data s3://…` does.

    python bench/store_snippets.py [--shards 1000] [--docs 200000] [--latency-ms 20] [--lookups 3]

The collection (tweet-length documents, string ids) sits in a local S3 server behind the loopback
proxy of `store_night.py`, which holds every piece of a request for --latency-ms. A fresh process
times what a replica does: at start, the listing of the files and the mapping of their ids to
files, then `--lookups` searches' worth of snippets, 10 random ids each, as `add_snippets` gives
them; and for the same ids, the one-off lookup of `vecjob search --data` (`search.lookup_texts`):
without the files the hits were encoded from, as for an index whose vectors moved, it reads every
file's ids once; with them (`search.encoded_from` reads them from the vectors' manifest, one request
not timed here), the hits' files alone. `archive/store_snippets-2026-12-05-before.json` is this script as
of commit 9162f51 run on the code before the map, when every search did the one-off lookup.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import print_table, write_json
from store_night import store_arguments, store_far_away

LOOKUPS = """
import json, statistics, sys, time
import numpy as np, pyarrow as pa
from vecjob import search
uri, shards, per, lookups = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
documents = search.DocumentFiles([uri])
documents.refresh(pa.string())
start_s = time.perf_counter() - t0
rng = np.random.default_rng(0)
times, one_off, known = [], [], []
for _ in range(lookups):
    shard_of_hit = rng.integers(shards, size=10)
    hits = [{"id": f"s{s:03d}-{i:06d}"} for s, i in zip(shard_of_hit, rng.integers(per, size=10))]
    t = time.perf_counter()
    search.add_snippets(hits, documents.texts)
    times.append(time.perf_counter() - t)
    assert all(h["snippet"] for h in hits), hits
    t = time.perf_counter()
    texts = search.lookup_texts([uri], [h["id"] for h in hits])
    one_off.append(time.perf_counter() - t)
    assert set(texts) == {h["id"] for h in hits}, texts
    encoded_from = sorted({f"{uri}/part-{s:03d}.parquet" for s in shard_of_hit})  # what the vectors' manifest names
    t = time.perf_counter()
    texts = search.lookup_texts([uri], [h["id"] for h in hits], look_first=encoded_from)
    known.append(time.perf_counter() - t)
    assert set(texts) == {h["id"] for h in hits}, texts
print(json.dumps({"start s": start_s, "lookup s (median)": statistics.median(times),
                  "one-off lookup s (median)": statistics.median(one_off),
                  "one-off, files known s (median)": statistics.median(known), "lookups": lookups}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    store_arguments(ap, "store_snippets.json")
    ap.add_argument("--lookups", type=int, default=3)
    args = ap.parse_args()
    with store_far_away(args.shards, args.docs, args.latency_ms) as (uri, far):
        done = subprocess.run([sys.executable, "-c", LOOKUPS, uri, str(args.shards), str(args.docs // args.shards),
                               str(args.lookups)], env=far, capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    row = {"shards": args.shards, "docs": args.docs, **json.loads(done.stdout.strip().splitlines()[-1])}
    print_table(f"snippets for 10 hits from a store {args.latency_ms:g} ms away", [row],
                ["shards", "docs", "start s", "lookup s (median)", "one-off lookup s (median)",
                 "one-off, files known s (median)", "lookups"])
    write_json(args.out, {"latency_ms": args.latency_ms, "row": row})


if __name__ == "__main__":
    main()
