"""Sentence similarity judged by people: the STS Benchmark's sentences, trained on by themselves.

    python bench/experiments/sts_benchmark.py --data DIR [--seeds 0,1,2] [--baselines tfidf,lsa,doc2vec,minilm]
                                              [--baseline-seeds 0,1,2]
                                              [--out bench/results/archive/sts-benchmark.json]

Lee's task judges whole news articles; the STS Benchmark (Cer et al., SemEval-2017; scores CC BY-SA
4.0) judges pairs of single sentences (captions, headlines, forum posts) from 0 (unrelated) to 5 (the
same meaning). It ships in no package here, so vecjob does not carry it: DIR holds its three files as
published, `sts-train.csv`, `sts-dev.csv` and `sts-test.csv` (tab-separated: genre, file, year, id,
score, sentence 1, sentence 2). The collection is every distinct sentence of the three files; vecjob
is trained on it with the default settings for each training seed, TF-IDF, LSA and Doc2Vec (for each
of --baseline-seeds) are fitted on it, all-MiniLM-L6-v2 is run on it, and each is scored on the test file's
1,379 pairs, as unsupervised sentence vectors are: the Spearman correlation of the cosine similarity
with the people's score (Pearson's beside it). The scores are never trained on; medians over the seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import RowsFile, seeds  # noqa: E402

FILES = ("sts-train.csv", "sts-dev.csv", "sts-test.csv")


def pairs(path: Path) -> pl.DataFrame:
    """score, sentence 1, sentence 2 of each line (some lines carry two more fields, their sources)."""
    if not path.is_file():
        sys.exit(f"{path}: missing; --data names the folder of the benchmark's files ({', '.join(FILES)})")
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return pl.DataFrame({"score": [float(r[4]) for r in rows], "a": [r[5] for r in rows], "b": [r[6] for r in rows]})


def cosine_of_pairs(x, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    unit = quality._dense_unit(x)
    if hasattr(unit, "toarray"):
        return np.asarray(unit[a].multiply(unit[b]).sum(axis=1)).ravel()
    return np.einsum("ij,ij->i", unit[a], unit[b])


def main() -> None:
    from scipy.stats import pearsonr, spearmanr

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="folder of the benchmark's three files")
    quality.collection_flags(ap)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "sts-benchmark.json"))
    args = ap.parse_args()
    files = [pairs(args.data / name) for name in FILES]
    sentences = pl.concat([pl.concat([f["a"], f["b"]]) for f in files]).unique(maintain_order=True).to_list()
    row_of = {s: i for i, s in enumerate(sentences)}
    test = files[-1]
    a = np.array([row_of[s] for s in test["a"]])
    b = np.array([row_of[s] for s in test["b"]])
    human = test["score"].to_numpy()
    path = quality.collection_file(pl.DataFrame({"id": np.arange(len(sentences)), "text": sentences}),
                                   "sts-sentences")
    result = RowsFile(args.out, collection=f"STS Benchmark: {len(sentences)} distinct sentences, "
                      f"scored on the test file's {test.height} pairs")

    def score(method: str, vectors, **extra) -> dict:
        sims = cosine_of_pairs(vectors, a, b)
        return result.add({"method": method, "spearman": float(spearmanr(sims, human)[0]),
                           "pearson": float(pearsonr(sims, human)[0]), **extra})

    rows = quality.score_collection(path, sentences, score, seeds(args.seeds), set(args.baselines.split(",")) - {""},
                                    seeds(args.baseline_seeds))
    result.data["medians"] = {method: m["spearman"] for method, m in quality.medians(rows, ("spearman",)).items()}
    result.write()
    print(result.data["medians"])


if __name__ == "__main__":
    main()
