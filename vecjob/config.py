"""Typed configuration: one frozen model per stage, composed into a job spec loaded from TOML.

Every field has a default and a short reason. The resolved config is saved beside every output.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path
from typing import Annotated, Literal

import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vecjob import storage
from vecjob.errors import ConfigError


# An integer setting: TOML's true is not 1, and no value overflows the 64-bit integers that numpy,
# polars and torch take it as. A field with an upper bound of its own is `Annotated[Int, Field(le=…)]`:
# pydantic keeps the last bound of a kind, and in `x: Int = Field(le=…)` that is this one.
Int = Annotated[int, Strict(), Field(le=2**62)]


class _Frozen(BaseModel):
    # TOML reads inf and nan: an infinite learning rate or loss weight trains a model of NaN weights.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# Settings that were removed (they lost where bench/README.md measured them, or nothing set them),
# with the value vecjob now always behaves as: a job spec or a saved model's config holding that value
# (or any value, for None) still loads; another value is refused with what to change.
RETIRED = {"shuffle_window": 0, "bow_information_power": 0.0, "lr_schedule": "constant", "lr_min_fraction": None,
           "num_layers": 1, "bidirectional": True, "pooling": "meanmax", "weight_decay": 0.0, "grad_clip": 1.0,
           "output_layer": "adaptive", "init_embeddings": "lsa", "precision": "fp32"}


REMOVE_THE_KEY = ": remove the key"


def _drop_retired(raw: object) -> object:
    if not isinstance(raw, dict):
        return raw
    for key in RETIRED.keys() & raw.keys():
        if RETIRED[key] is not None and raw[key] != RETIRED[key]:
            raise ValueError(f"{key} = {raw[key]!r} is no longer supported (vecjob now always behaves as "
                             f"{key} = {RETIRED[key]!r}){REMOVE_THE_KEY}")
    return {k: v for k, v in raw.items() if k not in RETIRED}


class DataConfig(_Frozen):
    paths: list[str] = Field(default_factory=list)  # Parquet files, directories or globs
    id_col: str = Field(default="id", min_length=1)
    text_col: str = Field(default="text", min_length=1)
    strict: StrictBool = False  # null/empty texts become an error instead of being skipped and counted

    @model_validator(mode="after")
    def _two_columns(self) -> "DataConfig":
        if self.id_col == self.text_col:
            raise ValueError(f"id_col and text_col are both '{self.id_col}': a document's id is another column")
        return self


class TokenizerConfig(_Frozen):
    max_vocab: Int = Field(default=20_000, ge=5)  # including the 4 special tokens
    min_count: Int = Field(default=2, ge=1)  # rarer words map to <unk>
    # Tokens per chunk; longer documents are split and their chunk vectors averaged
    max_len: Int = Field(default=64, ge=1)


class ModelConfig(_Frozen):
    _retired = model_validator(mode="before")(_drop_retired)

    variant: Literal["plain", "denoising", "variational"] = "denoising"
    dim: Int = Field(default=128, ge=1)  # the document vector (bottleneck) size
    embed_dim: Int = Field(default=128, ge=1)
    # The LSTM width: wider trains slower on CPU and gained nothing clear on a GPU (bench/README.md).
    # At least 16: the output layer's rare-word clusters see it cut to 1/4 and 1/16 of this width.
    hidden_dim: Int = Field(default=128, ge=16)
    dropout: StrictFloat = Field(default=0.1, ge=0.0, lt=1.0)
    # Denoising: corrupt the encoder input, reconstruct the clean text (TSDAE: heavy deletion works best).
    delete_prob: StrictFloat = Field(default=0.4, ge=0.0, le=1.0)
    mask_prob: StrictFloat = Field(default=0.1, ge=0.0, le=1.0)
    # Dropping decoder inputs stops the decoder acting as a language model that ignores the vector.
    word_dropout: StrictFloat = Field(default=0.25, ge=0.0, le=1.0)
    # Predict the chunk's bag of words from the vector alone: forces topical content into it.
    bow_weight: StrictFloat = Field(default=2.0, ge=0.0)
    # The bag-of-words target also holds the words up to this many tokens either side of the chunk in
    # its document, so each chunk's vector carries its document's topic, not only its own words; 1024
    # takes most news articles whole and sharpened topic clusters (bench/HISTORY.md). 0 = the chunk's
    # own words. Training-only: training batches hold up to (1 + 2·context/max_len)× the tokens.
    bow_context: Annotated[Int, Field(ge=0, le=1024)] = 1024
    # Regress the vector, through a linear head, onto the LSA coordinates (the collection's own
    # directions over its words, Vocab.topic_words, not its punctuation) of the same bag-of-words
    # target's L2-normalised TF-IDF vector: squared error, 0..~1 per chunk. The term pulls into z the
    # word-level directions a linear probe reads; a larger weight costs topic clusters (bench/README.md,
    # bench/HISTORY.md). 0 = off.
    # Training-only, like the bag-of-words head.
    tfidf_weight: StrictFloat = Field(default=4.0, ge=0.0)
    # Variational: KL weight annealed linearly from 0 over kl_anneal_steps; free bits per dimension.
    kl_weight: StrictFloat = Field(default=1.0, ge=0.0)
    kl_anneal_steps: Int = Field(default=2_000, ge=0)
    free_bits: StrictFloat = Field(default=0.05, ge=0.0)


class TrainConfig(_Frozen):
    _retired = model_validator(mode="before")(_drop_retired)

    # How long training runs. "auto": as many steps as show the model `tokens` training tokens, so a
    # 300-document collection is seen many times and a large one in part; validated 10 times in all.
    # A number: that many epochs, validated after each.
    epochs: Int | Literal["auto"] = "auto"
    # The token budget of epochs = "auto": what an autoencoder needs to learn a collection's
    # vocabulary in context, whatever the collection's size (bench/README.md, "Vector quality on any
    # collection").
    tokens: Int = Field(default=3_000_000, gt=0)
    # Training stops after the round in which it reaches this many minutes (0 = no cap), keeping the
    # best round's weights: a bound on what a nightly run spends on a collection larger than expected.
    max_minutes: StrictFloat = Field(default=60.0, ge=0.0)
    batch_size: Int = Field(default=64, ge=1)  # chunks per step per worker
    # Constant throughout: a cosine decay ended at a higher validation loss (bench/HISTORY.md)
    lr: StrictFloat = Field(default=2e-3, gt=0.0)
    # Documents held out for validation (by id hash, stable across runs)
    val_fraction: StrictFloat = Field(default=0.05, gt=0.0, lt=1.0)
    patience: Int = Field(default=3, ge=1)  # validations without improvement before stopping
    seed: Int = Field(default=0, ge=0)
    # 0 = auto: one per GPU when the cluster has GPUs, else one per CPU (at most 8); never more than
    # training chunks. One CPU worker on the embedded Ray trains in the command's own process.
    workers: Int = Field(default=0, ge=0)
    use_gpu: Literal["auto", "yes", "no"] = "auto"
    gpus_per_worker: StrictFloat = Field(default=1.0, gt=0.0)
    # A dead Ray Train worker restarts the group from the last checkpoint this many times
    max_failures: Int = Field(default=1, ge=0)
    # 0 = all; otherwise a deterministic sample bounds the corpus held in memory
    max_train_chunks: Int = Field(default=0, ge=0)
    storage_path: str = ""  # the round checkpoints; "" = beside the model dir. Must be shared on multi-node.
    # `vecjob run` keeps a trained model until asked (--retrain), until it is this many days old
    # (0 = no age limit), or until the night's new documents drift from what it was trained on.
    max_model_age_days: Int = Field(default=0, ge=0)
    # Drift: the share of the night's new tokens the vocabulary does not know, minus that share in
    # held-out training documents. Unknown tokens carry nothing into a vector, so this is what the
    # vocabulary loses on the new text beyond what it lost on unseen text of its own collection. The
    # default lies between what the next documents of one corpus and another corpus measured
    # (bench/README.md, "Drift").
    retrain_drift: StrictFloat = Field(default=0.07, gt=0.0, le=1.0)

    def what_shapes_the_weights(self) -> dict:
        """The settings a trained model depends on: not where checkpoints go or when to retrain."""
        return self.model_dump(exclude={"storage_path", "max_failures", "max_model_age_days", "retrain_drift"})

    @field_validator("epochs")
    @classmethod
    def _positive_epochs(cls, epochs: int | str) -> int | str:
        if epochs != "auto" and epochs < 1:
            raise ValueError('must be "auto" or at least 1')
        return epochs


class EncodeConfig(_Frozen):
    # Chunks per forward pass; 0 = auto: 128 on CPU (larger batches fall out of the cache and run
    # slower, bench/README.md), 2048 on GPU.
    batch_size: Int = Field(default=0, ge=0)
    # Encoder actors; 0 = auto (one per GPU, else one per CPU; never more than units of work)
    concurrency: Int = Field(default=0, ge=0)
    # A unit of work: row groups of one shard up to this many rows, or a slice of this many rows of a
    # larger row group (at most 16 a group); small enough to spread a shard over the encoders.
    rows_per_task: Int = Field(default=4_096, ge=1)
    keep_columns: list[str] = Field(default_factory=list)  # input columns copied into the vector shards
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # The encoder LSTM's arithmetic; auto = bf16 on a CPU that computes it in hardware (AVX512-BF16,
    # AMX), where it is faster and the vectors keep nearly all their neighbours (bench/README.md), else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    @field_validator("keep_columns")
    @classmethod
    def _keepable(cls, columns: list[str]) -> list[str]:
        for col in columns:
            if col in ("id", "vector"):  # every vector shard's own columns
                raise ValueError(f"'{col}': every vector shard has a column of that name already")
        if len(set(columns)) < len(columns) or "" in columns:
            raise ValueError(f"a column named twice or an empty name in {columns}")
        return columns


class IndexConfig(_Frozen):
    factory: str = "auto"  # or any FAISS factory string: Flat, HNSW32, IVF1024,Flat, IVF1024,PQ32, ...
    metric: Literal["cosine", "l2"] = "cosine"
    recall_queries: Int = Field(default=500, ge=1)  # queries sampled to measure recall@10 against exact search
    # IVF nprobe (HNSW efSearch) is raised until the sample reaches this; 0 keeps the lowest, fastest
    target_recall: StrictFloat = Field(default=0.95, ge=0.0, le=1.0)
    seed: Int = Field(default=0, ge=0)


class ClusterConfig(_Frozen):
    k: Int | Literal["auto"] = 5  # "auto": the best silhouette over k = 2..20
    seeds: Int = Field(default=3, ge=1)  # restarts; the lowest-objective run is kept
    iterations: Int = Field(default=25, ge=1)
    seed: Int = Field(default=0, ge=0)

    @field_validator("k")
    @classmethod
    def _at_least_two(cls, k: int | str) -> int | str:
        if k != "auto" and k < 2:  # refused when the spec loads, not after the stages before it ran
            raise ValueError('must be "auto" or at least 2')
        return k


class SentimentConfig(_Frozen):
    labels: list[str] = Field(default_factory=list)  # Parquet with id + label (+ split); [] = data.paths
    # Rows with split == "train" train the classifier; "test" evaluates it. Labels without this column
    # are split by id hash (a fifth for test), so the evaluation never scores rows the classifier fitted.
    split_col: str = "split"
    label_col: str = "label"

    @field_validator("label_col")
    @classmethod
    def _not_the_split(cls, label_col: str, info: ValidationInfo) -> str:
        if label_col == info.data.get("split_col"):
            raise ValueError(f"'{label_col}' is the split column too (split_col): rows are chosen by their split, "
                             "so every training row would have the label 'train'; name another column")
        return label_col


class JobSpec(_Frozen):
    """A scheduled run: which data, which stages, where outputs go."""

    name: str = "job"
    out: str = "runs/{date}"  # output root, a local path or s3:// / gs://; {date} expands to the run date
    # Run in the pipeline's order whatever order the spec lists them in (each stage reads the one before).
    stages: list[str] = Field(default_factory=lambda: ["train", "encode", "index"])  # names in vecjob.stages.STAGES
    corpus: str = ""  # builtin corpus to materialise into data.paths[0] (e.g. "bbc")
    address: str = ""  # Ray address; "" = RAY_ADDRESS or an embedded local Ray
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    sentiment: SentimentConfig = Field(default_factory=SentimentConfig)

    @field_validator("stages")
    @classmethod
    def _pipeline_order(cls, stages: list[str]) -> list[str]:
        from vecjob.stages import STAGES

        if not stages:
            raise ValueError(f"no stage to run: name at least one of {', '.join(STAGES)}")
        if unknown := [s for s in stages if s not in STAGES]:
            raise ValueError(f"unknown stage '{unknown[0]}' (the stages: {', '.join(STAGES)})")
        if len(set(stages)) != len(stages):
            raise ValueError(f"a stage is listed twice: {stages}")
        return sorted(stages, key=list(STAGES).index)

    @model_validator(mode="after")
    def _needs_data(self, info: ValidationInfo) -> "JobSpec":
        settings_only = (info.context or {}).get("settings_only")  # --config: DATA comes from the command line
        if (not self.data.paths and not settings_only) or not all(p.strip() for p in self.data.paths):
            raise ValueError("data.paths is empty or holds an empty path: name the Parquet files, directories or "
                             "globs to read")
        if not self.out.strip():
            raise ValueError("out is empty: name the run dir (a local path or s3:// / gs://)")
        if "corpus" in self.stages and not self.corpus:
            raise ValueError("the corpus stage needs corpus = \"bbc\" (the built-in corpus to write)")
        return self


def load_job_spec(path: str | Path, run_date: _dt.date | None = None, out: str | None = None,
                  settings_only: bool = False) -> JobSpec:
    """Parse and validate a TOML job spec; relative paths resolve against the spec's folder.
    `out` (the --out flag: absolute or a URI) replaces the spec's own. `settings_only` (a command's
    --config, whose data the command line names) lets the spec name no data."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark, as Windows editors write
    except FileNotFoundError:
        raise ConfigError(f"{path}: job spec not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a job spec (a TOML file)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text, as a TOML job spec is") from None
    if out is not None:
        raw["out"] = out
    try:
        spec = JobSpec.model_validate(raw, context={"settings_only": settings_only})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {first_error(exc)}") from None
    try:
        return resolve_paths(spec, path.parent, run_date or _dt.date.today())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


PLACEHOLDER = re.compile(r"\{[A-Za-z_]\w*\}")


def resolve_paths(spec: JobSpec, base: Path, run_date: _dt.date) -> JobSpec:
    date = run_date.isoformat()

    def resolve(p: str, key: str, written: bool = False) -> str:
        if key == "out" and "{out}" in p:
            raise ConfigError(f"out {p!r}: {{out}} stands for the run dir, which this key names: give it a path "
                              "(it may hold {date}, the run date)")
        inside_out = p.startswith("{out}")
        unknown = [f for f in PLACEHOLDER.findall(p) if f != "{date}" and not (f == "{out}" and inside_out)]
        if unknown:  # a mistyped {date} would otherwise name a folder
            raise ConfigError(f"{key} {p!r}: {unknown[0]} is not filled in: a path may hold {{date}} (the run date) "
                              "and start with {out} (the run dir)")
        if inside_out:  # a path inside the run dir follows it, wherever --out puts it
            return storage.join(out, p.replace("{out}", "").replace("{date}", date).lstrip("/"))
        p = p.replace("{date}", date)
        storage.check_location(p, key)
        if written:
            storage.check_lasting(p, key)
        # "~" is the home folder, as the shell reads it (TOML expands nothing; the run went to a folder "~")
        return p if storage.is_uri(p) else str((base / os.path.expanduser(p)).resolve())

    out = resolve(spec.out, "out", True)

    corpus_writes = "corpus" in spec.stages  # into data.paths[0]
    data = spec.data.model_copy(update={"paths": [resolve(p, "data.paths", corpus_writes and i == 0)
                                                  for i, p in enumerate(spec.data.paths)]})
    sentiment = spec.sentiment.model_copy(
        update={"labels": [resolve(p, "sentiment.labels") for p in spec.sentiment.labels]})
    train = spec.train
    if train.storage_path:
        train = train.model_copy(update={"storage_path": resolve(train.storage_path, "train.storage_path", True)})
    return spec.model_copy(update={"out": out, "data": data, "sentiment": sentiment,
                                   "train": train})


# Where a value fails every member of a union (epochs: a number or "auto"), pydantic names each member
# after the key; the user wrote only the key.
_UNION_MEMBER = re.compile(r"^(int|float|str|bool|constrained-\w+|literal\[.*\])$")


def first_error(exc: ValidationError) -> str:
    """The first problem in one line: the key, and what it should be (every alternative, for a union)."""
    errors = exc.errors()

    def key(err: dict) -> str:
        return ".".join(str(p) for p in err["loc"] if not _UNION_MEMBER.match(str(p)))

    where = key(errors[0])
    if errors[0]["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    message = " or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errors if key(e) == where))
    return f"{where}: {message}" if where else message


_FLAG = {"keep_columns": "--keep"}  # a field whose flag is not its name


def override(model: BaseModel, **changes) -> BaseModel:
    """Apply CLI flags (None means 'not given') on top of a config, re-validating the result."""
    given = {k: v for k, v in changes.items() if v is not None}
    if not given:
        return model
    try:
        return type(model).model_validate({**model.model_dump(), **given})
    except ValidationError as exc:
        key = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
        typed = _FLAG.get(key, "--" + key.replace("_", "-"))  # the flag the user typed, not the field
        flag = f"{typed}: " if key in given else ""
        raise ConfigError(flag + first_error(exc).removeprefix(f"{key}: ")) from None
