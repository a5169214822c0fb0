import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lm_integration import CausalFgramMatcher, FgramVocab, FgramVocabError, load_fgram_vocab
from lm_integration.fgram import brute_force_match

vocab_st = st.lists(st.lists(st.integers(0, 3), min_size=2, max_size=5).map(tuple), min_size=0, max_size=30, unique=True)


@settings(max_examples=100, deadline=None)
@given(vocab_st, st.lists(st.lists(st.integers(0, 4), min_size=0, max_size=30), min_size=1, max_size=3))
def test_matcher_equals_brute_force(vocab, seqs):
    m = CausalFgramMatcher(vocab)
    for s in seqs:
        got = m(np.array(s, dtype=np.int64))
        assert got.tolist() == brute_force_match(vocab, s)
    T = min(len(s) for s in seqs)
    batch = np.array([s[:T] for s in seqs], dtype=np.int64).reshape(len(seqs), T)
    ids, lens = m(batch, return_lengths=True)
    for b in range(len(seqs)):
        assert ids[b].tolist() == brute_force_match(vocab, batch[b].tolist())
        for t in range(T):
            assert lens[b, t] == (len(vocab[ids[b, t]]) if ids[b, t] >= 0 else 0)


@settings(max_examples=40, deadline=None)
@given(vocab_st, st.lists(st.integers(0, 4), min_size=1, max_size=30))
def test_matcher_is_causal(vocab, seq):
    m = CausalFgramMatcher(vocab)
    full = m(np.array(seq))
    for t in range(len(seq)):
        assert m(np.array(seq[: t + 1]))[t] == full[t]


def test_attention_mask_blocks_padding():
    m = CausalFgramMatcher([(0, 5), (5, 6)])
    ids = np.array([[0, 0, 5, 6], [1, 2, 5, 6]])
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert m(ids, attention_mask=mask).tolist() == [[-1, -1, -1, 1], [-1, -1, -1, 1]]
    assert m(ids).tolist()[0] == [-1, -1, 0, 1]


def test_torch_input():
    torch = pytest.importorskip("torch")
    m = CausalFgramMatcher([(1, 2), (1, 2, 3)])
    assert m(torch.tensor([[1, 2, 3, 1, 2]])).tolist() == [[-1, 0, 1, -1, 0]]


def test_vocab_validation_and_files(tmp_path):
    with pytest.raises(FgramVocabError, match="n >= 2"):
        FgramVocab([(1,)])
    with pytest.raises(FgramVocabError, match="same n-gram"):
        FgramVocab([(1, 2), (1, 2)])
    v = FgramVocab([(1, 2), (3, 4, 5)], counts=[10, 7])
    v.save(tmp_path / "v.npz")
    w = load_fgram_vocab(tmp_path / "v.npz")
    assert [w[i].tolist() for i in range(len(w))] == [[1, 2], [3, 4, 5]] and w.counts.tolist() == [10, 7]
    (tmp_path / "v.jsonl").write_text('{"tokens": [1, 2], "count": 3}\n[3, 4, 5]\n')
    assert load_fgram_vocab(tmp_path / "v.jsonl")[1].tolist() == [3, 4, 5]
    (tmp_path / "v.json").write_text(json.dumps({"ngrams": [[1, 2]]}))
    assert len(load_fgram_vocab(tmp_path / "v.json")) == 1
    with pytest.raises(FgramVocabError, match="unknown"):
        (tmp_path / "v.txt").write_text("")
        load_fgram_vocab(tmp_path / "v.txt")


def test_loads_the_engines_fgram_table_format(tmp_path):
    # engine/storage/ngram_table.py: uint32 tokens, int64 offsets and counts, a 0-d JSON string "meta"
    path = tmp_path / "vocab.npz"
    np.savez(path, tokens=np.array([5, 6, 5, 6, 7], dtype="<u4"), offsets=np.array([0, 2, 5], dtype=np.int64),
             counts=np.array([9, 4], dtype=np.int64),
             meta=np.array(json.dumps({"kind": "fgram_vocab", "tokenizer_fingerprint": "abc"})))
    v = load_fgram_vocab(path)
    assert [v[i].tolist() for i in range(len(v))] == [[5, 6], [5, 6, 7]]
    assert v.meta["kind"] == "fgram_vocab" and v.counts.tolist() == [9, 4]
    assert CausalFgramMatcher(v)(np.array([5, 6, 7, 5, 6])).tolist() == [-1, 0, 1, -1, 0]


def test_matches_the_engines_matcher(tmp_path):
    engine_ngrams = pytest.importorskip("engine.ngrams")
    from engine.storage.ngram_table import NgramTable

    rng = np.random.default_rng(0)
    grams = sorted({tuple(rng.integers(0, 4, rng.integers(2, 5)).tolist()) for _ in range(40)})
    toks = np.concatenate([np.array(g) for g in grams]).astype("<u4")
    offs = np.concatenate([[0], np.cumsum([len(g) for g in grams])]).astype(np.int64)
    table = NgramTable(toks, offs, np.ones(len(grams), dtype=np.int64), {"kind": "fgram_vocab"})
    theirs = engine_ngrams.FgramVocab(table)
    seq = rng.integers(0, 5, 300)
    ids, lens = theirs.longest(seq)
    mine, mlens = CausalFgramMatcher(grams)(seq, return_lengths=True)
    assert mine.tolist() == ids.tolist() and mlens.tolist() == lens.tolist()
