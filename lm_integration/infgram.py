"""∞-gram estimates with per-sequence incremental state (no torch).

Invariant used throughout: if the longest suffix of a context ``c`` that occurs in the corpus has
length ``l``, the longest occurring suffix of ``c + new`` (``k`` new tokens) has length at most
``l + k``, because every occurring string's suffixes occur too. So a tracker only keeps the
matched suffix and asks the engine about its last ``l + k`` tokens, never about the whole context.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
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

    @cached_property
    def total(self) -> int:
        return int(self.counts.sum()) if len(self.counts) else 0

    def prob_of(self, token: int) -> float:
        n = len(self.tokens)
        if n <= 8:  # the usual case (long matches have few continuations): no numpy call
            for t, pr in zip(self.tokens.tolist(), self.probs.tolist()):
                if t == token:
                    return pr
            return 0.0
        i = np.searchsorted(self.tokens, token)
        if i < n and self.tokens[i] == token:
            return float(self.probs[i])
        return 0.0

    def top(self) -> tuple[int, int] | None:
        """(token, count) of the most frequent next token, the smallest id on ties."""
        return self._top

    @cached_property
    def _top(self) -> tuple[int, int] | None:
        if self.empty:
            return None
        i = int(np.argmax(self.counts))
        return int(self.tokens[i]), int(self.counts[i])


EMPTY_ESTIMATE = InfgramEstimate(0, _EMPTY_I, _EMPTY_I, _EMPTY_F, 0)


def estimate_from_ntd(res, end_token_id: int | None = None, suffix_len: int | None = None) -> InfgramEstimate:
    """InfgramEstimate from an engine InfgramNtdResult (or NextTokenDistribution).

    Document ends (``end_count``) are dropped and the rest renormalised, unless ``end_token_id`` is
    given, in which case they count as that token (e.g. the model's EOS). ``suffix_len`` overrides
    the result's own (an ``ntd`` answer for a prompt known to occur has none)."""
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
    if suffix_len is None:
        suffix_len = int(getattr(res, "suffix_len", 0) or 0)
    return InfgramEstimate(int(suffix_len), tokens, counts, probs, int(getattr(res, "prompt_count", 0) or 0))


class InfgramCache:
    """An exact LRU cache of ∞-gram estimates, keyed by the query's tokens.

    An estimate is a pure function of the query (and of ``max_support`` / ``end_token_id``, which
    are part of the key), and indexes are immutable, so a hit returns exactly what the engine would
    have. Decoding asks about the same contexts again and again (the drafter's chain and the next
    step's tracker, the prior after the drafter, a model repeating itself), and short contexts are
    the expensive ones (thousands of distinct continuations), so they are worth keeping.

    Bounded by ``max_entries`` estimates and ``max_items`` distinct-token entries in all (about 24
    bytes each); the least recently used go first. ``max_entries=0`` turns it off. One cache may be
    shared by trackers, drafters and priors over the same source.
    """

    def __init__(self, max_entries: int = 65536, max_items: int = 2_000_000):
        if max_entries < 0 or max_items < 0:
            raise ValueError("max_entries and max_items must be >= 0")
        self.max_entries = int(max_entries)
        self.max_items = int(max_items)
        self._d: OrderedDict = OrderedDict()
        self.items = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    @staticmethod
    def key(query, max_support: int | None = None, end_token_id: int | None = None) -> tuple:
        q = query.tolist() if isinstance(query, np.ndarray) else [int(t) for t in query]
        return (max_support, end_token_id, *q)

    def get(self, key: tuple) -> InfgramEstimate | None:
        est = self._d.get(key)
        if est is None:
            self.misses += 1
            return None
        self._d.move_to_end(key)
        self.hits += 1
        return est

    def put(self, key: tuple, est: InfgramEstimate) -> None:
        if self.max_entries == 0 or len(est.tokens) > self.max_items:
            return
        old = self._d.pop(key, None)
        if old is not None:
            self.items -= len(old.tokens)
        self._d[key] = est
        self.items += len(est.tokens)
        while len(self._d) > self.max_entries or self.items > self.max_items:
            _, gone = self._d.popitem(last=False)
            self.items -= len(gone.tokens)

    def clear(self) -> None:
        self._d.clear()
        self.items = 0

    @property
    def hit_rate(self) -> float:
        n = self.hits + self.misses
        return self.hits / n if n else 0.0


def _as_list(tokens) -> list:
    """Token ids as a plain list (the tracker's state and queries are lists: cheaper than small
    numpy arrays per step)."""
    if isinstance(tokens, np.ndarray):
        return tokens.reshape(-1).tolist()
    if isinstance(tokens, list):
        return tokens
    return np.asarray(tokens, dtype=np.int64).reshape(-1).tolist()


class InfgramTracker:
    """Per-sequence incremental ∞-gram state: ``extend(new_tokens)`` queries only the last
    ``suffix_len + len(new_tokens)`` tokens.

    ``max_query_len`` caps the query (an engine limit); the tracker stays exact as long as the true
    longest suffix is shorter than the cap. ``cache`` (an InfgramCache, possibly shared) answers
    queries asked before without the engine; ``queries`` counts only those sent to the engine. A
    single new token that the current estimate lists as a continuation extends the match for sure,
    so it is asked with the engine's plain ``ntd`` (no suffix search; the same answer).
    """

    def __init__(self, source, *, max_support: int | None = None, end_token_id: int | None = None,
                 max_query_len: int | None = None, cache: InfgramCache | None = None):
        self.source = source
        self.max_support = max_support
        self.end_token_id = end_token_id
        self.max_query_len = max_query_len
        self.cache = cache
        self.queries = 0
        self.reset()

    def reset(self, context: Sequence[int] | None = None) -> InfgramEstimate:
        self.length = 0  # tokens of context seen so far
        self._sfx: list = []  # the matched suffix (last suffix_len tokens)
        self._chk: list = []  # last suffix_len + 1 tokens: enough to tell whether a context continues ours
        self.estimate = EMPTY_ESTIMATE
        self._fresh = True
        if context is not None:
            return self.extend(context)
        return self.estimate

    @property
    def suffix(self) -> np.ndarray:
        """The matched suffix (the last suffix_len tokens of the context)."""
        return np.array(self._sfx, dtype=np.int64) if self._sfx else _EMPTY_I

    @property
    def check(self) -> np.ndarray:
        return np.array(self._chk, dtype=np.int64) if self._chk else _EMPTY_I

    @property
    def suffix_len(self) -> int:
        return len(self._sfx)

    def _q(self, new: list) -> list:
        q = self._sfx + new
        if self.max_query_len is not None and len(q) > self.max_query_len:
            q = q[-self.max_query_len:]
        return q

    def query_for(self, new_tokens) -> np.ndarray:
        """The query extend(new_tokens) sends: the matched suffix followed by the new tokens."""
        return np.array(self._q(_as_list(new_tokens)), dtype=np.int64)

    def apply(self, new_tokens, result) -> InfgramEstimate:
        """Update the state with the engine's answer to ``query_for(new_tokens)`` (batch callers)."""
        new = _as_list(new_tokens)
        q = self._q(new)
        est = estimate_from_ntd(result, self.end_token_id)
        if self.cache is not None:
            self.cache.put(self.cache.key(q, self.max_support, self.end_token_id), est)
        return self._advance(new, q, est)

    def _advance(self, new: list, q: list, est: InfgramEstimate) -> InfgramEstimate:
        l = min(est.suffix_len, len(q))
        self._sfx = q[len(q) - l:] if l else []
        self._chk = (self._chk + new)[-(l + 1):]
        self.length += len(new)
        self.estimate = est
        self._fresh = False
        return est

    def _lookup(self, new: list):
        """(query, cache key or None, cached estimate or None) for extending by ``new``."""
        q = self._q(new)
        if self.cache is None:
            return q, None, None
        key = (self.max_support, self.end_token_id, *q)
        return q, key, self.cache.get(key)

    def _occurs(self, new: list, q: list) -> bool:
        """True when ``q`` (the query for one new token) is known to occur: the token is one of the
        current estimate's continuations (so the longest suffix is q itself and the engine's plain
        ``ntd`` answers, without searching for the suffix: the same answer, for less work)."""
        if len(new) != 1 or self._fresh or len(q) != len(self._sfx) + 1:
            return False
        t = new[0]
        if self.end_token_id is not None and t == self.end_token_id:
            return False  # may stand for document ends, which are no continuation
        return self.estimate.prob_of(t) > 0.0

    def _ask(self, new: list, q: list):
        """The engine's answer for ``q`` and the suffix length to use (None: the answer's own)."""
        if self._occurs(new, q):
            return self.source.ntd(q, max_support=self.max_support), len(q)
        return self.source.infgram_ntd(q, max_support=self.max_support), None

    def _finish(self, new: list, q: list, key, result, suffix_len: int | None = None) -> InfgramEstimate:
        self.queries += 1
        est = estimate_from_ntd(result, self.end_token_id, suffix_len)
        if key is not None:
            self.cache.put(key, est)
        return self._advance(new, q, est)

    def extend(self, new_tokens) -> InfgramEstimate:
        new = _as_list(new_tokens)
        if not new and not self._fresh:
            return self.estimate
        if not self._sfx and not new:  # nothing to condition on: no estimate
            self._fresh = False  # (engines refuse empty prompts)
            self.estimate = EMPTY_ESTIMATE
            return self.estimate
        q, key, est = self._lookup(new)
        if est is not None:
            return self._advance(new, q, est)
        return self._finish(new, q, key, *self._ask(new, q))

    def continues(self, context) -> bool:
        """True when ``context`` starts with the context this state describes (judged on the last
        suffix_len + 1 tokens, which is all the state depends on)."""
        n = self.length
        if self._fresh or len(context) < n:
            return False
        lo = n - len(self._chk)
        if lo < 0:
            return False
        part = context[lo:n]
        return (part.tolist() if isinstance(part, np.ndarray) else list(part)) == self._chk

    def sync(self, context) -> InfgramEstimate:
        """Bring the state to ``context``: extend when it continues ours, else start over."""
        if not isinstance(context, list):
            context = _as_list(context)
        if self.continues(context):
            return self.extend(context[self.length:])
        return self.reset(context)


def sync_batch(trackers: list[InfgramTracker], contexts: list) -> list[InfgramEstimate]:
    """sync() many trackers with one infgram_ntd_batch call (they must share a source)."""
    if not trackers:
        return []
    todo = []
    for tr, ctx in zip(trackers, contexts):
        ctx = ctx if isinstance(ctx, list) else _as_list(ctx)
        if tr.continues(ctx):
            new = ctx[tr.length:]
            if len(new) == 0:
                continue
        else:
            tr.reset()
            new = ctx
            if len(new) == 0:
                tr._fresh = False
                continue
        q, key, est = tr._lookup(new)
        if est is not None:
            tr._advance(new, q, est)
            continue
        todo.append((tr, new, q, key))
    if todo:
        src = todo[0][0].source
        support = todo[0][0].max_support
        if len(todo) == 1:  # one row (batch size 1): the single call is cheaper than packing a batch
            tr, new, q, key = todo[0]
            tr._finish(new, q, key, *tr._ask(new, q))
        else:
            results = src.infgram_ntd_batch([t[2] for t in todo], max_support=support)
            for (tr, new, q, key), res in zip(todo, results):
                tr._finish(new, q, key, res)
    return [tr.estimate for tr in trackers]
