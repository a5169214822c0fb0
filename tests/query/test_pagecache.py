"""`ngram cache`: an index read back into the page cache (2 MiB pages where the kernel allows) stays
byte-for-byte the same and answers the same."""

import subprocess
import sys

import numpy as np
import pytest

from engine import NgramIndex
from engine.errors import IndexNotFoundError
from engine.storage.pagecache import HUGE_PAGE, cache_file, cache_index, index_files
from tests.helpers.corpora import build_from_token_docs


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    rng = np.random.default_rng(7)
    docs = [rng.integers(1, 300, size=int(rng.integers(0, 400))).tolist() for _ in range(300)]
    path = tmp_path_factory.mktemp("cache") / "index"
    build_from_token_docs(path, docs, 2, shard_bytes=60_000)
    return path, docs


def test_every_shard_file_is_cached_unchanged(sharded):
    path, docs = sharded
    before = {p: p.read_bytes() for p in index_files(path)}
    assert len({p.suffix for p in before}) > 1, "the fixture should have several shards"
    counts_before = [NgramIndex.open(path).count(d[:3]) for d in docs[:50] if d]
    files = cache_index([path], progress=False)
    assert {f.path for f in files} == set(before)
    for f in files:
        assert f.bytes == len(before[f.path])
        assert 0 <= f.huge_bytes <= f.bytes
        assert f.path.read_bytes() == before[f.path]
    assert [NgramIndex.open(path).count(d[:3]) for d in docs[:50] if d] == counts_before


def test_large_file_reports_whole_huge_pages(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, size=3 * HUGE_PAGE + 123, dtype=np.uint8)
    path = tmp_path / "tokenized.0"
    data.tofile(path)
    cached = cache_file(path)
    assert cached.bytes == data.size
    assert cached.huge_bytes % HUGE_PAGE == 0 and cached.huge_bytes <= 3 * HUGE_PAGE
    assert np.array_equal(np.fromfile(path, dtype=np.uint8), data)


def test_a_directory_without_shards_is_refused(tmp_path):
    with pytest.raises(IndexNotFoundError, match="holds no shard files"):
        cache_index([tmp_path], progress=False)


def test_cli_reports_each_file(sharded):
    path, _ = sharded
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "cache", "-q", str(path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(index_files(path)) + 1
    assert lines[-1].startswith("cached ")
    bad = subprocess.run([sys.executable, "-m", "engine.cli.main", "cache", str(path / "nope")], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and "does not exist" in bad.stderr
