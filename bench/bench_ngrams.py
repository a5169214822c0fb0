"""Frequent n-grams, longest matches / ∞-gram probabilities of every position, attribution and CNF.

    python bench/bench_ngrams.py --index DIR                 # any GPT-2 (u16) index, e.g. the Linux one
    python bench/bench_ngrams.py --build-linux DIR           # build the Linux-kernel index first (once)
    python bench/bench_ngrams.py --index DIR --skip-ngrams   # only the per-text latencies

Targets (issue 4): the top 1,000,000 n-grams for n = 2..5 over the Linux-kernel index within 15
minutes and 12 GiB; longest matches of a 1,024-token text within 5 ms and ∞-gram probabilities of
all its positions within 10 ms on an index of 100M+ tokens.

- Frequent n-grams run as ``ngram ngrams`` in a subprocess whose wall time and peak RSS are
  measured (RSS includes the index pages the walk touches through mmap, which are page cache,
  not allocations).
- Texts of 1,024 GPT-2 tokens of three kinds: copied from an indexed document ("memorized"),
  held-out code (the kernel tarball's Rust and Python files, which an index of its .c/.h files never
  saw) and English prose (Canterbury). Per text, ours: ``longest_matches`` and ``infgram_probs``
  (one pass); the per-position way for comparison: ``infgram_prob_batch`` over all 1,024 prefixes
  (our parallel kernel, one ∞-gram query per position) and infini-gram 2.6.0's ``infgram_prob``
  called per position on the same files; ``attribute`` (ours) next to infini-gram's
  ``attribute`` (different definitions: ours reports every maximal span >= min_len, theirs the
  maximal spans with count <= max_cnt, with its own filters), and two CNF queries.

Writes markdown to bench/results/ngrams.md (and prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from engine.kernels import suffix as kernels  # noqa: E402
from bench.common import (  # noqa: E402
    Latency,
    drop_into_page_cache,
    log,
    machine_line,
    markdown_table,
    python_env,
    ratio,
    run_measured,
    time_calls,
)

ROOT = Path(__file__).resolve().parents[1]
TEXT_TOKENS = 1024


# ---------------------------------------------------------------------------------------------- build
def build_linux(out: Path, workers: int) -> Path:
    """The Linux 6.1 .c/.h files (one document each, tarball order), GPT-2 tokens, one index."""
    from engine.build.builder import build_index
    from bench.corpora import iter_linux_sources

    if (out / "manifest.json").exists():
        return out
    docs = (b.decode("utf-8", errors="replace") for _, b in iter_linux_sources(progress=True))
    build_index(out, documents=docs, tokenizer="gpt2", metadata=False, progress=True, workers=workers)
    return out


# ---------------------------------------------------------------------------------------------- texts
def _windows(ids: np.ndarray, count: int, rng) -> list[np.ndarray]:
    if len(ids) < TEXT_TOKENS:
        return []
    starts = rng.integers(0, len(ids) - TEXT_TOKENS + 1, size=count)
    return [ids[s:s + TEXT_TOKENS].astype(np.int64) for s in starts]


def texts(index, per_kind: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    # Memorized: windows of long indexed documents.
    docs = []
    for ix in rng.permutation(index.num_docs)[:2000]:
        d = index.get_doc_by_ix(int(ix), max_disp_len=TEXT_TOKENS * 4)
        if d.doc_len >= TEXT_TOKENS:
            docs.append(d.token_ids)
        if len(docs) >= per_kind:
            break
    out["memorized"] = [np.asarray(d[:TEXT_TOKENS], dtype=np.int64) for d in docs]
    if index.tokenizer is None:
        return out
    try:
        from bench.corpora import iter_linux_sources

        held = []
        for _, data in iter_linux_sources(select=lambda n: n.endswith((".rs", ".py"))):
            ids = index.tokenize(data.decode("utf-8", errors="replace"))
            if len(ids) >= TEXT_TOKENS:
                held.append(ids)
            if len(held) >= 4 * per_kind:
                break
        out["held-out code"] = [w for ids in held[::4] for w in _windows(ids, 1, rng)][:per_kind]
    except Exception as exc:  # noqa: BLE001 - the tarball is optional
        log(f"no held-out code texts ({exc})")
    try:
        from engine.fetch import fetch

        path = Path(fetch("canterbury")) / "alice29.txt"
        ids = index.tokenize(path.read_text(encoding="latin-1"))
        out["English"] = _windows(ids, per_kind, rng)
    except Exception as exc:  # noqa: BLE001
        log(f"no English texts ({exc})")
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------------------------------------- runs
def bench_ngrams(index_dir: Path, n_range: str, top_k: int, work: Path) -> tuple[dict, str]:
    out = work / "top.npz"
    cmd = [sys.executable, "-m", "engine.cli.main", "ngrams", str(index_dir), "--n", n_range, "--top-k", str(top_k),
           "--out", str(out), "--json", "--quiet", "--show", "0", "--tmp-dir", str(work)]
    log("frequent n-grams: " + " ".join(cmd[2:]))
    res = run_measured(cmd, env=python_env(), cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"ngram ngrams failed:\n{res.stderr[-3000:]}")
    summary = json.loads(res.stdout)
    from engine.index import NgramIndex
    from engine.storage.ngram_table import NgramTable

    table = NgramTable.open(out)
    index = NgramIndex.open(index_dir)
    show = []
    for line in table.text_rows(lambda ids: "".join(index.tokenizer.token_str(int(t)) for t in ids)
                                if index.tokenizer else " ".join(map(str, ids)), 12):
        c, n, _, text = line.split("\t")
        show.append(f"| {int(c):,} | {n} | `{text[1:-1][:60]}` |")
    summary.update(seconds_wall=res.seconds, peak_rss=res.peak_rss_bytes)
    return summary, "\n".join(["| count | n | text |", "| --- | --- | --- |"] + show)


def _ms(lat: Latency) -> float:
    return lat.p50 / 1000.0


def _cpu_ms(fn, items) -> float:
    """Median CPU time of this process per call (ms; all its threads, since a long text's pass runs
    in chunks on several): what the work costs when other processes make wall time wait for a core."""
    out = []
    for t in items:
        c0 = time.process_time()
        fn(t)
        out.append(time.process_time() - c0)
    return 1e3 * float(np.median(out))


def hugepage_copy(index):
    """The same index with its token and suffix-array bytes copied into anonymous memory advised
    to use transparent huge pages (an experiment: fewer TLB misses per random read)."""
    import copy
    import mmap

    def copy_array(arr):
        m = mmap.mmap(-1, max(arr.nbytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(m, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            m.madvise(mmap.MADV_HUGEPAGE)
        a = np.frombuffer(m, dtype=arr.dtype)[:arr.size]
        a[:] = arr
        return a

    clone = copy.copy(index)
    clone._ds = tuple(copy_array(a) for a in index._ds)
    clone._sa = tuple(copy_array(a) for a in index._sa)
    clone._search = (kernels.shard_table(list(zip(clone._ds, clone._sa, clone._ps, clone._dirs))), index.token_width)
    return clone


def bench_texts(index_dir: Path, kinds: dict, per_position_texts: int, with_infinigram: bool,
                hugepages: bool) -> tuple[list, dict]:
    from engine import NgramIndex, PackedQueries

    index = NgramIndex.open(index_dir)
    index.warmup()
    hugepage_index = hugepage_copy(index) if hugepages else None
    probe = next(iter(kinds.values()))[0]
    index.longest_matches(probe)  # compile / load the kernels
    index.attribute(probe[:64], min_len=4)
    theirs = None
    if with_infinigram and index.token_width == 2:
        try:
            from infini_gram.engine import InfiniGramEngine

            theirs = InfiniGramEngine(str(index_dir), eos_token_id=index.eos_token_id or 0, vocab_size=65535,
                                      token_dtype="u16", ds_prefetch_depth=0)
        except Exception as exc:  # noqa: BLE001
            log(f"infini-gram unavailable ({exc})")
    rows, extra = [], {}
    for kind, items in kinds.items():
        log(f"texts: {kind} ({len(items)} x {TEXT_TOKENS} tokens)")
        lm = time_calls(index.longest_matches, items, warmup=2)
        ip = time_calls(index.infgram_probs, items, warmup=2)
        lm_cpu = _cpu_ms(index.longest_matches, items)
        att = time_calls(lambda t: index.attribute(t, min_len=10, max_count=1000, max_docs=1), items, warmup=1)
        lengths = np.concatenate([index.longest_matches(t).lengths for t in items])
        creativity = float(np.mean([index.attribute(t, min_len=10, max_docs=0).creativity for t in items]))
        few = items[:per_position_texts]

        packed = []
        for t in few:
            offs = np.concatenate([[0], np.cumsum(np.arange(len(t)))]).astype(np.int64)
            toks = np.concatenate([t[:j] for j in range(len(t))]).astype(np.int64)
            packed.append((PackedQueries(toks, offs), t))
        pp = time_calls(lambda q, t: index.infgram_prob_batch(q, t), packed, warmup=1)
        # Exactness: the one pass equals the per-position queries.
        for q, t in packed:
            a, b = index.infgram_probs(t), index.infgram_prob_batch(q, t)
            assert np.array_equal(a.prompt_counts, b.prompt_counts) and np.array_equal(a.cont_counts, b.cont_counts)
        ig = ig_att = None
        if theirs is not None:
            def ig_all(t):
                ids = [int(x) for x in t]
                for j in range(len(ids)):
                    theirs.infgram_prob(prompt_ids=ids[:j], cont_id=ids[j])

            ig = time_calls(ig_all, few[:2], warmup=0)
            ig_att = time_calls(lambda t: theirs.attribute(input_ids=[int(x) for x in t], delim_ids=[], min_len=10,
                                                           max_cnt=1000, enforce_bow=False), items, warmup=1)
        huge = None
        if hugepage_index is not None:
            hugepage_index.longest_matches(items[0])
            huge = _ms(time_calls(hugepage_index.longest_matches, items, warmup=1))
        rows.append((kind, len(items), float(np.mean(lengths)), int(np.max(lengths)), creativity,
                     _ms(lm), lm_cpu, huge, _ms(ip), _ms(pp), _ms(ig) if ig else None, _ms(att),
                     _ms(ig_att) if ig_att else None))
        extra[kind] = {"ratio_vs_batch": ratio(_ms(pp), _ms(ip)), "ratio_vs_infinigram": ratio(_ms(ig), _ms(ip))
                       if ig else "n/a"}
    return rows, extra


def bench_cnf(index_dir: Path) -> list:
    from engine import NgramIndex

    index = NgramIndex.open(index_dir)
    if index.tokenizer is None:
        return []
    queries = [
        ("kmalloc OR kzalloc AND GFP_ATOMIC", [[" kmalloc", " kzalloc"], [" GFP_ATOMIC"]]),
        ("spin_lock_irqsave AND mutex_lock", [[" spin_lock_irqsave"], [" mutex_lock"]]),
        ("EXPORT_SYMBOL_GPL AND MODULE_LICENSE AND devm_kzalloc",
         [["EXPORT_SYMBOL_GPL"], ["MODULE_LICENSE"], [" devm_kzalloc"]]),
    ]
    rows = []
    for name, cnf in queries:
        index.count_cnf(cnf)
        t0 = time.perf_counter()
        res = index.count_cnf(cnf)
        t1 = time.perf_counter()
        index.search_docs_cnf(cnf, max_docs=10)
        t2 = time.perf_counter()
        rows.append((name, res.count, ", ".join(f"{c:,}" for c in res.clause_counts), str(res.scanned_clauses or "-"),
                     (t1 - t0) * 1e3, (t2 - t1) * 1e3))
    return rows


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--index", type=Path, help="index directory (GPT-2 u16 for the infini-gram comparison)")
    ap.add_argument("--build-linux", type=Path, help="build the Linux-kernel index here first (if absent)")
    ap.add_argument("--n", default="2-5")
    ap.add_argument("--top-k", type=int, default=1_000_000)
    ap.add_argument("--texts", type=int, default=20, help="texts per kind (default 20)")
    ap.add_argument("--per-position-texts", type=int, default=4, help="texts for the per-position baselines")
    ap.add_argument("--skip-ngrams", action="store_true")
    ap.add_argument("--no-infinigram", action="store_true")
    ap.add_argument("--hugepages", action="store_true",
                    help="also time longest_matches on a copy of the index in huge-page-backed memory")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ngrams.md")
    args = ap.parse_args()
    if args.build_linux:
        args.index = build_linux(args.build_linux, args.workers)
    if args.index is None:
        ap.error("give --index DIR or --build-linux DIR")
    from engine import NgramIndex

    log("reading the index into page cache")
    drop_into_page_cache(args.index)  # before the index is mapped
    index = NgramIndex.open(args.index)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = ["## Frequent n-grams, longest matches, attribution, CNF", "",
             f"`python bench/bench_ngrams.py --index {args.index}` ({started})", "",
             f"Machine: {machine_line()}", "",
             f"Index: {args.index}: {index.num_tokens:,} positions (tokens + one separator per document), "
             f"{index.num_docs:,} documents, {index.num_shards} shard(s), u{8 * index.token_width}, "
             f"tokenizer {index.tokenizer.kind if index.tokenizer else 'none'}.", ""]
    if not args.skip_ngrams:
        work = Path(tempfile.mkdtemp(prefix="bench-ngrams-", dir=args.out.parent if args.out.parent.exists() else None))
        try:
            summary, top = bench_ngrams(args.index, args.n, args.top_k, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        lines += ["### Top n-grams", "",
                  markdown_table(["query", "wall (s)", "peak RSS (GiB)", "rows", "threshold (K-th count)", "passes",
                                  "by n", "target"],
                                 [(f"top {args.top_k:,}, n={args.n}", summary["seconds_wall"],
                                   summary["peak_rss"] / 2**30, summary["rows"], summary["threshold"],
                                   "; ".join(f"c>={p['threshold']:,}: {p['rows']:,} rows"
                                             + (" (aborted)" if p.get("aborted") else "")
                                             for p in summary["passes"]),
                                   ", ".join(f"{k}: {v:,}" for k, v in summary["by_n"].items()),
                                   "<= 900 s, <= 12 GiB")]), "", "Most frequent:", "", top, ""]
    kinds = texts(index, args.texts)
    rows, extra = bench_texts(args.index, kinds, args.per_position_texts, not args.no_infinigram, args.hugepages)
    lines += ["### Every position of a 1,024-token text (p50 per text, ms)", "",
              markdown_table(["text", "texts", "mean match len", "max match len", "creativity (n=10)",
                              "longest_matches", "longest_matches CPU time", "longest_matches, huge pages",
                              "infgram_probs", "per-position: our infgram_prob_batch",
                              "per-position: infini-gram infgram_prob", "attribute (ours, max_count 1000)",
                              "attribute (infini-gram, max_cnt 1000)"], rows), "",
              "CPU time: the process's CPU time per call, all threads (wall time also waits for a core on a "
              "loaded machine). Huge pages: the same kernel on a copy of the index in anonymous memory "
              "advised MADV_HUGEPAGE (--hugepages; n/a without it).", "",
              "Targets: longest_matches <= 5 ms, infgram_probs <= 10 ms. Ratios of the one pass against one "
              "∞-gram query per position: " + "; ".join(f"{k}: {v['ratio_vs_batch']} vs our batch, "
                                                         f"{v['ratio_vs_infinigram']} vs infini-gram"
                                                         for k, v in extra.items()), ""]
    cnf_rows = bench_cnf(args.index)
    if cnf_rows:
        lines += ["### CNF (document-level AND of ORs, exact)", "",
                  markdown_table(["query", "documents", "clause occurrences", "scanned clauses", "count_cnf (ms)",
                                  "search_docs_cnf, 10 docs (ms)"], cnf_rows), ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
