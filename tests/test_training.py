import numpy as np
import pytest
import torch

from vecjob.config import ModelConfig, TrainConfig
from vecjob.training import (
    ChunkSet,
    Totals,
    batch_indices,
    build_model,
    equal_length_batches,
    is_validation,
    rank_shard,
    train_loop,
)


def _chunks(n, seed=0):
    rng = np.random.default_rng(seed)
    return ChunkSet.from_chunks([rng.integers(4, 40, size=rng.integers(1, 12)).astype(np.int32) for _ in range(n)])


def test_chunkset_collate_pads_and_keeps_tokens():
    cs = ChunkSet.from_chunks([np.array([5, 6, 7], np.int32), np.array([8], np.int32)])
    batch = cs.collate(np.array([0, 1]))
    assert batch.tokens.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.lengths.tolist() == [3, 1]


def test_batches_cover_every_chunk_once_with_little_padding():
    cs = _chunks(500)
    batches = batch_indices(cs.lengths, 32, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    waste = sum(cs.lengths[b].max() * len(b) - cs.lengths[b].sum() for b in batches)
    assert waste < 0.1 * cs.lengths.sum()


def test_training_batches_are_mostly_of_one_length_and_their_count_depends_on_n_only():
    lengths = np.random.default_rng(1).integers(1, 9, size=500)
    for seed in range(3):
        batches = batch_indices(lengths, 16, np.random.default_rng(seed))
        assert len(batches) == 32  # ceil(500 / 16): equal steps on DDP ranks with equal shares
        mixed = [b for b in batches if len(set(lengths[b])) > 1]
        assert len(mixed) <= 7  # only a batch straddling one of the 7 changes of length is padded
    assert not np.array_equal(batches[0], batch_indices(lengths, 16, np.random.default_rng(0))[0])


def test_equal_length_batches_have_no_padding_and_cover_every_chunk_once():
    lengths = np.random.default_rng(0).integers(1, 9, size=500)
    batches = equal_length_batches(lengths, 16)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(500))
    assert all(len(b) <= 16 and len(set(lengths[b])) == 1 for b in batches)
    assert len(batches) <= 500 // 16 + 8  # at most one partial batch per distinct length


def test_rank_shards_are_equal_and_disjoint():
    parts = [rank_shard(103, r, 3, seed=1) for r in range(3)]
    assert {len(p) for p in parts} == {34}
    assert len(set(np.concatenate(parts).tolist())) == 102


def test_validation_split_is_stable():
    ids = [f"doc-{i}" for i in range(2000)]
    held = [i for i in ids if is_validation(i, 0.1)]
    assert held == [i for i in ids if is_validation(i, 0.1)]
    assert 120 < len(held) < 280


def test_totals_survive_tensor_roundtrip():
    t = Totals(chunks=3, tokens=10, loss=6.0, recon=20.0, correct=4)
    assert Totals.from_tensor(t.as_tensor()) == t
    s = t.summary("val")
    assert s["val_loss"] == 2.0 and s["val_recon"] == 2.0 and s["val_token_acc"] == 0.4


def test_bf16_precision_is_ignored_on_cpu_and_unknown_precisions_are_rejected():
    model_cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    weights = {}
    for precision in ("fp32", "bf16"):
        model = build_model(model_cfg, 40, seed=0)
        train_cfg = TrainConfig(epochs=1, batch_size=16, precision=precision)
        train_loop(model, _chunks(64), _chunks(16, 1), model_cfg, train_cfg, device=torch.device("cpu"))
        weights[precision] = model.state_dict()
    assert all(torch.equal(weights["fp32"][k], weights["bf16"][k]) for k in weights["fp32"])
    with pytest.raises(ValueError, match="Input should be 'fp32' or 'bf16'"):
        TrainConfig(precision="fp16")


def test_train_loop_keeps_best_epoch_and_stops_early():
    import copy

    from vecjob.training import unwrap

    torch.manual_seed(0)
    model_cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    # Random tokens and a high rate: the model overfits its 64 chunks, so the validation loss turns up.
    train_cfg = TrainConfig(epochs=30, batch_size=16, lr=0.03, patience=2)
    model = build_model(model_cfg, 40, seed=0)
    weights = {}
    state = train_loop(model, _chunks(64), _chunks(16, seed=1), model_cfg, train_cfg, device=torch.device("cpu"),
                       on_epoch_end=lambda s, o, m: weights.__setitem__(m["epoch"], copy.deepcopy(unwrap(model).state_dict())))
    val = [h["val_loss"] for h in state.history]
    assert state.best_epoch == int(np.argmin(val)) + 1
    assert state.stopped_early and state.epoch == state.best_epoch + train_cfg.patience < train_cfg.epochs
    assert all(torch.equal(state.best_weights[k], weights[state.best_epoch][k]) for k in weights[1])
    assert not all(torch.equal(state.best_weights[k], weights[state.epoch][k]) for k in weights[1])


def test_train_loop_resumes_from_state():
    model_cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    train_cfg = TrainConfig(epochs=3, batch_size=16)
    model = build_model(model_cfg, 40, seed=0)
    seen = []
    state = train_loop(model, _chunks(64), _chunks(16, 1), model_cfg, train_cfg.model_copy(update={"epochs": 1}),
                       device=torch.device("cpu"))
    state = train_loop(model, _chunks(64), _chunks(16, 1), model_cfg, train_cfg, device=torch.device("cpu"),
                       state=state, on_epoch_end=lambda s, o, m: seen.append(m["epoch"]))
    assert seen == [2, 3] and state.epoch == 3


def test_set_center_makes_the_mean_training_vector_zero():
    from vecjob.training import set_center

    data = _chunks(300)
    model = build_model(ModelConfig(dim=8, embed_dim=8, hidden_dim=16), 40, seed=0)
    everything = data.collate(np.arange(len(data)))
    raw = model.embed(everything)
    assert raw.mean(0).abs().max() > 1e-3  # the untrained model's vectors share an offset
    set_center(model, data)
    centred = model.embed(everything)
    assert centred.mean(0).abs().max() < 1e-5
    torch.testing.assert_close(centred + model.z_center, raw, atol=1e-6, rtol=1e-6)
    assert "z_center" in model.state_dict()  # saved with the weights, so encoding reproduces it


def test_cosine_learning_rate_falls_from_lr_to_the_floor():
    from vecjob.config import TrainConfig
    from vecjob.training import learning_rate

    cfg = TrainConfig(lr=1e-3, lr_schedule="cosine", lr_min_fraction=0.1)
    rates = [learning_rate(cfg, s, 100) for s in range(0, 101, 10)]
    assert rates[0] == 1e-3 and abs(rates[-1] - 1e-4) < 1e-12
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert learning_rate(cfg.model_copy(update={"lr_schedule": "constant"}), 50, 100) == 1e-3


def test_chunkset_carries_bow_contexts_through_take_and_collate():
    chunks = [np.array([5, 6, 7], np.int32), np.zeros(0, np.int32), np.array([8], np.int32)]
    contexts = [np.array([4, 5, 6, 7, 8], np.int32), np.zeros(0, np.int32), np.array([7, 8], np.int32)]
    cs = ChunkSet.from_chunks(chunks, contexts)
    assert len(cs) == 2 and len(cs.context) == 2  # the empty chunk and its context are both dropped
    batch = cs.collate(np.array([0, 1]))
    assert batch.tokens.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.bow_tokens.tolist() == [[4, 5, 6, 7, 8], [7, 8, 0, 0, 0]]
    taken = cs.take(np.array([1])).collate(np.array([0]))
    assert taken.tokens.tolist() == [[8]] and taken.bow_tokens.tolist() == [[7, 8]]
    assert ChunkSet.from_chunks(chunks).collate(np.array([0])).bow_tokens is None
    with pytest.raises(ValueError, match="contexts for"):
        ChunkSet.from_chunks(chunks, contexts[:2])


def test_training_chunks_with_bow_context_hold_each_chunk_inside_its_context(collection):
    from vecjob.config import TokenizerConfig
    from vecjob.dataset import build_vocab, training_chunks
    from vecjob.parquet_io import check_shards
    from vecjob.tokenizer import Tokenizer

    shards = check_shards(str(collection), "id", "text")
    tok_cfg = TokenizerConfig(max_vocab=200, min_count=1, max_len=8)
    tokenizer = Tokenizer(build_vocab(shards, "id", "text", tok_cfg), tok_cfg.max_len)
    plain_train, plain_val, _ = training_chunks(shards, tokenizer, "id", "text", TrainConfig(val_fraction=0.2))
    train, val, _ = training_chunks(shards, tokenizer, "id", "text", TrainConfig(val_fraction=0.2), bow_context=5)
    assert plain_train.context is None
    for plain, data in ((plain_train, train), (plain_val, val)):
        assert np.array_equal(plain.flat, data.flat) and np.array_equal(plain.offsets, data.offsets)
        assert len(data.context) == len(data)
        assert (data.context.lengths <= 8 + 2 * 5).all() and (data.context.lengths > data.lengths).any()
        for i in range(len(data)):
            chunk, context = data.chunk(i).tolist(), data.context.chunk(i).tolist()
            assert any(context[s : s + len(chunk)] == chunk for s in range(len(context) - len(chunk) + 1))
