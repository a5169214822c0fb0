"""numba's on-disk cache, keyed on all kernel modules together.

numba keys a cached function on its own source file only. Our kernel modules (engine/kernels*.py)
inline each other's functions, so after an edit to kernels.py a cached kernel of kernels_match.py
would go on running the old inlined code: with a changed search directory layout, wrong answers.
The locators below stamp every cached function of the engine package with the hash of all kernel
modules as well as of its own file. Imported by each module with cached kernels before its first
``@njit(cache=True)``.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from numba.core.caching import CacheImpl, InTreeCacheLocator, UserProvidedCacheLocator, UserWideCacheLocator

ENGINE_DIR = Path(__file__).resolve().parent


def kernel_sources() -> list[Path]:
    return sorted(ENGINE_DIR.glob("kernels*.py"))


def _kernels_stamp() -> str:
    stats = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in kernel_sources())
    return _hash_sources(stats)


@functools.lru_cache(maxsize=8)
def _hash_sources(stats) -> str:
    """sha256 over the kernel modules' contents (keyed on their mtimes and sizes, so edited files
    are read again)."""
    digest = hashlib.sha256()
    for path, _, _ in stats:
        digest.update(Path(path).name.encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


class _AllKernelSources:
    """Locator mixin for functions defined in the engine package: their stamp covers their own file
    and every kernel module."""

    @classmethod
    def from_function(cls, py_func, py_file):
        if Path(py_file).resolve().parent != ENGINE_DIR:
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return _kernels_stamp(), super().get_source_stamp()


class KernelsUserDirLocator(_AllKernelSources, UserProvidedCacheLocator):
    """NUMBA_CACHE_DIR set: cache there."""


class KernelsInTreeLocator(_AllKernelSources, InTreeCacheLocator):
    """Otherwise next to the sources (__pycache__), as numba does by default."""


class KernelsUserWideLocator(_AllKernelSources, UserWideCacheLocator):
    """Sources in a read-only place: the user's cache directory."""


def install() -> None:
    """Put the locators first in numba's list (once)."""
    ours = [KernelsUserDirLocator, KernelsInTreeLocator, KernelsUserWideLocator]
    if CacheImpl._locator_classes[: len(ours)] != ours:
        CacheImpl._locator_classes[:0] = ours


install()
