"""AND/OR (CNF) document search against brute force, and its cap's behaviour."""

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine import build_index, NgramIndex
from engine.cnf import count_cnf, search_docs_cnf
from engine.errors import InvalidQueryError
from tests.helpers import oracle_ngrams as oracle
from tests.helpers.corpora import build_from_token_docs, draw_token_corpus

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cases(draw):
    width, alphabet, docs, shard_bytes = draw_token_corpus(draw, letters=5, doc_len=15, docs=12, shard_tokens=17, parts=3)
    term = st.lists(st.sampled_from(alphabet), min_size=1, max_size=3)
    cnf = draw(st.lists(st.lists(term, min_size=1, max_size=3), min_size=1, max_size=3))
    return width, docs, shard_bytes, cnf


@SETTINGS
@given(cases(), st.sampled_from([1, 2, 5, 1_000_000]), st.integers(0, 4))
def test_cnf_matches_brute_force(case, cap, max_docs):
    width, docs, shard_bytes, cnf = case
    index = build_from_token_docs(Path(tempfile.mkdtemp()) / "idx", docs, width, shard_bytes)
    expected = oracle.cnf_docs(docs, cnf)
    clause_counts = tuple(oracle.clause_count(docs, clause) for clause in cnf)
    result = count_cnf(index, cnf, max_clause_freq=cap)
    assert result.clause_counts == clause_counts
    if min(clause_counts) > cap:
        # Every clause over the cap: a lower bound through a sample, never a wrong document.
        assert result.approx
        assert result.count <= len(expected) and set(result.doc_ixs.tolist()) <= set(expected)
    else:
        assert not result.approx
        assert result.doc_ixs.tolist() == expected and result.count == len(expected)
        if min(clause_counts) > 0:
            assert result.scanned_clauses == tuple(i for i, c in enumerate(clause_counts) if c > cap)
    search = search_docs_cnf(index, cnf, max_docs=max_docs, max_clause_freq=cap, max_disp_len=40)
    assert search.count == result.count
    assert [d.doc_ix for d in search.documents] == search.doc_ixs.tolist() == result.doc_ixs.tolist()[:max_docs]
    for doc in search.documents:
        shown = doc.token_ids.tolist()
        assert any(shown[doc.needle_offset:doc.needle_offset + len(t)] == list(t) for clause in cnf for t in clause)


def test_text_terms_and_shorthands(tmp_path):
    build_index(tmp_path / "idx", documents=["the cat sat", "the dog sat", "a cat ran", "dogs and cats"],
                tokenizer="bytes")
    index = NgramIndex.open(tmp_path / "idx")
    assert index.count_cnf([["cat", "dog"], ["sat"]]).doc_ixs.tolist() == [0, 1]
    assert index.count_cnf("cat").count == 3  # one clause of one term
    assert index.count_cnf(["cat", "ran"]).doc_ixs.tolist() == [2]  # clauses given as strings
    found = index.search_docs_cnf([["dog"], ["sat", "and"]], max_docs=1)
    assert found.count == 2 and len(found.documents) == 1 and found.documents[0].doc_ix == 1
    none = index.count_cnf([["cat"], ["zebra"]])
    assert none.count == 0 and none.clause_counts == (3, 0) and not none.approx


def test_cap_is_reported(tmp_path):
    docs = [[1, 2, 1, 2], [1, 3], [2, 2], [3, 1, 2]]
    index = build_from_token_docs(tmp_path / "idx", docs, 1)
    exact = count_cnf(index, [[[1]], [[3]]], max_clause_freq=2)
    assert exact.doc_ixs.tolist() == [1, 3] and exact.scanned_clauses == (0,) and not exact.approx
    approx = count_cnf(index, [[[1]], [[2]]], max_clause_freq=2)
    assert approx.approx and approx.count <= 2 and set(approx.doc_ixs.tolist()) <= {0, 3}


def test_validation(tmp_path):
    index = build_from_token_docs(tmp_path / "idx", [[1, 2]], 1)
    for bad in ([], [[]], [[[]]], [[1, 2]], 5, [[["x", 1]]]):
        with pytest.raises(InvalidQueryError):
            count_cnf(index, bad)
    with pytest.raises(InvalidQueryError, match="max_clause_freq"):
        count_cnf(index, [[[1]]], max_clause_freq=0)
    with pytest.raises(InvalidQueryError, match="max_docs"):
        search_docs_cnf(index, [[[1]]], max_docs=-1)


def test_cli_cnf(tmp_path, capsys):
    import json

    from engine.cli.main import main

    build_index(tmp_path / "idx", documents=["the cat sat", "the dog sat", "a cat ran"], tokenizer="bytes")
    assert main(["cnf", str(tmp_path / "idx"), "--clause", "cat", "dog", "--clause", "sat", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 2 and out["doc_ixs"] == [0, 1] and out["approx"] is False
    assert main(["cnf", str(tmp_path / "idx"), "--clause", "cat", "--max-docs", "1"]) == 0
    assert "2 matching document(s)" in capsys.readouterr().out
