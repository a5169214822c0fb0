"""Longest matches, ∞-gram probabilities of every position and attribution, against brute force."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.errors import InvalidQueryError
from engine.match import _check_max_len, _pass, attribute, creativity, infgram_probs, longest_matches, maximal_spans
from tests.helpers import oracle_ngrams as oracle
from tests.helpers.corpora import build_from_token_docs, draw_token_corpus

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw):
    width, alphabet, docs, shard_bytes = draw_token_corpus(draw, letters=4, doc_len=20, docs=8, shard_tokens=22, parts=3)
    # A text partly copied from a document (long matches) and partly random (short ones); the
    # last alphabet letter never occurs in the corpus unless drawn, so empty matches happen too.
    text = draw(st.lists(st.sampled_from(alphabet), max_size=12))
    if any(docs) and draw(st.booleans()):
        doc = draw(st.sampled_from([d for d in docs if d]))
        i = draw(st.integers(0, len(doc) - 1))
        text = text[: len(text) // 2] + doc[i:] + text[len(text) // 2:]
    return width, alphabet, docs, shard_bytes, text


def _index(case):
    width, _, docs, shard_bytes, _ = case
    return build_from_token_docs(Path(tempfile.mkdtemp()) / "idx", docs, width, shard_bytes)


@SETTINGS
@given(cases(), st.sampled_from([None, 1, 3]))
def test_longest_matches_match_brute_force(case, max_len):
    _, _, docs, _, text = case
    index = _index(case)
    result = longest_matches(index, text, max_len=max_len)
    lengths, counts = oracle.longest_matches(docs, text, max_len)
    assert result.lengths.tolist() == lengths
    assert result.counts.tolist() == counts
    assert (result.starts == np.arange(len(text)) - np.array(lengths, dtype=np.int64) + 1).all()


@SETTINGS
@given(cases(), st.sampled_from([None, 1, 3]), st.integers(2, 5))
def test_pass_in_chunks_equals_one_pass(case, max_len, chunks):
    index = _index(case)
    ids = np.array(case[4], dtype=np.int64)
    cap = _check_max_len(max_len)
    whole = _pass(index, ids, cap, chunks=1)
    parts = _pass(index, ids, cap, chunks=chunks)
    for name, values in whole.items():
        assert np.array_equal(values, parts[name]), name


@SETTINGS
@given(cases())
def test_infgram_probs_equal_per_position_queries(case):
    _, _, docs, _, text = case
    index = _index(case)
    batch = infgram_probs(index, text)
    prompts, conts, suffixes = oracle.infgram_probs(docs, text)
    assert batch.prompt_counts.tolist() == prompts
    assert batch.cont_counts.tolist() == conts
    assert batch.suffix_lens.tolist() == suffixes
    for j in range(len(text)):
        one = index.infgram_prob(text[:j], text[j])
        assert (one.prompt_count, one.cont_count, one.suffix_len) == (prompts[j], conts[j], suffixes[j])
        assert batch.probs[j] == pytest.approx(one.prob)


@SETTINGS
@given(cases(), st.integers(1, 4))
def test_attribution_spans_and_creativity(case, min_len):
    _, _, docs, _, text = case
    if not text:
        return
    index = _index(case)
    result = attribute(index, text, min_len=min_len, max_docs=2, max_disp_len=50)
    expected = [(a, b) for a, b in oracle.maximal_spans(docs, text) if b - a >= min_len]
    assert [(s.start, s.end) for s in result.spans] == expected
    for span in result.spans:
        assert span.count == oracle.count(docs, text[span.start:span.end])
        assert 1 <= len(span.documents) <= 2
        for doc in span.documents:
            window = doc.token_ids[doc.needle_offset: doc.needle_offset + span.length].tolist()
            assert window == list(text[span.start:span.end])
            assert docs[doc.doc_ix] and oracle.count([docs[doc.doc_ix]], text[span.start:span.end]) > 0
    assert result.creativity == pytest.approx(oracle.uniqueness(docs, text, min_len))
    assert creativity(index, text, [1, min_len]) == {
        1: pytest.approx(oracle.uniqueness(docs, text, 1)), min_len: pytest.approx(oracle.uniqueness(docs, text, min_len))}


def test_max_count_keeps_rare_spans_only(tmp_path):
    docs = [[1, 2, 3, 4], [1, 2, 3, 5], [9, 1, 2]]
    index = build_from_token_docs(tmp_path / "idx", docs, 1)
    text = [1, 2, 3, 4, 7, 1, 2]
    spans = [(s.start, s.end, s.count) for s in attribute(index, text, min_len=2).spans]
    assert spans == [(0, 4, 1), (5, 7, 3)]
    assert [(s.start, s.end) for s in attribute(index, text, min_len=2, max_count=2).spans] == [(0, 4)]
    assert index.attribute(text, min_len=3).spans[0].documents[0].doc_ix == 0


def test_long_copy_uses_one_pass(tmp_path):
    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 50, 400).tolist() for _ in range(5)]
    index = build_from_token_docs(tmp_path / "idx", docs, 1)
    text = docs[2][30:330]
    result = index.longest_matches(text)
    assert result.lengths.tolist() == list(range(1, 301))
    assert (result.counts == 1).sum() >= 290
    probs = index.infgram_probs(text)
    assert probs.suffix_lens.tolist() == list(range(300))


def test_maximal_spans_helper():
    assert maximal_spans(np.array([1, 2, 3, 1, 0, 1], dtype=np.int64)).tolist() == [2, 3, 5]
    assert maximal_spans(np.zeros(0, dtype=np.int64)).tolist() == []


def test_empty_text_and_validation(tmp_path):
    index = build_from_token_docs(tmp_path / "idx", [[1, 2]], 1)
    assert len(longest_matches(index, [])) == 0
    assert len(infgram_probs(index, [])) == 0
    with pytest.raises(InvalidQueryError):
        attribute(index, [], min_len=2)
    with pytest.raises(InvalidQueryError, match="min_len"):
        attribute(index, [1, 2], min_len=0)
    with pytest.raises(InvalidQueryError, match="max_len"):
        longest_matches(index, [1, 2], max_len=0)
    with pytest.raises(InvalidQueryError):
        longest_matches(index, [1, 255])  # the separator


def test_cli_attribute(tmp_path, capsys):
    from engine.cli.main import main

    build_from_token_docs(tmp_path / "idx", [[1, 2, 3, 4], [1, 2, 3, 5]], 1)
    assert main(["attribute", str(tmp_path / "idx"), "--ids", "1 2 3 4 7", "--min-len", "2", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert [(s["start"], s["end"], s["count"]) for s in out["spans"]] == [(0, 4, 1)]
    assert out["creativity"] == pytest.approx(0.2)
    assert main(["attribute", str(tmp_path / "idx"), "--ids", "1 2 3", "--min-len", "2"]) == 0
    assert "maximal span" in capsys.readouterr().out
