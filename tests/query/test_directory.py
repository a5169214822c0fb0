"""Search directories on disk (engine.storage.directory): written by build, recorded in the manifest,
memory-mapped at open, checked, verified, and made for indexes without one (`ngram index-directory`)."""

import json
import logging
import os
import stat

import numpy as np
import pytest

from engine import NgramIndex, build_index
from engine.kernels import suffix as kernels
from engine.storage import directory
from engine.cli.main import main as cli_main
from engine.errors import IndexFormatError
from engine.build.verify import verify_index
from tests.helpers.corpora import ALPHABETS, VOCAB

N_DOCS = 40
DOC_LEN = 1200


def _docs(width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    alphabet = np.asarray(ALPHABETS[width][:4], dtype=np.int64)
    return [alphabet[rng.choice(4, size=DOC_LEN, p=[0.55, 0.25, 0.15, 0.05])] for _ in range(N_DOCS)]


def _build(path, width=2, **kwargs):
    docs = _docs(width)
    build_index(path, documents=docs, tokenizer=None, vocab_size=VOCAB[width], **kwargs)
    return docs


def _queries(docs, k=60, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        d = docs[int(rng.integers(len(docs)))]
        n = int(rng.integers(1, 12))
        i = int(rng.integers(0, len(d) - n))
        out.append(d[i:i + n].tolist())
    return out


def _drop_directory(path):
    """Make a built index look like one without directories (as infini-gram's or older builds)."""
    manifest = json.loads((path / "manifest.json").read_text())
    for entry in manifest["shards"]:
        entry["files"].pop(f"directory.{entry['shard']}", None)
        (path / f"directory.{entry['shard']}").unlink()
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NGRAM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("width", [1, 2, 4])
def test_build_writes_directories_that_open_and_equal_built_ones(tmp_path, width):
    path = tmp_path / "idx"
    _build(path, width, shard_bytes=20_000 * width)
    index = NgramIndex.open(path)
    assert index.num_shards > 1
    manifest = json.loads((path / "manifest.json").read_text())
    for n, shard in enumerate(index.shards):
        file = path / f"directory.{n}"
        assert file.is_file() and f"directory.{n}" in manifest["shards"][n]["files"]
        assert index.directory_sources[n] == str(file)
        fresh = kernels.build_directory(shard.tokenized, shard.table, shard.ptr_size, width)
        assert np.array_equal(index._dirs[n], fresh)
    assert manifest["build"]["directory_budget"] == directory.DEFAULT_BUDGET
    ram = NgramIndex.open(path, load="ram")
    assert all(np.array_equal(a, b) for a, b in zip(ram._dirs, index._dirs))
    assert verify_index(path, full=True).ok


def test_corrupt_directory_files_raise_naming_the_file(tmp_path):
    path = tmp_path / "idx"
    _build(path)
    file = path / "directory.0"
    good = file.read_bytes()
    for damage in (b"XXXXXXXX" + good[8:],  # magic
                   good[:-8],  # size
                   good[:8] + (directory.FILE_VERSION + 1).to_bytes(8, "little") + good[16:],  # a newer version
                   good[:24] + (12345).to_bytes(8, "little") + good[32:]):  # positions
        file.write_bytes(damage)
        with pytest.raises(IndexFormatError, match="directory.0"):
            NgramIndex.open(path)
    # A first-token range past the shard (what a kernel would follow out of the table).
    dr = np.frombuffer(good, dtype="<i8", offset=directory.HEADER_BYTES).copy()
    dr[kernels.HEADER + 3] = 10 ** 9
    file.write_bytes(good[:directory.HEADER_BYTES] + dr.tobytes())
    with pytest.raises(IndexFormatError, match="directory.0"):
        NgramIndex.open(path)
    # A changed sample opens (it cannot send a search astray) but verify finds it, sampled or full.
    dr = np.frombuffer(good, dtype="<i8", offset=directory.HEADER_BYTES).copy()
    dr[int(dr[kernels.D_SAMPLES]) + kernels.SAMPLE_WORDS * 5] ^= 1 << 20
    file.write_bytes(good[:directory.HEADER_BYTES] + dr.tobytes())
    NgramIndex.open(path)
    for full in (False, True):
        report = verify_index(path, full=full, checksums=False)
        assert not report.ok and any("directory.0" in p for p in report.problems)
    assert any("checksum" in p for p in verify_index(path).problems)


def test_a_directory_of_an_older_format_is_built_in_memory_until_rewritten(tmp_path, caplog):
    """After an upgrade that changed the directory format, an index still opens (and answers the
    same), building its directory in memory with a warning naming the command; verify reports the
    file, and `ngram index-directory` (no --force needed) rewrites it."""
    path = tmp_path / "idx"
    _build(path)
    expected = NgramIndex.open(path).count([3, 4])
    file = path / "directory.0"
    good = file.read_bytes()
    file.write_bytes(good[:8] + (directory.FILE_VERSION - 1).to_bytes(8, "little") + good[16:])
    with caplog.at_level(logging.WARNING, logger="engine.storage.directory"):
        index = NgramIndex.open(path)
    assert index.directory_sources == ["memory"] and index.count([3, 4]) == expected
    assert any("older than this engine" in r.getMessage() and "ngram index-directory" in r.getMessage()
               for r in caplog.records)
    assert any("directory.0" in p for p in verify_index(path, checksums=False).problems)
    assert cli_main(["index-directory", "-q", str(path)]) == 0
    index = NgramIndex.open(path)
    assert index.directory_sources == [str(file)] and index.count([3, 4]) == expected


def test_index_without_directory_builds_in_memory_with_a_hint_then_the_command(tmp_path, cache_env, caplog):
    path = tmp_path / "idx"
    docs = _build(path)
    expected = NgramIndex.open(path)
    queries = _queries(docs)
    counts = [expected.count(q) for q in queries]
    _drop_directory(path)
    with caplog.at_level(logging.INFO, logger="engine.storage.directory"):
        index = NgramIndex.open(path)
    assert index.directory_sources == ["memory"]
    assert any("ngram index-directory" in r.getMessage() for r in caplog.records)
    assert [index.count(q) for q in queries] == counts
    assert cli_main(["index-directory", str(path), "-q"]) == 0
    index = NgramIndex.open(path)
    assert index.directory_sources == [str(path / "directory.0")]
    assert [index.count(q) for q in queries] == counts
    assert "directory.0" in json.loads((path / "manifest.json").read_text())["shards"][0]["files"]
    assert verify_index(path).ok


def test_read_only_index_gets_its_directory_in_the_user_cache(tmp_path, cache_env, monkeypatch):
    path = tmp_path / "idx"
    docs = _build(path)
    _drop_directory(path)
    path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.geteuid() == 0:  # root writes anywhere: say the directory is read-only
        monkeypatch.setattr(directory, "_writable", lambda d: False)
    try:
        files = directory.index_directories(path, progress=False)
    finally:
        path.chmod(stat.S_IRWXU)
    assert not (path / "directory.0").exists()
    assert files[0].is_relative_to(cache_env)
    index = NgramIndex.open(path)
    assert index.directory_sources == [str(files[0])]
    assert index.count(docs[0][:3].tolist()) > 0


def test_cache_location_when_asked(tmp_path, cache_env):
    path = tmp_path / "idx"
    docs = _build(path)
    _drop_directory(path)
    files = directory.index_directories(path, progress=False, cache=True)
    assert files[0].is_relative_to(cache_env) and not (path / "directory.0").exists()
    index = NgramIndex.open(path)
    assert index.directory_sources == [str(files[0])]
    queries = _queries(docs)
    _drop_directory_cache = [index.count(q) for q in queries]
    files[0].unlink()
    assert [NgramIndex.open(path).count(q) for q in queries] == _drop_directory_cache
    # Rebuilding the shard files (new mtimes and sizes) moves the key: a stale file is never used.
    key = directory.cache_key(path)
    os.utime(path / "table.0", ns=(1, 1))
    assert directory.cache_key(path) != key


def test_budget_sets_the_stride_and_answers_stay_exact(tmp_path, capsys):
    path = tmp_path / "idx"
    docs = _build(path, directory_budget=64 * directory.SAMPLE_ENTRY_BYTES)
    index = NgramIndex.open(path)
    n_pos = index.shards[0].num_positions
    assert int(index._dirs[0][kernels.D_SHIFT]) == directory.sample_shift(n_pos, 64 * directory.SAMPLE_ENTRY_BYTES)
    assert int(index._dirs[0][kernels.D_SHIFT]) > kernels.MIN_SAMPLE_SHIFT
    default_path = tmp_path / "default"
    _build(default_path)
    default = NgramIndex.open(default_path)
    for q in _queries(docs, 150):
        assert index.count(q) == default.count(q)
        assert np.array_equal(index.ntd(q).counts, default.ntd(q).counts)
    assert verify_index(path, full=True).ok
    assert cli_main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"budget {64 * directory.SAMPLE_ENTRY_BYTES:,}" in out and "memory-mapped" in out
    # The command rebuilds under another budget; an in-memory build follows the open's budget.
    directory.index_directories(path, budget=directory.DEFAULT_BUDGET, progress=False)
    assert int(NgramIndex.open(path)._dirs[0][kernels.D_SHIFT]) == kernels.sample_shift(n_pos)
    _drop_directory(path)
    small = NgramIndex.open(path, directory_budget=16 * directory.SAMPLE_ENTRY_BYTES)
    assert small.directory_sources == ["memory"]
    assert int(small._dirs[0][kernels.D_SHIFT]) == directory.sample_shift(n_pos, 16 * directory.SAMPLE_ENTRY_BYTES)


def test_mappings_are_advised_random(tmp_path):
    path = tmp_path / "idx"
    _build(path)
    index = NgramIndex.open(path)
    from engine.format import mapping_of

    assert mapping_of(index.shards[0].table) is not None
    with open("/proc/self/smaps", encoding="utf-8") as fh:
        text = fh.read()
    # VmFlags "rr" marks a mapping advised MADV_RANDOM.
    blocks = text.split("\n")
    for i, line in enumerate(blocks):
        if line.endswith(str((path / "table.0").resolve())):
            flags = next(b for b in blocks[i:] if b.startswith("VmFlags:"))
            assert " rr" in flags
            break
    else:
        pytest.fail("table.0 is not mapped")


def test_samples_mapped_in_place_answer_the_same(tmp_path, monkeypatch):
    """Large directories keep their samples on disk, mapped (MAP_FIXED) inside the array whose
    other parts were read into memory: the array equals the file, and queries are unchanged."""
    path = tmp_path / "idx"
    docs = _build(path)
    ram = NgramIndex.open(path, load="ram")
    monkeypatch.setattr(directory, "_MIN_MAPPED_SAMPLES", 4096)
    index = NgramIndex.open(path)
    assert np.array_equal(index._dirs[0], ram._dirs[0])
    with open("/proc/self/maps", encoding="utf-8") as fh:
        mapped = [line for line in fh if line.rstrip().endswith(str((path / "directory.0").resolve()))]
    if not mapped:
        pytest.skip("no MAP_FIXED overlay on this platform")
    assert all(int(line.split()[2], 16) > 0 for line in mapped)  # the samples, not the file from its start
    queries = _queries(docs, 100)
    assert [index.count(q) for q in queries] == [ram.count(q) for q in queries]
    del index
