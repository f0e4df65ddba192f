"""`vecjob serve` on the session's local Ray: Ray Serve on a free loopback port, real HTTP requests in
bounded loops, indexes published while it answers. One service for the whole module."""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import free_port, write_collection
from vecjob.cli import app
from vecjob.config import DataConfig, EncodeConfig, IndexConfig
from vecjob.index import index_collection, load_index_dir
from vecjob.outputs import staged_dir
from vecjob.encode_shards import encode_collection
from vecjob.errors import ArtifactError, InputError
from vecjob.search import DocumentFiles, EncodedFrom, search
from vecjob.service import Query, RequestError, Snapshot, with_snippets
from vecjob.vectors import VectorsDir, table_vectors

pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")


def call(url: str, path: str, body=None, timeout: float = 30.0) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _publish_model(source, dest) -> None:
    with staged_dir(dest) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def service(ray_session, tiny_model_dir, collection, tmp_path_factory):
    from ray import serve

    from vecjob.ray_serve import deploy

    root = tmp_path_factory.mktemp("serve")
    _publish_model(tiny_model_dir, root / "model")  # a copy: the swap test publishes another model here
    encode_collection(DataConfig(paths=[str(collection)]), root / "model", root / "v", EncodeConfig())
    index_collection(root / "v", root / "index", IndexConfig())
    texts = root / "texts"  # a copy: the nightly test adds a shard to it
    shutil.copytree(collection, texts)
    url = deploy(str(root / "index"), str(root / "model"), [str(texts)], port=free_port(), poll_s=0.3)
    deadline = time.time() + 60
    while time.time() < deadline and call(url, "/healthz")[0] != 200:
        time.sleep(0.2)
    yield SimpleNamespace(url=url, root=root, collection=collection, texts=texts)
    serve.shutdown()


def test_a_service_without_a_model_follows_the_model_each_index_records(tiny_model_dir, other_model_dir, collection,
                                                                       tmp_path):
    # A service given no model (a RayService's build_app args, `vecjob serve` without --model) took the
    # index's model once, at deploy: started before that model was there, it refused text queries until
    # deployed again, and an index made by a model published elsewhere was never loaded.
    from vecjob.ray_serve import build_app

    def model_of(app):
        return app._bound_deployment.user_config["model"]

    assert model_of(build_app({"index": str(tmp_path / "index")})) is None  # each index's record, as loaded
    assert model_of(build_app({"index": str(tmp_path / "index"), "model": "s3://b/m"})) == "s3://b/m"
    model, index = tmp_path / "model", tmp_path / "index"
    _publish_model(tiny_model_dir, model)
    encode_collection(DataConfig(paths=[str(collection)]), model, tmp_path / "v", EncodeConfig())
    index_collection(tmp_path / "v", index, IndexConfig(factory="Flat"))
    shutil.rmtree(model)  # the index is published, its model not yet (a night publishes one, then the other)
    waiting = Snapshot.load(index, None)
    assert waiting.encoder is None and str(model) in waiting.no_text_queries
    with pytest.raises(RequestError, match=r"cannot encode text queries: the index's model: .*give --model"):
        waiting.query_vector(Query(text="goal team"))
    with pytest.raises(ArtifactError, match="the index's model"):  # a replica encoding text keeps its pair meanwhile
        Snapshot.load(index, None, must_encode=True)
    assert waiting.with_recorded_model() is waiting
    _publish_model(tiny_model_dir, model)
    ready = waiting.with_recorded_model()  # taken up at the next poll, without a newer index
    assert ready.model_dir == str(model) and ready.no_text_queries == "" and ready.generation == waiting.generation
    expected = [h["id"] for h in search(index, text="goal team", model_dir=model, k=3)]
    assert [h["id"] for h in ready.search(Query(text="goal team", k=3), ready.encode(["goal team"])[0])["hits"]
            ] == expected
    # The next index, made by another model published elsewhere: that index's own record is followed.
    _publish_model(other_model_dir, tmp_path / "model-b")
    encode_collection(DataConfig(paths=[str(collection)]), tmp_path / "model-b", tmp_path / "v2", EncodeConfig())
    index_collection(tmp_path / "v2", index, IndexConfig(factory="Flat"))
    newer = Snapshot.load(index, None, must_encode=True)
    assert newer.model_dir == str(tmp_path / "model-b") and newer.encoder is not None
    assert newer.info()["model_fingerprint"] == json.loads((other_model_dir / "manifest.json").read_text())[
        "model_fingerprint"]


def test_text_id_and_vector_queries_answer_as_vecjob_search_does(service):
    index, model = service.root / "index", service.root / "model"
    for text in ("goal team league", "oven flour sugar"):
        status, answer = call(service.url, "/search", {"text": text, "k": 5})
        assert status == 200, answer
        expected = search(index, text=text, model_dir=model, k=5)
        assert [h["id"] for h in answer["hits"]] == [h["id"] for h in expected]
        assert [h["score"] for h in answer["hits"]] == pytest.approx([h["score"] for h in expected], abs=1e-5)
    for doc_id in ("doc-00003", "doc-00200"):
        status, answer = call(service.url, "/search", {"id": doc_id, "k": 4})
        expected = search(index, doc_id=doc_id, k=4)
        assert status == 200 and [h["id"] for h in answer["hits"]] == [h["id"] for h in expected]
        assert answer["hits"][0]["id"] == doc_id and "snippet" in answer["hits"][0]
    stored = VectorsDir.open(service.root / "v").read_all(["id", "vector"])
    vector = table_vectors(stored)[stored.column("id").to_pylist().index("doc-00010")].tolist()
    status, answer = call(service.url, "/search", {"vector": vector, "k": 3})
    assert status == 200 and answer["hits"][0]["id"] == "doc-00010"


def test_batch_answers_each_query_and_names_the_one_it_refuses(service):
    status, answer = call(service.url, "/search/batch", {"queries": [
        {"id": "doc-00001", "k": 2}, {"text": "chip robot network", "k": 2}, {"id": "no-such-doc"}]})
    assert status == 200
    first, second, third = answer["results"]
    assert first["hits"][0]["id"] == "doc-00001" and len(second["hits"]) == 2
    assert third == {"error": "no document with id 'no-such-doc' in the index", "status": 404}


@pytest.mark.parametrize("body, status, fragment", [
    ({}, 422, "exactly one of text, id or vector"),
    ({"text": "goal", "id": "doc-00001"}, 422, "exactly one of text, id or vector"),
    ({"id": "no-such-doc"}, 404, "no document with id 'no-such-doc'"),
    ({"vector": [0.1, 0.2]}, 422, "vector has 2 numbers, the index holds dim 16"),
    ({"id": "doc-00001", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ({"id": "doc-00001", "k": -3}, 422, "k: Input should be greater than or equal to 1"),
    ({"id": "doc-00001", "nprobe": 4}, 422, "nprobe applies to IVF indexes"),
    ({"text": "   "}, 422, "text is empty"),
    ({"text": "zzqx qqzv"}, 422, "the query text has no word the model knows"),  # its vector is <unk>'s alone
    (b'{"text": "goal \\ud800"}', 422, "text: not valid Unicode: character 5 is half of a surrogate pair"),
    ({"text": "goal", "colour": "red"}, 422, "unknown key 'colour'"),
    ({"id": ["doc-00001"]}, 422, "id: Input should be a valid string or Input should be a valid integer"),
    ({"id": "doc-00001", "k": True}, 422, "k: Input should be a valid integer"),
    ({"id": "doc-00001", "k": 1_001}, 422, "k: Input should be less than or equal to 1000"),
    ({"id": "doc-00001", "nprobe": 2**70}, 422, "nprobe: Input should be less than or equal to 1048576"),
    (b"{not json", 400, "not valid JSON"),
    (b"[" * 50_000 + b"]" * 50_000, 400, "not valid JSON (nested too deeply)"),
    (b'{"vector": [NaN' + b", 0.5" * 15 + b"]}", 422, "vector.0: Input should be a finite number"),
    (b'{"vector": [0.5, 1e999' + b", 0.5" * 14 + b"]}", 422, "vector.1: Input should be a finite number"),
    ({"vector": [0.0] * 16}, 422, "vector is all zeros, which has no direction to compare by cosine"),
    (b"[1, 2]", 422, "Input should be a valid dictionary"),
    (json.dumps({"text": "goal " * 300_000}).encode(), 413, "over the limit of 1048576"),
    ({"queries": []}, 422, "unknown key 'queries'"),
])
def test_bad_requests_get_a_4xx_naming_the_problem_and_the_service_keeps_answering(service, body, status, fragment):
    got, answer = call(service.url, "/search", body)
    assert got == status and fragment in answer["error"], answer
    assert call(service.url, "/search", {"id": "doc-00001", "k": 1})[0] == 200


def test_healthz_and_info_describe_the_loaded_index(service):
    status, health = call(service.url, "/healthz")
    status_info, info = call(service.url, "/info")
    assert status == status_info == 200 and health["generation"] == info["generation"]
    manifest = json.loads((service.root / "index" / "manifest.json").read_text())
    assert info["ntotal"] == manifest["ntotal"] == 282 and info["model_fingerprint"] == manifest["model_fingerprint"]
    assert info["recall_at_10"] == manifest["recall_at_10"] and info["text_queries"] is True
    assert info["model_dir"] == str(service.root / "model")


def test_queries_write_no_access_log_line(service):
    # A log line per request in the proxy and in the replica took the cores that answer queries;
    # Serve's metrics still count every request.
    from ray.serve._private.logging_utils import get_serve_logs_dir

    for _ in range(3):
        assert call(service.url, "/search", {"text": "goal team", "k": 3})[0] == 200
    logs = [p for p in Path(get_serve_logs_dir()).glob("*.log") if p.name.startswith(("replica_", "proxy_"))]
    assert any(p.name.startswith("replica_") for p in logs)
    assert not [line for p in logs for line in p.read_text(errors="replace").splitlines()
                if re.search(r"POST /search \d{3}", line)]


def _query_loop(url: str, stop: threading.Event, answers: list, failures: list, limit: int = 400) -> None:
    """A bounded client loop: queries until told to stop or `limit` requests, whichever comes first."""
    for i in range(limit):
        if stop.is_set():
            return
        body = {"id": f"doc-{i % 30:05d}", "k": 10} if i % 2 else {"text": "goal team match", "k": 10}
        try:
            status, answer = call(url, "/search", body)
        except OSError as exc:
            failures.append(repr(exc))
            continue
        (answers if status == 200 else failures).append(answer)


def test_a_newly_published_index_is_swapped_in_while_queries_run(service, other_model_dir, collection, tmp_path):
    old_generation = call(service.url, "/info")[1]["generation"]
    # The new index holds the first two shards only: an answer from it never names a third-shard id.
    dropped = {f"doc-{i:05d}" for i in range(187, 282)}
    kept = [str(p) for p in sorted(collection.glob("*.parquet"))[:2]]
    encode_collection(DataConfig(paths=kept), service.root / "model", tmp_path / "v", EncodeConfig())

    stop, answers, failures = threading.Event(), [], []
    clients = [threading.Thread(target=_query_loop, args=(service.url, stop, answers, failures)) for _ in range(3)]
    for c in clients:
        c.start()
    time.sleep(1.0)
    index_collection(tmp_path / "v", service.root / "index", IndexConfig())  # published by a swap of the folder
    new_generation = call(service.url, "/info")[1]["generation"]
    deadline = time.time() + 30
    while time.time() < deadline and new_generation == old_generation:
        time.sleep(0.2)
        new_generation = call(service.url, "/info")[1]["generation"]
    time.sleep(1.0)
    stop.set()
    for c in clients:
        c.join(timeout=60)

    assert failures == [] and new_generation != old_generation
    seen = {a["generation"] for a in answers}
    assert seen == {old_generation, new_generation}, seen
    for a in answers:
        if a["generation"] == new_generation:
            assert not dropped & {h["id"] for h in a["hits"]}

    # A new model published before its index is not used: the service keeps the pair it has.
    _publish_model(other_model_dir, service.root / "model")
    time.sleep(1.0)
    assert call(service.url, "/info")[1]["generation"] == new_generation
    assert call(service.url, "/search", {"text": "goal team", "k": 3})[0] == 200
    # Once the index made with that model is published, both move together.
    encode_collection(DataConfig(paths=kept), service.root / "model", tmp_path / "v2", EncodeConfig())
    index_collection(tmp_path / "v2", service.root / "index", IndexConfig())
    deadline = time.time() + 30
    while time.time() < deadline and call(service.url, "/info")[1]["generation"] == new_generation:
        time.sleep(0.2)
    other = json.loads((other_model_dir / "manifest.json").read_text())["model_fingerprint"]
    assert call(service.url, "/info")[1]["model_fingerprint"] == other
    status, answer = call(service.url, "/search", {"text": "goal team", "k": 3})
    expected = search(service.root / "index", text="goal team", model_dir=service.root / "model", k=3)
    assert status == 200 and [h["id"] for h in answer["hits"]] == [h["id"] for h in expected]


def test_texts_that_cannot_be_read_leave_the_hits_without_snippets_and_say_why(service, tmp_path):
    # Snippets are an extra: once the texts the service started with moved, every search was a 500.
    from urllib.parse import urlparse

    from vecjob.ray_serve import deploy

    index, model, port = str(service.root / "index"), str(service.root / "model"), urlparse(service.url).port
    texts = tmp_path / "texts"
    shutil.copytree(service.collection, texts)
    query = {"id": "doc-00001", "k": 2}
    try:
        deploy(index, model, [str(texts)], port=port, poll_s=0.3)  # live replicas reconfigured, not restarted
        status, answer = call(service.url, "/search", query)
        assert status == 200 and all(h["snippet"] for h in answer["hits"]), answer
        shutil.rmtree(texts)
        status, answer = call(service.url, "/search", query)
        assert status == 200 and [h["id"] for h in answer["hits"]][0] == "doc-00001", answer
        assert "snippet" not in answer["hits"][0] and f"{texts}: no such file" in answer["snippet_error"], answer
    finally:
        deploy(index, model, [str(service.texts)], port=port, poll_s=0.3)
    status, answer = call(service.url, "/search", query)
    assert status == 200 and "snippet_error" not in answer and answer["hits"][0]["snippet"]


def test_a_night_that_rewrites_a_document_shows_its_new_text_once_its_index_is_served(service, tmp_path):
    # The service maps ids to files: a night's shard with a newer row of an old id is read once the
    # index made from it is served (the old file still holds the id, so no search would miss it).
    first, index, model = service.texts / "part-00.parquet", str(service.root / "index"), str(service.root / "model")
    before = pq.read_table(first)
    query = {"id": "doc-00001", "k": 1}
    snippet = lambda: call(service.url, "/search", query)[1]["hits"][0]["snippet"]  # noqa: E731
    try:
        pq.write_table(before.set_column(1, "text", pa.array(["the row before"] * len(before))), first)
        assert snippet() == "the row before"  # a file rewritten since it was listed: listed again at once
        pq.write_table(pa.table({"id": ["doc-00001"], "text": ["a newer row"], "label": ["x"]}),
                       service.texts / "part-09.parquet")
        time.sleep(1.0)
        assert snippet() == "the row before"  # the index made from the newer row is not out yet
        generation = call(service.url, "/info")[1]["generation"]
        encode_collection(DataConfig(paths=[str(service.texts)]), model, tmp_path / "v", EncodeConfig())
        index_collection(tmp_path / "v", index, IndexConfig())
        # A file holding no hit, unreadable: the replica reads the hit's own file, not a map of every file.
        (service.texts / "part-10.parquet").write_bytes(b"not parquet")
        deadline = time.time() + 30
        while time.time() < deadline and call(service.url, "/info")[1]["generation"] == generation:
            time.sleep(0.2)
        assert snippet() == "a newer row"
    finally:
        (service.texts / "part-10.parquet").unlink(missing_ok=True)
        (service.texts / "part-09.parquet").unlink(missing_ok=True)
        pq.write_table(before, first)


def test_snippets_are_read_from_the_files_holding_the_hits_and_follow_the_collection_as_it_changes(tmp_path, caplog):
    # The service read the id column of every file for every search (0.19 s a request at 1M documents).
    folder = tmp_path / "texts"
    first, _, last = write_collection(folder, [40, 30, 20])
    expected = {r["id"]: r["text"] for path in (first, last) for r in pq.read_table(path).to_pylist()}
    documents = DocumentFiles([str(folder)], relist_s=3600)
    documents.refresh()
    assert documents.texts(["doc-00001", "doc-00075"]) == {i: expected[i] for i in ("doc-00001", "doc-00075")}
    # Vectors encoded from another copy of the texts: found through the map, and the log says why that costs more.
    with caplog.at_level(logging.WARNING, logger="vecjob.search"):
        assert documents.texts(["doc-00002"], look_first=["/elsewhere/part-00.parquet"]) == {
            "doc-00002": expected["doc-00002"]}
        documents.texts(["doc-00003"], look_first=["/elsewhere/part-00.parquet"])
    assert caplog.text.count(f"{folder}: the index's vectors were encoded from files it does not hold") == 1
    garbled = folder / "part-01.parquet"
    garbled.write_bytes(b"not parquet")  # holds none of the hits: never read
    assert documents.texts(["doc-00002"]) == {"doc-00002": expected["doc-00002"]}
    garbled.unlink()
    pq.write_table(pa.table({"id": ["doc-00003"], "text": ["rewritten"]}), first)  # the others moved out
    pq.write_table(pa.table({"id": ["doc-00002", "new-1"], "text": ["moved", "added"]}), folder / "part-07.parquet")
    assert documents.texts(["new-1"]) == {}, "an id no file held is looked for again once an hour here"
    # A file rewritten since it was listed: listed again at once, its id found where it is now.
    assert documents.texts(["doc-00003", "doc-00075"]) == {"doc-00003": "rewritten", "doc-00075": expected["doc-00075"]}
    assert documents.texts(["new-1", "doc-00002"]) == {"new-1": "added", "doc-00002": "moved"}
    pq.write_table(pa.table({"id": ["doc-00075"], "text": ["newer row"]}), folder / "part-08.parquet")
    assert documents.texts(["doc-00075"]) == {"doc-00075": expected["doc-00075"]}
    documents.refresh()  # a newly served index: a later file's row of an id counts
    assert documents.texts(["doc-00075"]) == {"doc-00075": "newer row"}
    # A one-off search (`vecjob search --data`) reads every file's ids once instead, to the same texts.
    assert DocumentFiles([str(folder)]).texts(["doc-00075", "new-1", "absent"]) == {"doc-00075": "newer row",
                                                                                   "new-1": "added"}
    (folder / "part-07.parquet").unlink()
    assert documents.texts(["doc-00002", "doc-00003"]) == {"doc-00003": "rewritten"}  # a file gone: listed at once
    pq.write_table(pa.table({"id": ["doc-00003"], "text": [3]}), first)  # a snippet's split() failed on it: a 500
    with pytest.raises(InputError, match="text column 'text' holds Int64; expected strings"):
        documents.texts(["doc-00003"])


def test_a_replica_reads_the_texts_of_its_hits_from_the_files_their_vectors_were_encoded_from(tiny_model_dir, tmp_path):
    # A replica read every file's ids at start to map them: 20 s for 1,000 files 20 ms away.
    folder = tmp_path / "texts"
    first, middle, last = write_collection(folder, [40, 30, 20])
    encode_collection(DataConfig(paths=[str(folder)]), tiny_model_dir, tmp_path / "v", EncodeConfig())
    index_collection(tmp_path / "v", tmp_path / "i", IndexConfig())
    expected = {r["id"]: r["text"] for path in (first, last) for r in pq.read_table(path).to_pylist()}
    snapshot = Snapshot.load(tmp_path / "i", tiny_model_dir, snippets=True)
    documents = DocumentFiles([str(folder)], relist_s=3600)
    documents.refresh()
    middle.write_bytes(b"not parquet")  # holds none of the hits: a map of every file's ids fails on it
    snippets = lambda ids: with_snippets({"hits": [{"id": i} for i in ids]}, documents, snapshot)  # noqa: E731
    assert snippets(["doc-00075", "doc-00001"])["hits"] == [
        {"id": i, "snippet": " ".join(expected[i].split())[:160] + ("…" if len(expected[i]) > 160 else "")}
        for i in ("doc-00075", "doc-00001")]
    # A later file, not encoded yet, holds a newer row of an id: the snippet is the text its vector was made from.
    pq.write_table(pa.table({"id": ["doc-00001", "doc-00075"], "text": ["a newer row", "moved"]}),
                   folder / "part-09.parquet")
    documents.refresh()
    original = snippets(["doc-00001"])["hits"][0]["snippet"]
    assert original != "a newer row" and original.startswith(" ".join(expected["doc-00001"].split())[:40])
    pq.write_table(pa.table({"id": ["doc-00070"], "text": ["rewritten"]}), last)  # read again where it was
    assert snippets(["doc-00070"])["hits"][0]["snippet"] == "rewritten"
    # An id no longer in its file is looked for in every file's ids (here failing on the damaged one).
    assert "not a readable Parquet file" in snippets(["doc-00075"])["snippet_error"]
    middle.unlink()
    assert snippets(["doc-00075", "doc-00001"])["hits"] == [{"id": "doc-00075", "snippet": "moved"},
                                                            {"id": "doc-00001", "snippet": original}]


def test_a_one_off_search_reads_the_texts_of_its_hits_from_the_files_they_were_encoded_from(tiny_model_dir, tmp_path):
    # `vecjob search --data` read every file's ids for its ten hits: 20 s for 1,000 files 20 ms away.
    folder = tmp_path / "texts"
    first, middle, last = write_collection(folder, [40, 30, 20])
    encode_collection(DataConfig(paths=[str(folder)]), tiny_model_dir, tmp_path / "v", EncodeConfig())
    index_collection(tmp_path / "v", tmp_path / "i", IndexConfig())
    expected = {r["id"]: r["text"] for r in pq.read_table(last).to_pylist()}
    assert EncodedFrom(load_index_dir(tmp_path / "i"))(["doc-00075", "doc-00001", "absent"]) == [str(first), str(last)]
    middle.write_bytes(b"not parquet")  # holds none of the hits: a search that read every file would fail on it
    hits = search(tmp_path / "i", doc_id="doc-00075", k=1, data=[str(folder)])
    assert [h["id"] for h in hits] == ["doc-00075"]
    assert " ".join(expected["doc-00075"].split()).startswith(hits[0]["snippet"].removesuffix("…"))
    middle.unlink()
    # An id no longer in the file it was encoded from is looked for in every file.
    pq.write_table(pa.table({"id": ["doc-00070"], "text": ["elsewhere"]}), last)
    pq.write_table(pa.table({"id": ["doc-00075"], "text": ["moved"]}), folder / "part-05.parquet")
    assert DocumentFiles([str(folder)]).texts(["doc-00075", "doc-00070"], look_first=[str(last)]) == {
        "doc-00075": "moved", "doc-00070": "elsewhere"}
    assert search(tmp_path / "i", doc_id="doc-00075", k=1, data=[str(folder)])[0]["snippet"] == "moved"


def test_a_corrupt_or_missing_index_at_start_is_one_line(tmp_path, tiny_model_dir, other_model_dir, service):
    runner = CliRunner()
    (tmp_path / "broken").mkdir()
    for name, table in (("ints", pa.table({"id": [1, 2], "text": ["a", "b"]})), ("untitled", pa.table({"id": ["a"]}))):
        (tmp_path / name).mkdir()
        pq.write_table(table, tmp_path / name / "part.parquet")
    shutil.copy(service.root / "index" / "manifest.json", tmp_path / "broken" / "manifest.json")
    shutil.copy(service.root / "index" / "ids.parquet", tmp_path / "broken" / "ids.parquet")
    (tmp_path / "broken" / "index.faiss").write_bytes(b"not an index")
    made_by = json.loads((service.root / "index" / "manifest.json").read_text())["model_fingerprint"]
    other = next(m for m in (tiny_model_dir, other_model_dir)
                 if json.loads((m / "manifest.json").read_text())["model_fingerprint"] != made_by)
    for args, fragment in ([["serve", str(tmp_path / "missing")], "no manifest.json"],
                           [["serve", str(tmp_path / "broken")], "not a readable FAISS index"],
                           [["serve", str(service.root / "index"), "--model", str(other)], "did not make"],
                           [["serve", str(service.root / "index"), "--port", "0"], "--port 0: must be between 1"],
                           [["serve", str(service.root / "index"), "--replicas", "0"], "--replicas 0: must be"],
                           [["serve", str(service.root / "index"), "--detach"],  # it said "serving" and exited
                            "--detach leaves the service on a Ray cluster (--address or RAY_ADDRESS)"],
                           [["serve", str(service.root / "index"), "--data", str(tmp_path / "ints")],
                            "id column 'id' is Int64, the vectors' ids are String"],
                           [["serve", str(service.root / "index"), "--data", str(tmp_path / "untitled")],
                            "missing column 'text'"],
                           [["serve", str(service.root / "index"), "--port", service.url.rsplit(":", 1)[1]],
                            "cannot listen there"]):
        r = runner.invoke(app, args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and fragment in lines[0], r.output


def _serve_then_stop(args: list, started, stop, env: dict | None = None) -> tuple[int, str]:
    """`vecjob serve ARGS` in a process group of its own, stopped by `stop(pid)` once `started(proc)`
    returns; its exit status and what it wrote to stderr."""
    proc = subprocess.Popen([sys.executable, "-c", "from vecjob.cli import app; app()", "serve", *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        started(proc)
        stop(proc.pid)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stderr


def _cluster_apps(cluster) -> dict:
    with urllib.request.urlopen(f"{cluster.dashboard}/api/serve/applications/", timeout=30) as r:
        return json.loads(r.read()).get("applications") or {}


def test_a_service_on_a_cluster_goes_with_its_command_even_when_stopped_while_starting(ray_cluster, tmp_path):
    # Stopped while Serve was starting it (Ctrl-C, a deployment's SIGTERM), the command ended and left
    # the application on the cluster: a service nobody owned, holding its replicas' CPUs. Here it asks
    # for more replicas than the two one-CPU nodes hold, so it waits for nodes to join (a cluster's
    # autoscaler could add them) until it is stopped.
    import numpy as np

    from conftest import make_vectors_dir
    from vecjob.ray_serve import APP_NAME

    vectors = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    make_vectors_dir(tmp_path / "v", vectors, [f"d{i}" for i in range(60)])
    index_collection(tmp_path / "v", tmp_path / "index", IndexConfig())
    def deploying(proc):
        deadline = time.time() + 120
        while APP_NAME not in _cluster_apps(ray_cluster) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and APP_NAME in _cluster_apps(ray_cluster), proc.communicate()

    status, stderr = _serve_then_stop([tmp_path / "index", "--address", ray_cluster.gcs, "--port", free_port(),
                                       "--replicas", "5"], deploying, lambda pid: os.kill(pid, signal.SIGTERM),
                                      env=ray_cluster.env)
    assert status == 128 + signal.SIGTERM, stderr
    assert "waiting for nodes to join" in stderr and "serving" not in stderr, stderr
    try:
        deadline = time.time() + 60
        while APP_NAME in _cluster_apps(ray_cluster) and time.time() < deadline:
            time.sleep(0.5)
        assert APP_NAME not in _cluster_apps(ray_cluster)
    finally:  # Serve's controller and proxies go too: the cluster's later tests have its two CPUs to themselves
        urllib.request.urlopen(urllib.request.Request(f"{ray_cluster.dashboard}/api/serve/applications/",
                                                      method="DELETE"), timeout=60).close()


def test_a_service_on_its_embedded_ray_stopped_by_a_sigterm_to_its_process_group_ends_cleanly(service):
    # `timeout`, systemd and `kill -- -PGID` send SIGTERM to the whole process group, the embedded Ray's
    # own processes included: the command's delete of the application then waited 60 s for Ray's
    # stopped GCS and ended with status 1 and Ray's "Failed to connect to GCS" line.
    def serving(proc):
        next((line for line in proc.stderr if line.startswith("serving ")), None)  # None: it ended first

    status, stderr = _serve_then_stop([service.root / "index", "--port", free_port()], serving,
                                      lambda pid: os.killpg(pid, signal.SIGTERM))
    assert status == 0 and stderr.strip().splitlines()[-1] == "stopped", stderr
    assert "GCS" not in stderr, stderr


def test_a_service_reads_index_model_and_texts_from_a_bucket_and_follows_a_new_index_there(s3, tiny_model_dir,
                                                                                            collection):
    # The deployment's own setup (deploy/kuberay/rayservice.yaml, jobs/nightly.toml): the service reads
    # everything from a store, in a process and embedded Ray of its own, as `vecjob serve` runs.
    from vecjob import storage

    for folder, uri in ((tiny_model_dir, s3.uri("model")), (collection, s3.uri("texts"))):
        for f in folder.iterdir():
            storage.write_bytes(storage.join(uri, f.name), f.read_bytes())
    cli = CliRunner()
    for step in (["encode", s3.uri("texts"), "--model", s3.uri("model"), "--out", s3.uri("v"), "--runner", "local"],
                 ["index", s3.uri("v"), "--out", s3.uri("index"), "--factory", "Flat"]):
        done = cli.invoke(app, step)
        assert done.exit_code == 0, (step, done.output)
    storage.remove(s3.uri("model"))  # the index is published, its model not yet (a night's order)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    answers = {}

    def serving_then_following(proc):
        answers["start"] = []
        for line in proc.stderr:
            answers["start"].append(line)
            if line.startswith("serving "):
                break
        assert answers["start"][-1].startswith("serving "), proc.stderr.read()
        answers["before the model"] = call(url, "/search", {"text": "goal team league", "k": 3})
        for f in tiny_model_dir.iterdir():  # published now: taken up without a newer index or a restart
            storage.write_bytes(storage.join(s3.uri("model"), f.name), f.read_bytes())
        deadline = time.time() + 60
        while time.time() < deadline and not call(url, "/info")[1].get("text_queries"):
            time.sleep(0.5)
        answers["text"] = call(url, "/search", {"text": "goal team league", "k": 3})
        answers["id"] = call(url, "/search", {"id": "doc-00003", "k": 2})
        assert cli.invoke(app, ["index", s3.uri("v"), "--out", s3.uri("index"), "--factory", "HNSW16"]).exit_code == 0
        deadline = time.time() + 60
        while time.time() < deadline and call(url, "/info")[1].get("factory") != "HNSW16":
            time.sleep(0.5)
        answers["info"] = call(url, "/info")

    # No --model: text queries are encoded by the model the index records (its URI in the bucket), once it is there.
    status, stderr = _serve_then_stop([s3.uri("index"), "--data", s3.uri("texts"),
                                       "--port", port, "--poll-s", "0.5"], serving_then_following,
                                      lambda pid: os.killpg(pid, signal.SIGTERM), env={**os.environ, "RAY_ADDRESS": ""})
    assert status == 0 and stderr.strip().splitlines()[-1] == "stopped", stderr
    said = "".join(answers["start"])
    assert f"text queries will be refused: the index's model: {s3.uri('model')}" in said, said
    refused_status, refused = answers["before the model"]
    assert refused_status == 422 and "cannot encode text queries: the index's model" in refused["error"], refused
    (text_status, text), (id_status, by_id) = answers["text"], answers["id"]
    assert text_status == 200 and len(text["hits"]) == 3 and all(h["snippet"] for h in text["hits"]), text
    assert id_status == 200 and by_id["hits"][0]["id"] == "doc-00003" and by_id["hits"][0]["snippet"], by_id
    assert answers["info"][1]["factory"] == "HNSW16" and answers["info"][1]["index_dir"] == s3.uri("index")
    assert answers["info"][1]["model_dir"] == s3.uri("model")  # the one the index records, given no --model
    assert answers["info"][1]["generation"] != text["generation"]
