"""Does weighing a document's chunks by their words' idf, instead of their length, help its vector?

    python bench/experiments/chunk_weights.py --data TEXTS.parquet --models MODEL_DIR [MODEL_DIR …]
                                              [--out bench/results/archive/chunk-weights.json]

A document's vector is the length-weighted mean of its chunks' vectors (`vecjob.encoder.document_means`).
In a collection of web pages every document also holds the same header and footer, whose chunks say
nothing of it; weighing each chunk by the summed idf of its tokens (idf over the collection's
documents, scikit-learn's smoothed form, as the TF-IDF head's) gives those chunks less say. For each
model (trained on TEXTS, e.g. by `headlines.py --part page`, whose scratch folder keeps both), the
documents are encoded once and their chunk vectors averaged three ways: by length, by summed idf, and
by summed idf − 1 (a word in every document then weighs nothing), each scored with `headlines.py`'s
5-fold probe and k-means NMI. Deterministic; a few minutes a model on 2 cores.
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

from common import RowsFile  # noqa: E402
from headlines import scores  # noqa: E402

from vecjob.chunks import ChunkSet, equal_length_batches  # noqa: E402
from vecjob.encoder import AUTO_BATCH_CPU, DocumentEncoder, document_means  # noqa: E402
from vecjob.tokenizer import EOS, document_chunks  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "archive" / "chunk-weights.json"))
    args = ap.parse_args()
    df = pl.read_parquet(args.data)
    y = df["label"].to_numpy()
    result = RowsFile(args.out, data=args.data)
    for model in args.models:
        encoder = DocumentEncoder(model, device="cpu", precision="fp32")
        docs = encoder.loaded.tokenizer.encode(df["text"])
        doc_freq = np.bincount(np.concatenate([np.unique(d) for d in docs]), minlength=len(encoder.loaded.vocab))
        idf = np.log((1.0 + len(docs)) / (1.0 + doc_freq)) + 1.0
        idf[: EOS + 1] = 0.0
        chunks, owner = document_chunks(encoder.loaded.tokenizer, docs)
        data = ChunkSet.from_chunks(chunks)
        chunk_vecs = np.empty((len(data), encoder.dim), np.float32)
        for idx in equal_length_batches(data.lengths, AUTO_BATCH_CPU):
            chunk_vecs[idx] = encoder.loaded.model.embed(data.collate(idx)).numpy()
        weights = {"length": data.lengths.astype(np.float64),
                   "idf": np.array([idf[c].sum() for c in chunks]),
                   "idf - 1": np.array([(idf[c] - 1.0).sum() for c in chunks])}
        for name, w in weights.items():
            result.add({"model": model, "weights": name,
                        **scores(document_means(chunk_vecs, np.maximum(w, 1e-6), owner, len(docs)), y)})


if __name__ == "__main__":
    main()
