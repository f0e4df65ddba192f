import numpy as np
import pytest
import torch

from vecjob.chunks import ChunkSet, equal_length_batches
from vecjob.config import ModelConfig, TrainConfig
from vecjob.dataset import is_validation
from vecjob.training import (
    Totals,
    batch_indices,
    build_model,
    round_line,
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


def test_ranks_share_each_epoch_and_hold_chunks_of_one_length_at_every_step():
    lengths = np.random.default_rng(2).integers(1, 65, size=1003)
    rng = lambda: np.random.default_rng([7, 3])  # noqa: E731 - every rank seeds its epoch alike
    ranks = [batch_indices(lengths, 16, rng(), rank, 3) for rank in range(3)]
    assert {len(batches) for batches in ranks} == {21}  # ceil(334 / 16) steps on every rank
    epoch = np.concatenate([b for batches in ranks for b in batches])
    assert len(epoch) == len(set(epoch.tolist())) == 1002  # disjoint shares; 1003 mod 3 sit the epoch out
    for step in zip(*ranks):
        assert len({len(b) for b in step}) == 1
        # one run of the length order, dealt out: a rank batching its share by itself would hold
        # 1-token chunks beside another's 60-token ones
        means = [lengths[b].mean() for b in step]
        assert max(means) - min(means) <= 1


def test_validation_split_is_stable():
    ids = [f"doc-{i}" for i in range(2000)]
    held = [i for i in ids if is_validation(i, 0.1)]
    assert held == [i for i in ids if is_validation(i, 0.1)]
    assert 120 < len(held) < 280


def test_totals_survive_tensor_roundtrip():
    t = Totals(chunks=3, tokens=10, loss=6.0, recon=20.0, correct=4, checked=5)
    assert Totals.from_tensor(t.as_tensor()) == t
    s = t.summary("val")
    assert s["val_loss"] == 2.0 and s["val_recon"] == 2.0 and s["val_token_acc"] == 0.8  # of the tokens checked


def test_validation_checks_token_accuracy_on_a_bounded_sample_of_the_held_out_tokens():
    from vecjob.training import ACCURACY_TOKENS, evaluate

    data = _chunks(4000)
    model = build_model(ModelConfig(dim=8, embed_dim=8, hidden_dim=16), 60, seed=0)
    batches = batch_indices(data.lengths, 32, None)
    totals = evaluate(model, data, batches, torch.device("cpu"))
    assert totals.tokens > 2 * ACCURACY_TOKENS  # the losses see every held-out token
    assert ACCURACY_TOKENS <= totals.checked <= ACCURACY_TOKENS + 32 * (int(data.lengths.max()) + 1)


def test_train_loop_keeps_best_round_and_stops_early():
    import copy

    from vecjob.training import unwrap

    torch.manual_seed(0)
    model_cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    # Random tokens and a high rate: the model overfits its 64 chunks, so the validation loss turns up.
    train_cfg = TrainConfig(epochs=30, batch_size=16, lr=0.03, patience=2)
    model = build_model(model_cfg, 40, seed=0)
    weights = {}
    state = train_loop(model, _chunks(64), _chunks(16, seed=1), model_cfg, train_cfg, device=torch.device("cpu"),
                       on_round_end=lambda s, o, m: weights.__setitem__(m["round"], copy.deepcopy(unwrap(model).state_dict())))
    val = [h["val_loss"] for h in state.history]
    assert state.best_round == int(np.argmin(val)) + 1
    assert state.stop_reason == "patience" and state.round == state.best_round + train_cfg.patience < train_cfg.epochs
    assert all(torch.equal(state.best_weights[k], weights[state.best_round][k]) for k in weights[1])
    assert not all(torch.equal(state.best_weights[k], weights[state.round][k]) for k in weights[1])


def test_train_loop_resumes_from_state():
    model_cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    train_cfg = TrainConfig(epochs=3, batch_size=16)
    model = build_model(model_cfg, 40, seed=0)
    seen = []
    state = train_loop(model, _chunks(64), _chunks(16, 1), model_cfg, train_cfg.model_copy(update={"epochs": 1}),
                       device=torch.device("cpu"))
    state = train_loop(model, _chunks(64), _chunks(16, 1), model_cfg, train_cfg, device=torch.device("cpu"),
                       state=state, on_round_end=lambda s, o, m: seen.append(m["round"]))
    assert seen == [2, 3] and state.round == 3 and state.stop_reason == "budget"


def test_the_token_budget_sets_the_run_length_whatever_the_collection_size():
    from vecjob.training import ROUNDS, RunPlan

    cfg = TrainConfig(tokens=100_000, batch_size=16)
    small, large = np.full(100, 20), np.full(100_000, 20)  # 2,000 and 2,000,000 tokens an epoch
    small_plan, large_plan = RunPlan.make(cfg, small, 1), RunPlan.make(cfg, large, 1)
    # The small collection is seen 50 times, the large one in part: the same tokens either way.
    assert small_plan.total_steps / small_plan.steps_per_epoch * 2_000 == pytest.approx(100_000, rel=0.01)
    assert large_plan.total_steps / large_plan.steps_per_epoch * 2_000_000 == pytest.approx(100_000, rel=0.01)
    # Ten validations either way: a round spans 5 epochs of the small collection, part of one of the large.
    assert small_plan.rounds == large_plan.rounds == ROUNDS
    assert small_plan.steps_per_round == 5 * small_plan.steps_per_epoch  # ceil(100 / 16) = 7 steps an epoch
    assert large_plan.steps_per_round < large_plan.steps_per_epoch
    # Two workers split each step's chunks: half the steps, the same tokens.
    assert RunPlan.make(cfg, large, 2).total_steps == pytest.approx(large_plan.total_steps / 2, abs=1)
    assert RunPlan.make(TrainConfig(epochs=3, batch_size=16), large, 1).rounds == 3
    assert (small_plan.bound, large_plan.bound) == ("tokens", "tokens")


def test_a_collection_too_small_for_the_token_budget_is_trained_for_the_epoch_cap_at_most():
    from vecjob.training import MAX_AUTO_EPOCHS, ROUNDS, RunPlan

    tiny = np.full(50, 20)  # 1,000 tokens an epoch: the default budget would make it 3,000 epochs
    plan = RunPlan.make(TrainConfig(), tiny, 2)
    assert plan.bound == "epoch cap" and plan.total_steps == MAX_AUTO_EPOCHS * plan.steps_per_epoch
    assert plan.rounds == ROUNDS
    assert RunPlan.make(TrainConfig(epochs=3 * MAX_AUTO_EPOCHS), tiny, 2).bound == "epochs"  # set: not capped


def test_a_budget_far_below_the_collection_trains_on_a_sample_of_its_documents(tmp_path):
    # Every document was tokenised and held (each chunk with up to 2,112 tokens of bag-of-words
    # context) to train on 3M tokens of them: memory and time grew with the collection.
    from conftest import write_collection
    from vecjob.config import DataConfig, TokenizerConfig
    from vecjob.dataset import SAMPLE_SALT, id_share, training_sample
    from vecjob.trainer import train_model

    assert training_sample(TrainConfig(), 600_000_000, 1_000_000) == pytest.approx(0.01)
    assert training_sample(TrainConfig(epochs=2), 600_000_000, 1_000_000) == 1.0  # epochs: every document
    assert training_sample(TrainConfig(), 5_000_000, 1_000_000) == 1.0  # the budget covers it
    assert training_sample(TrainConfig(tokens=10), 600_000, 20_000) == pytest.approx(0.05)  # 1,000 documents

    write_collection(tmp_path / "data", [2_500, 2_500])
    manifest = train_model(DataConfig(paths=[str(tmp_path / "data")]), tmp_path / "m",
                           TokenizerConfig(max_vocab=200, min_count=1, max_len=16),
                           ModelConfig(dim=8, embed_dim=8, hidden_dim=16),
                           TrainConfig(tokens=25_000, batch_size=32, patience=100))
    counts = manifest["counts"]
    drawn = sum(id_share(f"doc-{i:05d}", SAMPLE_SALT) < counts["sample"] for i in range(5_000))
    # About 170k tokens: the budget's sample is 2 × 25k of them, above the 1,000 documents' share (0.2).
    assert 0.2 < counts["sample"] < 0.4 and counts["not_sampled"] == 5_000 - drawn
    assert counts["documents"] == 5_000 and counts["train_tokens"] < 0.4 * 170_000


def test_a_budgeted_run_sees_its_tokens_and_says_why_it_stopped():
    model_cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    train, val = _chunks(64), _chunks(16, 1)
    tokens = int(train.lengths.sum())
    cfg = TrainConfig(tokens=5 * tokens, batch_size=16, patience=100)
    state = train_loop(build_model(model_cfg, 40, seed=0), train, val, model_cfg, cfg, device=torch.device("cpu"))
    assert state.stop_reason == "budget" and state.history[-1]["epochs"] == pytest.approx(5, rel=0.05)
    assert state.round == 10  # ten validations, whatever the collection size
    line = round_line(state.history[-1])
    assert line.startswith("train round 10/10: 5.0") and "val loss" in line and line.endswith("≤ 0 s left")
    # The time left is the remaining rounds' at this pace, in minutes once it is long, and never past
    # the wall-clock cap's remainder and the round that reaches it.
    halfway = {**state.history[-1], "round": 5, "rounds_planned": 10, "seconds": 600.0}
    assert round_line(halfway).endswith("≤ 10.0 min left")
    assert round_line(halfway, max_minutes=11).endswith("≤ 3.0 min left")  # 60 s to the cap + a round of 120 s
    assert round_line({**halfway, "seconds": 30.0}).endswith("≤ 30 s left")
    assert round_line(halfway, max_minutes=10).endswith("≤ 0 s left")  # this round reached the cap: the last
    # A round that reaches the wall-clock cap is the last one.
    capped = cfg.model_copy(update={"max_minutes": 1e-9})
    state = train_loop(build_model(model_cfg, 40, seed=0), train, val, model_cfg, capped, device=torch.device("cpu"))
    assert state.stop_reason == "time" and state.round == 1 and state.best_weights is not None


def test_a_collection_too_small_to_hold_documents_out_reports_no_validation_figures_not_zeros():
    # With no held-out chunk, every round said "val loss 0.000" and the summary "val loss 0": a
    # perfect model, to a reader. The training loss picks the best round then.
    from vecjob.chunks import ChunkSet

    model_cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    empty = ChunkSet.from_chunks([])
    state = train_loop(build_model(model_cfg, 40, seed=0), _chunks(32), empty, model_cfg,
                       TrainConfig(epochs=3, batch_size=16, patience=100), device=torch.device("cpu"))
    assert state.round == 3 and not any(k.startswith("val_") for h in state.history for k in h)
    assert state.best_round == 1 + int(np.argmin([h["train_loss"] for h in state.history]))
    assert "no validation documents" in round_line(state.history[-1])


def _train_as_rank(rank: int, world: int, rendezvous: str, out: str) -> None:
    """One DDP rank, set up as `vecjob.ray_train.worker_loop` sets up a worker (rank 0 alone builds
    the model from the data; then the wrap), trained for two epochs by the library loop; saves the
    buffers it trained with and its weights."""
    from torch.nn.parallel import DistributedDataParallel

    from vecjob.training import DDP_OPTIONS

    torch.distributed.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model_cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    train = _chunks(64)
    model = build_model(model_cfg, 40, seed=rank, train=train if rank == 0 else None)
    wrapped = DistributedDataParallel(model, **DDP_OPTIONS)
    train_loop(wrapped, train, _chunks(16, seed=1), model_cfg, TrainConfig(epochs=2, batch_size=8),
               device=torch.device("cpu"), rank=rank, world_size=world)
    torch.save({"buffers": dict(model.named_buffers()), "weights": model.state_dict()}, f"{out}/rank-{rank}.pt")
    torch.distributed.destroy_process_group()


def test_every_training_rank_trains_with_rank_0_s_buffers_and_weights(tmp_path):
    # Only rank 0 computes the TF-IDF target's idf and LSA basis; DDP no longer copies buffers itself.
    torch.multiprocessing.spawn(_train_as_rank, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank-{rank}.pt") for rank in range(2))
    assert first["buffers"]["lsa_basis"].abs().sum() > 0 and (first["buffers"]["tfidf_idf"] != 1).any()
    for name, buffer in first["buffers"].items():
        assert torch.equal(buffer, second["buffers"][name]), name
    for name, weight in first["weights"].items():
        assert torch.equal(weight, second["weights"][name]), name


def test_a_model_of_other_weight_shapes_does_not_resume_the_same_runs_checkpoint(monkeypatch):
    # An interrupted run resumes from the checkpoint of the run its job fingerprint names. Rerun under a
    # vecjob whose model has other shapes for the same settings (the TF-IDF head did, once), it loaded
    # that checkpoint and failed on a size mismatch in every worker.
    from vecjob import model
    from vecjob.config import TokenizerConfig
    from vecjob.trainer import job_fingerprint

    job = (["input-fingerprint"], TokenizerConfig(), ModelConfig(), TrainConfig(), 20_000, 2, False)
    first = job_fingerprint(*job)
    assert job_fingerprint(*job) == first
    monkeypatch.setattr(model, "ADAPTIVE_CUTOFFS", (2_000, 6_000))  # the output layer's shapes change
    assert job_fingerprint(*job) != first


def test_resuming_mid_epoch_continues_the_same_step_sequence():
    """Rounds shorter than an epoch: a run stopped after a round and resumed equals an unbroken one."""
    model_cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16, variant="plain")
    train, val = _chunks(256), _chunks(16, 1)
    cfg = TrainConfig(tokens=int(train.lengths.sum()) * 2, batch_size=8, patience=100)
    whole = build_model(model_cfg, 40, seed=0)
    unbroken = train_loop(whole, train, val, model_cfg, cfg, device=torch.device("cpu"))
    assert unbroken.round >= 10 and unbroken.history[0]["epochs"] < 1  # rounds inside epochs

    class Stop(Exception):
        pass

    def stop_after_three(state, optimizer, metrics):
        if state.round == 3:
            raise Stop(state, optimizer.state_dict())

    broken = build_model(model_cfg, 40, seed=0)
    with pytest.raises(Stop) as stopped:
        train_loop(broken, train, val, model_cfg, cfg, device=torch.device("cpu"), on_round_end=stop_after_three)
    state, optimizer_state = stopped.value.args
    resumed = train_loop(broken, train, val, model_cfg, cfg, device=torch.device("cpu"), state=state,
                         optimizer_state=optimizer_state)
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in unbroken.history])
    assert all(torch.equal(whole.state_dict()[k], broken.state_dict()[k]) for k in whole.state_dict())


def test_lsa_warm_start_places_words_of_one_topic_together():
    from vecjob.warm_start import lsa_term_vectors

    # Two topics: words 4-9 co-occur in one half of the bags, words 10-15 in the other.
    rng = np.random.default_rng(0)
    bags = [rng.choice(np.arange(4, 10) if i % 2 else np.arange(10, 16), 8) for i in range(200)]
    data = ChunkSet.from_chunks(bags)
    vectors = lsa_term_vectors(data.flat, data.offsets, 20, 8)
    assert vectors.shape == (20, 8) and not vectors[:4].any() and not vectors[16:].any()  # specials, unseen
    unit = vectors[4:16] / np.linalg.norm(vectors[4:16], axis=1, keepdims=True)
    cos = unit @ unit.T
    assert cos[:6, :6].mean() > 0.6 and np.abs(cos[:6, 6:]).mean() < 0.1
    model = build_model(ModelConfig(dim=8, embed_dim=8, hidden_dim=16), 20, seed=0, train=data)
    assert torch.allclose(model.embedding.weight, torch.from_numpy(vectors))
    untrained = build_model(ModelConfig(dim=8, embed_dim=8, hidden_dim=16), 20, seed=0)
    assert not torch.allclose(untrained.embedding.weight, torch.from_numpy(vectors))


def test_the_heads_target_space_is_lsa_over_the_topic_words_and_the_embeddings_start_from_every_word():
    # Two topics (words 4-9, 10-15) and a comma (16) in every bag: the target leaves the comma out.
    rng = np.random.default_rng(0)
    bags = [np.append(rng.choice(np.arange(4, 10) if i % 2 else np.arange(10, 16), 8), [16, 16]) for i in range(200)]
    data = ChunkSet.from_chunks(bags)
    topic_words = np.arange(20) < 16
    topic_words[:4] = False
    cfg = ModelConfig(dim=8, embed_dim=8, hidden_dim=16)
    model = build_model(cfg, 20, seed=0, train=data, topic_words=topic_words)
    assert model.embedding.weight[16].abs().sum() > 0 and not model.lsa_basis[16].any()
    assert model.lsa_basis[4:16].abs().sum(1).min() > 0
    # A collection of no topic word keeps the target over all of its words.
    everything = build_model(cfg, 20, seed=0, train=data)
    nothing = build_model(cfg, 20, seed=0, train=data, topic_words=np.zeros(20, bool))
    assert everything.lsa_basis[16].any() and torch.equal(nothing.lsa_basis, everything.lsa_basis)


def test_the_lsa_warm_start_reads_a_sample_of_bags_holding_at_most_max_bag_tokens(monkeypatch):
    # A news collection's bags hold several times its tokens: every worker factorised all of them.
    import vecjob.warm_start as warm_start

    # 1,000 bags of 10 tokens: two common words and one word of the bag's own (ids 6 .. 1,005).
    bags = [np.array([4, 5] * 4 + [6 + i, 4], np.int32) for i in range(1_000)]
    data = ChunkSet.from_chunks(bags)
    whole = warm_start.lsa_term_vectors(data.flat, data.offsets, 1_006, 8)
    assert np.count_nonzero(np.abs(whole[6:]).sum(1)) == 1_000  # every bag read: every own word placed
    monkeypatch.setattr(warm_start, "MAX_BAG_TOKENS", 1_000)  # a tenth of the tokens: about 100 bags
    sampled = warm_start.lsa_term_vectors(data.flat, data.offsets, 1_006, 8)
    assert np.count_nonzero(np.abs(sampled[6:]).sum(1)) == 100
    monkeypatch.setattr(warm_start, "MAX_BAG_TOKENS", 10_000)  # all of them: as before the cap
    np.testing.assert_array_equal(warm_start.lsa_term_vectors(data.flat, data.offsets, 1_006, 8), whole)


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


def test_a_document_updated_in_a_later_shard_is_trained_on_once_as_it_reads_now(tmp_path):
    # A later shard's row of an id replaces an earlier one's in the vectors; training read both, so a
    # collection of nightly updates trained on every old version of a document, its old words included.
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from conftest import train_tiny_model, write_collection

    data = tmp_path / "in"
    first, second = write_collection(data, [30, 30])
    for path, text in ((first, "obsolete wording " * 4), (second, "current wording " * 4)):
        table = pq.read_table(path)
        pq.write_table(pa.concat_tables([table, pa.table({"id": ["updated"], "text": [text], "label": ["x"]}).cast(table.schema)]), path)
    model = train_tiny_model(tmp_path / "m", data)
    counts = json.loads((model / "manifest.json").read_text())["counts"]
    assert counts["documents"] == 61 and counts["superseded"] == 1
    words = (model / "vocab.tsv").read_text(encoding="utf-8")
    assert "current" in words and "obsolete" not in words


def test_texts_read_a_batch_at_a_time_train_as_a_shard_read_whole_does(tmp_path, monkeypatch):
    # Training read each shard whole, three times over (vocabulary, drift baseline, chunks): one file
    # of a million texts, as pandas writes it, was held whole each time.
    import pyarrow as pa
    import pyarrow.parquet as pq

    import vecjob.dataset as dataset
    from vecjob.config import TokenizerConfig
    from vecjob.dataset import build_vocab, heldout_unknown_share, latest_rows, training_chunks
    from vecjob.parquet_io import check_shards
    from vecjob.tokenizer import Tokenizer

    from conftest import synthetic_texts

    texts, _ = synthetic_texts(400, 0)
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(300)], "text": texts[:300]}), tmp_path / "in" / "a.parquet")
    # The second shard updates 50 of the first's documents: the rows read must follow each batch's rows.
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(250, 350)], "text": texts[300:400]}),
                   tmp_path / "in" / "b.parquet")
    shards = check_shards(str(tmp_path / "in"), "id", "text")
    tok_cfg, train_cfg = TokenizerConfig(max_vocab=300, min_count=1, max_len=16), TrainConfig(val_fraction=0.2)

    def read_all():
        latest = latest_rows(shards, "id")
        vocab = build_vocab(shards, "id", "text", tok_cfg, latest)
        train, val, counts = training_chunks(shards, Tokenizer(vocab, tok_cfg.max_len), "id", "text", train_cfg,
                                             bow_context=8, latest=latest, sample=0.5)
        return vocab, train, val, counts, heldout_unknown_share(shards, "id", "text", tok_cfg, 0.2, latest)

    whole = read_all()
    monkeypatch.setattr(dataset, "TEXT_ROWS", 64)
    batched = read_all()
    assert whole[0] == batched[0] and whole[3] == batched[3] and whole[4] == batched[4]
    assert whole[3].superseded == 50 and 0 < whole[3].not_sampled < 350
    for a, b in zip(whole[1:3], batched[1:3]):
        np.testing.assert_array_equal(a.flat, b.flat)
        np.testing.assert_array_equal(a.context.flat, b.context.flat)
