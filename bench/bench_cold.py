"""Cold benchmark: queries on an index none of whose pages are in memory, ours against infini-gram 2.6.0.

    python bench/bench_cold.py                          # 300 MB of Linux C (built once, cached)
    python bench/bench_cold.py --linux-mb 1150           # about the whole kernel's C
    python bench/bench_cold.py --index DIR --heldout F   # an index you have (GPT-2 u16), held-out JSONL
    python bench/bench_cold.py --linux-mb 1150 --shards 16   # the same corpus as 16 shards, ours only

Both engines open the same index files (ours builds them, with their search directories). Before
every timed query the index's pages are dropped: for each mapping of an index file in
/proc/self/maps ``madvise(MADV_DONTNEED)`` over its range, then ``posix_fadvise(POSIX_FADV_DONTNEED)``
on every file of the index. Each engine keeps only what it holds on its heap. A query's latency is
its wall time; its bytes are the growth of ``read_bytes`` in /proc/self/io (what this process made
the disk read, page faults included). The two engines alternate query by query.

Kinds: count (n = 2, 5, 10 tokens drawn from the corpus), prob (5-token prompt), ntd (3-token
prompt; ours exact, and ours with infini-gram's max_support=1000 cap; infini-gram's capped),
infgram_prob (100-token held-out context), search_docs (5-gram, 10 documents of 100 tokens).
Cold open: NgramIndex.open / InfiniGramEngine(...) with every index page dropped first.

infini-gram runs with its default prefetching (ds_prefetch_depth=1: madvise(WILLNEED) on the pages
its searches will visit), except for ntd, where that default reads the suffix array at rank -1 and
may crash (tests/query/test_infinigram_compat.py): a second engine with ds_prefetch_depth=0 answers ntd.

With ``--shards N`` the same corpus is also built as N shards (cut from the one-shard index's document
sizes so the greedy cut gives exactly N; in its own folder ``index-Nshards``, cached) and ours is
measured on both indexes in one run, alternating query by query: cold open, cold count (n = 2, 5,
10) p50/p90 and bytes, warm count p50. ``count()`` itself switches, once its searches take major
page faults, to engine.kernels.disk's lockstep search (every shard's two ends at once, each step's
pages asked for together). For comparison the N-shard index is also searched by a thread pool, one
thread per shard (each thread runs kernels.find_ranges on its shard's row of the shard table; the
kernel releases the GIL, so the shards' page faults are in flight together).
Writes bench/results/cold_shards.md (and .json).

Writes the table to bench/results/cold.md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import fmt, heldout_ids, log, machine_info, machine_line, markdown_table  # noqa: E402

MADV_DONTNEED = 4
COUNT_NS = (2, 5, 10)
INFGRAM_CONTEXT = 100
IG_MAX_SUPPORT = 1000
SEED = 2024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def index_files(index_dir: Path) -> list[Path]:
    return sorted(p for p in Path(index_dir).iterdir() if p.is_file() and p.name.split(".")[0] in
                  ("tokenized", "table", "offset", "metadata", "metaoff", "directory"))


def drop_cache(files: list[Path]) -> None:
    """Drop every page of ``files`` from this process's mappings and from the page cache."""
    names = {str(p.resolve()) for p in files}
    with open("/proc/self/maps", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].rstrip("\n") in names:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                _libc.madvise(start, end - start, MADV_DONTNEED)
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_bytes() -> int:
    with open("/proc/self/io", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def cold_call(fn, args, files) -> tuple[float, int]:
    """(seconds, bytes read) of fn(*args) with every page of ``files`` dropped first."""
    drop_cache(files)
    before = read_bytes()
    t0 = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - t0
    return seconds, read_bytes() - before


# ----------------------------------------------------------------------------------------------
# Index and queries
# ----------------------------------------------------------------------------------------------


def ensure_index(root: Path, mb: float) -> tuple[Path, Path]:
    """(index directory, held-out JSONL) for the first ``mb`` MB of Linux .c/.h files."""
    from bench.bench_engine import prepare_linux

    corpus = prepare_linux(root, mb)
    index = corpus / "index"
    if not (index / "manifest.json").exists():
        from engine import build_index

        log(f"building {index} (GPT-2 tokens)")
        t0 = time.perf_counter()
        build_index(index, [corpus / "corpus.jsonl"], tokenizer="gpt2", progress=True)
        log(f"built in {time.perf_counter() - t0:.0f} s")
    return index, corpus / "heldout.jsonl"


def shard_bytes_for(index_dir: Path, n: int) -> int:
    """The smallest shard size (bytes of tokenized data) for which build_index's greedy cut of the
    one-shard ``index_dir``'s documents gives at most ``n`` shards (exactly ``n`` in practice)."""
    num_docs = json.loads((index_dir / "manifest.json").read_text())["shards"][0]["num_docs"]
    width = (index_dir / "offset.0").stat().st_size // num_docs
    offsets = np.fromfile(index_dir / "offset.0", dtype=f"<u{width}").astype(np.int64)
    total = (index_dir / "tokenized.0").stat().st_size
    sizes = np.diff(np.append(offsets, total))
    ends = np.cumsum(sizes)

    def shards(limit: int) -> int:
        count, base, first = 0, 0, 0
        while first < len(sizes):
            end = int(np.searchsorted(ends, base + limit, side="right"))
            count, base, first = count + 1, int(ends[end - 1]), end
        return count

    lo, hi = int(sizes.max()), total
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if shards(mid) <= n else (mid + 1, hi)
    return lo + lo % 2


def ensure_sharded(index_dir: Path, n: int) -> Path:
    """The corpus of one-shard ``index_dir`` built as ``n`` shards, beside it (cached)."""
    corpus = index_dir.parent
    out = corpus / f"index-{n}shards"
    if not (out / "manifest.json").exists():
        from engine import build_index

        size = shard_bytes_for(index_dir, n)
        log(f"building {out} ({n} shards of at most {size:,} bytes of tokens)")
        t0 = time.perf_counter()
        build_index(out, [corpus / "corpus.jsonl"], tokenizer="gpt2", shard_bytes=size, progress=True)
        log(f"built in {time.perf_counter() - t0:.0f} s")
    return out


def _spans(tokens: np.ndarray, sep: int, n: int, k: int, rng) -> list[list[int]]:
    out = []
    while len(out) < k:
        s = int(rng.integers(0, len(tokens) - n))
        span = tokens[s:s + n]
        if not (span == sep).any():
            out.append(span.astype(np.int64).tolist())
    return out


def make_queries(index_dir: Path, heldout: Path, k: int) -> dict[str, list]:
    rng = np.random.default_rng(SEED)
    tokens = np.memmap(index_dir / "tokenized.0", dtype="<u2", mode="r")
    sep = 0xFFFF
    q: dict[str, list] = {}
    for n in COUNT_NS:
        q[f"count n={n}"] = [(s,) for s in _spans(tokens, sep, n, k, rng)]
    q["prob (5-token prompt)"] = [(s[:-1], s[-1]) for s in _spans(tokens, sep, 6, k, rng)]
    q["ntd (3-token prompt)"] = [(s,) for s in _spans(tokens, sep, 3, k, rng)]
    held = heldout_ids(heldout, INFGRAM_CONTEXT + 1, limit=200)
    inf = []
    while len(inf) < k:
        ids = held[int(rng.integers(len(held)))]
        e = int(rng.integers(INFGRAM_CONTEXT, len(ids)))
        inf.append((ids[e - INFGRAM_CONTEXT:e].tolist(), int(ids[e])))
    q[f"infgram_prob ({INFGRAM_CONTEXT}-token held-out context)"] = inf
    q["search_docs (5-gram, 10 docs x 100 tokens)"] = [(s,) for s in _spans(tokens, sep, 5, k, rng)]
    return q


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


def _stats(samples: list[tuple[float, int]]) -> dict:
    t = np.array([s for s, _ in samples]) * 1000.0
    b = np.array([r for _, r in samples], dtype=np.float64)
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "bytes_p50": float(np.percentile(b, 50)), "bytes_mean": float(b.mean())}


def cold_open(index_dir: Path, files: list[Path], repeats: int) -> tuple[dict, dict]:
    from infini_gram.engine import InfiniGramEngine

    from engine import NgramIndex

    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(cold_call(lambda: NgramIndex.open(index_dir), (), files))
        theirs.append(cold_call(lambda: InfiniGramEngine(str(index_dir), eos_token_id=50256, vocab_size=65535,
                                                         token_dtype="u16"), (), files))
    return _stats(ours), _stats(theirs)


def run(index_dir: Path, heldout: Path, k: int, open_repeats: int) -> tuple[list[list], dict]:
    from infini_gram.engine import InfiniGramEngine

    from engine import NgramIndex

    files = index_files(index_dir)
    log(f"{index_dir}: {sum(p.stat().st_size for p in files):,} bytes in {len(files)} files")
    q = make_queries(index_dir, heldout, k)
    log("cold open")
    open_ours, open_theirs = cold_open(index_dir, files, open_repeats)

    ours = NgramIndex.open(index_dir)
    ours.warmup()  # compiled kernels are code, not index pages
    theirs = InfiniGramEngine(str(index_dir), eos_token_id=50256, vocab_size=65535, token_dtype="u16")
    theirs_ntd = InfiniGramEngine(str(index_dir), eos_token_id=50256, vocab_size=65535, token_dtype="u16",
                                  ds_prefetch_depth=0)
    pairs = {
        "count": (ours.count, theirs.count),
        "prob": (ours.prob, theirs.prob),
        "ntd": (ours.ntd, lambda p: theirs_ntd.ntd(p, max_support=IG_MAX_SUPPORT)),
        "infgram_prob": (ours.infgram_prob, theirs.infgram_prob),
        "search_docs": (lambda p: ours.search_docs(p, max_docs=10, max_disp_len=100),
                        lambda p: theirs.search_docs(p, maxnum=10, max_disp_len=100)),
    }
    # Both answer the same (a sanity check on a few queries, warm).
    for args in q["count n=5"][:20]:
        assert ours.count(*args) == theirs.count(*args)["count"], args

    rows = []
    raw: dict = {"open": {"ours": open_ours, "infini-gram": open_theirs}}
    for name, queries in q.items():
        log(name)
        fa, fb = pairs[name.split(" ")[0]]
        a, b, c = [], [], []
        for args in queries:
            a.append(cold_call(fa, args, files))
            b.append(cold_call(fb, args, files))
            if name.startswith("ntd"):
                c.append(cold_call(lambda p: ours.ntd(p, max_support=IG_MAX_SUPPORT), args, files))
        sa, sb = _stats(a), _stats(b)
        raw[name] = {"ours": sa, "infini-gram": sb}
        rows.append(_row(name, sa, sb))
        if c:
            sc = _stats(c)
            raw[name + ", ours capped"] = {"ours": sc}
            rows.append(_row("ntd (3-token prompt), ours with max_support=1000", sc, sb))
    rows.append(_row("open (NgramIndex.open / InfiniGramEngine)", open_ours, open_theirs))
    return rows, raw


class ThreadedCount:
    """count() over an index's shards with one thread per shard (kernels.find_ranges on one row of
    the shard table each; the kernel releases the GIL)."""

    def __init__(self, index):
        from concurrent.futures import ThreadPoolExecutor
        from engine.kernels import suffix as kernels

        self.index, self.kernels = index, kernels
        st, self.tw = index._search
        self.rows = [np.ascontiguousarray(st[s:s + 1]) for s in range(st.shape[0])]
        self.pool = ThreadPoolExecutor(max_workers=len(self.rows))

    def _one(self, row, keys):
        lo, hi = np.empty(1, dtype=np.int64), np.empty(1, dtype=np.int64)
        return int(self.kernels.find_ranges(row, self.tw, keys, 0, len(keys), lo, hi))

    def __call__(self, query) -> int:
        keys = self.index._keys(np.asarray(query, dtype=np.int64))
        return sum(self.pool.map(self._one, self.rows, [keys] * len(self.rows)))


def run_shards(one: Path, many: Path, heldout: Path, k: int, open_repeats: int) -> tuple[list[list], dict]:
    """Ours on the one-shard and the N-shard index of the same corpus, alternating query by query."""
    from engine import NgramIndex

    files_one, files_many = index_files(one), index_files(many)
    for d, f in ((one, files_one), (many, files_many)):
        log(f"{d}: {sum(p.stat().st_size for p in f):,} bytes in {len(f)} files")
    q = make_queries(one, heldout, k)
    log("cold open")
    o1, on = [], []
    for _ in range(open_repeats):
        o1.append(cold_call(lambda: NgramIndex.open(one), (), files_one))
        on.append(cold_call(lambda: NgramIndex.open(many), (), files_many))
    a_idx, b_idx = NgramIndex.open(one), NgramIndex.open(many)
    a_idx.warmup()
    b_idx.warmup()
    threaded = ThreadedCount(b_idx)
    for (args,) in q["count n=5"][:20]:
        assert a_idx.count(args) == b_idx.count(args) == threaded(args), args
    raw: dict = {"open": {"one": _stats(o1), "many": _stats(on)}}
    rows = [["open", *(_cell(raw["open"][w]) for w in ("one", "many")), "", _ratio(raw["open"]["many"], raw["open"]["one"])]]
    for n in COUNT_NS:
        name = f"count n={n}"
        log(name)
        a, b, c = [], [], []
        for (args,) in q[name]:
            a.append(cold_call(a_idx.count, (args,), files_one))
            b.append(cold_call(b_idx.count, (args,), files_many))
            c.append(cold_call(threaded, (args,), files_many))
        warm = {}
        for label, fn in (("one", a_idx.count), ("many", b_idx.count), ("threads", threaded)):
            for (args,) in q[name]:
                fn(args)  # pages in
            t = []
            for _ in range(3):
                for (args,) in q[name]:
                    t0 = time.perf_counter()
                    fn(args)
                    t.append(time.perf_counter() - t0)
            warm[label] = float(np.percentile(t, 50)) * 1e6
        raw[name] = {"one": _stats(a), "many": _stats(b), "threads": _stats(c), "warm_p50_us": warm}
        rows.append([name, _cell(raw[name]["one"]), _cell(raw[name]["many"]), _cell(raw[name]["threads"]),
                     f"{_ratio(raw[name]['many'], raw[name]['one'])} / {_ratio(raw[name]['threads'], raw[name]['one'])}",
                     f"{fmt(warm['one'], 2)} / {fmt(warm['many'], 2)} / {fmt(warm['threads'], 2)}"])
    rows[0].append("")
    threaded.pool.shutdown()
    return rows, raw


def _cell(st: dict) -> str:
    return f"{fmt(st['p50_ms'], 2)} / {fmt(st['p90_ms'], 2)} ms, {_kib(st['bytes_p50'])} KiB"


def _ratio(a: dict, b: dict) -> str:
    return f"{a['p50_ms'] / b['p50_ms']:.2f}x" if b["p50_ms"] else "n/a"


def _kib(x: float) -> str:
    return f"{x / 1024:,.0f}" if x >= 10 * 1024 else f"{x / 1024:.1f}"


def _row(name: str, a: dict, b: dict) -> list:
    return [name, f"{fmt(a['p50_ms'], 2)} / {fmt(a['p90_ms'], 2)}", f"{fmt(b['p50_ms'], 2)} / {fmt(b['p90_ms'], 2)}",
            f"{b['p50_ms'] / a['p50_ms']:.1f}x" if a["p50_ms"] else "n/a",
            f"{_kib(a['bytes_p50'])} / {_kib(a['bytes_mean'])}", f"{_kib(b['bytes_p50'])} / {_kib(b['bytes_mean'])}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--linux-mb", type=float, default=300, help="MB of Linux .c/.h files to index (default 300)")
    ap.add_argument("--index", type=Path, help="an index directory (GPT-2 u16) instead of building one")
    ap.add_argument("--heldout", type=Path, help="held-out JSONL (text field) for --index")
    ap.add_argument("--queries", type=int, default=100, help="cold queries per kind and engine (default 100)")
    ap.add_argument("--open-repeats", type=int, default=5, help="cold opens per engine (default 5)")
    ap.add_argument("--shards", type=int, help="also build the corpus as this many shards and compare ours on "
                    "the two indexes (count and open only; writes cold_shards.md)")
    ap.add_argument("--cache", type=Path, help="where corpora and indexes go (default $NGRAM_CACHE/bench_cold)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "cold.md")
    args = ap.parse_args(argv)
    from engine.fetch import cache_dir

    if args.index is not None:
        if args.heldout is None:
            ap.error("--index needs --heldout")
        index_dir, heldout = args.index, args.heldout
        title = str(index_dir)
    else:
        root = args.cache or (cache_dir() / "bench_cold")
        root.mkdir(parents=True, exist_ok=True)
        index_dir, heldout = ensure_index(root, args.linux_mb)
        title = f"Linux 6.1 kernel C source, first {args.linux_mb:g} MB of .c/.h files"
    info = machine_info()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    manifest = json.loads((index_dir / "manifest.json").read_text()) if (index_dir / "manifest.json").exists() else {}
    cmd = "python bench/bench_cold.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.shards:
        return main_shards(args, index_dir, heldout, title, info, started, cmd)
    rows, raw = run(index_dir, heldout, args.queries, args.open_repeats)
    text = "\n".join([
        "## Cold queries: ours vs infini-gram 2.6.0, every index page dropped before each query", "",
        f"`{cmd.strip()}` ({started}; {args.queries} queries per kind and engine, alternating).", "",
        f"Machine: {machine_line(info)}.", "",
        f"Index: {title}: {manifest.get('num_tokens', 0):,} tokens, {manifest.get('num_docs', 0):,} documents, "
        f"{len(manifest.get('shards', [])) or '?'} shard(s), "
        f"{sum(p.stat().st_size for p in index_files(index_dir)):,} bytes of index files.", "",
        markdown_table(["query", "ours p50 / p90 ms", "infini-gram p50 / p90 ms", "p50 ratio",
                        "ours KiB read p50 / mean", "infini-gram KiB read p50 / mean"], rows), "",
        "Ratios are infini-gram's p50 over ours. Bytes are /proc/self/io read_bytes per query.", "",
    ])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2))
    log(f"wrote {args.out}")
    return 0


def main_shards(args, index_dir: Path, heldout: Path, title: str, info, started: str, cmd: str) -> int:
    many = ensure_sharded(index_dir, args.shards)
    rows, raw = run_shards(index_dir, many, heldout, args.queries, args.open_repeats)

    def describe(d: Path) -> str:
        m = json.loads((d / "manifest.json").read_text())
        dirs = [p for p in index_files(d) if p.name.startswith("directory.")]
        return (f"{len(m['shards'])} shard(s), {m['num_tokens']:,} tokens, "
                f"{sum(p.stat().st_size for p in index_files(d)):,} bytes of index files, "
                f"{sum(p.stat().st_size for p in dirs):,} bytes of directories "
                f"(budget {m['build'].get('directory_budget', 0) / 2**20:g} MiB per shard)")

    text = "\n".join([
        f"## Cold queries, one shard against {args.shards} shards of the same corpus (ours)", "",
        f"`{cmd.strip()}` ({started}; {args.queries} queries per kind, the indexes alternating query by query).", "",
        f"Machine: {machine_line(info)}.", "",
        f"Corpus: {title}.", "",
        f"- one shard: {describe(index_dir)}",
        f"- {args.shards} shards: {describe(many)}", "",
        markdown_table(["query", "one shard p50 / p90, KiB read p50", f"{args.shards} shards, count()",
                        f"{args.shards} shards, a thread per shard", f"{args.shards}-shard p50 / one-shard p50",
                        "warm p50 µs: one / many / threads"], rows), "",
        "Cold: every page of the index's files dropped before each call. Warm: the same queries, "
        "3 passes after one that pages them in.", "",
    ])
    print(text)
    out = args.out.with_name("cold_shards.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
