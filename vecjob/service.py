"""Search as a service, without Ray: the requests it accepts, the index and model it answers from.

A `Snapshot` is one published index with the encoder of the model that built it (and the id map to
find a stored document's row). A request is answered from one snapshot only, so an answer never
mixes two indexes, and a text is always encoded by the index's own model: the one given, or else the
one each index records. `Snapshot.load` refuses a model whose fingerprint is not the index's: a newer
model published before its index is not used until that index is published too, and an index
published before its model (a night publishes them one after the other) waits for it.
`vecjob.ray_serve` puts this behind Ray Serve.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Annotated

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from vecjob import storage
from vecjob.config import Int, first_error
from vecjob.errors import ArtifactError, InputError, VecjobError
from vecjob.index import MANIFEST_KIND as INDEX_KIND
from vecjob.index import LoadedIndex, load_index_dir
from vecjob.outputs import MANIFEST
from vecjob.parquet_io import fingerprint, read_json, read_manifest
from vecjob.search import DocumentFiles, EncodedFrom, add_snippets, check_model_made_index, model_of_index
from vecjob.tokenizer import unicode_problem

MAX_K = 1_000
MAX_BATCH = 256
MAX_NPROBE = 1 << 20  # beyond any IVF index's lists (FAISS probes at most nlist of them)


class Query(BaseModel):
    """One search: exactly one of text, id or vector; k neighbours; nprobe overrides the index's (IVF)."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = None
    id: str | Int | None = None
    vector: list[FiniteFloat] | None = None  # a NaN or an infinity would come back as a NaN score
    k: Annotated[Int, Field(ge=1, le=MAX_K)] = 10
    nprobe: Int | None = Field(default=None, ge=1, le=MAX_NPROBE)

    @model_validator(mode="after")
    def _one_kind(self) -> "Query":
        given = [name for name in ("text", "id", "vector") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of text, id or vector (got {', '.join(given) or 'none'})")
        if self.text is not None and not self.text.strip():
            raise ValueError("text is empty")
        if self.text is not None and (problem := unicode_problem(self.text)):
            raise ValueError(f"text: {problem}")
        return self


class BatchQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[Query] = Field(min_length=1, max_length=MAX_BATCH)


class RequestError(Exception):
    """A request the service refuses: an HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse(body: bytes, model: type[BaseModel], max_bytes: int) -> BaseModel:
    """Raw request body → a validated request, or a RequestError (413, 400, 422) naming the problem."""
    if len(body) > max_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes, over the limit of {max_bytes}")
    try:
        raw = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise RequestError(400, "request body is not valid JSON (nested too deeply)") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise RequestError(422, first_error(exc)) from None


UNREADABLE_TEXTS = (VecjobError, OSError, pl.exceptions.PolarsError, pa.ArrowException)


def with_snippets(result: dict, documents: DocumentFiles, snapshot: "Snapshot") -> dict:
    """Give the answer's hits their snippets from `documents`, looked for first in the files the
    snapshot's index says their vectors were encoded from. Snippets are an extra: texts that cannot
    be read now (moved, or rewritten in another form since the service started) leave the hits without
    them and say why in `snippet_error`, instead of failing every search."""
    files_of = snapshot.encoded_from or (lambda ids: [])
    try:
        add_snippets(result["hits"], lambda ids: documents.texts(ids, files_of(ids)))
    except UNREADABLE_TEXTS as exc:
        result["snippet_error"] = str(exc).strip().splitlines()[0]
    return result


def generation(manifest: dict) -> str:
    """What tells two published indexes apart: a hash of the index manifest (each build's differs)."""
    return fingerprint(manifest)[:16]


@dataclass
class Snapshot:
    index_dir: str
    index: LoadedIndex
    encoder: object | None  # DocumentEncoder of the index's model; None: text queries are refused
    loaded_at: float
    model_dir: str | None = None  # where the encoder's model was read (--model, or the index's record)
    no_text_queries: str = ""  # why there is no encoder
    encoded_from: EncodedFrom | None = None  # the file each vector was encoded from: where snippets are read

    @cached_property
    def generation(self) -> str:  # every answer names it: hashed once, not per request
        return generation(self.index.manifest)

    @classmethod
    def load(cls, index_dir: str | Path, model_dir: str | Path | None, must_encode: bool = False,
             snippets: bool = False) -> "Snapshot":
        """The index at `index_dir` with the encoder of `model_dir`, or else of the model the index
        records, when that one is there and made it. Without one, text queries are refused, saying
        why; or, `must_encode` (a replica that encodes them now, polling for a newer index), the load
        fails, to be tried again at the next poll. `snippets`: also which file each vector was encoded
        from (the vectors' manifest read, the ids sorted), for a service given the texts."""
        if model_dir is not None:  # cheap checks first: a poll may find a model still waiting for its index
            check_model_made_index(model_dir, read_manifest(index_dir, INDEX_KIND))
        elif must_encode and (why := model_of_index(read_manifest(index_dir, INDEX_KIND))[1]):
            raise ArtifactError(why)
        index = load_index_dir(index_dir)
        why = ""
        if model_dir is not None:
            check_model_made_index(model_dir, index.manifest)
        else:
            model_dir, why = model_of_index(index.manifest)
            if why and must_encode:
                raise ArtifactError(why)
        index.slot_of_id  # built now, not by the first query
        return cls(str(index_dir), index, None, time.time(), no_text_queries=why,
                   encoded_from=EncodedFrom(index) if snippets else None).with_encoder(model_dir)

    def with_encoder(self, model_dir: str | Path | None) -> "Snapshot":
        if model_dir is None:
            return self
        from vecjob.encoder import DocumentEncoder

        return replace(self, encoder=DocumentEncoder(model_dir, device="cpu", threads=1), model_dir=str(model_dir),
                       no_text_queries="")

    def with_recorded_model(self) -> "Snapshot":
        """This snapshot, given the model its index records once that model is there (a service started
        between a night's index and its model, or before the index's model was copied to where the
        index says); itself while it is not."""
        if self.encoder is not None:
            return self
        return self.with_encoder(model_of_index(self.index.manifest)[0])

    def is_current(self) -> bool:
        """Whether the index dir still holds the generation this snapshot loaded."""
        try:
            manifest = read_json(storage.join(self.index_dir, MANIFEST))
        except (OSError, VecjobError):
            return True  # mid-swap or unreadable: keep serving what is loaded
        return generation(manifest) == self.generation

    def info(self) -> dict:
        m = self.index.manifest
        return {
            "generation": self.generation, "index_dir": self.index_dir, "model_fingerprint": m.get("model_fingerprint"),
            "ntotal": m["ntotal"], "dim": m["dim"], "factory": m["factory"], "metric": m["metric"],
            "recall_at_10": m.get("recall_at_10"), "built": m.get("created"), "text_queries": self.encoder is not None,
            "model_dir": self.model_dir, "text_queries_refused": self.no_text_queries or None,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.loaded_at)),
        }

    def stored_vector(self, doc_id: str | int) -> np.ndarray:
        try:
            return self.index.stored_vector(doc_id)
        except InputError as exc:
            raise RequestError(404, f"no document with id {doc_id!r} in the index") from exc

    def query_vector(self, query: Query, encoded: np.ndarray | None = None) -> np.ndarray:
        if query.vector is not None:
            if len(query.vector) != self.index.manifest["dim"]:
                raise RequestError(422, f"vector has {len(query.vector)} numbers, the index holds dim "
                                        f"{self.index.manifest['dim']}")
            vector = np.asarray(query.vector, dtype=np.float32)
            if not np.isfinite(vector).all():
                raise RequestError(422, "vector holds NaN or infinite numbers")
            if self.index.manifest["metric"] == "cosine" and not vector.any():  # every score would be 0: no order
                raise RequestError(422, "vector is all zeros, which has no direction to compare by cosine")
            return vector
        if query.id is not None:
            return self.stored_vector(query.id)
        if encoded is None:
            raise self.refusal()
        return encoded

    def refusal(self) -> RequestError:
        return RequestError(422, f"this service cannot encode text queries: {self.no_text_queries}")

    def encode(self, texts: list[str]) -> list[np.ndarray | RequestError]:
        """One forward pass for many texts; each gets its vector, or the error that refuses it alone."""
        if self.encoder is None:
            return [self.refusal()] * len(texts)
        batch = self.encoder.encode_texts(texts)
        return [v if known else RequestError(422, "the query text has no word the model knows")
                for v, known in zip(batch.vectors, batch.known)]

    def search(self, query: Query, vector: np.ndarray) -> dict:
        try:
            ids, scores = self.index.search(vector[None, :], query.k, nprobe=query.nprobe)
        except InputError as exc:
            raise RequestError(422, str(exc)) from None
        hits = [{"rank": r + 1, "id": i, "score": float(s)} for r, (i, s) in enumerate(zip(ids[0], scores[0]))]
        return {"generation": self.generation, "hits": hits}
