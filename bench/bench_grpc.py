"""gRPC benchmark: unary Count latency, batched count throughput, router vs direct latency,
each beside the bare gRPC floor of the same shape.

    python bench/bench_grpc.py                    # synthetic corpus (~3 MB of words, bytes tokenizer)
    python bench/bench_grpc.py --index DIR1 DIR2 DIR3   # your own shards: direct = all three, router = one server each
    python bench/bench_grpc.py --calls 5000 --batch 20000

Layout: every server in its own process (as on separate hosts; no two share a GIL):
- one server holds the whole index (direct), one server per part (the shard servers);
- a router process (`python -m engine.cli.serve route SHARDMAP`) fans out to the shard servers, and
  a second router with a one-entry map in front of the direct server (one extra hop, no fan-out);
- the floors: bare gRPC echo servers (bytes in, bytes out, no protobuf), and a bare relay that
  forwards each echo to three of them in parallel (the router's shape with nothing of ours);
- this process is the client (engine.NgramClient), one thread.
Latency rows interleave their calls in blocks of 100 (echo, direct, router, ... in turn), so
that load from other processes hits every row alike; CPU per call is each process's user+system
time over the same calls (/proc). Access logging is off in the servers. Targets on the 2-core
machine over loopback: unary Count p50 <= 300 us and p99 <= 1 ms; batched counts >= 200,000
queries/s; router <= 2x direct latency. Prints a markdown table and exits.
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
    from engine.serve.server import create_server

    logging.getLogger("engine.access").setLevel(logging.WARNING)
    server, port = create_server(NgramIndex.open(paths), warmup=False)
    print(port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.wait(0.5):
        pass
    server.shutdown(0)


def _serve_bare(handle) -> None:
    """(Child process) a bare gRPC server answering /bench.Echo/Echo with ``handle(request,
    context)``, printing its port and running until SIGTERM."""
    import threading
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.unary_unary_rpc_method_handler(handle)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop(0)


def serve_echo() -> None:
    """(Child process) a bare gRPC server that echoes bytes: the floor any unary RPC pays here."""
    _serve_bare(lambda request, context: request)


def serve_relay(targets: list[str]) -> None:
    """(Child process) a bare gRPC server that forwards each echo to every target in parallel
    (the first on the handler's thread, the others on the router's fan-out threads) and answers
    the first reply: the router's shape with no protobuf, validation or merging."""
    import grpc

    from engine.serve.fanout import Fanout

    calls = [grpc.insecure_channel(t).unary_unary("/bench.Echo/Echo", _registered_method=True) for t in targets]
    pool = Fanout(8 * max(1, len(calls) - 1), "relay")

    def relay(request, context):
        tasks = [pool.submit(c, request, 30.0) for c in calls[1:]]
        first = calls[0](request, timeout=30.0)
        for t in tasks:
            t.result()
        return first

    _serve_bare(relay)


def start(cmd: list[str], what: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("GRPC_VERBOSITY", "ERROR")  # no "Got goaway" lines while the servers stop one by one
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"[bench_grpc] the {what} process exited with {proc.wait()}")
    return proc, line.strip()


# ------------------------------------------------------------------------------------------------
# Measurements


def process_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of processes so far (/proc/PID/stat; 0 where unreadable)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def interleaved(cases: dict, queries, calls: int, block: int = 100, warm: int = 200) -> dict:
    """Latencies (s) of every case's calls, and CPU seconds per call of its processes.

    ``cases``: name -> (fn(query), {group: [pids]}). The calls run in blocks of ``block``, the
    cases taking turns (in alternating order), so that a burst of load from other processes
    lands on all of them alike. CPU: this process (the client) and each group's processes.
    """
    for fn, _ in cases.values():
        for q in queries[:warm]:
            fn(q)
    names = list(cases)
    lat = {n: [] for n in names}
    cpu = {n: {"client": 0.0, **{g: 0.0 for g in cases[n][1]}} for n in names}
    for b in range(max(1, calls // block)):
        for name in names if b % 2 == 0 else names[::-1]:
            fn, groups = cases[name]
            c0 = time.process_time()
            g0 = {g: process_cpu(pids) for g, pids in groups.items()}
            out = lat[name]
            for i in range(block):
                q = queries[(b * block + i) % len(queries)]
                t0 = time.perf_counter()
                fn(q)
                out.append(time.perf_counter() - t0)
            cpu[name]["client"] += time.process_time() - c0
            for g, pids in groups.items():
                cpu[name][g] += process_cpu(pids) - g0[g]
    return {n: (np.array(lat[n]), {g: v / len(lat[n]) for g, v in cpu[n].items()}) for n in names}


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
    ap.add_argument("--_relay", nargs="+", dest="relay", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.echo:
        serve_echo()
        return 0
    if args.relay:
        serve_relay(args.relay)
        return 0
    if args.serve:
        serve_one(args.serve)
        return 0

    from engine import NgramIndex
    from engine.serve.client import NgramClient

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
            ports[name] = (int(line), proc.pid)
        print(f"[bench_grpc] servers up in {time.perf_counter() - t0:.1f}s: {ports}", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix="bench_grpc_"))
        routers = {}
        for name, members in (("router", [f"part{i}" for i in range(len(paths))]), ("hop", ["direct"])):
            shard_map = tmp / f"{name}.json"
            shard_map.write_text(json.dumps(
                {"shards": [{"name": m, "target": f"127.0.0.1:{ports[m][0]}"} for m in members]}))
            proc, line = start(
                [sys.executable, "-m", "engine.cli.serve", "route", str(shard_map), "--port", "0",
                 "--no-access-log", "--log-level", "WARNING"], name)
            procs.append(proc)
            routers[name] = (line.split()[-1], proc.pid)

        echo_ports = []
        for i in range(len(paths)):
            proc, line = start([sys.executable, __file__, "--_echo"], "echo")
            procs.append(proc)
            echo_ports.append((int(line), proc.pid))
        relay_proc, line = start([sys.executable, __file__, "--_relay",
                                  *[f"127.0.0.1:{port}" for port, _ in echo_ports]], "relay")
        procs.append(relay_proc)
        relay_port = int(line)

        import grpc

        direct = NgramClient(f"127.0.0.1:{ports['direct'][0]}")
        routed = NgramClient(routers["router"][0])
        hop = NgramClient(routers["hop"][0])
        for q in queries[:50]:
            assert direct.count(q) == routed.count(q) == hop.count(q) == index.count(q)
        # compile the batch kernels in every server before timing
        assert np.array_equal(direct.count_batch(queries[:100], timeout=900), routed.count_batch(queries[:100], timeout=900))
        channels = [grpc.insecure_channel(f"127.0.0.1:{echo_ports[0][0]}"), grpc.insecure_channel(f"127.0.0.1:{relay_port}")]
        echo, relay = (ch.unary_unary("/bench.Echo/Echo", _registered_method=True) for ch in channels)
        payload = b"\x0a\x05\x0a\x03\x74\x68\x65"  # the size of a small CountRequest

        part_pids = [ports[f"part{i}"][1] for i in range(len(paths))]
        echo_pids = [pid for _, pid in echo_ports]
        res = interleaved({
            "echo": (lambda q: echo(payload, timeout=30), {"server": [echo_ports[0][1]]}),
            "direct": (direct.count, {"server": [ports["direct"][1]]}),
            "relay": (lambda q: relay(payload, timeout=30), {"server": [relay_proc.pid], "shards": echo_pids}),
            "router": (routed.count, {"server": [routers["router"][1]], "shards": part_pids}),
            "hop": (hop.count, {"server": [routers["hop"][1]], "shards": [ports["direct"][1]]}),
        }, queries, args.calls)
        p = lambda name, q: float(np.percentile(res[name][0], q)) * 1e6  # noqa: E731

        def cpu(name: str) -> str:
            c = res[name][1]
            return " / ".join(f"{c[g] * 1e6:.0f}" for g in ("client", "server", "shards") if g in c)

        rows = []
        e50, e99, d50, d99 = p("echo", 50), p("echo", 99), p("direct", 50), p("direct", 99)
        rows.append(("bare gRPC echo p50 / p99 (the floor of one call here)", f"{e50:.0f} / {e99:.0f} us", "", None))
        rows.append(("unary Count p50 (direct)", f"{d50:.0f} us", "<= 300 us", d50 <= 300))
        rows.append(("unary Count p99 (direct)", f"{d99:.0f} us", "<= 1000 us", d99 <= 1000))
        rows.append(("  ours above the echo, p50 (protobuf, servicer, engine, client)", f"{d50 - e50:.0f} us", "", None))
        rows.append(("  CPU per call, client / server: echo", f"{cpu('echo')} us", "", None))
        rows.append(("  CPU per call, client / server: Count (direct)", f"{cpu('direct')} us", "", None))
        qps_direct = throughput(direct, queries, args.batch, args.rounds)
        rows.append((f"batched counts/s (direct, {args.batch}/request)", f"{qps_direct:,.0f}", ">= 200,000",
                     qps_direct >= 200_000))
        r50, r99, l50, h50 = p("router", 50), p("router", 99), p("relay", 50), p("hop", 50)
        rows.append((f"bare gRPC relay to {len(paths)} echo servers p50 / p99 (the floor of a routed call)",
                     f"{l50:.0f} / {p('relay', 99):.0f} us", "", None))
        rows.append((f"unary Count p50 / p99 (router, {len(paths)} shard servers)", f"{r50:.0f} / {r99:.0f} us", "", None))
        rows.append(("router / direct latency (p50)", f"{r50 / d50:.2f}x", "<= 2x", r50 / d50 <= 2.0))
        rows.append(("  the same ratio for bare gRPC: relay / echo (p50)", f"{l50 / e50:.2f}x", "", None))
        rows.append(("  ours above the relay, p50", f"{r50 - l50:.0f} us", "", None))
        rows.append(("  CPU per call, client / relay / echo servers", f"{cpu('relay')} us", "", None))
        rows.append(("  CPU per call, client / router / shard servers", f"{cpu('router')} us", "", None))
        rows.append(("router over one shard server (the direct one): p50, / direct", f"{h50:.0f} us, {h50 / d50:.2f}x", "", None))
        qps_router = throughput(routed, queries, args.batch, max(2, args.rounds // 2))
        rows.append((f"batched counts/s (router, {args.batch}/request)", f"{qps_router:,.0f}", "", None))
        for c in (direct, routed, hop, *channels):
            c.close()

        info = index.info()
        print(f"\n### gRPC benchmark ({info['num_tokens']:,} tokens, {info['num_docs']:,} documents, "
              f"{info['num_shards']} shards; loopback)\n")
        print(f"Machine: {machine()}; grpcio {grpc.__version__}; load average at the end {os.getloadavg()[0]:.1f} "
              f"(at the start {load0:.1f})\n")
        print("| measure | value | target | met |")
        print("|---|---:|---:|:---:|")
        for name, value, target, ok in rows:
            print(f"| {name} | {value} | {target} | {'' if ok is None else ('yes' if ok else 'NO')} |")
        print(f"\n{args.calls} unary calls per latency row (1-3 word queries), interleaved in blocks of 100; "
              f"{args.rounds} x {args.batch}-query CountBatch requests per throughput row; one client thread; "
              "access logs off. CPU per call: user + system time of each process over the same calls.")
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
