"""count() runs the in-memory search, or engine.kernels.disk's lockstep search while the index's pages
come from disk; the answers (and errors) are the same either way, and the mode follows what the
searches took."""

from __future__ import annotations

import numpy as np
import pytest

import engine.index as index_module
from engine import InvalidQueryError
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
    counter = index._counter
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


def test_the_mode_follows_the_page_reads(index, monkeypatch):
    """The on-disk search while searches read from disk (major page faults), the in-memory one once
    they do not: in memory, or when a count is slow only because the CPU is busy."""
    counter = index._counter
    counter.on_disk = True
    index.count([1, 2])  # in memory: the on-disk search took under _DISK_NS
    assert counter.on_disk is False
    monkeypatch.setattr(index_module, "_DISK_NS", -1)  # every count counts as slow now
    try:
        counter._faults = -1  # as if the process had read pages from disk since the last slow count
        index.count([1, 2])
        assert counter.on_disk is True
        index.count([1, 2])
        assert counter.on_disk is True  # slow with the on-disk search too: stays
        counter.on_disk = False
        counter._faults = 10 ** 12  # slow, but no page read from disk: a busy CPU, not the disk
        index.count([1, 2])
        assert counter.on_disk is False
    finally:
        counter.on_disk = False
