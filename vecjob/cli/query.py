"""`vecjob search` and `vecjob serve`: nearest documents from an index, once or as a service."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from vecjob import storage
from vecjob.cli import (
    AddressOpt,
    DataOpt,
    IdColOpt,
    IndexArg,
    JsonOpt,
    QueryModelOpt,
    TextColOpt,
    app,
    friendly_errors,
)
from vecjob.errors import ConfigError
from vecjob.parquet_io import plain_json


@app.command()
@friendly_errors
def search(
    index_dir: IndexArg,
    model: QueryModelOpt = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Query text.")] = None,
    doc_id: Annotated[Optional[str], typer.Option("--id", help="Query by a stored document's id.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of neighbours.")] = 10,
    data: DataOpt = None,
    as_json: JsonOpt = False,
    id_col: IdColOpt = None,
    text_col: TextColOpt = None,
) -> None:
    """Nearest documents to a text or to a stored document."""
    from vecjob.search import search as run_search

    hits = run_search(index_dir, text=text, doc_id=doc_id, model_dir=model, k=k, data=data,
                      id_col=id_col or "id", text_col=text_col or "text")
    if as_json:
        typer.echo(plain_json({"query": {"text": text, "id": doc_id}, "hits": hits}))
        return
    from rich.table import Table

    from vecjob.errors import quoted, shown
    from vecjob.reporting import console

    table = Table(title=f"top {len(hits)} for {'id ' + quoted(doc_id, 80) if doc_id is not None else quoted(text, 80)}")
    for col in ("rank", "id", "score") + (("snippet",) if data else ()):
        table.add_column(col, overflow="fold")
    for h in hits:
        table.add_row(str(h["rank"]), shown(h["id"]), f"{h['score']:.4f}", *([shown(h["snippet"])] if data else []))
    console.print(table)


@app.command()
@friendly_errors
def serve(
    index_dir: IndexArg,
    model: QueryModelOpt = None,
    data: DataOpt = None,
    host: Annotated[str, typer.Option(help="Address the HTTP proxy listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    replicas: Annotated[int, typer.Option(help="Serve replicas (each loads the index and the model).")] = 1,
    poll_s: Annotated[float, typer.Option(help="Seconds between checks for a newer index at INDEX_DIR.")] = 5.0,
    detach: Annotated[bool, typer.Option(help="Leave the service running on the cluster and exit.")] = False,
    address: AddressOpt = None,
) -> None:
    """Serve similarity search over HTTP (Ray Serve): POST /search, /search/batch; GET /healthz, /info."""
    import contextlib
    import socket

    from vecjob import runtime
    from vecjob.search import check_search_pair

    for flag, value, ok, need in (("--replicas", replicas, replicas >= 1, "at least 1"),
                                  ("--port", port, 0 < port < 65536, "between 1 and 65535"),
                                  ("--poll-s", poll_s, poll_s > 0, "above 0")):
        if not ok:
            raise ConfigError(f"{flag} {value}: must be {need}")
    if detach and not runtime.names_a_cluster(address):
        raise ConfigError("--detach leaves the service on a Ray cluster (--address or RAY_ADDRESS); the embedded "
                          "Ray stops with this command, and the service with it")
    index_dir, model = storage.lasting(index_dir), storage.lasting(model) if model else None
    data = [storage.lasting(d) for d in data or []] or None
    # A corrupt or missing index, another model, unusable texts; without --model, whether the index's
    # own is there (the replicas follow each index's record themselves).
    _, no_text_queries = check_search_pair(index_dir, model, data)
    if not runtime.names_a_cluster(address):  # the proxy will listen on this machine
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    runtime.connect(address)
    from ray import serve as ray_serve
    from ray.serve.exceptions import RayServeException

    from vecjob.ray_serve import APP_NAME, deploy

    try:
        url = deploy(str(index_dir), str(model) if model else None, data, host=host, port=port, replicas=replicas,
                     poll_s=poll_s)
    except RuntimeError as exc:  # Serve's own failures (a proxy that cannot bind on a cluster node)
        raise ConfigError(f"the search service did not start: {str(exc).strip().splitlines()[-1]}") from None
    except KeyboardInterrupt:  # stopped while starting: on a cluster the application would outlive the command
        if not detach and not runtime.started_here():
            with contextlib.suppress(RayServeException):  # stopped before Serve itself had started
                ray_serve.delete(APP_NAME)
        raise
    if no_text_queries:
        typer.echo(f"text queries will be refused: {no_text_queries}", err=True)
    serving = f"serving {index_dir} at {url} (POST /search, /search/batch; GET /healthz, /info)"
    if detach:
        typer.echo(serving, err=True)
        return
    wait_for_a_stop_signal(serving)
    # The service lives as long as this command. An embedded Ray's goes with the command, and is not
    # deleted: a SIGTERM sent to the whole process group (`timeout`, systemd) has stopped that Ray's
    # processes too, and the delete would wait 60 s for them, then end the command with Ray's error.
    if not runtime.started_here():
        ray_serve.delete(APP_NAME)
    typer.echo("stopped", err=True)


def wait_for_a_stop_signal(ready: str, poll_s: float = 0.5) -> None:
    """Say `ready`, then return once SIGINT or SIGTERM arrives (a background job ignores SIGINT: TERM
    stops it too), with the caller's handlers back in place: `vecjob serve` run inside a Python process
    leaves it as it was. Said once the handlers are in place: a stop sent on seeing it is this one's."""
    import signal
    import time

    stop = []
    replaced = {sig: signal.signal(sig, lambda *_: stop.append(True)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        typer.echo(ready, err=True)
        while not stop:
            time.sleep(poll_s)
    finally:
        for sig, handler in replaced.items():
            signal.signal(sig, handler)
