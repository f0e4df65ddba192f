"""The model dir: everything the encoder needs, written as one unit.

    config.json   model + tokeniser settings, vocab size
    vocab.tsv     token <TAB> count, id = line number
    model.pt      weights of the best validation round (a state dict; loads with weights_only=True)
    manifest.json data fingerprint, metrics per round, why training stopped, timings, versions, model fingerprint
    curves.png    training curves

`read_model_info` checks a dir and reads what describes it without importing torch (the encode
driver only plans and assembles: torch would add ~0.2 GB to its memory); `load_model_dir` also
rebuilds the model with its weights, for encoders and tests.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from vecjob import FORMAT_VERSION, storage
from vecjob.config import REMOVE_THE_KEY, ModelConfig, TokenizerConfig, first_error
from vecjob.errors import ArtifactError
from vecjob.outputs import staged_dir
from vecjob.parquet_io import (MANIFEST, file_fingerprint, fingerprint, naming, read_json, read_manifest,
                               write_json_atomic)
from vecjob.tokenizer import TOKEN_PATTERNS, TOKENIZER_VERSION, Tokenizer, Vocab

if TYPE_CHECKING:
    import torch

    from vecjob.model import SequenceAutoencoder

CONFIG = "config.json"
WEIGHTS = "model.pt"
MANIFEST_KIND = "vecjob.model"
# Found only when read; a `vecjob run` trains again a model that lost a file, as `vecjob train` does.
_DAMAGED = "if it is damaged, delete it and train again"
TRAINING_ONLY = "tfidf."  # weights the encoder never reads, whose shape changed between versions


@dataclass
class ModelInfo:
    path: Path
    model_cfg: ModelConfig
    tok_cfg: TokenizerConfig
    vocab: Vocab
    manifest: dict
    tokenizer_version: int

    @property
    def fingerprint(self) -> str:
        return self.manifest["model_fingerprint"]

    @property
    def dim(self) -> int:
        return self.model_cfg.dim


@dataclass
class LoadedModel(ModelInfo):
    model: SequenceAutoencoder
    tokenizer: Tokenizer


def write_model_dir(
    out: str | Path,
    model_cfg: ModelConfig,
    tok_cfg: TokenizerConfig,
    vocab: Vocab,
    weights: dict,
    manifest: dict,
    plot_history: bool = True,
) -> dict:
    """Build the dir under a temporary name, then swap it into place; returns the final manifest."""
    with staged_dir(out) as tmp:
        config = {
            "format_version": FORMAT_VERSION,
            "tokenizer_version": TOKENIZER_VERSION,
            "vocab_size": len(vocab),
            "model": model_cfg.model_dump(),
            "tokenizer": tok_cfg.model_dump(),
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        vocab.save(tmp)
        import torch

        with naming(Path(out) / WEIGHTS):
            torch.save(weights, tmp / WEIGHTS)
        model_fp = fingerprint(*(file_fingerprint(tmp / f) for f in (CONFIG, "vocab.tsv", WEIGHTS)))
        manifest = {**manifest, "model_fingerprint": model_fp}
        if plot_history and manifest.get("history"):
            from vecjob.plots import plot_training_curves

            plot_training_curves(manifest["history"], tmp / "curves.png")
        write_json_atomic(manifest, tmp / MANIFEST)
    return manifest


def read_model_info(path: str | Path) -> ModelInfo:
    """Config, vocabulary and manifest of a model dir; any missing or mismatched part is an ArtifactError."""
    path = storage.snapshot(str(path), "model")
    if not path.is_dir():
        raise ArtifactError(f"{path}: model dir not found")
    manifest = read_manifest(path, MANIFEST_KIND, {"model_fingerprint": str})
    for name in (CONFIG, WEIGHTS):
        if not (path / name).exists():
            raise ArtifactError(f"{path}: incomplete model dir, {name} missing")
    # torch.save writes a zip archive; checking that much here lets a driver without torch refuse a
    # damaged file before any encoder actor starts (load_model_dir still checks the contents).
    if not zipfile.is_zipfile(path / WEIGHTS):
        raise ArtifactError(f"{path / WEIGHTS}: cannot load weights (not a torch weights file, or truncated); "
                            f"{_DAMAGED}")
    config = read_json(path / CONFIG)
    trained_with = config.get("tokenizer_version", 1)  # models from before the field used version 1
    if not isinstance(trained_with, int) or trained_with not in TOKEN_PATTERNS:
        raise ArtifactError(
            f"{path}: trained with tokenizer version {trained_with}, this vecjob tokenises with versions "
            f"{', '.join(map(str, TOKEN_PATTERNS))}: retrain the model (vecjob train, or vecjob run retrains it)"
        )
    try:
        model_cfg = ModelConfig.model_validate(config["model"])
        tok_cfg = TokenizerConfig.model_validate(config["tokenizer"])
    except (ValidationError, KeyError) as exc:  # a model no longer supported, or not a vecjob config
        problem = first_error(exc).removesuffix(REMOVE_THE_KEY) if isinstance(exc, ValidationError) else f"no {exc}"
        raise ArtifactError(f"{path / CONFIG}: a model config this vecjob cannot run ({problem}): retrain the model "
                            f"(vecjob train, or vecjob run retrains it)") from None
    vocab = Vocab.load(path)
    if len(vocab) != config.get("vocab_size"):
        raise ArtifactError(f"{path}: vocab.tsv has {len(vocab)} tokens, config says {config.get('vocab_size')}")
    return ModelInfo(path, model_cfg, tok_cfg, vocab, manifest, trained_with)


def load_model_dir(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the encoder from the dir alone; any missing or mismatched part is an ArtifactError."""
    import torch

    from vecjob.model import SequenceAutoencoder, saved_cutoffs

    info = read_model_info(path)
    try:
        state = torch.load(info.path / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
        raise ArtifactError(f"{info.path / WEIGHTS}: cannot load weights ({_first_line(exc)}); {_DAMAGED}") from None
    if not isinstance(state, dict):
        raise ArtifactError(f"{info.path / WEIGHTS}: not a state dict")
    model = SequenceAutoencoder(info.model_cfg, len(info.vocab), saved_cutoffs(state, len(info.vocab)))
    # The TF-IDF head only trains z, and models trained before it regressed onto LSA coordinates hold
    # it at the vocabulary's width: the encoder needs it from neither.
    state = {name: w for name, w in state.items() if not name.startswith(TRAINING_ONLY)}
    expected = {name: w for name, w in model.state_dict().items() if not name.startswith(TRAINING_ONLY)}
    _check_weights_match_config(info, expected, state)
    try:
        model.load_state_dict(state, strict=False)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad files
        raise ArtifactError(f"{info.path / WEIGHTS}: cannot load weights ({_first_line(exc)}); {_DAMAGED}") from None
    model.to(device).eval()
    return LoadedModel(**vars(info), model=model, tokenizer=Tokenizer(info.vocab, info.tok_cfg.max_len,
                                                                         info.tokenizer_version))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _check_weights_match_config(info: ModelInfo, expected: dict, state: dict) -> None:
    """Name what disagrees when config.json does not describe model.pt (torch would dump both state dicts)."""
    where = f"{info.path}: config.json disagrees with model.pt"
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ArtifactError(f"{where}: the weights lack '{missing[0]}' (check model.variant)")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ArtifactError(f"{where}: the weights hold '{extra[0]}', which the config's model has not")
    for name, tensor in expected.items():
        got = tuple(getattr(state[name], "shape", ()))
        if got != tuple(tensor.shape):
            m = info.model_cfg
            raise ArtifactError(
                f"{where}: '{name}' is {list(got)} in the weights, {list(tensor.shape)} by the config "
                f"(model.dim={m.dim}, embed_dim={m.embed_dim}, hidden_dim={m.hidden_dim}, "
                f"vocab_size={len(info.vocab)})"
            )
