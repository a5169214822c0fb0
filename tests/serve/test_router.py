"""The router over 3 shard servers answers exactly what one NgramIndex over all shards answers."""

from __future__ import annotations

import json
import time

import grpc
import numpy as np
import pytest

from engine import NgramIndex, build_index
from engine.serve.client import NgramClient
from engine.errors import IndexFormatError, InvalidQueryError, NgramError, ShardUnavailableError
from engine.results import PackedQueries
from engine.serve.router import NgramRouter
from engine.serve.shard_map import load_shard_map
from engine.serve.server import create_server
from engine.serve.servicer import ServerLimits
from engine.serve import servicer as service
from tests.helpers.corpora import UNIQUE, sample_queries
from tests.helpers.serving import LateNgrams, Wrapped, assert_same, router_over


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

    with router_over([Slow(NgramIndex.open(p)) for p in paths]) as port, \
            NgramClient(f"127.0.0.1:{port}", retry=False) as c:
        with pytest.raises(TimeoutError):
            c.count([116], timeout=0.2)
        time.sleep(0.5)
        assert seen and all(t is not None and t <= 0.25 for t in seen), seen  # jitter
        assert c.count([116], timeout=5) == full.count([116])


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


# ------------------------------------------------------------------------------------------------
# Frequent n-grams, longest matches, attribution and CNF search through the router

ATTRIBUTION_TEXTS = [UNIQUE[0] + " and " + UNIQUE[1], "the cat sat on the log and ran to the red hat",
                     UNIQUE[2] + " zebra the big cat", "qqq"]


@pytest.fixture(scope="module")
def warm_parts(parts):
    """Compile the frequent-n-gram, longest-match and CNF kernels for the shard servers' shard
    counts in this process (the servers run in it), so that no shard call waits for numba."""
    paths, full, _ = parts
    for index in [NgramIndex.open(p) for p in paths] + [full]:
        index.frequent_ngrams(1, 2, top_k=3)
        index.warmup_ngrams()
    return parts


def _spans(a):
    return [(s.start, s.end, s.count, s.token_ids.tolist(), s.documents) for s in a.spans]


@pytest.mark.parametrize("through", ["router", "grpc"])
def test_router_frequent_ngrams_exact(through, router, routed_client, warm_parts):
    _, full, _ = warm_parts
    r = router if through == "router" else routed_client
    cases = [(1, 3, {"top_k": 40}), (2, 4, {"min_count": 12}), (2, 5, {"top_k": 25, "min_count": 3}),
             (1, 1, {"top_k": 7}), (3, 3, {"min_count": 2}), (4, 6, {"top_k": 5000})]
    for n_min, n_max, kwargs in cases:
        want = full.frequent_ngrams(n_min, n_max, **kwargs)
        got = r.frequent_ngrams(n_min, n_max, **kwargs)
        assert got.to_list() == want.to_list(), (n_min, n_max, kwargs)
        assert len(got) > 0
        assert got.meta["threshold"] == want.meta["threshold"], (n_min, n_max, kwargs)
    with pytest.raises(InvalidQueryError):
        r.frequent_ngrams(3, 2, top_k=5)
    with pytest.raises(InvalidQueryError, match="min_count"):
        r.frequent_ngrams(1, 2)


def test_router_frequent_ngrams_needs_counts_from_every_shard(router, warm_parts):
    """An n-gram frequent in the union but below ceil(threshold / 3) on a shard is still counted
    there (step 3), so the totals are exact even when no shard lists it."""
    paths, full, _ = warm_parts
    part_indexes = [NgramIndex.open(p) for p in paths]
    want = full.frequent_ngrams(2, 3, top_k=60)
    got = router.frequent_ngrams(2, 3, top_k=60)
    assert got.to_list() == want.to_list()
    steps = [p["step"] for p in got.meta["passes"]]
    assert 3 in steps, got.meta["passes"]
    # some answer row occurs on a shard fewer times than that shard's own top-60 list reaches
    lists = [{g for g, _ in p.frequent_ngrams(2, 3, top_k=60)} for p in part_indexes]
    assert any(g not in lst for g, _ in want for lst in lists)


@pytest.mark.parametrize("through", ["router", "grpc"])
def test_router_longest_matches_and_attribution_exact(through, router, routed_client, warm_parts):
    _, full, docs = warm_parts
    r = router if through == "router" else routed_client
    texts = ATTRIBUTION_TEXTS + [docs[5]["text"] + " " + docs[70]["text"]]
    for text in texts:
        want = full.longest_matches(text, infgram=True)
        got = r.longest_matches(text, infgram=True)
        for name in ("tokens", "lengths", "counts"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), (text, name)
        for name in ("prompt_counts", "cont_counts", "probs", "suffix_lens"):
            assert np.array_equal(getattr(got.infgram, name), getattr(want.infgram, name)), (text, name)
        assert np.array_equal(r.infgram_probs(text, max_len=3).probs, full.infgram_probs(text, max_len=3).probs)
        for kwargs in ({"min_len": 4, "max_docs": 2, "max_disp_len": 30}, {"min_len": 2, "max_count": 3},
                       {"min_len": 3, "max_docs": 0, "creativity_n": 5}):
            a, b = r.attribute(text, **kwargs), full.attribute(text, **kwargs)
            assert (a.creativity, a.creativity_n, a.num_tokens) == (b.creativity, b.creativity_n, b.num_tokens)
            assert _spans(a) == _spans(b), (text, kwargs)
            assert np.array_equal(a.matches.lengths, b.matches.lengths)
    assert any(len(full.attribute(t, min_len=4).spans) for t in texts)
    if through == "router":
        assert r.creativity(texts[1], n=[2, 4]) == full.creativity(texts[1], n=[2, 4])
    with pytest.raises(InvalidQueryError):
        r.attribute("", min_len=2)
    with pytest.raises(InvalidQueryError):
        r.attribute("the cat", min_len=0)


def test_router_attribution_pages_past_the_shard_stream_limit(warm_parts):
    """Attribution looks at up to 8 * max_docs occurrences; with shard servers that send fewer
    documents per stream, the router fetches the rest by rank and still matches one index."""
    paths, full, _ = warm_parts
    servers = [create_server(NgramIndex.open(p), limits=ServerLimits(max_results_per_stream=2)) for p in paths]
    router = NgramRouter([f"127.0.0.1:{port}" for _, port in servers])
    try:
        for text in ("the cat sat on the mat", "and the dog ran to the big red hat"):
            for kwargs in ({"min_len": 2, "max_docs": 4}, {"min_len": 3, "max_docs": 1}):
                assert _spans(router.attribute(text, **kwargs)) == _spans(full.attribute(text, **kwargs))
    finally:
        router.close()
        for server, _ in servers:
            server.shutdown(0)


CNF_QUERIES = [[["cat", "dog"], ["sat"]], [["the"], ["red hat"]], "big", [["zebra"], ["cat"]], [["a"], ["t"]],
               [["cat"], ["dog"]], [["hat"], ["log"], ["ran"]], [[" red"], ["mat", "log"]]]


@pytest.mark.parametrize("through", ["router", "grpc"])
def test_router_cnf_exact_or_unimplemented(through, router, routed_client, warm_parts):
    paths, full, _ = warm_parts
    r = router if through == "router" else routed_client
    part_indexes = [NgramIndex.open(p) for p in paths]
    exact = unimplemented = rewindowed = 0
    for cnf in CNF_QUERIES:
        for cap in (5, 40, 1_000_000):
            want = full.count_cnf(cnf, max_clause_freq=cap)
            if want.approx:
                # one index samples the rarest clause: the router cannot reproduce that sample
                for call in (lambda: r.count_cnf(cnf, max_clause_freq=cap),
                             lambda: r.search_docs_cnf(cnf, max_docs=4, max_clause_freq=cap)):
                    with pytest.raises(NgramError, match="max_clause_freq >= ") as info:
                        call()
                    assert isinstance(info.value, NotImplementedError)
                    if through == "grpc":
                        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED
                unimplemented += 1
                continue
            got = r.count_cnf(cnf, max_clause_freq=cap)
            assert (got.count, got.approx, got.clause_counts, got.scanned_clauses) == \
                (want.count, want.approx, want.clause_counts, want.scanned_clauses), (cnf, cap)
            for max_docs, disp in ((4, 20), (50, 7), (0, 5)):
                want = full.search_docs_cnf(cnf, max_docs=max_docs, max_clause_freq=cap, max_disp_len=disp)
                got = r.search_docs_cnf(cnf, max_docs=max_docs, max_clause_freq=cap, max_disp_len=disp)
                assert (got.count, got.clause_counts, got.scanned_clauses) == \
                    (want.count, want.clause_counts, want.scanned_clauses), (cnf, cap)
                assert got.doc_ixs.tolist() == want.doc_ixs.tolist(), (cnf, cap)
                assert got.documents == want.documents, (cnf, cap, max_docs, disp)
            exact += 1
            # did a shard anchor its windows on another clause than one index would?
            counts = full.count_cnf(cnf, max_clause_freq=cap).clause_counts
            if min(counts) and len(counts) > 1:
                anchor = min((i for i, c in enumerate(counts) if c <= cap), key=lambda i: (counts[i], i))
                for p in part_indexes:
                    local = p.count_cnf(cnf, max_clause_freq=cap)
                    if local.count and min(local.clause_counts):
                        mine = min((i for i, c in enumerate(local.clause_counts) if c <= cap),
                                   key=lambda i: (local.clause_counts[i], i))
                        rewindowed += mine != anchor
    assert exact >= 10 and unimplemented >= 2 and rewindowed >= 1, (exact, unimplemented, rewindowed)


def test_route_cli_alias(shard_servers, tmp_path, warm_parts):
    """`ngram route SHARDMAP` is `ngram serve --shard-map SHARDMAP`."""
    import argparse
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from engine.cli.serve import add_parsers, main, run_serve

    parser = argparse.ArgumentParser(prog="ngram")
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["route", "map.json", "--port", "0", "--max-batch-size", "7"])
    assert args.func is run_serve and args.shard_map_file == "map.json" and args.max_batch_size == 7
    with pytest.raises(SystemExit) as info:
        main(["route", "--port", "0"])  # no shard map
    assert info.value.code == 2

    _, full, _ = warm_parts
    shard_map = tmp_path / "map.json"
    shard_map.write_text(json.dumps({"shards": [f"127.0.0.1:{port}" for _, port in shard_servers]}))
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "route", str(shard_map), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on "), (line, proc.stderr.read() if proc.poll() is not None else "")
        with NgramClient(line.split()[-1]) as c:
            assert c.count("the cat") == full.count("the cat")
            assert c.frequent_ngrams(1, 2, top_k=5).to_list() == full.frequent_ngrams(1, 2, top_k=5).to_list()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_router_forwards_text_without_a_tokenize_round_trip(shard_servers, parts):
    """Text goes to the shard servers as text: one round trip, no Tokenize call first."""
    _, full, _ = parts
    calls = []

    class Counting(NgramRouter):
        def _gather(self, calls_):
            calls.extend(method for _, method, _ in calls_)
            return super()._gather(calls_)

    r = Counting([f"127.0.0.1:{port}" for _, port in shard_servers])
    front, port = create_server(r)
    try:
        with NgramClient(f"127.0.0.1:{port}") as c:
            calls.clear()
            assert c.count("the cat") == full.count("the cat")
            assert c.count_batch(["the", "red hat", "zebra"]).tolist() == full.count_batch(
                [full.tokenize(t) for t in ("the", "red hat", "zebra")]).tolist()
            assert_same(c.infgram_ntd("the big"), full.infgram_ntd("the big"))
            assert "Tokenize" not in calls, calls
    finally:
        front.shutdown(0)
        r.close()


def test_router_frequent_ngrams_forwards_the_deadline(warm_parts):
    """The router passes its call's deadline to the shard servers, which stop FrequentNgrams mid-run."""
    paths, full, _ = warm_parts
    outcome = []
    with router_over([LateNgrams(NgramIndex.open(p), outcome) for p in paths]) as port, \
            NgramClient(f"127.0.0.1:{port}", retry=False) as c:
        with pytest.raises(TimeoutError):
            c.frequent_ngrams(1, 3, top_k=20, timeout=0.3)
        deadline = time.monotonic() + 30
        while len(outcome) < len(paths) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(outcome) == len(paths), outcome
        assert all(isinstance(o, Exception) and "stopped mid-run" in str(o) for o in outcome), outcome
        assert c.frequent_ngrams(1, 2, top_k=9, timeout=120).to_list() == full.frequent_ngrams(1, 2, top_k=9).to_list()
