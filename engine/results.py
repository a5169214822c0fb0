"""Typed query results shared by the in-process index, the gRPC client and lm_integration."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FindResult:
    """Where a token sequence occurs: one half-open suffix-array range per shard."""

    count: int
    segments: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ProbResult:
    """P(cont | prompt) = cont_count / prompt_count; prob is -1.0 when the prompt never occurs
    (infini-gram's convention)."""

    prompt_count: int
    cont_count: int
    prob: float


@dataclass(frozen=True)
class InfgramProbResult(ProbResult):
    """A ProbResult for the longest suffix of the prompt that occurs; suffix_len is its length."""

    suffix_len: int = 0


@dataclass(frozen=True)
class NextTokenDistribution:
    """Every distinct token that follows the prompt, with its count.

    tokens are sorted ascending (int64); counts align with tokens. end_count counts occurrences
    of the prompt that are followed by the end of a document (no next token). prompt_count =
    counts.sum() + end_count when exact. approx is True when max_support capped the scan, in
    which case counts are scaled estimates as in infini-gram.
    """

    prompt_count: int
    tokens: np.ndarray
    counts: np.ndarray
    end_count: int = 0
    approx: bool = False

    @property
    def probs(self) -> np.ndarray:
        if self.prompt_count == 0:
            return np.zeros(len(self.counts), dtype=np.float64)
        return self.counts / float(self.prompt_count)

    def as_dict(self) -> dict[int, tuple[int, float]]:
        """{token_id: (count, prob)}, the shape of infini-gram's result_by_token_id."""
        return {int(t): (int(c), float(p)) for t, c, p in zip(self.tokens, self.counts, self.probs)}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NextTokenDistribution):
            return NotImplemented
        return (
            type(self) is type(other)
            and self.prompt_count == other.prompt_count
            and self.end_count == other.end_count
            and self.approx == other.approx
            and np.array_equal(self.tokens, other.tokens)
            and np.array_equal(self.counts, other.counts)
            and getattr(self, "suffix_len", None) == getattr(other, "suffix_len", None)
        )


@dataclass(frozen=True, eq=False)
class InfgramNtdResult(NextTokenDistribution):
    """A NextTokenDistribution for the longest suffix of the prompt that occurs."""

    suffix_len: int = 0


@dataclass(frozen=True)
class Document:
    """A document (or the window of it around a match, capped at max_disp_len tokens)."""

    doc_ix: int  # global: documents of earlier shards come first
    doc_len: int  # tokens in the whole document
    disp_len: int  # tokens returned in token_ids
    needle_offset: int  # where the match starts inside token_ids (0 when fetched by index)
    token_ids: np.ndarray
    metadata: dict | None = None
    shard: int = 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Document):
            return NotImplemented
        return (
            (self.doc_ix, self.doc_len, self.disp_len, self.needle_offset, self.metadata, self.shard)
            == (other.doc_ix, other.doc_len, other.disp_len, other.needle_offset, other.metadata, other.shard)
            and np.array_equal(self.token_ids, other.token_ids)
        )


@dataclass(frozen=True)
class SearchResult:
    """Documents containing a query: count is the total number of occurrences."""

    count: int
    documents: list[Document] = field(default_factory=list)
    approx: bool = False


@dataclass(frozen=True)
class ProbBatchResult:
    """Column-wise results of prob_batch / infgram_prob_batch (suffix_lens only for the latter)."""

    prompt_counts: np.ndarray  # int64
    cont_counts: np.ndarray  # int64
    probs: np.ndarray  # float64, -1.0 where the prompt never occurs
    suffix_lens: np.ndarray | None = None  # int64

    def __len__(self) -> int:
        return len(self.probs)


@dataclass(frozen=True)
class PackedQueries:
    """Many token-id queries in two arrays: query i is tokens[offsets[i]:offsets[i+1]].

    The wire format of every batch RPC and the fast path of every *_batch method.
    """

    tokens: np.ndarray  # int64
    offsets: np.ndarray  # int64, len = number of queries + 1, offsets[0] == 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    @classmethod
    def from_list(cls, queries) -> "PackedQueries":
        arrays = [np.asarray(q, dtype=np.int64).reshape(-1) for q in queries]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        if arrays:
            offsets[1:] = np.cumsum([len(a) for a in arrays])
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        return cls(tokens.astype(np.int64, copy=False), offsets)
