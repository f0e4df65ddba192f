"""Sentiment on a small collection of short texts: a seeded sample of the tweets, trained on by itself.

    python bench/experiments/small_sentiment.py [--size 2900] [--sample-seed 123] [--seeds 0,1,2]
                                                (--seeds "": the variants only)
                                                [--variants '{"tfidf 8": {"model": {"tfidf_weight": 8.0}}}']
                                                [--out bench/results/archive/small-sentiment.json]

The quality suite's sentiment collections are 30,261 tweets and 200 review sentences; a team's own
collection of a few thousand short reviews sits between them, where LSA is hardest to beat. This
samples --size tweets (all splits, a fixed sample seed), trains vecjob on them with default settings
for each training seed (and each variant, seed 0 only), and scores vecjob, TF-IDF and LSA (also LSA on
vecjob's own tokens) with
`bench/quality.py`'s probe, 5-fold cross-validated. About 4 minutes a training run on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import quality  # noqa: E402
from common import RowsFile  # noqa: E402

SAMPLE_SEED = 123


def sample_tweets(size: int, seed: int = SAMPLE_SEED) -> pl.DataFrame:
    """The fixed sample of `size` tweets (all splits) these experiments train and score on; another
    `seed` draws another sample, to see whether a result holds beyond the one sample."""
    return pl.read_parquet(quality.DATA / "tweets_sentiment.parquet").sample(size, seed=seed, shuffle=True)


def lsa_on_vecjob_tokens(texts: list[str], longer_than: int = 0, ngrams: int = 2):
    """LSA as the suite fits it (1-2-grams, min_df 2, sublinear tf), but over the tokens vecjob's
    tokeniser cuts (punctuation and one-letter words kept) instead of scikit-learn's: what the same
    factorisation reaches from the words vecjob's model sees. `longer_than` 1 drops the one-character
    tokens (punctuation, "a", "i", digits), as scikit-learn's token pattern does; `ngrams` 1: words alone."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from vecjob.tokenizer import tokenize_column

    tokens = [[t for t in doc if len(t) > longer_than]
              for doc in tokenize_column(pl.Series(texts, dtype=pl.String)).to_list()]
    tfidf = TfidfVectorizer(tokenizer=lambda doc: doc, preprocessor=lambda doc: doc, token_pattern=None,
                            lowercase=False, ngram_range=(1, ngrams), min_df=2, sublinear_tf=True)
    return TruncatedSVD(quality.DIM, random_state=quality.SEED).fit_transform(tfidf.fit_transform(tokens))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2900)
    ap.add_argument("--sample-seed", type=int, default=SAMPLE_SEED, help="draws another sample of --size tweets")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--variants", default='{"tfidf_weight 8": {"model": {"tfidf_weight": 8.0}}}',
                    help="JSON: name → overrides, each trained with seed 0")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "small-sentiment.json"))
    args = ap.parse_args()
    df = sample_tweets(args.size, args.sample_seed)
    scratch = Path(tempfile.mkdtemp(prefix="vecjob-small-sentiment-"))
    path = scratch / f"tweets-{args.size}.parquet"
    df.write_parquet(path)
    y, texts = df["label"].to_numpy(), df["text"].to_list()
    result = RowsFile(args.out, collection=f"{args.size} tweets sampled with seed {args.sample_seed}")

    for name, fn in (("TF-IDF 1-2gram", quality.tfidf_vectors), ("LSA 128", quality.lsa_vectors),
                     ("LSA 128 on vecjob's tokens", lsa_on_vecjob_tokens),
                     ("LSA 128 on vecjob's tokens, words alone",
                      lambda t: lsa_on_vecjob_tokens(t, ngrams=1)),
                     ("LSA 128 on vecjob's tokens of 2+ characters", lambda t: lsa_on_vecjob_tokens(t, longer_than=1)),
                     ("LSA 128 on vecjob's tokens of 2+ characters, words alone",
                      lambda t: lsa_on_vecjob_tokens(t, longer_than=1, ngrams=1))):
        result.add({"method": name, "acc": quality.cv_probe(fn(texts), y)})
    runs = [("vecjob default", {}, int(s)) for s in args.seeds.split(",") if s]
    runs += [(f"vecjob {name}", overrides, 0) for name, overrides in json.loads(args.variants).items()]
    for method, overrides, seed in runs:
        encoded, info = quality.vecjob_vectors(path, scratch, "denoising", overrides, seed)
        vectors = encoded["auto"]
        result.add({"method": method, "seed": seed, "overrides": overrides, "acc": quality.cv_probe(vectors, y),
              "train_s": info["train_s"], "stop_reason": info["stop_reason"], "best_round": info["best_round"]})
    default = [r["acc"] for r in result.rows if r["method"] == "vecjob default"]
    result.data["vecjob_default_median"] = statistics.median(default) if default else None
    result.write()
    if default:
        print(f"vecjob default, median of {len(default)} seeds: {result.data['vecjob_default_median']:.3f}")


if __name__ == "__main__":
    main()
