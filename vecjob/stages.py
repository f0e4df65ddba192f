"""The stages of a job: one class each, registered in `STAGES` in the order they run.

A stage names its output folder in the run dir, hashes what that output depends on (`fingerprint`:
file contents, the upstream output's fingerprint, its config), says whether this run must make it
(`plan`: not when the fingerprint is the one recorded and the output is whole, which `missing`
checks) and makes it (`run`), returning the figures its summary line shows. `vecjob.pipeline` loops
over the stages a job spec lists. A new stage is one class here and one line in `STAGES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from vecjob import storage
from vecjob.config import JobSpec
from vecjob.errors import ArtifactError, ConfigError
from vecjob.lifecycle import active_model, decide, settings_fingerprint
from vecjob.outputs import first_missing
from vecjob.parquet_io import (
    MANIFEST,
    check_shard,
    discover,
    file_fingerprint,
    fingerprint,
    new_manifest,
    read_json,
    read_manifest,
    require_kept_columns,
    write_json_atomic,
)
from vecjob.tokenizer import TOKENIZER_VERSION
from vecjob.vectors import VectorsDir

UP_TO_DATE = "skipped (up to date)"


@dataclass
class RunContext:
    """What every stage of one `vecjob run` sees."""

    spec: JobSpec
    root: Path  # the run dir on local disk (an object store's local mirror)
    retrain: bool = False
    _data_files: list[str] | None = field(default=None, repr=False)

    @property
    def published_at(self) -> str:
        """Where readers on any node (Ray workers) find the run dir: the store, when there."""
        return storage.lasting(self.root)

    def folder(self, stage: str) -> Path:
        return self.root / STAGES[stage].folder

    def data_files(self) -> list[str]:
        """The input shards' content hashes, read once per run (the corpus stage, which writes them, resets them)."""
        if self._data_files is None:
            self._data_files = storage.each_file(file_fingerprint, discover(self.spec.data.paths))
        return self._data_files

    def data_fingerprint(self) -> str:
        return fingerprint(self.data_files())

    def data_columns(self) -> dict:
        return self.spec.data.model_dump(exclude={"paths"})

    def upstream(self, stage: str, key: str) -> str:
        return read_json(self.folder(stage) / MANIFEST).get(key, "")


@dataclass
class Plan:
    """Whether this run makes a stage's output, and the line that says why not."""

    run: bool
    status: str = ""
    details: dict = field(default_factory=dict)  # recorded in the run manifest (train: the drift measured)
    target: Path | None = None  # where the output goes when not the stage's own folder (a retrained model)


class Stage:
    name: ClassVar[str]
    folder: ClassVar[str]  # in the run dir
    needs: ClassVar[tuple[str, ...]] = ()  # the stages whose outputs it reads
    reads_data: ClassVar[bool] = False  # whether it reads the collection in data.paths

    def check(self, spec: JobSpec) -> None:
        """Refuse a setting this stage cannot run with, before the run writes anything."""

    def fingerprint(self, ctx: RunContext) -> str:
        raise NotImplementedError

    def plan(self, ctx: RunContext, fp: str, recorded: str | None, force: bool) -> Plan:
        """Skipped when `fp`, this run's fingerprint, matches the one the last run recorded and the
        output was published whole."""
        folder = ctx.folder(self.name)
        if force or recorded != fp or not (folder / MANIFEST).exists():
            return Plan(True)
        if problem := self.missing(folder):
            return Plan(True, f"running: {problem}")
        return Plan(False, UP_TO_DATE)

    def missing(self, folder: Path) -> str | None:
        """What the published output lacks (a file deleted by hand or lost in a copy), which its manifest
        alone does not show: a run skipping it as up to date would leave it broken for every reader."""
        return None

    def run(self, ctx: RunContext, plan: Plan) -> dict:
        raise NotImplementedError


class Corpus(Stage):
    """Writes a built-in corpus as Parquet shards into data.paths[0] (in the run dir when `{out}/…`)."""

    name, folder = "corpus", ""

    def check(self, spec: JobSpec) -> None:
        from vecjob.corpus import CORPORA

        if spec.corpus not in CORPORA:
            raise ConfigError(f"corpus: {spec.corpus!r} is not a corpus vecjob ships (available: {', '.join(CORPORA)})")
        if storage.is_glob(spec.data.paths[0]):  # it wrote into a folder named after the pattern ("*.parquet")
            raise ConfigError(f"data.paths: the corpus stage writes into the first path, a folder, and "
                              f"{spec.data.paths[0]!r} is a glob: name the folder")

    def fingerprint(self, ctx: RunContext) -> str:
        from vecjob import __version__

        return fingerprint(self.name, ctx.spec.corpus, __version__)

    def plan(self, ctx: RunContext, fp: str, recorded: str | None, force: bool) -> Plan:
        dest = ctx.spec.data.paths[0]
        written = bool(storage.list_files(dest)) if storage.is_uri(dest) else Path(dest).exists()
        return Plan(False, UP_TO_DATE) if not force and recorded == fp and written else Plan(True)

    def run(self, ctx: RunContext, plan: Plan) -> dict:
        from vecjob.corpus import write_corpus

        dest, inside = ctx.spec.data.paths[0], ctx.published_at.rstrip("/") + "/"
        if storage.is_uri(dest) and dest.startswith(inside):  # published with the run dir, by its mirror
            paths, documents = write_corpus(ctx.spec.corpus, ctx.root / dest[len(inside):], what="data.paths")
        elif storage.is_uri(dest):
            with storage.mirrored(dest, "data.paths") as local:
                paths, documents = write_corpus(ctx.spec.corpus, local, what="data.paths")
        else:
            paths, documents = write_corpus(ctx.spec.corpus, dest, what="data.paths")
        ctx._data_files = None
        return {"documents": documents, "shards_written": len(paths)}


def check_data_columns(spec: JobSpec) -> None:
    """The data's paths and the first and last shards' columns, before the run dir exists: a mistyped
    path or column name is one line then, not after the run started (each shard is checked in full by
    the stage that reads it; a kept column may be missing from older shards, not from both). Data the
    corpus stage writes does not exist yet."""
    if "corpus" not in spec.stages:
        keep = tuple(spec.encode.keep_columns) if "encode" in spec.stages else ()
        check_first_and_last(spec.data.paths, spec.data.id_col, spec.data.text_col, keep)


def check_first_and_last(paths: list[str], id_col: str, text_col: str | None, columns: tuple[str, ...]) -> None:
    """The first and last shards' footers: the id (and text) column in both, each of `columns` in one
    at least (older shards may lack a column a collection gained later)."""
    files = discover(paths)
    ends = [check_shard(p, id_col, text_col, columns) for p in dict.fromkeys((files[0], files[-1]))]
    require_kept_columns(ends, columns)


class Train(Stage):
    """The model is pinned: trained on the first run, then only as `vecjob.lifecycle.decide` says."""

    name, folder = "train", "model"
    reads_data = True

    def fingerprint(self, ctx: RunContext) -> str:
        spec = ctx.spec
        return fingerprint(self.name, ctx.data_columns(), settings_fingerprint(spec.tokenizer, spec.model, spec.train),
                           TOKENIZER_VERSION)

    def plan(self, ctx: RunContext, fp: str, recorded: str | None, force: bool) -> Plan:
        decision = decide(ctx.spec, ctx.folder("train"), ctx.folder("encode"), ctx.retrain or force)
        details = {k: str(v) if isinstance(v, Path) else v for k, v in decision.items() if k not in ("train", "target")}
        if not decision["train"]:
            return Plan(False, "skipped: " + decision["why"], details)
        return Plan(True, "running: " + decision["why"], details, decision["target"])

    def run(self, ctx: RunContext, plan: Plan) -> dict:
        from vecjob.ray_train import RayTrain
        from vecjob.trainer import train_model

        train_cfg = ctx.spec.train
        if storage.is_uri(ctx.published_at) and not train_cfg.storage_path:  # Ray Train needs storage every node reaches
            train_cfg = train_cfg.model_copy(
                update={"storage_path": storage.join(ctx.published_at, storage.TRAIN_STORAGE)})
        spec = ctx.spec
        manifest = train_model(spec.data, plan.target, spec.tokenizer, spec.model, train_cfg,
                               RayTrain(spec.address or None))
        return {**plan.details, **train_headline(manifest)}


def train_headline(model_manifest: dict) -> dict:
    """The figures of the round whose weights were published (the best), not of the last one run,
    and why training stopped."""
    best_round = model_manifest["best_round"]
    best = next((h for h in model_manifest["history"] if h["round"] == best_round), {})
    return {"best_round": best_round, "rounds_run": model_manifest["rounds_run"],
            "epochs_seen": model_manifest["epochs_seen"], "stop_reason": model_manifest["stop_reason"],
            "val_loss": best.get("val_loss"), "val_token_acc": best.get("val_token_acc")}


class Encode(Stage):
    name, folder = "encode", "vectors"
    needs = ("train",)
    reads_data = True

    def check(self, spec: JobSpec) -> None:
        """Encoder actors that need a GPU could never start on a cluster without one, nor encoders in
        bfloat16 on this machine's CPU where it has no kernel for it: refused before the training ahead
        of them, not after it."""
        from vecjob import runtime

        if spec.encode.device == "cuda":
            runtime.connect(spec.address or None)
            if runtime.cluster_cpus_gpus()[1] == 0:
                raise ConfigError('encode.device = "cuda", but the Ray cluster has no GPUs: "auto" encodes on '
                                  "GPUs where there are some, else on CPUs")
        elif not runtime.names_a_cluster(spec.address or None):  # the encoders will run on this machine
            from vecjob.encode_shards import check_local_encoders

            check_local_encoders(spec.encode)

    def missing(self, folder: Path) -> str | None:
        try:
            VectorsDir.open(folder)  # every shard its manifest lists
        except ArtifactError as exc:
            return str(exc)
        return None

    def fingerprint(self, ctx: RunContext) -> str:
        model = read_json(active_model(ctx.folder("train")) / MANIFEST).get("model_fingerprint", "")
        return fingerprint(self.name, ctx.data_fingerprint(), ctx.data_columns(), model, ctx.spec.encode.model_dump())

    def run(self, ctx: RunContext, plan: Plan) -> dict:
        from vecjob.encode_shards import encode_collection
        from vecjob.ray_encode import RayData
        from vecjob.reporting import RowLines

        spec, progress = ctx.spec, RowLines(self.name)  # workers read the model where it is published (lasting)
        return encode_collection(spec.data, active_model(ctx.folder("train")), ctx.folder(self.name), spec.encode,
                                 RayData(spec.address or None), on_rows=progress.on_rows, on_plan=progress.on_plan,
                                 model_published_at=ctx.folder("train"))["counts"]


class Index(Stage):
    name, folder = "index", "index"
    needs = ("encode",)

    def check(self, spec: JobSpec) -> None:
        from vecjob.index import check_factory

        try:
            check_factory(spec.index.factory, spec.model.dim, spec.index.metric)
        except ConfigError as exc:
            raise ConfigError(f"index.factory: {exc}") from None

    def missing(self, folder: Path) -> str | None:
        from vecjob.index import IDS_FILE, INDEX_FILE

        return first_missing(folder, (INDEX_FILE, IDS_FILE))

    def fingerprint(self, ctx: RunContext) -> str:
        return fingerprint(self.name, ctx.upstream("encode", "vectors_fingerprint"), ctx.spec.index.model_dump())

    def run(self, ctx: RunContext, plan: Plan) -> dict:
        from vecjob.index import index_collection

        m = index_collection(ctx.folder("encode"), ctx.folder(self.name), ctx.spec.index, update=True)
        last = m["updates"][-1]
        return {"factory": m["factory"], "ntotal": m["ntotal"], "recall_at_10": m.get("recall_at_10"),
                **{k: last[k] for k in ("action", "why", "added", "removed")}}


class Cluster(Stage):
    name, folder = "cluster", "clusters"
    needs = ("encode",)

    def missing(self, folder: Path) -> str | None:
        from vecjob.cluster import CLUSTER_FILES

        return first_missing(folder, CLUSTER_FILES)

    def fingerprint(self, ctx: RunContext) -> str:
        return fingerprint(self.name, ctx.upstream("encode", "vectors_fingerprint"), ctx.data_fingerprint(),
                           ctx.data_columns(), ctx.spec.cluster.model_dump())

    def run(self, ctx: RunContext, plan: Plan) -> dict:
        from vecjob.cluster import cluster_collection

        spec = ctx.spec
        s = cluster_collection(ctx.folder("encode"), ctx.folder(self.name), spec.cluster.k, spec.cluster,
                               data=spec.data.paths, id_col=spec.data.id_col, text_col=spec.data.text_col, update=True)
        done = read_json(ctx.folder(self.name) / MANIFEST)  # a fit, or the night's vectors assigned to kept centroids
        if done.get("action") == "assigned":  # a silhouette would be the last fit's: not this night's figure
            kept = {key: value for key, value in s["metrics"].items() if key != "silhouette"}
            return {"k": s["k"], "action": "assigned", "added": done["added"], "removed": done["removed"], **kept,
                    "why": done["why"]}
        return {"k": s["k"], "action": "clustered", **s["metrics"], "why": done["why"]}


class Sentiment(Stage):
    name, folder = "sentiment", "sentiment"
    needs = ("encode",)

    def check(self, spec: JobSpec) -> None:
        """The first or last labels shard has the label column: a mistyped sentiment.label_col, or data
        without labels, is one line before the run, not after training and encoding."""
        labels = spec.sentiment.labels or ([] if "corpus" in spec.stages else spec.data.paths)
        if labels:
            check_first_and_last(labels, spec.data.id_col, None, (spec.sentiment.label_col,))

    def missing(self, folder: Path) -> str | None:
        from vecjob.sentiment import CLASSIFIER_FILES, PRED_KIND

        predictions = folder / "predictions"
        if problem := first_missing(folder / "classifier", CLASSIFIER_FILES) or first_missing(predictions, (MANIFEST,)):
            return problem
        try:
            listed = read_manifest(predictions, PRED_KIND, {"shards": list})["shards"]
        except ArtifactError as exc:
            return str(exc)
        return first_missing(predictions, tuple(str(s.get("output")) for s in listed if isinstance(s, dict)))

    def fingerprint(self, ctx: RunContext) -> str:
        from vecjob.dataset import TEST_SHARE

        labels = ctx.spec.sentiment.labels
        labels = storage.each_file(file_fingerprint, discover(labels)) if labels else ctx.data_files()
        # The split rule for labels without a split column: a report scored in-sample before it is redone.
        return fingerprint(self.name, ctx.upstream("encode", "vectors_fingerprint"), labels, ctx.data_columns(),
                           ctx.spec.sentiment.model_dump(), {"test_share_by_id_hash": TEST_SHARE})

    def run(self, ctx: RunContext, plan: Plan) -> dict:
        from vecjob.sentiment import evaluate_classifier, hashed_split, predict_collection, train_classifier

        spec, vectors, out = ctx.spec, ctx.folder("encode"), ctx.folder(self.name)
        labels = spec.sentiment.labels or spec.data.paths
        train_classifier(vectors, labels, out / "classifier", spec.sentiment, id_col=spec.data.id_col)
        report = evaluate_classifier(out / "classifier", vectors, labels, spec.sentiment, id_col=spec.data.id_col)
        predict_collection(out / "classifier", vectors, out / "predictions")
        write_json_atomic(new_manifest("vecjob.sentiment_stage", report=report), out / MANIFEST)
        return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "test_rows": report["n"],
                "test_split": hashed_split(report)}


STAGES: dict[str, Stage] = {stage.name: stage for stage in (Corpus(), Train(), Encode(), Index(), Cluster(), Sentiment())}
