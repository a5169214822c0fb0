"""An online ∞-gram model over the text being written: the current document as its own tiny corpus.

An index over a corpus knows the language; the document at hand knows its own names, formulas and
turns of phrase, which repeat (what Nacrith's online n-gram predictors and prompt-lookup decoding
exploit). :class:`ContextNgramModel` keeps the tokens seen so far and answers the ∞-gram question
over them: the longest suffix of a query that occurred earlier with a token after it, and the
exact counts of those next tokens. It answers with the same fields as ``engine.NgramIndex.infgram_ntd``
(``tokens``, ``counts``, ``prompt_count``, ``end_count``, ``suffix_len``, ``approx``), so code that
reads an index's distribution reads this one the same way.

Matching is by position lists, not a suffix structure: every earlier occurrence of the query's last
token pair is a candidate, and all candidates are extended backwards together with numpy, one token
per step, until none is left. The cost per query is about the number of candidates times the match
length; ``max_suffix_len`` bounds the latter (a match that long is already decisive).

No torch, no engine: plain numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ContextDistribution:
    """Next-token counts after the longest suffix of a query that occurred in the context."""

    tokens: np.ndarray  # distinct next tokens, ascending
    counts: np.ndarray  # how often each followed the suffix
    suffix_len: int  # tokens of the query matched (0: no token of it occurred with a successor)
    prompt_count: int  # occurrences of the suffix that have a next token
    end_count: int = 0  # the context has no document ends
    approx: bool = False
    recent: int = -1  # the token after the suffix's most recent occurrence (prompt lookup's guess)

    @property
    def probs(self) -> np.ndarray:
        return self.counts / self.prompt_count if self.prompt_count else self.counts.astype(np.float64)


class ContextNgramModel:
    """Online exact ∞-gram counts over a growing token sequence (see module docstring)."""

    def __init__(self, tokens: Sequence[int] = (), *, max_suffix_len: int = 64):
        if max_suffix_len < 1:
            raise ValueError(f"max_suffix_len must be >= 1, got {max_suffix_len}")
        self.max_suffix_len = int(max_suffix_len)
        self._buf = np.zeros(1024, dtype=np.int64)
        self._n = 0
        self._by_token: dict[int, list[int]] = {}  # token -> positions where it occurs
        self._by_pair: dict[tuple[int, int], list[int]] = {}  # (a, b) -> positions of b preceded by a
        self.extend(tokens)

    def __len__(self) -> int:
        return self._n

    @property
    def tokens(self) -> np.ndarray:
        return self._buf[: self._n]

    def reset(self, tokens: Sequence[int] = ()) -> None:
        self.__init__(tokens, max_suffix_len=self.max_suffix_len)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens to the context."""
        for tok in tokens:
            tok = int(tok)
            if self._n == len(self._buf):
                self._buf = np.concatenate([self._buf, np.zeros_like(self._buf)])
            self._buf[self._n] = tok
            self._by_token.setdefault(tok, []).append(self._n)
            if self._n:
                self._by_pair.setdefault((int(self._buf[self._n - 1]), tok), []).append(self._n)
            self._n += 1

    def infgram_ntd(self, query: Sequence[int]) -> ContextDistribution:
        """Counts of the tokens that followed the longest suffix of ``query`` (capped at
        max_suffix_len) among earlier positions of the context that have a next token."""
        q = [int(t) for t in query[-self.max_suffix_len:]]
        empty = ContextDistribution(np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 0)
        if not q or self._n < 2:
            return empty
        # Candidates: end positions of the last pair (or token) of the query that have a successor.
        if len(q) >= 2 and (q[-2], q[-1]) in self._by_pair:
            ends, matched = self._by_pair[(q[-2], q[-1])], 2
        elif q[-1] in self._by_token:
            ends, matched = self._by_token[q[-1]], 1
        else:
            return empty
        ends = np.asarray(ends, dtype=np.int64)
        ends = ends[ends < self._n - 1]
        if len(ends) == 0:
            if matched == 2 and q[-1] in self._by_token:  # the pair only occurs at the very end
                return self.infgram_ntd(q[-1:])
            return empty
        data = self._buf
        # Extend all candidates backwards together; keep the last non-empty set (the longest match).
        while matched < len(q):
            before = ends - matched
            alive = before >= 0
            alive[alive] = data[before[alive]] == q[-1 - matched]
            if not alive.any():
                break
            ends = ends[alive]
            matched += 1
        tokens, counts = np.unique(data[ends + 1], return_counts=True)
        recent = int(data[int(ends.max()) + 1])
        return ContextDistribution(tokens, counts.astype(np.int64), matched, int(len(ends)), recent=recent)

    def prob(self, query: Sequence[int], token: int) -> tuple[float, int]:
        """(P(token | longest matched suffix of query), suffix length); (0.0, 0) with no match."""
        d = self.infgram_ntd(query)
        if not d.prompt_count:
            return 0.0, 0
        i = np.searchsorted(d.tokens, token)
        hit = i < len(d.tokens) and d.tokens[i] == token
        return (float(d.counts[i]) / d.prompt_count if hit else 0.0), d.suffix_len
