"""How shard servers' answers merge into one index's answer (pure functions over results; the
router's merge methods, named in engine.serve.rpcs, call them)."""

from __future__ import annotations

import numpy as np

from engine.errors import ShardUnavailableError
from engine.results import Document, InfgramNtdResult, NextTokenDistribution, PackedQueries

__all__ = ["first_occurrence", "local_anchor", "merge_dists", "packed_rows", "padded_rows", "probs", "take_documents",
           "union_backoff", "union_rows"]


def probs(pc: np.ndarray, cc: np.ndarray) -> np.ndarray:
    out = np.full(len(pc), -1.0, dtype=np.float64)
    nz = pc > 0
    out[nz] = cc[nz] / pc[nz]
    return out


def union_backoff(lens: np.ndarray, pcs: np.ndarray, ccs: np.ndarray):
    """The ∞-gram over the union from shards x positions arrays: (prompt counts, cont counts,
    suffix lengths), summing the shards whose own suffix reached the longest."""
    L = lens.max(axis=0)
    reached = lens == L
    pc = np.where(reached, pcs, 0).sum(axis=0).astype(np.int64)
    cc = np.where(reached, ccs, 0).sum(axis=0).astype(np.int64)
    return pc, cc, L.astype(np.int64)


def merge_dists(dists: list, suffix_len: int | None = None, max_support: int | None = None):
    """Sum distributions token by token (tokens ascending).

    Exact distributions merge exactly. With max_support, one index samples when the prompt's
    total count exceeds max_support (with a sampling unit chosen from that total); here each
    shard server sampled by its own count, so the merged counts are the sum of the shards'
    estimates: prompt_count stays exact, counts still sum to it, and approx is set exactly when
    one index would set it (total count > max_support).
    """
    pc = sum(int(d.prompt_count) for d in dists)
    ec = sum(int(d.end_count) for d in dists)
    approx = any(bool(d.approx) for d in dists) or (max_support is not None and pc > int(max_support))
    nonempty = [d for d in dists if len(d.tokens)]
    if len(nonempty) == 1:
        tokens = np.asarray(nonempty[0].tokens, dtype=np.int64)
        counts = np.asarray(nonempty[0].counts, dtype=np.int64)
    elif not nonempty:
        tokens = counts = np.zeros(0, dtype=np.int64)
    else:
        t = np.concatenate([np.asarray(d.tokens, dtype=np.int64) for d in nonempty])
        c = np.concatenate([np.asarray(d.counts, dtype=np.int64) for d in nonempty])
        order = np.argsort(t, kind="stable")
        t, c = t[order], c[order]
        starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
        tokens, counts = t[starts], np.add.reduceat(c, starts)
    if suffix_len is None:
        return NextTokenDistribution(prompt_count=pc, tokens=tokens, counts=counts, end_count=ec, approx=approx)
    return InfgramNtdResult(prompt_count=pc, tokens=tokens, counts=counts, end_count=ec, approx=approx, suffix_len=int(suffix_len))


def local_anchor(summary) -> int | None:
    """The clause a server anchored its SearchDocumentsCnf windows on: its rarest enumerated clause."""
    scanned = set(int(i) for i in summary.scanned_clauses)
    counts = [int(c) for c in summary.clause_counts]
    enumerated = [i for i in range(len(counts)) if i not in scanned]
    return min(enumerated, key=lambda i: (counts[i], i)) if enumerated else None


def take_documents(found: list[Document], docs: list[Document], seen: set, max_docs: int, budget: int) -> int:
    """Add the documents of ``found`` occurrences not seen yet, one budget unit per occurrence
    (engine.match._span_documents); return the budget left."""
    for doc in found:
        if len(docs) >= max_docs or budget <= 0:
            break
        budget -= 1
        if doc.doc_ix not in seen:
            seen.add(doc.doc_ix)
            docs.append(doc)
    return budget


def first_occurrence(tokens: np.ndarray, terms: list[np.ndarray]) -> int:
    """The first position of tokens where one of the terms starts (the lowest pointer)."""
    best = len(tokens)
    for t in terms:
        m = len(t)
        if m == 0 or m > len(tokens):
            continue
        windows = np.lib.stride_tricks.sliding_window_view(tokens, m)[:best]
        hits = np.flatnonzero((windows == t).all(axis=1))
        if len(hits):
            best = min(best, int(hits[0]))
    if best == len(tokens):  # pragma: no cover - the server said the document matches
        raise ShardUnavailableError("a document returned for a CNF query holds none of its anchor clause's n-grams")
    return best


def padded_rows(table, width: int) -> np.ndarray:
    rows = table.padded(-1) if len(table) else np.zeros((0, 1), dtype=np.int64)
    out = np.full((len(rows), width), -1, dtype=np.int64)
    out[:, : min(width, rows.shape[1])] = rows[:, :width]
    return out


def union_rows(parts: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of the concatenated parts and, per input row, the index of its distinct row."""
    rows = np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.int64)
    if len(rows) == 0:
        return rows.reshape(0, width), np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(rows, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1)


def packed_rows(rows: np.ndarray) -> PackedQueries:
    lengths = (rows >= 0).sum(axis=1)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return PackedQueries(rows[rows >= 0].astype(np.int64), offsets)
