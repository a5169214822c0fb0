"""AND/OR document search: which documents contain, for every clause, at least one of its n-grams.

A CNF query is a list of clauses, each a list of terms (n-grams as token ids or text): the AND
of ORs. A string stands for a one-term clause, and a string query for a one-clause query.

The answer is exact, with one cap that behaves predictably:

- ``max_clause_freq``: a clause whose n-grams occur more often than this in total is never
  enumerated occurrence by occurrence. The clauses under the cap are enumerated (occurrences ->
  documents) and intersected; each clause over the cap is then checked by scanning the candidate
  documents, which is exact. Which clauses were scanned is reported (``scanned_clauses``).
- Only when every clause is over the cap does the answer become approximate: the rarest clause
  is sampled at an even stride (every ceil(freq / max_clause_freq)-th occurrence in suffix-array
  order of each shard), and ``count`` is the number of distinct matching documents found through
  the sample: a lower bound, flagged ``approx=True``. The documents returned are all real matches.

``search_docs_cnf`` returns at most ``max_docs`` documents (the lowest document numbers), each a
window around an occurrence of the rarest enumerated clause; ``count`` still counts them all.
Unlike infini-gram (whose AND asks for clauses within ``max_diff_tokens`` of each other), a
document matches here when it contains every clause anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from engine.kernels import match as kernels_match
from engine.errors import InvalidQueryError
from engine.results import Document

DEFAULT_MAX_CLAUSE_FREQ = 1_000_000
# Units of work between two calls of check_alive: occurrences turned into documents, and tokens
# of candidate documents scanned (each a few ms).
_CHECK_OCCURRENCES = 1 << 16
_CHECK_SCAN_TOKENS = 1 << 21
MAX_CLAUSES = 64
MAX_TERMS_PER_CLAUSE = 256


@dataclass(frozen=True)
class CnfResult:
    """Documents matching a CNF query.

    count: matching documents (exact unless approx); approx: every clause was over
    max_clause_freq, so count is a lower bound found through a sample of the rarest clause;
    clause_counts: total occurrences of each clause's n-grams (exact); scanned_clauses: clauses
    over the cap, verified by scanning candidate documents; doc_ixs: matching document numbers
    (ascending; all of them for count_cnf, the first max_docs for search_docs_cnf);
    documents: the returned documents (search_docs_cnf only).
    """

    count: int
    approx: bool
    clause_counts: tuple[int, ...]
    scanned_clauses: tuple[int, ...]
    doc_ixs: np.ndarray
    documents: list[Document] = field(default_factory=list)


def _parse(index, cnf) -> list[list[np.ndarray]]:
    if isinstance(cnf, str):
        cnf = [[cnf]]
    if isinstance(cnf, np.ndarray) or not isinstance(cnf, (list, tuple)) or not cnf:
        raise InvalidQueryError("cnf must be a non-empty list of clauses, each a list of n-grams (ids or text)")
    if len(cnf) > MAX_CLAUSES:
        raise InvalidQueryError(f"cnf has {len(cnf)} clauses; at most {MAX_CLAUSES} are allowed")
    clauses = []
    for i, clause in enumerate(cnf):
        if isinstance(clause, str):
            clause = [clause]
        if isinstance(clause, np.ndarray) or not isinstance(clause, (list, tuple)) or not clause:
            raise InvalidQueryError(f"clause {i} must be a non-empty list of n-grams (each a list of ids or text)")
        if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in clause):
            raise InvalidQueryError(
                f"clause {i} is a flat list of ids; wrap it: a clause is a list of n-grams, e.g. [[{clause[0]}, ...]]")
        if len(clause) > MAX_TERMS_PER_CLAUSE:
            raise InvalidQueryError(f"clause {i} has {len(clause)} terms; at most {MAX_TERMS_PER_CLAUSE} are allowed")
        clauses.append([index._ids(t, allow_empty=False, name=f"cnf[{i}][{k}]") for k, t in enumerate(clause)])
    return clauses


def _check_cap(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidQueryError(f"{name} must be a positive int")
    return int(value)


def _clause_docs(index, clause, ranges, step: int, check_alive: Callable[[], None] = lambda: None):
    """(global doc numbers, pointers, shards, term lengths) of every step-th occurrence of a clause,
    in pieces of _CHECK_OCCURRENCES occurrences with ``check_alive()`` between them."""
    parts = []
    piece = _CHECK_OCCURRENCES * step  # ranks per piece, a multiple of step: the same occurrences as one call
    for term, (lo, hi) in zip(clause, ranges):
        for s in range(index.num_shards):
            shard = index.shards[s]
            for a in range(int(lo[s]), int(hi[s]), piece):
                check_alive()
                b = min(int(hi[s]), a + piece)
                n_out = (b - a + step - 1) // step
                d = np.empty(n_out, dtype=np.int64)
                p = np.empty(n_out, dtype=np.int64)
                n = kernels_match.range_docs(shard.table, shard.ptr_size, shard.offsets, a, b, step, d, p)
                parts.append((d[:n] + index._doc_starts[s], p[:n], np.full(n, s, dtype=np.int64),
                              np.full(n, len(term), dtype=np.int64)))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    return tuple(np.concatenate([part[k] for part in parts]) for k in range(4))


def _first_per_doc(docs, ptrs, shards, lens):
    """Unique docs (ascending) with the first occurrence (lowest shard, then pointer) of each."""
    order = np.lexsort((ptrs, shards, docs))
    docs, ptrs, shards, lens = docs[order], ptrs[order], shards[order], lens[order]
    first = np.concatenate([[True], docs[1:] != docs[:-1]]) if len(docs) else np.zeros(0, dtype=bool)
    return docs[first], ptrs[first], shards[first], lens[first]


def _scan(index, clause, doc_ixs: np.ndarray, check_alive: Callable[[], None] = lambda: None) -> np.ndarray:
    """Mask of the documents (global numbers, ascending) that contain a term of ``clause``, scanned
    in groups of about _CHECK_SCAN_TOKENS tokens with ``check_alive()`` between them."""
    keys = [index._keys(t) for t in clause]
    term_keys = np.concatenate(keys)
    term_offsets = np.concatenate([[0], np.cumsum([len(k) for k in keys])]).astype(np.int64)
    mask = np.zeros(len(doc_ixs), dtype=bool)
    shard_of = np.searchsorted(index._doc_starts, doc_ixs, side="right") - 1
    for s in np.unique(shard_of):
        sel = np.flatnonzero(shard_of == s)
        local = (doc_ixs[sel] - index._doc_starts[s]).astype(np.int64)
        shard = index.shards[int(s)]
        found = np.empty(len(local), dtype=np.int64)
        # Group boundaries by the documents' sizes (from the offsets, in bytes: a bound on tokens).
        offsets = shard.offsets
        last = len(offsets) - 1
        ends = np.where(local < last, np.asarray(offsets[np.minimum(local + 1, last)], dtype=np.int64),
                        len(shard.tokenized))
        sizes = np.cumsum(np.maximum(ends - np.asarray(offsets[local], dtype=np.int64), 0) // index.token_width)
        a = 0
        while a < len(local):
            check_alive()
            b = max(a + 1, int(np.searchsorted(sizes, (sizes[a - 1] if a else 0) + _CHECK_SCAN_TOKENS, "right")))
            b = min(b, len(local))
            kernels_match.docs_containing(shard.tokenized, index.token_width, shard.offsets, local[a:b],
                                          term_keys, term_offsets, found[a:b])
            a = b
        mask[sel] = found >= 0
    return mask


@dataclass
class _Evaluation:
    counts: tuple[int, ...]
    scanned: tuple[int, ...]
    approx: bool
    docs: np.ndarray  # global doc numbers, ascending
    ptrs: np.ndarray  # an occurrence of the anchor clause in each (byte offset in its shard)
    shards: np.ndarray
    lens: np.ndarray  # length of the n-gram at that occurrence


def _evaluate(index, cnf, max_clause_freq, check_alive=None, admit=None) -> _Evaluation:
    """The matching documents. ``admit(occurrences=N)`` is called once the clauses' counts are
    known and before any is enumerated, with the number of occurrences that will be turned into
    documents (memory grows with it); ``check_alive()`` between pieces of work."""
    check = check_alive if check_alive is not None else (lambda: None)
    clauses = _parse(index, cnf)
    max_clause_freq = _check_cap(max_clause_freq, "max_clause_freq")
    ranges, counts = [], []
    for clause in clauses:
        term_ranges = []
        total = 0
        for term in clause:
            c, lo, hi = index._ranges(term)
            total += c
            term_ranges.append((lo, hi))
        ranges.append(term_ranges)
        counts.append(total)
    counts_t = tuple(int(c) for c in counts)
    if min(counts) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Evaluation(counts_t, (), False, empty, empty, empty, empty)
    order = sorted(range(len(clauses)), key=lambda i: (counts[i], i))
    small = [i for i in order if counts[i] <= max_clause_freq]
    approx = not small
    if approx:
        enumerated = [order[0]]
        step = -(-counts[order[0]] // max_clause_freq)
    else:
        enumerated = small
        step = 1
    if admit is not None:
        admit(occurrences=-(-counts[enumerated[0]] // step) + sum(counts[i] for i in enumerated[1:]))
    anchor = enumerated[0]
    docs, ptrs, shards, lens = _first_per_doc(*_clause_docs(index, clauses[anchor], ranges[anchor], step, check))
    for i in enumerated[1:]:
        check()
        other = np.unique(_clause_docs(index, clauses[i], ranges[i], 1, check)[0])
        keep = np.isin(docs, other, assume_unique=True)
        docs, ptrs, shards, lens = docs[keep], ptrs[keep], shards[keep], lens[keep]
    scanned = tuple(i for i in range(len(clauses)) if i not in enumerated)
    for i in sorted(scanned, key=lambda i: counts[i]):
        if len(docs) == 0:
            break
        keep = _scan(index, clauses[i], docs, check)
        docs, ptrs, shards, lens = docs[keep], ptrs[keep], shards[keep], lens[keep]
    return _Evaluation(counts_t, scanned, approx, docs, ptrs, shards, lens)


def count_cnf(index, cnf, max_clause_freq: int = DEFAULT_MAX_CLAUSE_FREQ, *,
              check_alive: Callable[[], None] | None = None, admit: Callable[..., None] | None = None) -> CnfResult:
    """How many documents contain, for every clause, at least one of its n-grams.

    ``check_alive()`` is called between pieces of work (an exception it raises stops the call);
    ``admit(occurrences=N)`` before the clauses are enumerated (see _evaluate)."""
    ev = _evaluate(index, cnf, max_clause_freq, check_alive, admit)
    return CnfResult(len(ev.docs), ev.approx, ev.counts, ev.scanned, ev.docs)


def search_docs_cnf(index, cnf, max_docs: int = 10, max_clause_freq: int = DEFAULT_MAX_CLAUSE_FREQ,
                    max_disp_len: int = 1000, *, check_alive: Callable[[], None] | None = None,
                    admit: Callable[..., None] | None = None) -> CnfResult:
    """The matching documents with the lowest numbers (at most ``max_docs``), each a window of
    ``max_disp_len`` tokens around an occurrence of the rarest enumerated clause (``check_alive``
    and ``admit`` as in count_cnf)."""
    if isinstance(max_docs, bool) or not isinstance(max_docs, (int, np.integer)) or max_docs < 0:
        raise InvalidQueryError("max_docs must be a non-negative int")
    max_disp_len = index._check_disp_len(max_disp_len)
    ev = _evaluate(index, cnf, max_clause_freq, check_alive, admit)
    take = min(int(max_docs), len(ev.docs))
    documents = []
    for i in range(take):
        if check_alive is not None:
            check_alive()
        documents.append(index._doc_at_ptr(int(ev.shards[i]), int(ev.ptrs[i]), max_disp_len,
                                           needle_len=int(ev.lens[i])))
    return CnfResult(len(ev.docs), ev.approx, ev.counts, ev.scanned, ev.docs[:take].copy(), documents)


__all__ = ["CnfResult", "DEFAULT_MAX_CLAUSE_FREQ", "count_cnf", "search_docs_cnf"]
