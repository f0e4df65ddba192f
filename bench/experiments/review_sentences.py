"""Sentiment of short review sentences: UCI's "Sentiment Labelled Sentences", trained on by itself.

    python bench/experiments/review_sentences.py --data DIR [--seeds 0,1,2] [--baselines tfidf,lsa,doc2vec,minilm]
                                                 [--baseline-seeds 0,1,2]
                                                 [--out bench/results/archive/review-sentences.json]

The kind of collection issue 23 measured vecjob losing on (about 2,900 short review sentences: vecjob
0.70, LSA 0.77, TF-IDF 0.81 at filing). Kotzias et al.'s 3,000 sentences (UCI Machine Learning
Repository, CC BY 4.0), 1,000 each from Amazon, Yelp and IMDb reviews, half positive, half negative.
They ship in no package here, so vecjob does not carry them: DIR holds the data set's three files
as published, `amazon_cells_labelled.txt`, `yelp_labelled.txt` and `imdb_labelled.txt` (a sentence,
a tab, 0 or 1 on each line). This trains vecjob on the 3,000 sentences with the default settings for
each training seed, fits TF-IDF, LSA and Doc2Vec (for each of --baseline-seeds) on the same
sentences, runs all-MiniLM-L6-v2 on them, and scores each with `bench/quality.py`'s probe, 5-fold
cross-validated. Medians over the seeds. The sentences were never used to choose a setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import RowsFile, seeds  # noqa: E402

SOURCES = ("amazon_cells_labelled.txt", "yelp_labelled.txt", "imdb_labelled.txt")


def review_sentences(folder: Path) -> pl.DataFrame:
    """The data set's sentences in file order: id, text, label, source. A line that is not a sentence,
    a tab and 0 or 1 (a header some copies add) is skipped."""
    rows = []
    for name in SOURCES:
        path = folder / name
        if not path.is_file():
            sys.exit(f"{path}: missing; --data names the folder of the data set's three files ({', '.join(SOURCES)})")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            text, _, label = line.rpartition("\t")
            if text.strip() and label.strip() in ("0", "1"):
                rows.append((len(rows), text.strip(), label.strip(), name.split("_")[0]))
    return pl.DataFrame(rows, schema=["id", "text", "label", "source"], orient="row")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of the data set's three files")
    quality.collection_flags(ap)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "review-sentences.json"))
    args = ap.parse_args()
    df = review_sentences(args.data)
    path = quality.collection_file(df, "review-sentences")
    result = RowsFile(args.out, collection=f"UCI Sentiment Labelled Sentences, {df.height} sentences")
    score = quality.probe_scorer(result.add, df["label"].to_numpy())
    rows = quality.score_collection(path, df["text"].to_list(), score, seeds(args.seeds),
                                    set(args.baselines.split(",")) - {""}, seeds(args.baseline_seeds))
    result.data["medians"] = {method: m["acc"] for method, m in quality.medians(rows, ("acc",)).items()}
    result.write()
    print(result.data["medians"])


if __name__ == "__main__":
    main()
