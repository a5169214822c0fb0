"""An in-memory NgramSource for lm_integration tests: brute force over a few token documents.

Semantics follow the engine: an occurrence never crosses a document boundary; an occurrence that
ends a document adds to end_count; the empty prompt occurs before every token (the unigram
distribution); infgram_ntd backs off to the longest suffix of the prompt that occurs at all.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from engine.results import InfgramNtdResult, NextTokenDistribution, PackedQueries


class FakeSource:
    def __init__(self, documents, vocab_size: int, fingerprint: str | None = "fake-fp", tokenize=None):
        if tokenize is not None:
            self.tokenize = tokenize  # text -> ids, like NgramIndex.tokenize
        self.documents = [tuple(int(t) for t in d) for d in documents]
        self._vocab_size = int(vocab_size)
        self._fp = fingerprint
        self.calls = Counter()
        self.query_lens: list[int] = []
        self._cache: dict[tuple, tuple[int, Counter, int]] = {}

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def tokenizer_fingerprint(self):
        return self._fp

    def _scan(self, q: tuple) -> tuple[int, Counter, int]:
        if q in self._cache:
            return self._cache[q]
        n = len(q)
        nxt: Counter = Counter()
        total = end = 0
        for d in self.documents:
            if n == 0:
                nxt.update(d)
                total += len(d)
                continue
            for i in range(len(d) - n + 1):
                if d[i : i + n] == q:
                    total += 1
                    if i + n < len(d):
                        nxt[d[i + n]] += 1
                    else:
                        end += 1
        self._cache[q] = (total, nxt, end)
        return self._cache[q]

    @staticmethod
    def _q(query) -> tuple:
        return tuple(int(t) for t in np.asarray(query, dtype=np.int64).reshape(-1))

    def count(self, query) -> int:
        self.calls["count"] += 1
        return self._scan(self._q(query))[0]

    def _ntd(self, q: tuple, cls=NextTokenDistribution, **extra):
        total, nxt, end = self._scan(q)
        toks = np.array(sorted(nxt), dtype=np.int64)
        cnts = np.array([nxt[t] for t in toks], dtype=np.int64)
        return cls(prompt_count=total, tokens=toks, counts=cnts, end_count=end, **extra)

    def ntd(self, prompt, max_support=None):
        self.calls["ntd"] += 1
        return self._ntd(self._q(prompt))

    def infgram_ntd(self, prompt, max_support=None):
        self.calls["infgram_ntd"] += 1
        q = self._q(prompt)
        self.query_lens.append(len(q))
        for l in range(len(q), 0, -1):
            if self._scan(q[len(q) - l :])[0] > 0:
                return self._ntd(q[len(q) - l :], InfgramNtdResult, suffix_len=l)
        return self._ntd((), InfgramNtdResult, suffix_len=0)

    def count_batch(self, queries) -> np.ndarray:
        qs = [queries[i] for i in range(len(queries))] if isinstance(queries, PackedQueries) else queries
        return np.array([self.count(q) for q in qs], dtype=np.int64)

    def infgram_ntd_batch(self, prompts, max_support=None) -> list:
        self.calls["infgram_ntd_batch"] += 1
        ps = [prompts[i] for i in range(len(prompts))] if isinstance(prompts, PackedQueries) else prompts
        return [self.infgram_ntd(p, max_support) for p in ps]


def brute_longest_suffix(documents, context) -> int:
    """Length of the longest suffix of context that occurs in documents (for assertions)."""
    docs = [tuple(d) for d in documents]
    ctx = tuple(context)
    for l in range(len(ctx), 0, -1):
        s = ctx[len(ctx) - l :]
        if any(d[i : i + l] == s for d in docs for i in range(len(d) - l + 1)):
            return l
    return 0


def tiny_llama(vocab_size: int = 64, seed: int = 0, dtype=None, eos_token_id: int | None = None):
    """A tiny randomly initialised Llama (float64 by default, so that forward passes of different
    shapes agree to ~1e-15 and greedy argmax comparisons are exact in practice)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=vocab_size - 1 if eos_token_id is None else eos_token_id, pad_token_id=0,
    )
    model = LlamaForCausalLM(cfg).to(dtype or torch.float64).eval()
    return model


def smollm_or_skip():
    """(model, tokenizer) of SmolLM2-135M, or pytest.skip when it is not fetched. ``make test`` (and so CI)
    fetches it and sets NGRAM_REQUIRE_SMOLLM=1, under which a missing model fails instead of skipping."""
    import os

    import pytest

    from lm_integration import smollm2

    if not smollm2.is_fetched():
        message = "SmolLM2-135M not in the cache: run `ngram fetch smollm2`"
        if os.environ.get("NGRAM_REQUIRE_SMOLLM") == "1":
            pytest.fail(message + " (NGRAM_REQUIRE_SMOLLM=1 asks for the real model)")
        pytest.skip(message)
    return smollm2.load()
