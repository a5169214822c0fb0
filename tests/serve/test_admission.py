"""Admission control (issue 15): exact distributions by default over gRPC, answers too large refused
before the work, long work stopped at its deadline / when its client leaves / at shutdown, the
expensive pool that keeps cheap calls flowing, the memory budget, and SIGTERM with work running.

Real servers on loopback over real indexes (byte tokenizer); the SIGTERM test runs `ngram serve`
in a subprocess. Time bounds are generous: they tell a call refused or stopped up front from one
that did the work (seconds to minutes here), not fine figures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from engine import NgramIndex
from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine._proto.ngram.v1 import ngram_pb2_grpc as pb_grpc
from engine.serve.admission import Admission, private_memory
from engine.units import parse_size
from engine.serve.client import NgramClient
from engine.errors import LimitExceededError
from engine.serve.server import create_server
from engine.serve.servicer import ServerLimits
from tests.helpers.corpora import build_text_index, make_docs
from tests.helpers.serving import assert_same

ROOT = Path(__file__).resolve().parents[2]

# Generous per-call limits, so that the long calls below are admitted and take long.
BIG = ServerLimits(max_message_bytes=1 << 30, max_query_tokens=8192, max_text_bytes=1 << 20,
                   max_support=100, max_results_per_stream=1000)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    docs = make_docs(7, 3000)
    path = build_text_index(tmp_path_factory.mktemp("adm") / "idx", docs, shard_bytes=1 << 16)
    index = NgramIndex.open(path)
    index.warmup()
    index.warmup_ngrams()
    return index, path


def _stub(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 1 << 30)])
    return channel, pb_grpc.NgramServiceStub(channel)


def _spread_text(index, n: int = 4000) -> list[int]:
    """n ids alternating letters of the corpus with a byte that never occurs ('#'): every letter is
    a maximal span of one token found in most documents, so attribution with min_len=1 fetches up
    to max_docs documents per letter: minutes of work."""
    letters = index.tokenize("the cat sat on a mat and ran")
    hash_id = int(index.tokenize("#")[0])
    assert index.count([hash_id]) == 0
    rng = np.random.default_rng(0)
    out = []
    for t in rng.choice(letters, size=n // 2):
        out += [int(t), hash_id]
    return out


def _attribute_request(ids, max_docs=1000, disp=1) -> pb.AttributeRequest:
    return pb.AttributeRequest(text=pb.Query(token_ids=pb.TokenIds(ids=ids)), min_len=1, max_docs=max_docs,
                               max_disp_len=disp)


def _spans(a) -> list:
    return [(sp.start, sp.end, sp.count, [(d.doc_ix, d.token_ids.tolist()) for d in sp.documents]) for sp in a.spans]


def _wait_until(cond, timeout: float) -> float | None:
    """Seconds until cond() held, or None after timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.005)
    return None


# ------------------------------------------------------------------------------------------------
# Exact by default


def test_default_distributions_over_grpc_are_exact(corpus):
    """Without max_support the server answers the exact distribution, even for a prompt occurring far
    more often than its max_support limit (100 here), exactly as NgramIndex does in process."""
    index, _ = corpus
    server, port = create_server(index, limits=BIG)
    try:
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            prompts = [index.tokenize(s) for s in ("a", "t", " ", "the", "zz")] + [[]]
            assert index.count(prompts[0]) > 100 * BIG.max_support
            for q in prompts:
                got, want = c.ntd(q), index.ntd(q)
                assert not got.approx
                assert_same(got, want)
                assert_same(c.infgram_ntd(q), index.infgram_ntd(q))
            assert_same(c.ntd_batch(prompts), index.ntd_batch(prompts))
            assert_same(c.infgram_ntd_batch(prompts), index.infgram_ntd_batch(prompts))
            # asking for a sample still samples, as infini-gram does
            sampled = c.ntd(prompts[0], max_support=10)
            assert sampled.approx and sampled == index.ntd(prompts[0], max_support=10)
    finally:
        server.shutdown(0)


def test_oversized_batch_is_refused_up_front(corpus):
    """A batch whose exact answer could exceed max_distinct_tokens is RESOURCE_EXHAUSTED before any
    distribution is computed: at once, naming the limit and how to ask (max_support)."""
    index, _ = corpus
    limits = ServerLimits(max_distinct_tokens=5000, max_batch_size=100_000)
    server, port = create_server(index, limits=limits)
    channel, stub = _stub(port)
    try:
        frequent = index.tokenize("a")
        n = 100_000
        packed = pb.PackedTokenIds(token_ids=np.tile(np.asarray(frequent, dtype="<i8"), n).tobytes(),
                                   offsets=(np.arange(n + 1, dtype="<i8") * len(frequent)).tobytes())
        req = pb.NextTokenDistributionBatchRequest(prompts=pb.QueryBatch(packed=packed))
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            stub.NextTokenDistributionBatch(req, timeout=60)
        took = time.perf_counter() - t0
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        msg = info.value.details()
        assert "max_distinct_tokens=5000" in msg and "max_support" in msg, msg
        assert took < 5, f"refusing took {took:.1f}s: the work was done first"
        assert server.servicer.admission.admitted == 0  # no slot was ever taken: nothing ran
        # the same through the client: a typed error
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            with pytest.raises(LimitExceededError, match="max_distinct_tokens"):
                c.ntd_batch([frequent] * 2000)
            # asking for a small sample fits, and a small exact batch is answered exactly
            assert all(d.approx for d in c.ntd_batch([frequent] * 10, max_support=10))
            assert_same(c.ntd_batch([frequent] * 3), index.ntd_batch([frequent] * 3))
        # the response size is bounded the same way (max_message_bytes)
        small = ServerLimits(max_message_bytes=64 * 1024, max_batch_size=100_000)
        server2, port2 = create_server(index, limits=small)
        try:
            with NgramClient(f"127.0.0.1:{port2}", retry=False) as c:
                with pytest.raises(LimitExceededError, match="max_message_bytes"):
                    c.infgram_ntd_batch([frequent] * 500)
        finally:
            server2.shutdown(0)
    finally:
        channel.close()
        server.shutdown(0)


# ------------------------------------------------------------------------------------------------
# Stopping long work


def test_deadline_stops_attribution_on_the_server(corpus):
    """Attribute of 4,000 ids, min_len=1, max_docs=1000 (minutes of document fetching) with a 0.5 s
    deadline: the client gets DEADLINE_EXCEEDED and the server's work ends soon after the deadline
    (the expensive pool's slot is free again), instead of running on."""
    index, _ = corpus
    server, port = create_server(index, limits=BIG, heavy_workers=1)
    adm = server.servicer.admission
    channel, stub = _stub(port)
    try:
        req = _attribute_request(_spread_text(index))
        deadline = time.monotonic() + 0.5
        with pytest.raises(grpc.RpcError) as info:
            stub.Attribute(req, timeout=0.5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert _wait_until(lambda: adm.running == 0 and adm.finished >= 1, 10) is not None, "the work went on"
        late = adm.last_finished_at - deadline
        assert late < 1.0, f"the server stopped {late:.2f}s after the deadline"

        # The client going away stops it the same way.
        future = stub.Attribute.future(req, timeout=60)
        assert _wait_until(lambda: adm.running == 1, 10) is not None
        time.sleep(0.2)
        cancelled = time.monotonic()
        future.cancel()
        assert _wait_until(lambda: adm.running == 0 and adm.finished >= 2, 10) is not None
        assert adm.last_finished_at - cancelled < 1.0
    finally:
        channel.close()
        server.shutdown(0)


def test_frequent_ngrams_and_cnf_take_the_stop_check(corpus, monkeypatch):
    """The engine's long operations take the check as an argument and stop when it raises."""
    index, _ = corpus

    class Stop(Exception):
        pass

    def after(n):
        calls = []

        def check():
            calls.append(1)
            if len(calls) > n:
                raise Stop

        return check, calls

    check, calls = after(2)
    with pytest.raises(Stop):
        index.frequent_ngrams(1, 6, min_count=1, chunk_rows=64, check_alive=check)
    assert len(calls) == 3
    check, calls = after(0)
    with pytest.raises(Stop):
        index.count_cnf([["a"], ["t"]], max_clause_freq=10**9, check_alive=check)
    seen = []
    cnf = [["a"], ["t"]]
    r = index.count_cnf(cnf, max_clause_freq=10**9, admit=lambda occurrences: seen.append(occurrences))
    assert seen == [index.count("a") + index.count("t")]
    # The work in pieces (tiny pieces here) gives the same answer, enumerated or scanned.
    import engine.cnf

    want = (r.count, r.clause_counts, r.doc_ixs.tolist())
    for occurrences, tokens in ((7, 5), (1000, 300)):
        monkeypatch.setattr(engine.cnf, "_CHECK_OCCURRENCES", occurrences)
        monkeypatch.setattr(engine.cnf, "_CHECK_SCAN_TOKENS", tokens)
        for cap in (10**9, 9500):  # 9500: clause "a" is scanned in the candidate documents
            got = index.count_cnf(cnf, max_clause_freq=cap, check_alive=lambda: None)
            assert (got.count, got.clause_counts, got.doc_ixs.tolist()) == want, (occurrences, tokens, cap)
            assert got.scanned_clauses == ((0,) if cap == 9500 else ())
    # attribute's admit gets upper bounds of what it returns
    bounds = []
    ids = _spread_text(index, 200)
    a = index.attribute(ids, min_len=1, max_docs=5, max_disp_len=3,
                        admit=lambda documents, tokens: bounds.append((documents, tokens)))
    docs = sum(len(s.documents) for s in a.spans)
    toks = sum(len(d.token_ids) for s in a.spans for d in s.documents)
    assert bounds and docs <= bounds[0][0] and toks <= bounds[0][1]
    check, calls = after(3)
    with pytest.raises(Stop):
        index.attribute(ids, min_len=1, max_docs=5, check_alive=check)


# ------------------------------------------------------------------------------------------------
# The expensive pool, the memory budget


def test_cheap_calls_flow_while_the_pool_is_full(corpus):
    """With one slot running attribution and the waiting room full, a further expensive call is
    refused at once (RESOURCE_EXHAUSTED naming --heavy-workers) and Counts still answer, exactly."""
    index, _ = corpus
    server, port = create_server(index, limits=BIG, heavy_workers=1, max_workers=4)  # 1 runs, 1 waits
    adm = server.servicer.admission
    channel, stub = _stub(port)
    futures = []
    try:
        req = _attribute_request(_spread_text(index))
        futures = [stub.Attribute.future(req, timeout=30) for _ in range(2)]
        assert _wait_until(lambda: adm.running == 1 and adm.waiting == 1, 10) is not None
        t0 = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            stub.Attribute(req, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--heavy-workers" in info.value.details()
        assert time.perf_counter() - t0 < 5
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            worst = 0.0
            for q in ("the", "cat sat", "a", "zebra", "on the mat"):
                t0 = time.perf_counter()
                assert c.count(q, timeout=10) == index.count(q)
                worst = max(worst, time.perf_counter() - t0)
            assert worst < 2.0, f"a Count took {worst:.2f}s behind the expensive calls"
    finally:
        for f in futures:
            f.cancel()
        channel.close()
        server.shutdown(0)


def test_memory_budget(corpus):
    """--max-memory: a call whose estimate exceeds what the budget leaves is refused naming it;
    calls under it are answered."""
    index, _ = corpus
    rest = private_memory()
    if rest is None:
        pytest.skip("no /proc/self/statm here")
    budget = rest + (64 << 20)
    server, port = create_server(index, limits=BIG, max_memory=budget)
    channel, stub = _stub(port)
    try:
        big = _attribute_request(_spread_text(index), max_docs=1000, disp=50)
        with pytest.raises(grpc.RpcError) as info:
            stub.Attribute(big, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-memory" in info.value.details(), info.value.details()
        with NgramClient(f"127.0.0.1:{port}", retry=False) as c:
            ids = _spread_text(index, 40)
            got = c.attribute(ids, min_len=1, max_docs=2, max_disp_len=4)
            want = index.attribute(ids, min_len=1, max_docs=2, max_disp_len=4)
            assert _spans(got) == _spans(want) and got.creativity == want.creativity
            assert c.count("the") == index.count("the")
        assert server.servicer.admission.reserved == 0
    finally:
        channel.close()
        server.shutdown(0)
    # A budget below what the server needs at rest does not start.
    with pytest.raises(OSError, match="max-memory"):
        create_server(index, max_memory=1 << 20)


def test_admission_units():
    assert parse_size("2G") == 2 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("1000") == 1000
    assert parse_size("1.5GiB") == 3 << 29 and parse_size(" 8 kb ") == 8 << 10
    for bad in ("lots", "-1G", "2X", ""):
        with pytest.raises(ValueError):
            parse_size(bad)
    adm = Admission(max_memory=1 << 40, heavy_slots=1, max_waiting=0)
    adm.set_baseline()
    with adm.call("A", lambda: None, heavy=True):
        with pytest.raises(LimitExceededError, match="heavy-workers"):
            with adm.call("B", lambda: None, heavy=True):
                pass
    assert adm.running == 0


# ------------------------------------------------------------------------------------------------
# SIGTERM with work running


def test_sigterm_with_long_work_running_exits_within_grace_plus_one(corpus):
    """`ngram serve --grace 1` while expensive calls with no deadline are running and waiting: the
    process exits 0 within grace + 1 s of SIGTERM, the work stopped by its checks (not by the
    backstop that ends a stuck process)."""
    index, path = corpus
    grace = 1.0
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli.serve", str(path), "--port", "0", "--grace", str(grace),
         "--max-message-bytes", str(1 << 30), "--max-query-tokens", "8192", "--heavy-workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    channel = None
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on "), (line, proc.stderr.read() if proc.poll() is not None else "")
        target = line.split()[-1]
        channel = grpc.insecure_channel(target)
        stub = pb_grpc.NgramServiceStub(channel)
        req = _attribute_request(_spread_text(index))
        futures = [stub.Attribute.future(req) for _ in range(3)]  # one runs, two wait; no deadline
        time.sleep(1.0)
        assert not any(f.done() for f in futures), [f.exception() for f in futures if f.done()]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        took = time.monotonic() - t0
        err = proc.stderr.read()
        assert rc == 0, err[-2000:]
        assert took <= grace + 1.0, f"exit took {took:.2f}s after SIGTERM (grace {grace}s)"
        assert "SIGTERM received" in err and "still running" not in err, err[-2000:]
        for f in futures:
            assert f.exception() is not None  # cancelled, not answered
    finally:
        if channel is not None:
            channel.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
