"""Word embeddings to start training from: LSA term vectors of the training collection.

A randomly initialised encoder knows no word until enough steps have passed through it, and a small
collection gives it few: 350 news articles trained from random embeddings on the default token budget
score below TF-IDF on human similarity judgments (0.45 against 0.555; with this start, 0.56). The truncated SVD of the collection's TF-IDF
matrix (seconds, even for large collections, on a bounded sample of bags) places words that share
documents near each other from the first step, so the autoencoder refines a sensible space instead
of discovering one. The vector is still the trained LSTM encoder's output; only its starting point
changes (bench/README.md, "Vector quality on any collection").
"""

from __future__ import annotations

import numpy as np

from vecjob.tokenizer import EOS

# Bags (a chunk's bag-of-words target) the factorisation reads at most, and their tokens at most (a
# news article's chunks each carry most of the article, so a large collection's bags hold several
# times its tokens): enough for stable leading directions, few enough that it stays seconds long and
# small on any collection (bench/README.md, "Training on a large collection").
MAX_BAGS = 200_000
MAX_BAG_TOKENS = 10_000_000


def lsa_term_vectors(flat: np.ndarray, offsets: np.ndarray, vocab_size: int, dim: int, seed: int = 0,
                     terms: np.ndarray | None = None) -> np.ndarray:
    """[vocab_size, dim] float32 term vectors (right singular vectors × singular values of the
    L2-normalised sublinear TF-IDF bag × term matrix), scaled to unit standard deviation over the
    words that occur; rows of special and absent tokens are zero. `flat`/`offsets` hold the bags;
    `terms` ([vocab_size] bool), if given, is the words the matrix holds (the others' rows are zero)."""
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD

    n_bags = len(offsets) - 1
    rows = np.arange(n_bags)
    keep = min(MAX_BAGS, max(1, int(n_bags * MAX_BAG_TOKENS / max(1, int(offsets[-1] - offsets[0])))))
    if n_bags > keep:
        rows = np.sort(np.random.default_rng(seed).choice(n_bags, keep, replace=False))
    lengths = offsets[rows + 1] - offsets[rows]
    tokens = np.concatenate([flat[offsets[r]:offsets[r + 1]] for r in rows]) if len(rows) else flat[:0]
    owner = np.repeat(np.arange(len(rows)), lengths)
    words = tokens > EOS
    if terms is not None:
        words &= terms[tokens]
    counts = sp.csr_matrix((np.ones(int(words.sum()), np.float32), (owner[words], tokens[words])),
                           shape=(len(rows), vocab_size))
    counts.sum_duplicates()
    doc_freq = np.bincount(counts.indices, minlength=vocab_size)
    counts.data = 1.0 + np.log(counts.data)
    tfidf = counts.multiply((np.log((1.0 + len(rows)) / (1.0 + doc_freq)) + 1.0)[None, :]).tocsr()
    norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)).ravel())
    tfidf = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ tfidf
    k = min(dim, min(tfidf.shape) - 1)
    vectors = np.zeros((vocab_size, dim), np.float32)
    if k < 1 or not words.any():
        return vectors
    svd = TruncatedSVD(k, random_state=seed).fit(tfidf)
    vectors[:, :k] = svd.components_.T * svd.singular_values_[None, :]
    seen = doc_freq > 0
    vectors[~seen] = 0.0  # the SVD leaves rounding noise in the columns of words no bag holds
    scale = vectors[seen].std() if seen.any() else 1.0
    return vectors / max(float(scale), 1e-12)
