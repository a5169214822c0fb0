"""Engine benchmark: our NgramIndex against infini-gram 2.6.0 on the same index files and queries.

    python bench/bench_engine.py                    # moderate: 100 MB of Linux C + the English set
    python bench/bench_engine.py --size smoke       # seconds: 5 MB of C, Canterbury only
    python bench/bench_engine.py --size full        # 200 MB of C
    python bench/bench_engine.py --linux-mb 50 --queries 500 --only linux

Two real corpora (engine.fetch): the first N MB of the Linux 6.1 kernel's .c/.h files (one document
per file, in tarball order) and an English set (Canterbury texts and Shakespeare by paragraph, the
King James Bible by chapter). Both are tokenized with GPT-2's BPE (u16) and indexed twice, each in a
subprocess whose wall time and peak memory are measured: by ``engine.build_index`` and by
infini-gram's own indexer (``python -m infini_gram.indexing``; its ``transformers`` import is served
by a stand-in whose GPT-2 tokenizer is ours, as infini-gram's would download it from the Hugging
Face hub; so both builds tokenize with the same BPE, and our builder's token and suffix-array files
come out byte-identical to infini-gram's).

Both engines then query our build's files (in page cache) with the same random queries drawn from
the indexed tokens, alternating in blocks of 100 calls (bench.common.time_pair): count for n = 1, 2, 5, 10, 20, 100; prob and ntd after corpus prompts;
infgram_prob and infgram_ntd with 100-token contexts taken from held-out documents (never indexed),
as a language model would use them; search_docs; and batched counts (our ``count_batch`` against a
loop of infini-gram's ``count``). Our ntd is exact; infini-gram's samples when a prompt occurs more
than ``max_support`` (its default 1,000) times, and we show ours with the same cap too.

infini-gram is opened with ``ds_prefetch_depth=0``: with its default (1) its ntd reads the suffix
array at rank -1 when a range starts at rank 0 and segfaults about one run in three
(tests/query/test_infinigram_compat.py). Everything it reads is in page cache, so the prefetch would only
add madvise calls.

Prints markdown (machine, corpora, builds, latencies with medians and ratios against the issue's
targets) and writes it to bench/results/engine.md. Corpora, indexes and build measurements are
cached under $NGRAM_CACHE/bench_engine/ (``--rebuild`` redoes the builds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    Latency,
    drop_into_page_cache,
    heldout_ids,
    fmt,
    log,
    machine_info,
    machine_line,
    markdown_table,
    python_env,
    ratio,
    run_measured,
    throughput,
    time_calls,
    time_pair,
)

SIZES = {
    "smoke": {"linux_mb": 5, "english": ("canterbury",), "queries": 300},
    "moderate": {"linux_mb": 100, "english": ("canterbury", "shakespeare", "kjv"), "queries": 1000},
    "full": {"linux_mb": 200, "english": ("canterbury", "shakespeare", "kjv"), "queries": 2000},
}
COUNT_NS = (1, 2, 5, 10, 20, 100)
HELDOUT_MB = 2.0
INFGRAM_CONTEXT = 100
IG_MAX_SUPPORT = 1000  # infini-gram's default
BATCH = 100_000
SEED = 12345

# ----------------------------------------------------------------------------------------------
# Corpora
# ----------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, docs) -> tuple[int, int]:
    tmp = path.with_suffix(".tmp")
    n = size = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
            n += 1
            size += len(doc["text"].encode("utf-8"))
    os.replace(tmp, path)
    return n, size


def prepare_linux(root: Path, mb: float) -> Path:
    """corpus.jsonl: the first ``mb`` MB of .c/.h files; heldout.jsonl: the next HELDOUT_MB."""
    d = root / f"linux-{mb:g}MB"
    if (d / "heldout.jsonl").exists():
        return d
    from bench.corpora import iter_linux_sources

    d.mkdir(parents=True, exist_ok=True)
    limit, held_limit = int(mb * 1e6), int(HELDOUT_MB * 1e6)
    corpus, held, size, held_size = [], [], 0, 0
    log(f"reading the first {mb:g} MB of Linux .c/.h files")
    for path, data in iter_linux_sources():
        doc = {"text": data.decode("utf-8", errors="replace"), "path": path}
        if size < limit:
            corpus.append(doc)
            size += len(data)
        elif held_size < held_limit:
            held.append(doc)
            held_size += len(data)
        else:
            break
    _write_jsonl(d / "corpus.jsonl", corpus)
    _write_jsonl(d / "heldout.jsonl", held)
    return d


def _english_docs(names) -> list[dict]:
    from engine.fetch import fetch

    docs = []
    for name in names:
        base = fetch(name)
        if name == "kjv":
            chapters: dict[tuple, list[str]] = {}
            with open(base / "kjv.jsonl", encoding="utf-8") as fh:
                for line in fh:
                    v = json.loads(line)
                    chapters.setdefault((v["book"], v["chapter"]), []).append(v["text"])
            docs += [{"text": " ".join(vs), "path": f"kjv/{b} {c}"} for (b, c), vs in chapters.items()]
            continue
        for path in sorted(base.rglob("*.txt")):
            text = path.read_bytes().decode("utf-8", errors="replace")
            for i, para in enumerate(re.split(r"\r?\n[ \t\r]*\n", text)):
                if para.strip():
                    docs.append({"text": para, "path": f"{name}/{path.name}#{i}"})
    return docs


def prepare_english(root: Path, names) -> Path:
    """corpus.jsonl and heldout.jsonl (every 20th document, never indexed)."""
    d = root / ("english-" + "+".join(names))
    if (d / "heldout.jsonl").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    docs = _english_docs(names)
    _write_jsonl(d / "corpus.jsonl", (x for i, x in enumerate(docs) if i % 20 != 10))
    _write_jsonl(d / "heldout.jsonl", (x for i, x in enumerate(docs) if i % 20 == 10))
    return d


# ----------------------------------------------------------------------------------------------
# Builds
# ----------------------------------------------------------------------------------------------

_OURS_BUILD = r"""
import json, sys, time
import engine.build.builder as b
timings = {}
def timed(name, key):
    f = getattr(b, name)
    def g(*a, **k):
        t0 = time.perf_counter(); r = f(*a, **k); timings[key] = time.perf_counter() - t0; return r
    setattr(b, name, g)
timed("_tokenize_phase", "tokenize_seconds")
timed("_sort_phase", "sort_seconds")
if __name__ == "__main__":
    from engine import build_index
    t0 = time.perf_counter()
    build_index(sys.argv[1], inputs=[sys.argv[2]], tokenizer="gpt2", workers=int(sys.argv[3]), overwrite=True)
    timings["seconds"] = time.perf_counter() - t0
    print("__TIMINGS__", json.dumps(timings))
"""

# infini-gram's indexer with a stand-in `transformers` whose GPT-2 tokenizer is ours (tiktoken): the
# indexer's own time, tokenizing at our tokenizer's speed. The default peer run instead is the
# unmodified indexer with transformers' GPT-2 tokenizer from a local cache (build_infinigram).
_IG_BUILD = r"""
import runpy, sys, types
class AutoTokenizer:
    @staticmethod
    def from_pretrained(name, **kwargs):
        from engine.tokenizers import load_tokenizer
        tok = load_tokenizer("gpt2")
        return types.SimpleNamespace(encode=lambda text: [int(t) for t in tok.encode(text)])
mod = types.ModuleType("transformers")
mod.AutoTokenizer = AutoTokenizer
mod.utils = types.SimpleNamespace(logging=types.SimpleNamespace(set_verbosity=lambda level: None))
sys.modules["transformers"] = mod
sys.argv = ["infini_gram.indexing"] + sys.argv[1:]
runpy.run_module("infini_gram.indexing", run_name="__main__", alter_sys=True)
"""


@dataclass
class Build:
    who: str
    seconds: float
    sort_seconds: float | None
    peak_rss: int
    max_single_rss: int
    tokens: int
    index_bytes: int  # tokenized + table + offset
    total_bytes: int  # every file of the index
    tokenize_seconds: float | None = None

    @property
    def peak_per_token(self) -> float:
        return self.peak_rss / self.tokens

    @property
    def disk_per_token(self) -> float:
        return self.index_bytes / self.tokens


def _index_sizes(path: Path) -> tuple[int, int, int]:
    """(positions, bytes of tokenized+table+offset, bytes of everything) of a u16 index directory."""
    core = total = positions = 0
    for p in path.rglob("*"):
        if not p.is_file():
            continue
        total += p.stat().st_size
        if re.match(r"^(tokenized|table|offset)\.\d+$", p.name):
            core += p.stat().st_size
            if p.name.startswith("tokenized."):
                positions += p.stat().st_size // 2
    return positions, core, total


def build_ours(corpus: Path, out: Path, workers: int) -> Build:
    log(f"building with ours: {out}")
    shutil.rmtree(out, ignore_errors=True)  # an existing finished index would be reused, not rebuilt
    res = run_measured([sys.executable, "-c", _OURS_BUILD, str(out), str(corpus / "corpus.jsonl"), str(workers)],
                       env=python_env())
    if res.returncode != 0:
        raise RuntimeError(f"our build failed:\n{res.stderr[-4000:]}")
    timings = json.loads(res.stdout.split("__TIMINGS__", 1)[1])
    positions, core, total = _index_sizes(out)
    return Build("ours", res.seconds, timings.get("sort_seconds"), res.peak_rss_bytes, res.max_single_rss_bytes,
                 positions, core, total, timings.get("tokenize_seconds"))


IG_TOKENIZERS = {"transformers": "infini-gram", "ours": "infini-gram, our tokenizer"}


def build_infinigram(corpus: Path, out: Path, workers: int, tokenizer: str = "transformers") -> Build:
    """infini-gram's indexer on the same JSONL. ``tokenizer="transformers"``: unmodified, loading
    transformers' GPT-2 tokenizer from a local Hugging Face cache written from the same ranks as ours
    (bench.bench_build_scale.gpt2_hf_home); ``"ours"``: our tokenizer swapped in (_IG_BUILD)."""
    log(f"building with infini-gram's indexer ({tokenizer} tokenizer): {out}")
    shutil.rmtree(out, ignore_errors=True)
    data = out.parent / (out.name + "-data")
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    os.symlink(corpus / "corpus.jsonl", data / "corpus.jsonl")
    import resource

    ulimit = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    mem_gib = max(1, int(__import__("psutil").virtual_memory().available * 0.6 / 2**30))
    args = ["--data_dir", str(data), "--save_dir", str(out), "--tokenizer", "gpt2", "--token_dtype", "u16",
            "--cpus", str(workers), "--mem", str(mem_gib), "--shards", "1", "--add_metadata", "--ulimit", str(ulimit)]
    env = python_env()
    if tokenizer == "transformers":
        from bench.bench_build_scale import gpt2_hf_home

        env.update(HF_HOME=str(gpt2_hf_home(corpus.parent / "hf-home")), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        cmd = [sys.executable, "-m", "infini_gram.indexing", *args]
    else:
        cmd = [sys.executable, "-c", _IG_BUILD, *args]
    res = run_measured(cmd, env=env)
    shutil.rmtree(data, ignore_errors=True)
    if res.returncode != 0 or "went wrong" in res.stdout:
        raise RuntimeError(f"infini-gram's build failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    m = re.search(r"Step 2 \(build_sa\): Done\. Took ([0-9.]+) seconds", res.stdout)
    positions, core, total = _index_sizes(out)
    sort_seconds = float(m.group(1)) if m else None
    return Build(IG_TOKENIZERS[tokenizer], res.seconds, sort_seconds, res.peak_rss_bytes, res.max_single_rss_bytes,
                 positions, core, total, None if sort_seconds is None else res.seconds - sort_seconds)


def _median_build(runs: list[Build]) -> Build:
    """The run of median wall time (its other figures with it)."""
    return sorted(runs, key=lambda b: b.seconds)[len(runs) // 2]


def ensure_builds(corpus: Path, workers: int, rebuild: bool, repeats: int = 1) -> tuple[Path, dict[str, Build]]:
    """Every build of ``corpus`` (measured, or read back from a previous run); returns our index path.

    With ``repeats`` > 1 the builders take turns (ours, infini-gram, infini-gram with our tokenizer,
    ours, ...) so that load from other processes hits them alike; each keeps its median-time run."""
    record = corpus / "builds.json"
    ours_dir = corpus / "index-ours"
    ig_dirs = {"transformers": corpus / "index-infinigram", "ours": corpus / "index-infinigram-ourtok"}
    want = {"ours", *IG_TOKENIZERS.values()}
    if not rebuild and record.exists() and (ours_dir / "manifest.json").exists() \
            and all((d / "table.0").exists() for d in ig_dirs.values()):
        builds = {k: Build(**v) for k, v in json.loads(record.read_text()).items()}
        if set(builds) == want:
            return ours_dir, builds
    runs: dict[str, list[Build]] = {k: [] for k in want}
    for _ in range(max(1, repeats)):
        runs["ours"].append(build_ours(corpus, ours_dir, workers))
        for tokenizer, d in ig_dirs.items():
            runs[IG_TOKENIZERS[tokenizer]].append(build_infinigram(corpus, d, workers, tokenizer))
    builds = {k: _median_build(v) for k, v in runs.items()}
    record.write_text(json.dumps({k: v.__dict__ for k, v in builds.items()}, indent=2))
    return ours_dir, builds


def files_identical(a: Path, b: Path) -> bool:
    for kind in ("tokenized.0", "offset.0", "table.0"):
        pa, pb = a / kind, b / kind
        if not pb.exists() or pa.stat().st_size != pb.stat().st_size:
            return False
        with open(pa, "rb") as fa, open(pb, "rb") as fb:
            while True:
                x, y = fa.read(1 << 24), fb.read(1 << 24)
                if x != y:
                    return False
                if not x:
                    break
    return True


# ----------------------------------------------------------------------------------------------
# Queries
# ----------------------------------------------------------------------------------------------


@dataclass
class Queries:
    count: dict[int, list[list[int]]] = field(default_factory=dict)
    prob: list[tuple[list[int], int]] = field(default_factory=list)
    ntd: dict[int, list[list[int]]] = field(default_factory=dict)
    infgram: list[tuple[list[int], int]] = field(default_factory=list)
    search: list[list[int]] = field(default_factory=list)
    batch: list[np.ndarray] = field(default_factory=list)


def _spans(tokens: np.ndarray, sep: int, n: int, k: int, rng) -> list[list[int]]:
    """k random n-token spans of ``tokens`` that hold no separator."""
    out = []
    limit = len(tokens) - n
    while len(out) < k:
        starts = rng.integers(0, limit, size=4 * (k - len(out)) + 16)
        for s in starts:
            span = tokens[s : s + n]
            if not (span == sep).any():
                out.append(span.tolist())
                if len(out) == k:
                    break
    return out


def make_queries(index_dir: Path, heldout_jsonl: Path, k: int) -> Queries:
    rng = np.random.default_rng(SEED)
    tokens = np.fromfile(index_dir / "tokenized.0", dtype="<u2").astype(np.int64)
    sep = 0xFFFF
    q = Queries()
    for n in COUNT_NS:
        q.count[n] = _spans(tokens, sep, n, k, rng)
    q.prob = [(s[:-1], s[-1]) for s in _spans(tokens, sep, 6, k, rng)]
    for n in (1, 3):
        q.ntd[n] = _spans(tokens, sep, n, k, rng)
    q.search = _spans(tokens, sep, 5, k, rng)
    per_n = BATCH // 4
    q.batch = [np.asarray(s, dtype=np.int64) for n in (1, 2, 5, 10) for s in _spans(tokens, sep, n, per_n, rng)]
    # held-out contexts: INFGRAM_CONTEXT tokens and the token that follows them
    held = heldout_ids(heldout_jsonl, INFGRAM_CONTEXT + 1)
    while len(q.infgram) < k and held:
        ids = held[int(rng.integers(len(held)))]
        e = int(rng.integers(INFGRAM_CONTEXT, len(ids)))
        q.infgram.append((ids[e - INFGRAM_CONTEXT : e].tolist(), int(ids[e])))
    return q


# ----------------------------------------------------------------------------------------------
# Latency runs
# ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    op: str
    ours: Latency
    theirs: Latency | None
    target: float | None  # required p50 ratio (theirs / ours)
    note: str = ""
    ours_capped: Latency | None = None


def run_latencies(index_dir: Path, q: Queries) -> tuple[list[Row], dict]:
    from infini_gram.engine import InfiniGramEngine

    from engine import NgramIndex, PackedQueries

    drop_into_page_cache(index_dir)  # before either engine maps the files
    ours = NgramIndex.open(index_dir)
    ours.warmup()
    theirs = InfiniGramEngine(str(index_dir), eos_token_id=50256, vocab_size=65535, token_dtype="u16",
                              ds_prefetch_depth=0)
    rows: list[Row] = []
    extra: dict = {}

    for n in COUNT_NS:
        log(f"count n={n}")
        a, b = time_pair(ours.count, theirs.count, q.count[n])
        rows.append(Row(f"count n={n}", a, b, 30.0))

    log("prob")
    rows.append(Row("prob (5-token prompt)", *time_pair(ours.prob, theirs.prob, q.prob), 10.0))

    for n, prompts in q.ntd.items():
        log(f"ntd n={n}")
        a, b = time_pair(ours.ntd, lambda p: theirs.ntd(p, max_support=IG_MAX_SUPPORT), prompts)
        capped = time_calls(lambda p: ours.ntd(p, max_support=IG_MAX_SUPPORT), prompts)
        sampled = sum(theirs.ntd(p, max_support=IG_MAX_SUPPORT)["approx"] for p in prompts[:200])
        rows.append(Row(f"ntd ({n}-token prompt)", a, b, 10.0,
                        f"infini-gram sampled {100 * sampled / min(200, len(prompts)):.0f}% (ours exact)", capped))

    log("infgram_prob")
    rows.append(Row(f"infgram_prob ({INFGRAM_CONTEXT}-token held-out context)",
                    *time_pair(ours.infgram_prob, theirs.infgram_prob, q.infgram), 10.0))
    log("infgram_ntd")
    prompts = [p for p, _ in q.infgram]
    a, b = time_pair(ours.infgram_ntd, lambda p: theirs.infgram_ntd(p, max_support=IG_MAX_SUPPORT), prompts)
    capped = time_calls(lambda p: ours.infgram_ntd(p, max_support=IG_MAX_SUPPORT), prompts)
    sampled = sum(theirs.infgram_ntd(p, max_support=IG_MAX_SUPPORT)["approx"] for p in prompts[:200])
    suffix = float(np.median([ours.infgram_prob(p, c).suffix_len for p, c in q.infgram[:200]]))
    rows.append(Row(f"infgram_ntd ({INFGRAM_CONTEXT}-token held-out context)", a, b, 10.0,
                    f"median suffix_len {suffix:g}; infini-gram sampled "
                    f"{100 * sampled / min(200, len(prompts)):.0f}%", capped))

    log("search_docs")
    rows.append(Row("search_docs (5-gram, 10 docs, 100 tokens each)",
                    *time_pair(lambda p: ours.search_docs(p, max_docs=10, max_disp_len=100),
                               lambda p: theirs.search_docs(p, maxnum=10, max_disp_len=100), q.search), None))

    log("batched count")
    packed = PackedQueries.from_list(q.batch)
    extra["ours_batch_qps"] = throughput(lambda: ours.count_batch(packed), len(packed), 2.0)
    lists = [x.tolist() for x in q.batch[:: max(1, len(q.batch) // 20000)]]
    extra["ours_loop_qps"] = throughput(lambda: [ours.count(x) for x in lists], len(lists), 1.0)
    extra["ig_loop_qps"] = throughput(lambda: [theirs.count(x) for x in lists], len(lists), 1.0)
    extra["batch_size"] = len(packed)

    # Every answer the two engines give to the count queries agrees (a cheap sanity check here;
    # tests/query/test_infinigram_compat.py checks every method exactly).
    extra["counts_agree"] = all(ours.count(x) == theirs.count(x)["count"] for n in COUNT_NS for x in q.count[n][:100])
    return rows, extra


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _mb(x: int) -> str:
    return f"{x / 2**20:,.0f} MiB" if x >= 2**20 else f"{x / 2**10:,.0f} KiB"


def build_table(builds: dict[str, Build]) -> str:
    """Our build against infini-gram's indexer, run unmodified (transformers' GPT-2 tokenizer) and with
    our tokenizer swapped in; ratios are theirs over ours."""
    o, t, u = builds["ours"], builds["infini-gram"], builds["infini-gram, our tokenizer"]

    def tok(b: Build):
        return b.tokenize_seconds

    rows = [
        ["build wall time (s): read, tokenize, sort, write", o.seconds, t.seconds, ratio(t.seconds, o.seconds),
         u.seconds, ratio(u.seconds, o.seconds), ">= 5x"],
        ["tokenize phase (s) (infini-gram: wall less its step 2)", tok(o), tok(t), ratio(tok(t), tok(o)), tok(u),
         ratio(tok(u), tok(o)), ""],
        ["suffix-array phase (s)", o.sort_seconds, t.sort_seconds, ratio(t.sort_seconds, o.sort_seconds),
         u.sort_seconds, ratio(u.sort_seconds, o.sort_seconds), ""],
        ["peak RSS, process tree", _mb(o.peak_rss), _mb(t.peak_rss), ratio(t.peak_rss, o.peak_rss), _mb(u.peak_rss),
         ratio(u.peak_rss, o.peak_rss), ""],
        ["peak RSS per token (B)", o.peak_per_token, t.peak_per_token, "", u.peak_per_token, "", "<= 16"],
        ["largest single process per token (B)", o.max_single_rss / o.tokens, t.max_single_rss / t.tokens, "",
         u.max_single_rss / u.tokens, "", ""],
        ["on disk per token (B): tokenized+table+offset", o.disk_per_token, t.disk_per_token, "", u.disk_per_token,
         "", "<= 6 (< 4 GiB shard)"],
        ["on disk per token (B): all files (metadata, manifest)", o.total_bytes / o.tokens, t.total_bytes / t.tokens,
         "", u.total_bytes / u.tokens, "", ""],
    ]
    return markdown_table(["build", "ours", "infini-gram", "ratio", "infini-gram, our tokenizer", "ratio", "target"],
                          rows)


BUILD_NOTE = (
    "Builds: each tool runs in a subprocess on the same JSONL file, from reading it to a finished index "
    "(ours: `engine.build_index(..., tokenizer=\"gpt2\", workers=N)`: tokenized, offset, metadata, metaoff, "
    "table, manifest with sha256 checksums, tokenizer copy; infini-gram: `python -m infini_gram.indexing "
    "--tokenizer gpt2 --token_dtype u16 --add_metadata --shards 1 --cpus N`: tokenized, offset, metadata, "
    "metaoff, table). \"infini-gram\" is its indexer unmodified, tokenizing with transformers' GPT-2 "
    "tokenizer (loaded offline from a local Hugging Face cache whose vocab.json/merges.txt are derived from "
    "the same GPT-2 ranks as ours, as the hub cannot be reached here); \"infini-gram, our tokenizer\" "
    "swaps in our tiktoken GPT-2 tokenizer, isolating the indexer. Both give the same token ids."
)


def report_builds(title: str, corpus: Path, builds: dict[str, Build], identical: bool) -> str:
    o = builds["ours"]
    return "\n".join([
        f"### {title}", "",
        f"{o.tokens:,} GPT-2 tokens (u16, one shard; JSONL {_mb((corpus / 'corpus.jsonl').stat().st_size)}). "
        f"Our token and suffix-array files are {'byte-identical to' if identical else 'NOT identical to'} "
        "those of both infini-gram runs.", "", build_table(builds), ""])


def report_corpus(title: str, corpus: Path, builds: dict[str, Build], identical: bool, rows: list[Row],
                  extra: dict) -> str:
    docs = sum(1 for _ in open(corpus / "corpus.jsonl", encoding="utf-8"))
    text_bytes = (corpus / "corpus.jsonl").stat().st_size
    o = builds["ours"]
    out = [f"### {title}", "",
           f"{docs:,} documents, {o.tokens:,} GPT-2 tokens (u16, one shard; JSONL {_mb(text_bytes)}). "
           f"Our token and suffix-array files are {'byte-identical to' if identical else 'NOT identical to'} "
           "infini-gram's.", ""]
    out += [build_table(builds), ""]
    lat_rows = []
    for r in rows:
        meets = "" if r.target is None else ("yes" if r.theirs.p50 / r.ours.p50 >= r.target else "**no**")
        lat_rows.append([r.op, r.ours.p50, r.ours.p99, r.theirs.p50, r.theirs.p99, ratio(r.theirs.p50, r.ours.p50),
                         f">= {r.target:g}x" if r.target else "", meets,
                         "" if r.ours_capped is None else fmt(r.ours_capped.p50), r.note])
    out += [markdown_table(["query", "ours p50 (µs)", "ours p99", "infini-gram p50", "infini-gram p99",
                            "p50 ratio", "target", "met", "ours capped p50", "note"], lat_rows), ""]
    qps = extra["ours_batch_qps"]
    out += [markdown_table(["batched count", "queries/s", "target"], [
        [f"ours count_batch ({extra['batch_size']:,} queries, n = 1/2/5/10)", qps,
         ">= 500,000 (" + ("met" if qps >= 500_000 else "**not met**") + ")"],
        ["ours count() in a Python loop", extra["ours_loop_qps"], ""],
        ["infini-gram count() in a Python loop", extra["ig_loop_qps"], ""],
        ["ratio count_batch / infini-gram loop", ratio(qps, extra["ig_loop_qps"]).replace("x", "") + "x", ""],
    ]), ""]
    if not extra["counts_agree"]:
        out += ["**Counts disagree between the engines on some queries.**", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Sizes: " + "; ".join(f"{k}: {v['linux_mb']} MB of C, {'+'.join(v['english'])}, "
                                                               f"{v['queries']} queries" for k, v in SIZES.items()))
    ap.add_argument("--size", choices=sorted(SIZES), default="moderate")
    ap.add_argument("--linux-mb", type=float, help="MB of Linux .c/.h files to index (overrides --size)")
    ap.add_argument("--queries", type=int, help="random queries per kind (overrides --size)")
    ap.add_argument("--only", choices=("linux", "english"), help="run one corpus only")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for both builders")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the indexes even if cached")
    ap.add_argument("--cache", type=Path, help="where corpora and indexes go (default $NGRAM_CACHE/bench_engine)")
    ap.add_argument("--out", type=Path, help="where the table goes (default bench/results/engine.md, or "
                                             "engine_build.md with --builds-only)")
    ap.add_argument("--builds-only", action="store_true", help="measure the builds only, no queries")
    ap.add_argument("--build-repeats", type=int, default=1,
                    help="build each corpus this many times per builder, in turns; report the median run")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = Path(__file__).resolve().parent / "results" / ("engine_build.md" if args.builds_only else "engine.md")

    from engine.fetch import cache_dir

    size = dict(SIZES[args.size])
    if args.linux_mb:
        size["linux_mb"] = args.linux_mb
    if args.queries:
        size["queries"] = args.queries
    root = args.cache or (cache_dir() / "bench_engine")
    root.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = []
    corpora = []
    if args.only in (None, "linux"):
        corpora.append((f"Linux 6.1 kernel C source, first {size['linux_mb']:g} MB of .c/.h files",
                        lambda: prepare_linux(root, size["linux_mb"])))
    if args.only in (None, "english"):
        corpora.append(("English: " + ", ".join(size["english"]), lambda: prepare_english(root, size["english"])))
    for title, prepare in corpora:
        corpus = prepare()
        index_dir, builds = ensure_builds(corpus, args.workers, args.rebuild, args.build_repeats)
        identical = all(files_identical(index_dir, corpus / d) for d in ("index-infinigram", "index-infinigram-ourtok"))
        if args.builds_only:
            sections.append(report_builds(title, corpus, builds, identical))
            continue
        log(f"{title}: drawing queries")
        q = make_queries(index_dir, corpus / "heldout.jsonl", size["queries"])
        rows, extra = run_latencies(index_dir, q)
        sections.append(report_corpus(title, corpus, builds, identical, rows, extra))

    cmd = "python bench/bench_engine.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.builds_only:
        head = ["## Index builds: ours vs infini-gram 2.6.0's indexer", "",
                f"`{cmd.strip()}` ({started}; median of {max(1, args.build_repeats)} run(s) per builder, taken in "
                "turns).", ""]
        tail = ["Ratios are infini-gram's over ours (higher is better for us).", ""]
    else:
        head = ["## Engine benchmark: ours vs infini-gram 2.6.0", "",
                f"`{cmd.strip()}` ({started}; {size['queries']:,} random queries per kind; latencies are per call "
                "through each engine's public Python API, index files in page cache).", ""]
        tail = ["Ratios are infini-gram's time over ours (higher is better for us). \"ours capped\" is our ntd with "
                f"max_support={IG_MAX_SUPPORT}, infini-gram's sampling, for comparison; the main column is our exact "
                "ntd.", ""]
    text = "\n".join([*head, f"Machine: {machine_line(info)}.", "", *sections, *tail, BUILD_NOTE, ""])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
