"""Similarity search: a query (text encoded by the model, or a stored document's vector) → top-k."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from vecjob.errors import ArtifactError, InputError
from vecjob.index import LoadedIndex, load_index_dir
from vecjob.parquet_io import discover
from vecjob.vectors import VectorsDir


def query_vector(index: LoadedIndex, *, text: str | None, doc_id: str | None, model_dir: str | Path | None):
    if (text is None) == (doc_id is None):
        raise InputError("give exactly one of --text or --id")
    if doc_id is not None:
        vdir = VectorsDir.open(index.manifest["vectors_dir"])
        if vdir.manifest.get("vectors_fingerprint") != index.manifest.get("vectors_fingerprint"):
            raise ArtifactError(
                f"{vdir.path}: the vectors changed since the index was built from them; rebuild the index "
                "(vecjob index, or vecjob run)"
            )
        return vdir.vector_for_id(doc_id)
    if model_dir is None:
        raise InputError("--text needs --model to encode the query")
    # Imported here: a search by id answers without loading torch.
    from vecjob.encoder import DocumentEncoder

    encoder = DocumentEncoder(model_dir, device="cpu")
    if encoder.loaded.fingerprint != index.manifest.get("model_fingerprint"):
        raise ArtifactError(
            f"{model_dir}: this model (fingerprint {encoder.loaded.fingerprint[:12]}) did not make the "
            f"index's vectors ({str(index.manifest.get('model_fingerprint'))[:12]})"
        )
    encoded = encoder.encode_texts([text])
    if not encoded.ok[0]:
        raise InputError("the query text is empty")
    return encoded.vectors[0]


def search(
    index_dir: str | Path,
    *,
    text: str | None = None,
    doc_id: str | None = None,
    model_dir: str | Path | None = None,
    k: int = 10,
    data: list[str] | None = None,
    id_col: str = "id",
    text_col: str = "text",
    snippet_chars: int = 160,
) -> list[dict]:
    """Top-k hits as dicts: rank, id, score (and snippet when `data` gives the texts)."""
    if k < 1:
        raise InputError(f"-k must be at least 1, not {k}")
    index = load_index_dir(index_dir)
    vector = query_vector(index, text=text, doc_id=doc_id, model_dir=model_dir)
    ids, scores = index.search(vector[None, :], k)
    hits = [
        {"rank": r + 1, "id": i, "score": float(s)} for r, (i, s) in enumerate(zip(ids[0], scores[0]))
    ]
    if data:
        texts = lookup_texts(data, [h["id"] for h in hits], id_col, text_col)
        for h in hits:
            snippet = " ".join((texts.get(h["id"]) or "").split())
            h["snippet"] = snippet[:snippet_chars] + ("…" if len(snippet) > snippet_chars else "")
    return hits


def lookup_texts(data: list[str], ids: list, id_col: str, text_col: str) -> dict:
    """Texts of the given ids, read lazily from the Parquet collection (only the matching rows)."""
    frame = (
        pl.scan_parquet(discover(data))
        .select([pl.col(id_col).alias("id"), pl.col(text_col).alias("text")])
        .filter(pl.col("id").is_in(ids))
        .collect()
    )
    return dict(zip(frame["id"].to_list(), frame["text"].to_list()))
