"""The gRPC server against the in-process NgramIndex: a real server on port 0 over loopback.

Every RPC must answer exactly what NgramIndex answers on the same index; bad input gets its
status code (never INTERNAL) and the server keeps serving; limits, deadlines, health, reflection,
TLS, bearer tokens, access logs, concurrency and graceful shutdown.

"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from engine import NgramIndex, build_index
from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine._proto.ngram.v1 import ngram_pb2_grpc as pb_grpc
from engine.serve.client import NgramClient
from engine.errors import InvalidQueryError, LimitExceededError, NgramError, ShardUnavailableError, TokenizerError
from engine.results import PackedQueries
from engine.serve.server import create_server
from engine.serve.servicer import ServerLimits
from tests.helpers.corpora import build_text_index, make_docs, sample_queries
from tests.helpers.serving import Wrapped, assert_same, health_status, rpc_code, self_signed_cert

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------
# Fixtures

LIMITS = ServerLimits(
    max_message_bytes=1 << 20,
    max_query_tokens=64,
    max_text_bytes=256,
    max_batch_size=3000,
    max_results_per_stream=50,
    max_support=100_000,
    max_disp_len=1000,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs = make_docs(1, 240)
    path = build_text_index(tmp_path_factory.mktemp("svc") / "idx", docs, shard_bytes=2048)
    index = NgramIndex.open(path)
    # several shards; 4 like test_router's union (numba compiles batch kernels per shard count)
    assert index.num_shards == 4
    return index, docs


@pytest.fixture(scope="module")
def served(corpus):
    index, _ = corpus
    server, port = create_server(index, limits=LIMITS)
    yield server, port
    server.shutdown(grace=0)


@pytest.fixture(scope="module")
def client(served):
    _, port = served
    with NgramClient(f"127.0.0.1:{port}") as c:
        yield c


@pytest.fixture(scope="module")
def stub(served):
    _, port = served
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.NgramServiceStub(channel)
    channel.close()


# ------------------------------------------------------------------------------------------------
# Equality with the in-process index


def test_index_facts_match(client, corpus):
    index, _ = corpus
    for name in ("vocab_size", "token_width", "num_tokens", "num_docs", "num_shards", "eos_token_id",
                 "tokenizer_fingerprint", "manifest"):
        assert getattr(client, name) == getattr(index, name), name
    assert client.info() == json.loads(json.dumps(index.info()))
    assert client.tokenizer.kind == index.tokenizer.kind
    assert client.tokenizer.fingerprint() == index.tokenizer.fingerprint()
    assert client.limits["max_query_tokens"] == LIMITS.max_query_tokens


def test_single_query_rpcs_match(client, corpus):
    index, docs = corpus
    queries = sample_queries(index, docs, seed=2, n=40)
    for q in queries:
        assert_same(client.find(q), index.find(q))
        assert_same(client.count(q), index.count(q))
        assert_same(client.ntd(q), index.ntd(q))
        assert_same(client.ntd(q, max_support=3), index.ntd(q, max_support=3))
        assert_same(client.infgram_ntd(q), index.infgram_ntd(q))
        assert_same(client.infgram_ntd(q, max_support=2), index.infgram_ntd(q, max_support=2))
        for cont in (32, int(q[0]), 116):
            assert_same(client.prob(q, cont), index.prob(q, cont))
            assert_same(client.infgram_prob(q, cont), index.infgram_prob(q, cont))
        assert_same(client.search_docs(q, max_docs=7, max_disp_len=12), index.search_docs(q, max_docs=7, max_disp_len=12))
    # empty queries where the engine allows them
    for q in ([], np.zeros(0, dtype=np.int64)):
        assert_same(client.count(q), index.count(q))
        assert_same(client.find(q), index.find(q))
        assert_same(client.ntd(q), index.ntd(q))
        assert_same(client.infgram_prob(q, 32), index.infgram_prob(q, 32))
    # numpy int dtypes of every width
    q = queries[0]
    for dtype in (np.int32, np.uint8, np.uint16, np.int64):
        assert client.count(q.astype(dtype)) == index.count(q)


def test_text_queries_match(client, corpus):
    index, _ = corpus
    for text in ("the cat", "dog ran", " a ", "zebra", "hat"):
        assert_same(client.tokenize(text), index.tokenize(text))
        assert client.detokenize(index.tokenize(text)) == index.detokenize(index.tokenize(text)) == text
        assert_same(client.count(text), index.count(text))
        assert_same(client.ntd(text), index.ntd(text))
        assert_same(client.infgram_ntd("zzz " + text), index.infgram_ntd("zzz " + text))
        assert_same(client.prob(text, 32), index.prob(text, 32))
        assert_same(client.search_docs(text, max_docs=3), index.search_docs(text, max_docs=3))
    texts = ["the", "cat sat", "qqq", "the dog"]
    assert_same(client.count_batch(texts), index.count_batch(texts))
    assert_same(client.infgram_ntd_batch(texts), index.infgram_ntd_batch(texts))
    mixed = ["the", [116, 104], "dog"]
    assert_same(client.count_batch(mixed), index.count_batch(mixed))


def test_batch_rpcs_match(client, corpus):
    index, docs = corpus
    queries = sample_queries(index, docs, seed=3, n=200) + [np.zeros(0, dtype=np.int64)]
    packed = PackedQueries.from_list(queries)
    conts = np.random.default_rng(4).choice([32, 97, 116, 101, 104], size=len(queries))
    assert_same(client.count_batch(queries), index.count_batch(queries))
    assert_same(client.count_batch(packed), index.count_batch(packed))
    assert_same(client.prob_batch(queries, conts), index.prob_batch(queries, conts))
    assert_same(client.infgram_prob_batch(packed, conts), index.infgram_prob_batch(packed, conts))
    assert_same(client.ntd_batch(queries[:50]), index.ntd_batch(queries[:50]))
    assert_same(client.ntd_batch(queries[:50], max_support=2), index.ntd_batch(queries[:50], max_support=2))
    assert_same(client.infgram_ntd_batch(packed), index.infgram_ntd_batch(packed))
    assert_same(client.count_batch([]), index.count_batch([]))
    assert_same(client.ntd_batch([]), index.ntd_batch([]))
    grid = np.array([[116, 104], [32, 97], [200, 201]])
    assert_same(client.count_batch(grid), index.count_batch(list(grid)))


def test_large_batches_are_split_to_the_server_limit(client, corpus):
    index, docs = corpus
    queries = sample_queries(index, docs, seed=5, n=7000)  # > max_batch_size=3000
    conts = np.full(len(queries), 32)
    assert_same(client.count_batch(queries), index.count_batch(queries))
    assert_same(client.infgram_prob_batch(queries, conts), index.infgram_prob_batch(queries, conts))


def test_document_rpcs_match(client, corpus):
    index, _ = corpus
    for ix in (0, 1, index.num_docs // 2, index.num_docs - 1):
        assert_same(client.get_doc_by_ix(ix), index.get_doc_by_ix(ix))
        assert_same(client.get_doc_by_ix(ix, max_disp_len=3), index.get_doc_by_ix(ix, max_disp_len=3))
    for shard in range(index.num_shards):
        for rank in (0, 5, 17):
            assert_same(client.get_doc_by_rank(shard, rank, 9), index.get_doc_by_rank(shard, rank, 9))
        assert_same(client.get_doc_by_ptr(shard, 7), index.get_doc_by_ptr(shard, 7))
    doc = client.get_doc_by_ix(3)
    assert doc.metadata is not None and doc.metadata["n"] == 3
    result = client.search_docs("cat", max_docs=50, max_disp_len=8)
    assert result.count == index.count("cat") and len(result.documents) == min(50, result.count)
    assert_same(client.search_docs("cat", max_docs=0), index.search_docs("cat", max_docs=0))


# ------------------------------------------------------------------------------------------------
# Bad input: the right code, a message that names the problem, and the server keeps serving


def _invalid_utf8_count_request() -> bytes:
    text = b"\xff\xfe bad"
    query = b"\x12" + bytes([len(text)]) + text  # Query.text (field 2)
    return b"\x0a" + bytes([len(query)]) + query  # CountRequest.query (field 1)


def test_bad_inputs_get_their_codes(client, stub, served, corpus):
    index, _ = corpus
    _, port = served
    C = grpc.StatusCode
    big = np.full(LIMITS.max_query_tokens + 1, 116)
    typed = [
        (lambda: client.count([300]), InvalidQueryError, C.INVALID_ARGUMENT, "vocabulary"),
        (lambda: client.count([-1]), InvalidQueryError, C.INVALID_ARGUMENT, "vocabulary"),
        (lambda: client.count([116, 255]), InvalidQueryError, C.INVALID_ARGUMENT, "separator"),
        (lambda: client.search_docs([]), InvalidQueryError, C.INVALID_ARGUMENT, "empty"),
        (lambda: client.prob([116], 300), InvalidQueryError, C.INVALID_ARGUMENT, "cont_id"),
        (lambda: client.count(big), LimitExceededError, C.RESOURCE_EXHAUSTED, "max_query_tokens"),
        (lambda: client.count("x" * 300), LimitExceededError, C.RESOURCE_EXHAUSTED, "max_text_bytes"),
        (lambda: client.count("the " * 20), LimitExceededError, C.RESOURCE_EXHAUSTED, "max_query_tokens"),
        (lambda: client.count_batch([big]), LimitExceededError, C.RESOURCE_EXHAUSTED, "max_query_tokens"),
        (lambda: client.search_docs("the", max_docs=51), LimitExceededError, C.RESOURCE_EXHAUSTED, "max_results_per_stream"),
        (lambda: client.ntd("the", max_support=100_001), LimitExceededError, C.RESOURCE_EXHAUSTED, "max_support"),
        (lambda: client.ntd("the", max_support=0), InvalidQueryError, C.INVALID_ARGUMENT, "max_support"),
        (lambda: client.get_doc_by_ix(0, max_disp_len=1001), LimitExceededError, C.RESOURCE_EXHAUSTED, "max_disp_len"),
        (lambda: client.get_doc_by_ix(0, max_disp_len=0), InvalidQueryError, C.INVALID_ARGUMENT, "max_disp_len"),
        (lambda: client.get_doc_by_ix(index.num_docs), InvalidQueryError, C.INVALID_ARGUMENT, "doc_ix"),
        (lambda: client.get_doc_by_rank(index.num_shards, 0), InvalidQueryError, C.INVALID_ARGUMENT, "shard"),
        (lambda: client.get_doc_by_rank(0, 10**9), InvalidQueryError, C.INVALID_ARGUMENT, "rank"),
        (lambda: client.get_doc_by_ptr(0, -1), InvalidQueryError, C.INVALID_ARGUMENT, "ptr"),
        (lambda: client.prob_batch([[116], [104]], [32]), InvalidQueryError, C.INVALID_ARGUMENT, "cont_ids"),
        (lambda: client.count_batch([[116], [104, 255]]), InvalidQueryError, C.INVALID_ARGUMENT, "separator"),
    ]
    for call, exc_type, code, word in typed:
        with pytest.raises(exc_type) as info:
            call()
        assert info.value.code == code, (word, info.value)
        assert word in str(info.value), (word, str(info.value))

    q = pb.Query(token_ids=pb.TokenIds(ids=[116]))
    packed = lambda tokens, offsets: pb.QueryBatch(packed=pb.PackedTokenIds(token_ids=tokens, offsets=offsets))  # noqa: E731
    i8 = lambda *v: np.array(v, dtype="<i8").tobytes()  # noqa: E731
    raw = [
        (lambda: stub.Count(pb.CountRequest()), C.INVALID_ARGUMENT),  # missing query
        (lambda: stub.Count(pb.CountRequest(query=pb.Query())), C.INVALID_ARGUMENT),  # neither ids nor text
        (lambda: stub.Prob(pb.ProbRequest(prompt=q)), C.INVALID_ARGUMENT),  # missing cont_id
        (lambda: stub.InfgramProb(pb.InfgramProbRequest(prompt=q)), C.INVALID_ARGUMENT),
        (lambda: stub.GetDocument(pb.GetDocumentRequest()), C.INVALID_ARGUMENT),  # no locator
        (lambda: stub.CountBatch(pb.CountBatchRequest()), C.INVALID_ARGUMENT),
        (lambda: stub.CountBatch(pb.CountBatchRequest(queries=packed(b"\x01" * 7, i8(0, 0)))), C.INVALID_ARGUMENT),
        (lambda: stub.CountBatch(pb.CountBatchRequest(queries=packed(i8(116), b""))), C.INVALID_ARGUMENT),
        (lambda: stub.CountBatch(pb.CountBatchRequest(queries=packed(i8(116), i8(0, 2)))), C.INVALID_ARGUMENT),
        (lambda: stub.CountBatch(pb.CountBatchRequest(queries=packed(i8(116, 104), i8(0, 2, 1, 2)))), C.INVALID_ARGUMENT),
        (lambda: stub.CountBatch(pb.CountBatchRequest(queries=packed(i8(), i8(*[0] * 3002)))), C.RESOURCE_EXHAUSTED),
        (lambda: stub.ProbBatch(pb.ProbBatchRequest(prompts=packed(i8(116), i8(0, 1)), cont_ids=b"\x00" * 5)), C.INVALID_ARGUMENT),
        (lambda: stub.CountBatch(pb.CountBatchRequest(queries=pb.QueryBatch(texts=pb.TextBatch(texts=["a"] * 3001)))), C.RESOURCE_EXHAUSTED),
        (lambda: stub.CountBatch(pb.CountBatchRequest(queries=packed(i8(*[1] * 140_000), i8(0, 140_000)))), C.RESOURCE_EXHAUSTED),  # > max_message_bytes
        (lambda: stub.Detokenize(pb.DetokenizeRequest(token_ids=[1] * 65)), C.RESOURCE_EXHAUSTED),
        (lambda: stub.SearchDocuments(pb.SearchDocumentsRequest(query=q, max_docs=-1)), C.INVALID_ARGUMENT),
    ]
    for call, code in raw:
        assert rpc_code(call) == code

    # bytes that do not parse at all, and invalid UTF-8 in a string field
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    for method, payload in (("Count", b"\xff\xff\xff\xff"), ("Count", _invalid_utf8_count_request()),
                            ("SearchDocuments", b"\x0a\x05\x0a")):
        if method == "SearchDocuments":
            call = channel.unary_stream(f"/ngram.v1.NgramService/{method}")
        else:
            call = channel.unary_unary(f"/ngram.v1.NgramService/{method}")
        with pytest.raises(grpc.RpcError) as info:
            r = call(payload, timeout=5)
            if method == "SearchDocuments":
                list(r)
        assert info.value.code() == C.INVALID_ARGUMENT, (method, info.value.details())
    channel.close()

    # still serving, still right
    assert health_status(client.channel) == "SERVING"
    assert client.count("the cat") == index.count("the cat")


def test_text_to_an_index_without_tokenizer_is_failed_precondition(tmp_path):
    rng = np.random.default_rng(6)
    docs = [rng.integers(0, 1000, size=int(rng.integers(1, 30))) for _ in range(50)]
    path = build_index(tmp_path / "u16", documents=docs, tokenizer=None, vocab_size=1000, workers=1)
    index = NgramIndex.open(path)
    assert index.token_width == 2 and index.tokenizer is None
    # warmup=False: this test uses no batch kernel, and compiling the u16 ones costs most of a minute.
    # The single-query kernels compile here (on a fresh clone), outside any call deadline.
    index.count(docs[0][:2]), index.ntd(docs[0][:2]), index.infgram_prob(docs[0], 7)
    server, port = create_server(index, warmup=False)
    try:
        with NgramClient(f"127.0.0.1:{port}", timeout=300) as c:
            assert c.tokenizer is None and c.tokenizer_fingerprint is None
            for d in docs[:10]:
                q = d[: min(3, len(d))]
                assert c.count(q) == index.count(q)
                assert_same(c.ntd(q), index.ntd(q))
                assert_same(c.infgram_prob(d, 7), index.infgram_prob(d, 7))
            for call in (lambda: c.count("text"), lambda: c.tokenize("text"), lambda: c.detokenize([1, 2]),
                         lambda: c.count_batch(["a", "b"])):
                with pytest.raises(TokenizerError) as info:
                    call()
                assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
                assert "tokenizer" in str(info.value)
            with pytest.raises(InvalidQueryError):
                c.count([1000])
            assert c.count([5]) == index.count([5])
    finally:
        server.shutdown(0)


# ------------------------------------------------------------------------------------------------
# Deadlines


def test_deadline_exceeded_and_the_work_stops(corpus):
    index, _ = corpus
    calls = []

    class Slow(Wrapped):
        def count_batch(self, queries):
            calls.append(len(queries))
            time.sleep(0.05)
            return self._index.count_batch(queries)

        def count(self, query):
            time.sleep(0.3)
            return self._index.count(query)

    server, port = create_server(Slow(index))
    server.servicer.batch_chunk = 10
    try:
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            with pytest.raises(TimeoutError) as info:
                c.count_batch([[116]] * 200, timeout=0.2)  # 20 chunks x 50 ms
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(0.3)
            assert len(calls) < 20, "the server went on working after the deadline"
            with pytest.raises(TimeoutError):
                c.count([116], timeout=0.05)
            assert c.count([116], timeout=5) == index.count([116])
    finally:
        server.shutdown(0)


# ------------------------------------------------------------------------------------------------
# Concurrency


def test_16_threads_x_500_mixed_requests(client, corpus):
    index, docs = corpus
    queries = sample_queries(index, docs, seed=7, n=60)
    expected = {}
    for i, q in enumerate(queries):
        expected[("count", i)] = index.count(q)
        expected[("ntd", i)] = index.ntd(q)
        expected[("iprob", i)] = index.infgram_prob(q, 32)
        expected[("intd", i)] = index.infgram_ntd(q)
    batch = queries[:20]
    expected_batch = index.count_batch(batch)
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(500):
                i = int(rng.integers(len(queries)))
                kind = int(rng.integers(5))
                if kind == 0:
                    assert client.count(queries[i]) == expected[("count", i)]
                elif kind == 1:
                    assert client.ntd(queries[i]) == expected[("ntd", i)]
                elif kind == 2:
                    assert client.infgram_prob(queries[i], 32) == expected[("iprob", i)]
                elif kind == 3:
                    assert client.infgram_ntd(queries[i]) == expected[("intd", i)]
                else:
                    assert np.array_equal(client.count_batch(batch), expected_batch)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


# ------------------------------------------------------------------------------------------------
# Health, reflection, access log, graceful shutdown


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_health_is_serving_only_after_warmup(corpus):
    index, _ = corpus
    release = threading.Event()
    entered = threading.Event()

    class SlowWarmup(Wrapped):
        def warmup(self):
            entered.set()
            release.wait(10)

    port = _free_port()
    holder = {}
    t = threading.Thread(target=lambda: holder.setdefault("r", create_server(SlowWarmup(index), f"127.0.0.1:{port}")))
    t.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        assert entered.wait(10)
        assert health_status(channel) == "NOT_SERVING"
        assert health_status(channel, "") == "NOT_SERVING"
        release.set()
        t.join(10)
        assert health_status(channel) == "SERVING"
        assert health_status(channel, "") == "SERVING"
    finally:
        release.set()
        t.join(10)
        channel.close()
        if "r" in holder:
            holder["r"][0].shutdown(0)


def test_reflection_lists_the_services(served):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    _, port = served
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"ngram.v1.NgramService", "grpc.health.v1.Health"} <= names


def test_access_log_lines(client, caplog):
    with caplog.at_level(logging.INFO, logger="engine.access"):
        client.count([116, 104])
        with pytest.raises(InvalidQueryError):
            client.count([300])
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.access"]
    assert any(line.startswith("Count OK ") and "ms" in line for line in lines), lines
    assert any(line.startswith("Count INVALID_ARGUMENT ") and "ms" in line for line in lines), lines


def test_graceful_shutdown_lets_in_flight_calls_finish(corpus):
    index, _ = corpus
    started = threading.Event()

    class Slow(Wrapped):
        def count(self, query):
            started.set()
            time.sleep(0.5)
            return self._index.count(query)

    server, port = create_server(Slow(index))
    c = NgramClient(f"127.0.0.1:{port}", retry=False)
    try:
        pending = c.future_raw("Count", pb.CountRequest(query=pb.Query(token_ids=pb.TokenIds(ids=[116]))), 10)
        assert started.wait(5)
        stopper = threading.Thread(target=server.shutdown, args=(5,))
        stopper.start()
        time.sleep(0.1)
        assert pending.result().count == index.count([116])  # finished inside the grace period
        stopper.join(10)
        with pytest.raises(NgramError):
            c.count([116], timeout=2)
    finally:
        c.close()


def test_sigterm_subprocess_exits_zero(served, tmp_path):
    """`python -m engine.cli.serve` under SIGTERM: NOT_SERVING, in-flight calls finish, exit 0.

    The subprocess routes to the module's server (--shard-map), so it starts without compiling
    kernels; the signal handling is the same for a server holding an index.
    """
    _, port = served
    shard_map = tmp_path / "map.json"
    shard_map.write_text(json.dumps({"shards": [{"name": "only", "target": f"127.0.0.1:{port}"}]}))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli.serve", "--shard-map", str(shard_map), "--port", "0", "--grace", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on "), (line, proc.stderr.read() if proc.poll() is not None else "")
        target = line.split()[-1]
        with NgramClient(target) as c:
            assert c.health() == "SERVING"
            assert c.count("the") > 0
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        err = proc.stderr.read()
        assert "Count OK" in err and "SIGTERM received" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_cli_rejects_bad_arguments(tmp_path):
    from engine.cli.serve import main

    with pytest.raises(SystemExit) as info:
        main(["--port", "0"])  # neither INDEX nor --shard-map
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--tls-cert", "x.pem"])


def test_cli_serve_registers_on_subparsers():
    import argparse

    from engine.cli.serve import add_parsers, run_serve

    parser = argparse.ArgumentParser(prog="ngram")
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "idx", "--port", "0", "--max-batch-size", "7", "--tls-cert", "c", "--tls-key", "k"])
    assert args.func is run_serve and args.index == ["idx"] and args.max_batch_size == 7 and args.host == "127.0.0.1"


# ------------------------------------------------------------------------------------------------
# TLS and bearer tokens


def test_tls_and_bearer_token(corpus, tmp_path):
    index, _ = corpus
    cert, key = self_signed_cert(tmp_path)
    token = "s3cret-token"
    server, port = create_server(index, tls_cert=cert, tls_key=key, auth_token=token)
    target = f"127.0.0.1:{port}"
    try:
        with NgramClient(target, root_certificates=cert, token=token) as c:
            assert c.count("the cat") == index.count("the cat")
            assert c.search_docs("cat", max_docs=2) == index.search_docs("cat", max_docs=2)
            assert c.health() == "SERVING"
        (tmp_path / "token.txt").write_text(token + "\n")
        with NgramClient(target, root_certificates=cert, token_file=tmp_path / "token.txt") as c:
            assert c.count([116]) == index.count([116])
        for bad in (None, "wrong", token + "x", ""):
            with NgramClient(target, root_certificates=cert, token=bad) as c:
                assert c.health() == "SERVING"  # health checks need no token
                for call in (lambda: c.count("the"), lambda: c.search_docs("the")):
                    with pytest.raises(NgramError) as info:
                        call()
                    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
        with NgramClient(target, token=token, retry=False, timeout=5) as c:  # plaintext to a TLS port
            with pytest.raises(NgramError) as info:
                c.count("the")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        server.shutdown(0)


def test_token_without_tls(corpus):
    index, _ = corpus
    server, port = create_server(index, auth_token="tok")
    try:
        with NgramClient(f"127.0.0.1:{port}", token="tok") as c:
            assert c.count([116]) == index.count([116])
        with NgramClient(f"127.0.0.1:{port}") as c:
            with pytest.raises(NgramError) as info:
                c.count([116])
            assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        server.shutdown(0)


def test_limits_validate():
    with pytest.raises(ValueError):
        ServerLimits(max_batch_size=0)
    with pytest.raises(ValueError):
        ServerLimits(max_query_tokens=-1)
    assert ServerLimits(max_support=0).max_support == 0


def test_a_server_that_cannot_warm_up_does_not_linger(corpus):
    index, _ = corpus

    class Broken(Wrapped):
        def warmup(self):
            raise ShardUnavailableError("shard 'x' is down")

    port = _free_port()
    with pytest.raises(ShardUnavailableError):
        create_server(Broken(index), f"127.0.0.1:{port}")
    server, bound = create_server(index, f"127.0.0.1:{port}")  # the port is free again
    try:
        assert bound == port
    finally:
        server.shutdown(0)


# ------------------------------------------------------------------------------------------------
# Concurrency limit


def test_max_concurrent_rpcs_refuses_the_call_beyond(corpus):
    """--max-concurrent-rpcs: a call beyond the limit is refused (RESOURCE_EXHAUSTED), and the
    slots come back when the calls in flight finish."""
    index, _ = corpus
    gate = threading.Event()

    class Blocking(Wrapped):
        def count(self, query):
            gate.wait(10)
            return self._index.count(query)

    server, port = create_server(Blocking(index), warmup=False, max_concurrent_rpcs=2)
    try:
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            results = []
            threads = [threading.Thread(target=lambda: results.append(c.count([116], timeout=20))) for _ in range(2)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            with pytest.raises(LimitExceededError):
                c.count([116], timeout=5)
            gate.set()
            for t in threads:
                t.join(20)
            assert results == [index.count([116])] * 2
            assert c.count([116], timeout=5) == index.count([116])  # the slots came back
    finally:
        gate.set()
        server.shutdown(0)
