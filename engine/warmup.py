"""Compiling every query kernel before a server reports SERVING.

With numba's cache already filled (every run after the first on a machine) a server only loads the
compiled kernels: under a second. With an empty cache, compiling them takes about 34 s on one core
of the 2-core machine, almost all of it LLVM optimizing each entry kernel's module; the kernels are
independent, so they compile in worker processes at once (one per core, at most one per group
below), each writing numba's cache, and this process then loads them (measured 25 s in all).

    python -m engine.warmup GROUP < pickled NgramIndex     # the worker (engine/warmup.py runs it)
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import time

from engine.index import NGRAM_PROBES, QUERY_PROBES, NgramIndex

log = logging.getLogger("engine.warmup")

# The index's probe calls in two groups of about equal compile time with an empty cache on 2 cores
# (about 21 s and 25 s): group 0 holds the calls of these methods, group 1 the rest.
_GROUP_0 = frozenset({"count", "find", "ntd", "count_batch", "longest_matches", "_on_disk_probe"})
GROUPS: tuple[tuple[tuple[str, tuple, dict], ...], ...] = tuple(
    tuple(call for call in QUERY_PROBES + NGRAM_PROBES if (call[0] in _GROUP_0) == (g == 0)) for g in (0, 1))


def run_group(index, group: int) -> None:
    index.probe(GROUPS[group])


def kernels_cached() -> bool:
    """Whether numba's cache (or this process) already holds the entry kernels compiled."""
    from engine.kernels.cache import is_cached
    from engine.kernels.disk import find_ranges_on_disk, sample_next_keys_on_disk
    from engine.kernels.suffix import query_kernels

    return all(is_cached(k) for k in (*query_kernels(), find_ranges_on_disk, sample_next_keys_on_disk))


def compile_in_workers(index, workers: int | None = None, timeout: float = 600.0) -> bool:
    """With an empty numba cache and several cores, compile the kernels of ``index`` in worker
    processes at once (they fill the cache that this process then loads); True when they ran.
    Nothing happens when the cache is warm, on one core, or for a backend that is no NgramIndex.
    A worker that fails only costs time: this process compiles what is still missing itself."""
    workers = min(len(GROUPS), workers or os.cpu_count() or 1)
    if not isinstance(index, NgramIndex) or workers < 2 or kernels_cached():
        return False
    t0 = time.perf_counter()
    payload = pickle.dumps(index)
    groups = [list(range(len(GROUPS)))[i::workers] for i in range(workers)]
    procs = []
    for part in groups:
        p = subprocess.Popen([sys.executable, "-m", "engine.warmup", *map(str, part)], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        p.stdin.write(payload)
        p.stdin.close()
        procs.append(p)
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.returncode != 0:
            err = p.stderr.read().decode(errors="replace").strip().splitlines()
            log.warning("a kernel-compiling worker failed (%s); compiling here instead", err[-1] if err else p.returncode)
        p.stderr.close()
    log.info("kernels compiled in %d processes in %.1fs", len(procs), time.perf_counter() - t0)
    return True


def main(argv: list[str]) -> int:
    index = pickle.loads(sys.stdin.buffer.read())
    for group in map(int, argv):
        run_group(index, group)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
