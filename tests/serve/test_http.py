"""The HTTP/JSON API against NgramIndex: a real gRPC server and its HTTP routes on loopback.

Every RPC of the proto has a route; JSON answers equal the in-process answers; bad requests get a
clear 4xx with {"error": {"code", "message"}} and the server keeps serving; limits, deadlines,
bearer tokens, TLS, health and the access log are the gRPC server's.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import threading
import time

import numpy as np
import pytest

from engine import NgramIndex
from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine.serve.client import NgramClient
from engine.serve.http import HttpServer, create_app, rpc_routes
from engine.serve.http.codec import snake_case
from engine.serve.server import create_server
from engine.serve.servicer import ServerLimits
from tests.helpers.corpora import build_text_index, make_docs
from tests.helpers.serving import Http, Wrapped, self_signed_cert

LIMITS = ServerLimits(max_message_bytes=1 << 20, max_query_tokens=64, max_batch_size=100, max_results_per_stream=20)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> NgramIndex:
    return NgramIndex.open(build_text_index(tmp_path_factory.mktemp("http") / "idx", make_docs(3, 200),
                                            shard_bytes=2048))


@pytest.fixture(scope="module")
def served(index):
    """One server, both transports: gRPC and HTTP from the same servicer."""
    server, _ = create_server(index, limits=LIMITS, http_address="127.0.0.1:0")
    yield server
    server.shutdown(grace=0)


@pytest.fixture(scope="module")
def api(served) -> Http:
    return Http(served.http_port)


def ids_query(ids) -> dict:
    return {"token_ids": {"ids": [int(i) for i in ids]}}


def assert_error(reply, status: int, code: str, *words: str):
    got_status, body = reply
    assert got_status == status, body
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    for w in words:
        assert w in body["error"]["message"], body


# ------------------------------------------------------------------------------------------------
# Routes


def test_every_rpc_has_a_route_and_an_openapi_entry(api):
    service = pb.DESCRIPTOR.services_by_name["NgramService"]
    assert set(rpc_routes()) == {f"/v1/{snake_case(m.name)}" for m in service.methods}
    assert snake_case("NextTokenDistribution") == "next_token_distribution" and snake_case("CountCnf") == "count_cnf"
    status, doc = api.request("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    for m in service.methods:
        path = f"/v1/{snake_case(m.name)}"
        op = doc["paths"][path]["post"]
        assert op["operationId"] == m.name
        assert f"ngram.v1.{m.input_type.name}" in doc["components"]["schemas"]
        # Each route reaches the servicer: an empty request is answered or refused as invalid,
        # never "no such route" or "not implemented".
        status, body = api.post(path, {})
        assert status in (200, 400), (path, body)
    assert "/" in doc["paths"] and "/healthz" in doc["paths"]


def test_answers_equal_the_index(api, index):
    q = index.tokenize("the cat")
    assert api.post("/v1/count", {"query": {"text": "the cat"}}) == (200, {"count": index.count("the cat")})
    assert api.post("/v1/count", {"query": ids_query(q)}) == (200, {"count": index.count(q)})
    assert api.post("/v1/count", {"query": {"text": "zebra"}}) == (200, {"count": 0})  # zero is a count
    texts = ["the", "cat sat", "zebra", "a log"]
    want = index.count_batch([index.tokenize(t) for t in texts]).tolist()
    assert api.post("/v1/count_batch", {"queries": {"texts": {"texts": texts}}}) == (200, {"counts": want})
    toks = [index.tokenize(t) for t in texts]
    packed = {"token_ids": np.concatenate(toks).tolist(), "offsets": np.cumsum([0] + [len(t) for t in toks]).tolist()}
    assert api.post("/v1/count_batch", {"queries": {"packed": packed}}) == (200, {"counts": want})

    d = index.ntd("the ")
    status, body = api.post("/v1/next_token_distribution", {"prompt": {"text": "the "}})
    assert status == 200 and body["distribution"] == {
        "prompt_count": d.prompt_count, "token_ids": d.tokens.tolist(), "counts": d.counts.tolist(),
        "end_count": d.end_count, "approx": False}

    ip = index.infgram_prob("the big dog sat on a", int(index.tokenize(" ")[0]))
    status, body = api.post("/v1/infgram_prob", {"prompt": {"text": "the big dog sat on a"},
                                                  "cont_id": int(index.tokenize(" ")[0])})
    assert status == 200 and body == {"prompt_count": ip.prompt_count, "cont_count": ip.cont_count,
                                      "prob": ip.prob, "suffix_len": ip.suffix_len}

    pb_ = index.prob_batch([index.tokenize("the"), index.tokenize("a")], [32, 32])
    status, body = api.post("/v1/prob_batch", {"prompts": {"texts": {"texts": ["the", "a"]}}, "cont_ids": [32, 32]})
    assert status == 200 and body["probs"] == pb_.probs.tolist() and body["cont_counts"] == pb_.cont_counts.tolist()

    f = index.find("cat")
    status, body = api.post("/v1/find", {"query": {"text": "cat"}})
    assert body == {"count": f.count, "segments": [{"start": s, "end": e} for s, e in f.segments]}

    status, body = api.post("/v1/get_index_info")
    assert status == 200 and body["num_tokens"] == index.num_tokens and body["num_shards"] == index.num_shards
    assert body["limits"]["max_query_tokens"] == LIMITS.max_query_tokens
    assert api.post("/v1/tokenize", {"text": "the cat"}) == (200, {"token_ids": q.tolist()})
    assert api.post("/v1/detokenize", {"token_ids": q.tolist()}) == (200, {"text": "the cat"})


def _doc_json(doc) -> dict:
    out = {"doc_ix": doc.doc_ix, "doc_len": doc.doc_len, "disp_len": doc.disp_len,
           "needle_offset": doc.needle_offset, "token_ids": np.asarray(doc.token_ids).tolist(), "shard": doc.shard}
    if doc.metadata is not None:
        out["metadata"] = doc.metadata
    return out


def _parse_meta(d: dict) -> dict:
    d = dict(d)
    if "metadata_json" in d:
        d["metadata"] = json.loads(d.pop("metadata_json"))
    return d


def test_streams_as_json_array_and_ndjson(api, index):
    want = index.search_docs("cat sat", max_docs=3, max_disp_len=20)
    body = {"query": {"text": "cat sat"}, "max_docs": 3, "max_disp_len": 20}
    status, items = api.post("/v1/search_documents", body)
    assert status == 200
    assert items[0] == {"summary": {"count": want.count, "num_documents": len(want.documents), "approx": False}}
    assert [_parse_meta(i["document"]) for i in items[1:]] == [_doc_json(d) for d in want.documents]
    status, lines = api.post("/v1/search_documents", body, headers={"Accept": "application/x-ndjson"})
    assert status == 200 and lines == items

    doc = index.get_doc_by_ix(5, max_disp_len=50)
    status, body = api.post("/v1/get_document", {"doc_ix": 5, "max_disp_len": 50})
    assert status == 200 and _parse_meta(body["document"]) == _doc_json(doc)

    a = index.attribute("the cat sat on the mat and the dog ran to a log", min_len=5, max_docs=2, max_disp_len=30)
    status, body = api.post("/v1/attribute", {"text": {"text": "the cat sat on the mat and the dog ran to a log"},
                                              "min_len": 5, "max_docs": 2, "max_disp_len": 30})
    assert status == 200 and body["creativity"] == a.creativity
    assert [(s["start"], s["end"], s["count"]) for s in body["spans"]] == [(s.start, s.end, s.count) for s in a.spans]
    assert body["lengths"] == a.matches.lengths.tolist()

    c = index.count_cnf([["cat", "dog"], ["red"]])
    status, body = api.post("/v1/count_cnf", {"clauses": [{"terms": [{"text": "cat"}, {"text": "dog"}]},
                                                          {"terms": [{"text": "red"}]}]})
    assert status == 200 and body["count"] == c.count and body["clause_counts"] == list(c.clause_counts)


# ------------------------------------------------------------------------------------------------
# Errors


def test_bad_requests_get_clear_4xx_and_the_server_keeps_serving(api, index):
    assert_error(api.post("/v1/count", b"{not json"), 400, "INVALID_ARGUMENT", "not valid JSON")
    assert_error(api.post("/v1/count", b"\xff\xfe"), 400, "INVALID_ARGUMENT", "not valid JSON")
    assert_error(api.post("/v1/count", [1, 2]), 400, "INVALID_ARGUMENT", "JSON object")
    assert_error(api.post("/v1/count", b"[" * 100_000), 400, "INVALID_ARGUMENT", "deep")
    status, body = api.post("/", b"[" * 100_000)
    assert status == 400 and "deep" in body["error"]
    assert_error(api.post("/v1/count", {"query": {"text": 5}}), 400, "INVALID_ARGUMENT", "text")
    assert_error(api.post("/v1/count", {"query": {"txt": "a"}}), 400, "INVALID_ARGUMENT", "txt")
    assert_error(api.post("/v1/count", {"query": {"token_ids": {"ids": ["x"]}}}), 400, "INVALID_ARGUMENT")
    assert_error(api.post("/v1/count", {"query": {"token_ids": {"ids": [10 ** 6]}}}), 400, "INVALID_ARGUMENT",
                 "vocabulary")
    assert_error(api.post("/v1/count_batch", {"queries": {"packed": {"token_ids": ["a"], "offsets": [0, 1]}}}),
                 400, "INVALID_ARGUMENT", "array of numbers")
    assert_error(api.post("/v1/count"), 400, "INVALID_ARGUMENT", "missing")  # no query at all
    assert_error(api.post("/v1/prob", {"prompt": {"text": "the"}}), 400, "INVALID_ARGUMENT", "cont_id")
    # Over a server limit: 429 naming it.
    assert_error(api.post("/v1/count", {"query": ids_query([97] * 65)}), 429, "RESOURCE_EXHAUSTED",
                 "max_query_tokens")
    # A body over the limit (max_message_bytes, 1 MiB here): 413.
    big = json.dumps({"query": {"text": "a" * (1 << 20)}}).encode()
    assert_error(api.post("/v1/count", big), 413, "RESOURCE_EXHAUSTED", "limit")
    # Unknown routes and methods.
    assert_error(api.post("/v1/no_such_rpc", {}), 404, "NOT_FOUND", "/openapi.json")
    assert_error(api.request("GET", "/v1/count"), 405, "METHOD_NOT_ALLOWED")
    # Deadlines: expired before the work -> 504; malformed -> 400.
    assert_error(api.post("/v1/count?timeout=0.000001", {"query": {"text": "the"}}), 504, "DEADLINE_EXCEEDED")
    assert_error(api.post("/v1/count", {"query": {"text": "the"}}, headers={"X-Request-Timeout": "soon"}),
                 400, "INVALID_ARGUMENT", "timeout")
    assert api.post("/v1/count?timeout=30", {"query": {"text": "the"}}) == (200, {"count": index.count("the")})


def test_chunked_body_over_the_limit_is_refused(served, index):
    # No Content-Length: the limit is enforced as the body arrives.
    conn = http.client.HTTPConnection("127.0.0.1", served.http_port, timeout=30)
    chunks = (b"x" * 8192 for _ in range(200))
    conn.request("POST", "/v1/count", body=chunks, encode_chunked=True, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert Http(served.http_port).post("/v1/count", {"query": {"text": "a"}}) == (200, {"count": index.count("a")})


def test_text_query_without_a_tokenizer_is_a_precondition_error(tiny_index):
    index, _ = tiny_index
    server, _ = create_server(index)
    web = HttpServer(create_app(server.servicer, health=server.health), "127.0.0.1", 0)
    web.start()
    try:
        api = Http(web.port)
        assert_error(api.post("/v1/count", {"query": {"text": "a"}}), 409, "FAILED_PRECONDITION", "tokenizer")
        assert api.post("/v1/count", {"query": ids_query([1, 2])}) == (200, {"count": index.count([1, 2])})
        # infini-gram's route: its {"error": "..."} convention.
        status, body = api.post("/", {"query_type": "count", "query": "a"})
        assert status == 409 and "tokenizer" in body["error"]
    finally:
        web.stop(0)
        server.shutdown(0)


# ------------------------------------------------------------------------------------------------
# Health, auth, TLS, access log


def test_healthz_follows_the_grpc_health_state(index):
    server, _ = create_server(index)
    web = HttpServer(create_app(server.servicer, health=server.health), "127.0.0.1", 0)
    web.start()
    try:
        api = Http(web.port)
        assert api.request("GET", "/healthz") == (200, {"status": "SERVING"})
        server.set_serving(False)
        assert api.request("GET", "/healthz") == (503, {"status": "NOT_SERVING"})
        server.set_serving(True)
        assert api.request("GET", "/healthz")[0] == 200
        server.health.enter_graceful_shutdown()
        assert api.request("GET", "/healthz") == (503, {"status": "NOT_SERVING"})
    finally:
        web.stop(0)
        server.shutdown(0)


def test_tls_bearer_token_and_access_log(index, tmp_path, caplog):
    cert, key = self_signed_cert(tmp_path)
    token = "s3cret"
    # One server, both transports, one token and one certificate (PEM bytes: create_server takes paths too).
    server, port = create_server(index, auth_token=token, tls_cert=cert.read_bytes(), tls_key=key.read_bytes(),
                                 http_address="127.0.0.1:0")
    tls = ssl.create_default_context(cafile=str(cert))
    try:
        caplog.set_level(logging.INFO, logger="engine.access")
        good = Http(server.http_port, tls=tls, headers={"Authorization": f"Bearer {token}"})
        assert good.post("/v1/count", {"query": {"text": "the"}}) == (200, {"count": index.count("the")})
        with NgramClient(f"127.0.0.1:{port}", root_certificates=cert, token=token) as c:
            assert c.count("the") == index.count("the")
        for bad in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
            anon = Http(server.http_port, tls=tls, headers=bad)
            assert_error(anon.post("/v1/count", {"query": {"text": "the"}}), 401, "UNAUTHENTICATED", "Bearer")
            status, body = anon.post("/", {"query_type": "count", "query": "the"})
            assert status == 401 and "Bearer" in body["error"]
            assert anon.request("GET", "/healthz")[0] == 200  # health needs no token, as over gRPC
        lines = [r.getMessage() for r in caplog.records if r.name == "engine.access"]
        assert any(line.startswith("Count OK") and "peer=http:127.0.0.1:" in line for line in lines), lines
        assert any(line.startswith("Count UNAUTHENTICATED") for line in lines), lines
        with pytest.raises(ssl.SSLError):  # the port speaks TLS only
            Http(server.http_port, tls=ssl.create_default_context()).post("/v1/count", {})
    finally:
        server.shutdown(0)


def test_ngram_serve_http_port_serves_both_and_stops_on_sigterm(index, tmp_path):
    """`ngram serve INDEX --port 0 --http-port 0`: one process answers gRPC and HTTP from the same
    backend, logs both in one access log, and exits 0 soon after SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli.serve", str(index.paths[0]), "--port", "0",
                             "--http-port", "0", "--grace", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        while not (lines and lines[-1].startswith("listening on")):
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line.strip())
        url = next(x for x in lines if x.startswith("http on ")).split()[-1]
        grpc_target = lines[-1].split()[-1]
        api = Http(int(url.rsplit(":", 1)[1]))
        assert api.post("/v1/count", {"query": {"text": "the"}}) == (200, {"count": index.count("the")})
        assert api.request("GET", "/")[0] == 200
        with NgramClient(grpc_target) as c:
            assert c.count("the") == index.count("the")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - t0 < 2 + 1.5
        err = proc.stderr.read()
        assert "SIGTERM received" in err and "peer=http:127.0.0.1:" in err and "Count OK" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _Endless(Wrapped):
    """An index whose attribution runs until its stop check raises (the client left, the deadline)."""

    def __init__(self, index):
        super().__init__(index)
        self.stopped = threading.Event()

    def attribute(self, text, *args, check_alive=None, **kwargs):
        try:
            while True:
                check_alive()
                time.sleep(0.005)
        finally:
            self.stopped.set()


def test_long_work_stops_when_the_client_disconnects_or_the_deadline_passes(index):
    backend = _Endless(index)
    server, _ = create_server(backend, http_address="127.0.0.1:0")
    try:
        body = json.dumps({"text": {"text": "the cat sat"}}).encode()
        sock = socket.create_connection(("127.0.0.1", server.http_port))
        sock.sendall(b"POST /v1/attribute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.3)
        assert not backend.stopped.is_set()  # still working while the client waits
        sock.close()
        assert backend.stopped.wait(5), "the work went on after the client left"
        backend.stopped.clear()
        t0 = time.monotonic()
        assert_error(Http(server.http_port).post("/v1/attribute?timeout=0.3", json.loads(body)), 504,
                     "DEADLINE_EXCEEDED")
        assert backend.stopped.is_set() and time.monotonic() - t0 < 3
    finally:
        server.shutdown(0)


def test_a_router_serves_http_too(router, parts):
    """`ngram route SHARDMAP --http-port`: the router's servicer behind the same routes."""
    _, full, _ = parts
    server, _ = create_server(router, http_address="127.0.0.1:0")
    try:
        api = Http(server.http_port)
        for text in ("the cat", "a", "zebra"):
            assert api.post("/v1/count", {"query": {"text": text}}) == (200, {"count": full.count(text)})
        d = full.ntd("the ")
        status, body = api.post("/", {"query_type": "ntd", "query": "the "})
        assert status == 200 and body["prompt_cnt"] == d.prompt_count and body["exact"] is True
        assert {int(t): v["cont_cnt"] for t, v in body["result_by_token_id"].items()} == \
               dict(zip(d.tokens.tolist(), d.counts.tolist()))
        assert api.request("GET", "/healthz") == (200, {"status": "SERVING"})
    finally:
        server.shutdown(0)
