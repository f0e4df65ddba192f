"""Scientific abstracts by their arXiv category, trained on by themselves.

    python bench/experiments/abstracts.py --data DIR [--seeds 0,1,2] [--baselines tfidf,lsa,doc2vec,minilm]
                                          [--baseline-seeds 0,1,2]
                                          [--out bench/results/archive/abstracts.json]

The issue names scientific abstracts among the kinds of collection to measure. DIR holds
`arxiv_data.csv` as the "arXiv Paper Abstracts" data set on Kaggle publishes it (columns titles,
summaries, terms: a paper's arXiv categories as a Python list), or a sample of its rows; it ships in
no package here, so vecjob does not carry it. A paper's class is the first category it lists (its
primary one). This trains vecjob on the abstracts with the default settings for each training
seed, fits TF-IDF, LSA and Doc2Vec (for each of --baseline-seeds) on them, runs all-MiniLM-L6-v2 on
them, and scores each with `bench/quality.py`'s probe, 5-fold cross-validated, and its k-means NMI
(k = the number of classes). Medians over the seeds.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import RowsFile, seeds  # noqa: E402


def abstracts(folder: Path) -> pl.DataFrame:
    """id, text (the abstract), label (the first category listed) of each distinct abstract."""
    path = folder / "arxiv_data.csv"
    if not path.is_file():
        sys.exit(f"{path}: missing; --data names the folder of the data set's arxiv_data.csv")
    df = pl.read_csv(path).unique("summaries", keep="first", maintain_order=True)
    labels = [ast.literal_eval(terms)[0] for terms in df["terms"]]
    return pl.DataFrame({"id": range(df.height), "text": df["summaries"], "label": labels})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of the data set's arxiv_data.csv")
    quality.collection_flags(ap)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "abstracts.json"))
    args = ap.parse_args()
    df = abstracts(args.data)
    path = quality.collection_file(df, "abstracts")
    counts = dict(df["label"].value_counts(sort=True).iter_rows())
    result = RowsFile(args.out, collection=f"arXiv abstracts, {df.height} papers by first category {counts}")
    score = quality.probe_scorer(result.add, df["label"].to_numpy(), clusters=True)
    rows = quality.score_collection(path, df["text"].to_list(), score, seeds(args.seeds),
                                    set(args.baselines.split(",")) - {""}, seeds(args.baseline_seeds))
    result.data["medians"] = quality.medians(rows, ("acc", "nmi"))
    result.write()
    print(result.data["medians"])


if __name__ == "__main__":
    main()
