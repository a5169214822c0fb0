"""Admission control for the gRPC server: a bounded pool for expensive calls and a memory budget.

The servicer (engine.serve.servicer) decides, before doing a call's work, what the call will cost:
response bytes and working memory, estimated from what the engine knows cheaply (suffix-array
range sizes, the vocabulary, the request's own limits). Static limits (the message size, the
number of distinct tokens) are checked there; this module holds what is shared between calls:

- **Expensive calls share ``heavy_slots``** (attribution, CNF, frequent n-grams, big batches): at
  most that many run at once and at most ``max_waiting`` wait for a slot, so that the server's
  worker threads never all belong to expensive work and cheap calls (Count) keep flowing. A call
  beyond that is refused with RESOURCE_EXHAUSTED; a waiting call stops waiting at its deadline,
  when its client leaves or when the server shuts down.
- **A memory budget** (``max_memory``, bytes of private memory: the process's resident memory
  that is not file-backed; the index's mapped files are page cache the kernel can reclaim): each
  call reserves its estimate before working, and a call that would take the server over the
  budget is refused with RESOURCE_EXHAUSTED. The budget for calls is ``max_memory`` minus what
  the server uses at rest (measured once it is warmed up, ``set_baseline``); admission also looks
  at the memory actually in use, so estimates that run short are caught by the next call.
- **A shutdown flag** that every long operation's stop check reads, so that SIGTERM ends work that
  is running, not only calls that have yet to start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from typing import Callable

from engine.errors import LimitExceededError

__all__ = ["Admission", "Ticket", "private_memory", "default_heavy_slots"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def private_memory() -> int | None:
    """Resident bytes of this process that are not file-backed (anonymous + dirty private pages),
    from /proc/self/statm (resident - shared); None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            fields = fh.read().split()
        return (int(fields[1]) - int(fields[2])) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def resident_memory() -> int | None:
    """Resident bytes of this process (VmRSS), or None where there is no /proc."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def default_heavy_slots() -> int:
    """Expensive calls at once: half the cores (at least one), so the other half answers cheap calls."""
    return max(1, (os.cpu_count() or 1) // 2)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


_libc = None


def _trim() -> None:
    """Give freed heap memory back to the kernel (glibc keeps it otherwise, and the next admission
    would count it as in use). Best effort: nothing happens off glibc."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


class Admission:
    """Shared admission state of one server (see the module docstring)."""

    #: a released reservation at least this large trims the heap (malloc_trim costs ~ms)
    TRIM_BYTES = 64 << 20

    def __init__(self, *, max_memory: int | None = None, heavy_slots: int | None = None,
                 max_waiting: int | None = None):
        if max_memory is not None and max_memory <= 0:
            raise ValueError(f"max_memory must be positive (bytes), got {max_memory}")
        self.max_memory = None if max_memory is None else int(max_memory)
        self.heavy_slots = default_heavy_slots() if heavy_slots is None else int(heavy_slots)
        if self.heavy_slots < 1:
            raise ValueError(f"heavy_slots must be at least 1, got {self.heavy_slots}")
        self.max_waiting = 4 * self.heavy_slots if max_waiting is None else max(0, int(max_waiting))
        self.baseline = 0  # private memory at rest, set when the server starts serving
        self.shutdown = threading.Event()
        self._cond = threading.Condition(threading.Lock())
        self.running = 0  # expensive calls holding a slot
        self.waiting = 0
        self.reserved = 0  # bytes reserved by calls in flight
        # Counters for tests and the benchmark.
        self.refused = 0
        self.admitted = 0
        self.finished = 0
        self.last_finished_at: float | None = None  # time.monotonic() when a heavy call last left

    # -- configuration -------------------------------------------------------------------------

    def set_baseline(self) -> None:
        """Measure the memory the server uses at rest; refuse a budget that leaves nothing for calls."""
        now = private_memory()
        self.baseline = now or 0
        if self.max_memory is not None and now is not None and self.budget < (32 << 20):
            raise ValueError(
                f"--max-memory {_mib(self.max_memory)} leaves {_mib(max(0, self.budget))} for calls: the server "
                f"already uses {_mib(now)} at rest (index structures, compiled kernels); raise it")

    @property
    def budget(self) -> int | None:
        """Bytes that calls may reserve together (None: no budget)."""
        return None if self.max_memory is None else self.max_memory - self.baseline

    def check_fits(self, nbytes: int, what: str, hint: str) -> None:
        """Refuse up front a call that alone would need more than the whole budget."""
        budget = self.budget
        if budget is not None and nbytes > budget:
            self.refused += 1
            raise LimitExceededError(
                f"{what} needs about {_mib(nbytes)} of server memory, more than the {_mib(max(0, budget))} its "
                f"--max-memory={_mib(self.max_memory)} leaves for calls; {hint}")

    # -- calls ---------------------------------------------------------------------------------

    def call(self, what: str, check: Callable[[], None], *, heavy: bool) -> "Ticket":
        return Ticket(self, what, check, heavy)

    def _acquire(self, what: str, check: Callable[[], None]) -> None:
        with self._cond:
            if self.running >= self.heavy_slots and self.waiting >= self.max_waiting:
                self.refused += 1
                raise LimitExceededError(
                    f"{what}: the server is running its {self.heavy_slots} expensive calls at once (attribution, "
                    f"CNF, frequent n-grams, big batches) and {self.waiting} more are waiting; retry later with "
                    f"backoff, or ask the operator to raise --heavy-workers")
            self.waiting += 1
            try:
                while self.running >= self.heavy_slots:
                    # Wake up now and then to notice a deadline, a client gone or a shutdown.
                    self._cond.wait(0.02)
                    if self.running >= self.heavy_slots:
                        self._cond.release()
                        try:
                            check()
                        finally:
                            self._cond.acquire()
                self.running += 1
                self.admitted += 1
            finally:
                self.waiting -= 1

    def _release_slot(self) -> None:
        with self._cond:
            self.running -= 1
            self.finished += 1
            self.last_finished_at = time.monotonic()
            self._cond.notify()

    def _reserve(self, nbytes: int, what: str, hint: str) -> None:
        with self._cond:
            budget = self.budget
            if budget is not None:
                self.check_fits(nbytes, what, hint)
                in_use = private_memory()
                over_reserved = self.reserved + nbytes > budget
                over_actual = in_use is not None and in_use + nbytes > self.max_memory
                if over_reserved or over_actual:
                    self.refused += 1
                    raise LimitExceededError(
                        f"{what} needs about {_mib(nbytes)} of server memory and the server's --max-memory="
                        f"{_mib(self.max_memory)} is taken by other calls ({_mib(self.reserved)} reserved, "
                        f"{_mib(in_use or 0)} in use); retry later, or {hint}")
            self.reserved += nbytes

    def _unreserve(self, nbytes: int) -> None:
        with self._cond:
            self.reserved -= nbytes
        if nbytes >= self.TRIM_BYTES:
            _trim()


class Ticket:
    """One call's admission: ``with admission.call(...) as t:`` takes a slot for an expensive call
    (waiting, while ``check`` allows it), ``t.reserve(bytes, ...)`` reserves memory; leaving the
    block gives both back."""

    __slots__ = ("admission", "what", "check", "heavy", "held", "_slot")

    def __init__(self, admission: Admission, what: str, check: Callable[[], None], heavy: bool):
        self.admission, self.what, self.check, self.heavy = admission, what, check, heavy
        self.held = 0
        self._slot = False

    def __enter__(self) -> "Ticket":
        self.check()
        if self.heavy:
            self.admission._acquire(self.what, self.check)
            self._slot = True
        return self

    def reserve(self, nbytes: int, hint: str) -> None:
        """Reserve ``nbytes`` more for this call, or raise LimitExceededError (with ``hint``: how to
        ask for less)."""
        nbytes = int(nbytes)
        if nbytes <= 0:
            return
        self.admission._reserve(nbytes, self.what, hint)
        self.held += nbytes

    def __exit__(self, *exc) -> None:
        if self.held:
            self.admission._unreserve(self.held)
            self.held = 0
        if self._slot:
            self._slot = False
            self.admission._release_slot()
