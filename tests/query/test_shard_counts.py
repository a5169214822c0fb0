"""count() over several shards: while the index's pages come from disk it searches the shards on a
thread each; the answers (and errors) are the same either way, and the mode follows what the searches
took."""

from __future__ import annotations

import numpy as np
import pytest

from engine import InvalidQueryError
from tests.helpers.corpora import build_from_token_docs


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    rng = np.random.default_rng(5)
    docs = [rng.integers(1, 6, size=int(rng.integers(1, 40))).tolist() for _ in range(300)]
    index = build_from_token_docs(tmp_path_factory.mktemp("shards") / "idx", docs, 2, shard_bytes=1500)
    assert index.num_shards >= 4
    return index, docs


def test_threads_and_one_call_agree(sharded):
    index, docs = sharded
    sc = index._shard_counts
    rng = np.random.default_rng(6)
    for _ in range(200):
        q = rng.integers(1, 6, size=int(rng.integers(0, 5))).tolist()
        sc.on_disk = False
        one_call = index.count(q)
        sc.on_disk = True
        assert index.count(q) == one_call
    sc.on_disk = True
    with pytest.raises(InvalidQueryError):  # refused by the threads as by the single call, then explained
        index.count([70000])


def test_the_mode_follows_the_page_reads(sharded):
    """Threads while searches read from disk (major page faults), one call once they do not: in memory,
    or when a count is slow only because the CPU is busy."""
    index, _ = sharded
    sc = index._shard_counts
    sc.on_disk = True
    index.count([1, 2])  # in memory: no shard's search took a major fault
    assert sc.on_disk is False
    slow, sc.DISK_US = sc.DISK_US, 0  # every count counts as slow now
    try:
        sc._faults = -1  # as if the process had read pages from disk since the last slow count
        index.count([1, 2])
        assert sc.on_disk is True
        sc.on_disk = False
        sc._faults = 10 ** 12  # slow, but no page read from disk: a busy CPU, not the disk
        index.count([1, 2])
        assert sc.on_disk is False
    finally:
        sc.DISK_US = slow
        sc.on_disk = False


def test_one_shard_has_no_threads(tiny_index):
    index, _ = tiny_index
    assert index.num_shards == 1 and index._shard_counts is None
