"""Damaged-index harness shared by tests/indexing/test_corruption.py and bench/bench_corruption.py.

A *case* is a small pristine index (u8, u16 or u32, with metadata). A *corruption* is a JSON-able
dict saying what to do to one of its files (truncate, flip bytes at a rate, zero a region, write
pointers past the data or off the token grid, swap pointers, break offsets, put tokens past the
vocabulary). ``run_jobs`` applies corruptions to copies of a case and, in a subprocess (so a crash
is a signal the parent sees, not the end of the run), opens each copy, asks it a fixed set of
queries and runs ``verify_index`` on it. Each job's outcome is one JSON line: the answers or the
error (its class and whether it is an NgramError), and verify's problems. A job that kills its
worker is reported with the signal, and the worker restarts at the next job.

Run as ``python -m tests.helpers.corruption WORKDIR JOBS.json`` it is the worker.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

# Vocabularies below the separator, so that a token past the vocabulary is a corruption verify can see.
CASES = {
    "u8": (1, 200, [0, 1, 2, 0x7F, 0xC7]),
    "u16": (2, 1000, [1, 0x100, 0x101, 3, 999]),
    "u32": (4, 70000, [1, 0x100, 0x10000, 7, 69999]),
}
FILE_KINDS = ("tokenized", "table", "offset", "metadata", "metaoff", "directory")
KINDS = ("truncate", "extend", "flip", "zero", "ptr_out", "ptr_misalign", "ptr_swap", "offset_bad", "token_past_vocab",
         "manifest")
RATES = (0.0005, 0.01, 0.05, 0.3)


def build_case(directory: Path, name: str, n_docs: int = 24, doc_len: int = 60, seed: int = 0) -> Path:
    """A pristine index of ``name`` (a CASES key) in ``directory`` (skewed draws: repeated n-grams)."""
    from engine import build_index
    from engine.build.readers import RawDocument

    width, vocab, alphabet = CASES[name]
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        tokens = np.asarray(alphabet, dtype=np.int64)[rng.choice(len(alphabet), size=int(rng.integers(1, doc_len)),
                                                                 p=[0.4, 0.25, 0.15, 0.12, 0.08])]
        docs.append(RawDocument(text=None, tokens=tokens, metadata={"doc": i, "name": f"d{i}"}))
    build_index(directory, documents=docs, tokenizer=None, vocab_size=vocab, metadata=True, workers=1)
    return directory


def queries(name: str) -> list[list[int]]:
    _, _, a = CASES[name]
    return [[a[0]], [a[1]], [a[4]], [a[0], a[1]], [a[1], a[0]], [a[0], a[0], a[1]], [a[2], a[3], a[0], a[1]],
            [a[4], a[4]], [a[0]] * 6]


def answers(index, name: str) -> dict:
    """Every kind of answer, JSON-able, for comparing a damaged index with its pristine twin."""
    qs = queries(name)
    a = CASES[name][2]
    out = {
        "counts": [index.count(q) for q in qs],
        "batch": index.count_batch(qs).tolist(),
        "find": [list(index.find(q).segments) for q in qs[:3]],
        "prob": [[index.prob(q, a[1]).cont_count, index.prob(q, a[1]).prompt_count] for q in qs],
        "infgram": [[r.prompt_count, r.cont_count, r.suffix_len] for r in (index.infgram_prob(q, a[0]) for q in qs)],
    }
    ntds = []
    for q in qs[:5]:
        d = index.ntd(q)
        ntds.append([d.prompt_count, d.tokens.tolist(), d.counts.tolist(), d.end_count])
    d = index.infgram_ntd(qs[6])
    ntds.append([d.prompt_count, d.tokens.tolist(), d.counts.tolist(), d.end_count, d.suffix_len])
    out["ntd"] = ntds
    docs = []
    for q in qs[3:6]:
        r = index.search_docs(q, max_docs=3, max_disp_len=20)
        docs.append([r.count] + [[x.doc_ix, x.doc_len, x.token_ids.tolist(), x.metadata] for x in r.documents])
    for ix in (0, index.num_docs // 2, index.num_docs - 1):
        x = index.get_doc_by_ix(ix, max_disp_len=30)
        docs.append([x.doc_ix, x.doc_len, x.token_ids.tolist(), x.metadata])
    out["docs"] = docs
    return out


# ------------------------------------------------------------------------------------- corruption
def random_corruption(rng: np.random.Generator, case: str) -> dict:
    kind = KINDS[int(rng.integers(len(KINDS)))]
    file = FILE_KINDS[int(rng.integers(len(FILE_KINDS)))]
    if kind.startswith("ptr_"):
        file = "table"
    elif kind == "offset_bad":
        file = ("offset", "metaoff")[int(rng.integers(2))]
    elif kind == "token_past_vocab":
        file = "tokenized"
    elif kind == "manifest":
        file = "manifest"
    return {"case": case, "kind": kind, "file": file, "rate": RATES[int(rng.integers(len(RATES)))],
            "seed": int(rng.integers(1 << 31))}


def apply(directory: Path, c: dict) -> None:
    """Damage the copy of a case in ``directory`` as ``c`` says."""
    width = CASES[c["case"]][0]
    rng = np.random.default_rng(c["seed"])
    path = directory / ("manifest.json" if c["file"] == "manifest" else f"{c['file']}.0")
    if not path.exists():
        return
    data = bytearray(path.read_bytes())
    n = len(data)
    kind = c["kind"]
    if kind == "truncate":
        del data[int(rng.integers(0, max(n, 1))):]
    elif kind == "extend":
        data += bytes(rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8))
    elif kind == "flip" and n:
        k = max(1, int(n * c["rate"]))
        where = rng.choice(n, size=min(k, n), replace=False)
        for i in where:
            data[i] ^= int(rng.integers(1, 256))
    elif kind == "zero" and n:
        start = int(rng.integers(0, n)) if rng.random() < 0.5 else 0
        end = min(n, start + int(rng.integers(1, 4096)))
        data[start:end] = bytes(end - start)
    elif kind.startswith("ptr_") or kind == "manifest":
        if kind == "manifest":
            _damage_manifest(data, rng)
        else:
            _damage_pointers(directory, data, kind, c["rate"], width, rng)
    elif kind == "offset_bad":
        offs = np.frombuffer(bytes(data), dtype="<u8").copy()
        if len(offs):
            i = int(rng.integers(len(offs)))
            choice = int(rng.integers(4))
            if choice == 0:
                offs[i] = np.uint64(int(rng.integers(1 << 40, 1 << 62)))  # past the data
            elif choice == 1:
                offs[i] = np.uint64((1 << 64) - 1 - int(rng.integers(0, 1 << 20)))  # negative as int64
            elif choice == 2 and i > 0:
                offs[i] = offs[i - 1]  # not increasing
            else:
                offs[i] = offs[i] + np.uint64(1)  # off the token grid
            data = bytearray(offs.tobytes())
    elif kind == "token_past_vocab":
        vocab = CASES[c["case"]][1]
        positions = n // width
        for _ in range(max(1, int(positions * c["rate"]))):
            p = int(rng.integers(positions)) * width
            value = int(rng.integers(vocab, (1 << (8 * width)) - 1))
            data[p:p + width] = value.to_bytes(width, "little")
    path.write_bytes(bytes(data))


def _damage_pointers(directory: Path, data: bytearray, kind: str, rate: float, width: int, rng) -> None:
    ds_bytes = (directory / "tokenized.0").stat().st_size
    ps = len(data) // (ds_bytes // width)
    count = len(data) // ps
    ranks = rng.choice(count, size=min(count, max(1, int(count * rate))), replace=False)
    for r in ranks:
        old = int.from_bytes(data[r * ps:(r + 1) * ps], "little")
        if kind == "ptr_out":
            new = int(rng.integers(ds_bytes, 1 << (8 * ps))) if ds_bytes < (1 << (8 * ps)) else (1 << (8 * ps)) - 1
        elif kind == "ptr_misalign":
            new = (old + 1) % (1 << (8 * ps))
        else:  # swap with another rank: still a permutation, no longer sorted
            other = int(rng.integers(count))
            data[r * ps:(r + 1) * ps], data[other * ps:(other + 1) * ps] = \
                data[other * ps:(other + 1) * ps], data[r * ps:(r + 1) * ps]
            continue
        data[r * ps:(r + 1) * ps] = new.to_bytes(ps, "little")


def _damage_manifest(data: bytearray, rng) -> None:
    manifest = json.loads(bytes(data))
    field = ["token_width", "vocab_size", "shards", "num_tokens", "ptr_size", "num_docs", "eos_token_id",
             "build"][int(rng.integers(8))]
    value = [None, 0, -1, "x", 10 ** 30, [], {}, 3, 65536 * 65536][int(rng.integers(9))]
    if field in ("num_tokens", "ptr_size", "num_docs"):
        manifest["shards"][0][field] = value
    elif rng.random() < 0.2:
        manifest.pop(field, None)
    else:
        manifest[field] = value
    data[:] = json.dumps(manifest).encode()


# ------------------------------------------------------------------------------------- running
def _outcome(directory: Path, name: str) -> dict:
    from engine import NgramIndex
    from engine.errors import NgramError
    from engine.build.verify import verify_index

    result: dict = {}
    try:
        index = NgramIndex.open(directory)
        result["answers"] = answers(index, name)
        del index
    except Exception as exc:  # noqa: BLE001 - recorded, judged by the caller
        result["error"] = type(exc).__name__
        result["typed"] = isinstance(exc, NgramError)
        result["message"] = str(exc)[:300]
    try:
        result["problems"] = verify_index(directory, samples=1000).problems
        # Without checksums: what the structural checks alone find (an index without a manifest).
        result["structural"] = verify_index(directory, full=True, checksums=False).problems
    except Exception as exc:  # noqa: BLE001
        result["verify_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return result


def _worker(workdir: Path, jobs_file: Path) -> None:
    jobs = json.loads(jobs_file.read_text())
    for i, job in enumerate(jobs):
        scratch = workdir / f"job{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(job["source"], scratch)
        if job["corruption"] is not None:
            apply(scratch, job["corruption"])
        print(json.dumps({"start": i}), flush=True)
        out = _outcome(scratch, job["case"])
        print(json.dumps({"done": i, **out}), flush=True)
        shutil.rmtree(scratch, ignore_errors=True)


def run_jobs(workdir: Path, jobs: list[dict], timeout: float = 600) -> list[dict]:
    """Outcome of every job ({"source": pristine dir, "case": name, "corruption": dict or None}), in
    order; a job whose worker died has {"signal": number} (and the worker restarts after it)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    results: list[dict | None] = [None] * len(jobs)
    first = 0
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               NGRAM_CACHE=str(workdir / "cache"))  # no search directory from the user's cache
    while first < len(jobs):
        jobs_file = workdir / "jobs.json"
        jobs_file.write_text(json.dumps(jobs[first:]))
        proc = subprocess.run([sys.executable, "-m", "tests.helpers.corruption", str(workdir), str(jobs_file)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=timeout)
        started = None
        for line in proc.stdout.splitlines():
            if not line.startswith("{"):
                continue
            msg = json.loads(line)
            if "start" in msg:
                started = first + msg["start"]
            else:
                results[first + msg.pop("done")] = msg
                started = None
        if proc.returncode == 0:
            break
        crashed = started if started is not None else next(i for i, r in enumerate(results) if r is None)
        results[crashed] = {"signal": -proc.returncode if proc.returncode < 0 else None,
                            "returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
        first = crashed + 1
    return results  # type: ignore[return-value]


def judge(results: list[dict], reference: dict[str, dict], jobs: list[dict]) -> dict:
    """Counts: corruptions, signals, untyped errors, answers changed (or refused) while verify
    found nothing, and verify crashes; plus examples of each failure."""
    summary = {"corruptions": 0, "signals": 0, "untyped": 0, "silent": 0, "verify_crashed": 0, "changed": 0,
               "refused": 0, "silent_without_checksums": 0, "examples": []}
    for job, res in zip(jobs, results):
        if job["corruption"] is None:
            continue
        summary["corruptions"] += 1
        if res is None or "signal" in res:
            summary["signals"] += 1
            summary["examples"].append({"signal": res, "corruption": job["corruption"]})
            continue
        if "error" in res:
            summary["refused"] += 1
            if not res["typed"]:
                summary["untyped"] += 1
                summary["examples"].append({"untyped": res["error"], "message": res["message"],
                                            "corruption": job["corruption"]})
        if "verify_error" in res:
            summary["verify_crashed"] += 1
            summary["examples"].append({"verify_error": res["verify_error"], "corruption": job["corruption"]})
        changed = "error" in res or res.get("answers") != reference[job["case"]]
        summary["changed"] += changed
        if changed and not res.get("problems") and "verify_error" not in res:
            summary["silent"] += 1
            summary["examples"].append({"silent": res.get("error") or "answers differ", "corruption": job["corruption"]})
        if changed and not res.get("structural") and "verify_error" not in res:
            summary["silent_without_checksums"] += 1  # information only: checksums are what catch these
    return summary


if __name__ == "__main__":
    # Let a signal end the worker as a signal (not as a Python exception), which the parent reports.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
