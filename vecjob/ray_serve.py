"""`vecjob serve`: the search service as a Ray Serve application (FastAPI ingress), one `Snapshot` per
replica (`vecjob.service`).

Index swaps without a failed request, two ways:
- a new generation published at the same location (`vecjob index` or a nightly `vecjob run` swaps the
  index dir whole): each replica checks the index manifest every `poll_s` seconds, loads the new
  snapshot beside the old one, then switches its reference; requests in flight finish on the snapshot
  they took. A new model published before its index is not used until the index follows. Without a
  model given, each index's text queries are encoded by the model it records; a replica that
  encodes them keeps its pair until that model is there, and one that cannot yet takes it up once it is.
- another location: `deploy` again with other paths, and Serve calls `reconfigure` on the live
  replicas (user_config), which load and switch the same way; no replica restarts.
Text queries are encoded in micro-batches (`serve.batch`), so concurrent queries share a forward pass.
Snippets (`data`) are read from the file each hit's vector was encoded from, as the index and the
vectors' manifest name it, whose ids each replica reads once (`search.DocumentFiles`); the files of
`data` are listed again with each newer index it loads.
Serve's own metrics (requests, errors and latency per route) stay available on Ray's metrics endpoint;
its access log (a line per request in the proxy and in the replica, to a file and to stderr) is off:
that work shares the cores that answer queries.
"""

import asyncio
import logging
import os
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from vecjob.errors import VecjobError
from vecjob.search import DocumentFiles
from vecjob.service import UNREADABLE_TEXTS, BatchQuery, Query, RequestError, Snapshot, parse, with_snippets

log = logging.getLogger(__name__)
APP_NAME = "vecjob-search"
api = FastAPI(title="vecjob search", docs_url=None, redoc_url=None)


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


def _refresh(documents: DocumentFiles | None) -> None:
    """The texts' files listed again for a newly loaded index (a night's shards hold its new rows)."""
    if documents:
        try:
            documents.refresh()
        except UNREADABLE_TEXTS as exc:  # snippets are an extra: each search will say why it has none
            log.warning("texts for snippets not read: %s", exc)


REPLICA_CPUS = 0.5  # what each of `--replicas` reserves on the cluster (Serve's proxy and controller reserve none)


# Polars on one thread in a replica: a search's snippets are a few small frames, and waking a pool of
# threads for each, on cores the proxy and the encoder share, put a tail on them (bench/README.md).
ONE_POLARS_THREAD = {"env_vars": {"POLARS_MAX_THREADS": "1"}}


@serve.deployment(ray_actor_options={"num_cpus": REPLICA_CPUS, "runtime_env": ONE_POLARS_THREAD},
                  max_ongoing_requests=128,
                  logging_config={"enable_access_log": False})
@serve.ingress(api)
class SearchService:
    def __init__(self) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # one query per search call: threads would only contend
        # Micro-batches come in many (size, length) shapes: keep a compiled LSTM kernel for each.
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = "256"
        self.snapshot: Snapshot | None = None
        self.config: dict = {}
        self.documents: DocumentFiles | None = None  # where the texts of `--data` are, for snippets
        self._swap_lock = threading.Lock()
        threading.Thread(target=self._watch, daemon=True).start()

    def reconfigure(self, config: dict) -> None:
        """Serve applies a new user_config here: load the new location, then switch."""
        snapshot = Snapshot.load(config["index"], config.get("model"), snippets=bool(config.get("data")))
        documents = self.documents  # the same texts keep their map: listing a large collection takes a while
        if (config.get("data"), config["poll_s"]) != (self.config.get("data"), self.config.get("poll_s")):
            # Ids no text file holds are looked for again no more often than a newer index is.
            documents = DocumentFiles(config["data"], relist_s=config["poll_s"]) if config.get("data") else None
        if documents is not self.documents or self.snapshot is None or snapshot.generation != self.snapshot.generation:
            _refresh(documents)
        with self._swap_lock:
            self.config, self.snapshot, self.documents = config, snapshot, documents

    def _watch(self) -> None:
        while True:
            time.sleep(self.config.get("poll_s", 5.0) if self.config else 0.5)
            with self._swap_lock:
                current, config = self.snapshot, self.config
                if current is None:
                    continue
                try:
                    if current.is_current():
                        if current.encoder is None and not config.get("model"):
                            self.snapshot = current.with_recorded_model()
                            if self.snapshot.encoder is not None:
                                log.warning("text queries now encoded by %s", self.snapshot.model_dir)
                        continue
                    # A replica that encodes text queries keeps its pair until the newer index's model is there.
                    snapshot = Snapshot.load(config["index"], config.get("model"), current.encoder is not None,
                                             snippets=bool(config.get("data")))
                    _refresh(self.documents)
                    self.snapshot = snapshot
                    log.warning("now serving %s", self.snapshot.generation)
                except (VecjobError, OSError, RuntimeError) as exc:  # half-published: retry at the next poll
                    log.warning("newer index not loaded yet: %s", exc)

    def check_health(self) -> None:
        if self.snapshot is None:
            raise RuntimeError("no index loaded")

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _encode(self, items: list[tuple[Snapshot, str]]) -> list:
        """Concurrent text queries in one forward pass per snapshot (a swap may split a batch)."""
        results: list = [None] * len(items)
        groups: dict[int, list[int]] = {}
        for i, (snapshot, _) in enumerate(items):
            groups.setdefault(id(snapshot), []).append(i)
        for positions in groups.values():
            snapshot = items[positions[0]][0]
            vectors = snapshot.encode([items[i][1] for i in positions])
            for i, v in zip(positions, vectors):
                results[i] = v
        return results

    async def _answer(self, snapshot: Snapshot, query: Query, encoded=None) -> dict:
        if query.text is not None and encoded is None:
            encoded = await self._encode((snapshot, query.text))
        if isinstance(encoded, RequestError):
            raise encoded
        result = snapshot.search(query, snapshot.query_vector(query, encoded))
        if self.documents:
            await asyncio.to_thread(with_snippets, result, self.documents, snapshot)
        return result

    async def _body(self, request: Request, model):
        limit = int(self.config.get("max_body_bytes", 1 << 20))
        declared = request.headers.get("content-length")
        if declared and declared.isdecimal() and int(declared) > limit:
            raise RequestError(413, f"request body is {declared} bytes, over the limit of {limit}")
        return parse(await request.body(), model, limit)

    @api.post("/search")
    async def search(self, request: Request):
        snapshot = self.snapshot
        try:
            return await self._answer(snapshot, await self._body(request, Query))
        except RequestError as exc:
            return _error(exc)

    @api.post("/search/batch")
    async def search_batch(self, request: Request):
        snapshot = self.snapshot
        try:
            batch = await self._body(request, BatchQuery)
        except RequestError as exc:
            return _error(exc)
        texts = [q.text for q in batch.queries if q.text is not None]
        encoded = iter(snapshot.encode(texts) if texts else [])
        results = []
        for query in batch.queries:
            try:
                results.append(await self._answer(snapshot, query, next(encoded) if query.text is not None else None))
            except RequestError as exc:
                results.append({"error": str(exc), "status": exc.status})
        return {"generation": snapshot.generation, "results": results}

    @api.get("/healthz")
    async def healthz(self):
        if self.snapshot is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "generation": self.snapshot.generation}

    @api.get("/info")
    async def info(self):
        return self.snapshot.info()


def build_app(args: dict):
    """The application from its arguments: what a Serve config file (a KubeRay RayService) imports as
    `vecjob.ray_serve:build_app`. args: index, model, data (list), poll_s, replicas, max_body_bytes.
    Without a model, each index's text queries are encoded by the model it records, as `vecjob serve`'s are."""
    config = {"index": args["index"], "model": args.get("model") or None, "data": args.get("data"),
              "poll_s": float(args.get("poll_s", 5.0)), "max_body_bytes": int(args.get("max_body_bytes", 1 << 20))}
    return SearchService.options(num_replicas=int(args.get("replicas", 1)), user_config=config).bind()


def deploy(index: str, model: str | None, data: list[str] | None, *, host: str = "127.0.0.1", port: int = 8000,
           replicas: int = 1, poll_s: float = 5.0) -> str:
    """Start (or update) the search application on the connected Ray cluster; returns its URL."""
    from vecjob.runtime import check_fits

    check_fits(f"--replicas {replicas}", replicas, REPLICA_CPUS)  # else Serve waits for them without end
    serve.start(http_options={"host": host, "port": port}, logging_config={"enable_access_log": False})
    serve.run(build_app({"index": index, "model": model, "data": data, "poll_s": poll_s, "replicas": replicas}),
              name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"
