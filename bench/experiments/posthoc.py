"""Do post-hoc transforms of a trained model's document vectors help the probe or the clusters?

    python bench/experiments/posthoc.py --model MODEL_DIR --corpus bbc [--out bench/results/archive/posthoc-bbc.json]

MODEL_DIR is a vecjob model trained on the corpus (`bench/quality.py --keep-models DIR` keeps them).
Rows, each scored with `bench/quality.py`'s protocol (probe accuracy and macro-F1; on BBC also
k-means NMI/ARI and precision@10): the vectors as `vecjob encode` writes them; L2-normalised; PCA-
whitened with the eigenvalues raised to -power/2 (power 0.5 and 1: the usual fix for anisotropic
embeddings), with and without L2 normalisation after. Deterministic; a minute or two on 2 cores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from common import machine  # noqa: E402
from probe_dims import encoder_views, model_corpus_parser, read_corpus  # noqa: E402
from quality import cluster_scores, precision_at_10, split_probe  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def whitened(x: np.ndarray, eigenvalues: np.ndarray, axes: np.ndarray, power: float) -> np.ndarray:
    """Rotate onto the principal axes and scale each by eigenvalue^(-power/2): power 1 = full whitening."""
    return ((x - x.mean(0)) @ (axes / eigenvalues[None, :] ** (power / 2))).astype(np.float32)


def scored(name: str, df: pl.DataFrame, x: np.ndarray, with_clusters: bool, key: str = "transform") -> dict:
    """`quality.py`'s probe (and on BBC its clusters and neighbours) for one set of vectors, printed."""
    p = split_probe(df, x)
    row = {key: name, "acc": p["acc"], "macro_f1": p["macro_f1"], "C": p["C"]}
    if with_clusters:
        labels = df["label"].to_numpy()
        row |= cluster_scores(x, labels) | {"p_at_10": precision_at_10(x, labels)}
    print(f"{name:<22} " + "  ".join(f"{k}={v:.3g}" for k, v in row.items() if k != key), flush=True)
    return row


def main() -> None:
    args = model_corpus_parser(__doc__.split("\n")[0], default_corpus="bbc").parse_args()
    df = read_corpus(args.corpus)
    z, _ = encoder_views(args.model, df["text"])
    bbc = args.corpus == "bbc"
    eigenvalues, axes = np.linalg.eigh(np.cov(z.T.astype(np.float64)))
    rows = [scored("as encoded", df, z, bbc), scored("L2-normalised", df, unit(z), bbc)]
    for power in (0.5, 1.0):
        w = whitened(z, eigenvalues, axes, power)
        rows.append(scored(f"whitened^{power}", df, w, bbc))
        rows.append(scored(f"whitened^{power} + L2", df, unit(w), bbc))
    out = Path(args.out or REPO / "bench" / "results" / "archive" / f"posthoc-{args.corpus}.json")
    variance = eigenvalues[::-1]  # eigh returns them in ascending order
    dims_99 = int(np.searchsorted(np.cumsum(variance) / variance.sum(), 0.99) + 1)
    print(f"{dims_99} of the {z.shape[1]} principal directions hold 99% of the vectors' variance")
    payload = {"rows": rows, "dims_for_99pct_variance": dims_99, "model": args.model,
               "command": " ".join(sys.argv), "machine": machine()}
    out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
