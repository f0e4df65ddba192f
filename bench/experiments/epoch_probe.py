"""How the vectors' scores move from epoch to epoch of one training run.

    python bench/experiments/epoch_probe.py --model MODEL_DIR --weights DIR [--corpus bbc] [--average 7-10,5-10]
                                [--out bench/results/archive/epochs-bbc.json]

Training publishes only its best epoch's weights. To score every epoch, train with the one-off patch
`bench/experiments/epoch-dump.patch` applied: while the file /tmp/exp/epoch_dump_dir exists, rank 0 saves
the weights of each epoch, as `epoch-NN.pt`, in the folder that file names. Then MODEL_DIR is the
model that run published (`bench/quality.py --keep-models`; its config and vocabulary) and DIR the
folder of epoch weights. Each epoch is scored with `bench/quality.py`'s protocol (probe accuracy and
macro-F1; on BBC also k-means NMI/ARI and precision@10), and so is the published model, last.
With --average 7-10,5-10 it scores instead the mean of those epochs' weights, for each range (weight
averaging over the last epochs, as stochastic weight averaging does, at no extra training cost).
Deterministic; about a minute an epoch on 2 cores.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from common import machine  # noqa: E402
from posthoc import scored  # noqa: E402
from probe_dims import encoder_views, model_corpus_parser, read_corpus  # noqa: E402


def averaged(epochs: dict[int, Path], span: str, folder: Path) -> Path:
    """The mean of the weights of epochs LO..HI (span "LO-HI"), saved in folder; returns its path."""
    lo, hi = (int(e) for e in span.split("-"))
    missing = [e for e in range(lo, hi + 1) if e not in epochs]
    if missing:
        sys.exit(f"--average {span}: no weights for epochs {missing}")
    states = [torch.load(epochs[e], map_location="cpu", weights_only=True) for e in range(lo, hi + 1)]
    mean = {k: (sum(s[k].double() for s in states) / len(states)).to(states[0][k].dtype) for k in states[0]}
    path = folder / f"mean-{lo}-{hi}.pt"
    torch.save(mean, path)
    return path


def main() -> None:
    ap = model_corpus_parser(__doc__.split("\n")[0], default_corpus="bbc")
    ap.add_argument("--weights", required=True, help="a folder of epoch-NN.pt state dicts")
    ap.add_argument("--average", default="", help="epoch ranges, e.g. 7-10,5-10: score their mean weights")
    args = ap.parse_args()
    df = read_corpus(args.corpus)
    epochs = {int(p.stem.removeprefix("epoch-")): p for p in Path(args.weights).glob("epoch-*.pt")}
    if not epochs:
        sys.exit(f"no epoch-NN.pt files in {args.weights}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.average:
            runs = [(f"mean {span}", averaged(epochs, span, Path(tmp))) for span in args.average.split(",")]
        else:
            runs = [(f"{n:02d}", epochs[n]) for n in sorted(epochs)] + [("published", None)]
        rows = [scored(name, df, encoder_views(args.model, df["text"], weights)[0], args.corpus == "bbc",
                       key="epoch") for name, weights in runs]
    out = Path(args.out or REPO / "bench" / "results" / "archive" / f"epochs-{args.corpus}.json")
    payload = {"rows": rows, "model": args.model, "weights": args.weights,
               "command": " ".join(sys.argv), "machine": machine()}
    out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
