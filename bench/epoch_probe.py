"""How the vectors' scores move from epoch to epoch of one training run.

    python bench/epoch_probe.py --model MODEL_DIR --weights DIR [--corpus bbc]
                                [--out bench/results/epochs-bbc.json]

Training publishes only its best epoch's weights. To score every epoch, train with the one-off patch
`bench/results/epoch-dump.patch` applied: while the file /tmp/exp/epoch_dump_dir exists, rank 0 saves
the weights of each epoch, as `epoch-NN.pt`, in the folder that file names. Then MODEL_DIR is the
model that run published (`bench/quality.py --keep-models`; its config and vocabulary) and DIR the
folder of epoch weights. Each epoch is scored with `bench/quality.py`'s protocol (probe accuracy and
macro-F1; on BBC also k-means NMI/ARI and precision@10), and so is the published model, last.
Deterministic; about a minute an epoch on 2 cores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from common import machine  # noqa: E402
from posthoc import scored  # noqa: E402
from probe_dims import encoder_views, model_corpus_parser, read_corpus  # noqa: E402


def main() -> None:
    ap = model_corpus_parser(__doc__.split("\n")[0], default_corpus="bbc")
    ap.add_argument("--weights", required=True, help="a folder of epoch-NN.pt state dicts")
    args = ap.parse_args()
    df = read_corpus(args.corpus)
    epochs = sorted(Path(args.weights).glob("epoch-*.pt"))
    if not epochs:
        sys.exit(f"no epoch-NN.pt files in {args.weights}")
    rows = []
    for weights in [*epochs, None]:
        z, _ = encoder_views(args.model, df["text"], weights)
        name = weights.stem.removeprefix("epoch-") if weights else "published"
        rows.append(scored(name, df, z, args.corpus == "bbc", key="epoch"))
    out = Path(args.out or REPO / "bench" / "results" / f"epochs-{args.corpus}.json")
    payload = {"rows": rows, "model": args.model, "weights": args.weights,
               "command": " ".join(sys.argv), "machine": machine()}
    out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
