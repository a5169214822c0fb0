"""∞-gram estimates with per-sequence incremental state (no torch).

Invariant used throughout: if the longest suffix of a context ``c`` that occurs in the corpus has
length ``l``, the longest occurring suffix of ``c + new`` (``k`` new tokens) has length at most
``l + k``, because every occurring string's suffixes occur too. So a tracker only keeps the
matched suffix and asks the engine about its last ``l + k`` tokens, never about the whole context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True)
class InfgramEstimate:
    """P∞(· | context) as a sparse distribution.

    tokens: distinct next tokens (int64, ascending); probs: their probabilities (sum to 1, or empty
    when the matched suffix is only ever followed by a document end); counts: raw counts;
    suffix_len: length of the longest matched suffix; sparse: exactly one distinct next token (the
    infini-gram paper's "sparse" estimate, which gets its own interpolation weight).
    """

    suffix_len: int
    tokens: np.ndarray
    counts: np.ndarray
    probs: np.ndarray
    prompt_count: int = 0

    @property
    def empty(self) -> bool:
        return len(self.tokens) == 0

    @property
    def sparse(self) -> bool:
        return len(self.tokens) == 1

    @property
    def total(self) -> int:
        return int(self.counts.sum()) if len(self.counts) else 0

    def prob_of(self, token: int) -> float:
        i = np.searchsorted(self.tokens, token)
        if i < len(self.tokens) and self.tokens[i] == token:
            return float(self.probs[i])
        return 0.0

    def top(self) -> tuple[int, int] | None:
        """(token, count) of the most frequent next token, the smallest id on ties."""
        if self.empty:
            return None
        i = int(np.argmax(self.counts))
        return int(self.tokens[i]), int(self.counts[i])


EMPTY_ESTIMATE = InfgramEstimate(0, _EMPTY_I, _EMPTY_I, _EMPTY_F, 0)


def estimate_from_ntd(res, end_token_id: int | None = None) -> InfgramEstimate:
    """InfgramEstimate from an engine InfgramNtdResult (or NextTokenDistribution).

    Document ends (``end_count``) are dropped and the rest renormalised, unless ``end_token_id`` is
    given, in which case they count as that token (e.g. the model's EOS)."""
    tokens = np.asarray(res.tokens, dtype=np.int64)
    counts = np.asarray(res.counts, dtype=np.int64)
    end = int(getattr(res, "end_count", 0) or 0)
    if end_token_id is not None and end > 0:
        i = int(np.searchsorted(tokens, end_token_id))
        if i < len(tokens) and tokens[i] == end_token_id:
            counts = counts.copy()
            counts[i] += end
        else:
            tokens = np.insert(tokens, i, end_token_id)
            counts = np.insert(counts, i, end)
    total = counts.sum()
    probs = counts / float(total) if total > 0 else np.zeros(len(counts), dtype=np.float64)
    if total <= 0:
        tokens, counts = _EMPTY_I, _EMPTY_I
    return InfgramEstimate(
        int(getattr(res, "suffix_len", 0) or 0), tokens, counts, probs, int(getattr(res, "prompt_count", 0) or 0)
    )


class InfgramTracker:
    """Per-sequence incremental ∞-gram state: ``extend(new_tokens)`` queries only the last
    ``suffix_len + len(new_tokens)`` tokens.

    ``max_query_len`` caps the query (an engine limit); the tracker stays exact as long as the true
    longest suffix is shorter than the cap.
    """

    def __init__(self, source, *, max_support: int | None = None, end_token_id: int | None = None,
                 max_query_len: int | None = None):
        self.source = source
        self.max_support = max_support
        self.end_token_id = end_token_id
        self.max_query_len = max_query_len
        self.queries = 0
        self.reset()

    def reset(self, context: Sequence[int] | None = None) -> InfgramEstimate:
        self.length = 0  # tokens of context seen so far
        self.suffix = _EMPTY_I  # the matched suffix (last suffix_len tokens)
        self.check = _EMPTY_I  # last suffix_len + 1 tokens: enough to tell whether a context continues ours
        self.estimate = EMPTY_ESTIMATE
        self._fresh = True
        if context is not None:
            return self.extend(context)
        return self.estimate

    @property
    def suffix_len(self) -> int:
        return len(self.suffix)

    def query_for(self, new_tokens) -> np.ndarray:
        """The query extend(new_tokens) sends: the matched suffix followed by the new tokens."""
        new = np.asarray(new_tokens, dtype=np.int64).reshape(-1)
        q = np.concatenate([self.suffix, new]) if len(self.suffix) else new
        if self.max_query_len is not None and len(q) > self.max_query_len:
            q = q[-self.max_query_len:]
        return q

    def apply(self, new_tokens, result) -> InfgramEstimate:
        """Update the state with the engine's answer to ``query_for(new_tokens)`` (batch callers)."""
        new = np.asarray(new_tokens, dtype=np.int64).reshape(-1)
        q = self.query_for(new)
        est = estimate_from_ntd(result, self.end_token_id)
        l = min(est.suffix_len, len(q))
        self.suffix = q[len(q) - l:].copy() if l else _EMPTY_I
        tail = np.concatenate([self.check, new])
        self.check = tail[-(l + 1):].copy()
        self.length += len(new)
        self.estimate = est
        self._fresh = False
        return est

    def extend(self, new_tokens) -> InfgramEstimate:
        new = np.asarray(new_tokens, dtype=np.int64).reshape(-1)
        if len(new) == 0 and not self._fresh:
            return self.estimate
        q = self.query_for(new)
        if len(q) == 0:  # nothing to condition on: no estimate (engines refuse empty prompts)
            self._fresh = False
            self.estimate = EMPTY_ESTIMATE
            return self.estimate
        self.queries += 1
        res = self.source.infgram_ntd(q.tolist(), max_support=self.max_support)
        return self.apply(new, res)

    def continues(self, context: np.ndarray) -> bool:
        """True when ``context`` starts with the context this state describes (judged on the last
        suffix_len + 1 tokens, which is all the state depends on)."""
        n = self.length
        if self._fresh or len(context) < n:
            return False
        lo = n - len(self.check)
        return lo >= 0 and np.array_equal(context[lo:n], self.check)

    def sync(self, context) -> InfgramEstimate:
        """Bring the state to ``context``: extend when it continues ours, else start over."""
        context = np.asarray(context, dtype=np.int64).reshape(-1)
        if self.continues(context):
            return self.extend(context[self.length:])
        return self.reset(context)


def sync_batch(trackers: list[InfgramTracker], contexts: list) -> list[InfgramEstimate]:
    """sync() many trackers with one infgram_ntd_batch call (they must share a source)."""
    if not trackers:
        return []
    news, todo = [], []
    for i, (tr, ctx) in enumerate(zip(trackers, contexts)):
        ctx = np.asarray(ctx, dtype=np.int64).reshape(-1)
        if tr.continues(ctx):
            new = ctx[tr.length:]
            if len(new) == 0:
                news.append(None)
                continue
        else:
            tr.reset()
            new = ctx
            if len(new) == 0:
                tr._fresh = False
                news.append(None)
                continue
        news.append(new)
        todo.append(i)
    if todo:
        src = trackers[todo[0]].source
        queries = [trackers[i].query_for(news[i]).tolist() for i in todo]
        results = src.infgram_ntd_batch(queries, max_support=trackers[todo[0]].max_support)
        for i, res in zip(todo, results):
            trackers[i].queries += 1
            trackers[i].apply(news[i], res)
    return [tr.estimate for tr in trackers]
