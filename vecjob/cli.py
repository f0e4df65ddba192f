"""The `vecjob` command line: flags → typed configs → orchestration → progress and a summary.

Heavy modules (torch, ray, faiss) are imported inside commands so `vecjob --help` answers at once.
A VecjobError becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from vecjob import storage
from vecjob.config import ClusterConfig, IndexConfig, JobSpec, SentimentConfig, load_job_spec, override
from vecjob.errors import ConfigError, VecjobError

app = typer.Typer(
    name="vecjob",
    help="Batch document vectorisation on Ray: train an LSTM autoencoder, encode Parquet, index, search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DataArg = Annotated[list[str], typer.Argument(help="Parquet file(s), directories of them, or globs.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Job spec (TOML) to take defaults from.")]
AddressOpt = Annotated[
    Optional[str], typer.Option("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local Ray).")
]
IdColOpt = Annotated[Optional[str], typer.Option("--id-col", help="Id column name.")]
TextColOpt = Annotated[Optional[str], typer.Option("--text-col", help="Text column name.")]
StrictOpt = Annotated[Optional[bool], typer.Option("--strict/--no-strict", help="Null or empty texts are an error.")]


def friendly_errors(fn):
    """Expected failures print one line and exit 2; anything else keeps its traceback.

    An OSError (a folder that cannot be written, a disk that is full) is the environment's, not a
    bug: it is one line naming the file too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            return fn(*args, **kwargs)
        except VecjobError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            typer.echo(f"error: {where}{exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@contextlib.contextmanager
def _writable(out: str, what: str = "--out") -> Iterator[str]:
    """The folder a command writes: `out` itself, or for an object-store URI its local mirror,
    published to the store when the command succeeds."""
    storage.check_location(out, what)
    storage.check_lasting(out, what)
    if not storage.is_uri(out):
        yield out
        return
    with storage.mirrored(out, what) as local:
        yield str(local)


def _spec(config: Optional[Path], data: list[str], **data_flags) -> JobSpec:
    """The job spec's settings (or the defaults), with DATA and column flags applied."""
    for p in data:
        storage.check_location(p, "DATA")
    paths = [storage.absolute(p) for p in data]
    spec = load_job_spec(config) if config else JobSpec(data={"paths": paths})
    return spec.model_copy(update={"data": override(spec.data, paths=paths, **data_flags)})


@app.command()
@friendly_errors
def train(
    data: DataArg,
    out: Annotated[str, typer.Option("--out", help="Model dir to write.")],
    variant: Annotated[Optional[str], typer.Option(help="plain | denoising | variational")] = None,
    dim: Annotated[Optional[int], typer.Option(help="Document vector size (bottleneck).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs instead of the token budget (early stopping may end sooner).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray Train workers (0 = auto).")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option(help="GPUs per worker when GPUs are used.")] = None,
    use_gpu: Annotated[Optional[str], typer.Option(help="auto | yes | no")] = None,
    hidden_dim: Annotated[Optional[int], typer.Option(help="LSTM hidden size.")] = None,
    max_vocab: Annotated[Optional[int], typer.Option(help="Vocabulary size, specials included.")] = None,
    max_len: Annotated[Optional[int], typer.Option(help="Tokens per chunk.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Chunks per step per worker.")] = None,
    max_train_chunks: Annotated[Optional[int], typer.Option(help="Sample at most this many chunks (0 = all).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    id_col: IdColOpt = None,
    text_col: TextColOpt = None,
    strict: StrictOpt = None,
    config: ConfigOpt = None,
    address: AddressOpt = None,
) -> None:
    """Train the sequence autoencoder with Ray Train and write a model dir."""
    from vecjob import reporting
    from vecjob.ray_train import RayTrain
    from vecjob.trainer import train_model
    from vecjob.stages import train_headline

    spec = _spec(config, data, id_col=id_col, text_col=text_col, strict=strict)
    model_cfg = override(spec.model, variant=variant, dim=dim, hidden_dim=hidden_dim)
    tok_cfg = override(spec.tokenizer, max_vocab=max_vocab, max_len=max_len)
    train_cfg = override(
        spec.train, epochs=epochs, workers=workers, gpus_per_worker=gpus_per_worker, use_gpu=use_gpu,
        batch_size=batch_size, max_train_chunks=max_train_chunks, seed=seed,
    )
    if storage.is_uri(out) and not train_cfg.storage_path:  # Ray Train's checkpoints where every node reaches
        train_cfg = train_cfg.model_copy(update={"storage_path": storage.join(
            storage.parent(out), f".{storage.basename(out)}{storage.TRAIN_STORAGE}")})
    with reporting.status(f"training {model_cfg.variant} autoencoder (dim {model_cfg.dim})…"):
        with _writable(out) as target:
            manifest = train_model(spec.data, target, tok_cfg, model_cfg, train_cfg,
                                   RayTrain(address or spec.address or None))
    best = train_headline(manifest)
    reporting.summary(f"model → {out}", {
        "documents": manifest["counts"]["documents"],
        "skipped (empty)": manifest["counts"]["skipped_empty"],
        "train chunks": manifest["counts"]["train_chunks"],
        "vocabulary": manifest["counts"]["vocab_size"],
        "workers": f"{manifest['workers']} ({'GPU' if manifest['use_gpu'] else 'CPU'})",
        "epochs seen": round(manifest["epochs_seen"], 2),
        "stopped": {"budget": "token budget done", "patience": "validation loss flat",
                    "time": "max_minutes reached"}.get(manifest["stop_reason"], manifest["stop_reason"]),
        "best round": f"{manifest['best_round']} of {manifest['rounds_run']}",
        "val loss": best.get("val_loss", float("nan")),
        "val token acc": best.get("val_token_acc", float("nan")),
        "seconds": manifest["timings"]["fit_s"] + manifest["timings"]["prepare_s"],
    })


@app.command()
@friendly_errors
def encode(
    data: DataArg,
    model: Annotated[str, typer.Option("--model", help="Model dir written by `vecjob train`.")],
    out: Annotated[str, typer.Option("--out", help="Vectors dir to write (reruns resume).")],
    batch_size: Annotated[Optional[int], typer.Option(help="Chunks per forward pass (0 = auto).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Encoder actors (0 = auto).")] = None,
    keep: Annotated[Optional[list[str]], typer.Option("--keep", help="Input column to copy into the vector shards.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
    runner: Annotated[str, typer.Option(help="ray (Ray Data actors) | local (in-process)")] = "ray",
    id_col: IdColOpt = None,
    text_col: TextColOpt = None,
    strict: StrictOpt = None,
    config: ConfigOpt = None,
    address: AddressOpt = None,
) -> None:
    """Encode Parquet shards into vector shards (id + vector) with Ray Data."""
    from vecjob import reporting
    from vecjob.encode_shards import InProcess, encode_collection
    from vecjob.ray_encode import RayData

    if runner not in ("ray", "local"):
        raise ConfigError(f"--runner {runner!r}: expected ray or local")
    spec = _spec(config, data, id_col=id_col, text_col=text_col, strict=strict)
    cfg = override(spec.encode, batch_size=batch_size, concurrency=concurrency, keep_columns=keep, device=device)
    executor = RayData(address or spec.address or None) if runner == "ray" else InProcess()
    with reporting.row_progress("encoding") as (on_plan, on_rows):
        with _writable(out) as target:
            manifest = encode_collection(spec.data, model, target, cfg, executor, on_rows=on_rows, on_plan=on_plan)
    c, t = manifest["counts"], manifest["timings"]
    reporting.summary(f"vectors → {out}", {
        "shards": f"{c['shards']} ({c['shards_encoded']} encoded, {c['shards_skipped_done']} already done)",
        "rows in": c["rows_in"],
        "vectors out": c["rows_out"],
        "skipped (empty)": c["skipped_empty"],
        "dim": manifest["dim"],
        "docs/s": c["rows_in"] / max(t["encode_wall_s"], 1e-9) if c["shards_encoded"] else "-",
        "seconds": t["total_s"],
    })


@app.command()
@friendly_errors
def index(
    vectors: Annotated[str, typer.Argument(help="Vectors dir written by `vecjob encode`.")],
    out: Annotated[str, typer.Option("--out", help="Index dir to write.")],
    factory: Annotated[Optional[str], typer.Option(help="auto, or a FAISS factory: Flat, HNSW32, IVF1024,Flat, …")] = None,
    metric: Annotated[Optional[str], typer.Option(help="cosine | l2")] = None,
    update: Annotated[bool, typer.Option("--update", help="Update an existing index in place (rebuilt when needed).")] = False,
    config: ConfigOpt = None,
) -> None:
    """Build a FAISS index (with id map and measured recall@10) from a vectors dir, or update one."""
    from vecjob import reporting
    from vecjob.index import index_collection

    base = load_job_spec(config).index if config else IndexConfig()
    cfg = override(base, factory=factory, metric=metric)
    with reporting.status("updating index…" if update else "building index…"):
        with _writable(out) as target:
            m = index_collection(vectors, target, cfg, update=update)
    last = m["updates"][-1]
    reporting.summary(f"index → {out}", {
        "action": f"{last['action']} ({last['why']})", "added / removed": f"{last['added']:,} / {last['removed']:,}",
        "factory": m["factory"], "metric": m["metric"], "vectors": m["ntotal"], "dim": m["dim"],
        "recall@10 vs exact": m.get("recall_at_10"), "search params": m["search_params"] or "-",
        "seconds": last["seconds"],
    })


@app.command()
@friendly_errors
def search(
    index_dir: Annotated[str, typer.Argument(help="Index dir written by `vecjob index`.")],
    model: Annotated[Optional[str], typer.Option("--model", help="Model dir (needed for --text).")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Query text.")] = None,
    doc_id: Annotated[Optional[str], typer.Option("--id", help="Query by a stored document's id.")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of neighbours.")] = 10,
    data: Annotated[Optional[list[str]], typer.Option("--data", help="Parquet collection for text snippets.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    id_col: Annotated[str, typer.Option("--id-col")] = "id",
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
) -> None:
    """Nearest documents to a text or to a stored document."""
    from vecjob.search import search as run_search

    hits = run_search(index_dir, text=text, doc_id=doc_id, model_dir=model, k=k, data=data,
                      id_col=id_col, text_col=text_col)
    if as_json:
        typer.echo(json.dumps({"query": {"text": text, "id": doc_id}, "hits": hits}, default=str))
        return
    from rich.table import Table

    from vecjob.reporting import console

    table = Table(title=f"top {len(hits)} for {'id ' + doc_id if doc_id else repr(text)}")
    for col in ("rank", "id", "score") + (("snippet",) if data else ()):
        table.add_column(col, overflow="fold")
    for h in hits:
        table.add_row(str(h["rank"]), str(h["id"]), f"{h['score']:.4f}", *([h["snippet"]] if data else []))
    console.print(table)


@app.command()
@friendly_errors
def serve(
    index_dir: Annotated[str, typer.Argument(help="Index dir written by `vecjob index`.")],
    model: Annotated[Optional[str], typer.Option("--model", help="Model dir that made the index (for text queries).")] = None,
    data: Annotated[Optional[list[str]], typer.Option("--data", help="Parquet collection: hits get text snippets.")] = None,
    host: Annotated[str, typer.Option(help="Address the HTTP proxy listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    replicas: Annotated[int, typer.Option(help="Serve replicas (each loads the index and the model).")] = 1,
    poll_s: Annotated[float, typer.Option(help="Seconds between checks for a newer index at INDEX_DIR.")] = 5.0,
    detach: Annotated[bool, typer.Option(help="Leave the service running on the cluster and exit.")] = False,
    address: AddressOpt = None,
) -> None:
    """Serve similarity search over HTTP (Ray Serve): POST /search, /search/batch; GET /healthz, /info."""
    import os
    import socket
    import time

    from vecjob import runtime
    from vecjob.errors import ConfigError
    from vecjob.search import check_search_pair

    for flag, value, ok, need in (("--replicas", replicas, replicas >= 1, "at least 1"),
                                  ("--port", port, 0 < port < 65536, "between 1 and 65535"),
                                  ("--poll-s", poll_s, poll_s > 0, "above 0")):
        if not ok:
            raise ConfigError(f"{flag} {value}: must be {need}")
    index_dir, model = storage.absolute(index_dir), storage.absolute(model) if model else None
    check_search_pair(index_dir, model)  # a corrupt or missing index, or another model: one line, exit 2
    if not (address or os.environ.get("RAY_ADDRESS")):  # the proxy will listen on this machine
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    runtime.connect(address)
    from vecjob.ray_serve import APP_NAME, deploy

    try:
        url = deploy(str(index_dir), str(model) if model else None,
                     [storage.absolute(d) for d in data or []] or None,
                     host=host, port=port, replicas=replicas, poll_s=poll_s)
    except RuntimeError as exc:  # Serve's own failures (a proxy that cannot bind on a cluster node)
        raise ConfigError(f"the search service did not start: {str(exc).strip().splitlines()[-1]}") from None
    typer.echo(f"serving {index_dir} at {url} (POST /search, /search/batch; GET /healthz, /info)", err=True)
    if detach:
        return
    import signal

    from ray import serve as ray_serve

    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # a background job ignores SIGINT: TERM stops it too
        signal.signal(sig, lambda *_: stop.append(True))
    while not stop:
        time.sleep(0.5)
    ray_serve.delete(APP_NAME)  # the service lives as long as this command, on a local Ray or a cluster
    typer.echo("stopped", err=True)


@app.command()
@friendly_errors
def cluster(
    vectors: Annotated[str, typer.Argument(help="Vectors dir written by `vecjob encode`.")],
    k: Annotated[str, typer.Option("--k", help="Number of clusters, or 'auto' (best silhouette in 2..20).")],
    out: Annotated[str, typer.Option("--out", help="Cluster dir to write.")],
    data: Annotated[Optional[list[str]], typer.Option("--data", help="Parquet collection: texts give top terms, labels give NMI/ARI.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="k-means restarts.")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="k-means iterations.")] = None,
    label_col: Annotated[str, typer.Option("--label-col")] = "label",
    id_col: Annotated[str, typer.Option("--id-col")] = "id",
    text_col: Annotated[str, typer.Option("--text-col")] = "text",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
    config: ConfigOpt = None,
) -> None:
    """k-means on the vectors: assignments, centroids, per-cluster summary, metrics, a PNG map."""
    from vecjob import reporting
    from vecjob.cluster import cluster_collection
    from vecjob.errors import InputError

    if k != "auto" and not k.isdigit():
        raise InputError(f"--k must be a positive integer or 'auto', not {k!r}")
    base = load_job_spec(config).cluster if config else ClusterConfig()
    cfg = override(base, seeds=seeds, iterations=iterations)
    with reporting.status("clustering…"):
        with _writable(out) as target:
            summary = cluster_collection(vectors, target, k if k == "auto" else int(k), cfg, data=data,
                                         id_col=id_col, text_col=text_col, label_col=label_col)
    if as_json:
        typer.echo(json.dumps(summary, default=str))
        return
    rows = {f"cluster {c['cluster']} ({c['size']:,})": ", ".join(c.get("top_terms", [])[:6]) or ", ".join(map(str, c["example_ids"][:3]))
            for c in summary["clusters"]}
    reporting.summary(f"{summary['k']} clusters of {summary['n']:,} vectors → {out}",
                      {**rows, **{m: v for m, v in summary["metrics"].items()}})


sentiment_app = typer.Typer(help="Train, evaluate and apply a classifier (e.g. sentiment) on document vectors.",
                            no_args_is_help=True)
app.add_typer(sentiment_app, name="sentiment")
LabelsOpt = Annotated[list[str], typer.Option("--labels", help="Parquet with id and label columns (and split).")]
LabelColOpt = Annotated[str, typer.Option("--label-col", help="Label column.")]


@sentiment_app.command("train")
@friendly_errors
def sentiment_train(
    vectors: Annotated[str, typer.Argument(help="Vectors dir.")],
    labels: LabelsOpt,
    out: Annotated[str, typer.Option("--out", help="Classifier dir to write.")],
    label_col: LabelColOpt = "label",
    id_col: Annotated[str, typer.Option("--id-col")] = "id",
) -> None:
    """Fit logistic regression on labelled vectors (rows with split == 'train' when a split column exists)."""
    from vecjob import reporting
    from vecjob.sentiment import train_classifier

    with _writable(out) as target:
        m = train_classifier(vectors, labels, target, SentimentConfig(label_col=label_col), id_col=id_col)
    reporting.summary(f"classifier → {out}", {
        "classes": ", ".join(m["classes"]), "training rows": m["counts"]["joined"],
        "labels without a vector": m["counts"]["labels_without_vector"], "C (by CV)": m["chosen_C"],
        "CV macro-F1": m["cv_macro_f1"],
    })


@sentiment_app.command("eval")
@friendly_errors
def sentiment_eval(
    clf: Annotated[str, typer.Argument(help="Classifier dir.")],
    vectors: Annotated[str, typer.Argument(help="Vectors dir.")],
    labels: LabelsOpt,
    label_col: LabelColOpt = "label",
    split: Annotated[str, typer.Option(help="Rows of this split ('all' = every labelled row).")] = "test",
    id_col: Annotated[str, typer.Option("--id-col")] = "id",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Accuracy, macro-F1, per-class scores and confusion matrix on labelled vectors."""
    from vecjob import reporting
    from vecjob.sentiment import evaluate_classifier

    report = evaluate_classifier(clf, vectors, labels, SentimentConfig(label_col=label_col), id_col=id_col,
                                 split=None if split == "all" else split)
    if as_json:
        typer.echo(json.dumps(report))
        return
    reporting.summary(f"evaluation ({report['n']:,} rows, split {split})", {
        "accuracy": report["accuracy"], "macro-F1": report["macro_f1"],
        **{f"F1 {c}": v["f1"] for c, v in report["per_class"].items()},
    })


@sentiment_app.command("predict")
@friendly_errors
def sentiment_predict(
    clf: Annotated[str, typer.Argument(help="Classifier dir.")],
    vectors: Annotated[str, typer.Argument(help="Vectors dir.")],
    out: Annotated[str, typer.Option("--out", help="Predictions dir to write.")],
) -> None:
    """Write one prediction shard (id, label, prob_<class>) per vector shard."""
    from vecjob import reporting
    from vecjob.sentiment import predict_collection

    with _writable(out) as target:
        m = predict_collection(clf, vectors, target)
    reporting.summary(f"predictions → {out}", {"rows": m["rows"], "shards": len(m["shards"])})


@app.command()
@friendly_errors
def corpus(
    name: Annotated[str, typer.Argument(help="Built-in corpus: bbc (BBC News, 2,225 articles, 5 topics).")],
    out: Annotated[str, typer.Option("--out", help="Folder for the Parquet shards.")],
    shards: Annotated[int, typer.Option(help="Number of shards.")] = 3,
) -> None:
    """Write a corpus that installs with vecjob as Parquet shards (id, text, label, split)."""
    from vecjob.corpus import write_corpus

    with _writable(out) as target:
        paths = write_corpus(name, target, shards)
    typer.echo(f"wrote {len(paths)} shards to {out}", err=True)


@app.command()
@friendly_errors
def run(
    job: Annotated[Path, typer.Argument(help="Job spec (TOML), e.g. jobs/quickstart.toml.")],
    force: Annotated[bool, typer.Option("--force", help="Redo stages that are up to date (and retrain).")] = False,
    retrain: Annotated[bool, typer.Option("--retrain", help="Train a new model; switch to it once its index is built.")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help="Run dir (a local path or s3://, gs://); overrides the spec's.")] = None,
    address: AddressOpt = None,
) -> None:
    """Run the stages a job spec names, skipping those whose outputs are up to date."""
    from vecjob import reporting
    from vecjob.pipeline import headline, run_job

    if out:
        storage.check_location(out, "--out")
        storage.check_lasting(out, "--out")
        out = storage.absolute(out)
    spec = load_job_spec(job, out=out)
    if address:
        spec = spec.model_copy(update={"address": address})

    def on_stage(stage: str, state: str) -> None:
        reporting.console.print(f"[bold]{stage}[/]: {state}", soft_wrap=True)  # one line a stage, in a log too

    manifest = run_job(spec, force=force, on_stage=on_stage, retrain=retrain)
    reporting.summary(f"job '{spec.name}' → {spec.out} in {manifest['seconds']:.0f}s", {
        r["stage"]: r["status"] + (f" in {r['seconds']:.0f}s: {headline(r['metrics'])}" if "seconds" in r else "")
        for r in manifest["stages"]
    })
