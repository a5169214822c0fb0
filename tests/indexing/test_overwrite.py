"""`ngram build --overwrite` removes only an index, and only once the inputs are found (issue 15);
a build killed after its manifest leaves no state behind after the rerun; unwritable outputs are
typed errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import BuildError, NgramIndex, build_index

ROOT = Path(__file__).resolve().parents[2]


def _corpus(directory: Path, text: str = "the cat sat on the mat\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "a.txt").write_text(text)
    (directory / "b.json").write_text('{"keep": true}\n')
    return directory


def _tree(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _build(out, inputs, **kwargs):
    return build_index(out, inputs, tokenizer="bytes", line_per_doc=True, workers=1, **kwargs)


def test_output_dir_is_the_corpus_dir(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    before = _tree(corpus)
    with pytest.raises(BuildError, match=r"holds 2 entries that are not index files \(e\.g\. a\.txt, b\.json\)"):
        _build(corpus, [corpus], overwrite=True)
    assert _tree(corpus) == before


def test_dir_of_user_files_is_refused_with_what_it_holds(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    user = _corpus(tmp_path / "mine")
    (user / "notes").mkdir()
    (user / "notes" / "x.md").write_text("mine")
    before = _tree(user)
    for overwrite in (False, True):
        with pytest.raises(BuildError) as info:
            _build(user, [corpus], overwrite=overwrite)
        message = str(info.value)
        assert "3 entries that are not index files" in message and "notes/" in message
        assert "different index" not in message
        assert _tree(user) == before


def test_index_with_a_user_file_inside_is_not_overwritten(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    out = tmp_path / "idx"
    _build(out, [corpus])
    (out / "README.md").write_text("my notes")
    before = _tree(out)
    other = _corpus(tmp_path / "other", "a dog\n")
    with pytest.raises(BuildError, match="README.md"):
        _build(out, [other], overwrite=True)
    assert _tree(out) == before


def test_old_index_is_overwritten(tmp_path):
    out = tmp_path / "idx"
    _build(out, [_corpus(tmp_path / "c1", "the cat sat\n")])
    assert NgramIndex.open(out).count("cat") == 1
    other = _corpus(tmp_path / "c2", "dog dog dog\n")
    with pytest.raises(BuildError, match="already holds a different index"):
        _build(out, [other])
    _build(out, [other], overwrite=True)
    index = NgramIndex.open(out)
    assert index.count("cat") == 0 and index.count("dog") == 3
    assert not (out / ".build").exists()


def test_overwrite_checks_the_inputs_before_removing_anything(tmp_path):
    out = tmp_path / "idx"
    _build(out, [_corpus(tmp_path / "c1")])
    before = _tree(out)
    with pytest.raises(BuildError, match="no input files match"):
        _build(out, [tmp_path / "missing" / "*.txt"], overwrite=True)
    assert _tree(out) == before
    # An input inside the index directory would be removed with it.
    (tmp_path / "c3").mkdir()
    with pytest.raises(BuildError, match="lies inside the output directory"):
        _build(out, [out / "tokenized.0", tmp_path / "c1"], overwrite=True)
    assert _tree(out) == before


def test_half_removed_index_is_still_recognised(tmp_path):
    """A kill during --overwrite's removal leaves the .build folder (made first) and some shard files."""
    out = tmp_path / "idx"
    _build(out, [_corpus(tmp_path / "c1")])
    (out / "manifest.json").unlink()
    (out / "table.0").unlink()
    (out / ".build").mkdir()
    _build(out, [_corpus(tmp_path / "c2", "dog\n")], overwrite=True)
    assert NgramIndex.open(out).count("dog") == 1


def test_kill_after_manifest_leaves_no_state_after_rerun(tmp_path):
    """SIGKILL between writing manifest.json and removing .build/: the rerun of the same command
    finds the finished index and removes the state."""
    corpus = _corpus(tmp_path / "c1")
    out = tmp_path / "idx"
    _build(out, [corpus])
    state = out / ".build"
    state.mkdir()
    (state / "tokenized.json").write_text("{}")  # what the killed build left
    _build(out, [corpus])
    assert not state.exists()
    assert NgramIndex.open(out).count("cat") == 1


def test_unwritable_output_is_a_build_error(tmp_path):
    corpus = _corpus(tmp_path / "c1")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(BuildError, match="cannot write the index"):
        _build(blocker / "idx", [corpus])
    with pytest.raises(BuildError, match="is a file"):
        _build(blocker, [corpus])
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(BuildError, match="cannot write the index"):
            _build(locked / "idx", [corpus])


def test_cli_refuses_corpus_dir_without_a_traceback(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    before = _tree(corpus)
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "build", str(corpus), "-o", str(corpus), "--overwrite",
                           "--tokenizer", "bytes", "-q"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    assert "not index files" in proc.stderr and "Traceback" not in proc.stderr
    assert _tree(corpus) == before
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", "build", str(corpus), "-o", str(blocker / "idx"),
                           "--tokenizer", "bytes", "-q"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "cannot write the index" in proc.stderr and "Traceback" not in proc.stderr
