"""`ngram ngrams`, `ngram ngrams-view`, `ngram scone-vocab`, `ngram attribute` and `ngram cnf`.

The lead's engine/cli/main.py picks these up through ``add_parsers(subparsers)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from engine.cli.args import add, command
from engine.errors import NgramError


def _open(path, load="mmap"):
    from engine.index import NgramIndex

    return NgramIndex.open(path, load=load)


def _decoder(index):
    """ids -> text for the text views: token strings joined (so partial characters stay visible)."""
    if index is None or index.tokenizer is None:
        return lambda ids: " ".join(str(int(t)) for t in ids)
    tok = index.tokenizer
    return lambda ids: "".join(tok.token_str(int(t)) for t in ids)


def _print_rows(table, decode, limit: int, stream=None) -> None:
    stream = stream or sys.stdout  # looked up per call: sys.stdout may be replaced after import
    for line in table.text_rows(decode, limit):
        print(line, file=stream)


def _write_text_view(table, decode, path: str) -> None:
    if path == "-":
        _print_rows(table, decode, None)
        return
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("count\tn\tids\ttext\n")
        for line in table.text_rows(decode):
            fh.write(line + "\n")


def _summary(table) -> dict:
    meta = dict(table.meta)
    lengths = table.lengths
    meta["by_n"] = {str(int(n)): int((lengths == n).sum()) for n in np.unique(lengths)}
    return meta


# ---------------------------------------------------------------------------------------------- ngrams
def _cmd_ngrams(args) -> int:
    """List every n-gram of --n tokens occurring at least --min-count times in the whole index, or the
    --top-k most frequent, sorted by count then token ids, into an .npz table (engine.storage.ngram_table).
    Exact over all shards; bounded memory."""
    from engine.ngrams import frequent_ngrams, parse_n_range

    if args.top_k is None and args.min_count is None:
        raise NgramError("give --top-k K or --min-count C")
    index = _open(args.index, args.load)
    n_min, n_max = parse_n_range(args.n)
    table = frequent_ngrams(index, n_min, n_max, min_count=args.min_count, top_k=args.top_k, out=args.out,
                            progress=not args.quiet, tmp_dir=args.tmp_dir)
    decode = _decoder(index)
    if args.text:
        _write_text_view(table, decode, args.text)
    if args.json:
        print(json.dumps({"out": str(args.out), "rows": len(table), **_summary(table)}, indent=2))
    else:
        s = _summary(table)
        print(f"{len(table):,} n-grams (n={n_min}..{n_max}, count >= {s['threshold']:,}) -> {args.out} "
              f"in {s['seconds']:.1f}s; by n: {s['by_n']}", file=sys.stderr)
        if args.show and args.text != "-":
            _print_rows(table, decode, args.show)
    return 0


def _cmd_view(args) -> int:
    """Print the rows of an n-gram table (from `ngram ngrams` or `ngram scone-vocab`), decoded with an
    index's tokenizer."""
    from engine.storage.ngram_table import NgramTable

    table = NgramTable.open(args.table)
    index = _open(args.index) if args.index else None
    if args.json:
        print(json.dumps(_summary(table), indent=2))
        return 0
    _print_rows(table, _decoder(index), args.limit)
    return 0


# ---------------------------------------------------------------------------------------------- scone
def _cmd_scone(args) -> int:
    """The --size most frequent n-grams of 2..--max-len tokens with count >= --min-count, ranked together
    (f-gram id = rank), saved as an .npz table that lm_integration.fgram.load_fgram_vocab reads."""
    from engine.ngrams import build_fgram_vocab

    index = _open(args.index, args.load)
    vocab = build_fgram_vocab(index, args.max_len, args.size, args.min_count, out=args.out,
                              progress=not args.quiet, tmp_dir=args.tmp_dir)
    s = _summary(vocab.table)
    payload = {"out": str(args.out), "size": len(vocab), "threshold": s["threshold"], "by_n": s["by_n"]}
    if args.coverage:
        text = Path(args.coverage).read_text(encoding="utf-8", errors="replace")
        payload["coverage"] = vocab.coverage(index.tokenize(text)).as_dict()
    print(json.dumps(payload, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------- attribute
def _text_ids(index, args):
    if args.ids is not None:
        return [int(t) for t in args.ids.replace(",", " ").split()]
    if args.file is not None:
        return index.tokenize(Path(args.file).read_text(encoding="utf-8", errors="replace"))
    if args.text is None:
        raise NgramError("give the text, --file PATH or --ids '1 2 3'")
    return index.tokenize(args.text)


def _cmd_attribute(args) -> int:
    """The maximal spans of a text that occur in the index, with counts and source documents, and a
    creativity score."""
    index = _open(args.index, args.load)
    ids = _text_ids(index, args)
    result = index.attribute(ids, min_len=args.min_len, max_count=args.max_count, max_docs=args.max_docs,
                             max_disp_len=args.max_disp_len)
    decode = _decoder(index)
    if args.json:
        print(json.dumps({
            "num_tokens": result.num_tokens, "creativity": result.creativity, "creativity_n": result.creativity_n,
            "spans": [{"start": sp.start, "end": sp.end, "count": sp.count, "token_ids": sp.token_ids.tolist(),
                       "text": decode(sp.token_ids),
                       "documents": [{"doc_ix": d.doc_ix, "shard": d.shard, "needle_offset": d.needle_offset,
                                      "metadata": d.metadata, "token_ids": d.token_ids.tolist()}
                                     for d in sp.documents]} for sp in result.spans]}, indent=2))
        return 0
    print(f"{result.num_tokens} tokens; {len(result.spans)} maximal span(s) of >= {result.min_len} tokens; "
          f"creativity (share not covered by occurring {result.creativity_n}-token spans) = {result.creativity:.3f}")
    for sp in result.spans:
        docs = ", ".join(f"doc {d.doc_ix}" + (f" {json.dumps(d.metadata)}" if d.metadata else "") for d in sp.documents)
        print(f"  [{sp.start}:{sp.end}] x{sp.count:,}  {decode(sp.token_ids)!r}  <- {docs}")
    return 0


# ---------------------------------------------------------------------------------------------- cnf
def _cmd_cnf(args) -> int:
    """Each --clause lists the n-grams of one OR-clause; a document matches when it contains one n-gram of
    every clause. Example: --clause 'kmalloc' 'kzalloc' --clause 'GFP_ATOMIC'."""
    index = _open(args.index, args.load)
    if args.ids:
        cnf = [[[int(t) for t in term.replace(",", " ").split()] for term in clause] for clause in args.clause]
    else:
        cnf = [list(clause) for clause in args.clause]
    kwargs = {} if args.max_clause_freq is None else {"max_clause_freq": args.max_clause_freq}
    result = index.search_docs_cnf(cnf, max_docs=args.max_docs, max_disp_len=args.max_disp_len, **kwargs)
    if args.json:
        print(json.dumps({"count": result.count, "approx": result.approx, "clause_counts": list(result.clause_counts),
                          "scanned_clauses": list(result.scanned_clauses), "doc_ixs": result.doc_ixs.tolist()},
                         indent=2))
        return 0
    note = " (lower bound: every clause exceeded --max-clause-freq)" if result.approx else ""
    print(f"{result.count:,} matching document(s){note}; clause occurrences {list(result.clause_counts)}")
    for d in result.documents:
        text = index.detokenize(d.token_ids) if index.tokenizer else " ".join(map(str, d.token_ids.tolist()))
        print(f"--- document {d.doc_ix} ({d.doc_len:,} tokens) metadata={json.dumps(d.metadata)}")
        print(text)
    return 0


# ---------------------------------------------------------------------------------------------- parsers
def add_parsers(sub) -> None:
    p = command(sub, "ngrams", _cmd_ngrams, "the most frequent n-grams of an index (exact, streamed to a file)", "index")
    p.add_argument("--n", default="2-5", help="n-gram lengths, e.g. 2-5 or 3 (default 2-5)")
    p.add_argument("--top-k", type=int, help="keep the K most frequent (ties broken by token ids)")
    p.add_argument("--min-count", type=int, help="keep those occurring at least C times (a floor with --top-k)")
    p.add_argument("--out", required=True, help="output table (.npz)")
    p.add_argument("--text", help="also write the decoded text view (TSV: count, n, ids, text) here; - for stdout")
    p.add_argument("--show", type=int, default=20, help="rows to print decoded (default 20; 0 for none)")
    add(p, "tmp-dir", "load", "quiet", "json")

    p = command(sub, "ngrams-view", _cmd_view, "print an n-gram table decoded")
    p.add_argument("table", help="table file (.npz)")
    p.add_argument("--index", help="index whose tokenizer decodes the ids")
    p.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    p.add_argument("--json", action="store_true", help="print the table's metadata instead")

    p = command(sub, "scone-vocab", _cmd_scone, "build a SCONE f-gram vocabulary", "index")
    p.add_argument("--max-len", type=int, default=3, help="longest f-gram (default 3)")
    p.add_argument("--size", type=int, default=1 << 20, help="f-grams to keep (default 1048576)")
    p.add_argument("--min-count", type=int, default=2, help="minimum count (default 2)")
    p.add_argument("--out", required=True, help="output file (.npz)")
    p.add_argument("--coverage", help="a text file to report the vocabulary's coverage on")
    add(p, "tmp-dir", "load", "quiet")

    p = command(sub, "attribute", _cmd_attribute, "trace a text back to the index (maximal matching spans)", "index")
    p.add_argument("text", nargs="?", help="the text")
    p.add_argument("--file", help="read the text from a file")
    p.add_argument("--ids", help="the text as token ids")
    p.add_argument("--min-len", type=int, default=8, help="shortest span to report (default 8 tokens)")
    p.add_argument("--max-count", type=int, help="report only spans occurring at most this often")
    p.add_argument("--max-docs", type=int, default=3, help="source documents per span (default 3)")
    p.add_argument("--max-disp-len", type=int, default=60, help="tokens per source document window (default 60)")
    add(p, "load", "json")

    p = command(sub, "cnf", _cmd_cnf, "documents containing an AND of OR-clauses of n-grams", "index")
    p.add_argument("--clause", action="append", nargs="+", required=True, metavar="TERM",
                   help="one OR-clause (repeat for AND)")
    p.add_argument("--ids", action="store_true", help="terms are token ids ('1 2 3') instead of text")
    p.add_argument("--max-docs", type=int, default=5, help="documents to show (default 5)")
    p.add_argument("--max-clause-freq", type=int, help="clauses more frequent than this are verified by scanning")
    p.add_argument("--max-disp-len", type=int, default=100, help="tokens per document window (default 100)")
    add(p, "load", "json")
