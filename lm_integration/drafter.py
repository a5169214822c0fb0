"""Draft proposers for speculative decoding (no torch).

* InfgramDrafter: from the longest suffix of the context that occurs in the corpus, follow the
  most frequent next token (exact counts from the engine), k times: a chain. ``propose_tree`` adds
  the top ``width`` first tokens, each followed by its own chain.
* PromptLookupDrafter: the baseline that matches the last n tokens inside the context itself.
* NullDrafter / ConstantDrafter: propose nothing / a fixed useless token (for tests and baselines).

A drafter is any object with ``propose(context, k, key=0) -> list[int]``; ``key`` names the
sequence (the batch row) so a drafter can keep per-sequence incremental state.
"""

from __future__ import annotations

import time
from typing import Protocol, Sequence

import numpy as np

from lm_integration.infgram import InfgramEstimate, InfgramTracker, estimate_from_ntd


class Drafter(Protocol):
    def propose(self, context: Sequence[int], k: int, key: int = 0) -> list[int]: ...


class NullDrafter:
    """Never proposes: speculative_generate degenerates to plain greedy decoding."""

    def propose(self, context, k, key=0):
        return []


class ConstantDrafter:
    """Always proposes ``k`` copies of one token: almost always rejected (a worst case)."""

    def __init__(self, token: int = 0):
        self.token = int(token)

    def propose(self, context, k, key=0):
        return [self.token] * k


class PromptLookupDrafter:
    """Prompt-lookup decoding: find the most recent earlier occurrence of the context's last n
    tokens (n = max_ngram down to min_ngram) inside the context, propose what followed it."""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 1):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError("need 1 <= min_ngram <= max_ngram")
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.seconds = 0.0

    def propose_with_len(self, context, k) -> tuple[list[int], int]:
        """(draft, length of the matched n-gram); ([], 0) when nothing matches."""
        t0 = time.perf_counter()
        ctx = np.asarray(context, dtype=np.int64).reshape(-1)
        T = len(ctx)
        out: list[int] = []
        n_found = 0
        if T >= 2 and k > 0:
            # earlier positions holding the last token, then extend each match backwards
            cands = np.flatnonzero(ctx[: T - 1] == ctx[T - 1])
            if len(cands):
                length = np.ones(len(cands), dtype=np.int64)
                alive = np.ones(len(cands), dtype=bool)
                for j in range(1, min(self.max_ngram, T - 1)):
                    prev = cands - j
                    ok = alive & (prev >= 0)
                    ok[ok] = ctx[prev[ok]] == ctx[T - 1 - j]
                    length += ok
                    alive = ok
                    if not alive.any():
                        break
                best = int(length.max())
                if best >= self.min_ngram:
                    c = int(cands[np.flatnonzero(length == best)[-1]])  # most recent of the longest
                    out = ctx[c + 1 : c + 1 + k].tolist()
                    n_found = best if out else 0
        self.seconds += time.perf_counter() - t0
        return out, n_found

    def propose(self, context, k, key=0):
        return self.propose_with_len(context, k)[0]


class InfgramDrafter:
    """Drafts from an n-gram engine (any NgramSource).

    propose(context, k): let s be the longest suffix of context that occurs in the corpus; while
    fewer than k tokens are drafted, append the most frequent next token of s (ties: smallest id)
    and let s be the longest occurring suffix of s + token. Stops early when the matched suffix is
    shorter than ``min_suffix_len``, when the top token's share is below ``min_prob``, or when its
    count is below ``min_count``. One engine query per drafted token, each at most suffix_len + 1
    tokens long; the context's own match is kept per ``key`` and extended incrementally. Pass
    ``tokenizer`` (and ``model``) to refuse an index built with another tokenizer.
    """

    def __init__(self, source, *, min_suffix_len: int = 1, min_prob: float = 0.0, min_count: int = 1,
                 max_support: int | None = None, max_query_len: int | None = None, cache_size: int = 4096,
                 tokenizer=None, model=None):
        if tokenizer is not None or model is not None:
            from lm_integration.tokenizer_compat import check_tokenizer_compat

            check_tokenizer_compat(source, tokenizer, model=model)
        self.source = source
        self.min_suffix_len = int(min_suffix_len)
        self.min_prob = float(min_prob)
        self.min_count = int(min_count)
        self.max_support = max_support
        self.max_query_len = max_query_len
        self._trackers: dict[int, InfgramTracker] = {}
        self._cache: dict[tuple, InfgramEstimate] = {}
        self.cache_size = cache_size
        self.seconds = 0.0
        self.queries = 0

    def reset(self) -> None:
        self._trackers.clear()
        self._cache.clear()

    def _query(self, q: np.ndarray) -> InfgramEstimate:
        key = tuple(q.tolist())
        est = self._cache.get(key)
        if est is None:
            self.queries += 1
            est = estimate_from_ntd(self.source.infgram_ntd(list(key), max_support=self.max_support))
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[key] = est
        return est

    def _context_estimate(self, context, key) -> tuple[np.ndarray, InfgramEstimate]:
        tr = self._trackers.get(key)
        if tr is None:
            tr = self._trackers[key] = InfgramTracker(self.source, max_support=self.max_support,
                                                      max_query_len=self.max_query_len)
        before = tr.queries
        est = tr.sync(context)
        self.queries += tr.queries - before
        return tr.suffix, est

    def _ok(self, est: InfgramEstimate) -> tuple[int, int] | None:
        if est.empty or est.suffix_len < self.min_suffix_len:
            return None
        tok, cnt = est.top()
        if cnt < self.min_count or cnt < self.min_prob * est.total:
            return None
        return tok, cnt

    def _chain(self, suffix: np.ndarray, est: InfgramEstimate, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            top = self._ok(est)
            if top is None:
                break
            tok = top[0]
            out.append(tok)
            if len(out) == k:
                break
            q = np.append(suffix[len(suffix) - est.suffix_len:], tok)
            if self.max_query_len is not None:
                q = q[-self.max_query_len:]
            est = self._query(q)
            suffix = q
        return out

    def propose(self, context, k, key=0):
        return self.propose_with_len(context, k, key)[0]

    def propose_with_len(self, context, k, key=0) -> tuple[list[int], int]:
        """(draft, length of the context's longest suffix found in the corpus)."""
        t0 = time.perf_counter()
        suffix, est = self._context_estimate(context, key)
        out = self._chain(suffix, est, k) if k > 0 else []
        self.seconds += time.perf_counter() - t0
        return out, est.suffix_len

    def propose_tree(self, context, k, width: int = 2, key=0) -> list[list[int]]:
        """Up to ``width`` chains sharing the context: the top ``width`` first tokens (by count),
        each continued greedily to k tokens in all. Best chain first."""
        t0 = time.perf_counter()
        suffix, est = self._context_estimate(context, key)
        chains: list[list[int]] = []
        if k > 0 and self._ok(est) is not None:
            order = np.lexsort((est.tokens, -est.counts))[:width]
            for i in order:
                tok, cnt = int(est.tokens[i]), int(est.counts[i])
                if cnt < self.min_count or cnt < self.min_prob * est.total:
                    continue
                q = np.append(suffix[len(suffix) - est.suffix_len:], tok)
                if self.max_query_len is not None:
                    q = q[-self.max_query_len:]
                chains.append([tok] + self._chain(q, self._query(q), k - 1) if k > 1 else [tok])
        self.seconds += time.perf_counter() - t0
        return chains


class HybridDrafter:
    """The corpus and the context together: propose from whichever has the longer match for the
    context's end, the n-gram engine (InfgramDrafter: longest suffix found in the corpus) or the
    context itself (PromptLookupDrafter: longest earlier occurrence, up to ``max_ngram`` tokens).
    The context wins ties, and any match of at least ``context_min`` tokens (a model repeating
    itself is the most predictable case)."""

    def __init__(self, source, *, max_ngram: int = 8, context_min: int = 3, **infgram_kwargs):
        self.infgram = InfgramDrafter(source, **infgram_kwargs)
        self.lookup = PromptLookupDrafter(max_ngram=max_ngram)
        self.context_min = int(context_min)
        self.used = {"context": 0, "corpus": 0}

    @property
    def seconds(self) -> float:
        return self.infgram.seconds + self.lookup.seconds

    def reset(self) -> None:
        self.infgram.reset()

    def propose(self, context, k, key=0):
        ctx_draft, ctx_len = self.lookup.propose_with_len(context, k)
        inf_draft, inf_len = self.infgram.propose_with_len(context, k, key)
        if ctx_draft and ctx_len >= min(inf_len, self.context_min):
            self.used["context"] += 1
            return ctx_draft
        if inf_draft:
            self.used["corpus"] += 1
        return inf_draft
