"""NgramClient: the NgramSource protocol, retries, typed errors, pickling, client-side validation."""

from __future__ import annotations

import pickle

import grpc
import numpy as np
import pytest

from engine import NgramIndex
from engine.serve.client import NgramClient, retry_service_config
from engine.errors import DeadlineExceededError, InvalidQueryError, RpcFailedError, ShardUnavailableError
from engine.serve.server import create_server
from tests.helpers.corpora import build_text_index, make_docs
from tests.helpers.serving import Wrapped, assert_same


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    docs = make_docs(30, 60)
    index = NgramIndex.open(build_text_index(tmp_path_factory.mktemp("client") / "idx", docs))
    # compile the single-query kernels here (fresh clone), not inside a call's deadline
    index.count([116]), index.find([116]), index.ntd([116]), index.infgram_ntd([116])
    return index


@pytest.fixture(scope="module")
def target(index):
    server, port = create_server(index, warmup=False)
    yield f"127.0.0.1:{port}"
    server.shutdown(0)


def test_client_satisfies_ngram_source(target, index):
    from lm_integration.source import NgramSource

    with NgramClient(target) as c:
        assert isinstance(c, NgramSource)
        assert isinstance(index, NgramSource)


def test_infgram_tracker_over_grpc_equals_in_process(target, index):
    infgram = pytest.importorskip("lm_integration.infgram")
    context = index.tokenize("the cat sat on the mat and the dog ran")
    with NgramClient(target) as c:
        remote, local = infgram.InfgramTracker(c), infgram.InfgramTracker(index)
        for i in range(1, len(context) + 1, 3):
            a, b = remote.sync(context[:i]), local.sync(context[:i])
            assert a.suffix_len == b.suffix_len
            assert np.array_equal(a.tokens, b.tokens) and np.allclose(a.probs, b.probs)


def test_pickle_and_context_manager(target, index):
    c = NgramClient(target, timeout=7.0)
    clone = pickle.loads(pickle.dumps(c))
    assert clone.target == target and clone.timeout == 7.0
    assert clone.count("the") == index.count("the")
    clone.close()
    with c:
        assert c.count([116]) == index.count([116])
    with pytest.raises(ValueError):  # the channel is closed
        c.count([116])


def test_client_side_validation_needs_no_server():
    with NgramClient("127.0.0.1:1", retry=False, timeout=1) as c:
        for bad in ([1.5, 2.0], [[1, 2]], b"bytes", 7, np.array([True])):
            with pytest.raises(InvalidQueryError):
                c.count(bad)
        with pytest.raises(InvalidQueryError):
            c.prob([1], 2.0)
        with pytest.raises(InvalidQueryError):
            c.ntd([1], max_support="3")
        with pytest.raises(InvalidQueryError):
            c.count_batch("not a list")


def test_unreachable_server_is_unavailable():
    with NgramClient("127.0.0.1:1", retry=False, timeout=5) as c:
        with pytest.raises(ShardUnavailableError) as info:
            c.count([1])
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(DeadlineExceededError):
            c.wait_until_serving(timeout=0.3)


def test_retries_unavailable_through_the_service_config(index):
    calls = []

    class Flaky(Wrapped):
        def count(self, query):
            calls.append(1)
            if len(calls) % 3 != 0:  # fail twice, then answer
                raise ShardUnavailableError("shard 'x' is restarting")
            return self._index.count(query)

    server, port = create_server(Flaky(index), warmup=False)
    try:
        with NgramClient(f"127.0.0.1:{port}") as c:
            assert c.count([116]) == index.count([116])
            assert len(calls) == 3
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            with pytest.raises(ShardUnavailableError, match="restarting"):
                c.count([116])
    finally:
        server.shutdown(0)
    assert '"UNAVAILABLE"' in retry_service_config()


def test_internal_errors_stay_generic_and_typed(index):
    class Broken(Wrapped):
        def count(self, query):
            raise RuntimeError("secret internal detail")

    server, port = create_server(Broken(index), warmup=False)
    try:
        with NgramClient(f"127.0.0.1:{port}") as c:
            with pytest.raises(RpcFailedError) as info:
                c.count([116])
            assert info.value.code == grpc.StatusCode.INTERNAL
            assert "secret" not in str(info.value)
            assert c.find([116]) == index.find([116])  # still serving
    finally:
        server.shutdown(0)


def test_remote_tokenizer(target, index):
    with NgramClient(target) as c:
        tok = c.tokenizer
        assert tok.vocab_size == index.vocab_size and tok.kind == "bytes"
        assert_same(tok.encode("hat"), index.tokenizer.encode("hat").astype(np.int64))
        assert tok.decode([104, 97, 116]) == "hat"
        assert tok.fingerprint() == index.tokenizer.fingerprint()
