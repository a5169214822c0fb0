"""numba's on-disk cache, keyed on all kernel modules together.

numba keys a cached function on its own source file only. Our kernel modules (engine/kernels/*.py)
inline each other's functions, so after an edit to suffix.py a cached kernel of match.py
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

KERNELS_DIR = Path(__file__).resolve().parent
ENGINE_DIR = KERNELS_DIR.parent


def kernel_sources() -> list[Path]:
    return sorted(p for p in KERNELS_DIR.glob("*.py") if p.name not in ("__init__.py", "cache.py"))


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
        if ENGINE_DIR not in Path(py_file).resolve().parents:
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


# ------------------------------------------------------------------------------------- first use
# Compile times of the entry kernels on a 2-core machine with an empty cache (seconds, rounded up;
# measured with `NUMBA_CACHE_DIR=$(mktemp -d) ngram query ...`): what the notice below announces.
COMPILE_SECONDS = {"count": 10, "prob": 15, "ntd": 15, "search": 10, "warmup": 30}


def is_cached(dispatcher) -> bool:
    """Whether ``dispatcher`` is compiled in this process or numba's on-disk cache holds it compiled
    for this machine and these sources (any signature). Reads one small index file; True when unsure."""
    if dispatcher.overloads:
        return True
    try:
        from numba.core.caching import FunctionCache

        index = FunctionCache(dispatcher.py_func)._cache_file._load_index()
        magic = dispatcher.targetctx.codegen().magic_tuple()
        return any(key[1] == magic for key in index)
    except Exception:  # noqa: BLE001 - a numba internal changed: say nothing rather than fail
        return True


def compile_notice(dispatchers, what: str, seconds: int) -> str | None:
    """A line to show before running code that will compile the uncached ``dispatchers`` first, or None."""
    if all(is_cached(d) for d in dispatchers):
        return None
    return (f"compiling {what} (once per machine: later runs load them from numba's cache), "
            f"about {seconds} s on 2 cores...")
