"""Similarity search: a query (text encoded by the model, or a stored document's vector) → top-k."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from vecjob.errors import ArtifactError, InputError, quoted
from vecjob.index import LoadedIndex, load_index_dir
from vecjob.parquet_io import collect_scanned, scan_by_id


def query_vector(index: LoadedIndex, *, text: str | None, doc_id: str | None, model_dir: str | Path | None):
    if (text is None) == (doc_id is None):
        raise InputError("give exactly one of --text or --id")
    if doc_id is not None:
        return index.stored_vector(doc_id)
    if model_dir is None:
        raise InputError("--text needs --model to encode the query")
    # Imported here: a search by id answers without loading torch.
    from vecjob.encoder import DocumentEncoder

    check_model_made_index(model_dir, index.manifest)
    encoder = DocumentEncoder(model_dir, device="cpu")
    encoded = encoder.encode_texts([text])
    if not encoded.ok[0]:
        raise InputError("the query text is empty")
    if not encoded.known[0]:
        raise InputError(f"--text {quoted(text)}: no word of it is in the model's vocabulary (its vector would match "
                         "nothing in particular)")
    return encoded.vectors[0]


def check_model_made_index(model_dir: str | Path, index_manifest: dict) -> None:
    """A query is encoded only by the model whose vectors the index holds (read without torch)."""
    from vecjob.model_dir import read_model_info

    made_by = str(index_manifest.get("model_fingerprint"))
    info = read_model_info(model_dir)
    if info.fingerprint != made_by:
        raise ArtifactError(f"{model_dir}: this model (fingerprint {info.fingerprint[:12]}) did not make the "
                            f"index's vectors ({made_by[:12]})")


def check_search_pair(index_dir: str | Path, model_dir: str | Path | None, data: list[str] | None = None) -> None:
    """Refuse, before anything starts, an index that cannot be loaded, a model that did not make it,
    or texts (`data`) without the columns or the id type the hits' snippets are read by."""
    index = load_index_dir(index_dir)
    if model_dir is not None:
        check_model_made_index(model_dir, index.manifest)
    if data:
        scan_by_id(data, "id", {"text": "text"}, pl.from_arrow(index.labels.column("id").slice(0, 0)).dtype)


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
    try:
        vector = query_vector(index, text=text, doc_id=doc_id, model_dir=model_dir)
    except ArtifactError:
        if text is None:
            raise
        # A nightly run publishes a retrained model right after the index made with it: a search that
        # read the new index and the old model in between tries once more with a fresh read.
        time.sleep(0.5)
        index = load_index_dir(index_dir)
        vector = query_vector(index, text=text, doc_id=doc_id, model_dir=model_dir)
    ids, scores = index.search(vector[None, :], k)
    hits = [
        {"rank": r + 1, "id": i, "score": float(s)} for r, (i, s) in enumerate(zip(ids[0], scores[0]))
    ]
    if data:
        add_snippets(hits, data, id_col, text_col, snippet_chars)
    return hits


def add_snippets(hits: list[dict], data: list[str], id_col: str = "id", text_col: str = "text",
                 snippet_chars: int = 160) -> None:
    """Give each hit the start of its document's text, one line, from the Parquet collection."""
    texts = lookup_texts(data, [h["id"] for h in hits], id_col, text_col)
    for h in hits:
        snippet = " ".join((texts.get(h["id"]) or "").split())
        h["snippet"] = snippet[:snippet_chars] + ("…" if len(snippet) > snippet_chars else "")


def lookup_texts(data: list[str], ids: list, id_col: str, text_col: str) -> dict:
    """Texts of the given ids, read lazily from the Parquet collection (only the matching rows)."""
    wanted = pl.Series(ids)
    frame = scan_by_id(data, id_col, {"text": text_col}, wanted.dtype).filter(pl.col("id").is_in(wanted))
    frame = collect_scanned(frame, data)
    return dict(zip(frame["id"].to_list(), frame["text"].to_list()))
