"""Snippets from a collection in a store some milliseconds away: what a search's hits cost when the
service gives them their texts (`vecjob serve --data s3://…`), and when a one-off `vecjob search
--data s3://…` does.

    python bench/store_snippets.py [--shards 1000] [--docs 200000] [--latency-ms 20] [--lookups 3]

The collection (tweet-length documents, string ids) sits in a local S3 server behind the loopback
proxy of `store_night.py`, which holds every piece of a request for --latency-ms. A fresh process
times what `vecjob serve` checks before it starts (every file's footer: the text column is there,
the ids of the index's type), then what a replica does: at start, the listing of the files; then `--lookups` searches' worth of
snippets, 10 random ids each, as the service gives them (`add_snippets` over `DocumentFiles.texts`,
told the files the hits' vectors were encoded from, as `search.EncodedFrom` reads them from the
index and the vectors' manifest, once a replica): each a first read of those files' ids, then the
same ids again; and, for ids whose file is not known (vectors moved), the map of every file's ids
that `DocumentFiles` builds then: its first lookup, which builds it, and later ones. For the same
ids, the one-off lookup of `vecjob search --data` (a `DocumentFiles` of its own, once): without the
files, it lists them and builds the map; with them, it lists them and reads the hits' files alone.
`archive/store_snippets-2026-12-05-before.json` is this script as of commit 9162f51 run on the code
before the map, when every search did the one-off lookup; `archive/store_snippets-2026-12-06-0842.json`
the run before a replica read the hits' files first, when it built the map at start and the one-off
lookup read files through a polars scan of its own.
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
import numpy as np
import polars as pl
from vecjob import search
from vecjob.parquet_io import scan_by_id, texts_as_text
uri, shards, per, lookups = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
texts_as_text(scan_by_id([uri], "id", {"text": "text"}, pl.String), [uri], "text")  # as `vecjob serve` checks --data
checks_s = time.perf_counter() - t0
t0 = time.perf_counter()
documents = search.DocumentFiles([uri])
documents.refresh()
start_s = time.perf_counter() - t0
rng = np.random.default_rng(0)
times = {"first": [], "again": [], "map built": [], "map": [], "one-off": [], "one-off known": []}
mapped = search.DocumentFiles([uri])

def timed(kind, texts_of, hits):
    t = time.perf_counter()
    search.add_snippets(hits, texts_of)
    times[kind].append(time.perf_counter() - t)
    assert all(h["snippet"] for h in hits), (kind, hits)

for n in range(lookups):
    shard_of_hit = rng.integers(shards, size=10)
    hits = [{"id": f"s{s:03d}-{i:06d}"} for s, i in zip(shard_of_hit, rng.integers(per, size=10))]
    encoded_from = sorted({f"{uri}/part-{s:03d}.parquet" for s in shard_of_hit})  # what the vectors' manifest names
    timed("first", lambda ids: documents.texts(ids, encoded_from), hits)
    timed("again", lambda ids: documents.texts(ids, encoded_from), hits)
    timed("map built" if n == 0 else "map", mapped.texts, hits)
    timed("one-off", lambda ids: search.DocumentFiles([uri]).texts(ids), hits)
    timed("one-off known", lambda ids: search.DocumentFiles([uri]).texts(ids, encoded_from), hits)
median = {kind: statistics.median(t) for kind, t in times.items() if t}
print(json.dumps({"serve checks s": checks_s, "start s": start_s, "first lookup s (median)": median["first"], "lookup s (median)": median["again"],
                  "map built s": median["map built"], "via the map s (median)": median.get("map"),
                  "one-off lookup s (median)": median["one-off"],
                  "one-off, files known s (median)": median["one-off known"], "lookups": lookups}))
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
                ["shards", "docs", "serve checks s", "start s", "first lookup s (median)", "lookup s (median)", "map built s",
                 "via the map s (median)", "one-off lookup s (median)", "one-off, files known s (median)", "lookups"])
    write_json(args.out, {"latency_ms": args.latency_ms, "row": row})


if __name__ == "__main__":
    main()
