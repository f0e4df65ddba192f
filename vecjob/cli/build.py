"""`vecjob corpus`, `train`, `encode`, `index`, `cluster`: each writes one output folder."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vecjob import storage
from vecjob.cli import (
    AddressOpt,
    ConfigOpt,
    DataArg,
    DataOpt,
    IdColOpt,
    JsonOpt,
    ModelOpt,
    OutOpt,
    StrictOpt,
    TextColOpt,
    VectorsArg,
    app,
    friendly_errors,
    job_spec,
    writable,
)
from vecjob.config import ClusterConfig, IndexConfig, load_job_spec, override
from vecjob.errors import ConfigError
from vecjob.parquet_io import plain_json


@app.command()
@friendly_errors
def corpus(
    name: Annotated[str, typer.Argument(help="Built-in corpus: bbc (BBC News, 2,225 articles, 5 topics).")],
    out: OutOpt,
    shards: Annotated[int, typer.Option(help="Number of shards.")] = 3,
) -> None:
    """Write a corpus that installs with vecjob as Parquet shards (id, text, label, split)."""
    from vecjob.corpus import write_corpus

    with writable(out) as target:
        paths, documents = write_corpus(name, target, shards)
    typer.echo(f"wrote {documents:,} documents in {len(paths)} shards to {out}", err=True)


def _stopped(manifest: dict) -> str:
    """Why training ended, in words: the manifest's stop_reason, and for a run that did all its planned
    steps, what planned them (older manifests have no budget)."""
    if manifest["stop_reason"] != "budget":
        return {"patience": "validation loss flat", "time": "max_minutes reached"}.get(
            manifest["stop_reason"], manifest["stop_reason"])
    return {"epoch cap": f"planned steps done ({manifest['epochs_seen']:.0f} epochs: the cap of a small collection)",
            "epochs": "planned epochs done"}.get(manifest.get("budget", "tokens"), "token budget done")


@app.command()
@friendly_errors
def train(
    data: DataArg,
    out: OutOpt,
    variant: Annotated[Optional[str], typer.Option(help="plain | denoising | variational")] = None,
    dim: Annotated[Optional[int], typer.Option(help="Document vector size (bottleneck).")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs instead of the token budget (early stopping may end sooner).")] = None,
    tokens: Annotated[Optional[int], typer.Option(help="The token budget: training tokens to show the model (instead of --epochs).")] = None,
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
    from vecjob.stages import train_headline
    from vecjob.trainer import train_model

    if epochs is not None and tokens is not None:
        raise ConfigError("--epochs and --tokens: give one of them (a number of epochs, or a token budget)")
    spec = job_spec(config, data, id_col=id_col, text_col=text_col, strict=strict)
    model_cfg = override(spec.model, variant=variant, dim=dim, hidden_dim=hidden_dim)
    tok_cfg = override(spec.tokenizer, max_vocab=max_vocab, max_len=max_len)
    train_cfg = override(
        spec.train, epochs="auto" if tokens is not None else epochs, tokens=tokens, workers=workers,
        gpus_per_worker=gpus_per_worker, use_gpu=use_gpu, batch_size=batch_size, max_train_chunks=max_train_chunks,
        seed=seed,
    )
    if storage.is_uri(out) and not train_cfg.storage_path:  # Ray Train's checkpoints where every node reaches
        train_cfg = train_cfg.model_copy(update={"storage_path": storage.join(
            storage.parent(out), f".{storage.basename(out)}{storage.TRAIN_STORAGE}")})
    with reporting.status(f"training {model_cfg.variant} autoencoder (dim {model_cfg.dim})…"):
        with writable(out) as target:
            manifest = train_model(spec.data, target, tok_cfg, model_cfg, train_cfg,
                                   RayTrain(address or spec.address or None))
    best = train_headline(manifest)
    reporting.summary(f"model → {out}", {
        "documents": manifest["counts"]["documents"],
        "skipped (empty)": manifest["counts"]["skipped_empty"],
        **({"trained on": f"a {manifest['counts']['sample']:.1%} sample of them (all the token budget needs)"}
           if manifest["counts"].get("not_sampled") else {}),
        "train chunks": manifest["counts"]["train_chunks"],
        "vocabulary": manifest["counts"]["vocab_size"],
        "workers": f"{manifest['workers']} ({'GPU' if manifest['use_gpu'] else 'CPU'})",
        "epochs seen": round(manifest["epochs_seen"], 2),
        "stopped": _stopped(manifest),
        "best round": f"{manifest['best_round']} of {manifest['rounds_run']}",
        **({"val loss": best["val_loss"], "val token acc": best["val_token_acc"]} if best["val_loss"] is not None
           else {"val loss": "none: too few documents to hold any out"}),
        "seconds": manifest["timings"]["fit_s"] + manifest["timings"]["prepare_s"],
    })


@app.command()
@friendly_errors
def encode(
    data: DataArg,
    out: OutOpt,
    model: ModelOpt = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Chunks per forward pass (0 = auto).")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Encoder actors (0 = auto).")] = None,
    keep: Annotated[Optional[list[str]], typer.Option("--keep", help="Input column to copy into the vector shards.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help="The LSTM's arithmetic: auto (bf16 on a CPU with native bf16, else fp32) | fp32 | bf16")] = None,
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

    if not model:
        raise ConfigError("--model is required: the model dir written by `vecjob train`")
    if runner not in ("ray", "local"):
        raise ConfigError(f"--runner {runner!r}: expected ray or local")
    spec = job_spec(config, data, id_col=id_col, text_col=text_col, strict=strict)
    cfg = override(spec.encode, batch_size=batch_size, concurrency=concurrency, keep_columns=keep, device=device,
                   precision=precision)
    executor = RayData(address or spec.address or None) if runner == "ray" else InProcess()
    with reporting.row_progress("encoding") as (on_plan, on_rows):
        with writable(out) as target:
            manifest = encode_collection(spec.data, model, target, cfg, executor, on_rows=on_rows, on_plan=on_plan)
    c, t = manifest["counts"], manifest["timings"]
    reporting.summary(f"vectors → {out}", {
        "shards": f"{c['shards']} ({c['shards_encoded']} encoded, {c['shards_skipped_done']} already done)",
        "rows encoded": f"{c['rows_encoded']:,} of {c['rows_in']:,}",
        "vectors out": c["rows_out"],
        "skipped (empty)": c["skipped_empty"],
        "dim": manifest["dim"],
        "precision": ", ".join(manifest["precision"]),
        "docs/s": c["rows_encoded"] / max(t["encode_wall_s"], 1e-9) if c["shards_encoded"] else "-",
        "seconds": t["total_s"],
    })


@app.command()
@friendly_errors
def index(
    vectors: VectorsArg,
    out: OutOpt,
    factory: Annotated[Optional[str], typer.Option(help="auto, or a FAISS factory: Flat, HNSW32, IVF1024,Flat, …")] = None,
    metric: Annotated[Optional[str], typer.Option(help="cosine | l2")] = None,
    update: Annotated[bool, typer.Option("--update", help="Update an existing index in place (rebuilt when needed).")] = False,
    config: ConfigOpt = None,
) -> None:
    """Build a FAISS index (with id map and measured recall@10) from a vectors dir, or update one."""
    from vecjob import reporting
    from vecjob.index import index_collection

    base = load_job_spec(config, settings_only=True).index if config else IndexConfig()
    cfg = override(base, factory=factory, metric=metric)
    with reporting.status("updating index…" if update else "building index…"):
        with writable(out) as target:
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
def cluster(
    vectors: VectorsArg,
    k: Annotated[str, typer.Option("--k", "-k", help="Number of clusters, or 'auto' (best silhouette in 2..20).")],
    out: OutOpt,
    data: DataOpt = None,
    seeds: Annotated[Optional[int], typer.Option(help="k-means restarts.")] = None,
    iterations: Annotated[Optional[int], typer.Option(help="k-means iterations.")] = None,
    label_col: Annotated[Optional[str], typer.Option(
        "--label-col", help="Label column for NMI, ARI and purity (default: label, where the data has one; "
                            "without --data, one the vectors keep).")] = None,
    id_col: IdColOpt = None,
    text_col: TextColOpt = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """k-means on the vectors: assignments, centroids, per-cluster summary, metrics, a PNG map."""
    from vecjob import reporting
    from vecjob.cluster import cluster_collection
    from vecjob.errors import InputError

    if k != "auto" and not k.isdecimal():  # isdigit() passes "²", which int() refuses
        raise InputError(f"--k must be a positive integer or 'auto', not {k!r}")
    base = load_job_spec(config, settings_only=True).cluster if config else ClusterConfig()
    cfg = override(base, seeds=seeds, iterations=iterations)
    with reporting.status("clustering…"):
        with writable(out) as target:
            summary = cluster_collection(vectors, target, k if k == "auto" else int(k), cfg, data=data,
                                         id_col=id_col or "id", text_col=text_col or "text", label_col=label_col)
    if as_json:
        typer.echo(plain_json(summary))
        return
    rows = {f"cluster {c['cluster']} ({c['size']:,})": ", ".join(c.get("top_terms", [])[:6]) or ", ".join(map(str, c["example_ids"][:3]))
            for c in summary["clusters"]}
    reporting.summary(f"{summary['k']} clusters of {summary['n']:,} vectors → {out}",
                      {**rows, **{m: v for m, v in summary["metrics"].items()}})
