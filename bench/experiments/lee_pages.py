"""Similarity judged by people, on pages: Lee's 350 news articles inside a web page's boilerplate.

    python bench/experiments/lee_pages.py [--seeds 0,1,2] [--out bench/results/archive/lee-pages.json]

Cosine similarity, which the Lee task scores, sees what every document shares more than a probe does.
This wraps each of Lee's articles in the header and footer of `headlines.py --part page`, trains vecjob
on those pages with the default settings for each training seed, fits TF-IDF and LSA (for the same
seeds of its SVD) on the same pages, and scores each with `bench/quality.py`'s Lee task: the Pearson
correlation of cosine similarities with the mean human similarity of the 1,225 pairs of its 50 judged
articles. Medians over the seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "bench" / "experiments"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import RowsFile, seeds  # noqa: E402
from headlines import cut  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="vecjob's training seeds, and LSA's SVD's")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "lee-pages.json"))
    args = ap.parse_args()
    lee = quality.gensim_collections()["lee"]
    pages = lee.with_columns(text=pl.Series([cut(t, "page", i) for i, t in enumerate(lee["text"].to_list())]))
    path = quality.collection_file(pages, "lee-pages")
    judged = np.flatnonzero(pages["judged"].to_numpy())
    result = RowsFile(args.out, collection="Lee's 350 articles, each inside the same page header and footer")

    def score(method: str, vectors, **extra) -> dict:
        r = quality.human_similarity_pearson(vectors, judged, quality.LEE_HUMAN)
        return result.add({"method": method, "lee_pearson": r, **extra})

    rows = quality.score_collection(path, pages["text"].to_list(), score, seeds(args.seeds), {"tfidf", "lsa"},
                                    seeds(args.seeds))
    result.data["medians"] = {method: m["lee_pearson"] for method, m in quality.medians(rows, ("lee_pearson",)).items()
                              if method != "TF-IDF 1-2gram"}
    result.write()
    print(result.data["medians"])


if __name__ == "__main__":
    main()
