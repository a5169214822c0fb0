"""count() and ntd() run the in-memory searches, or engine.kernels.disk's while the index's pages
come from disk; the answers (and errors) are the same either way, and the mode follows what the
searches took."""

from __future__ import annotations

import numpy as np
import pytest

import engine.index as index_module
from engine import InvalidQueryError
from engine.kernels import suffix as kernels
from tests.helpers.corpora import build_from_token_docs


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    rng = np.random.default_rng(5)
    docs = [rng.integers(1, 6, size=int(rng.integers(1, 40))).tolist() for _ in range(300)]
    index = build_from_token_docs(tmp_path_factory.mktemp("shards") / "idx", docs, 2, shard_bytes=1500)
    assert index.num_shards >= 4
    return index, docs


@pytest.fixture(params=["sharded", "one shard"])
def index(request, sharded, tiny_index):
    return sharded[0] if request.param == "sharded" else tiny_index[0]


def test_both_searches_agree(index):
    counter = index._disk
    rng = np.random.default_rng(6)
    try:
        for _ in range(200):
            q = rng.integers(1, 6, size=int(rng.integers(0, 5))).tolist()
            counter.on_disk = False
            in_memory = index.count(q)
            counter.on_disk = True
            assert index.count(q) == in_memory
            assert index.count(np.asarray(q, dtype=np.int64)) == in_memory
        counter.on_disk = True
        with pytest.raises(InvalidQueryError):  # refused by the on-disk search too, then explained
            index.count([70000])
    finally:
        counter.on_disk = False


@pytest.mark.parametrize("max_support", [None, 1, 3, 1000])
def test_ntd_on_disk_equals_in_memory(index, max_support, monkeypatch):
    """On disk, the exact distribution comes from the capped walk with unit 1 and the capped one from
    the level-by-level walk: the same answers as the in-memory kernels, plain and infgram."""
    mode = index._disk
    rng = np.random.default_rng(8)

    def both(q):
        return index.ntd(q, max_support=max_support), index.infgram_ntd(q + [9], max_support=max_support)

    try:
        for _ in range(120):
            q = rng.integers(1, 6, size=int(rng.integers(0, 4))).tolist()
            monkeypatch.setattr(index_module, "_DISK_NS", 10 ** 15)  # no query is slow: stays in memory
            mode.on_disk = False
            expected = both(q)
            monkeypatch.setattr(index_module, "_DISK_NS", -1)  # every query is slow: stays on disk
            mode.on_disk = True
            got = both(q)
            assert mode.on_disk
            for a, b in zip(got, expected):
                assert a.prompt_count == b.prompt_count and a.end_count == b.end_count and a.approx == b.approx
                assert a.tokens.tolist() == b.tokens.tolist() and a.counts.tolist() == b.counts.tolist()
            assert got[1].suffix_len == expected[1].suffix_len
    finally:
        mode.on_disk = False


def test_prob_on_disk_equals_in_memory(index, monkeypatch):
    """prob and infgram_prob by the on-disk searches (the longest suffix's length searched from
    Python, every shard at once per probe) against the kernels' in-memory answers."""
    mode = index._disk
    rng = np.random.default_rng(9)
    try:
        for _ in range(150):
            q = rng.integers(1, 7, size=int(rng.integers(0, 6))).tolist()
            cont = int(rng.integers(1, 6))
            monkeypatch.setattr(index_module, "_DISK_NS", 10 ** 15)
            mode.on_disk = False
            expected = (index.prob(q, cont), index.infgram_prob(q, cont))
            monkeypatch.setattr(index_module, "_DISK_NS", -1)
            mode.on_disk = True
            assert (index.prob(q, cont), index.infgram_prob(q, cont)) == expected
            assert mode.on_disk
        with pytest.raises(InvalidQueryError):
            index.prob([1], 70000)
    finally:
        mode.on_disk = False


def test_search_docs_on_disk_equals_in_memory(index, monkeypatch):
    """On disk, search_docs asks for its documents' pages first (suffix-array entries, the offsets
    bisections, token windows, metadata) and then reads them as in memory: the same documents."""
    mode = index._disk
    rng = np.random.default_rng(10)
    try:
        for _ in range(60):
            q = rng.integers(1, 6, size=int(rng.integers(1, 4))).tolist()
            max_docs, disp = int(rng.integers(0, 12)), int(rng.integers(1, 30))
            monkeypatch.setattr(index_module, "_DISK_NS", 10 ** 15)
            mode.on_disk = False
            expected = index.search_docs(q, max_docs=max_docs, max_disp_len=disp)
            monkeypatch.setattr(index_module, "_DISK_NS", -1)
            mode.on_disk = True
            got = index.search_docs(q, max_docs=max_docs, max_disp_len=disp)
            assert got.count == expected.count and len(got.documents) == len(expected.documents)
            for a, b in zip(got.documents, expected.documents):
                assert (a.doc_ix, a.doc_len, a.needle_offset, a.metadata, a.shard) == \
                    (b.doc_ix, b.doc_len, b.needle_offset, b.metadata, b.shard)
                assert a.token_ids.tolist() == b.token_ids.tolist()
            assert mode.on_disk
    finally:
        mode.on_disk = False


def test_the_mode_follows_the_page_reads(index, monkeypatch):
    """The on-disk search while searches read from disk (major page faults), the in-memory one once
    they do not: in memory, or when a count is slow only because the CPU is busy."""
    mode = index._disk
    mode.on_disk = True
    # in memory: the on-disk search took under _DISK_NS (raised here: a first call in a process loads
    # the on-disk kernels, tens of milliseconds, and a loaded machine can take 300 us for any search)
    monkeypatch.setattr(index_module, "_DISK_NS", 10 ** 12)
    index.count([1, 2])
    assert mode.on_disk is False
    # Every count is slow now: count_at reports it (its handle's limit is 1 ns), and so is every
    # on-disk search.
    slow = kernels.index_handle(index._search[0], index.token_width, index.vocab_size, index.separator_id, slow_ns=1)
    monkeypatch.setattr(index, "_handle", slow)
    monkeypatch.setattr(index, "_handle_address", slow.ctypes.data)
    monkeypatch.setattr(index_module, "_DISK_NS", -1)
    expected = index.count([1, 2])  # decoded: the count, not the slow signal
    assert expected >= 0
    try:
        mode._faults = -1  # as if the process had read pages from disk since the last slow count
        assert index.count([1, 2]) == expected
        assert mode.on_disk is True
        assert index.count([1, 2]) == expected
        assert mode.on_disk is True  # slow with the on-disk search too: stays
        mode.on_disk = False
        mode._faults = 10 ** 12  # slow, but no page read from disk: a busy CPU, not the disk
        assert index.count(np.array([1, 2])) == expected
        assert mode.on_disk is False
    finally:
        mode.on_disk = False


def test_count_at_reports_slow_searches_only_when_asked(index):
    ids = np.array([1, 2], dtype=np.int64)
    n = int(kernels.count_at(index._handle_address, ids))
    assert n >= 0 and kernels.decode_count(n) == (n, False)  # 300 us: a count in memory is far faster
    never = kernels.index_handle(index._search[0], index.token_width, index.vocab_size, index.separator_id)
    always = kernels.index_handle(index._search[0], index.token_width, index.vocab_size, index.separator_id,
                                  slow_ns=1)
    assert int(kernels.count_at(never.ctypes.data, ids)) == n
    assert kernels.decode_count(int(kernels.count_at(always.ctypes.data, ids))) == (n, True)
    assert int(kernels.count_at(always.ctypes.data, np.array([-5], dtype=np.int64))) == -1  # refused, not slow
