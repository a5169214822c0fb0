"""gRPC benchmark: unary Count latency, batched count throughput, router vs direct latency.

    python bench/bench_grpc.py                    # synthetic corpus (~3 MB of words, bytes tokenizer)
    python bench/bench_grpc.py --index DIR1 DIR2 DIR3   # your own shards: direct = all three, router = one server each
    python bench/bench_grpc.py --calls 5000 --batch 20000

Layout: every server in its own process (as on separate hosts; no two share a GIL):
- one server holds the whole index (direct), one server per part (the shard servers);
- a router process (`python -m engine.cli_serve --shard-map ...`) fans out to the shard servers;
- this process is the client (engine.NgramClient), one thread.
Access logging is off in the servers. Targets on the 2-core machine over loopback: unary Count
p50 <= 300 us and p99 <= 1 ms; batched counts >= 200,000 queries/s; router <= 2x direct latency.
Prints a markdown table and exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

WORDS = ("the of and to in a is that for it as was with be by on not he i this are or his from at which "
         "but have an they you were her she there one all we their been has would when who will more no "
         "if out so said what up its about into than them can only other new some could time these two "
         "may then do first any my now such like our over man me even most made after also did many").split()


def cache_root() -> Path:
    return Path(os.environ.get("NGRAM_CACHE") or Path.home() / ".cache" / "ngram-engine") / "bench_grpc"


def synthetic_parts(n_bytes: int, seed: int = 0) -> list[Path]:
    """Three index directories of random word documents (built once, then reused)."""
    from engine import build_index

    root = cache_root() / f"synthetic-{n_bytes}-{seed}"
    paths = [root / f"part{i}" for i in range(3)]
    if all((p / "manifest.json").exists() for p in paths):
        return paths
    rng = np.random.default_rng(seed)
    # Zipf-ish word frequencies, documents of 20..400 words.
    weights = 1.0 / np.arange(1, len(WORDS) + 1)
    weights /= weights.sum()
    for i, path in enumerate(paths):
        docs, size = [], 0
        while size < n_bytes // 3:
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(20, 400)), p=weights))
            docs.append(text)
            size += len(text) + 1
        t0 = time.perf_counter()
        build_index(path, documents=docs, tokenizer="bytes", workers=1, overwrite=True)
        print(f"[bench_grpc] built {path} ({size} bytes) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return paths


# ------------------------------------------------------------------------------------------------
# Server processes


def serve_one(paths: list[str]) -> None:
    """(Child process) serve one index (all of ``paths``) on a free port; print it; wait for SIGTERM.

    No warmup: the benchmark warms each path with calls of its own before timing, and only the
    count kernels are used (compiling every kernel in four processes on two cores takes minutes).
    """
    import logging
    import threading

    from engine import NgramIndex
    from engine.server import create_server

    logging.getLogger("engine.access").setLevel(logging.WARNING)
    server, port = create_server(NgramIndex.open(paths), warmup=False)
    print(port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.wait(0.5):
        pass
    server.shutdown(0)


def serve_echo() -> None:
    """(Child process) a bare gRPC server that echoes bytes: the floor any unary RPC pays here."""
    import threading
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop(0)


def start(cmd: list[str], what: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"[bench_grpc] the {what} process exited with {proc.wait()}")
    return proc, line.strip()


# ------------------------------------------------------------------------------------------------
# Measurements


def latencies(fn, queries, calls: int, warm: int = 200) -> np.ndarray:
    for q in queries[:warm]:
        fn(q)
    out = np.empty(calls)
    for i in range(calls):
        q = queries[i % len(queries)]
        t0 = time.perf_counter()
        fn(q)
        out[i] = time.perf_counter() - t0
    return out


def throughput(client, queries, batch: int, rounds: int) -> float:
    from engine.results import PackedQueries

    packed = [PackedQueries.from_list(queries[i * batch : (i + 1) * batch]) for i in range(rounds)]
    client.count_batch(packed[0])
    t0 = time.perf_counter()
    n = 0
    for p in packed:
        n += len(client.count_batch(p))
    return n / (time.perf_counter() - t0)


def make_queries(index, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 4))
        out.append(index.tokenize(" ".join(rng.choice(WORDS[:60], size=k))))
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", nargs="+", help="index directories (default: a synthetic corpus in 3 parts)")
    ap.add_argument("--bytes", type=int, default=3_000_000, help="synthetic corpus size in bytes")
    ap.add_argument("--calls", type=int, default=3000, help="unary calls per latency measurement")
    ap.add_argument("--batch", type=int, default=10_000, help="queries per CountBatch request")
    ap.add_argument("--rounds", type=int, default=20, help="CountBatch requests per throughput measurement")
    ap.add_argument("--_serve", nargs="+", dest="serve", help=argparse.SUPPRESS)
    ap.add_argument("--_echo", action="store_true", dest="echo", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.echo:
        serve_echo()
        return 0
    if args.serve:
        serve_one(args.serve)
        return 0

    from engine import NgramIndex
    from engine.client import NgramClient

    load0 = os.getloadavg()[0]
    paths = [str(p) for p in (args.index or synthetic_parts(args.bytes))]
    index = NgramIndex.open(paths)
    queries = make_queries(index, max(args.calls, args.batch * args.rounds), seed=1)

    procs = []
    try:
        t0 = time.perf_counter()
        ports = {}
        for name, serve_paths in [("direct", paths)] + [(f"part{i}", [p]) for i, p in enumerate(paths)]:
            proc, line = start([sys.executable, __file__, "--_serve", *serve_paths], name)
            procs.append(proc)
            ports[name] = int(line)
        print(f"[bench_grpc] servers up in {time.perf_counter() - t0:.1f}s: {ports}", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix="bench_grpc_"))
        shard_map = tmp / "shards.json"
        shard_map.write_text(json.dumps(
            {"shards": [{"name": f"part{i}", "target": f"127.0.0.1:{ports[f'part{i}']}"} for i in range(len(paths))]}
        ))
        router_proc, line = start(
            [sys.executable, "-m", "engine.cli_serve", "--shard-map", str(shard_map), "--port", "0",
             "--no-access-log", "--log-level", "WARNING"], "router")
        procs.append(router_proc)
        router_target = line.split()[-1]

        direct = NgramClient(f"127.0.0.1:{ports['direct']}")
        routed = NgramClient(router_target)
        for q in queries[:50]:
            assert direct.count(q) == routed.count(q) == index.count(q)
        # compile the batch kernels in every server before timing
        assert np.array_equal(direct.count_batch(queries[:100], timeout=900), routed.count_batch(queries[:100], timeout=900))

        import grpc

        echo_proc, line = start([sys.executable, __file__, "--_echo"], "echo")
        procs.append(echo_proc)
        echo_channel = grpc.insecure_channel(f"127.0.0.1:{int(line)}")
        echo = echo_channel.unary_unary("/bench.Echo/Echo")
        payload = b"\x0a\x05\x0a\x03\x74\x68\x65"  # the size of a small CountRequest

        rows = []
        lat_echo = latencies(lambda q: echo(payload), queries, args.calls)
        lat_direct = latencies(direct.count, queries, args.calls)
        lat_router = latencies(routed.count, queries, args.calls)
        p = lambda a, q: float(np.percentile(a, q)) * 1e6  # noqa: E731
        d50, d99, r50, r99 = p(lat_direct, 50), p(lat_direct, 99), p(lat_router, 50), p(lat_router, 99)
        e50, e99 = p(lat_echo, 50), p(lat_echo, 99)
        rows.append(("bare gRPC echo p50 / p99 (the floor on this machine)", f"{e50:.0f} / {e99:.0f} us", "", None))
        rows.append(("unary Count p50 (direct)", f"{d50:.0f} us", "<= 300 us", d50 <= 300))
        rows.append(("unary Count p99 (direct)", f"{d99:.0f} us", "<= 1000 us", d99 <= 1000))
        qps_direct = throughput(direct, queries, args.batch, args.rounds)
        rows.append((f"batched counts/s (direct, {args.batch}/request)", f"{qps_direct:,.0f}", ">= 200,000",
                     qps_direct >= 200_000))
        rows.append(("unary Count p50 (router, 3 shard servers)", f"{r50:.0f} us", "", None))
        rows.append(("unary Count p99 (router)", f"{r99:.0f} us", "", None))
        ratio = r50 / d50
        rows.append(("router / direct latency (p50)", f"{ratio:.2f}x", "<= 2x", ratio <= 2.0))
        qps_router = throughput(routed, queries, args.batch, max(2, args.rounds // 2))
        rows.append((f"batched counts/s (router, {args.batch}/request)", f"{qps_router:,.0f}", "", None))
        for c in (direct, routed, echo_channel):
            c.close()

        info = index.info()
        print(f"\n### gRPC benchmark ({info['num_tokens']:,} tokens, {info['num_docs']:,} documents, "
              f"{info['num_shards']} shards; loopback)\n")
        print(f"Machine: {machine()}; load average at the end {os.getloadavg()[0]:.1f} "
              f"(at the start {load0:.1f})\n")
        print("| measure | value | target | met |")
        print("|---|---:|---:|:---:|")
        for name, value, target, ok in rows:
            print(f"| {name} | {value} | {target} | {'' if ok is None else ('yes' if ok else 'NO')} |")
        print(f"\n{args.calls} unary calls per latency row (1-3 word queries), {args.rounds} x {args.batch}-query "
              "CountBatch requests per throughput row; one client thread; access logs off.")
        return 0
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
