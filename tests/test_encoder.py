import shutil

import numpy as np
import polars as pl
import pytest
import torch

from vecjob.encoder import DocumentEncoder, cpu_runs_bf16_lstm, document_means, native_bf16, resolve_precision
from vecjob.errors import ArtifactError, ConfigError, InputError
from vecjob.tokenizer import TOKENIZER_VERSION
from vecjob.chunks import ChunkSet


def test_same_text_same_vector_across_instances(tiny_model_dir):
    texts = ["Match goal team league.", "Recipe bake flour oven sugar and butter."]
    a = DocumentEncoder(tiny_model_dir, device="cpu").encode_texts(texts).vectors
    b = DocumentEncoder(tiny_model_dir, device="cpu").encode_texts(list(reversed(texts))).vectors[::-1]
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and not np.allclose(a[0], a[1])


def test_null_blank_and_unknown_only_texts_are_flagged(tiny_model_dir):
    out = DocumentEncoder(tiny_model_dir, device="cpu").encode_texts(["goal team", None, "   ", ""])
    assert out.ok.tolist() == [True, False, False, False]
    assert (out.vectors[1:] == 0).all()


def test_long_document_is_the_length_weighted_mean_of_its_chunks(tiny_model_dir):
    enc = DocumentEncoder(tiny_model_dir, device="cpu", precision="fp32")  # `embed` below is float32
    max_len = enc.loaded.tokenizer.max_len
    words = ("match goal team league coach season player win " * 5).split()[: max_len + max_len // 2]
    doc = " ".join(words)
    ids = enc.loaded.tokenizer.encode([doc])[0]
    chunks = enc.loaded.tokenizer.chunk(ids)
    assert [len(c) for c in chunks] == [max_len, max_len // 2]
    chunk_vecs = enc.loaded.model.embed(ChunkSet.from_chunks(chunks).collate(np.arange(2))).numpy()
    expected = (chunk_vecs * np.array([[len(c)] for c in chunks])).sum(0) / len(ids)
    np.testing.assert_allclose(enc.encode_texts([doc]).vectors[0], expected, rtol=1e-5, atol=1e-6)


def test_document_means_weigh_chunks_by_length_and_leave_chunkless_documents_zero():
    chunk_vecs = np.array([[1.0, 0.0], [4.0, 3.0], [2.0, 2.0]], dtype=np.float32)
    lengths = np.array([3, 1, 5])
    owner = np.array([0, 0, 2])  # document 1 has no chunks (a blank text)
    means = document_means(chunk_vecs, lengths, owner, n_docs=3)
    np.testing.assert_allclose(means, [[7 / 4, 3 / 4], [0.0, 0.0], [2.0, 2.0]])
    assert means.dtype == np.float32


def test_batch_size_changes_vectors_only_within_float_tolerance(tiny_model_dir):
    from conftest import synthetic_texts

    texts, _ = synthetic_texts(120, seed=5)
    small = DocumentEncoder(tiny_model_dir, device="cpu", batch_size=7).encode_texts(texts).vectors
    large = DocumentEncoder(tiny_model_dir, device="cpu", batch_size=512).encode_texts(texts).vectors
    np.testing.assert_allclose(small, large, rtol=1e-4, atol=1e-5)


def test_bf16_arithmetic_keeps_each_vector_and_its_neighbours(tiny_model_dir):
    from conftest import synthetic_texts

    if not cpu_runs_bf16_lstm():
        pytest.skip("this CPU has no bfloat16 LSTM kernel (oneDNN's needs AVX-512)")

    texts, _ = synthetic_texts(200, seed=11)
    encoders = {p: DocumentEncoder(tiny_model_dir, device="cpu", precision=p) for p in ("fp32", "bf16")}
    v32, v16 = (encoders[p].encode_texts(texts).vectors for p in ("fp32", "bf16"))
    assert not np.array_equal(v32, v16)  # the bf16 path ran
    unit32, unit16 = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (v32, v16))
    assert (unit32 * unit16).sum(1).min() > 0.999
    nearest = [np.argsort(-(u @ u.T), axis=1)[:, 1:6] for u in (unit32, unit16)]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(*nearest)])
    assert overlap > 0.9


def test_auto_precision_is_bf16_only_on_a_cpu_that_computes_it_natively():
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native_bf16() else "fp32")
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    if cpu_runs_bf16_lstm():
        assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    else:
        with pytest.raises(ConfigError, match="cannot run the encoder's LSTM in bfloat16"):
            resolve_precision("bf16", torch.device("cpu"))
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16"
    with pytest.raises(InputError, match="fp16"):
        resolve_precision("fp16", torch.device("cpu"))


def test_call_shape_is_a_batch_dict(tiny_model_dir):
    out = DocumentEncoder(tiny_model_dir, device="cpu")({"id": np.array(["a", "b"]), "text": np.array(["goal", "oven"])})
    assert out["vector"].shape == (2, 16) and out["ok"].tolist() == [True, True] and list(out["id"]) == ["a", "b"]


def test_damaged_weights_are_refused_by_the_driver_check_and_by_the_load(tiny_model_dir, tmp_path):
    from vecjob.model_dir import read_model_info

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(weights[: len(weights) // 2])  # a truncated copy
    # The encode driver's check (no torch), then the encoder's full load.
    with pytest.raises(ArtifactError, match="model.pt: cannot load weights"):
        read_model_info(broken)
    with pytest.raises(ArtifactError, match="model.pt: cannot load weights"):
        DocumentEncoder(broken)


def test_incomplete_model_dir_is_refused(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.pt").unlink()
    with pytest.raises(ArtifactError, match="model.pt missing"):
        DocumentEncoder(broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        DocumentEncoder(broken)


def test_model_dir_from_a_newer_format_is_refused(tiny_model_dir, tmp_path):
    import json

    newer = tmp_path / "newer"
    shutil.copytree(tiny_model_dir, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format version 99 is not supported"):
        DocumentEncoder(newer)


def test_model_dir_from_an_older_tokenizer_is_refused(tiny_model_dir, tmp_path):
    import json

    older = tmp_path / "older"
    shutil.copytree(tiny_model_dir, older)
    config = json.loads((older / "config.json").read_text())
    assert config["tokenizer_version"] == TOKENIZER_VERSION
    del config["tokenizer_version"]  # what a model trained before the version was recorded has
    (older / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="trained with tokenizer version 1, .*: retrain the model"):
        DocumentEncoder(older)


def test_a_model_of_the_previous_tokenizer_version_loads_and_keeps_its_tokenisation(tiny_model_dir, tmp_path):
    import json

    previous = tmp_path / "previous"
    shutil.copytree(tiny_model_dir, previous)
    config = json.loads((previous / "config.json").read_text())
    (previous / "config.json").write_text(json.dumps({**config, "tokenizer_version": 2}))
    old, new = DocumentEncoder(previous), DocumentEncoder(tiny_model_dir)
    assert old.loaded.tokenizer.version == 2 and new.loaded.tokenizer.version == TOKENIZER_VERSION == 6
    texts = pl.Series(["goal team league match", "chip robot network"])
    np.testing.assert_array_equal(old.encode_texts(texts).vectors, new.encode_texts(texts).vectors)


def test_a_model_trained_with_other_softmax_cutoffs_still_loads(tiny_model_dir, tmp_path):
    import torch

    from vecjob.model import SequenceAutoencoder
    from vecjob.model_dir import load_model_dir

    older = tmp_path / "older"
    shutil.copytree(tiny_model_dir, older)
    loaded = load_model_dir(older)
    # Models trained before the head was cut have a larger head and other tails: the same encoder,
    # another output layer.
    vocab_size = len(loaded.vocab)
    cutoffs = [vocab_size // 5, vocab_size // 3]
    other = SequenceAutoencoder(loaded.model_cfg, vocab_size, cutoffs=cutoffs)
    assert other.output.cutoffs != loaded.model.output.cutoffs
    other.load_state_dict({k: v for k, v in loaded.model.state_dict().items() if not k.startswith("output.")},
                          strict=False)
    torch.save(other.state_dict(), older / "model.pt")
    again = load_model_dir(older)
    assert again.model.output.cutoffs == [*cutoffs, vocab_size]
    texts = ["goal team league", "flour oven sugar"]
    np.testing.assert_array_equal(DocumentEncoder(older, device="cpu").encode_texts(texts).vectors,
                                  DocumentEncoder(tiny_model_dir, device="cpu").encode_texts(texts).vectors)


def test_a_model_whose_tfidf_head_spans_the_vocabulary_still_loads_and_encodes_alike(tiny_model_dir, tmp_path):
    import torch

    older = tmp_path / "older"
    shutil.copytree(tiny_model_dir, older)
    state = torch.load(older / "model.pt", weights_only=True)
    vocab_size, dim = state["embedding.weight"].shape[0], state["to_z.weight"].shape[0]
    # Models trained before the head regressed onto LSA coordinates map z to every word's weight.
    state["tfidf.weight"], state["tfidf.bias"] = torch.randn(vocab_size, dim), torch.randn(vocab_size)
    torch.save(state, older / "model.pt")
    texts = ["goal team league", "flour oven sugar"]
    np.testing.assert_array_equal(DocumentEncoder(older, device="cpu").encode_texts(texts).vectors,
                                  DocumentEncoder(tiny_model_dir, device="cpu").encode_texts(texts).vectors)
    # Every other weight is still checked against the config.
    state["to_z.bias"] = torch.zeros(dim + 1)
    torch.save(state, older / "model.pt")
    with pytest.raises(ArtifactError, match="'to_z.bias' is"):
        DocumentEncoder(older, device="cpu")


def test_a_chinese_collection_has_a_vocabulary_and_its_topics_apart(tmp_path):
    """Unspaced text: each character is a token, so a Chinese collection trains on what repeats."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import train_tiny_model

    rng = np.random.default_rng(0)
    topics = ["球队比赛进球冠军联赛教练", "银行利率市场经济股票投资"]
    texts = ["".join(rng.choice(list(topics[i % 2]), 12)) + "。" for i in range(160)]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(160)], "text": texts}), tmp_path / "data" / "p.parquet")
    encoder = DocumentEncoder(train_tiny_model(tmp_path / "model", tmp_path / "data"), device="cpu")
    assert set("".join(topics)) <= set(encoder.loaded.tokenizer.vocab.tokens)
    out = encoder.encode_texts(pl.Series(texts))
    unit = out.vectors / np.linalg.norm(out.vectors, axis=1, keepdims=True)
    same = np.arange(160) % 2 == 0
    assert out.ok.all() and (unit[same] @ unit[same].mean(0)).mean() > (unit[~same] @ unit[same].mean(0)).mean()
