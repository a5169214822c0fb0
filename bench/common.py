"""Helpers shared by the benchmarks: the machine, latency statistics, markdown tables, and running a
command in a subprocess while measuring its wall time and peak memory.

Benchmarks are scripts (``python bench/bench_engine.py``) that print a markdown table and exit; they
import this module as ``bench.common`` (run from the repository root, or with it on ``sys.path``).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# The machine
# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU model, logical cores (and those this process may use), RAM, OS, Python and key packages."""
    vm = psutil.virtual_memory()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": round(vm.total / 2**30, 1),
        "available_gib": round(vm.available / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "loadavg": tuple(round(x, 1) for x in os.getloadavg()),
    }
    for name in ("numpy", "numba", "infini_gram"):
        try:
            from importlib.metadata import version

            info[name] = version(name.replace("_", "-"))
        except Exception:  # noqa: BLE001 - a missing package is just not listed
            pass
    return info


def machine_line(info: dict | None = None) -> str:
    i = info or machine_info()
    pkgs = ", ".join(f"{k} {i[k]}" for k in ("numpy", "numba", "infini_gram") if k in i)
    return (f"{i['cpu']}, {i['cores']} logical cores ({i['usable_cores']} usable), {i['ram_gib']} GiB RAM "
            f"({i['available_gib']} GiB available), {i['os']}, Python {i['python']}; {pkgs}; "
            f"load average {i['loadavg'][0]} / {i['loadavg'][1]} / {i['loadavg'][2]} at the start")


# ----------------------------------------------------------------------------------------------
# Latency
# ----------------------------------------------------------------------------------------------


@dataclass
class Latency:
    """Per-call latencies in microseconds."""

    samples_us: np.ndarray

    @property
    def p50(self) -> float:
        return float(np.percentile(self.samples_us, 50))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.samples_us, 99))

    @property
    def mean(self) -> float:
        return float(self.samples_us.mean())


def time_calls(fn: Callable, args_list: Sequence, warmup: int = 20) -> Latency:
    """Call ``fn(*args)`` once per item of ``args_list`` (after ``warmup`` untimed calls) and return
    each call's wall time. Items that are not tuples are passed as the single argument."""
    items = [a if isinstance(a, tuple) else (a,) for a in args_list]
    for a in items[:warmup]:
        fn(*a)
    out = np.empty(len(items), dtype=np.float64)
    clock = time.perf_counter_ns
    for i, a in enumerate(items):
        t0 = clock()
        fn(*a)
        out[i] = clock() - t0
    return Latency(out / 1000.0)


def time_pair(fa: Callable, fb: Callable, args_list: Sequence, warmup: int = 20,
              block: int = 100) -> tuple[Latency, Latency]:
    """Like :func:`time_calls` for two functions on the same arguments, alternating in blocks of
    ``block`` calls: the machines here are shared, and alternating makes load from other processes
    hit both alike, while whole blocks keep one engine's side effects on the CPU (infini-gram starts
    a thread per call) out of the other's timings, which alternating call by call does not."""
    items = [a if isinstance(a, tuple) else (a,) for a in args_list]
    for a in items[:warmup]:
        fa(*a)
        fb(*a)
    ta = np.empty(len(items), dtype=np.float64)
    tb = np.empty(len(items), dtype=np.float64)
    clock = time.perf_counter_ns
    for lo in range(0, len(items), block):
        for out, fn in ((ta, fa), (tb, fb)):
            for i in range(lo, min(lo + block, len(items))):
                a = items[i]
                t0 = clock()
                fn(*a)
                out[i] = clock() - t0
    return Latency(ta / 1000.0), Latency(tb / 1000.0)


def throughput(fn: Callable, n_items: int, min_seconds: float = 1.0) -> float:
    """Items per second of ``fn()`` (which processes ``n_items``), repeated for at least ``min_seconds``."""
    fn()  # warm
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return reps * n_items / elapsed


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def fmt(x, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.{max(0, digits - 1)}f}" if digits > 1 else f"{x:.0f}"
    return f"{x:.{digits}f}" if abs(x) >= 1 else f"{x:.{digits + 1}f}"


def ratio(theirs: float | None, ours: float | None) -> str:
    """How many times ``ours`` is smaller (faster) than ``theirs``, as "12.3x"."""
    if not theirs or not ours:
        return "n/a"
    return f"{theirs / ours:.1f}x"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    rows = [[fmt(c) for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Subprocesses with peak memory
# ----------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    seconds: float
    peak_rss_bytes: int  # peak of the summed RSS of the process tree, sampled
    max_single_rss_bytes: int  # the largest single process's peak (getrusage, exact)
    stdout: str
    stderr: str
    returncode: int


_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "print('__MAXRSS_KIB__', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_measured(cmd: Sequence[str], *, env: dict | None = None, cwd: str | os.PathLike | None = None,
                 interval: float = 0.02, timeout: float | None = None) -> RunResult:
    """Run ``cmd``; return its wall time and peak memory.

    ``cmd`` runs under a small Python wrapper, so that getrusage gives the exact peak RSS of the
    largest single process of this command's tree (``max_single_rss_bytes``). The peak of the sum
    over the whole tree (parallel workers add up) is sampled every ``interval`` seconds
    (``peak_rss_bytes``, never below the exact single-process peak); the wrapper itself is not counted.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, *cmd], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            total = 0
            try:
                procs = root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak = max(peak, total)
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop.set()
        sampler.join()
    seconds = time.perf_counter() - t0
    single = 0
    lines = []
    for line in err.splitlines():
        if line.startswith("__MAXRSS_KIB__"):
            single = int(line.split()[1]) * 1024
        else:
            lines.append(line)
    return RunResult(seconds, max(peak, single), single, out, "\n".join(lines), proc.returncode)


def python_env(extra_path: Iterable[str | os.PathLike] = ()) -> dict:
    """The environment for a Python subprocess that imports this repository's packages."""
    parts = [str(p) for p in extra_path] + [str(ROOT)]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(parts))


def dir_bytes(path: Path, names: Iterable[str] | None = None) -> int:
    """Total bytes of the files directly in ``path`` (only those whose name starts with one of ``names``)."""
    total = 0
    for p in Path(path).iterdir():
        if p.is_file() and (names is None or any(p.name.startswith(n) for n in names)):
            total += p.stat().st_size
    return total


def drop_into_page_cache(path: Path) -> None:
    """Load an index into the page cache the way `ngram cache` does (2 MiB pages where the kernel
    allows; every engine that maps the files then uses them), so latency runs see it cached."""
    from engine.storage.pagecache import cache_index

    files = cache_index([path], progress=False)
    huge = sum(f.huge_bytes for f in files)
    log(f"{path}: {sum(f.bytes for f in files):,} bytes in page cache, {huge:,} in 2 MiB pages")


def heldout_ids(path: str | os.PathLike, min_len: int, limit: int | None = None) -> list[np.ndarray]:
    """GPT-2 token ids of the held-out JSONL documents (``text`` field) longer than ``min_len`` tokens,
    the first ``limit`` of them (all when None)."""
    import json

    from engine.tokenizers import load_tokenizer

    tok = load_tokenizer("gpt2")
    held = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            ids = np.asarray(tok.encode(json.loads(line)["text"]), dtype=np.int64)
            if len(ids) > min_len:
                held.append(ids)
            if limit is not None and len(held) >= limit:
                break
    return held


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def write_report(text: str, out: str | os.PathLike, raw=None) -> Path:
    """Print a benchmark's markdown table and write it to ``out`` (with ``raw`` as JSON beside it)."""
    import json

    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    if raw is not None:
        out.with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str))
    return out
