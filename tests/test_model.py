import numpy as np
import pytest
import torch

from vecjob.config import ModelConfig
from vecjob.model import Batch, SequenceAutoencoder, corrupt
from vecjob.tokenizer import PAD, UNK

VOCAB = 50


def _batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    tokens = torch.full((len(lengths), T), PAD)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(4, VOCAB, (n,), generator=g)
    return Batch(tokens, torch.tensor(lengths))


@pytest.mark.parametrize("variant", ["plain", "denoising", "variational"])
def test_forward_gives_finite_losses(variant):
    cfg = ModelConfig(variant=variant, dim=8, embed_dim=8, hidden_dim=16)
    model = SequenceAutoencoder(cfg, VOCAB)
    batch = _batch([5, 3, 7])
    losses = model(batch, corrupt(batch, cfg) if variant == "denoising" else None)
    assert torch.isfinite(losses.total)
    assert losses.tokens == 5 + 3 + 7 + 3  # every token plus one EOS per chunk
    assert (losses.kl > 0) == (variant == "variational")
    losses.total.backward()


def test_embedding_shape_and_padding_invariance():
    cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    model = SequenceAutoencoder(cfg, VOCAB).eval()
    batch = _batch([6, 2])
    z = model.embed(batch)
    assert z.shape == (2, 8)
    # The second chunk alone (no padding) must give the same vector as inside the padded batch.
    alone = model.embed(Batch(batch.tokens[1:, :2], batch.lengths[1:]))
    torch.testing.assert_close(z[1:], alone, atol=1e-5, rtol=1e-5)


def test_unpadded_batches_take_the_dense_path_with_the_same_result():
    cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    model = SequenceAutoencoder(cfg, VOCAB).eval()
    batch = _batch([7, 7, 7])
    with torch.inference_mode():
        dense = model.encode_states(batch)[0]
        packed = model.to_z(model._pool_packed(model.embedding(batch.tokens), batch.lengths))
    assert torch.allclose(dense, packed, atol=1e-5)


def test_corrupt_keeps_at_least_one_token_and_valid_padding():
    cfg = ModelConfig(delete_prob=0.9, mask_prob=0.3)
    batch = _batch([1, 4, 9, 9])
    out = corrupt(batch, cfg, torch.Generator().manual_seed(1))
    assert (out.lengths >= 1).all() and (out.lengths <= batch.lengths).all()
    for row, n in zip(out.tokens, out.lengths):
        assert (row[:n] != PAD).all() and (row[n:] == PAD).all()
        assert set(row[:n].tolist()) <= set(batch.tokens.flatten().tolist()) | {UNK}


def test_corrupt_deletes_a_fixed_share_so_equal_lengths_stay_equal():
    cfg = ModelConfig(delete_prob=0.4, mask_prob=0.0)
    batch = _batch([10, 10, 10, 10, 5, 1])
    out = corrupt(batch, cfg, torch.Generator().manual_seed(2))
    assert out.lengths.tolist() == [6, 6, 6, 6, 3, 1]  # round(0.4 × length) deleted, one token always kept
    assert out.tokens.shape[1] == 6  # trimmed to the longest: an equal-length batch needs no padding
    for row, src, n in zip(out.tokens, batch.tokens, out.lengths):
        kept = row[:n].tolist()
        it = iter(src.tolist())
        assert all(t in it for t in kept)  # a subsequence: survivors keep their order


def test_decoder_dense_and_packed_paths_agree():
    cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16, dropout=0.0)
    model = SequenceAutoencoder(cfg, VOCAB).eval()
    equal = _batch([6, 6, 6], seed=5)
    mixed = _batch([6, 6, 6, 9], seed=5)
    mixed.tokens[:3] = torch.nn.functional.pad(equal.tokens, (0, 3), value=PAD)
    with torch.no_grad():
        z = model.encode_states(mixed)[0]
        dense, targets = model._decoder_hidden(z[:3], equal)  # no padding: the dense call
        packed, _ = model._decoder_hidden(z, mixed)
    torch.testing.assert_close(dense, packed[:3, :7], atol=1e-5, rtol=1e-5)
    assert targets[:, -1].tolist() == [3, 3, 3]  # EOS closes every chunk


def test_training_steps_reduce_reconstruction_loss():
    torch.manual_seed(0)
    cfg = ModelConfig(variant="plain", dim=16, embed_dim=16, hidden_dim=32, word_dropout=0.0, dropout=0.0)
    model = SequenceAutoencoder(cfg, VOCAB)
    batch = _batch([6, 6, 5, 4], seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        losses = model(batch)
        first = first if first is not None else losses.recon.item()
        opt.zero_grad()
        losses.total.backward()
        opt.step()
    assert losses.recon.item() < 0.5 * first


def test_bag_of_words_loss_is_the_mean_over_words_of_the_chunk_or_its_context():
    batch = _batch([6, 3, 8], seed=2)
    model = SequenceAutoencoder(ModelConfig(dim=8, embed_dim=8, hidden_dim=16), VOCAB)
    with torch.no_grad():
        z = model.encode_states(batch)[0]
        nll = -torch.log_softmax(model.bow(z), -1).gather(1, batch.tokens)
        torch.testing.assert_close(model._bag_of_words(z, batch), nll[batch.tokens != PAD].mean())
        # With document context, the bag of words to predict is the context, not the chunk itself.
        context = _batch([9, 9, 9], seed=3).tokens
        with_context = Batch(batch.tokens, batch.lengths, bow_tokens=context)
        nll_context = -torch.log_softmax(model.bow(z), -1).gather(1, context)
        torch.testing.assert_close(model._bag_of_words(z, with_context), nll_context.mean())


def test_tfidf_target_is_scikit_learns_sublinear_tfidf_and_the_head_regresses_z_onto_its_lsa_coordinates():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from vecjob.chunks import ChunkSet
    from vecjob.training import bag_document_frequencies, build_model

    batch = _batch([6, 3, 8, 8], seed=4)
    batch.tokens[0, :3] = 7  # a word three times: sublinear tf, 1 + ln 3
    batch.tokens[1, 1] = UNK  # special tokens are no words of the target
    chunks = [batch.tokens[i, : int(n)].numpy() for i, n in enumerate(batch.lengths)]
    cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16, tfidf_weight=1.0)
    model = SequenceAutoencoder(cfg, VOCAB)
    model.set_document_frequencies(*bag_document_frequencies(ChunkSet.from_chunks(chunks), VOCAB))

    words = [[str(t) for t in c if t > 3] for c in chunks]
    sk = TfidfVectorizer(analyzer=lambda doc: doc, sublinear_tf=True)
    rows = sk.fit_transform(words).toarray()
    expected = np.zeros((len(chunks), VOCAB), dtype=np.float32)
    expected[:, [int(w) for w in sk.get_feature_names_out()]] = rows
    torch.testing.assert_close(model.tfidf_targets(batch), torch.from_numpy(expected))
    # build_model, given the training chunks (as every training path passes them), sets the same idf
    # and the LSA directions of those chunks as the head's target space: orthonormal columns, as many
    # as the four chunks' matrix has (rank 3 here), the rest zero.
    built = build_model(cfg, VOCAB, seed=0, train=ChunkSet.from_chunks(chunks))
    torch.testing.assert_close(built.tfidf_targets(batch), torch.from_numpy(expected))
    basis = built.lsa_basis
    torch.testing.assert_close(basis.T @ basis, torch.diag(torch.tensor([1.0] * 3 + [0.0] * 5)), atol=1e-5, rtol=0)
    # Four chunks span three LSA directions, so their TF-IDF rows lie in them up to one direction:
    # the coordinates keep most of each row's unit norm.
    coords = torch.from_numpy(expected) @ basis
    assert float(coords.pow(2).sum(1).mean()) > 0.5

    # The head starts as the zero map: the squared error is the coordinates' squared norm, until it learns.
    built.train()
    losses = built(batch)
    torch.testing.assert_close(losses.tfidf, coords.pow(2).sum(1).mean())
    torch.testing.assert_close(losses.total, losses.recon + cfg.bow_weight * losses.bow + losses.tfidf)
    losses.total.backward()
    assert built.tfidf.weight.grad.abs().sum() > 0 and built.tfidf.weight.shape == (cfg.embed_dim, cfg.dim)
    # Weight 0 turns it off: no head, nothing in the loss, and model files without the head.
    plain = SequenceAutoencoder(cfg.model_copy(update={"tfidf_weight": 0.0}), VOCAB)
    assert plain.tfidf is None and float(plain(batch).tfidf) == 0.0
    assert not any(k.startswith("tfidf") for k in plain.state_dict())
    # Training-only, like the bag-of-words weights
    assert "tfidf_idf" not in model.state_dict() and "lsa_basis" not in model.state_dict()
    with pytest.raises(ValueError, match="document frequencies"):
        model.set_document_frequencies(np.ones(VOCAB - 1), 4)
