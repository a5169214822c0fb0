"""HTTP/JSON benchmark: /v1/count latency beside gRPC Count on the same server, and batched JSON
throughput (/v1/count_batch) beside gRPC CountBatch.

    python bench/bench_http.py                     # synthetic corpus (bench_grpc's, ~3 MB, bytes tokenizer)
    python bench/bench_http.py --index DIR --calls 5000 --batch 10000

One server process (`python -m engine.cli.serve INDEX --port 0 --http-port 0 --no-access-log`)
answers both transports from one servicer; this process is the client, one thread: NgramClient for
gRPC, one keep-alive http.client connection for HTTP (the body built and the answer decoded with
the json module, as a Python user would). The two latency rows alternate in blocks of 100 calls on
the same queries (bench/common.py time_pair). Target on the 2-core machine over loopback: HTTP count
p50 at most 2x the gRPC Count p50 of the same run. Prints a markdown table and writes
bench/results/http.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.bench_grpc import synthetic_parts  # noqa: E402
from bench.common import fmt, log, machine_line, markdown_table, throughput, time_pair, write_report  # noqa: E402


def start_server(paths: list[str]) -> tuple[subprocess.Popen, str, int]:
    """The server process; (process, gRPC target, HTTP port) once it reports SERVING."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GRPC_VERBOSITY="ERROR")
    cmd = [sys.executable, "-m", "engine.cli.serve", *paths, "--port", "0", "--http-port", "0", "--no-access-log",
           "--log-level", "WARNING", "--grace", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    http_port = None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"[bench_http] the server exited with {proc.wait()}")
        if line.startswith("http on "):
            http_port = int(line.rsplit(":", 1)[1])
        elif line.startswith("listening on "):
            return proc, line.split()[-1], http_port


class JsonClient:
    """POST JSON on one keep-alive connection; the decoded answer."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json"}

    def post(self, path: str, body: dict):
        self.conn.request("POST", path, json.dumps(body), self.headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {data[:300]!r}")
        return json.loads(data)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", nargs="+", help="index directories served as one (default: bench_grpc's synthetic corpus)")
    ap.add_argument("--bytes", type=int, default=3_000_000, help="synthetic corpus size in bytes")
    ap.add_argument("--calls", type=int, default=3000, help="unary calls per transport")
    ap.add_argument("--batch", type=int, default=10_000, help="queries per batch request")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "http.md"))
    args = ap.parse_args(argv)

    from engine import NgramIndex
    from engine.serve.client import NgramClient

    paths = [str(p) for p in (args.index or synthetic_parts(args.bytes))]
    index = NgramIndex.open(paths)
    rng = np.random.default_rng(0)
    # n-grams of 1..5 tokens from random corpus positions (present, with counts from 1 to millions)
    data = np.frombuffer(bytes(index.shards[0].tokenized), dtype=f"<u{index.token_width}")
    sep = (1 << (8 * index.token_width)) - 1
    queries = []
    while len(queries) < max(args.calls, args.batch):
        p, n = int(rng.integers(0, len(data) - 8)), int(rng.integers(1, 6))
        q = data[p:p + n].astype(np.int64)
        if not (q == sep).any():
            queries.append(q)

    proc, target, http_port = start_server(paths)
    try:
        web = JsonClient(http_port)
        with NgramClient(target) as grpc_client:
            for q in queries[:50]:  # the same answers on both transports
                assert web.post("/v1/count", {"query": {"token_ids": {"ids": q.tolist()}}})["count"] == \
                       grpc_client.count(q) == index.count(q)
            calls = queries[:args.calls]
            lists = [q.tolist() for q in calls]

            def http_count(i):
                return web.post("/v1/count", {"query": {"token_ids": {"ids": lists[i]}}})["count"]

            def grpc_count(i):
                return grpc_client.count(calls[i])

            log(f"timing {len(calls)} Count calls per transport")
            t_grpc, t_http = time_pair(grpc_count, http_count, list(range(len(calls))), warmup=200)

            def http_ig(i):
                return web.post("/", {"query_type": "count", "query_ids": lists[i]})["count"]

            t_ig, _ = time_pair(http_ig, grpc_count, list(range(min(1000, len(calls)))), warmup=100)

            batch = queries[:args.batch]
            flat = np.concatenate(batch).tolist()
            offsets = np.concatenate([[0], np.cumsum([len(q) for q in batch])]).tolist()
            body = {"queries": {"packed": {"token_ids": flat, "offsets": offsets}}}
            want = index.count_batch(batch)
            assert web.post("/v1/count_batch", body)["counts"] == want.tolist()
            log(f"timing batches of {len(batch)} queries")
            qps_http = throughput(lambda: web.post("/v1/count_batch", body), len(batch), min_seconds=2.0)
            qps_grpc = throughput(lambda: grpc_client.count_batch(batch), len(batch), min_seconds=2.0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    ratio = t_http.p50 / t_grpc.p50
    rows = [
        ["gRPC Count (NgramClient)", fmt(t_grpc.p50), fmt(t_grpc.p99), "1.00x", ""],
        ["HTTP POST /v1/count (JSON)", fmt(t_http.p50), fmt(t_http.p99), f"{ratio:.2f}x",
         "target <= 2x: " + ("met" if ratio <= 2 else "NOT met")],
        ["HTTP POST / count (infini-gram's API)", fmt(t_ig.p50), fmt(t_ig.p99), f"{t_ig.p50 / t_grpc.p50:.2f}x", ""],
    ]
    table = markdown_table(["unary count, one client thread", "p50 us", "p99 us", "vs gRPC p50", ""], rows)
    brows = [
        [f"gRPC CountBatch, {len(batch):,} queries (packed int64)", f"{qps_grpc:,.0f}"],
        [f"HTTP POST /v1/count_batch, {len(batch):,} queries (JSON arrays)", f"{qps_http:,.0f}"],
    ]
    btable = markdown_table(["batched counts", "queries/s"], brows)
    text = (f"## HTTP/JSON vs gRPC on one server (`bench/bench_http.py`)\n\n{machine_line()}\n\n"
            f"Index: {index.num_tokens:,} tokens in {index.num_shards} shard(s); {len(calls)} calls per transport, "
            f"alternating in blocks of 100.\n\n{table}\n\n{btable}\n")
    raw = {"grpc_us": t_grpc.samples_us.tolist(), "http_us": t_http.samples_us.tolist(),
           "infinigram_route_us": t_ig.samples_us.tolist(), "qps_http": qps_http, "qps_grpc": qps_grpc,
           "batch": len(batch), "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_report(text, args.out, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
