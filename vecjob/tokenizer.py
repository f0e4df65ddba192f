"""Word-level tokeniser and vocabulary, vectorised with polars (Rust regex, no Python loop per token).

Lower-cased words (with inner apostrophes) and single punctuation marks are tokens; an http(s) URL is
the one token <url> and HTML entities (&amp; ...) are unescaped first. The vocabulary is counted shard
by shard with polars, so the corpus is never held as Python lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import polars as pl
import pyarrow as pa

from vecjob.errors import ArtifactError

# Recorded in every model dir: a model only encodes with the tokenisation it was trained on.
# 2: URLs and HTML entities (version 1 split a t.co link into ~8 tokens, an unknown word among them).
# 3: each Chinese character and Japanese kana is a token (an unspaced run of them was one token that
#    never came again: a Chinese or Japanese collection had next to no vocabulary).
# 4: text is in Unicode's composed form (NFC) and loses its invisible format characters (soft hyphens,
#    zero-width joiners, byte-order marks, direction marks; a zero-width space separates words): "café"
#    typed two ways, or a scraped "inter<soft hyphen>national", was two words.
# 5: Thai, Lao, Khmer and Burmese, written without spaces between words, are cut into characters, each
#    with the vowel and tone marks written on it (an unspaced run was one token that never came again).
# 6: text is in Unicode's compatibility form (NFKC) before it is lower-cased, and a typographic
#    apostrophe or quote is the ASCII one: full-width letters ("ｈｅｌｌｏ", as Japanese and Chinese text
#    writes Latin words), ligatures ("ﬁnal", from PDFs) and "don’t" as word processors type it were
#    other tokens than "hello", "final" and "don't".
# Models of an earlier version keep their own tokenisation, which differs only on such characters.
TOKENIZER_VERSION = 6
URL_TOKEN = "<url>"
URL_PATTERN = r"https?://\S+"
CJK_CHARACTERS = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana, ideographs: as BERT splits
# Thai, Lao, Myanmar (and its extensions), Khmer (and its symbols): no dictionary segmenter ships with
# vecjob, so a base character and the marks on it are the unit, as CJK characters are.
UNSPACED_SCRIPTS = r"\u0e00-\u0eff\u1000-\u109f\ua9e0-\ua9ff\uaa60-\uaa7f\u1780-\u17ff\u19e0-\u19ff"
_WORD = rf"[^\W{CJK_CHARACTERS}]+"  # letters, digits and _, but not those characters
_WORD_5 = rf"[^\W{CJK_CHARACTERS}{UNSPACED_SCRIPTS}]+"
_CUT_3 = URL_TOKEN + rf"|[{CJK_CHARACTERS}]|{_WORD}(?:'{_WORD})*|[^\w\s]"
TOKEN_PATTERNS = {2: URL_TOKEN + r"|\w+(?:'\w+)*|[^\w\s]", 3: _CUT_3, 4: _CUT_3,  # 4 changes the text, not the cut
                  5: URL_TOKEN + rf"|[{CJK_CHARACTERS}]|[{UNSPACED_SCRIPTS}]\p{{M}}*|{_WORD_5}(?:'{_WORD_5})*|[^\w\s]"}
TOKEN_PATTERNS[6] = TOKEN_PATTERNS[5]  # 6 changes the text, not the cut
TYPOGRAPHIC_QUOTES = {"[\u2018\u2019\u02bc]": "'", "[\u201c\u201d\u201e]": '"'}  # ‘ ’ ʼ, “ ” „
HTML_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'"}
PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
VOCAB_FILE = "vocab.tsv"
_URL_RE = re.compile(URL_PATTERN)
_TOKEN_RE = re.compile(_CUT_3)  # for ASCII texts, which every version cuts alike (Python's re has no \p{M})
FEW_TEXTS = 64  # up to this many ASCII texts, plain Python regex beats polars' per-call overhead


def tokenize_column(texts: pl.Series | pa.Array | pa.ChunkedArray | list,
                    version: int = TOKENIZER_VERSION) -> pl.Series:
    """Texts → list[str] tokens per text (nulls stay null), as tokenizer `version` cuts them."""
    s = texts if isinstance(texts, pl.Series) else pl.Series(values=texts, dtype=pl.String)
    if version >= 6:  # before lower-casing: NFKC makes capitals of some symbols ("™" is "TM")
        s = s.str.normalize("NFKC")
        for pattern, ascii_mark in TYPOGRAPHIC_QUOTES.items():
            s = s.str.replace_all(pattern, ascii_mark)
    s = s.str.to_lowercase()
    if version in (4, 5):
        s = s.str.normalize("NFC")
    if version >= 4:
        s = s.str.replace_all("\u200b", " ", literal=True).str.replace_all(r"\p{Cf}", "")
    # One pass per entity, &amp; first: scraped tweets hold doubly escaped text ("&amp;gt;",
    # "Google&amp;#39;s") that a single simultaneous pass would leave half-escaped.
    for entity, char in HTML_ENTITIES.items():
        s = s.str.replace_all(entity, char, literal=True)
    return s.str.replace_all(URL_PATTERN, f" {URL_TOKEN} ").str.extract_all(TOKEN_PATTERNS[version])


def count_tokens(texts: pl.Series | pa.Array | pa.ChunkedArray | list) -> pl.DataFrame:
    """Token counts of a batch of texts: columns token, count."""
    tokens = tokenize_column(texts).explode().drop_nulls()
    return tokens.rename("token").value_counts(name="count")


def merge_counts(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame({"token": [], "count": []}, schema={"token": pl.String, "count": pl.UInt64})
    return pl.concat(frames).group_by("token").agg(pl.col("count").sum())


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]  # index = token id; the first four are SPECIALS
    counts: tuple[int, ...]

    @classmethod
    def from_counts(cls, counts: pl.DataFrame, max_size: int, min_count: int) -> "Vocab":
        """Most frequent tokens first (ties by token, so the result is deterministic)."""
        kept = (
            counts.filter(pl.col("count") >= min_count)
            .sort(["count", "token"], descending=[True, False])
            .head(max(0, max_size - len(SPECIALS)))
        )
        return cls(
            tokens=SPECIALS + tuple(kept["token"].to_list()),
            counts=(0,) * len(SPECIALS) + tuple(int(c) for c in kept["count"].to_list()),
        )

    def __len__(self) -> int:
        return len(self.tokens)

    def topic_words(self) -> np.ndarray:
        """[len(self)] bool: the tokens that can name a topic, words of two characters or more and the
        characters of scripts written without spaces (where one character is a word). Punctuation, single
        letters and digits fill every kind of document alike; the TF-IDF head's target leaves them out."""
        one_char_word = re.compile(f"[{CJK_CHARACTERS}{UNSPACED_SCRIPTS}]")
        return np.array([i >= len(SPECIALS) and (len(token) > 1 or bool(one_char_word.match(token)))
                         for i, token in enumerate(self.tokens)], dtype=bool)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / VOCAB_FILE
        path.write_text("".join(f"{t}\t{c}\n" for t, c in zip(self.tokens, self.counts)), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Vocab":
        path = Path(folder) / VOCAB_FILE
        if not path.exists():
            raise ArtifactError(f"{path}: vocabulary missing")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            text = ""
        # Lines end at "\n" alone: str.splitlines also cuts at the ASCII separators \x1c-\x1e, which a
        # token can be (they are not Unicode whitespace), and a model trained on such text never loaded.
        rows = [line.split("\t") for line in text.removesuffix("\n").split("\n")]
        if ([r[0] for r in rows[: len(SPECIALS)]] != list(SPECIALS)
                or any(len(r) != 2 or not r[1].isdecimal() for r in rows)):
            raise ArtifactError(f"{path}: not a vecjob vocabulary (damaged, or written by something else): train "
                                "the model again")
        return cls(tokens=tuple(r[0] for r in rows), counts=tuple(int(r[1]) for r in rows))


class Tokenizer:
    """Texts → token-id arrays, and token-id arrays → fixed-length chunks."""

    def __init__(self, vocab: Vocab, max_len: int, version: int = TOKENIZER_VERSION):
        self.vocab = vocab
        self.max_len = max_len
        self.version = version
        self._ids: dict[str, int] | None = None
        self._lookup = pl.DataFrame(
            {"token": list(vocab.tokens), "tid": np.arange(len(vocab), dtype=np.int32)}
        )

    def encode(self, texts: pl.Series | pa.Array | pa.ChunkedArray | list) -> list[np.ndarray]:
        """One int32 id array per text; null/empty texts give an empty array."""
        if isinstance(texts, list) and len(texts) <= FEW_TEXTS and all(isinstance(t, str) and t.isascii() for t in texts):
            return [self._encode_ascii(t) for t in texts]
        tokens = tokenize_column(texts, self.version)
        n = len(tokens)
        if n == 0:  # np.split below would make one empty document of no texts
            return []
        exploded = (
            pl.DataFrame({"doc": np.arange(n, dtype=np.int64), "token": tokens})
            .with_row_index("pos")
            .explode("token")
            .drop_nulls("token")
        )
        # A left join keeps token order (polars preserves the left frame's order).
        ids = exploded.join(self._lookup, on="token", how="left", maintain_order="left").with_columns(
            pl.col("tid").fill_null(UNK)
        )
        flat = ids["tid"].to_numpy().astype(np.int32, copy=False)
        lengths = np.bincount(ids["doc"].to_numpy(), minlength=n)
        return np.split(flat, np.cumsum(lengths)[:-1])

    def _encode_ascii(self, text: str) -> np.ndarray:
        """The polars path's tokens for one ASCII text, without its per-call overhead (a search query
        is one short text). On ASCII, Python's and Rust's regex classes (\\w, \\s) and lower-casing agree,
        and every tokenizer version cuts alike."""
        if self._ids is None:
            self._ids = {t: i for i, t in enumerate(self.vocab.tokens)}
        s = text.lower()
        for entity, char in HTML_ENTITIES.items():
            s = s.replace(entity, char)
        tokens = _TOKEN_RE.findall(_URL_RE.sub(f" {URL_TOKEN} ", s))
        return np.fromiter((self._ids.get(t, UNK) for t in tokens), dtype=np.int32, count=len(tokens))

    def chunk(self, ids: np.ndarray) -> list[np.ndarray]:
        """Split one document into chunks of at most max_len tokens (nothing is cut off)."""
        return [ids[i : i + self.max_len] for i in range(0, len(ids), self.max_len)]

    def chunk_contexts(self, ids: np.ndarray, width: int) -> list[np.ndarray]:
        """For each chunk of `chunk(ids)`, the chunk widened by up to `width` tokens on either side."""
        return [ids[max(0, i - width) : i + self.max_len + width] for i in range(0, len(ids), self.max_len)]


def unicode_problem(text: str) -> str | None:
    """Why a text cannot be tokenised, or None. A Python string can hold half of a UTF-16 surrogate
    pair, which no encoding writes: a command-line argument of bytes that are not UTF-8 arrives so,
    and so does a JSON string escaping half a pair ("\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"not valid Unicode: character {exc.start} is half of a surrogate pair ({text[exc.start]!r}), "
                "from bytes that are not UTF-8 or a JSON escape of half a pair")
    return None


def unknown_share(token_ids: np.ndarray) -> float:
    """The share of tokens the vocabulary does not know (0 for no tokens)."""
    return float(np.mean(token_ids == UNK)) if len(token_ids) else 0.0


def document_chunks(tokenizer: Tokenizer, docs: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """All chunks of the given documents and, for each chunk, the index of its document."""
    chunks: list[np.ndarray] = []
    owner: list[int] = []
    for i, ids in enumerate(docs):
        parts = tokenizer.chunk(ids)
        chunks += parts
        owner += [i] * len(parts)
    return chunks, np.asarray(owner, dtype=np.int64)
