"""Loading an index into the OS page cache as 2 MiB pages: `ngram cache INDEX`.

Queries jump to random places in tokenized.* and table.*. With the usual 4 KiB pages nearly every
such read also misses the CPU's TLB and walks the page tables, which costs about as much as the
read itself. Where the kernel's page cache can hold a file in 2 MiB folios (ext4 and XFS on recent
Linux, when the file is read through a mapping advised MADV_HUGEPAGE), every process that maps the
file, with or without advice, maps those folios with 2 MiB entries, and those walks go away.

Files already cached in small pages stay small: this module drops a file's clean cached pages
first (POSIX_FADV_DONTNEED, which leaves pages another process has mapped alone) and then reads it
back through an advised mapping. Nothing is written; a kernel without the feature just ends up
with the files cached the usual way.
"""

from __future__ import annotations

import mmap
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.format import OPTIONAL_SHARD_FILES, SHARD_FILES, discover_shards, shard_path

HUGE_PAGE = 2 << 20
_SMAPS_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
_MADV_WILLNEED = 4 if sys.platform == "darwin" else 3


class PageRequests:
    """Asks the kernel to start reading the pages under byte ranges of arrays (madvise
    MADV_WILLNEED), so that reads issued together overlap instead of each page fault waiting for the
    one before (engine.kernels.disk does this inside its searches; this is for Python code that then
    reads the arrays as usual). A hint: ranges outside an array are clipped, and failures (memory not
    backed by a file, a platform without madvise) are ignored."""

    def __init__(self):
        self._madvise = None
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            self._madvise = libc.madvise
        except (OSError, AttributeError):
            pass

    def ask(self, arr: np.ndarray, start: int, nbytes: int) -> None:
        """The pages under bytes [start, start + nbytes) of ``arr``'s data."""
        start, end = max(0, int(start)), min(int(start) + int(nbytes), arr.nbytes)
        if self._madvise is None or end <= start:
            return
        address = arr.ctypes.data + start
        page = address & ~(mmap.PAGESIZE - 1)
        self._madvise(page, address + (end - start) - page, _MADV_WILLNEED)


def advise_huge_pages(buffer: mmap.mmap) -> None:
    """Ask for 2 MiB pages for a read-only file mapping: page-ins it causes come in as 2 MiB folios
    where the file system allows; a no-op where the platform lacks the advice. Not applied when an
    index opens: on an index larger than memory every random fault would then read 2 MiB."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            buffer.madvise(advice)
        except OSError:
            pass


@dataclass(frozen=True)
class CachedFile:
    path: Path
    bytes: int
    huge_bytes: int  # how much of it this process mapped with 2 MiB entries


def _pmd_mapped_bytes(name: str) -> int:
    """Bytes of this process's mappings of the file ``name`` that use 2 MiB page-table entries."""
    total, current = 0, None
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if _SMAPS_HEADER.match(line):
                current = line.rstrip("\n")
            elif current is not None and current.endswith(name) and line.startswith("FilePmdMapped:"):
                total += int(line.split()[1]) * 1024
    return total


def cache_file(path: Path) -> CachedFile:
    """Drop ``path``'s clean cached pages, then read it back through a mapping advised for 2 MiB pages."""
    size = path.stat().st_size
    if size == 0:
        return CachedFile(path, 0, 0)
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as buffer:
            advise_huge_pages(buffer)
            view = memoryview(buffer)
            for offset in range(0, size, mmap.PAGESIZE):  # one byte per page faults everything in
                view[offset]
            huge = _pmd_mapped_bytes(str(path.resolve())) if sys.platform.startswith("linux") else 0
            view.release()
    finally:
        os.close(fd)
    return CachedFile(path, size, min(huge, size))


def index_files(directory: Path) -> list[Path]:
    """The shard files of an index directory, largest first (the ones queries jump around in)."""
    directory = Path(directory)
    numbers = discover_shards(directory)  # raises a clear error for a missing or empty directory
    kinds = SHARD_FILES + OPTIONAL_SHARD_FILES + ("directory",)
    files = [shard_path(directory, kind, n) for n in numbers for kind in kinds]
    return sorted((p for p in files if p.exists()), key=lambda p: -p.stat().st_size)


def cache_index(directories, progress: bool = True) -> list[CachedFile]:
    """Load every shard file of the given index directories into the page cache (see the module doc)."""
    from tqdm import tqdm

    files = [p for d in directories for p in index_files(Path(d))]
    done = []
    with tqdm(total=sum(p.stat().st_size for p in files), unit="B", unit_scale=True, desc="caching",
              disable=not progress, file=sys.stderr) as bar:
        for path in files:
            done.append(cache_file(path))
            bar.update(done[-1].bytes)
    return done
