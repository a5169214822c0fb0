"""The `ngram` command: build, inspect, verify and query indexes (and serve them, see cli_serve)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from engine.cli.args import add, command
from engine.errors import NgramError
from engine.units import size_arg

# Subcommands that live in their own modules, each exposing add_parsers(subparsers) or add_parser(subparsers).
_PLUGIN_MODULES = ("engine.cli.serve", "engine.cli.ngrams", "engine.fetch", "engine.cli.demo", "engine.build.shardmap",
                  "engine.cli.storage")


def _print_json(payload) -> None:
    print(json.dumps(payload, indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)


# ---------------------------------------------------------------------------------------------- build
def _cmd_build(args) -> int:
    from engine.build.builder import build_index

    path = build_index(
        args.output,
        args.inputs,
        tokenizer=None if args.tokenizer == "none" else args.tokenizer,
        text_field=args.text_field,
        line_per_doc=args.line_per_doc,
        vocab_size=args.vocab_size,
        max_memory=args.max_memory,
        workers=args.workers,
        metadata=not args.no_metadata,
        overwrite=args.overwrite,
        progress=not args.quiet,
        serve_targets=args.serve_targets,
        directory_budget=args.directory_budget,
        **({"executor": args.executor, "ray_address": args.ray_address} if args.executor != "local" else {}),
    )
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    print(f"index ready at {path}: {manifest['num_tokens']:,} tokens, {manifest['num_docs']:,} documents, "
          f"{len(manifest['shards'])} shard(s), {manifest['token_dtype']}")
    return 0


def directory_budget_arg(text: str) -> int:
    """argparse type of --directory-budget (build, serve): a size such as 256M."""
    from engine.storage.directory import parse_budget

    return parse_budget(text)


def _add_build(sub) -> None:
    p = sub.add_parser("build", help="build an index from text, JSONL, Parquet or pre-tokenized files",
                       description="Tokenize documents and write a sharded suffix-array index. Rerunning the same "
                                   "command after an interruption resumes where it stopped.")
    p.add_argument("inputs", nargs="+", help="files, directories or globs (.txt, .jsonl[.gz|.zst], .parquet, .npz)")
    p.add_argument("-o", "--output", required=True, help="index directory to create")
    p.add_argument("--tokenizer", default="bytes",
                   help="'bytes', 'gpt2', 'llama3', 'mistral', a tokenizer.json, .tiktoken or .model file, or "
                        "'none' for .npz token input (default: bytes)")
    p.add_argument("--text-field", default="text", help="JSONL field / Parquet column holding the text")
    p.add_argument("--line-per-doc", action="store_true", help="each line of a text file is one document")
    p.add_argument("--vocab-size", type=int, help="vocabulary size for pre-tokenized input without a tokenizer")
    p.add_argument("--max-memory", type=size_arg,
                   help="memory budget for sorting, e.g. 8G (default: 60%% of available memory)")
    p.add_argument("--workers", type=int, help="tokenizer processes and parallel sorts (default: CPU count)")
    p.add_argument("--no-metadata", action="store_true", help="do not store per-document metadata")
    p.add_argument("--directory-budget", type=directory_budget_arg, metavar="BYTES",
                   help="most bytes of sampled suffixes in each shard's search directory (directory.N), e.g. 64M "
                        "(default 256 MiB; the directory also holds 1 MiB of first-token ranges for u16 tokens)")
    p.add_argument("--overwrite", action="store_true", help="replace a different index already in --output")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="run shard tasks in this process pool (local) or on Ray")
    p.add_argument("--ray-address", help="Ray cluster address (default: start Ray embedded)")
    p.add_argument("--serve-targets", nargs="+", metavar="HOST:PORT",
                   help="also write per-server views and the router's shardmap.json for these shard servers")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_build)


# ----------------------------------------------------------------------------------------- info / verify
def _open(args):
    from engine.index import NgramIndex

    opened = getattr(args, "opened", None)
    return opened if opened is not None else NgramIndex.open(args.index, load=getattr(args, "load", "mmap"))


def _cmd_info(args) -> int:
    """Print an index's size, tokenizer and build facts."""
    from engine.storage.directory import describe

    index = _open(args)
    info = index.info()
    directories = describe(index)
    if args.json:
        _print_json({**info, "search_directories": directories, "manifest": index.manifest})
        return 0
    for key, value in info.items():
        print(f"{key:>22}: {value}")
    in_memory = sum(d["source"] == "memory" for d in directories)
    budget = (index.manifest or {}).get("build", {}).get("directory_budget")
    print(f"{'search directories':>22}: {sum(d['bytes'] for d in directories):,} bytes"
          + (f" (budget {budget:,} bytes of samples per shard)" if budget else "") + ", sample stride "
          f"{'/'.join(sorted({str(d['sample_stride']) for d in directories}))}, "
          + (f"{in_memory} of {len(directories)} built in memory at open (run `ngram index-directory`)" if in_memory
             else "memory-mapped from directory.N files"))
    manifest = index.manifest
    if manifest:
        disk = sum(f["bytes"] for s in manifest["shards"] for f in s["files"].values())
        print(f"{'bytes on disk':>22}: {disk:,} ({disk / max(1, manifest['num_tokens']):.2f} per token)")
        print(f"{'built':>22}: {manifest['build']['finished']} in {manifest['build']['seconds']} s")
    return 0


def _cmd_verify(args) -> int:
    """Re-check an index: file sizes and sha256 against the manifest, and the order of adjacent suffixes (a
    random sample by default). Exits 1 on any problem."""
    from engine.build.verify import verify_index

    report = verify_index(args.index, full=args.full, samples=args.samples, checksums=not args.no_checksums,
                          progress=not args.json)
    if args.json:
        _print_json({"ok": report.ok, "problems": report.problems, "checked": report.checked})
    else:
        for line in report.checked:
            print(f"checked {line}")
        for line in report.problems:
            print(f"PROBLEM {line}")
        print("OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
    return 0 if report.ok else 1


def _add_info_verify(sub) -> None:
    p = command(sub, "info", _cmd_info, "print what an index holds")
    p.add_argument("index", nargs="+", help="index directory (several: opened together)")
    add(p, "json")
    p = command(sub, "verify", _cmd_verify, "check sizes, checksums and suffix-array order", "index")
    p.add_argument("--full", action="store_true", help="check every adjacent suffix pair, not a sample")
    p.add_argument("--samples", type=int, default=100_000, help="adjacent pairs to check per shard (default 100000)")
    p.add_argument("--no-checksums", action="store_true", help="skip sha256 (fast)")
    add(p, "json")


# ---------------------------------------------------------------------------------------------- query
def _query_ids(index, args):
    if args.ids is not None:  # --ids "" is the empty query on purpose: every position (a unigram view)
        try:
            return [int(t) for t in args.ids.replace(",", " ").split()]
        except ValueError:
            raise NgramError(f"--ids takes integer token ids separated by spaces or commas, not {args.ids!r}") \
                from None
    if args.text is None:
        raise NgramError(f"give the query as TEXT (e.g. `ngram query INDEX {args.kind} \" the Lord\"`) or as "
                         "token ids with --ids '464 3290'")
    return index.tokenize(args.text)


def _show_tokens(index, ids) -> str:
    if index.tokenizer is None:
        return " ".join(str(int(t)) for t in ids)
    return "".join(index.tokenizer.token_str(int(t)) for t in ids)


def _distribution_rows(index, dist, top):
    order = np.argsort(-dist.counts, kind="stable")[:top]
    return [{"token": int(dist.tokens[i]), "text": _show_tokens(index, [dist.tokens[i]]),
             "count": int(dist.counts[i]), "prob": float(dist.probs[i])} for i in order]


def _cmd_query(args) -> int:
    index = _open(args)
    kind = args.kind
    if kind == "doc":
        doc = index.get_doc_by_ix(int(args.text if args.text is not None else args.ids), args.max_disp_len)
        return _show_documents(index, args, {"count": 1}, [doc])
    ids = _query_ids(index, args)
    _say_if_compiling(kind, ids, args.max_support)
    if kind == "count":
        count = index.count(ids)
        if args.json:
            _print_json({"query": ids, "count": count})
        elif len(ids) == 0:
            print(f"{count:,} positions in the index (the empty query matches every token and document start)")
        else:
            print(f"{count:,} occurrences of {_show_tokens(index, ids)!r} ({len(ids)} tokens)")
    elif kind in ("prob", "infgram-prob"):
        if args.cont is None:
            raise NgramError(f"`{kind}` needs --cont TOKEN_ID or --cont-text TEXT")
        method = index.prob if kind == "prob" else index.infgram_prob
        result = method(ids, args.cont)
        payload = {"query": ids, "cont": args.cont, **result.__dict__}
        if args.json:
            _print_json(payload)
        else:
            used = ids[len(ids) - result.suffix_len:] if kind == "infgram-prob" else ids
            print(f"P({_show_tokens(index, [args.cont])!r} | {_show_tokens(index, used)!r}) = {result.prob:.6g} "
                  f"({result.cont_count:,} / {result.prompt_count:,})")
    elif kind in ("ntd", "infgram-ntd"):
        method = index.ntd if kind == "ntd" else index.infgram_ntd
        dist = method(ids, max_support=args.max_support)
        rows = _distribution_rows(index, dist, args.top)
        if args.json:
            _print_json({"query": ids, "prompt_count": dist.prompt_count, "end_count": dist.end_count,
                         "approx": dist.approx, "suffix_len": getattr(dist, "suffix_len", None),
                         "distinct": len(dist.tokens), "top": rows})
        else:
            head = f"after {_show_tokens(index, ids)!r}"
            if kind == "infgram-ntd":
                head += f" (longest occurring suffix: {dist.suffix_len} tokens)"
            print(f"{head}: {dist.prompt_count:,} occurrences, {len(dist.tokens):,} distinct next tokens, "
                  f"{dist.end_count:,} document ends{' (approx)' if dist.approx else ''}")
            for row in rows:
                print(f"  {row['prob']:9.4%}  {row['count']:>12,}  {row['token']:>8}  {row['text']!r}")
    elif kind == "search":
        result = index.search_docs(ids, max_docs=args.top, max_disp_len=args.max_disp_len)
        return _show_documents(index, args, {"count": result.count}, result.documents)
    return 0


def _say_if_compiling(kind: str, ids, max_support) -> None:
    """One line on stderr when the kernels this query runs are not in numba's cache yet (a fresh
    install, or new sources): compiling them takes seconds, once per machine."""
    from engine.kernels import suffix as kernels
    from engine.kernels.cache import COMPILE_SECONDS, compile_notice

    base = {"infgram-prob": "prob", "infgram-ntd": "ntd"}.get(kind, kind)
    needed = {
        "count": [kernels.ids_ok, kernels.count_at],
        "prob": [kernels.ids_ok, kernels.prob_at],
        "ntd": [kernels.ids_ok, kernels.next_tokens_ids]
        + ([kernels.find_ranges, kernels.approx_next_keys] if max_support else []),
        "search": [kernels.ids_ok, kernels.find_ranges, kernels.pointers_at],
    }[base]
    line = compile_notice(needed, "query kernels", COMPILE_SECONDS[base])
    if line:
        print(line, file=sys.stderr, flush=True)


def _show_documents(index, args, header, docs) -> int:
    if args.json:
        _print_json({**header, "documents": [
            {**{k: v for k, v in d.__dict__.items() if k != "token_ids"}, "token_ids": d.token_ids.tolist(),
             "text": index.detokenize(d.token_ids) if index.tokenizer else None} for d in docs]})
        return 0
    if "count" in header and len(docs) != header["count"]:
        print(f"{header['count']:,} occurrences; showing {len(docs)} document(s)")
    for d in docs:
        print(f"--- document {d.doc_ix} (shard {d.shard}, {d.doc_len:,} tokens, showing {d.disp_len}) "
              f"metadata={json.dumps(d.metadata)}")
        print(index.detokenize(d.token_ids) if index.tokenizer else " ".join(map(str, d.token_ids.tolist())))
    return 0


def _add_query(sub) -> None:
    p = sub.add_parser("query", help="count, probabilities, next-token distributions, search, documents",
                       description="Query an index. The query is TEXT (tokenized with the index's tokenizer) or "
                                   "--ids '1 2 3'. For `doc`, TEXT is the document number.")
    p.add_argument("index", help="index directory")
    p.add_argument("kind", choices=["count", "prob", "ntd", "infgram-prob", "infgram-ntd", "search", "doc"])
    p.add_argument("text", nargs="?", help="query text (or document number for `doc`)")
    p.add_argument("--ids", help="query as token ids, space or comma separated")
    p.add_argument("--cont", type=int, help="continuation token id for prob / infgram-prob")
    p.add_argument("--cont-text", help="continuation as text (its first token)")
    p.add_argument("--max-support", type=int, help="cap the scanned occurrences as infini-gram does (approx)")
    p.add_argument("--top", type=int, default=10, help="rows (ntd) or documents (search) to show (default 10)")
    p.add_argument("--max-disp-len", type=int, default=200, help="tokens to show per document (default 200)")
    p.add_argument("--load", choices=["mmap", "ram"], default="mmap", help="how to open the index")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_query_entry)


def _cmd_query_entry(args) -> int:
    if args.cont_text is not None:
        args.opened = _open(args)  # _cmd_query uses it too (one open, one tokenizer load)
        ids = args.opened.tokenize(args.cont_text)
        if len(ids) == 0:
            raise NgramError("--cont-text tokenizes to nothing")
        args.cont = int(ids[0])
    return _cmd_query(args)


# ---------------------------------------------------------------------------------------------- main
_CORE_COMMANDS = ("build", "info", "verify", "query")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; for one of _CORE_COMMANDS, just that command's (the plugin modules' imports,
    gRPC among them, are a tenth of a second of every `ngram query`)."""
    parser = argparse.ArgumentParser(
        prog="ngram",
        description="Exact n-gram and infini-gram queries over sharded suffix-array indexes.",
        epilog="Run `ngram COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_build(sub)
    _add_info_verify(sub)
    _add_query(sub)
    for name in _PLUGIN_MODULES if command not in _CORE_COMMANDS else ():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name != name:
                raise
            continue
        (getattr(module, "add_parsers", None) or module.add_parser)(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ngram-engine")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    command = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NgramError as exc:
        print(f"ngram {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`ngram info IDX | head`): stop quietly, as other Unix tools do. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
