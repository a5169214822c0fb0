"""The only way lm_integration talks to an n-gram engine.

Both engine.NgramIndex (in-process) and engine.NgramClient (over gRPC) satisfy this protocol;
unit tests use a small in-memory fake. Token ids are plain ints / int64 numpy arrays.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class NgramSource(Protocol):
    @property
    def vocab_size(self) -> int:
        """Number of token ids of the index's tokenizer (ids are 0 .. vocab_size - 1)."""

    @property
    def tokenizer_fingerprint(self) -> str | None:
        """A stable hash of the index's tokenizer (None when the index has no tokenizer)."""

    def count(self, query: Sequence[int]) -> int:
        """Occurrences of the token sequence in the whole corpus."""

    def ntd(self, prompt: Sequence[int], max_support: int | None = None):
        """Exact next-token distribution after prompt (engine.results.NextTokenDistribution)."""

    def infgram_ntd(self, prompt: Sequence[int], max_support: int | None = None):
        """Next-token distribution after the longest suffix of prompt that occurs
        (engine.results.InfgramNtdResult, with suffix_len). Only the last tokens of prompt
        matter, so a caller that knows the previous suffix length l may pass prompt[-(l+1):]."""

    def count_batch(self, queries) -> np.ndarray:
        """Counts of many queries (a list of sequences or engine.results.PackedQueries), int64."""

    def infgram_ntd_batch(self, prompts, max_support: int | None = None) -> list:
        """infgram_ntd of many prompts at once."""
