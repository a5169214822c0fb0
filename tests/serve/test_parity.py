"""QueryBackend parity: NgramIndex, NgramClient and NgramRouter offer every method of the protocol
(engine/backend.py) with its parameters, the RPC table covers each of them, and on the same index
all four ways of asking (in process, over gRPC, through a router, through a router behind gRPC)
give equal answers."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from engine import NgramIndex
from engine.backend import QUERY_METHODS, QueryBackend
from engine.serve.client import NgramClient
from engine.serve.router import NgramRouter
from engine.serve.rpcs import BY_METHOD, QUERIES, SERVICE
from engine.serve.server import create_server
from tests.helpers.serving import assert_same

IMPLEMENTATIONS = [NgramIndex, NgramClient, NgramRouter]


def _params(fn) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("cls", IMPLEMENTATIONS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("method", QUERY_METHODS)
def test_same_signature(cls, method):
    """The protocol's parameters, in its order, kinds and defaults; an implementation may only add
    keyword-only parameters with defaults (a client's timeout, an index's check_alive)."""
    want = _params(getattr(QueryBackend, method))
    got = _params(getattr(cls, method))
    assert [(p.name, p.kind, p.default) for p in got[:len(want)]] == [(p.name, p.kind, p.default) for p in want]
    for extra in got[len(want):]:
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY and extra.default is not inspect.Parameter.empty, \
            f"{cls.__name__}.{method} adds {extra}"


def test_the_table_covers_the_protocol_and_the_proto():
    assert set(BY_METHOD) == set(QUERY_METHODS)
    assert len(BY_METHOD) == len(QUERIES)  # one entry per method
    assert {q.rpc for q in QUERIES} | {"GetIndexInfo"} == {m.name for m in SERVICE.methods}
    for q in QUERIES:  # the request builder takes exactly the method's parameters
        want = [(p.name, p.default) for p in _params(getattr(QueryBackend, q.method))]
        assert [(p.name, p.default) for p in _params(q.build)][:len(want)] == want, q.method


def _calls(full: NgramIndex) -> dict[str, tuple]:
    """One call per protocol method, on queries the router tests' corpus holds."""
    q = full.tokenize("the cat sat")
    prompts = [full.tokenize(t) for t in ("the cat", "red hat", "a dog ran", "zebra")]
    conts = np.array([32, 32, 32, 97], dtype=np.int64)
    text = "the red hat sat on the big log and the cat ran"
    return {
        "tokenize": ("the cat",), "detokenize": (q,),
        "count": (q,), "count_batch": (prompts,), "find": (q,),
        "prob": (q, 32), "prob_batch": (prompts, conts),
        "ntd": (q,), "ntd_batch": (prompts,),
        "infgram_prob": (full.tokenize("zebra the cat"), 32), "infgram_prob_batch": (prompts, conts),
        "infgram_ntd": (full.tokenize("zebra the cat"),), "infgram_ntd_batch": (prompts,),
        "search_docs": (q, 3, 12),
        "get_doc_by_ix": (5, 20), "get_doc_by_rank": (1, 3, 20), "get_doc_by_ptr": (2, 7, 20),
        "frequent_ngrams": (1, 3),
        "longest_matches": (text,), "infgram_probs": (text,),
        "attribute": (text, 4),
        "count_cnf": ([[full.tokenize("cat")], [full.tokenize("dog"), full.tokenize("hat")]],),
        "search_docs_cnf": ([[full.tokenize("cat")], [full.tokenize("dog")]], 4),
    }


KWARGS = {"frequent_ngrams": {"top_k": 12}}


def _comparable(method: str, result):
    if method == "frequent_ngrams":  # the table's rows and counts (its meta says how it was made)
        return [result.tokens.astype(np.int64), np.asarray(result.offsets, np.int64), np.asarray(result.counts)]
    if method == "count_cnf":  # only counts travel over gRPC (doc_ixs stays empty there)
        return (result.count, result.approx, result.clause_counts, result.scanned_clauses)
    return result


def test_equal_answers_four_ways(parts, router):
    _, full, _ = parts
    server, port = create_server(full)
    routed, routed_port = create_server(router)
    try:
        with NgramClient(f"127.0.0.1:{port}") as client, NgramClient(f"127.0.0.1:{routed_port}") as via_router:
            calls = _calls(full)
            assert set(calls) == set(QUERY_METHODS)
            for method, args in calls.items():
                kwargs = KWARGS.get(method, {})
                want = _comparable(method, getattr(full, method)(*args, **kwargs))
                for backend in (client, router, via_router):
                    got = _comparable(method, getattr(backend, method)(*args, **kwargs))
                    assert_same(got, want)
    finally:
        server.shutdown(0)
        routed.shutdown(0)


def test_the_readme_lists_the_table():
    """README's RPC table: one row per query method, naming its RPC, plus GetIndexInfo."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)`(?: \(stream\))? \| `(\w+)` \|", readme, flags=re.M)
    assert sorted(rows) == sorted((q.rpc, q.method) for q in QUERIES)
    assert "| `GetIndexInfo` |" in readme
    streams = set(re.findall(r"^\| `(\w+)` \(stream\) \|", readme, flags=re.M))
    assert streams == {m.name for m in SERVICE.methods if m.server_streaming}
