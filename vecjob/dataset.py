"""From checked Parquet shards to what training needs: a vocabulary and train/validation chunk sets.

Shards are read TEXT_ROWS rows at a time, so memory holds those texts plus the token ids kept for
training (bounded by the token budget's sample, `training_sample`, and by `max_train_chunks`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import polars as pl

from vecjob.chunks import ChunkSet
from vecjob.config import TokenizerConfig, TrainConfig
from vecjob.errors import InputError, quoted
from vecjob.parquet_io import Shard, iter_rows, read_row_groups
from vecjob.tokenizer import Tokenizer, Vocab, count_tokens, document_chunks, merge_counts, unknown_share


def id_share(doc_id: object, salt: bytes = b"") -> float:
    """Where a document falls in [0, 1) by the hash of its id (and `salt`, for an independent draw):
    the same in every run and on every machine."""
    digest = hashlib.blake2b(str(doc_id).encode(), digest_size=8, person=salt).digest()
    return int.from_bytes(digest, "little") / 2**64


# The share of ids a labelled collection without a split column holds out to test a classifier on
# (as the built-in corpus's own split does): evaluated on its training rows, it scored them in-sample.
TEST_SHARE = 0.2


def is_validation(doc_id: object, fraction: float) -> bool:
    """Stable split by id hash: the same document is held out in every run and on every machine."""
    return id_share(doc_id) < fraction


# A token budget far below the collection's size shows the model a small part of it: training then
# reads a sample of the documents holding about this many times the budget's tokens (drawn by id hash,
# independently of the validation split), so its memory and time stop growing with the collection
# while every chunk it trains on is still seen about once, as in the whole collection. At least
# MIN_SAMPLE_DOCUMENTS documents (or all) are drawn, so a tiny budget still has documents to validate on.
SAMPLE_TOKENS_PER_BUDGET_TOKEN = 2.0
MIN_SAMPLE_DOCUMENTS = 1_000
SAMPLE_SALT = b"vecjob-sample"


def training_sample(train_cfg: TrainConfig, collection_tokens: int, documents: int) -> float:
    """The share of documents training reads: 1 for a number of epochs, or a collection the budget
    covers; else the share holding SAMPLE_TOKENS_PER_BUDGET_TOKEN × train.tokens."""
    if train_cfg.epochs != "auto" or collection_tokens <= 0 or documents <= 0:
        return 1.0
    return min(1.0, max(SAMPLE_TOKENS_PER_BUDGET_TOKEN * train_cfg.tokens / collection_tokens,
                        MIN_SAMPLE_DOCUMENTS / documents))


@dataclass
class DocCounts:
    rows: int = 0  # the collection's documents: each id once
    skipped_empty: int = 0  # null, empty or whitespace-only texts
    superseded: int = 0  # rows whose id a later shard holds again: the document as it read before
    not_sampled: int = 0  # documents with a text that the training sample (training_sample) leaves out


def latest_rows(shards: list[Shard], id_col: str) -> list[np.ndarray]:
    """Per shard, which of its rows are the collection's documents: an id's row in the latest shard
    that holds it, as in the vectors. A document updated in a later shard is trained on once, as it
    reads now; its older text would weigh it twice and teach words it no longer holds."""
    ids = [pl.from_arrow(read_row_groups(s.path, list(range(len(s.row_group_rows))), [id_col])) for s in shards]
    if len(ids) < 2:  # ids are unique within a shard
        return [np.ones(frame.height, bool) for frame in ids]
    latest = pl.concat(ids, how="vertical_relaxed")[id_col].is_last_distinct().to_numpy()
    bounds = np.cumsum([0, *(frame.height for frame in ids)])
    return [latest[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


TEXT_ROWS = 65_536  # rows of a shard read and tokenised at a time: a file of a million texts is never held whole


def _read_texts(shard: Shard, id_col: str, text_col: str, latest: np.ndarray | None = None) -> Iterator[pl.DataFrame]:
    """A shard's rows as (id, text) frames of at most TEXT_ROWS rows, those `latest` marks only."""
    start = 0
    for table in iter_rows(shard.path, list(range(len(shard.row_group_rows))), [id_col, text_col], 0,
                           shard.num_rows, TEXT_ROWS):
        frame = pl.from_arrow(table).rename({id_col: "id", text_col: "text"})
        mine = None if latest is None else latest[start : start + frame.height]
        start += frame.height
        yield frame if mine is None or mine.all() else frame.filter(pl.Series(mine))


def usable_texts(frame: pl.DataFrame, path: str, strict: bool) -> tuple[pl.DataFrame, int]:
    """Drop null/blank texts (counted); under strict, any such text is an error naming the file."""
    blank = frame["text"].is_null() | (frame["text"].str.strip_chars() == "")
    n_blank = int(blank.sum())
    if n_blank and strict:
        first = frame.filter(blank)["id"][0]
        raise InputError(f"{path}: {n_blank} null or empty text(s) (first id {quoted(first)}) and --strict is set")
    return frame.filter(~blank), n_blank


def build_vocab(shards: list[Shard], id_col: str, text_col: str, cfg: TokenizerConfig,
                latest: list[np.ndarray] | None = None) -> Vocab:
    latest = latest or [None] * len(shards)
    counts = merge_counts(merge_counts(count_tokens(frame["text"]) for frame in _read_texts(s, id_col, text_col, rows))
                          for s, rows in zip(shards, latest))
    vocab = Vocab.from_counts(counts, cfg.max_vocab, cfg.min_count)
    if len(vocab) <= 4:
        where = shards[0].path + (f" and {len(shards) - 1} more shard(s)" if len(shards) > 1 else "")
        if not len(counts):
            raise InputError(f"{where}: nothing to train on: its texts hold no words")
        raise InputError(f"{where}: nothing to train on: no word occurs at least {cfg.min_count} times "
                         f"(tokenizer.min_count) among the {len(counts):,} distinct words of the texts")
    return vocab


def heldout_unknown_share(shards: list[Shard], id_col: str, text_col: str, cfg: TokenizerConfig,
                          val_fraction: float, latest: list[np.ndarray] | None = None) -> float:
    """The share of unknown tokens in documents a vocabulary has not seen: the validation documents'
    under a vocabulary counted from the others. The baseline of the drift signal (vecjob.lifecycle):
    a vocabulary always knows its own documents better than new ones, so the in-sample share would
    call every night a drift (BBC, 400 articles: 0.09 in sample, 0.21 on the next articles)."""
    counts, held_out = [], []
    for shard, rows in zip(shards, latest or [None] * len(shards)):
        shard_counts = []
        for frame in _read_texts(shard, id_col, text_col, rows):
            frame = frame.drop_nulls("text")
            val = np.array([is_validation(i, val_fraction) for i in frame["id"].to_list()], bool)
            shard_counts.append(count_tokens(frame["text"].filter(~val)))
            held_out.append(frame["text"].filter(val))
        counts.append(merge_counts(shard_counts))
    texts = pl.concat(held_out)
    if texts.len() == 0:
        return 0.0
    vocab = Vocab.from_counts(merge_counts(counts), cfg.max_vocab, cfg.min_count)
    ids = Tokenizer(vocab, cfg.max_len).encode(texts)
    return unknown_share(np.concatenate(ids)) if ids else 0.0


def training_chunks(
    shards: list[Shard],
    tokenizer: Tokenizer,
    id_col: str,
    text_col: str,
    train_cfg: TrainConfig,
    strict: bool = False,
    bow_context: int = 0,
    latest: list[np.ndarray] | None = None,
    sample: float = 1.0,
) -> tuple[ChunkSet, ChunkSet, DocCounts]:
    """Tokenise every document (or the `sample` share of them, by id hash), cut it into chunks, and
    split by id hash into train / validation. bow_context > 0: each chunk also carries its
    bag-of-words target, the chunk ± that many tokens."""
    train_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    train_contexts: list[np.ndarray] = []
    val_contexts: list[np.ndarray] = []
    counts = DocCounts()
    for shard, rows in zip(shards, latest or [None] * len(shards)):
        kept = shard.num_rows if rows is None else int(rows.sum())
        counts.rows += kept
        counts.superseded += shard.num_rows - kept
        for frame in _read_texts(shard, id_col, text_col, rows):
            frame, n_blank = usable_texts(frame, shard.path, strict)
            counts.skipped_empty += n_blank
            if sample < 1.0:
                drawn = pl.Series([id_share(i, SAMPLE_SALT) < sample for i in frame["id"].to_list()], dtype=pl.Boolean)
                counts.not_sampled += frame.height - int(drawn.sum())
                frame = frame.filter(drawn)
            docs = tokenizer.encode(frame["text"])
            chunks, owner = document_chunks(tokenizer, docs)
            held_out = np.array([is_validation(i, train_cfg.val_fraction) for i in frame["id"].to_list()], bool)
            for chunk, doc in zip(chunks, owner):
                (val_parts if held_out[doc] else train_parts).append(chunk)
            if bow_context:
                for ids, held in zip(docs, held_out):
                    (val_contexts if held else train_contexts).extend(tokenizer.chunk_contexts(ids, bow_context))
    if not train_parts:
        raise InputError(f"no usable text in {len(shards)} shard(s) ({counts.skipped_empty} empty)")
    train = ChunkSet.from_chunks(train_parts, train_contexts if bow_context else None)
    if train_cfg.max_train_chunks and len(train) > train_cfg.max_train_chunks:
        keep = np.random.default_rng(train_cfg.seed).choice(len(train), train_cfg.max_train_chunks, replace=False)
        train = train.take(np.sort(keep))
    return train, ChunkSet.from_chunks(val_parts, val_contexts if bow_context else None), counts
