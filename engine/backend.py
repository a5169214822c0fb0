"""QueryBackend: the query methods that NgramIndex, NgramClient and NgramRouter all offer.

One protocol, so that a caller (lm_integration, the servicer, a script) can take any of the three.
Implementations may add keyword-only parameters with defaults (the client's ``timeout``, the
index's ``check_alive`` / ``admit`` callbacks); tests/serve/test_parity.py checks that each offers
every method below with these parameters and gives equal answers on the same index.
engine.serve.rpcs maps each method to the RPC that carries it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from engine.results import (
    Document,
    FindResult,
    InfgramNtdResult,
    InfgramProbResult,
    NextTokenDistribution,
    ProbBatchResult,
    ProbResult,
    SearchResult,
)


@runtime_checkable
class QueryBackend(Protocol):
    """Every query takes token ids (a list or 1-D int array) or text (tokenized by the backend)."""

    #: False for a backend that computes here (NgramIndex); True for one that forwards each request to
    #: servers (NgramRouter: it then also offers ``health_status()``, and takes requests as they came).
    forwards_requests: bool

    def tokenize(self, text: str) -> np.ndarray: ...

    def detokenize(self, ids) -> str: ...

    def count(self, query) -> int: ...

    def count_batch(self, queries) -> np.ndarray: ...

    def find(self, query) -> FindResult: ...

    def prob(self, prompt, cont_id: int) -> ProbResult: ...

    def prob_batch(self, prompts, cont_ids) -> ProbBatchResult: ...

    def ntd(self, prompt, max_support: int | None = None) -> NextTokenDistribution: ...

    def ntd_batch(self, prompts, max_support: int | None = None) -> list[NextTokenDistribution]: ...

    def infgram_prob(self, prompt, cont_id: int) -> InfgramProbResult: ...

    def infgram_prob_batch(self, prompts, cont_ids) -> ProbBatchResult: ...

    def infgram_ntd(self, prompt, max_support: int | None = None) -> InfgramNtdResult: ...

    def infgram_ntd_batch(self, prompts, max_support: int | None = None) -> list[InfgramNtdResult]: ...

    def search_docs(self, query, max_docs: int = 10, max_disp_len: int = 1000) -> SearchResult: ...

    def get_doc_by_ix(self, doc_ix: int, max_disp_len: int = 1000) -> Document: ...

    def get_doc_by_rank(self, shard: int, rank: int, max_disp_len: int = 1000) -> Document: ...

    def get_doc_by_ptr(self, shard: int, ptr: int, max_disp_len: int = 1000) -> Document: ...

    def frequent_ngrams(self, n_min: int = 1, n_max: int | None = None, *, min_count: int | None = None,
                        top_k: int | None = None): ...

    def longest_matches(self, text, max_len: int | None = None, infgram: bool = False): ...

    def infgram_probs(self, text, max_len: int | None = None) -> ProbBatchResult: ...

    def attribute(self, text, min_len: int = 8, max_count: int | None = None, *, max_docs: int = 3,
                  max_disp_len: int = 100, creativity_n: int | None = None): ...

    def count_cnf(self, cnf, max_clause_freq: int | None = None): ...

    def search_docs_cnf(self, cnf, max_docs: int = 10, max_clause_freq: int | None = None,
                        max_disp_len: int = 1000): ...


QUERY_METHODS: tuple[str, ...] = tuple(
    name for name, value in vars(QueryBackend).items() if callable(value) and not name.startswith("_"))
