"""Where a linear probe's score comes from: the vector's dimension or what the model put in it.

    python bench/experiments/probe_dims.py --model MODEL_DIR [--corpus tweets] [--dims 128,256,512]
                               [--out bench/results/archive/probe-dims-tweets.json]

MODEL_DIR is a vecjob model trained on the corpus (`bench/quality.py --keep-models DIR` keeps them).
Rows, every one scored by `bench/quality.py`'s probe (standardised features → logistic regression, C
by 3-fold CV on the train split), with macro-F1 and per-class F1 on the test split:
  - LSA (TF-IDF 1-2-grams → SVD) at each of --dims;
  - the model's document vectors (its bottleneck z, `dim` wide);
  - the encoder's pooled states, the input of the linear layer that makes z (2 × 2 × hidden wide for
    the default bidirectional mean+max pooling), and their top principal components at each of --dims
    below that width. Documents longer than one chunk take the length-weighted mean of their chunks,
    as `vecjob encode` does for z.
Deterministic (fixed seeds); about two minutes for the tweets on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from common import machine  # noqa: E402
from quality import DATA, SEED, split_probe, tfidf_vectors  # noqa: E402

FILES = {"bbc": DATA / "bbc_news.parquet", "tweets": DATA / "tweets_sentiment.parquet"}


def encoder_views(
    model_dir: str, texts: pl.Series, weights: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(z, pooled encoder states) per document, in document order; z as `vecjob encode` writes it.
    One pass: a hook on the layer that makes z catches its input, the pooled states.
    `weights`: a state dict to encode with instead of the model dir's own (same config and vocabulary),
    centred on these texts' chunks (the model dir's centre is the training chunks')."""
    from vecjob.encoder import AUTO_BATCH_CPU, document_means
    from vecjob.model_dir import load_model_dir
    from vecjob.tokenizer import document_chunks
    from vecjob.chunks import ChunkSet, equal_length_batches
    from vecjob.training import set_center

    torch.set_num_threads(1)
    loaded = load_model_dir(model_dir)
    docs = loaded.tokenizer.encode(texts)
    chunks, owner = document_chunks(loaded.tokenizer, docs)
    data = ChunkSet.from_chunks(chunks)
    model = loaded.model
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        set_center(model, data)
    captured: list[torch.Tensor] = []
    hook = model.to_z.register_forward_hook(lambda _module, inputs, _out: captured.append(inputs[0]))
    z = np.empty((len(data), model.to_z.out_features), dtype=np.float32)
    pooled = np.empty((len(data), model.to_z.in_features), dtype=np.float32)
    for idx in equal_length_batches(data.lengths, AUTO_BATCH_CPU):
        z[idx] = model.embed(data.collate(idx)).numpy()
        pooled[idx] = captured.pop().numpy()
    hook.remove()
    return (document_means(z, data.lengths, owner, len(docs)),
            document_means(pooled, data.lengths, owner, len(docs)))


def scored(name: str, dim: int, df: pl.DataFrame, x) -> dict:
    p = split_probe(df, x)
    row = {"features": name, "dim": dim, "acc": p["acc"], "macro_f1": p["macro_f1"], "C": p["C"],
           **{f"f1_{label}": f for label, f in p["f1_per_class"].items()}}
    print(f"{name:<34} {dim:>5}  acc={row['acc']:.3f}  macro-F1={row['macro_f1']:.3f}  "
          + "  ".join(f"{label}={f:.3f}" for label, f in p["f1_per_class"].items()), flush=True)
    return row


def model_corpus_parser(description: str, default_corpus: str) -> argparse.ArgumentParser:
    """The arguments of the scripts that score one trained model's vectors on one corpus."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", required=True, help="a vecjob model dir trained on the corpus")
    ap.add_argument("--corpus", default=default_corpus, choices=sorted(FILES))
    ap.add_argument("--out", default="")
    return ap


def read_corpus(corpus: str) -> pl.DataFrame:
    if not FILES[corpus].exists():
        sys.exit(f"shared data not found at {DATA}")
    return pl.read_parquet(FILES[corpus])


def main() -> None:
    from sklearn.decomposition import PCA, TruncatedSVD

    ap = model_corpus_parser(__doc__.split("\n")[0], default_corpus="tweets")
    ap.add_argument("--dims", default="128,256,512")
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    df = read_corpus(args.corpus)
    rows = []
    tfidf = tfidf_vectors(df["text"].to_list())
    for d in dims:
        rows.append(scored("LSA", d, df, TruncatedSVD(d, random_state=SEED).fit_transform(tfidf)))
    z, pooled = encoder_views(args.model, df["text"])
    rows.append(scored("vecjob vector (bottleneck z)", z.shape[1], df, z))
    rows.append(scored("vecjob pooled encoder states", pooled.shape[1], df, pooled))
    for d in (d for d in dims if d < pooled.shape[1]):
        rows.append(scored("  their top principal components", d, df,
                           PCA(d, random_state=SEED).fit_transform(pooled)))
    out = Path(args.out or REPO / "bench" / "results" / "archive" / f"probe-dims-{args.corpus}.json")
    payload = {"rows": rows, "model": args.model, "command": " ".join(sys.argv), "machine": machine()}
    out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
