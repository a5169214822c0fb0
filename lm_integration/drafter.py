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

from lm_integration.infgram import InfgramCache, InfgramEstimate, InfgramTracker, estimate_from_ntd


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
    count is below ``min_count``. At most one engine query per drafted token, each at most
    suffix_len + 1 tokens long (a drafted token always occurs after the suffix, so these ask for the
    plain ``ntd`` and skip the suffix search); the context's own match is kept per ``key`` and
    extended incrementally. Answers go through an exact LRU cache (``cache``: an InfgramCache, which
    may be shared with other drafters or a prior; else a private one of ``cache_size`` entries).
    Pass ``tokenizer`` (and ``model``) to refuse an index built with another tokenizer.

    ``lookahead``: once the string being continued occurs at most this many times in the corpus, the
    rest of the chain is computed from those occurrences alone (one ``search_docs`` call fetches the
    tokens after each; the chain only ever narrows them down), instead of one query per token. Same
    drafts (exact counts, document ends included); used only with exact distributions
    (``max_support=None``), no ``max_query_len``, and a source that has ``search_docs``
    (engine.NgramIndex, engine.NgramClient). 0 turns it off.
    """

    def __init__(self, source, *, min_suffix_len: int = 1, min_prob: float = 0.0, min_count: int = 1,
                 max_support: int | None = None, max_query_len: int | None = None, cache_size: int = 65536,
                 cache: InfgramCache | None = None, lookahead: int = 8, tokenizer=None, model=None):
        from lm_integration.tokenizer_compat import check_tokenizer_compat

        check_tokenizer_compat(source, tokenizer, model=model)  # warns when given neither
        self.source = source
        self.min_suffix_len = int(min_suffix_len)
        self.min_prob = float(min_prob)
        self.min_count = int(min_count)
        self.max_support = max_support
        self.max_query_len = max_query_len
        self._trackers: dict[int, InfgramTracker] = {}
        self.cache = cache if cache is not None else InfgramCache(max_entries=cache_size)
        self.lookahead = int(lookahead) if (max_support is None and max_query_len is None
                                            and hasattr(source, "search_docs")) else 0
        self.seconds = 0.0
        self.queries = 0  # engine distribution queries (cache misses)
        self.lookups = 0  # search_docs calls made for lookahead

    def reset(self) -> None:
        """Forget the per-key context state (the cache stays: its answers never go stale)."""
        self._trackers.clear()

    def _query(self, q: list) -> InfgramEstimate:
        """The estimate after ``q``, a string known to occur (a matched suffix plus a token seen after
        it, or a suffix of that): its own ntd, with suffix_len = len(q)."""
        key = (self.max_support, None, *q)
        est = self.cache.get(key)
        if est is None:
            self.queries += 1
            est = estimate_from_ntd(self.source.ntd(q, max_support=self.max_support), suffix_len=len(q))
            self.cache.put(key, est)
        return est

    def _context_estimate(self, context, key) -> tuple[list, InfgramEstimate]:
        tr = self._trackers.get(key)
        if tr is None:
            tr = self._trackers[key] = InfgramTracker(self.source, max_support=self.max_support,
                                                      max_query_len=self.max_query_len, cache=self.cache)
        before = tr.queries
        est = tr.sync(context)
        self.queries += tr.queries - before
        return tr._sfx, est

    def _ok(self, est: InfgramEstimate) -> tuple[int, int] | None:
        if est.empty or est.suffix_len < self.min_suffix_len:
            return None
        tok, cnt = est.top()
        if cnt < self.min_count or cnt < self.min_prob * est.total:
            return None
        return tok, cnt

    def _chain(self, suffix: list, est: InfgramEstimate, k: int) -> list[int]:
        """Up to k tokens: the top continuation of ``est`` (the estimate after the last
        est.suffix_len tokens of ``suffix``), then the chain after it."""
        if k <= 0:
            return []
        top = self._ok(est)
        if top is None:
            return []
        tok, cnt = top
        q = self._grow(suffix[len(suffix) - est.suffix_len:], tok)
        return [tok] + self._continue(q, cnt, k - 1)

    def _grow(self, s: list, tok: int) -> list:
        q = s + [tok]
        if self.max_query_len is not None:
            q = q[-self.max_query_len:]
        return q

    def _continue(self, q: list, count: int, n: int) -> list[int]:
        """Up to n tokens continuing ``q``, a string that occurs ``count`` times in the corpus."""
        out: list[int] = []
        while len(out) < n:
            if 0 < count <= self.lookahead:
                local = self._local_chain(q, count, n - len(out))
                if local is not None:
                    return out + local
            est = self._query(q)
            top = self._ok(est)
            if top is None:
                break
            tok, count = top
            out.append(tok)
            if len(out) < n:
                q = self._grow(q, tok)
        return out

    def _local_chain(self, q: list, count: int, n: int) -> list[int] | None:
        """The chain after ``q`` computed from its ``count`` occurrences (None: fall back to queries).

        After q + t1..tj the occurrences are those of q followed by t1..tj, and the next-token
        counts are what follows them (an occurrence at a document's end adds to no token), exactly
        what ntd(q + t1..tj) would count."""
        qs = q
        self.lookups += 1
        res = self.source.search_docs(qs, max_docs=count, max_disp_len=2 * (len(qs) + n))
        docs = res.documents
        if res.count != count or len(docs) != count:
            return None
        L = len(qs)
        alive = []
        for d in docs:
            ids = np.asarray(d.token_ids)
            a = int(d.needle_offset)
            if ids[a:a + L].tolist() != qs:  # not the window this relies on: play safe
                return None
            alive.append(ids[a + L:a + L + n].tolist())
        out: list[int] = []
        for j in range(n):
            counts: dict[int, int] = {}
            for c in alive:
                if len(c) > j:
                    counts[c[j]] = counts.get(c[j], 0) + 1
            if not counts:
                break
            tok = min(counts, key=lambda t: (-counts[t], t))  # most frequent, smallest id on ties
            cnt = counts[tok]
            if cnt < self.min_count or cnt < self.min_prob * sum(counts.values()):
                break
            out.append(tok)
            alive = [c for c in alive if len(c) > j and c[j] == tok]
        return out

    def propose(self, context, k, key=0):
        return self.propose_with_len(context, k, key)[0]

    def match(self, context, key=0) -> InfgramEstimate:
        """Bring ``key``'s state to ``context`` and return its estimate (suffix_len: the length of the
        context's longest suffix found in the corpus), without drafting."""
        t0 = time.perf_counter()
        est = self._context_estimate(context, key)[1]
        self.seconds += time.perf_counter() - t0
        return est

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
                q = self._grow(suffix[len(suffix) - est.suffix_len:], tok)
                chains.append([tok] + self._continue(q, cnt, k - 1))
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
        if ctx_draft and ctx_len >= self.context_min:
            # the context wins whatever the corpus says: skip the engine (the corpus state catches
            # up in one query the next time it is needed)
            self.used["context"] += 1
            return ctx_draft
        inf_len = self.infgram.match(context, key).suffix_len
        if ctx_draft and ctx_len >= inf_len:
            self.used["context"] += 1
            return ctx_draft
        inf_draft = self.infgram.propose_with_len(context, k, key)[0]  # state is current: no new query
        if inf_draft:
            self.used["corpus"] += 1
        return inf_draft
