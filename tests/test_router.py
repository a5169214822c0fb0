"""The router over 3 shard servers answers exactly what one NgramIndex over all shards answers."""

from __future__ import annotations

import json
import time

import grpc
import numpy as np
import pytest

from engine import NgramIndex, build_index
from engine.client import NgramClient
from engine.errors import IndexFormatError, InvalidQueryError, NgramError, ShardUnavailableError
from engine.results import PackedQueries
from engine.router import NgramRouter, load_shard_map
from engine.server import create_server
from engine import service
from test_service import Wrapped, assert_same, build_text_index, make_docs, sample_queries

# Phrases that occur in one partition only, so the shards' own longest suffixes differ.
UNIQUE = ["the red hat sat on the big log", "a dog ran to the mat and sat", "big cat and red dog ran on"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    base = tmp_path_factory.mktemp("router")
    paths, all_docs = [], []
    for i in range(3):
        docs = make_docs(10 + i, 80) + [{"text": UNIQUE[i], "id": f"u{i}", "n": -1}]
        # the middle server holds two shards, so global shard numbers must be mapped
        paths.append(build_text_index(base / f"p{i}", docs, shard_bytes=1400 if i == 1 else None))
        all_docs += docs
    full = NgramIndex.open(paths)
    # 4 shards like test_service's corpus: numba compiles the batch kernels once per shard count
    assert [NgramIndex.open(p).num_shards for p in paths] == [1, 2, 1]
    return paths, full, all_docs


@pytest.fixture(scope="module")
def shard_servers(parts):
    paths, _, _ = parts
    servers = [create_server(NgramIndex.open(p)) for p in paths]
    yield servers
    for server, _ in servers:
        server.shutdown(0)


@pytest.fixture(scope="module")
def router(shard_servers):
    r = NgramRouter([f"127.0.0.1:{port}" for _, port in shard_servers], health_interval=0.2)
    r.warmup()
    yield r
    r.close()


@pytest.fixture(scope="module")
def routed_client(router):
    server, port = create_server(router)
    with NgramClient(f"127.0.0.1:{port}") as c:
        yield c
    server.shutdown(0)


def assert_same_estimate(got, want, exact):
    """Capped (max_support) distributions: exact ones must be equal; estimates must agree on
    everything but the per-token estimates, which still sum to the exact prompt count."""
    if not want.approx:
        assert_same(got, want)
        return
    assert got.approx and type(got) is type(want)
    assert got.prompt_count == want.prompt_count == exact.prompt_count
    assert getattr(got, "suffix_len", None) == getattr(want, "suffix_len", None)
    assert int(got.counts.sum()) + got.end_count == got.prompt_count
    assert set(got.tokens.tolist()) <= set(exact.tokens.tolist())


def _queries(full, docs):
    qs = sample_queries(full, docs, seed=21, n=60)
    for text in UNIQUE:
        ids = full.tokenize(text)
        qs += [ids, ids[-9:], np.concatenate([full.tokenize("zz "), ids])]
    # prompts whose longest suffix lives in one partition but whose shorter suffixes live in all
    qs += [full.tokenize(UNIQUE[0] + " and"), full.tokenize("on the big log"), full.tokenize("q")]
    return qs


@pytest.mark.parametrize("through", ["router", "grpc"])
def test_router_equals_one_index(through, router, routed_client, parts):
    _, full, docs = parts
    r = router if through == "router" else routed_client
    for name in ("vocab_size", "token_width", "num_tokens", "num_docs", "num_shards", "eos_token_id",
                 "tokenizer_fingerprint"):
        assert getattr(r, name) == getattr(full, name), name
    queries = _queries(full, docs)
    part_indexes = [NgramIndex.open(p) for p in parts[0]]
    disagree = 0
    for q in queries:
        assert_same(r.count(q), full.count(q))
        assert_same(r.find(q), full.find(q))
        assert_same(r.ntd(q), full.ntd(q))
        assert_same_estimate(r.ntd(q, max_support=2), full.ntd(q, max_support=2), full.ntd(q))
        want = full.infgram_ntd(q)
        assert_same(r.infgram_ntd(q), want)
        for cont in (32, 97, 116):
            assert_same(r.prob(q, cont), full.prob(q, cont))
            assert_same(r.infgram_prob(q, cont), full.infgram_prob(q, cont))
        if len(q):
            assert_same(r.search_docs(q, max_docs=5, max_disp_len=10), full.search_docs(q, max_docs=5, max_disp_len=10))
        # does this prompt exercise the union back-off (shards with different own suffix lengths)?
        own = {p.infgram_ntd(q).suffix_len for p in part_indexes}
        disagree += len(own) > 1
    assert disagree >= 3, "the corpus should make the shards' longest suffixes differ"

    packed = PackedQueries.from_list(queries)
    conts = np.random.default_rng(3).choice([32, 97, 116], size=len(queries))
    assert_same(r.count_batch(queries), full.count_batch(queries))
    assert_same(r.count_batch(packed), full.count_batch(packed))
    assert_same(r.prob_batch(queries, conts), full.prob_batch(queries, conts))
    assert_same(r.infgram_prob_batch(queries, conts), full.infgram_prob_batch(queries, conts))
    assert_same(r.ntd_batch(queries), full.ntd_batch(queries))
    assert_same(r.infgram_ntd_batch(packed), full.infgram_ntd_batch(packed))
    for g, w, e in zip(r.infgram_ntd_batch(packed, max_support=3), full.infgram_ntd_batch(packed, max_support=3),
                       full.infgram_ntd_batch(packed)):
        assert_same_estimate(g, w, e)

    for text in ("the cat", "red hat"):
        assert_same(r.tokenize(text), full.tokenize(text))
        assert_same(r.count(text), full.count(text))
        assert r.detokenize(full.tokenize(text)) == text

    for ix in range(0, full.num_docs, 17):
        assert_same(r.get_doc_by_ix(ix, max_disp_len=6), full.get_doc_by_ix(ix, max_disp_len=6))
    for shard in range(full.num_shards):
        assert_same(r.get_doc_by_rank(shard, 3), full.get_doc_by_rank(shard, 3))
        assert_same(r.get_doc_by_ptr(shard, 5), full.get_doc_by_ptr(shard, 5))


def test_router_bad_input(routed_client, parts):
    _, full, _ = parts
    c = routed_client
    cases = [
        (lambda: c.count([300]), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: c.count([255]), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: c.get_doc_by_ix(full.num_docs), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: c.get_doc_by_rank(full.num_shards, 0), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: c.search_docs([]), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: c.ntd([116], max_support=0), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for call, code in cases:
        with pytest.raises(NgramError) as info:
            call()
        assert info.value.code == code
    assert c.count([116]) == full.count([116])


def test_router_reports_a_down_shard_by_name(parts):
    paths, full, _ = parts
    servers = [create_server(NgramIndex.open(p)) for p in paths]
    shard_map = {"shards": [{"name": f"part-{i}", "target": f"127.0.0.1:{port}"} for i, (_, port) in enumerate(servers)]}
    router = NgramRouter(shard_map["shards"], health_interval=0.1, retry_attempts=2)
    router.warmup()
    front, port = create_server(router, health_interval=0.1)
    try:
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            assert c.count("the") == full.count("the")
            servers[1][0].shutdown(0)
            for call in (lambda: c.count("the"), lambda: c.count_batch(["the", "cat"]),
                         lambda: c.infgram_ntd("the cat"), lambda: c.search_docs("cat")):
                with pytest.raises(ShardUnavailableError) as info:
                    call()
                assert info.value.code == grpc.StatusCode.UNAVAILABLE
                assert "part-1" in str(info.value), str(info.value)
            # a document on a healthy shard server is still served
            assert_same(c.get_doc_by_ix(0), full.get_doc_by_ix(0))
            deadline = time.monotonic() + 10
            while c.health() != "NOT_SERVING" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c.health() == "NOT_SERVING"
            assert router.shard_status() == {"part-0": True, "part-1": False, "part-2": True}
    finally:
        front.shutdown(0)
        router.close()
        for server, _ in servers:
            server.shutdown(0)


def test_router_forwards_the_deadline(parts):
    paths, full, _ = parts
    seen = []

    class Slow(Wrapped):
        def count(self, query):
            seen.append(service.time_left())
            time.sleep(0.4)
            return self._index.count(query)

    servers = [create_server(Slow(NgramIndex.open(p))) for p in paths]
    router = NgramRouter([f"127.0.0.1:{port}" for _, port in servers])
    front, port = create_server(router)
    try:
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            with pytest.raises(TimeoutError):
                c.count([116], timeout=0.2)
            time.sleep(0.5)
            assert seen and all(t is not None and t <= 0.25 for t in seen), seen  # jitter
            assert c.count([116], timeout=5) == full.count([116])
    finally:
        front.shutdown(0)
        router.close()
        for server, _ in servers:
            server.shutdown(0)


def test_router_refuses_shards_that_disagree(parts, tmp_path):
    paths, _, _ = parts
    other = build_index(tmp_path / "u16", documents=[np.arange(5), np.arange(3)], tokenizer=None,
                        vocab_size=1000, workers=1)
    servers = [create_server(NgramIndex.open(paths[0])), create_server(NgramIndex.open(other), warmup=False)]
    router = NgramRouter([f"127.0.0.1:{port}" for _, port in servers])
    try:
        with pytest.raises(NgramError, match="vocab_size|tokenizer"):
            router.warmup()
    finally:
        router.close()
        for server, _ in servers:
            server.shutdown(0)


def test_router_unreachable_at_start_names_the_shard():
    router = NgramRouter([{"name": "nowhere", "target": "127.0.0.1:1"}], connect_timeout=0.5)
    with pytest.raises(ShardUnavailableError, match="nowhere"):
        router.warmup()
    router.close()


def test_shard_map_file(tmp_path):
    (tmp_path / "ca.pem").write_text("x")
    path = tmp_path / "map.json"
    path.write_text(json.dumps({
        "shards": [{"name": "a", "target": "h1:1"}, {"target": "h2:2", "root_cert": "/abs/ca.pem"}, "h3:3"],
        "root_cert": "ca.pem",
        "timeout": 5,
    }))
    shards, options = load_shard_map(path)
    assert [s.name for s in shards] == ["a", "shard-1", "shard-2"]
    assert [s.target for s in shards] == ["h1:1", "h2:2", "h3:3"]
    assert shards[0].root_cert == str(tmp_path / "ca.pem") and shards[1].root_cert == "/abs/ca.pem"
    assert options == {"timeout": 5}
    for bad in ("not json", "{}", '{"shards": []}', '{"shards": [{"name": "x"}]}',
                '{"shards": [{"name": "x", "target": "a:1"}, {"name": "x", "target": "b:1"}]}'):
        path.write_text(bad)
        with pytest.raises(IndexFormatError):
            load_shard_map(path)
    with pytest.raises(IndexFormatError):
        load_shard_map(tmp_path / "missing.json")


def test_router_text_and_id_validation_without_rpcs(router):
    with pytest.raises(InvalidQueryError):
        router.count([[1, 2]])
    with pytest.raises(InvalidQueryError):
        router.get_doc_by_ix(-1)
    with pytest.raises(InvalidQueryError):
        router.get_doc_by_rank(-1, 0)
