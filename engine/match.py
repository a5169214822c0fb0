"""Longest matches of every position of a text, ∞-gram probabilities of all positions, and
OLMoTrace-style attribution with a creativity score.

Everything comes from one left-to-right pass (engine.kernels.match.longest_matches): for each
position j, the longest span of the text ending at j that occurs in the index and its count.
The same pass yields the ∞-gram probability of every token, P(x_j | longest occurring suffix of
x_<j), since the longest occurring suffix of x_<j is exactly the longest match ending at j - 1.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from engine.kernels import match as kernels_match
from engine.errors import InvalidQueryError
from engine.results import Document, ProbBatchResult

DEFAULT_MAX_DOCS_PER_SPAN = 3


@dataclass(frozen=True)
class LongestMatches:
    """Per position j of ``tokens``: ``lengths[j]`` is the length of the longest span ending at j
    that occurs in the index (0 when tokens[j] itself never occurs) and ``counts[j]`` its count."""

    tokens: np.ndarray
    lengths: np.ndarray
    counts: np.ndarray
    infgram: ProbBatchResult | None = None  # with infgram=True: the ∞-gram terms of every position

    @property
    def starts(self) -> np.ndarray:
        """Where each longest span starts (j - lengths[j] + 1; j + 1 for an empty match)."""
        return np.arange(len(self.lengths)) - self.lengths + 1

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass(frozen=True)
class AttributedSpan:
    """A maximal span tokens[start:end] of the text that occurs ``count`` times in the index,
    with a few of the documents it occurs in (each a window around the occurrence)."""

    start: int
    end: int
    count: int
    token_ids: np.ndarray
    documents: list[Document] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Attribution:
    """attribute(): the maximal matching spans of at least ``min_len`` tokens (and at most
    ``max_count`` occurrences when given), and ``creativity``: the share of the text's tokens not
    covered by any occurring span of at least ``creativity_n`` tokens (1.0: nothing of the text
    occurs; 0.0: all of it does)."""

    num_tokens: int
    spans: list[AttributedSpan]
    creativity: float
    creativity_n: int
    min_len: int
    max_count: int | None
    matches: LongestMatches


def _check_max_len(max_len) -> int:
    if max_len is None:
        return np.iinfo(np.int64).max
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise InvalidQueryError("max_len must be a positive int (or None for no cap)")
    return int(max_len)


def _pass(index, ids: np.ndarray, max_len: int, chunks: int | None = None):
    """The longest-match pass over ``ids``, on ``chunks`` threads (default: by length and cores)."""
    n = len(ids)
    s = index.num_shards
    out = {
        "lengths": np.empty(n, dtype=np.int64), "counts": np.empty(n, dtype=np.int64),
        "lo": np.empty((n, s), dtype=np.int64), "hi": np.empty((n, s), dtype=np.int64),
        "prompt": np.empty(n, dtype=np.int64), "cont": np.empty(n, dtype=np.int64),
        "suffix": np.empty(n, dtype=np.int64),
    }
    keys = index._keys(ids)
    outputs = (out["lengths"], out["counts"], out["lo"], out["hi"], out["prompt"], out["cont"], out["suffix"])

    def run(j0: int, j1: int) -> None:
        kernels_match.longest_matches(*index._search, keys, max_len, j0, j1, *outputs)

    # The kernel releases the GIL: chunks of a long text run on threads, each first finding the
    # match its chunk starts inside, so the result equals one pass over the whole text.
    if chunks is None:
        chunks = min(_WORKERS, n // MIN_CHUNK_TOKENS)
    if chunks <= 1:
        run(0, n)
        return out
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    futures = [_pool().submit(run, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    for future in futures:
        future.result()
    return out


MIN_CHUNK_TOKENS = 256  # below this a chunk's extra search and the thread hand-off cost more than they save
_WORKERS = os.cpu_count() or 1
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="ngram-match")
        return _POOL


def longest_matches(index, text, max_len: int | None = None, infgram: bool = False) -> LongestMatches:
    """For every position, the longest span ending there that occurs in the index, and its count
    (and, with ``infgram``, the ∞-gram probabilities of every position from the same pass)."""
    ids = index._ids(text, allow_empty=True, name="text")
    res = _pass(index, ids, _check_max_len(max_len))
    return LongestMatches(ids, res["lengths"], res["counts"], _probs(res) if infgram else None)


def _probs(res) -> ProbBatchResult:
    prompt, cont = res["prompt"], res["cont"]
    with np.errstate(divide="ignore", invalid="ignore"):
        probs = np.where(prompt > 0, cont / np.maximum(prompt, 1), -1.0)
    return ProbBatchResult(prompt, cont, probs, res["suffix"])


def infgram_probs(index, text, max_len: int | None = None) -> ProbBatchResult:
    """∞-gram probability of every token of ``text`` given all the tokens before it: row j equals
    ``index.infgram_prob(text[:j], text[j])`` (prob -1.0 never happens here: the empty suffix
    always occurs). ``max_len`` caps the suffix length."""
    ids = index._ids(text, allow_empty=True, name="text")
    return _probs(_pass(index, ids, _check_max_len(max_len)))


def uniqueness(lengths: np.ndarray, n: int) -> float:
    """Share of positions not covered by any occurring span of >= n tokens, from longest-match
    lengths (a span ending at j covers j - lengths[j] + 1 .. j)."""
    total = len(lengths)
    if total == 0:
        return 1.0
    ends = np.flatnonzero(lengths >= n)
    diff = np.zeros(total + 1, dtype=np.int64)
    np.add.at(diff, ends - lengths[ends] + 1, 1)
    np.add.at(diff, ends + 1, -1)
    covered = int((np.cumsum(diff[:total]) > 0).sum())
    return 1.0 - covered / total


def creativity(index, text, n=5, max_len: int | None = None) -> float | dict[int, float]:
    """Creativity-index style score: the share of tokens not covered by spans of >= n tokens that
    occur in the index. ``n`` an int gives one value; a range/list of ints gives {n: value}."""
    ids = index._ids(text, allow_empty=False, name="text")
    lengths = _pass(index, ids, _check_max_len(max_len))["lengths"]
    if isinstance(n, (int, np.integer)) and not isinstance(n, bool):
        if n < 1:
            raise InvalidQueryError("n must be a positive int")
        return uniqueness(lengths, int(n))
    values = list(n)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values):
        raise InvalidQueryError("n must be a positive int or a non-empty list of them")
    return {int(v): uniqueness(lengths, int(v)) for v in values}


def maximal_spans(lengths: np.ndarray) -> np.ndarray:
    """End positions j whose longest match is maximal: non-empty and not extendable to the right
    (the match ending at j + 1 is not one longer)."""
    n = len(lengths)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    nxt = np.concatenate([lengths[1:], [0]])
    return np.flatnonzero((lengths > 0) & (nxt <= lengths))


def attribute(index, text, min_len: int = 8, max_count: int | None = None, *,
              max_docs: int = DEFAULT_MAX_DOCS_PER_SPAN, max_disp_len: int = 100, creativity_n: int | None = None,
              max_len: int | None = None, check_alive: Callable[[], None] | None = None,
              admit: Callable[..., None] | None = None) -> Attribution:
    """Trace a text back to the index, the way OLMoTrace does: the maximal spans of at least
    ``min_len`` tokens that occur in the index (a span is maximal when it cannot be extended on
    either side and still occur), optionally only those with at most ``max_count`` occurrences
    (long, rare spans are the telling ones), each with up to ``max_docs`` distinct source documents
    (windows of ``max_disp_len`` tokens around an occurrence), plus the creativity score at
    ``creativity_n`` (default ``min_len``).

    The longest-match pass is bounded by the text's length; fetching documents is the long part
    (up to ``max_docs`` per span). Before it, ``admit(documents=D, tokens=T)`` is called with upper
    bounds of the documents and document tokens the answer will hold (a server refuses there what
    it cannot afford, by raising); ``check_alive()`` is called before every document fetched, and
    an exception it raises stops the call.
    """
    ids = index._ids(text, allow_empty=False, name="text")
    min_len = _positive(min_len, "min_len")
    if max_count is not None:
        max_count = _positive(max_count, "max_count")
    if isinstance(max_docs, bool) or not isinstance(max_docs, (int, np.integer)) or max_docs < 0:
        raise InvalidQueryError("max_docs must be a non-negative int")
    max_disp_len = index._check_disp_len(max_disp_len)
    creativity_n = min_len if creativity_n is None else _positive(creativity_n, "creativity_n")
    res = _pass(index, ids, _check_max_len(max_len))
    lengths, counts = res["lengths"], res["counts"]
    ends = maximal_spans(lengths)
    keep = lengths[ends] >= min_len
    if max_count is not None:
        keep &= counts[ends] <= max_count
    ends = ends[keep]
    if admit is not None:
        # A span brings at most max_docs documents, at most as many as it has occurrences or as
        # the index has documents; each is a window of at most max_disp_len tokens.
        per_span = np.minimum(np.minimum(counts[ends], max_docs), index.num_docs)
        documents = int(per_span.sum())
        admit(documents=documents, tokens=documents * min(max_disp_len, max(index.num_tokens, 1)))
    spans = []
    for j in ends:
        length = int(lengths[j])
        count = int(counts[j])
        docs = _span_documents(index, res["lo"][j], res["hi"][j], length, max_docs, max_disp_len, check_alive)
        start = int(j) - length + 1
        spans.append(AttributedSpan(start, int(j) + 1, count, ids[start:int(j) + 1].copy(), docs))
    matches = LongestMatches(ids, lengths, counts)
    return Attribution(len(ids), spans, uniqueness(lengths, creativity_n), creativity_n, min_len, max_count, matches)


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidQueryError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _span_documents(index, lo: np.ndarray, hi: np.ndarray, length: int, max_docs: int,
                    max_disp_len: int, check_alive: Callable[[], None] | None = None) -> list[Document]:
    """Up to max_docs distinct documents holding the occurrences in the ranges, in rank order
    (looking at no more than 8 * max_docs occurrences)."""
    docs: list[Document] = []
    seen: set[int] = set()
    budget = 8 * max_docs
    for s in range(index.num_shards):
        for rank in range(int(lo[s]), int(hi[s])):
            if len(docs) >= max_docs or budget <= 0:
                return docs
            budget -= 1
            if check_alive is not None:
                check_alive()
            doc = index._doc_at_rank(s, rank, max_disp_len, needle_len=length)
            if doc.doc_ix not in seen:
                seen.add(doc.doc_ix)
                docs.append(doc)
    return docs


__all__ = ["AttributedSpan", "Attribution", "LongestMatches", "attribute", "creativity", "infgram_probs",
           "longest_matches", "maximal_spans", "uniqueness"]
