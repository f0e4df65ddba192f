"""What a search's snippets cost a replica in CPU: `DocumentFiles.texts` for 10 hits, in one process,
over local Parquet files (no store's round trips, no HTTP), told the files the hits' vectors were
encoded from (as a replica is, from `search.EncodedFrom`) and not told (the map of every file's ids).

    python bench/experiments/snippet_lookup.py [--files 300] [--rows 1000] [--lookups 300]
                                               [--out bench/results/archive/snippet-lookup.json]

Texts of 15 words, string ids, each hit in another file; every file read once before the timed
lookups (a replica's steady state). Median ms a lookup, two passes of --lookups each.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from common import write_json  # noqa: E402

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an"
         .split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--lookups", type=int, default=300)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "snippet-lookup.json"))
    args = ap.parse_args()
    from vecjob.search import DocumentFiles

    rng = random.Random(0)
    root = Path(tempfile.mkdtemp(prefix="vecjob-snippet-lookup-"))
    files = [str(root / f"part-{f:04d}.parquet") for f in range(args.files)]
    for f, path in enumerate(files):
        pq.write_table(pa.table({"id": [f"doc-{f * args.rows + i:07d}" for i in range(args.rows)],
                                 "text": [" ".join(rng.choices(WORDS, k=15)) for _ in range(args.rows)]}), path)

    def lookups(documents: DocumentFiles, told: bool, n: int) -> float:
        took = []
        for _ in range(n):
            hit_files = rng.sample(range(args.files), 10)
            ids = [f"doc-{f * args.rows + rng.randrange(args.rows):07d}" for f in hit_files]
            t0 = time.perf_counter()
            found = documents.texts(ids, sorted(files[f] for f in hit_files) if told else ())
            took.append(time.perf_counter() - t0)
            assert len(found) == 10
        return statistics.median(took) * 1e3

    row = {"files": args.files, "rows_per_file": args.rows}
    for told, name in ((True, "hits' files told ms"), (False, "through the map ms")):
        documents = DocumentFiles([str(root)])
        lookups(documents, told, 2 * args.files)  # every file read once
        row[name] = [round(lookups(documents, told, args.lookups), 3) for _ in range(2)]
    print(row)
    write_json(args.out, {"row": row})


if __name__ == "__main__":
    main()
