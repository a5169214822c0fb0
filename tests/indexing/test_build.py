"""Building: resume after SIGKILL, refusal of unfinished builds, verify, multi-directory opening,
shard cuts and error positions of text builds."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine import BuildError, IndexFormatError, NgramIndex, build_index
from engine.format import file_sha256
from engine.build.verify import verify_index
from tests.helpers.corpora import build_from_token_docs

ROOT = Path(__file__).resolve().parents[2]


def _write_npz(path: Path, n_docs: int, doc_len: int, vocab: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=n_docs * doc_len)
    np.savez(path, tokens=tokens, offsets=np.arange(0, n_docs * doc_len + 1, doc_len))


BUILD_SCRIPT = """
import sys
from engine import build_index
build_index(sys.argv[1], [sys.argv[2]], tokenizer=None, vocab_size=60000, shard_bytes=int(sys.argv[3]), workers=1)
"""


def _run_build(out: Path, npz: Path, shard_bytes: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(out), str(npz), str(shard_bytes)], cwd=ROOT)


def test_killed_build_resumes_without_redoing_finished_shards(tmp_path):
    npz = tmp_path / "docs.npz"
    _write_npz(npz, n_docs=3000, doc_len=1000, vocab=60000)  # 6 MB of u16 tokens
    out = tmp_path / "idx"
    proc = _run_build(out, npz, shard_bytes=600_000)  # about 10 shards, sorted one after another
    deadline = time.time() + 120
    while not (out / "table.1").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists(), "the build finished before it could be killed; enlarge the corpus"
    finished = sorted(p.name for p in out.glob("table.*"))
    assert finished, "no shard was finished before the kill"
    stamps = {name: (out / name).stat().st_mtime_ns for name in finished}

    with pytest.raises(IndexFormatError, match="unfinished build"):
        NgramIndex.open(out)

    assert _run_build(out, npz, shard_bytes=600_000).wait() == 0
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == stamps  # not redone
    assert not list(out.glob(".*partial*")) and not list(out.glob(".*tmp*"))

    clean = tmp_path / "clean"
    assert _run_build(clean, npz, shard_bytes=600_000).wait() == 0
    for path in sorted(clean.glob("*.*")):
        if path.name.split(".")[0] in ("tokenized", "table", "offset"):
            assert file_sha256(path) == file_sha256(out / path.name), path.name
    assert verify_index(out, full=True).ok


def test_verify_catches_a_corrupted_table(tmp_path):
    index = build_from_token_docs(tmp_path / "idx", [[1, 2, 3, 1, 2, 2], [3, 3, 1]], 1)
    assert verify_index(tmp_path / "idx", full=True).ok
    table = tmp_path / "idx" / "table.0"
    data = bytearray(table.read_bytes())
    ps = index.shards[0].ptr_size
    data[0:ps], data[ps:2 * ps] = data[ps:2 * ps], data[0:ps]  # swap the first two pointers
    del index
    table.write_bytes(bytes(data))
    report = verify_index(tmp_path / "idx", full=True)
    assert not report.ok
    assert any("checksum" in p for p in report.problems)
    assert any("out of order" in p for p in report.problems)
    order_only = verify_index(tmp_path / "idx", full=True, checksums=False)
    assert [p for p in order_only.problems if "out of order" in p]


def test_existing_different_index_is_not_overwritten_silently(tmp_path):
    build_from_token_docs(tmp_path / "idx", [[1, 2]], 1)
    with pytest.raises(BuildError, match="overwrite"):
        build_index(tmp_path / "idx", documents=[np.array([5, 6, 7])], tokenizer=None, vocab_size=255 * 256)
    build_index(tmp_path / "idx", documents=[np.array([5, 6, 7])], tokenizer=None, vocab_size=255 * 256,
                overwrite=True)
    assert NgramIndex.open(tmp_path / "idx").count([5, 6]) == 1


def test_same_build_twice_is_a_no_op(tmp_path):
    build_from_token_docs(tmp_path / "idx", [[1, 2]], 1)
    before = (tmp_path / "idx" / "manifest.json").stat().st_mtime_ns
    build_from_token_docs(tmp_path / "idx", [[1, 2]], 1)
    assert (tmp_path / "idx" / "manifest.json").stat().st_mtime_ns == before


def test_several_directories_open_as_one_index(tmp_path):
    a = build_from_token_docs(tmp_path / "a", [[1, 2, 3], [2, 3]], 2)
    b = build_from_token_docs(tmp_path / "b", [[2, 3, 4]], 2)
    both = NgramIndex.open([tmp_path / "a", tmp_path / "b"])
    assert both.num_shards == 2 and both.num_docs == 3
    assert both.count([2, 3]) == a.count([2, 3]) + b.count([2, 3]) == 3
    assert both.get_doc_by_ix(2).token_ids.tolist() == [2, 3, 4]
    c = build_from_token_docs(tmp_path / "c", [[1]], 1)
    with pytest.raises(IndexFormatError, match="token widths"):
        NgramIndex.open([tmp_path / "a", tmp_path / "c"])
    del c


def test_bytes_on_disk_are_about_six_per_u16_token(tmp_path):
    npz = tmp_path / "docs.npz"
    _write_npz(npz, n_docs=200, doc_len=5000, vocab=50000)
    out = build_index(tmp_path / "idx", [npz], tokenizer=None, vocab_size=50000, metadata=False)
    manifest = NgramIndex.open(out).manifest
    files = [(name, f["bytes"]) for s in manifest["shards"] for name, f in s["files"].items()]
    disk = sum(size for name, size in files if not name.startswith("directory."))
    assert disk / manifest["num_tokens"] <= 6.01  # 2 token bytes + 4 pointer bytes (+ offsets)
    # The search directories: 24 bytes per 16 tokens (and a 64th of that for the top level), plus
    # 1 MiB of first-token ranges per shard.
    directories = sum(size for name, size in files if name.startswith("directory."))
    assert directories <= manifest["num_tokens"] * 1.5 * 1.02 + len(manifest["shards"]) * (1 << 20) + 8192


def _greedy_shards(doc_bytes: list[int], shard_bytes: int) -> list[int]:
    """Documents per shard under the builder's rule: a shard takes documents while they fit."""
    counts, used = [], None
    for size in doc_bytes:
        if used is None or used + size > shard_bytes:
            counts.append(0)
            used = 0
        counts[-1] += 1
        used += size
    return counts


def test_text_build_cuts_shards_greedily_across_tokenizer_batches(tmp_path):
    from engine.tokenizers import load_tokenizer

    rng = np.random.default_rng(3)
    words = ["alpha", "beta", "gamma", "delta", "\u00e9t\u00e9", "int", "x", "(", ");", "\n"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(0, 400)))) for _ in range(700)]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "i": i}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    gpt2 = load_tokenizer("gpt2")
    doc_bytes = [2 * (gpt2.encode(t).size + 1) for t in texts]
    shard_bytes = 20_000
    built = {}
    for workers in (1, 2):
        out = build_index(tmp_path / f"w{workers}", [corpus], tokenizer="gpt2", shard_bytes=shard_bytes,
                          workers=workers)
        manifest = NgramIndex.open(out).manifest
        assert [s["num_docs"] for s in manifest["shards"]] == _greedy_shards(doc_bytes, shard_bytes)
        built[workers] = {p.name: file_sha256(p) for p in out.glob("*.*") if p.name != "manifest.json"}
        index = NgramIndex.open(out)
        for i in (0, 1, 350, 699):
            doc = index.get_doc_by_ix(i)
            assert doc.token_ids.tolist() == gpt2.encode(texts[i]).tolist()
            assert doc.metadata == {"i": i}
    assert built[1] == built[2]


def test_build_errors_name_the_right_document(tmp_path):
    docs = [np.array([1, 2])] * 5 + [np.array([7] * 50)] + [np.array([1])]
    with pytest.raises(BuildError, match=r"document 5 \(102 bytes\) is larger than a shard"):
        build_index(tmp_path / "a", documents=docs, tokenizer=None, vocab_size=60000, shard_bytes=100)
    docs = [np.array([1, 2])] * 3 + [np.array([-1])] + [np.array([7] * 50)]
    with pytest.raises(BuildError, match=r"document 3 has token ids outside 0\.\.59999"):
        build_index(tmp_path / "b", documents=docs, tokenizer=None, vocab_size=60000, shard_bytes=100)
    texts = ["short"] * 40 + ["long " * 300] + ["x"]
    with pytest.raises(BuildError, match=r"document 40 \(\d+ bytes\) is larger than a shard"):
        build_index(tmp_path / "c", documents=texts, tokenizer="gpt2", shard_bytes=400, workers=2)
