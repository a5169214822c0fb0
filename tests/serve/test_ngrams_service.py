"""FrequentNgrams, LongestMatches, Attribute, CountCnf and SearchDocumentsCnf over gRPC: the
client answers exactly what the in-process NgramIndex answers; limits and bad input get their
status codes."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from engine import NgramIndex
from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine._proto.ngram.v1 import ngram_pb2_grpc as pb_grpc
from engine.serve.client import NgramClient
from engine.errors import InvalidQueryError, LimitExceededError
from engine.serve.server import create_server
from engine.serve.servicer import ServerLimits
from tests.helpers.corpora import build_text_index, make_docs
from tests.helpers.serving import rpc_code

LIMITS = ServerLimits(max_message_bytes=1 << 20, max_query_tokens=256, max_text_bytes=4096, max_batch_size=3000,
                      max_results_per_stream=50, max_support=100_000, max_disp_len=1000, max_ngram_rows=500,
                      max_clause_freq=400)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs = make_docs(7, 240)
    index = NgramIndex.open(build_text_index(tmp_path_factory.mktemp("ng") / "idx", docs, shard_bytes=2048))
    assert index.num_shards == 4
    return index, docs


@pytest.fixture(scope="module")
def served(corpus):
    index, _ = corpus
    server, port = create_server(index, limits=LIMITS)
    yield port
    server.shutdown(grace=0)


@pytest.fixture(scope="module")
def client(served):
    with NgramClient(f"127.0.0.1:{served}") as c:
        yield c


@pytest.fixture(scope="module")
def stub(served):
    channel = grpc.insecure_channel(f"127.0.0.1:{served}")
    yield pb_grpc.NgramServiceStub(channel)
    channel.close()


def test_frequent_ngrams_match(client, corpus):
    index, _ = corpus
    for kwargs in ({"top_k": 50}, {"min_count": 40}, {"top_k": 30, "min_count": 2}):
        want = index.frequent_ngrams(2, 4, **kwargs)
        got = client.frequent_ngrams(2, 4, chunk_rows=7, **kwargs)
        assert got.to_list() == want.to_list() and len(got) > 0
        assert got.meta["threshold"] == want.meta["threshold"]
    with pytest.raises(LimitExceededError, match="max_ngram_rows"):
        client.frequent_ngrams(1, 3, top_k=501)
    with pytest.raises(LimitExceededError, match="max_ngram_rows"):
        client.frequent_ngrams(1, 5, min_count=1)  # thousands of n-grams occur at least once
    with pytest.raises(InvalidQueryError):
        client.frequent_ngrams(3, 2, top_k=5)
    with pytest.raises(InvalidQueryError, match="min_count"):
        client.frequent_ngrams(1, 2)


def test_longest_matches_attribute_match(client, corpus):
    index, docs = corpus
    texts = [docs[3]["text"] + " zebra " + docs[9]["text"], "the cat sat on the log and ran", "qqq"]
    for text in texts:
        want = index.longest_matches(text, infgram=True)
        got = client.longest_matches(text, infgram=True)
        for name in ("tokens", "lengths", "counts"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), name
        for name in ("prompt_counts", "cont_counts", "probs", "suffix_lens"):
            assert np.array_equal(getattr(got.infgram, name), getattr(want.infgram, name)), name
        assert np.array_equal(client.infgram_probs(text, max_len=3).probs, index.infgram_probs(text, max_len=3).probs)
        a, b = client.attribute(text, min_len=4, max_docs=2, max_disp_len=30), \
            index.attribute(text, min_len=4, max_docs=2, max_disp_len=30)
        assert a.creativity == b.creativity and a.creativity_n == b.creativity_n
        assert [(s.start, s.end, s.count, s.token_ids.tolist(), s.documents) for s in a.spans] == \
            [(s.start, s.end, s.count, s.token_ids.tolist(), s.documents) for s in b.spans]
    with pytest.raises(LimitExceededError, match="max_query_tokens"):
        client.longest_matches("x" * 300)
    with pytest.raises(LimitExceededError, match="max_results_per_stream"):
        client.attribute("the cat", max_docs=51)


def test_cnf_match(client, corpus):
    index, _ = corpus
    queries = [[["cat", "dog"], ["sat"]], [["the"], ["red hat"]], "big", [["zebra"], ["cat"]], [["a"], ["t"]]]
    for cnf in queries:
        for cap in (None, 5, 400):
            kwargs = {} if cap is None else {"max_clause_freq": cap}
            want = index.count_cnf(cnf, max_clause_freq=cap or LIMITS.max_clause_freq)
            got = client.count_cnf(cnf, **kwargs)
            assert (got.count, got.approx, got.clause_counts, got.scanned_clauses) == \
                (want.count, want.approx, want.clause_counts, want.scanned_clauses)
            want = index.search_docs_cnf(cnf, max_docs=4, max_clause_freq=cap or LIMITS.max_clause_freq,
                                         max_disp_len=20)
            got = client.search_docs_cnf(cnf, max_docs=4, max_disp_len=20, **kwargs)
            assert got.count == want.count and got.documents == want.documents
            assert got.doc_ixs.tolist() == want.doc_ixs.tolist()
    with pytest.raises(LimitExceededError, match="max_clause_freq"):
        client.count_cnf("cat", max_clause_freq=401)
    with pytest.raises(InvalidQueryError):
        client.count_cnf([[1, 2]])


def test_bad_requests_get_status_codes(stub):
    assert rpc_code(lambda: stub.CountCnf(pb.CountCnfRequest(), timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    empty_term = pb.CountCnfRequest(clauses=[pb.CnfClause(terms=[pb.Query()])])
    assert rpc_code(lambda: stub.CountCnf(empty_term, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_code(lambda: stub.LongestMatches(pb.LongestMatchesRequest(), timeout=10)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    bad = pb.FrequentNgramsRequest(n_min=0, n_max=2, top_k=3)
    assert rpc_code(lambda: stub.FrequentNgrams(bad, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
    sep = pb.LongestMatchesRequest(text=pb.Query(token_ids=pb.TokenIds(ids=[1, 255])))
    assert rpc_code(lambda: stub.LongestMatches(sep, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT


def test_frequent_ngrams_stops_at_its_deadline(corpus):
    """The deadline stops FrequentNgrams inside the engine's run (between chunks of rows), not
    after it: the client gets DEADLINE_EXCEEDED and the server's computation raises."""
    import time

    from engine.errors import DeadlineExceededError
    from tests.helpers.serving import LateNgrams

    index, _ = corpus
    index.frequent_ngrams(1, 2, top_k=3)  # compiled: the run below is the engine's, not numba's
    outcome = []
    # the deadline passes before the engine's first chunk of rows
    server, port = create_server(LateNgrams(index, outcome), warmup=False)
    try:
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            with pytest.raises(DeadlineExceededError):
                c.frequent_ngrams(1, 3, top_k=50, timeout=0.2)
            deadline = time.monotonic() + 30
            while not outcome and time.monotonic() < deadline:
                time.sleep(0.05)
            assert outcome and isinstance(outcome[0], Exception), outcome
            assert "stopped mid-run" in str(outcome[0])
            # the server still serves, and a call with time to spare completes
            want = index.frequent_ngrams(1, 2, top_k=5).to_list()
            assert c.frequent_ngrams(1, 2, top_k=5, timeout=120).to_list() == want
    finally:
        server.shutdown(0)
