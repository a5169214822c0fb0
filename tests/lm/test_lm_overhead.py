"""The per-step overhead work stays exact: the estimate cache, the drafter's lookahead chain and lazy
hybrid, and the prior's CPU and device paths give what the plain computations give."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.results import Document, SearchResult
from tests.helpers.lm_fakes import FakeSource, brute_longest_suffix
from lm_integration import HybridDrafter, InfgramCache, InfgramDrafter, InfgramTracker, PromptLookupDrafter
from lm_integration.infgram import estimate_from_ntd, sync_batch

docs_st = st.lists(st.lists(st.integers(0, 3), min_size=0, max_size=14), min_size=1, max_size=5)
seq_st = st.lists(st.integers(0, 4), min_size=1, max_size=25)


class DocSource(FakeSource):
    """FakeSource plus search_docs with the engine's window semantics (up to max_disp_len // 2
    tokens before the match and (max_disp_len + 1) // 2 from it on, clipped to the document)."""

    def search_docs(self, query, max_docs=10, max_disp_len=1000):
        self.calls["search_docs"] += 1
        q = self._q(query)
        n = len(q)
        hits = []
        for d in self.documents:
            for i in range(len(d) - n + 1):
                if d[i:i + n] == q:
                    hits.append((d, i))
        out = []
        for d, i in hits[:max_docs]:
            a = max(0, i - max_disp_len // 2)
            b = min(len(d), i + (max_disp_len + 1) // 2)
            out.append(Document(doc_ix=0, doc_len=len(d), disp_len=b - a, needle_offset=i - a,
                                token_ids=np.array(d[a:b], dtype=np.int64)))
        return SearchResult(count=len(hits), documents=out, approx=False)


def _est_equal(a, b):
    return (a.suffix_len == b.suffix_len and a.tokens.tolist() == b.tokens.tolist()
            and a.counts.tolist() == b.counts.tolist() and np.array_equal(a.probs, b.probs))


# ------------------------------------------------------------------------------------------ cache
def test_cache_lru_bounds_and_keys():
    c = InfgramCache(max_entries=2, max_items=5)
    src = FakeSource([[1, 2, 3, 1, 2, 4]], vocab_size=5)
    e1 = estimate_from_ntd(src.infgram_ntd([1]))
    e2 = estimate_from_ntd(src.infgram_ntd([2]))
    e3 = estimate_from_ntd(src.infgram_ntd([3]))
    c.put(c.key([1]), e1)
    c.put(c.key([2]), e2)
    assert c.get(c.key([1])) is e1  # 1 is now the most recent
    c.put(c.key([3]), e3)  # evicts 2
    assert c.get(c.key([2])) is None and c.get(c.key([3])) is e3 and len(c) == 2
    assert c.key([1, 2]) != c.key([1, 2], max_support=10) != c.key([1, 2], end_token_id=0)
    assert c.key(np.array([1, 2])) == c.key([1, 2])
    big = estimate_from_ntd(FakeSource([list(range(9))], vocab_size=9).ntd([]))
    c.put(c.key([]), big)  # more items than the cache holds: not kept
    assert c.get(c.key([])) is None and c.items <= 5
    off = InfgramCache(max_entries=0)
    off.put(off.key([1]), e1)
    assert len(off) == 0


@settings(max_examples=60, deadline=None)
@given(docs_st, st.lists(seq_st, min_size=1, max_size=3), st.integers(1, 3))
def test_cached_trackers_equal_uncached(docs, seqs, chunk):
    src = FakeSource(docs, vocab_size=5)
    cache = InfgramCache(max_entries=7)  # small: evictions happen
    for seq in seqs:
        a, b = InfgramTracker(src), InfgramTracker(src, cache=cache)
        for start in range(0, len(seq), chunk):
            new = seq[start:start + chunk]
            ea, eb = a.extend(new), b.extend(new)
            assert _est_equal(ea, eb)
            assert eb.suffix_len == brute_longest_suffix(docs, seq[:start + len(new)])
    # a repeated sequence is answered from the cache
    tr = InfgramTracker(src, cache=InfgramCache())
    tr.sync(seqs[0])
    before = tr.queries
    tr.sync(seqs[0] + [9])  # different context: restart, one query
    tr.sync(seqs[0])  # restart again: the cache has it
    assert tr.queries == before + 1


@settings(max_examples=40, deadline=None)
@given(docs_st, st.lists(seq_st, min_size=1, max_size=4))
def test_sync_batch_with_cache_equals_single(docs, seqs):
    src = FakeSource(docs, vocab_size=5)
    cache = InfgramCache()
    trs = [InfgramTracker(src, cache=cache) for _ in seqs]
    for t in range(1, max(len(s) for s in seqs) + 1):
        ctxs = [s[: min(t, len(s))] for s in seqs]
        for ctx, est in zip(ctxs, sync_batch(trs, ctxs)):
            assert _est_equal(est, InfgramTracker(src).sync(ctx))


@settings(max_examples=80, deadline=None)
@given(docs_st, seq_st, st.sampled_from([None, 0, 3]))
def test_tracker_ntd_shortcut_equals_infgram_ntd(docs, seq, end):
    # a token known to continue the match is asked with plain ntd: same estimate as infgram_ntd
    src = FakeSource(docs, vocab_size=5)
    tr = InfgramTracker(src, end_token_id=end)
    for t in range(len(seq)):
        est = tr.extend([seq[t]])
        assert _est_equal(est, estimate_from_ntd(src.infgram_ntd(seq[:t + 1]), end))


# ---------------------------------------------------------------------------------------- drafter
@settings(max_examples=120, deadline=None)
@given(docs_st, seq_st, st.integers(1, 8), st.sampled_from([0.0, 0.4, 0.6]), st.integers(1, 2),
       st.integers(1, 6))
def test_lookahead_chain_equals_query_chain(docs, seq, k, min_prob, min_count, lookahead):
    src = DocSource(docs, vocab_size=5)
    plain = InfgramDrafter(FakeSource(docs, vocab_size=5), min_prob=min_prob, min_count=min_count)
    fast = InfgramDrafter(src, min_prob=min_prob, min_count=min_count, lookahead=lookahead)
    assert fast.lookahead == lookahead and plain.lookahead == 0  # FakeSource has no search_docs
    assert fast.propose(seq, k) == plain.propose(seq, k)
    assert fast.propose_tree(seq, k, width=2) == plain.propose_tree(seq, k, width=2)
    longer = seq + [1, 2]
    assert fast.propose(longer, k) == plain.propose(longer, k)


def test_lookahead_is_used_and_saves_queries():
    docs = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 0, 0]]
    fast = InfgramDrafter(DocSource(docs, vocab_size=10), lookahead=4)
    plain = InfgramDrafter(DocSource(docs, vocab_size=10), lookahead=0)
    assert fast.propose([7, 8], 6) == plain.propose([7, 8], 6) == [9, 1, 2, 3, 4, 5]
    assert fast.lookups == 1 and fast.queries < plain.queries
    # max_support (sampled counts) or max_query_len (truncated queries) turn it off
    assert InfgramDrafter(DocSource(docs, vocab_size=10), max_support=5).lookahead == 0
    assert InfgramDrafter(DocSource(docs, vocab_size=10), max_query_len=5).lookahead == 0


def test_lookahead_on_engine_index(tmp_path):
    engine = pytest.importorskip("engine")
    rng = np.random.default_rng(3)
    base = rng.integers(2, 9, size=80).tolist()
    docs = [base[i:i + rng.integers(4, 30)] for i in range(0, 80, 5)] + [base[10:60], base[10:60], [4, 4, 4]]
    docs = [d for d in docs if d]
    path = tmp_path / "idx"
    engine.build_index(path, documents=[np.array(d, dtype=np.uint16) for d in docs], tokenizer=None,
                       vocab_size=16, workers=1, metadata=True)
    index = engine.NgramIndex.open(path)
    for _ in range(150):
        start = int(rng.integers(0, 70))
        ctx = base[start:start + int(rng.integers(1, 12))] + rng.integers(2, 9, size=int(rng.integers(0, 3))).tolist()
        if not ctx:
            continue
        k = int(rng.integers(1, 9))
        tr = InfgramTracker(index)
        for t in range(len(ctx)):
            assert _est_equal(tr.extend([ctx[t]]), estimate_from_ntd(index.infgram_ntd(ctx[:t + 1])))
        for mp in (0.0, 0.5):
            fast = InfgramDrafter(index, min_prob=mp, lookahead=16)
            plain = InfgramDrafter(index, min_prob=mp, lookahead=0)
            assert fast.propose(ctx, k) == plain.propose(ctx, k), (ctx, k, mp)


def _eager_hybrid(src, ctx, k, context_min=3, max_ngram=8):
    """HybridDrafter's rule computed the eager way: both drafts, then choose."""
    ctx_draft, ctx_len = PromptLookupDrafter(max_ngram=max_ngram).propose_with_len(ctx, k)
    inf_draft, inf_len = InfgramDrafter(src).propose_with_len(ctx, k)
    if ctx_draft and ctx_len >= min(inf_len, context_min):
        return ctx_draft
    return inf_draft


@settings(max_examples=60, deadline=None)
@given(docs_st, seq_st, st.integers(1, 6), st.integers(1, 4))
def test_lazy_hybrid_equals_eager(docs, seq, k, context_min):
    src = DocSource(docs, vocab_size=5)
    hy = HybridDrafter(src, context_min=context_min)
    for t in range(1, len(seq) + 1):  # one drafter along the sequence: its corpus state is lazy
        assert hy.propose(seq[:t], k) == _eager_hybrid(src, seq[:t], k, context_min)


# ------------------------------------------------------------------------------------------ prior
torch = pytest.importorskip("torch")

from lm_integration.prior import InfgramLogitsProcessor  # noqa: E402

V = 12
DOCS = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 5, 6], [2, 3, 4, 8], [9, 9, 10, 11, 1, 2, 3, 4]]


@pytest.mark.parametrize("small", [0, 32])  # CPU: numpy path for every support / Python floats for small ones
@pytest.mark.parametrize("mode", ["interpolate", "additive"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prior_cpu_and_device_paths_agree(mode, dtype, small, monkeypatch):
    import lm_integration.prior as prior_mod

    monkeypatch.setattr(prior_mod, "_SMALL", small)
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([[0, 1, 2, 3], [5, 2, 3, 4], [9, 9, 10, 11], [0, 0, 0, 0], [1, 2, 3, 4]])
    for trial in range(6):
        scores = (torch.randn(5, V + 2, generator=gen) * 3).to(dtype)
        if trial % 2:
            scores[0, 4] = -float("inf")  # part of [1,2,3]'s support masked
            scores[2, 1] = -float("inf")  # the whole sparse support of [9,9,10,11] masked
        for rows in ([0], [0, 1, 2, 3, 4], [2], [1, 4]):
            p = InfgramLogitsProcessor(FakeSource(DOCS, vocab_size=V), mode=mode, lambda_sparse=0.7,
                                       lambda_dense=0.3)
            ests = p.estimates(ids[rows])
            picked = [(b, e, 0.7 if e.sparse else 0.3) for b, e in enumerate(ests) if not e.empty]
            work = scores[rows].clone()
            a = p._mix_cpu(work, picked, V + 2)
            b = p._mix_device(work, picked, V + 2)
            assert torch.equal(work, scores[rows])  # inputs untouched
            if a is None or b is None:  # every used row's support was masked: scores stay as they are
                assert a is None and b is None
                continue
            assert torch.allclose(a, b, atol=1e-5, equal_nan=True), (trial, rows)
            assert torch.equal(torch.isinf(a), torch.isinf(b))


@pytest.mark.parametrize("small", [0, 32])  # one-row path: numpy for every support / Python floats for small ones
@pytest.mark.parametrize("mode", ["interpolate", "additive"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("lam", [0.7, 1.0])
def test_prior_one_row_path_agrees_with_cpu(mode, dtype, small, lam, monkeypatch):
    """_call_one (the one-row CUDA path, run here on CPU tensors) against the CPU path, along
    sequences as generate() calls it, with masked tokens and supports beyond the vocabulary."""
    import lm_integration.prior as prior_mod

    monkeypatch.setattr(prior_mod, "_SMALL", small)
    gen = torch.Generator().manual_seed(0)
    seqs = [[9, 9, 10, 11, 1, 2, 3, 4, 5, 6, 1, 2, 3, 7, 5, 6, 0, 2, 3, 4], [5, 2, 3, 4, 8, 2, 3, 7, 6, 6, 1, 2]]
    used = 0
    for seq in seqs:
        for Vs in (V + 2, 6):  # 6: part of some supports lies outside the model's vocabulary
            a = InfgramLogitsProcessor(FakeSource(DOCS, vocab_size=V), mode=mode, lambda_sparse=lam, lambda_dense=lam)
            b = InfgramLogitsProcessor(FakeSource(DOCS, vocab_size=V), mode=mode, lambda_sparse=lam, lambda_dense=lam)
            for t in range(1, len(seq) + 1):
                ids = torch.tensor([seq[:t]])
                scores = (torch.randn(1, Vs, generator=gen) * 3).to(dtype)
                if t % 3 == 1:
                    scores[0, 4 % Vs] = -float("inf")
                    scores[0, 1] = torch.finfo(dtype).min
                if t % 5 == 2:
                    scores[0, :] = -float("inf")
                    scores[0, 0] = 0.0
                x = a(ids, scores.clone())
                keep = scores.clone()
                y = b._call_one(ids, scores)
                assert torch.equal(scores, keep)  # input untouched
                assert y.dtype == dtype and y.shape == scores.shape
                if x is not scores:
                    used += y is not scores
                tol = 1e-5 if dtype != torch.bfloat16 else 2e-2
                assert torch.allclose(x.float(), y.float(), atol=tol, equal_nan=True), (seq[:t], Vs)
                assert torch.equal(torch.isinf(x), torch.isinf(y))
    assert used > 10


def test_prior_with_cache_equals_without():
    seq = [9, 9, 10, 11, 1, 2, 3, 4, 5, 6, 6, 1, 2, 3, 4, 5, 6]
    scores = torch.randn(1, V)
    shared = InfgramCache()
    a = InfgramLogitsProcessor(FakeSource(DOCS, vocab_size=V), lambda_sparse=0.6, lambda_dense=0.2, cache_size=0)
    b = InfgramLogitsProcessor(FakeSource(DOCS, vocab_size=V), lambda_sparse=0.6, lambda_dense=0.2, cache=shared)
    for t in range(1, len(seq) + 1):
        x = torch.tensor([seq[:t]])
        assert torch.equal(a(x, scores.clone()), b(x, scores.clone()))
    assert shared.hits > 0  # the repeated [1..6] stretch came from the cache
    assert b.cpu_seconds >= 0 and b.calls == len(seq)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["interpolate", "additive"])
def test_prior_on_cuda_matches_cpu(mode):
    gen = torch.Generator().manual_seed(1)
    seqs = [[9, 9, 10, 11, 1, 2, 3, 4, 5, 6, 1, 2, 3], [0, 1, 2, 3, 7, 5, 6, 0, 2, 3, 4]]
    a = InfgramLogitsProcessor(FakeSource(DOCS, vocab_size=V), mode=mode, lambda_sparse=0.6, lambda_dense=0.2)
    b = InfgramLogitsProcessor(FakeSource(DOCS, vocab_size=V), mode=mode, lambda_sparse=0.6, lambda_dense=0.2)
    for t in range(1, len(seqs[1]) + 1):
        ids = torch.tensor([s[:t] for s in seqs])
        scores = torch.randn(2, V + 4, generator=gen) * 3
        scores[0, 5] = -float("inf")
        x = a(ids, scores.clone())
        y = b(ids.cuda(), scores.cuda())
        assert y.device.type == "cuda"
        assert torch.allclose(x, y.cpu(), atol=1e-5, equal_nan=True)
        assert torch.equal(torch.isinf(x), torch.isinf(y.cpu()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["interpolate", "additive"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_prior_one_row_on_cuda_matches_cpu(mode, dtype):
    """The one-row CUDA path (pinned copies, packed upload) along a sequence, as generate() calls it."""
    gen = torch.Generator().manual_seed(2)
    seq = [9, 9, 10, 11, 1, 2, 3, 4, 5, 6, 1, 2, 3, 7, 5, 6, 0, 2, 3, 4]
    a = InfgramLogitsProcessor(FakeSource(DOCS, vocab_size=V), mode=mode, lambda_sparse=0.6, lambda_dense=0.2)
    b = InfgramLogitsProcessor(FakeSource(DOCS, vocab_size=V), mode=mode, lambda_sparse=0.6, lambda_dense=0.2)
    for t in range(1, len(seq) + 1):
        ids = torch.tensor([seq[:t]])
        scores = (torch.randn(1, V + 4, generator=gen) * 3).to(dtype)
        if t % 3 == 0:
            scores[0, 5] = -float("inf")
        if t % 7 == 0:
            scores[0, :] = -float("inf")
            scores[0, 1] = 0.0
        x = a(ids, scores.clone())
        y = b(ids.cuda(), scores.cuda())
        assert y.device.type == "cuda" and y.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        assert torch.allclose(x.float(), y.cpu().float(), atol=tol, equal_nan=True), t
        assert torch.equal(torch.isinf(x), torch.isinf(y.cpu()))
    assert b._bufs  # the one-row path ran
