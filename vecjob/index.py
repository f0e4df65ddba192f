"""FAISS index over a vectors dir: choose a factory, train on a sample, add shard by shard, measure
recall@10 against exact search, and save index + id map + manifest; or update a built index in place.

Every vector is stored under a label (its *slot*, an int64) that `ids.parquet` maps back to the
document's id and the vector shard it came from. An update removes the slots of documents that
left the collection or were replaced by a newer shard, adds the new live rows under fresh slots,
and re-measures recall@10 on the saved recall sample (`RecallSample`, carried forward rather than
searched again), without retraining the quantizer. It rebuilds from scratch instead when
the model changed, the settings changed, the index type cannot remove vectors (HNSW), the vectors
added since the quantizer was trained reach `MAX_GROWTH` of those it was trained with, or recall
falls below `index.target_recall`. The manifest logs each build and update (`updates`).

Cosine similarity is inner product over L2-normalised vectors (queries are normalised the same way).
"""

from __future__ import annotations

import contextlib
import math
import time
import zipfile
from dataclasses import asdict, dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from vecjob import storage
from vecjob.config import IndexConfig
from vecjob.errors import ArtifactError, ConfigError, InputError
from vecjob.outputs import MANIFEST, check_output, output_lock, staged_dir
from vecjob.parquet_io import (naming, new_manifest, read_json, read_manifest, read_output_table, write_json_atomic,
                               write_parquet_atomic)
from vecjob.timing import timed
from vecjob.vectors import VectorsDir, table_vectors, unit_rows, vector_in_shard

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
MANIFEST_KIND = "vecjob.index"
EXACT_LIMIT = 50_000  # up to this many vectors, exact search is fast enough and needs no training
MEMORY_BUDGET = 4 << 30  # bytes of raw float32 vectors an IVF,Flat index may hold before PQ is used
# Rebuild once the vectors added since the quantizer was trained reach half of those it was trained
# with: `auto` sizes IVF lists for the collection it saw (nlist ≈ 4√n), so by then each list holds
# 1.5× the vectors it was planned for (each probe scans 1.5× more) and nlist is 20% below what auto
# would pick; the recall check catches a shift in the vectors' distribution sooner.
MAX_GROWTH = 0.5
UPDATES_KEPT = 100  # the manifest's update log keeps the last this many entries
RECALL_K = 10  # recall is measured at this many neighbours
RECALL_FILE = "recall_sample.npz"  # the recall queries and their exact neighbours (RecallSample)


def choose_factory(n: int, dim: int, memory_budget: int = MEMORY_BUDGET) -> str:
    """Exact Flat for small sets; IVF (≈4√n lists) above; IVF-PQ once raw vectors exceed the budget."""
    if n <= EXACT_LIMIT:
        return "Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    nlist = max(256, min(nlist, 65_536, n // 39))
    if n * dim * 4 > memory_budget:
        m = next(m for m in (dim // 4, dim // 8, dim // 2, dim) if m and dim % m == 0)
        return f"IVF{nlist},PQ{m}"
    return f"IVF{nlist},Flat"


def _sample_rows(vdir: VectorsDir, count: int, seed: int) -> np.ndarray:
    return table_vectors(vdir.sample(count, seed, ["vector"]))


def _knob_from_index(index) -> str | None:
    """The search-time accuracy knob of an index: nprobe (IVF), efSearch (HNSW) or none (Flat)."""
    import faiss

    try:
        faiss.extract_index_ivf(index)
        return "nprobe"
    except RuntimeError:
        pass
    part = index
    while part is not None:  # an id map or a transform holds the index that searches
        part = faiss.downcast_index(part)
        if isinstance(part, faiss.IndexHNSW):
            return "efSearch"
        part = getattr(part, "index", None)
    return None


PROBE_VECTORS = 1_000  # random vectors a custom factory is first built on, in a child process
PROBE_TIMEOUT_S = 60.0
_PROBE = """
import sys, faiss, numpy as np
from vecjob.index import _faiss_reason, _labelled_index
faiss.omp_set_num_threads(1)  # a trial, beside work that may hold every core
dim, factory, metric, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
index = _labelled_index(factory, dim, metric)
nlist = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 1
x = np.random.default_rng(0).standard_normal((max(n, 4 * nlist), dim)).astype("float32")
try:
    if len(x) <= 4_096:  # a larger quantizer is trained, and checked, on the real vectors alone: seconds here
        if not index.is_trained:
            index.train(x)
        index.add_with_ids(x[:n], np.arange(n))
        index.search(x[:5], 10)
except RuntimeError as exc:
    if "training points" not in str(exc):  # too few random ones here says nothing of the real vectors
        sys.exit("refused: " + _faiss_reason(exc))
"""


def check_factory(factory: str, dim: int, metric: str) -> None:
    """Refuse, before any work, a FAISS factory string that cannot be built: one FAISS cannot parse
    ("IVF", "PQ7" at dim 128), and one it parses but whose numbers it does not check and that abort,
    crash or hang the process that builds it (HNSW0, HNSW1, PQ16x0, RR0, NSG8). The second kind is
    found by building the index on random vectors in a child process, which also reports a FAISS
    error (PQ4x0 at dim 8), except one asking for more training vectors: the real build says that
    with the real vectors. "auto" is always usable."""
    import signal
    import subprocess
    import sys

    if factory == "auto":
        return
    _labelled_index(factory, dim, metric)  # parsing raises, never crashes
    args = [sys.executable, "-c", _PROBE, str(dim), factory, metric, str(PROBE_VECTORS)]
    try:
        done = subprocess.run(args, capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"FAISS factory '{factory}': building it on {PROBE_VECTORS} random vectors of dim {dim} "
                          f"did not finish in {PROBE_TIMEOUT_S:.0f} s (FAISS does not check every number of a factory "
                          f"string)") from None
    refusal = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
    if done.returncode == 1 and refusal and refusal[0].startswith("refused: "):
        raise ConfigError(f"FAISS factory '{factory}' cannot be built: {refusal[0][len('refused: '):]} (tried on "
                          f"{PROBE_VECTORS} random vectors of dim {dim})")
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise ConfigError(f"FAISS factory '{factory}': building it on {PROBE_VECTORS} random vectors of dim {dim} "
                          f"crashed FAISS ({name}), which does not check every number of a factory string: look "
                          f"for a 0, or an HNSW M below 2")


def _labelled_index(factory: str, dim: int, metric: str):
    """An empty index that stores vectors under given int64 labels and can drop them again: IVF keeps
    labels itself (a hash-table direct map also finds a label's vector); others go in an IndexIDMap2."""
    import faiss

    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    try:
        index = faiss.index_factory(dim, factory, faiss_metric)
    except RuntimeError as exc:
        raise ConfigError(f"FAISS factory '{factory}' is not valid for dim {dim}: {_faiss_reason(exc)}") from None
    _skip_polysemous_training(index)
    if _knob_from_index(index) == "nprobe":
        faiss.extract_index_ivf(index).set_direct_map_type(faiss.DirectMap.Hashtable)
        if isinstance(index, faiss.IndexIVF):
            return index
    return faiss.IndexIDMap2(index)  # also an IVF behind a transform (PCA, OPQ), which takes no labels


def _faiss_reason(exc: RuntimeError) -> str:
    return str(exc).strip().rsplit(": ", 1)[-1]  # FAISS prefixes the C++ function and source line


@contextlib.contextmanager
def _faiss_refusal(factory: str) -> Iterator[None]:
    """A FAISS error while an index trains or fills: the factory's parameters do not suit these vectors."""
    try:
        yield
    except RuntimeError as exc:
        raise ConfigError(f"FAISS factory '{factory}' cannot be built on these vectors: {_faiss_reason(exc)}") from None


def _skip_polysemous_training(index, depth: int = 0) -> None:
    """PQ codes trained for polysemous search (filtering by Hamming distance, which vecjob never turns
    on) cost ~30 s a build and change no distance: FAISS trains them by default, vecjob does not."""
    import faiss

    part = faiss.downcast_index(index)
    if hasattr(part, "do_polysemous_training"):
        part.do_polysemous_training = False
    for name in ("index", "storage", "quantizer", "base_index"):  # what wrappers and graphs hold
        inner = getattr(part, name, None)
        if isinstance(inner, faiss.Index) and depth < 4:
            _skip_polysemous_training(inner, depth + 1)


@dataclass
class BuiltIndex:
    index: object  # faiss.Index
    labels: pa.Table  # slot (int64), id, shard: what each stored vector is
    manifest: dict
    sample: RecallSample


def _slots_per_shard(vdir: VectorsDir, labels: pa.Table) -> list[np.ndarray]:
    """For each shard's live rows, in order, the slot its vector is stored under: one join for the
    whole dir (a join per shard against every label took time in the square of the shards)."""
    live = vdir.live_ids().select("id").with_row_index("row")
    slots = live.join(pl.from_arrow(labels.select(["id", "slot"])), on="id", how="left").sort("row")["slot"]
    bounds = np.cumsum([0, *(int(mask.sum()) for mask in vdir.live_masks)])
    return [slots[a:b].to_numpy() for a, b in zip(bounds[:-1], bounds[1:])]


def _prep(metric: str):
    return unit_rows if metric == "cosine" else (lambda x: np.ascontiguousarray(x, np.float32))


def build_index(vectors_dir: str | Path, cfg: IndexConfig, why: str = "no index yet") -> BuiltIndex:
    """A new index over every live vector of the dir (slots 0..n-1 in shard order)."""
    vdir = _vectors_to_index(vectors_dir)
    n, dim = vdir.num_vectors, vdir.dim
    check_factory(cfg.factory, dim, cfg.metric)
    factory = choose_factory(n, dim) if cfg.factory == "auto" else cfg.factory
    index = _labelled_index(factory, dim, cfg.metric)
    prep = _prep(cfg.metric)
    timings: dict[str, float] = {}

    train_size = 0
    with timed(timings, "train_s"):
        if not index.is_trained:
            import faiss

            nlist = faiss.extract_index_ivf(index).nlist if "IVF" in factory else 0
            train_size = min(n, max(50 * nlist, 20_000), 200_000)
            if train_size < max(nlist, 1) * 4:
                raise ConfigError(f"factory '{factory}' needs more training vectors than the {n} available")
            with _faiss_refusal(factory):
                index.train(prep(_sample_rows(vdir, train_size, cfg.seed)))

    with timed(timings, "add_s"), _faiss_refusal(factory):
        parts, start = [], 0
        for path, table in vdir.iter_shards(["id", "vector"]):
            slots = np.arange(start, start + table.num_rows, dtype=np.int64)
            index.add_with_ids(prep(table_vectors(table)), slots)
            parts.append(pa.table({"slot": slots, "id": table.column("id"),
                                   "shard": pa.array([path.name] * table.num_rows, pa.string())}))
            start += table.num_rows
        labels = pa.concat_tables(parts)

    with timed(timings, "recall_s"), _faiss_refusal(factory):
        sample = draw_sample(index, vdir, cfg, prep, lambda: [p.column("slot").to_numpy() for p in parts])
        quality = tune_and_measure(index, sample, cfg)
    manifest = _manifest(vdir, cfg, factory, index, labels, train_size, trained_with=n, added_since_training=0,
                         timings=timings, quality=quality, previous=[],
                         update={"action": "built", "why": why, "added": n, "removed": 0})
    return BuiltIndex(index=index, labels=labels, manifest=manifest, sample=sample)


def _manifest(vdir, cfg, factory, index, labels, train_size, *, trained_with, added_since_training, timings,
              quality, previous, update) -> dict:
    entry = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **update,
             "ntotal": int(index.ntotal), f"recall_at_{quality['k']}": quality[f"recall_at_{quality['k']}"],
             "seconds": round(sum(timings.values()), 3)}
    return new_manifest(
        MANIFEST_KIND,
        vectors_dir=vdir.location,
        model_dir=vdir.manifest.get("model_dir"),  # where text queries find the model that made the vectors
        model_fingerprint=vdir.manifest.get("model_fingerprint"),
        vectors_fingerprint=vdir.manifest.get("vectors_fingerprint"),
        config=cfg.model_dump(),
        factory=factory,
        metric=cfg.metric,
        dim=vdir.dim,
        ntotal=int(index.ntotal),
        next_slot=int(labels.column("slot").to_numpy().max()) + 1 if labels.num_rows else 0,
        train_size=train_size,
        trained_with=trained_with,
        added_since_training=added_since_training,
        timings=timings,
        **{k: v for k, v in quality.items() if k != "k"},
        updates=(previous + [entry])[-UPDATES_KEPT:],
    )


def _vectors_to_index(vectors_dir: str | Path) -> VectorsDir:
    """The vectors dir, refused when it holds none (every document blank): an index of nothing would
    answer every search with nothing, and an update would remove every vector and then fail."""
    vdir = VectorsDir.open(vectors_dir)
    if vdir.num_vectors == 0:
        raise InputError(f"{vectors_dir}: holds no vectors to index")
    return vdir


def update_index(vectors_dir: str | Path, current: "LoadedIndex", cfg: IndexConfig) -> BuiltIndex:
    """Bring a loaded index up to date with the vectors dir in place, or rebuild when the policy says so."""
    vdir = _vectors_to_index(vectors_dir)
    m = current.manifest
    why = _rebuild_reason(vdir, current, cfg)
    if why:
        return build_index(vectors_dir, cfg, why=why)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    held = pl.from_arrow(current.labels)
    live = vdir.live_ids()
    gone = held.join(live, on=["id", "shard"], how="anti")
    new = live.join(held, on=["id", "shard"], how="anti")
    growth = (m["added_since_training"] + new.height) / max(m["trained_with"], 1)
    if m["train_size"] and growth >= MAX_GROWTH:
        return build_index(vectors_dir, cfg, why=f"{growth:.0%} more vectors than the quantizer was trained with")
    index, prep = current.index, _prep(cfg.metric)
    removed = gone["slot"].to_numpy().astype(np.int64)
    if gone.height:
        try:
            index.remove_ids(removed)
        except RuntimeError:  # HNSW, or an IVF behind a transform: the loaded copy is dropped for a new one
            return build_index(vectors_dir, cfg, why=f"{m['factory']} cannot remove vectors ({gone.height} to remove)")
    next_slot = m["next_slot"]
    added_parts, added = [], []
    for path, rows in vdir.new_rows(new):
        slots = np.arange(next_slot, next_slot + rows.num_rows, dtype=np.int64)
        added.append((prep(table_vectors(rows)), slots))
        index.add_with_ids(*added[-1])
        added_parts.append(pa.table({"slot": slots, "id": rows.column("id"),
                                     "shard": pa.array([path.name] * rows.num_rows, pa.string())}))
        next_slot += rows.num_rows
    kept = held.join(gone.select(["slot"]), on="slot", how="anti").to_arrow()
    labels = pa.concat_tables([kept.cast(added_parts[0].schema) if added_parts else kept, *added_parts])
    timings["update_s"] = time.perf_counter() - t0

    with timed(timings, "recall_s"):
        slots = partial(_slots_per_shard, vdir, labels)
        sample = current.recall_sample()
        if sample is None or len(sample.queries) != cfg.recall_queries or sample.k != min(RECALL_K, index.ntotal):
            sample = draw_sample(index, vdir, cfg, prep, slots)
        else:
            sample = carry_sample(sample, index, vdir, cfg, prep, slots, removed, added)
        quality = tune_and_measure(index, sample, cfg, start=current.manifest.get("search_params", {}))
    recall = quality[f"recall_at_{quality['k']}"]
    if recall < cfg.target_recall:
        return build_index(vectors_dir, cfg, why=f"recall@{quality['k']} {recall:.3f} after the update is below "
                                                  f"{cfg.target_recall}")
    manifest = _manifest(vdir, cfg, m["factory"], index, labels, m["train_size"], trained_with=m["trained_with"],
                         added_since_training=m["added_since_training"] + new.height, timings=timings,
                         quality=quality, previous=m.get("updates", []),
                         update={"action": "updated", "why": "new or removed vector shards",
                                 "added": new.height, "removed": gone.height})
    return BuiltIndex(index=index, labels=labels, manifest=manifest, sample=sample)


def _rebuild_reason(vdir: VectorsDir, current: "LoadedIndex", cfg: IndexConfig) -> str:
    m = current.manifest
    if "next_slot" not in m:
        return "the index was written by an earlier vecjob (no slots)"
    if m.get("model_fingerprint") != vdir.manifest.get("model_fingerprint"):
        return "the vectors come from another model"
    if m.get("config", {}).get("factory") != cfg.factory or m["metric"] != cfg.metric or m["dim"] != vdir.dim:
        return "the index settings changed"
    held, live = pl.from_arrow(current.labels.select(["id"]).slice(0, 0))["id"].dtype, vdir.live_ids()["id"].dtype
    if held != live and current.labels.num_rows and vdir.num_vectors:  # no id of one type matches the other's
        return f"the documents' ids changed type ({held} → {live})"
    if cfg.factory == "auto" and choose_factory(vdir.num_vectors, vdir.dim).split(",")[0][:3] != m["factory"][:3]:
        return f"{vdir.num_vectors:,} vectors call for {choose_factory(vdir.num_vectors, vdir.dim)}, not {m['factory']}"
    return ""


def _exact_topk(chunks, queries: np.ndarray, k: int, metric: str, start=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores, labels) over (vectors, labels) chunks, merged chunk by chunk (memory: one
    chunk), and with `start`, a top-k (scores, labels) of the same queries over other vectors."""
    import faiss

    heap_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    heap = faiss.ResultHeap(len(queries), k, keep_max=heap_metric == faiss.METRIC_INNER_PRODUCT)
    if start is not None:
        heap.add_result(*start)
    for base, labels in chunks:
        if len(base):
            d, i = faiss.knn(queries, base, min(k, len(base)), metric=heap_metric)
            heap.add_result(d, np.where(i >= 0, labels[np.maximum(i, 0)], -1))
    heap.finalize()
    return heap.D, heap.I


def _stored_chunks(index, rows: int = 65_536):
    """The vectors an index stores as they are (Flat, IVF-Flat), with their labels, in chunks read
    from memory; None for indexes that store codes (PQ, SQ) or graphs (HNSW)."""
    import faiss

    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexFlat):
        vectors = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d).reshape(-1, inner.d)
        labels = faiss.vector_to_array(index.id_map) if isinstance(index, faiss.IndexIDMap) else np.arange(inner.ntotal)
        return ((vectors[i:i + rows], labels[i:i + rows]) for i in range(0, inner.ntotal, rows))
    if not isinstance(inner, faiss.IndexIVFFlat):
        return None

    def lists():
        invlists, vecs, labels, held = inner.invlists, [], [], 0
        for lst in range(inner.nlist):
            n = invlists.list_size(lst)
            if n:
                codes = faiss.rev_swig_ptr(invlists.get_codes(lst), n * inner.code_size)
                vecs.append(np.frombuffer(codes, dtype=np.float32).reshape(n, inner.d))
                labels.append(faiss.rev_swig_ptr(invlists.get_ids(lst), n))
                held += n
            if held >= rows or (lst == inner.nlist - 1 and held):
                yield np.concatenate(vecs), np.concatenate(labels).astype(np.int64)
                vecs, labels, held = [], [], 0

    return lists()


def _sample_chunks(chunks, total: int, count: int, seed: int) -> np.ndarray:
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(count, total), replace=False))
    out, start = [], 0
    for base, _ in chunks:
        local = chosen[(chosen >= start) & (chosen < start + len(base))] - start
        if len(local):
            out.append(np.array(base[local], dtype=np.float32))
        start += len(base)
    return np.concatenate(out)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)]))


@dataclass
class RecallSample:
    """Queries and their exact top-k (scores, labels) over what the index holds. Kept beside the index
    so that an update re-measures recall with work in proportion to the night, not to the collection."""

    queries: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @property
    def k(self) -> int:
        return self.labels.shape[1]


def _held_vectors(index, vdir: VectorsDir, prep, slots):
    """Every vector the index holds with its label, in chunks: read from the index itself where it
    holds them as they are (no pass over the vectors dir, which at 1M vectors is most of an update);
    else from the vectors dir, labelled by `slots()` (each shard's live rows' labels)."""
    stored = _stored_chunks(index)
    if stored is not None:
        return stored
    return ((prep(table_vectors(t)), s) for (_, t), s in zip(vdir.iter_shards(["vector"]), slots()))


def draw_sample(index, vdir: VectorsDir, cfg: IndexConfig, prep, slots) -> RecallSample:
    """`recall_queries` vectors drawn uniformly from the index, with their exact neighbours."""
    if _stored_chunks(index) is not None:
        queries = _sample_chunks(_stored_chunks(index), index.ntotal, cfg.recall_queries, cfg.seed + 1)
    else:
        queries = prep(_sample_rows(vdir, cfg.recall_queries, cfg.seed + 1))
    scores, labels = _exact_topk(_held_vectors(index, vdir, prep, slots), queries, min(RECALL_K, index.ntotal),
                                 cfg.metric)
    return RecallSample(queries, scores, labels)


def carry_sample(sample: RecallSample, index, vdir: VectorsDir, cfg: IndexConfig, prep, slots,
                 removed: np.ndarray, added: list[tuple[np.ndarray, np.ndarray]]) -> RecallSample:
    """The sample after an update that removed `removed` labels and added (vectors, labels) `added`.
    Each query stays with the chance a fresh uniform draw would keep an old vector, else becomes a
    random added vector, so the sample follows the collection; a kept query's exact neighbours are
    its old ones merged with the added vectors, unless one of them was removed. Only replaced
    queries and those that lost a neighbour are searched again over everything the index holds."""
    queries, scores, labels = sample.queries.copy(), sample.scores.copy(), sample.labels.copy()
    new_vectors = np.concatenate([v for v, _ in added]) if added else np.empty((0, queries.shape[1]), np.float32)
    rng = np.random.default_rng([cfg.seed, index.ntotal])
    replaced = rng.random(len(queries)) < len(new_vectors) / index.ntotal
    if replaced.any():
        queries[replaced] = new_vectors[rng.integers(0, len(new_vectors), int(replaced.sum()))]
    again = replaced | np.isin(labels, removed).any(axis=1)
    kept = ~again
    if added and kept.any():
        scores[kept], labels[kept] = _exact_topk(added, queries[kept], sample.k, cfg.metric,
                                                 start=(scores[kept], labels[kept]))
    if again.any():
        scores[again], labels[again] = _exact_topk(_held_vectors(index, vdir, prep, slots), queries[again],
                                                   sample.k, cfg.metric)
    return RecallSample(queries, scores, labels)


def tune_and_measure(index, sample: RecallSample, cfg: IndexConfig, start: dict | None = None) -> dict:
    """Recall@k of the sample's queries; for IVF / HNSW, the search knob is raised (from its value in
    `start`, an update's previous tuning, else from its lowest) until target_recall."""
    import faiss

    queries, exact, k = sample.queries, sample.labels, sample.k
    knob = _knob_from_index(index)
    params: dict[str, int] = {}
    space = faiss.ParameterSpace()
    candidates = [None]
    if knob == "nprobe":
        nlist = faiss.extract_index_ivf(index).nlist
        candidates = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p <= nlist] + [nlist]
    elif knob == "efSearch":
        candidates = [16, 32, 64, 128, 256, 512]
    if start and knob in start:
        candidates = [c for c in candidates if c >= start[knob]] or candidates[-1:]
    for value in candidates:
        if value is not None:
            space.set_index_parameter(index, knob, value)
            params = {knob: value}
        t0 = time.perf_counter()
        _, approx = index.search(queries, k)
        search_s = time.perf_counter() - t0
        recall = recall_at_k(approx, exact)
        if recall >= cfg.target_recall:
            break
    return {
        "k": k,
        f"recall_at_{k}": recall,
        "recall_queries": len(queries),
        "search_params": params,
        "search_qps": len(queries) / max(search_s, 1e-9),
    }


def write_index_dir(built: BuiltIndex, out: str | Path) -> None:
    """Index and id map first, manifest last, in a staged folder swapped in whole."""
    import faiss

    with staged_dir(out) as staging:
        with naming(Path(out) / INDEX_FILE):
            faiss.write_index(built.index, str(staging / INDEX_FILE))
        write_parquet_atomic(built.labels, staging / IDS_FILE)
        np.savez(staging / RECALL_FILE, **asdict(built.sample))
        write_json_atomic(built.manifest, staging / MANIFEST)


@dataclass
class LoadedIndex:
    path: Path
    index: object
    labels: pa.Table  # slot, id, shard
    manifest: dict

    @property
    def metric(self) -> str:
        return self.manifest["metric"]

    def recall_sample(self) -> RecallSample | None:
        """The recall queries saved with the index; None where it has none (written before them) or
        they do not read (an update then draws new ones)."""
        try:
            with np.load(self.path / RECALL_FILE) as saved:
                sample = RecallSample(**{f: saved[f] for f in ("queries", "scores", "labels")})
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            return None
        queries, labels = sample.queries, sample.labels
        consistent = (queries.ndim == labels.ndim == 2 and queries.shape[1] == self.manifest["dim"]
                      and sample.scores.shape == labels.shape and len(labels) == len(queries))
        return sample if consistent else None

    @cached_property
    def id_of_slot(self) -> dict:
        return dict(zip(self.labels.column("slot").to_pylist(), self.labels.column("id").to_pylist()))

    @cached_property
    def slot_of_id(self) -> dict:
        return {v: k for k, v in self.id_of_slot.items()}

    def search(self, queries: np.ndarray, k: int, nprobe: int | None = None) -> tuple[list[list[object]], np.ndarray]:
        """Top-k original ids and scores (cosine similarity, or squared L2 distance) per query.
        `nprobe` overrides the index's tuned value for this call (IVF indexes only)."""
        import faiss

        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.manifest["dim"]:
            raise InputError(f"query vectors have dim {q.shape[1]}, the index holds dim {self.manifest['dim']}")
        if self.metric == "cosine":
            q = unit_rows(q)
        ivf = faiss.extract_index_ivf(self.index) if _knob_from_index(self.index) == "nprobe" else None
        if nprobe is not None and ivf is None:
            raise InputError(f"nprobe applies to IVF indexes; this one is {self.manifest['factory']}")
        k = min(k, self.index.ntotal)
        probes = nprobe if nprobe is not None else ivf.nprobe if ivf is not None else None
        scores, slots = self.index.search(q, k, params=faiss.SearchParametersIVF(nprobe=probes) if probes else None)
        # The lists an IVF query probes may hold fewer than k vectors between them (a large k, a small
        # or lopsided list): those queries probe twice as many lists until they have k hits.
        while ivf is not None and probes < ivf.nlist and (short := np.flatnonzero((slots < 0).any(axis=1))).size:
            probes = min(2 * probes, ivf.nlist)
            wider = faiss.SearchParametersIVF(nprobe=probes)
            scores[short], slots[short] = self.index.search(q[short], k, params=wider)
        if self.metric == "cosine":  # inner products of unit vectors, which rounding took to 1.0000002
            np.clip(scores, -1.0, 1.0, out=scores)
        return [[self.id_of_slot[s] for s in row if s >= 0] for row in slots], scores

    def stored_vector(self, doc_id: object) -> np.ndarray:
        """A stored document's vector: from the index itself where it stores vectors exactly (Flat,
        IVF-Flat), else from the one shard that holds it in the vectors dir the index was built from
        (if it has not moved on)."""
        slot = self.slot_of_id.get(doc_id)
        if slot is None and isinstance(doc_id, str) and doc_id.lstrip("-").isdecimal():
            slot = self.slot_of_id.get(int(doc_id))
        if slot is None and not isinstance(doc_id, str):
            slot = self.slot_of_id.get(str(doc_id))
        if slot is None:
            raise InputError(f"{self.path}: no document with id {doc_id!r} in the index")
        if "PQ" not in self.manifest["factory"] and "SQ" not in self.manifest["factory"]:
            try:
                return self.index.reconstruct(int(slot))
            except RuntimeError:
                pass  # an index without a direct map: read the vectors dir
        location = self.manifest["vectors_dir"]
        if "shard" not in self.labels.column_names:
            raise ArtifactError(f"{self.path}: an earlier vecjob wrote this index, whose id map names no vector "
                                "shard; rebuild it (vecjob index, or vecjob run)")
        published = read_json(storage.join(location, MANIFEST))  # its manifest alone, not the folder
        if published.get("vectors_fingerprint") != self.manifest.get("vectors_fingerprint"):
            raise ArtifactError(f"{location}: the vectors changed since the index was built from them; rebuild "
                                "the index (vecjob index, or vecjob run)")
        row = self.labels.filter(pc.equal(self.labels.column("slot"), slot))
        return vector_in_shard(location, row.column("shard")[0].as_py(), doc_id)


def load_index_dir(path: str | Path) -> LoadedIndex:
    import faiss

    path = storage.snapshot(str(path), "index")
    manifest = read_manifest(path, MANIFEST_KIND, {"ntotal": int, "dim": int, "factory": str, "metric": str})
    for name in (INDEX_FILE, IDS_FILE):
        if not (path / name).exists():
            raise ArtifactError(f"{path}: incomplete index dir, {name} missing")
    try:
        index = faiss.read_index(str(path / INDEX_FILE))
    except RuntimeError as exc:
        # Found only when read; a `vecjob run` indexes again an index that lost a file.
        raise ArtifactError(f"{path / INDEX_FILE}: not a readable FAISS index ({str(exc).splitlines()[0]}); "
                            "if it is damaged, delete it and index again") from None
    labels = read_output_table(path / IDS_FILE, ("id",))
    if "slot" not in labels.column_names:  # written before slots: the row number is the label
        labels = labels.add_column(0, "slot", pa.array(np.arange(labels.num_rows, dtype=np.int64)))
    if index.ntotal != labels.num_rows or index.ntotal != manifest["ntotal"]:
        raise ArtifactError(f"{path}: index holds {index.ntotal} vectors but the id map {labels.num_rows}")
    space = faiss.ParameterSpace()
    for knob, value in manifest.get("search_params", {}).items():
        space.set_index_parameter(index, knob, value)
    return LoadedIndex(path=path, index=index, labels=labels, manifest=manifest)


def index_collection(vectors_dir: str | Path, out: str | Path, cfg: IndexConfig, update: bool = False) -> dict:
    """`vecjob index`: build (or with `update`, bring an existing index up to date) and publish under
    a lock; returns the index manifest."""
    out = check_output(out, "--out", [vectors_dir], kind=MANIFEST_KIND)
    VectorsDir.open(vectors_dir)  # refused before the lock: a missing input leaves nothing behind
    with output_lock(out):
        current, why = None, "no index yet"
        if update and (out / MANIFEST).exists():
            try:
                current = load_index_dir(out)
            except ArtifactError as exc:  # a file lost or damaged: built again from the vectors
                why = f"the index did not load ({exc})"
        built = update_index(vectors_dir, current, cfg) if current else build_index(vectors_dir, cfg, why=why)
        write_index_dir(built, out)
    return built.manifest
