"""The encoder: a batch of texts → document vectors. Model loaded once; callable on a batch dict.

Documents are cut into chunks of the model's max length; the chunks are batched by length (no
padding), run through the LSTM encoder under inference_mode (its recurrence in bfloat16 on a CPU that
computes it natively: `resolve_precision`), and each document's vector is the length-weighted mean of
its chunks' vectors. Null or blank texts are flagged, not encoded.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from vecjob.chunks import ChunkSet, equal_length_batches
from vecjob.errors import ConfigError, InputError
from vecjob.model_dir import LoadedModel, load_model_dir
from vecjob.tokenizer import UNK, document_chunks

# Chunks per forward pass when the config says 0: on CPU, batches over ~128 chunks of 64 tokens
# push the LSTM's working set out of the cache (bench/README.md); a GPU wants large batches.
AUTO_BATCH_CPU = 128
AUTO_BATCH_GPU = 2048
# oneDNN keeps a compiled LSTM primitive per batch shape, up to 1,024 of them by default; equal-length
# batches come in many shapes, and the cache alone grew each encoder process by 0.15-0.3 GB. Sixteen
# entries hold every shape in use at once (batches are visited length by length).
ONEDNN_CACHE_ENTRIES = "16"


@dataclass
class EncodeTimings:
    tokenize: float = 0.0
    infer: float = 0.0
    tokens: int = 0
    chunks: int = 0


@dataclass
class EncodedBatch:
    vectors: np.ndarray  # [n, dim] float32; rows of skipped texts are zero
    ok: np.ndarray  # [n] bool: False for null / blank texts
    # [n] bool: the text holds a token the vocabulary knows. A text of unknown words only is encoded
    # (a document is kept whatever its words), but as a query it matches nothing in particular.
    known: np.ndarray
    timings: EncodeTimings = field(default_factory=EncodeTimings)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


def native_bf16() -> bool:
    """This CPU computes bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere torch emulates it, slower
    than float32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@functools.cache
def cpu_runs_bf16_lstm() -> bool:
    """Whether torch runs an LSTM in bfloat16 on this CPU at all: oneDNN, which runs it, has no such
    kernel without AVX-512, and on an AVX2-only CPU the first forward pass fails ("could not create a
    primitive descriptor for the LSTM forward propagation primitive")."""
    lstm = torch.nn.LSTM(4, 4, batch_first=True, bidirectional=True)
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 4))
    except RuntimeError:
        return False
    return True


def resolve_precision(precision: str, device: torch.device) -> str:
    """'fp32' or 'bf16': the encoder LSTM's arithmetic. 'auto' is bf16 on a CPU that computes it
    natively and float32 elsewhere (a GPU included: bf16 there was never measured). bf16 asked for on
    a CPU that cannot run it is refused."""
    if precision == "auto":
        return "bf16" if device.type == "cpu" and native_bf16() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise InputError(f"precision {precision!r}: expected auto, fp32 or bf16")
    if precision == "bf16" and device.type == "cpu" and not cpu_runs_bf16_lstm():
        raise ConfigError("encode.precision (--precision) = 'bf16', but this CPU cannot run the encoder's LSTM in "
                          "bfloat16 (torch's kernel for it needs AVX-512): use 'auto' or 'fp32'")
    return precision


def document_means(chunk_vecs: np.ndarray, lengths: np.ndarray, owner: np.ndarray, n_docs: int) -> np.ndarray:
    """[n_docs, dim] float32: each document's length-weighted mean of its chunks' vectors (float64 sums);
    zeros for a document without chunks. A document's chunks are contiguous in `owner`."""
    vectors = np.zeros((n_docs, chunk_vecs.shape[1]), dtype=np.float32)
    weights = lengths.astype(np.float64)
    docs_with_chunks, starts = np.unique(owner, return_index=True)
    sums = np.add.reduceat(chunk_vecs.astype(np.float64) * weights[:, None], starts, axis=0)
    vectors[docs_with_chunks] = (sums / np.add.reduceat(weights, starts)[:, None]).astype(np.float32)
    return vectors


class DocumentEncoder:
    """`DocumentEncoder(model_dir)(batch)`: Ray Data's map_batches shape, testable on a plain dict."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        batch_size: int = 0,
        text_col: str = "text",
        threads: int | None = None,
        precision: str = "auto",
    ):
        # Read by oneDNN when it first builds a primitive, so it applies if no LSTM has run yet.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_ENTRIES)
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.loaded: LoadedModel = load_model_dir(model_dir, self.device)
        self.precision = resolve_precision(precision, self.device)
        self.batch_size = batch_size or (AUTO_BATCH_GPU if self.device.type == "cuda" else AUTO_BATCH_CPU)
        self.text_col = text_col

    @property
    def dim(self) -> int:
        return self.loaded.dim

    def encode_texts(self, texts: pl.Series | pa.Array | pa.ChunkedArray | list) -> EncodedBatch:
        timings = EncodeTimings()
        t0 = time.perf_counter()
        if isinstance(texts, list):  # a few query texts: the tokenizer's Python path, no polars overhead
            ok = np.array([t is not None and t.strip() != "" for t in texts], dtype=bool)
            docs = self.loaded.tokenizer.encode(texts)
        else:
            series = texts if isinstance(texts, pl.Series) else pl.Series(values=texts, dtype=pl.String)
            ok = (~(series.is_null() | (series.str.strip_chars() == ""))).to_numpy()
            docs = self.loaded.tokenizer.encode(series)
        # A text of only unknown characters can tokenize to nothing; treat it as blank.
        ok &= np.fromiter((len(d) > 0 for d in docs), bool, count=len(docs))
        chunks, owner = document_chunks(self.loaded.tokenizer, docs)
        data = ChunkSet.from_chunks(chunks)
        known_tokens = np.repeat(owner, data.lengths)[data.flat != UNK]  # the document of each known token
        known = ok & (np.bincount(known_tokens, minlength=len(docs)) > 0)
        timings.tokenize = time.perf_counter() - t0

        t0 = time.perf_counter()
        vectors = np.zeros((len(docs), self.dim), dtype=np.float32)
        if len(data):
            lengths = data.lengths
            chunk_vecs = np.empty((len(data), self.dim), dtype=np.float32)
            model = self.loaded.model
            for idx in equal_length_batches(lengths, self.batch_size):
                batch = data.collate(idx).to(self.device)
                chunk_vecs[idx] = model.embed(batch, lstm_bf16=self.precision == "bf16").cpu().numpy()
            vectors = document_means(chunk_vecs, lengths, owner, len(docs))
            timings.tokens = int(lengths.sum())
            timings.chunks = len(data)
        timings.infer = time.perf_counter() - t0
        return EncodedBatch(vectors=vectors, ok=ok, known=known, timings=timings)

    def __call__(self, batch: dict) -> dict:
        """{text_col: texts, ...} → the same dict plus 'vector' [n, dim] and 'ok' [n]."""
        out = self.encode_texts(batch[self.text_col])
        return {**batch, "vector": out.vectors, "ok": out.ok}

