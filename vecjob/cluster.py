"""Clustering a vectors dir: FAISS k-means (spherical for cosine), assignment streamed shard by shard.

Outputs: assignments.parquet (id, cluster, distance), centroids.npy, summary.json (per cluster: size,
its most distinctive terms (class-based weighting over its texts), ids closest to the centroid; NMI / ARI / purity
when labels are known, else a silhouette estimate), clusters.png (PCA map of a sample).
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from vecjob.config import ClusterConfig
from vecjob.errors import ArtifactError, InputError
from vecjob.outputs import MANIFEST, check_output, output_lock, staged_dir
from vecjob.parquet_io import (
    atomic_path,
    collect_scanned,
    labels_as_text,
    new_manifest,
    read_json,
    read_manifest,
    read_output_table,
    scan_by_id,
    texts_as_text,
    write_json_atomic,
    write_parquet_atomic,
)
from vecjob.timing import timed
from vecjob.tokenizer import CJK_CHARACTERS, tokenize_column
from vecjob.vectors import VectorsDir, table_vectors, unit_rows

MANIFEST_KIND = "vecjob.cluster"
ASSIGNMENTS, CENTROIDS, SUMMARY = "assignments.parquet", "centroids.npy", "summary.json"
CLUSTER_FILES = (ASSIGNMENTS, CENTROIDS, SUMMARY)  # beside the manifest; the map (clusters.png) is optional
MAX_TRAIN_POINTS_PER_CENTROID = 256  # FAISS's own default; a larger set is sampled
# FAISS prints a warning to stderr for every fit with fewer than 39 points per centroid, as a small
# collection has and k = "auto" tries up to 20 times in a row: that floor only decides the warning.
MIN_TRAIN_POINTS_PER_CENTROID = 1
SILHOUETTE_SAMPLE = 4_000


def _sample(vdir: VectorsDir, count: int, seed: int) -> tuple[np.ndarray, list]:
    table = vdir.sample(count, seed, ["id", "vector"])
    return unit_rows(table_vectors(table)), table.column("id").to_pylist()


def fit_kmeans(x: np.ndarray, k: int, cfg: ClusterConfig):
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=cfg.iterations, nredo=cfg.seeds, spherical=True, seed=cfg.seed,
                      max_points_per_centroid=MAX_TRAIN_POINTS_PER_CENTROID,
                      min_points_per_centroid=MIN_TRAIN_POINTS_PER_CENTROID, verbose=False)
    km.train(x)
    return km


def silhouette(x: np.ndarray, assign: np.ndarray, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    if not 2 <= len(set(assign.tolist())) < len(x):
        return float("nan")  # silhouette is defined for 2..n-1 clusters only
    n = min(len(x), SILHOUETTE_SAMPLE)
    return float(silhouette_score(x, assign, metric="cosine", sample_size=n, random_state=seed))


def choose_k(x: np.ndarray, cfg: ClusterConfig, k_range: range) -> tuple[int, list[dict]]:
    """Try each k on the sample and keep the best silhouette; returns k and the curve."""
    curve = []
    for k in k_range:
        km = fit_kmeans(x, k, cfg)
        _, assign = km.index.search(x, 1)
        curve.append({"k": k, "silhouette": silhouette(x, assign[:, 0], cfg.seed)})
    best = max(curve, key=lambda c: -math.inf if math.isnan(c["silhouette"]) else c["silhouette"])
    return best["k"], curve


def cluster_collection(
    vectors_dir: str | Path,
    out: str | Path,
    k: int | str,
    cfg: ClusterConfig,
    data: list[str] | None = None,
    id_col: str = "id",
    text_col: str = "text",
    label_col: str | None = None,
    update: bool = False,
) -> dict:
    """`vecjob cluster`: fit, assign every vector, summarise, write the cluster dir. With `update`, an
    existing clustering of the same model and settings keeps its centroids: only the vectors that are
    new since are assigned (`assign_increment`)."""
    out = check_output(out, "--out", [vectors_dir, *(data or [])], kind=MANIFEST_KIND)
    vdir = VectorsDir.open(vectors_dir)
    if label_col and not data and label_col not in _kept(vdir):
        raise InputError(f"--label-col {label_col}: the vectors keep no such column (vecjob encode --keep "
                         f"{label_col}); give --data, the collection that holds it")
    n = vdir.num_vectors
    k_range = check_k(k, n, vectors_dir)
    timings: dict[str, float] = {}
    with output_lock(out):
        fit, why = followable_fit(out, vdir, k, cfg) if update else (None, "")
        if fit:
            return assign_increment(vdir, out, fit, why, data, id_col, text_col, label_col)
        with timed(timings, "fit_s"):
            train_x, _ = _sample(vdir, MAX_TRAIN_POINTS_PER_CENTROID * (k_range.stop - 1), cfg.seed)
            curve, k_requested = None, k
            if k == "auto":
                k, curve = choose_k(train_x, cfg, k_range)
            k = int(k)
            km = fit_kmeans(train_x, k, cfg)

        with timed(timings, "assign_s"):
            ids, clusters, dists = [], [], []
            shards = []
            for path, table in vdir.iter_shards(["id", "vector"]):
                sims, assign = km.index.search(unit_rows(table_vectors(table)), 1)
                ids.append(table.column("id"))
                clusters.append(assign[:, 0].astype(np.int32))
                dists.append((1.0 - sims[:, 0]).astype(np.float32))  # cosine distance to the centroid
                shards += [path.name] * table.num_rows
            assignments = pa.table({"id": pa.chunked_array(ids).combine_chunks(),
                                    "cluster": np.concatenate(clusters), "distance": np.concatenate(dists),
                                    "shard": pa.array(shards, pa.string())})

        frame = pl.from_arrow(assignments)
        per_cluster = _cluster_table(frame, k)
        metrics: dict[str, float] = {}
        if data:
            texts = _join_data(frame, data, id_col, text_col, label_col)
            terms = top_terms(texts, k)
            for c in per_cluster:
                c["top_terms"] = terms.get(c["cluster"], [])
            metrics = _labelled_metrics(texts)
        elif (label_col or "label") in _kept(vdir):
            metrics = _labelled_metrics(_kept_labels(frame, vdir, label_col or "label"))
        if not metrics:
            sample_x, sample_ids = _sample(vdir, min(n, SILHOUETTE_SAMPLE), cfg.seed + 1)
            _, assign = km.index.search(sample_x, 1)
            metrics = {"silhouette": silhouette(sample_x, assign[:, 0], cfg.seed)}

        summary = {"k": k, "n": n, "metrics": metrics, "clusters": per_cluster, "k_curve": curve}
        manifest = new_manifest(MANIFEST_KIND, vectors_dir=vdir.location,
                                vectors_fingerprint=vdir.manifest.get("vectors_fingerprint"),
                                model_fingerprint=vdir.manifest.get("model_fingerprint"), requested_k=k_requested,
                                config=cfg.model_dump(), k=k, n=n, fitted_on=n, assigned_since_fit=0,
                                action="clustered", why=why, metrics=metrics, timings=timings)
        with staged_dir(out) as staging:
            write_parquet_atomic(assignments, staging / ASSIGNMENTS)
            with open(staging / CENTROIDS, "wb") as f:
                np.save(f, km.centroids)
            write_json_atomic(summary, staging / SUMMARY)
            plot_clusters(train_x, km, staging / "clusters.png")
            write_json_atomic(manifest, staging / MANIFEST)
    return summary


REFIT_GROWTH = 0.5  # re-cluster once half as many vectors were assigned since the fit as it was fitted on


@dataclass
class HeldFit:
    """An existing clustering, read whole: what an update keeps."""

    manifest: dict
    centroids: np.ndarray
    assignments: pl.DataFrame
    summary: dict


def followable_fit(out: Path, vdir: VectorsDir, k: int | str, cfg: ClusterConfig) -> tuple[HeldFit | None, str]:
    """The existing clustering when it can take the new vectors (same model and settings, not
    outgrown), else None and why it is fitted anew: also for a clustering whose files no longer read
    (damaged or edited), which the fit rewrites from the vectors."""
    if not (out / MANIFEST).exists():
        return None, "no clustering yet"
    unreadable = None, "its files do not read"
    try:
        old = read_manifest(out, MANIFEST_KIND, {"k": int, "fitted_on": int, "assigned_since_fit": int})
        centroids = np.load(out / CENTROIDS)
        held = pl.from_arrow(read_output_table(out / ASSIGNMENTS, ("id", "cluster", "distance", "shard")))
        summary = read_json(out / SUMMARY)
    except (ArtifactError, OSError, ValueError, EOFError):
        return unreadable
    if not (centroids.shape == (old["k"], vdir.dim) and isinstance(summary.get("metrics"), dict)
            and isinstance(summary.get("clusters"), list) and all(isinstance(c, dict) for c in summary["clusters"])):
        return unreadable
    if old.get("model_fingerprint") != vdir.manifest.get("model_fingerprint"):
        return None, "the vectors come from another model"
    if old.get("requested_k") != k or old.get("config") != cfg.model_dump():
        return None, "the cluster settings changed"
    if held["id"].dtype != vdir.live_ids()["id"].dtype:  # ids of another type match none of the held ones
        return None, "the ids' type changed"
    if old["assigned_since_fit"] >= REFIT_GROWTH * old["fitted_on"]:
        return None, f"{old['assigned_since_fit']:,} vectors assigned since a fit on {old['fitted_on']:,}"
    return HeldFit(old, centroids, held, summary), "new or removed vector shards"


def assign_increment(vdir: VectorsDir, out: Path, fit: HeldFit, why: str, data: list[str] | None, id_col: str,
                     text_col: str, label_col: str | None) -> dict:
    """Keep the centroids and the assignments of unchanged rows; assign the new rows; drop the gone.
    Sizes, examples and label metrics are recomputed; the top terms and the silhouette are the last
    full clustering's (measuring it again would read every vector shard, not the night's alone)."""
    t0 = time.perf_counter()
    old, centroids, held = fit.manifest, fit.centroids, fit.assignments
    live = vdir.live_ids()
    kept = held.join(live, on=["id", "shard"], how="semi")
    new = live.join(held, on=["id", "shard"], how="anti")
    parts = [kept]
    for path, rows in vdir.new_rows(new):
        sims = unit_rows(table_vectors(rows)) @ unit_rows(centroids).T
        parts.append(pl.DataFrame({"id": pl.from_arrow(rows.column("id")), "cluster": sims.argmax(1).astype(np.int32),
                                   "distance": (1.0 - sims.max(1)).astype(np.float32), "shard": path.name}))
    frame = pl.concat(parts, how="vertical_relaxed")
    k, previous = old["k"], fit.summary
    per_cluster = _cluster_table(frame, k)
    terms = {c.get("cluster"): c.get("top_terms", []) for c in previous["clusters"]}
    for c in per_cluster:
        c["top_terms"] = terms.get(c["cluster"], [])
    metrics = previous["metrics"]
    if data and "labelled" in metrics:
        metrics = _labelled_metrics(_join_data(frame, data, id_col, text_col, label_col)) or metrics
    summary = {**previous, "n": frame.height, "metrics": metrics, "clusters": per_cluster}
    manifest = {**new_manifest(MANIFEST_KIND, **{k_: v for k_, v in old.items() if k_ not in (
        "kind", "format_version", "vecjob_version", "created", "host")}),
        "vectors_fingerprint": vdir.manifest.get("vectors_fingerprint"), "n": frame.height,
        "assigned_since_fit": old["assigned_since_fit"] + new.height, "action": "assigned", "why": why,
        "added": new.height, "removed": held.height - kept.height, "metrics": metrics,
        "timings": {"assign_s": time.perf_counter() - t0}}
    with staged_dir(out) as staging:
        write_parquet_atomic(frame.to_arrow(), staging / ASSIGNMENTS)
        with open(staging / CENTROIDS, "wb") as f:
            np.save(f, centroids)
        if (out / "clusters.png").exists():
            shutil.copy(out / "clusters.png", staging / "clusters.png")  # the map of the last full fit
        write_json_atomic(summary, staging / SUMMARY)
        write_json_atomic(manifest, staging / MANIFEST)
    return summary


def check_k(k: int | str, n: int, vectors_dir: str | Path) -> range:
    """The k values to try: k itself, or 2..20 for 'auto'; a k that cannot make clusters is refused."""
    if k == "auto":
        if n < 3:
            raise InputError(f"{vectors_dir}: {n} vectors are too few to choose k")
        return range(2, min(20, n - 1) + 1)
    if int(k) < 2:
        raise InputError(f"--k must be at least 2 (or 'auto'), not {k}")
    if int(k) >= n:
        raise InputError(f"--k {k} needs more vectors than clusters, and {vectors_dir} holds {n}")
    return range(int(k), int(k) + 1)


def _cluster_table(frame: pl.DataFrame, k: int, examples: int = 5) -> list[dict]:
    sizes = dict(frame.group_by("cluster").len().iter_rows())
    closest = (frame.sort("distance").group_by("cluster", maintain_order=True).head(examples)
               .group_by("cluster").agg(pl.col("id")))
    example_ids = dict(closest.iter_rows())
    return [{"cluster": c, "size": int(sizes.get(c, 0)), "example_ids": example_ids.get(c, [])} for c in range(k)]


def _join_data(frame: pl.DataFrame, data: list[str], id_col: str, text_col: str, label_col: str | None) -> pl.DataFrame:
    """The texts (and labels) of the clustered documents. A label column named (`--label-col`) must be
    there; without one, a column "label" is used where there is one."""
    labels = {"label": label_col} if label_col else {}
    source = texts_as_text(scan_by_id(data, id_col, {"text": text_col, **labels}, frame["id"].dtype,
                                      optional={} if label_col else {"label": "label"}), data, text_col)
    source = labels_as_text(source, data, label_col or "label") if "label" in source.collect_schema() else source
    return frame.join(collect_scanned(source, data), on="id", how="inner")


def _kept(vdir: VectorsDir) -> list[str]:
    """The input columns the vector shards keep, as the manifest lists them (none where a hand edit
    left the list unreadable: the clustering is then scored without them, not stopped)."""
    columns = vdir.manifest.get("columns")
    keep = columns.get("keep") if isinstance(columns, dict) else None
    return [c for c in keep if isinstance(c, str)] if isinstance(keep, list) else []


def _kept_labels(frame: pl.DataFrame, vdir: VectorsDir, column: str) -> pl.DataFrame:
    """The clustered documents with the labels their vector shards keep (`vecjob encode --keep label`):
    scored without the collection, as the sentiment stage reads such labels."""
    labels = pl.concat([pl.from_arrow(table).rename({column: "label"}).with_columns(shard=pl.lit(path.name))
                        for path, table in vdir.iter_shards(["id", column])], how="vertical_relaxed")
    labels = labels_as_text(labels.lazy(), vdir.location, column).collect()
    return frame.join(labels, on=["id", "shard"], how="left")


def _labelled_metrics(texts: pl.DataFrame) -> dict:
    """NMI, ARI and purity over the documents that have a label (a collection may label only some);
    {} when none has."""
    labelled = texts.drop_nulls("label") if "label" in texts.columns else texts.clear()
    if not labelled.height:
        return {}
    return {**label_metrics(labelled["label"].to_numpy(), labelled["cluster"].to_numpy()), "labelled": labelled.height}


def top_terms(frame: pl.DataFrame, k: int, n_terms: int = 10, min_count: int = 3) -> dict[int, list[str]]:
    """Class-based term weighting: a term scores p_c(t) · log(p_c(t) / p(t)), its contribution to the
    KL divergence of the cluster's word distribution from the corpus's. Words as common everywhere as
    in the cluster ("the", "said") score about zero, so no stopword list is needed (plain c-TF-IDF's
    log(1 + A/f) weight ranked "the, and, for" first on BBC). Word tokens of 3+ letters, or one
    Chinese character or kana (a token of its own)."""
    tokens = (frame.select("cluster", tokenize_column(frame["text"]).alias("token"))
              .explode("token").drop_nulls("token")
              .filter(pl.col("token").str.contains(rf"^([^\W\d_]{{3,}}|[{CJK_CHARACTERS}])$")))
    counts = tokens.group_by("cluster", "token").len("n")
    cluster_total = counts.group_by("cluster").agg(pl.col("n").sum().alias("total"))
    corpus = counts.group_by("token").agg(pl.col("n").sum().alias("f"))
    corpus_total = float(corpus["f"].sum() or 1)
    p_c = pl.col("n") / pl.col("total")
    scored = (counts.filter(pl.col("n") >= min_count)
              .join(cluster_total, on="cluster").join(corpus, on="token")
              .with_columns((p_c * (p_c / (pl.col("f") / corpus_total)).log()).alias("score"))
              .sort(["cluster", "score", "token"], descending=[False, True, False])
              .group_by("cluster", maintain_order=True).head(n_terms)
              .group_by("cluster").agg(pl.col("token")))
    return {int(c): list(t) for c, t in scored.iter_rows()}


def label_metrics(labels: np.ndarray, clusters: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    frame = pl.DataFrame({"label": labels, "cluster": clusters})
    majority = frame.group_by("cluster", "label").len().group_by("cluster").agg(pl.col("len").max())
    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "ari": float(adjusted_rand_score(labels, clusters)),
        "purity": float(majority["len"].sum() / len(labels)),
    }


def plot_clusters(x: np.ndarray, km, dest: Path, max_points: int = 5_000) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x[:max_points]
    _, assign = km.index.search(x, 1)
    centered = x - x.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    xy = centered @ vt[:2].T
    xy = np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))  # vectors of dim 1 are drawn on a line
    fig, ax = plt.subplots(figsize=(6, 5))
    scatter = ax.scatter(xy[:, 0], xy[:, 1], c=assign[:, 0], s=6, cmap="tab20", alpha=0.7)
    ax.set_title(f"{km.k} clusters, PCA of {len(x)} vectors")
    ax.legend(*scatter.legend_elements(), title="cluster", fontsize=7, loc="best", markerscale=0.8)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
