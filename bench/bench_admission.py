"""Admission control under load (issue 15): cheap calls keep flowing while 8 clients send the most
expensive requests the server's limits allow; the server stays under --max-memory; SIGTERM with work
running exits within the grace period + 1 s.

    python bench/bench_admission.py                       # indexes/demo (built from cached corpora if missing)
    python bench/bench_admission.py --index DIR --duration 30 --max-memory 1G --grace 5

What it does:

1. Starts `ngram serve INDEX --port 0 --max-memory M --grace G` (loopback) in a subprocess and samples
   its resident and private (non-file-backed) memory every 10 ms until it exits.
2. Calibrates, against the running server, the most expensive requests it admits (halving until the
   answer is not RESOURCE_EXHAUSTED): Attribute of 1,024 ids (a shuffled document: many short spans)
   with min_len=1, max_docs=1000 and the largest max_disp_len admitted; NextTokenDistributionBatch of
   the most copies of the most frequent token the limits admit (exact, no max_support); CountCnf of
   two big OR-clauses of frequent tokens at the server's max_clause_freq.
3. Runs 8 client processes sending those (3 Attribute, 3 NTD batch, 2 CNF; --heavy-deadline 10 s
   each, which the full Attribute exceeds: the deadline stops it; a refusal as busy is retried after
   50 ms, as a client would back off) and a 9th process sending Counts of
   n-grams drawn from the index one after the other; records every Count's latency and checks every
   answer against NgramIndex in process (answers computed before the run).
4. After --duration seconds, with expensive calls running, sends SIGTERM and times the exit.

Prints a small table and writes it to bench/results/admission.md (raw figures in admission.json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import machine_info  # noqa: E402

OUT = ROOT / "bench" / "results" / "admission.md"
_PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------------
# The server process and its memory


def start_server(index: Path, max_memory: str, grace: float, extra: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "engine.cli.serve", str(index), "--port", "0", "--max-memory", max_memory,
           "--grace", str(grace), "--no-access-log", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}\n{proc.stderr.read()}")
    return proc, line.split()[-1]


class MemorySampler(threading.Thread):
    """Peak resident and private (resident - shared) bytes of a process, from /proc/PID/statm."""

    def __init__(self, pid: int, interval: float = 0.01):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_private = 0
        self.rest_private = None
        self.stop = threading.Event()

    def sample(self) -> tuple[int, int] | None:
        try:
            with open(f"/proc/{self.pid}/statm", "rb") as fh:
                f = fh.read().split()
            return int(f[1]) * _PAGE, (int(f[1]) - int(f[2])) * _PAGE
        except (OSError, IndexError, ValueError):
            return None

    def run(self) -> None:
        while not self.stop.is_set():
            s = self.sample()
            if s is None:
                return
            self.peak_rss = max(self.peak_rss, s[0])
            self.peak_private = max(self.peak_private, s[1])
            time.sleep(self.interval)


# ------------------------------------------------------------------------------------------------
# Requests


def _code(exc) -> str:
    import grpc

    return exc.code().name if isinstance(exc, grpc.RpcError) else type(exc).__name__


def attribute_request(ids, disp: int):
    from engine._proto.ngram.v1 import ngram_pb2 as pb

    return pb.AttributeRequest(text=pb.Query(token_ids=pb.TokenIds(ids=[int(i) for i in ids])), min_len=1,
                               max_docs=1000, max_disp_len=disp)


def ntd_batch_request(prompt, n: int):
    from engine._proto.ngram.v1 import ngram_pb2 as pb

    prompt = np.asarray(prompt, dtype="<i8")
    packed = pb.PackedTokenIds(token_ids=np.tile(prompt, n).tobytes(),
                               offsets=(np.arange(n + 1, dtype="<i8") * len(prompt)).tobytes())
    return pb.NextTokenDistributionBatchRequest(prompts=pb.QueryBatch(packed=packed))


def cnf_request(clauses, cap: int):
    from engine._proto.ngram.v1 import ngram_pb2 as pb

    return pb.CountCnfRequest(
        clauses=[pb.CnfClause(terms=[pb.Query(token_ids=pb.TokenIds(ids=[int(t) for t in term])) for term in c])
                 for c in clauses],
        max_clause_freq=cap)


def _stub(target: str):
    import grpc

    from engine._proto.ngram.v1 import ngram_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 1 << 30),
                                                     ("grpc.max_send_message_length", 1 << 30)])
    return channel, pb_grpc.NgramServiceStub(channel)


def admitted(stub, method: str, request, timeout: float = 0.3) -> bool:
    """Whether the server admits ``request``: a refusal comes before the work (RESOURCE_EXHAUSTED);
    anything else (a deadline, an answer) means the work started."""
    import grpc

    try:
        getattr(stub, method)(request, timeout=timeout)
        return True
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return False
        return True


def largest_admitted(stub, method: str, make, start: int) -> tuple[int, str]:
    """The largest size (halving from ``start``) whose request the server admits, and the refusal
    message of the next larger one."""
    import grpc

    size, refusal = start, ""
    while size >= 1:
        try:
            getattr(stub, method)(make(size), timeout=0.3)
            return size, refusal
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                return size, refusal
            refusal = exc.details()
        size //= 2
    raise SystemExit(f"{method}: even the smallest request was refused: {refusal}")


# ------------------------------------------------------------------------------------------------
# Client processes


def heavy_client(target: str, method: str, request_bytes: bytes, request_type: str, until: float, deadline: float,
                 out) -> None:
    import grpc

    from engine._proto.ngram.v1 import ngram_pb2 as pb

    request = getattr(pb, request_type).FromString(request_bytes)
    channel, stub = _stub(target)
    call = getattr(stub, method)
    tally: dict[str, int] = {}
    seconds: list[float] = []
    while time.time() < until:
        t0 = time.perf_counter()
        try:
            call(request, timeout=deadline)
            code = "OK"
            seconds.append(time.perf_counter() - t0)
        except grpc.RpcError as exc:
            code = exc.code().name
            if code == "RESOURCE_EXHAUSTED":
                code += " (busy)" if "--heavy-workers" in (exc.details() or "") else " (memory)"
            if code.startswith("RESOURCE_EXHAUSTED") or code == "UNAVAILABLE":
                time.sleep(0.05)
        tally[code] = tally.get(code, 0) + 1
        if code == "UNAVAILABLE":
            break
    channel.close()
    out.put({"method": method, "tally": tally, "seconds": seconds})


def count_client(target: str, queries: list[list[int]], want: list[int], until: float, out) -> None:
    import grpc

    from engine._proto.ngram.v1 import ngram_pb2 as pb

    channel, stub = _stub(target)
    reqs = [pb.CountRequest(query=pb.Query(token_ids=pb.TokenIds(ids=q))) for q in queries]
    lat, wrong, errors = [], 0, {}
    i = 0
    while time.time() < until:
        k = i % len(reqs)
        t0 = time.perf_counter()
        try:
            r = stub.Count(reqs[k], timeout=10)
            lat.append(time.perf_counter() - t0)
            wrong += int(r.count != want[k])
        except grpc.RpcError as exc:
            errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
        i += 1
        time.sleep(0.002)  # a client with something else to do between its calls
    channel.close()
    out.put({"latencies": lat, "wrong": wrong, "errors": errors})


# ------------------------------------------------------------------------------------------------


def ensure_index(path: Path) -> Path:
    if (path / "manifest.json").exists():
        return path
    if path.resolve() != (ROOT / "indexes" / "demo").resolve():
        raise SystemExit(f"{path} is not an index; build it first")
    print("building indexes/demo from the cached corpora (ngram build-recipe demo) ...", flush=True)
    subprocess.run([sys.executable, "-m", "engine.cli.main", "build-recipe", "demo"], cwd=ROOT, check=True)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=ROOT / "indexes" / "demo")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load before SIGTERM")
    ap.add_argument("--max-memory", default="1G")
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--heavy-deadline", type=float, default=10.0, help="deadline of each expensive call (s)")
    ap.add_argument("--server-arg", action="append", default=[], help="more `ngram serve` arguments")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)

    from engine import NgramIndex
    from engine.units import parse_size

    index_path = ensure_index(args.index)
    index = NgramIndex.open(index_path)
    rng = np.random.default_rng(0)

    # The 9th client's Counts and their in-process answers (computed now, not during the run).
    queries = []
    for _ in range(2000):
        d = index.get_doc_by_ix(int(rng.integers(index.num_docs)), max_disp_len=64)
        ids = np.asarray(d.token_ids)
        if len(ids) == 0:
            continue
        a = int(rng.integers(len(ids)))
        queries.append([int(t) for t in ids[a:a + int(rng.integers(1, 6))]])
    want = [index.count(q) for q in queries]

    # Heavy requests' material: a shuffled 1,024-token document (many short spans), the most frequent
    # token, and two OR-clauses of frequent tokens.
    long_doc = next(index.get_doc_by_ix(i, max_disp_len=4096) for i in range(index.num_docs)
                    if index.get_doc_by_ix(i, max_disp_len=4096).doc_len >= 1024)
    text = rng.permutation(np.asarray(long_doc.token_ids[:1024])).tolist()
    top = index.frequent_ngrams(1, 1, top_k=300)
    top_ids = [int(tokens[0]) for tokens, _ in top.to_list()]
    frequent = [top_ids[0]]

    proc, target = start_server(index_path, args.max_memory, args.grace, args.server_arg)
    sampler = MemorySampler(proc.pid)
    rest = sampler.sample()
    sampler.start()
    channel, stub = _stub(target)
    from engine._proto.ngram.v1 import ngram_pb2 as pb

    info = stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=30)
    lim = info.limits
    disp, attr_refusal = largest_admitted(stub, "Attribute", lambda d: attribute_request(text, d), 128)
    n_ntd, ntd_refusal = largest_admitted(stub, "NextTokenDistributionBatch",
                                          lambda n: ntd_batch_request(frequent, n), 1 << 17)
    cnf = [[[t] for t in top_ids[0:256:2]], [[t] for t in top_ids[1:256:2]]]
    cnf_req = cnf_request(cnf, int(lim.max_clause_freq))
    channel.close()
    time.sleep(1.0)  # let the calibration calls' work stop
    print(f"server {target}; calibrated: Attribute max_disp_len={disp} (1,024 ids, min_len=1, max_docs=1000); "
          f"NTD batch of {n_ntd} x token {frequent[0]} (count {index.count(frequent)}); CountCnf 2 x 128 terms",
          flush=True)

    heavy = ([("Attribute", attribute_request(text, disp))] * 3
             + [("NextTokenDistributionBatch", ntd_batch_request(frequent, n_ntd))] * 3
             + [("CountCnf", cnf_req)] * 2)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    until = time.time() + args.duration
    procs = [ctx.Process(target=heavy_client, args=(target, m, r.SerializeToString(), type(r).__name__, until + 60,
                                                    args.heavy_deadline, out))
             for m, r in heavy]
    for p in procs:
        p.start()
    time.sleep(2.0)  # the expensive calls are under way before the ninth client starts
    counter = ctx.Process(target=count_client, args=(target, queries, want, until, out))
    counter.start()
    counter.join()
    count_result = out.get()

    # SIGTERM with the heavy clients still sending (their loop runs past `until`).
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    exit_seconds = time.monotonic() - t0
    sampler.stop.set()
    stderr = proc.stderr.read()
    heavy_results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)

    lat = np.array(count_result["latencies"]) * 1e3
    budget = parse_size(args.max_memory)
    tallies: dict[str, dict[str, int]] = {}
    durations: dict[str, list[float]] = {}
    for r in heavy_results:
        t = tallies.setdefault(r["method"], {})
        for k, v in r["tally"].items():
            t[k] = t.get(k, 0) + v
        durations.setdefault(r["method"], []).extend(r["seconds"])
    mib = lambda b: f"{b / (1 << 20):,.0f} MiB"  # noqa: E731
    rows = [
        ("9th client Count p50 / p99 / max", f"{np.percentile(lat, 50):.2f} / {np.percentile(lat, 99):.2f} / "
         f"{lat.max():.1f} ms over {len(lat):,} calls", "p99 < 50 ms"),
        ("9th client answers equal to NgramIndex", f"{len(lat) - count_result['wrong']:,} of {len(lat):,}"
         f"{'; errors ' + str(count_result['errors']) if count_result['errors'] else ''}", "all"),
        ("server peak resident / private memory", f"{mib(sampler.peak_rss)} / {mib(sampler.peak_private)} "
         f"(at rest {mib(rest[0])} / {mib(rest[1])})", f"under --max-memory {args.max_memory} ({mib(budget)})"),
        ("SIGTERM to exit, expensive calls running", f"{exit_seconds:.2f} s (rc {rc}; grace {args.grace:g} s"
         f"{'; forced' if 'still running' in stderr else ''})", f"<= grace + 1 = {args.grace + 1:g} s"),
    ]
    for method, t in tallies.items():
        d = durations[method]
        done = f"; answered in {np.median(d):.2f} s median" if d else ""
        rows.append((f"{method} outcomes (8 clients in all)", ", ".join(f"{k} {v}" for k, v in sorted(t.items())) + done,
                     "at most --heavy-workers at once, refused when busy"))
    table = ["| what | measured | target |", "| --- | --- | --- |"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    m = machine_info()
    header = (f"Admission under load: `python bench/bench_admission.py --duration {args.duration:g} --max-memory "
              f"{args.max_memory} --grace {args.grace:g} --heavy-deadline {args.heavy_deadline:g}` on {index_path.name} ({index.num_tokens:,} tokens, "
              f"{index.num_docs:,} docs); {m['cpu']}, {m['usable_cores']} cores, load {m['loadavg']} at the end. "
              f"Heavy requests: Attribute of 1,024 ids, min_len=1, max_docs=1000, max_disp_len={disp} "
              f"(next larger refused: {attr_refusal[:160]!r}); NTD batch of {n_ntd} copies of token {frequent[0]} "
              f"(next larger refused: {ntd_refusal[:160]!r}); CountCnf of 2 OR-clauses of 128 frequent tokens, "
              f"max_clause_freq={lim.max_clause_freq}.")
    text_out = header + "\n\n" + "\n".join(table) + "\n"
    print()
    print(text_out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text_out)
    raw = {"count_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                        "max": float(lat.max()), "n": len(lat)}, "wrong": count_result["wrong"],
           "errors": count_result["errors"], "peak_rss": sampler.peak_rss, "peak_private": sampler.peak_private,
           "rest": rest, "max_memory": budget, "exit_seconds": exit_seconds, "rc": rc, "grace": args.grace,
           "tallies": tallies, "disp": disp, "n_ntd": n_ntd, "machine": m}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
