"""The drift signal behind `train.retrain_drift` (issue 27): a vocabulary counted on one part of a
corpus (the default tokenizer settings), its unknown-token share in sample, on held-out documents of
the same part (the baseline vecjob records at training), on the corpus's next documents (a normal
night), and on another corpus (a shift). Drift = share on the new documents − held-out share.

    python bench/drift.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from common import DATA, print_table, write_json


def main() -> None:
    from vecjob.config import TokenizerConfig, TrainConfig
    from vecjob.dataset import heldout_unknown_share
    from vecjob.parquet_io import check_shards
    from vecjob.tokenizer import Tokenizer, Vocab, count_tokens, unknown_share

    corpora = {"BBC": pl.read_parquet(DATA / "bbc_news.parquet").sample(fraction=1.0, seed=0),
               "tweets": pl.read_parquet(DATA / "tweets_sentiment.parquet").sample(fraction=1.0, seed=0)}
    tok, val = TokenizerConfig(), TrainConfig().val_fraction
    rows = []
    for name, frame in corpora.items():
        other = next(o for o in corpora if o != name)
        for size in (300, len(frame) // 2):
            trained_on, nxt = frame[:size], frame[size:size * 2]
            with tempfile.TemporaryDirectory() as tmp:
                trained_on.write_parquet(Path(tmp) / "part.parquet")
                shards = check_shards(tmp, "id", "text")
                heldout = heldout_unknown_share(shards, "id", "text", tok, val)
            vocab = Vocab.from_counts(count_tokens(trained_on["text"]), tok.max_vocab, tok.min_count)
            tokenizer = Tokenizer(vocab, tok.max_len)

            def share(texts: pl.Series) -> float:
                return unknown_share(np.concatenate(tokenizer.encode(texts)))

            next_share, other_share = share(nxt["text"]), share(corpora[other]["text"][:size])
            rows.append({"trained on": f"{name} {size:,} docs", "vocab": len(vocab),
                         "in sample": share(trained_on["text"]), "held out (baseline)": heldout,
                         "next docs": next_share, "drift next": next_share - heldout,
                         "other corpus": other, "drift other": other_share - heldout})
    columns = ["trained on", "vocab", "in sample", "held out (baseline)", "next docs", "drift next",
               "other corpus", "drift other"]
    print_table("unknown-token share and drift", rows, columns)
    write_json("drift.json", {"tokenizer": tok.model_dump(), "val_fraction": val, "rows": rows})


if __name__ == "__main__":
    main()
