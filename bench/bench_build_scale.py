"""Scale proof: index the whole Linux kernel C corpus (about 1.18 GB, about 560 M GPT-2 tokens).

Runs ``ngram build`` (the real CLI, in a subprocess) on the 55,444 ``.c``/``.h`` files of Linux 6.1
with the GPT-2 tokenizer, then infini-gram's indexer (``python -m infini_gram.indexing``) on the
same documents in the same order, and writes a markdown table to bench/results/build_scale.md:
wall time (and when tokenization ended), peak memory of the whole process tree against the budget,
bytes per token on disk, and whether the two tools wrote byte-identical ``tokenized``/``table``
files.

    python -m bench.bench_build_scale                      # full corpus, Ray embedded, 8 GiB budget
    python -m bench.bench_build_scale --executor local     # the thread/process-pool builder
    python -m bench.bench_build_scale --limit-bytes 50M    # a slice (the first files in path order)
    python -m bench.bench_build_scale --no-infinigram      # ours only

Notes on the peer. infini-gram's indexer reads JSONL and loads its tokenizer with
``transformers.AutoTokenizer.from_pretrained("gpt2")``, which needs the Hugging Face hub; offline,
the bench writes a local Hugging Face cache (``gpt2_hf_home``: vocab.json and merges.txt derived from
the same GPT-2 ranks our build uses) and runs the indexer unmodified against it with
``HF_HUB_OFFLINE=1``, so it tokenizes with transformers' own GPT-2 tokenizer, as it would online.
``--peer-tokenizer ours`` swaps in our tokenizer (tiktoken) instead, to time the indexer alone.
Both give the same ids, so the two tools' files can be compared byte for byte.
The conversion of the source tree to one JSONL file is timed apart and not charged to it.
Peak memory is sampled every 0.25 s over a tool's whole process tree (Ray's daemons and workers
included): *private* sums RssAnon (RSS less file-backed and shared pages: the memory a budget must
bound); *RSS* also counts file-backed pages, such as the memory-mapped suffix array being written,
which are page cache the kernel can write back and reclaim. This machine is shared and noisy: the
table records the load average and the CPU seconds used next to each wall time. ``--reuse-peer``
reuses the peer's last row (saved under --work) instead of running infini-gram again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from engine.units import parse_size

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "build_scale.md"

# Run infini-gram's indexer with the GPT-2 BPE from the local cache instead of the hub.
_PEER_WRAPPER = r"""
import sys
import transformers
from engine.tokenizers import load_tokenizer

class _GPT2:
    def __init__(self):
        self._enc = load_tokenizer("gpt2")._enc
    def encode(self, text):
        return self._enc.encode_ordinary(text)

transformers.AutoTokenizer.from_pretrained = staticmethod(lambda *a, **k: _GPT2())
sys.argv = ["infini_gram.indexing"] + sys.argv[1:]
import infini_gram.indexing as indexing  # its tok() must pickle by reference for the worker pool
indexing.main()
"""


def _bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list of a byte-level BPE given its ranks: the pair each token is made from, in rank
    order (for GPT-2 this recovers merges.txt: 50,000 merges, token 256 + i made by merge i)."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:  # apply lower-ranked merges until two parts remain
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges


def gpt2_hf_home(home: Path) -> Path:
    """A Hugging Face cache (``HF_HOME``) holding the ``gpt2`` tokenizer files (vocab.json, merges.txt,
    configs), written from the same GPT-2 ranks our builds use; with ``HF_HUB_OFFLINE=1``,
    ``transformers.AutoTokenizer.from_pretrained("gpt2")`` loads them instead of downloading, so
    infini-gram's indexer runs unmodified with transformers' own GPT-2 tokenizer."""
    repo = home / "hub" / "models--gpt2"
    if (repo / "refs" / "main").exists():
        return home
    from engine.tokenizers import bytes_to_unicode, load_tokenizer

    ranks = load_tokenizer("gpt2")._ranks
    chars = bytes_to_unicode()

    def spell(b: bytes) -> str:
        return "".join(chars[x] for x in b)

    snapshot = repo / "snapshots" / "local"
    snapshot.mkdir(parents=True, exist_ok=True)
    vocab = {spell(t): r for t, r in ranks.items()}
    vocab["<|endoftext|>"] = 50256
    (snapshot / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "".join(f"{spell(a)} {spell(b)}\n" for a, b in _bpe_merges(ranks))
    (snapshot / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
    (snapshot / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 50257}))
    (snapshot / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024, "add_prefix_space": False,
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("local")
    return home


class TreeMonitor:
    """Samples a process tree: peak summed RSS, CPU seconds, and when marker files appear."""

    def __init__(self, pid: int, markers: dict[str, Path] | None = None, interval: float = 0.25):
        self.root = psutil.Process(pid)
        self.markers = dict(markers or {})
        self.seen: dict[str, float] = {}
        self.peak_rss = 0
        self.peak_anon = 0
        self.cpu: dict[int, float] = {}
        self.interval = interval
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                procs = []
            rss = anon = 0
            for p in procs:
                try:
                    with p.oneshot():
                        mem = p.memory_info()
                        rss += mem.rss
                        anon += mem.rss - mem.shared  # RssAnon: not file-backed, not reclaimable
                        t = p.cpu_times()
                        self.cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_anon = max(self.peak_anon, anon)
            for name, path in list(self.markers.items()):
                if name not in self.seen and path.exists():
                    self.seen[name] = time.time() - self.started
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def run_monitored(cmd: list[str], log: Path, markers: dict[str, Path] | None = None, timeout: float | None = None,
                  env: dict | None = None) -> dict:
    load_before = os.getloadavg()[0]
    with open(log, "wb") as fh:
        start = time.time()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        mon = TreeMonitor(proc.pid, markers)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            rc = "timeout"
            proc.wait()
        wall = time.time() - start
        mon.stop()
    return {"rc": rc, "wall": wall, "peak_rss": mon.peak_rss, "peak_anon": mon.peak_anon, "cpu": mon.cpu_seconds, "markers": mon.seen,
            "load": (load_before + os.getloadavg()[0]) / 2}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def corpus_dir(limit: int | None, work: Path) -> tuple[Path, list[Path]]:
    """The extracted kernel tree, or a directory of symlinks to its first files up to ``limit`` bytes."""
    sys.path.insert(0, str(ROOT))
    from bench.corpora import fetch
    from engine.build.readers import expand_inputs

    src = fetch("linux-kernel-src")
    files = expand_inputs([src])
    if limit is None:
        return src, files
    chosen, total = [], 0
    for f in files:
        if total >= limit:
            break
        chosen.append(f)
        total += f.stat().st_size
    out = work / f"kernel-slice-{limit}"
    if not out.exists():
        tmp = work / f".tmp-slice-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for f in chosen:
            link = tmp / f.relative_to(src)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f)
        os.replace(tmp, out)
    return out, expand_inputs([out])


def write_jsonl(files: list[Path], target: Path) -> float:
    """One {"text": ...} line per file, read exactly as engine.build.readers reads a text file."""
    if target.exists():
        return 0.0
    start = time.time()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for f in files:
            with open(f, encoding="utf-8", errors="replace", newline="") as fh:
                out.write(json.dumps({"text": fh.read()}) + "\n")
    os.replace(tmp, target)
    return time.time() - start


def index_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir()
               if p.is_file() and p.name.split(".")[0] in ("tokenized", "table", "offset", "metadata", "metaoff"))


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def minutes(s: float) -> str:
    return f"{s / 60:.1f} min ({s:.0f} s)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--executor", choices=["local", "ray"], default="ray")
    ap.add_argument("--max-memory", default="8G", help="memory budget given to both tools (default 8G)")
    ap.add_argument("--limit-bytes", type=parse_size, help="index only the first files up to this many bytes")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "ngram-engine" / "bench_build_scale")
    ap.add_argument("--no-infinigram", action="store_true", help="skip the peer")
    ap.add_argument("--infinigram-timeout", type=float, default=2400, help="seconds before the peer is stopped")
    ap.add_argument("--reuse-peer", action="store_true", help="reuse infini-gram's last saved result")
    ap.add_argument("--peer-tokenizer", choices=["transformers", "ours"], default="transformers",
                    help="infini-gram's tokenizer: transformers' GPT-2 tokenizer loaded from a local cache "
                         "(its own code path, unmodified; default) or ours swapped in (tiktoken)")
    ap.add_argument("--keep", action="store_true", help="keep the built indexes")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    budget = parse_size(args.max_memory)
    args.work.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    src, files = corpus_dir(args.limit_bytes, args.work)
    corpus_bytes = sum(f.stat().st_size for f in files)
    print(f"corpus: {len(files):,} files, {corpus_bytes / 1e9:.3f} GB in {src} (ready in {time.time() - t0:.0f} s)",
          flush=True)
    tag = f"{args.limit_bytes or 'full'}"
    rows = []

    # ------------------------------------------------------------------------------------ ours
    ours = args.work / f"ours-{args.executor}-{tag}"
    shutil.rmtree(ours, ignore_errors=True)
    cmd = [sys.executable, "-m", "engine.cli.main", "build", str(src), "-o", str(ours), "--tokenizer", "gpt2",
           "--max-memory", args.max_memory, "--executor", args.executor, "-q"]
    shown = "ngram build " + " ".join(shlex.quote(c) for c in cmd[4:])
    print(f"running: {shown}", flush=True)
    r = run_monitored(cmd, args.work / f"ours-{args.executor}-{tag}.log",
                      markers={"tokenized": ours / ".build" / "tokenized.json"})
    if r["rc"] != 0:
        print((args.work / f"ours-{args.executor}-{tag}.log").read_text()[-3000:])
        raise SystemExit(f"ngram build failed (rc {r['rc']})")
    manifest = json.loads((ours / "manifest.json").read_text())
    disk = index_bytes(ours)
    tokens = manifest["num_tokens"]
    ours_files = {"tokenized": sha256(ours / "tokenized.0"), "table": sha256(ours / "table.0")} \
        if len(manifest["shards"]) == 1 else None
    rows.append({
        "tool": f"ngram-engine `--executor {args.executor}`", "cmd": shown, "rc": 0, "wall": r["wall"],
        "tok_end": r["markers"].get("tokenized"), "cpu": r["cpu"], "peak": r["peak_rss"], "anon": r["peak_anon"], "budget": budget,
        "tokens": tokens, "docs": manifest["num_docs"], "shards": len(manifest["shards"]), "disk": disk,
        "load": r["load"],
    })
    print(f"ours: {r['wall']:.0f} s, peak {gib(r['peak_anon'])} anon / {gib(r['peak_rss'])} RSS, {tokens:,} tokens, {disk / tokens:.2f} B/token",
          flush=True)

    # ------------------------------------------------------------------------------- infini-gram
    same = None
    saved_peer = args.work / f"infinigram-{tag}.json"
    if args.reuse_peer and saved_peer.exists():
        row = json.loads(saved_peer.read_text())
        rows.append(row)
        if row.get("sha") and ours_files:
            same = {k: row["sha"].get(k) == v for k, v in ours_files.items()}
    elif not args.no_infinigram:
        data = args.work / f"jsonl-{tag}"
        convert_s = write_jsonl(files, data / "kernel.jsonl")
        peer = args.work / f"infinigram-{tag}"
        shutil.rmtree(peer, ignore_errors=True)
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        ulimit = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
        peer_args = ["--data_dir", str(data), "--save_dir", str(peer), "--tokenizer", "gpt2", "--token_dtype", "u16",
                     "--cpus", str(os.cpu_count()), "--mem", str(max(1, budget // 2**30)), "--shards", "1",
                     "--ulimit", str(ulimit)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        if args.peer_tokenizer == "transformers":
            cmd = [sys.executable, "-m", "infini_gram.indexing"] + peer_args
            env["HF_HOME"] = str(gpt2_hf_home(args.work / "hf-home"))
        else:
            cmd = [sys.executable, "-c", _PEER_WRAPPER] + peer_args
        shown_peer = "python -m infini_gram.indexing " + " ".join(shlex.quote(a) for a in peer_args)
        if args.peer_tokenizer == "ours":
            shown_peer += " (tokenizer swapped for ours)"
        print(f"running: {shown_peer} (JSONL written in {convert_s:.0f} s)", flush=True)
        p = run_monitored(cmd, args.work / f"infinigram-{tag}.log", timeout=args.infinigram_timeout, env=env,
                          )
        ok = p["rc"] == 0 and (peer / "table.0").exists()
        peer_tokens = (peer / "tokenized.0").stat().st_size // 2 if ok else None
        rows.append({
            "tool": "infini-gram 2.6.0 indexer" + (" (transformers' GPT-2 tokenizer)" if args.peer_tokenizer ==
                                                   "transformers" else " (our tokenizer swapped in)"),
            "cmd": shown_peer, "rc": p["rc"], "wall": p["wall"], "tok_end": None,
            "cpu": p["cpu"], "peak": p["peak_rss"], "anon": p["peak_anon"], "budget": budget, "tokens": peer_tokens, "docs": len(files),
            "shards": 1 if ok else None, "disk": index_bytes(peer) if ok else None, "load": p["load"],
        })
        if ok:
            rows[-1]["sha"] = {k: sha256(peer / f"{k}.0") for k in ("tokenized", "table")}
            if ours_files:
                same = {k: rows[-1]["sha"][k] == v for k, v in ours_files.items()}
        saved_peer.write_text(json.dumps(rows[-1]))
        print(f"infini-gram: rc {p['rc']}, {p['wall']:.0f} s, peak {gib(p['peak_rss'])}, identical: {same}", flush=True)
        if not args.keep:
            shutil.rmtree(peer, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(ours, ignore_errors=True)

    # ------------------------------------------------------------------------------------ table
    lines = [
        "# Build at scale: the Linux kernel C corpus",
        "",
        f"Corpus: Linux 6.1 `.c`/`.h` files ({len(files):,} documents, {corpus_bytes / 1e9:.3f} GB"
        f"{'' if args.limit_bytes is None else f', a slice of the first {args.limit_bytes:,} bytes'}), GPT-2 BPE, "
        f"u16 tokens. Machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"{platform.python_implementation()} {platform.python_version()}, shared with other jobs "
        "(see the load column). Written by `python -m bench.bench_build_scale"
        f"{'' if args.executor == 'ray' else ' --executor local'}"
        f"{'' if args.limit_bytes is None else f' --limit-bytes {args.limit_bytes}'}`"
        f" on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| tool | exit | wall time | tokenized after | CPU s | load avg | peak memory: private (RSS) | budget "
        "| tokens | shards | bytes on disk | bytes/token |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        tok_end = f"{row['tok_end']:.0f} s" if row.get("tok_end") else "-"
        tokens = f"{row['tokens']:,}" if row["tokens"] else "-"
        disk = f"{row['disk'] / 1e9:.3f} GB" if row["disk"] else "-"
        per = f"{row['disk'] / row['tokens']:.2f}" if row["disk"] and row["tokens"] else "-"
        lines.append(f"| {row['tool']} | {row['rc']} | {minutes(row['wall'])} | {tok_end} | {row['cpu']:.0f} "
                     f"| {row['load']:.1f} | {gib(row['anon']) if row.get('anon') is not None else '-'} ({gib(row['peak'])}) | {gib(row['budget'])} | {tokens} "
                     f"| {row['shards'] or '-'} "
                     f"| {disk} | {per} |")
    lines += ["", "Commands:", ""] + [f"- `{row['cmd']}`" for row in rows]
    if same is not None:
        lines += ["", "Byte-identical to infini-gram's files: "
                  + ", ".join(f"`{k}.0` {'yes' if v else 'NO'}" for k, v in same.items()) + "."]
    lines += ["", "Targets (issue 6): within 15 minutes end to end, peak memory under the budget, at most 7 bytes "
              "per token on disk. Tokens count one separator per document, as `num_tokens` in the manifest."]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
