"""Sentence similarity judged by people: the STS Benchmark's sentences, trained on by themselves.

    python bench/experiments/sts_benchmark.py --data DIR [--seeds 0,1,2] [--baselines tfidf,lsa,minilm]
                                              [--out bench/results/archive/sts-benchmark.json]

Lee's task judges whole news articles; the STS Benchmark (Cer et al., SemEval-2017; scores CC BY-SA
4.0) judges pairs of single sentences (captions, headlines, forum posts) from 0 (unrelated) to 5 (the
same meaning). It ships in no package here, so vecjob does not carry it: DIR holds its three files as
published, `sts-train.csv`, `sts-dev.csv` and `sts-test.csv` (tab-separated: genre, file, year, id,
score, sentence 1, sentence 2). The collection is every distinct sentence of the three files; vecjob
is trained on it with the default settings for each training seed, TF-IDF and LSA (for the same seeds
of its SVD) are fitted on it, all-MiniLM-L6-v2 is run on it, and each is scored on the test file's
1,379 pairs, as unsupervised sentence vectors are: the Spearman correlation of the cosine similarity
with the people's score (Pearson's beside it). The scores are never trained on; medians over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import RowsFile  # noqa: E402

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
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--baselines", default="tfidf,lsa,minilm")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "sts-benchmark.json"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    baselines = set(args.baselines.split(",")) - {""}
    files = [pairs(args.data / name) for name in FILES]
    sentences = pl.concat([pl.concat([f["a"], f["b"]]) for f in files]).unique(maintain_order=True).to_list()
    row_of = {s: i for i, s in enumerate(sentences)}
    test = files[-1]
    a = np.array([row_of[s] for s in test["a"]])
    b = np.array([row_of[s] for s in test["b"]])
    human = test["score"].to_numpy()
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-sts-"))
    path = scratch / "sts-sentences.parquet"
    pl.DataFrame({"id": np.arange(len(sentences)), "text": sentences}).write_parquet(path)
    result = RowsFile(args.out, collection=f"STS Benchmark: {len(sentences)} distinct sentences, "
                      f"scored on the test file's {test.height} pairs")

    def score(method: str, vectors, **extra) -> float:
        sims = cosine_of_pairs(vectors, a, b)
        return result.add({"method": method, "spearman": float(spearmanr(sims, human)[0]),
                           "pearson": float(pearsonr(sims, human)[0]), **extra})["spearman"]

    scores: dict[str, list[float]] = {}
    if "tfidf" in baselines:
        scores["TF-IDF 1-2gram"] = [score("TF-IDF 1-2gram", quality.tfidf_vectors(sentences))]
    if "lsa" in baselines:
        scores["LSA 128"] = [score("LSA 128", quality.lsa_vectors(sentences, seed), seed=seed) for seed in seeds]
    if "minilm" in baselines:
        scores["all-MiniLM-L6-v2"] = [score("all-MiniLM-L6-v2", quality.minilm_vectors(sentences))]
    for seed in seeds:
        encoded, info = quality.vecjob_vectors(path, scratch, "denoising", {}, seed)
        scores.setdefault("vecjob default", []).append(
            score("vecjob default", encoded["auto"], seed=seed, train_s=info["train_s"],
                  stop_reason=info["stop_reason"], best_round=info["best_round"]))
    result.data["medians"] = {name: statistics.median(s) for name, s in scores.items()}
    result.write()
    print(result.data["medians"])


if __name__ == "__main__":
    main()
