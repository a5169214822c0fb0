"""Frequent n-grams and SCONE f-gram vocabularies against brute force (tests/helpers/oracle_ngrams.py)."""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.errors import InvalidQueryError
from engine.storage.ngram_table import NgramTable
from engine.ngrams import FgramVocab, build_fgram_vocab, frequent_ngrams, parse_n_range
from tests.helpers import oracle_ngrams as oracle
from tests.helpers.corpora import build_from_token_docs, draw_token_corpus

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[2]


@st.composite
def corpora(draw):
    width, alphabet, docs, shard_bytes = draw_token_corpus(draw, letters=4, doc_len=20, docs=10, shard_tokens=22, parts=4)
    return width, alphabet, docs, shard_bytes


def _index(case):
    width, _, docs, shard_bytes = case
    return build_from_token_docs(Path(tempfile.mkdtemp()) / "idx", docs, width, shard_bytes)


@SETTINGS
@given(corpora(), st.integers(1, 4), st.integers(0, 3), st.integers(1, 5), st.sampled_from([2, 7, 1 << 16]))
def test_min_count_matches_brute_force(case, n_min, extra, min_count, chunk_rows):
    _, _, docs, _ = case
    index = _index(case)
    n_max = n_min + extra
    table = frequent_ngrams(index, n_min, n_max, min_count=min_count, chunk_rows=chunk_rows)
    assert table.to_list() == oracle.frequent_ngrams(docs, n_min, n_max, min_count=min_count)
    assert table.meta["threshold"] == min_count


@SETTINGS
@given(corpora(), st.integers(1, 3), st.integers(1, 40), st.sampled_from([None, 2]),
       st.sampled_from([3, 1 << 16]))
def test_top_k_matches_brute_force(case, n_max, top_k, floor, chunk_rows):
    _, _, docs, _ = case
    index = _index(case)
    table = frequent_ngrams(index, 1, n_max, top_k=top_k, min_count=floor, chunk_rows=chunk_rows)
    expected = oracle.frequent_ngrams(docs, 1, n_max, min_count=floor, top_k=top_k)
    assert table.to_list() == expected
    if expected:
        assert table.meta["threshold"] <= expected[-1][1]


def test_ngram_spread_over_shards_is_found(tmp_path):
    # [5, 6] occurs once in each of 4 shards: no shard alone reaches min_count=3.
    docs = [[5, 6, 1], [2, 5, 6], [5, 6], [3, 5, 6, 4]]
    index = build_from_token_docs(tmp_path / "idx", docs, 1, shard_bytes=6)
    assert index.num_shards == 4
    table = frequent_ngrams(index, 2, 2, min_count=3)
    assert table.to_list() == [((5, 6), 4)]
    assert frequent_ngrams(index, 2, 2, top_k=1).to_list() == [((5, 6), 4)]


def test_never_crosses_a_separator(tmp_path):
    index = build_from_token_docs(tmp_path / "idx", [[1, 2], [3, 1, 2], [2]], 1)
    grams = dict(frequent_ngrams(index, 2, 3, min_count=1).to_list())
    assert (2, 3) not in grams and (1, 2) in grams and grams[(1, 2)] == 2


def test_ties_sorted_by_token_ids_not_bytes(tmp_path):
    # u16: 0x0100 sorts before 0x0001 in stored byte order; the table must use id order.
    docs = [[0x0100, 1], [1, 0x0100], [1, 1], [0x0100, 0x0100]]
    index = build_from_token_docs(tmp_path / "idx", docs, 2)
    assert [g for g, _ in frequent_ngrams(index, 2, 2, min_count=1).to_list()] == \
        [(1, 1), (1, 0x100), (0x100, 1), (0x100, 0x100)]


def test_file_output_and_loaders(tmp_path):
    docs = [[1, 2, 3, 1, 2, 3], [2, 3, 1], [3, 3, 3]]
    index = build_from_token_docs(tmp_path / "idx", docs, 2, shard_bytes=16)
    out = tmp_path / "grams.npz"
    table = frequent_ngrams(index, 2, 3, top_k=4, out=out)
    assert out.exists() and not list(tmp_path.glob(".ngrams-*"))  # temporaries removed
    assert table.to_list() == oracle.frequent_ngrams(docs, 2, 3, top_k=4)
    again = NgramTable.open(out, mmap=False)
    assert again.to_list() == table.to_list()
    assert again.meta["kind"] == "frequent_ngrams" and again.meta["top_k"] == 4
    with np.load(out) as z:  # plain numpy reads it, no pickle
        assert z["tokens"].dtype == np.uint32 and z["offsets"][-1] == len(z["tokens"])
    assert len(next(again.text_rows(lambda ids: "x")).split("\t")) == 4


def test_empty_result(tmp_path):
    index = build_from_token_docs(tmp_path / "idx", [[1, 2], [3]], 1)
    assert frequent_ngrams(index, 2, 4, min_count=5).to_list() == []
    assert frequent_ngrams(index, 3, 4, top_k=5).to_list() == []


def test_validation(tmp_path):
    index = build_from_token_docs(tmp_path / "idx", [[1, 2]], 1)
    with pytest.raises(InvalidQueryError, match="min_count"):
        frequent_ngrams(index, 1, 2)
    with pytest.raises(InvalidQueryError, match="n_min"):
        frequent_ngrams(index, 3, 2, min_count=1)
    with pytest.raises(InvalidQueryError, match="top_k"):
        frequent_ngrams(index, 1, 2, top_k=0)
    with pytest.raises(InvalidQueryError):
        frequent_ngrams(index, 0, 2, min_count=1)
    assert parse_n_range("2-5") == (2, 5) and parse_n_range("3") == (3, 3) and parse_n_range((1, 4)) == (1, 4)
    with pytest.raises(InvalidQueryError):
        parse_n_range("two")


def test_index_method_delegates(tmp_path):
    docs = [[1, 2, 1, 2], [2, 1]]
    index = build_from_token_docs(tmp_path / "idx", docs, 1)
    assert index.frequent_ngrams(2, 2, min_count=2).to_list() == [((1, 2), 2), ((2, 1), 2)]


# ---------------------------------------------------------------------------------------- SCONE
@SETTINGS
@given(corpora(), st.integers(2, 4), st.integers(1, 12), st.data())
def test_fgram_vocab_and_matcher(case, max_len, size, data):
    _, alphabet, docs, _ = case
    index = _index(case)
    vocab = build_fgram_vocab(index, max_len=max_len, size=size, min_count=1)
    expected = oracle.frequent_ngrams(docs, 2, max_len, min_count=1, top_k=size)
    assert vocab.table.to_list() == expected
    grams = [g for g, _ in expected]
    seq = data.draw(st.lists(st.sampled_from(alphabet), max_size=30))
    ids, lengths = vocab.longest(seq)
    exp_ids, exp_lengths = oracle.fgram_longest(grams, seq)
    assert ids.tolist() == exp_ids and lengths.tolist() == exp_lengths
    report = vocab.coverage(seq)
    assert report.matched_positions == sum(1 for n in exp_lengths if n)
    assert sum(report.length_counts.values()) == len(seq)


def test_fgram_vocab_file_is_read_by_lm_integration(tmp_path):
    docs = [[1, 2, 3, 1, 2, 3, 4], [2, 3, 4, 1, 2], [4, 4, 1, 2, 3]]
    index = build_from_token_docs(tmp_path / "idx", docs, 2)
    path = tmp_path / "fgrams.npz"
    vocab = build_fgram_vocab(index, max_len=3, size=6, min_count=2, out=path)
    assert FgramVocab.open(path).table.to_list() == vocab.table.to_list()
    seq = [1, 2, 3, 4, 4, 1, 2, 9, 2, 3]
    ours = vocab.longest(seq)[0].tolist()
    code = (
        "import sys, json; from lm_integration.fgram import load_fgram_vocab, CausalFgramMatcher\n"
        f"v = load_fgram_vocab({str(path)!r}); m = CausalFgramMatcher(v)\n"
        f"print(json.dumps([[list(map(int, v[i])) for i in range(len(v))], m({seq!r}).tolist()]))\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('numba', 'grpc')]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    import json

    grams, theirs = json.loads(r.stdout)
    assert [tuple(g) for g in grams] == [g for g, _ in vocab.table.to_list()]
    assert theirs == ours


def test_coverage_report_numbers(tmp_path):
    index = build_from_token_docs(tmp_path / "idx", [[1, 2, 3], [1, 2, 3], [5, 6]], 1)
    vocab = build_fgram_vocab(index, max_len=3, size=10, min_count=2)
    assert vocab.table.to_list() == [((1, 2), 2), ((1, 2, 3), 2), ((2, 3), 2)]
    report = vocab.coverage([7, 1, 2, 3, 5, 6])
    assert report.length_counts == {0: 4, 2: 1, 3: 1}
    assert report.matched_positions == 2 and report.matched_share == pytest.approx(2 / 6)
    assert report.covered_share == pytest.approx(3 / 6)


# ---------------------------------------------------------------------------------------- CLI
def test_cli_ngrams_and_scone(tmp_path, capsys):
    from engine.cli.main import main

    docs = [[1, 2, 3, 1, 2], [2, 3, 1, 2]]
    build_from_token_docs(tmp_path / "idx", docs, 1)
    out = tmp_path / "g.npz"
    text = tmp_path / "g.tsv"
    assert main(["ngrams", str(tmp_path / "idx"), "--n", "2-3", "--top-k", "3", "--out", str(out),
                 "--text", str(text), "--quiet", "--show", "0"]) == 0
    assert NgramTable.open(out).to_list() == oracle.frequent_ngrams(docs, 2, 3, top_k=3)
    lines = text.read_text().splitlines()
    assert lines[0] == "count\tn\tids\ttext" and lines[1].startswith("3\t2\t1 2\t")
    assert main(["ngrams-view", str(out), "--limit", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["scone-vocab", str(tmp_path / "idx"), "--max-len", "3", "--size", "2", "--min-count", "2",
                 "--out", str(tmp_path / "v.npz"), "--quiet"]) == 0
    assert '"size": 2' in capsys.readouterr().out
    assert main(["ngrams", str(tmp_path / "idx"), "--out", str(out), "--quiet"]) == 2  # neither --top-k nor --min-count
