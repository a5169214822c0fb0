"""Every query kernel against its brute-force twin in tests/helpers/oracle.py, with hypothesis.

Small alphabets make repeats common; tiny shard sizes spread a corpus over several shards;
each token width runs over ids whose byte order differs from numeric order.
"""

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.helpers import oracle
from tests.helpers.corpora import build_from_token_docs, draw_token_corpus

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def corpora(draw):
    width, alphabet, docs, shard_bytes = draw_token_corpus(draw, letters=5, doc_len=25, docs=12, shard_tokens=27, parts=3)
    queries = []
    for _ in range(draw(st.integers(3, 8))):
        if draw(st.booleans()) and any(docs):
            doc = draw(st.sampled_from([d for d in docs if d]))
            i = draw(st.integers(0, len(doc) - 1))
            j = draw(st.integers(i + 1, min(len(doc), i + 6)))
            queries.append(doc[i:j])  # present, possibly at a document edge
        else:
            queries.append(draw(st.lists(st.sampled_from(alphabet), min_size=1, max_size=5)))
    return width, alphabet, docs, shard_bytes, queries


def _index(case):
    width, _, docs, shard_bytes, _ = case
    directory = Path(tempfile.mkdtemp()) / "idx"
    return build_from_token_docs(directory, docs, width, shard_bytes)


def _as_counter(dist):
    result = Counter({int(t): int(c) for t, c in zip(dist.tokens, dist.counts)})
    if dist.end_count:
        result[oracle.END] = dist.end_count
    return result


@SETTINGS
@given(corpora())
def test_count_find_and_batch_match_brute_force(case):
    width, _, docs, _, queries = case
    index = _index(case)
    expected = [oracle.count(docs, q) for q in queries]
    assert [index.count(q) for q in queries] == expected
    assert [index.find(q).count for q in queries] == expected
    assert index.count_batch(queries).tolist() == expected
    assert index.count([]) == oracle.count(docs, [])


@SETTINGS
@given(corpora())
def test_prob_and_batch_match_brute_force(case):
    _, alphabet, docs, _, queries = case
    index = _index(case)
    conts = [alphabet[i % len(alphabet)] for i in range(len(queries))]
    batch = index.prob_batch(queries, conts)
    for i, (q, c) in enumerate(zip(queries, conts)):
        expected = oracle.prob(docs, q, c)
        got = index.prob(q, c)
        assert (got.prompt_count, got.cont_count, got.prob) == expected
        assert (batch.prompt_counts[i], batch.cont_counts[i], batch.probs[i]) == expected


@SETTINGS
@given(corpora())
def test_ntd_is_exact(case):
    _, _, docs, _, queries = case
    index = _index(case)
    for q in queries + [[]]:
        dist = index.ntd(q)
        expected = oracle.next_tokens(docs, q)
        assert _as_counter(dist) == +expected
        assert dist.prompt_count == oracle.count(docs, q)
        assert not dist.approx
        assert list(dist.tokens) == sorted(dist.tokens)


@SETTINGS
@given(corpora())
def test_infgram_matches_brute_force(case):
    _, alphabet, docs, _, queries = case
    index = _index(case)
    prompts = [q + [alphabet[0]] * (i % 3) for i, q in enumerate(queries)]
    conts = [alphabet[-1]] * len(prompts)
    batch = index.infgram_prob_batch(prompts, conts)
    for i, p in enumerate(prompts):
        expected = oracle.infgram_prob(docs, p, conts[i])
        got = index.infgram_prob(p, conts[i])
        assert (got.prompt_count, got.cont_count, got.prob, got.suffix_len) == expected
        assert (batch.prompt_counts[i], batch.cont_counts[i], batch.probs[i], batch.suffix_lens[i]) == expected
        dist = index.infgram_ntd(p)
        counter, k = oracle.infgram_next_tokens(docs, p)
        assert dist.suffix_len == k
        assert _as_counter(dist) == +counter


@SETTINGS
@given(corpora())
def test_documents_round_trip(case):
    width, _, docs, _, queries = case
    index = _index(case)
    assert index.num_docs == len(docs)
    for ix, doc in enumerate(docs):
        got = index.get_doc_by_ix(ix, max_disp_len=1000)
        assert got.token_ids.tolist() == doc and got.doc_len == len(doc)
    for q in queries:
        result = index.search_docs(q, max_docs=3, max_disp_len=50)
        assert result.count == oracle.count(docs, q)
        assert len(result.documents) == min(3, result.count)
        for d in result.documents:
            start = d.needle_offset
            assert d.token_ids[start : start + len(q)].tolist() == list(q)
            window, doc = d.token_ids.tolist(), docs[d.doc_ix]
            assert d.doc_len == len(doc) and d.disp_len == len(window) <= 50
            assert any(doc[o : o + len(window)] == window for o in range(len(doc) - len(window) + 1))


@SETTINGS
@given(corpora())
def test_suffix_tables_are_in_memcmp_order(case):
    index = _index(case)
    for shard in index.shards:
        data = bytes(shard.tokenized)
        ptrs = np.zeros(shard.num_positions, dtype=np.int64)
        from engine.kernels import suffix as kernels

        kernels.pointers_at(shard.table, shard.ptr_size, 0, shard.num_positions, ptrs)
        assert sorted(ptrs.tolist()) == list(range(0, len(data), shard.token_width))
        assert oracle.suffix_order_ok(data, ptrs.tolist())


@SETTINGS
@given(corpora(), st.integers(1, 4))
def test_capped_ntd_scales_a_sample(case, max_support):
    _, _, docs, _, queries = case
    index = _index(case)
    for q in queries:
        dist = index.ntd(q, max_support=max_support)
        exact = index.ntd(q)
        if exact.prompt_count <= max_support:
            assert not dist.approx
        if dist.approx:  # only when some shard's range exceeds the cap
            assert set(dist.tokens.tolist()) <= set(exact.tokens.tolist())
            assert abs(dist.prompt_count - exact.prompt_count) < len(index.shards) * exact.prompt_count
        else:
            assert dist == exact


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corpora(), st.integers(1, 8))
def test_every_pointer_width_gives_the_same_answers(case, ptr_size):
    """Re-encode the table with ``ptr_size``-byte pointers (as a huge shard would have) and query it."""
    from engine import NgramIndex
    from engine.kernels import suffix as kernels

    width, alphabet, docs, _, queries = case
    directory = Path(tempfile.mkdtemp()) / "idx"
    built = build_from_token_docs(directory, docs, width, None)
    shard = built.shards[0]
    ptrs = np.zeros(shard.num_positions, dtype=np.int64)
    kernels.pointers_at(shard.table, shard.ptr_size, 0, shard.num_positions, ptrs)
    if ptr_size < shard.ptr_size:
        return  # too narrow for this shard's offsets
    wide = ptrs.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :ptr_size]
    del built, shard
    (directory / "manifest.json").unlink()  # the manifest records the original pointer size
    (directory / "directory.0").unlink()  # and so does the search directory's file
    (directory / "table.0").write_bytes(wide.tobytes())
    index = NgramIndex.open(directory, token_width=width, vocab_size=max(alphabet) + 1)
    assert index.shards[0].ptr_size == ptr_size
    for q in queries:
        assert index.count(q) == oracle.count(docs, q)
        assert _as_counter(index.ntd(q)) == +oracle.next_tokens(docs, q)
        assert index.infgram_prob(q, alphabet[0]).suffix_len == oracle.longest_suffix_len(docs, q)
