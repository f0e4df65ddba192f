"""Token-id chunks and the batches inference runs them in, shared by training and encoding.

A document is cut into chunks of at most `max_len` token ids (`vecjob.tokenizer.document_chunks`);
a `ChunkSet` holds many of them flat, and `equal_length_batches` groups them so no batch is padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vecjob.model import Batch
from vecjob.tokenizer import PAD


@dataclass
class ChunkSet:
    """Token-id chunks stored flat (int32 + offsets): compact, fast to pickle to Ray workers.
    `context`, when set, holds one bag-of-words target per chunk (the chunk and its document context)."""

    flat: np.ndarray
    offsets: np.ndarray  # len = n + 1
    context: "ChunkSet | None" = None

    @classmethod
    def from_chunks(cls, chunks: list[np.ndarray], contexts: list[np.ndarray] | None = None) -> "ChunkSet":
        keep = [i for i, c in enumerate(chunks) if len(c)]
        if contexts is not None:
            if len(contexts) != len(chunks):
                raise ValueError(f"{len(contexts)} contexts for {len(chunks)} chunks")
            context = cls.from_chunks([contexts[i] for i in keep])
            if len(context) != len(keep):
                raise ValueError("every non-empty chunk needs a non-empty context")
        else:
            context = None
        chunks = [chunks[i] for i in keep]
        lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
        offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(chunks).astype(np.int32) if chunks else np.zeros(0, np.int32)
        return cls(flat=flat, offsets=offsets, context=context)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def chunk(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    def take(self, indices: np.ndarray) -> "ChunkSet":
        contexts = [self.context.chunk(i) for i in indices] if self.context is not None else None
        return ChunkSet.from_chunks([self.chunk(i) for i in indices], contexts)

    def padded(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The chunks at `indices` as a PAD-padded [n, longest] array, and their lengths."""
        lengths = self.lengths[indices]
        tokens = np.full((len(indices), int(lengths.max())), PAD, dtype=np.int64)
        for row, i in enumerate(indices):
            tokens[row, : lengths[row]] = self.chunk(i)
        return tokens, lengths

    def collate(self, indices: np.ndarray) -> Batch:
        tokens, lengths = self.padded(indices)
        bow = torch.from_numpy(self.context.padded(indices)[0]) if self.context is not None else None
        return Batch(torch.from_numpy(tokens), torch.from_numpy(lengths.astype(np.int64)), bow)


def equal_length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Inference batches in which every chunk has the same length: no padding, and torch runs a dense
    batch through its oneDNN LSTM kernel instead of the slower step loop it uses for packed batches."""
    order = np.argsort(lengths, kind="stable")
    bounds = np.flatnonzero(np.diff(lengths[order])) + 1
    return [group[i : i + batch_size] for group in np.split(order, bounds) for i in range(0, len(group), batch_size)]
