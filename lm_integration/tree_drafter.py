"""Probability-guided draft trees from the corpus, the context and earlier outputs (no torch).

Every candidate continuation gets an estimated probability that the model will accept it, and each
step's draft is the tree that maximises the expected number of accepted tokens: nodes are added best
first, by the probability that the whole path to them is accepted, while that probability is at least
``min_path_prob`` (a node less likely than that costs more verification than it is expected to save)
and the tree has fewer than ``max_nodes`` nodes. Where every source is unsure the draft is empty and
the step is a plain greedy step, so drafting never makes decoding much slower than greedy.

Three sources, each an exact ∞-gram distribution (the longest suffix of the text that occurred, and the
counts of what followed it):

* the corpus: an n-gram engine (``engine.NgramIndex`` or ``engine.NgramClient``; optional);
* the context: the prompt and what has been generated so far (lm_integration.context), which knows
  the document's own names and phrases (what prompt lookup exploits);
* the history: outputs of earlier sequences decoded by this drafter (SuffixDecoding's global tree).

Where the context's counts disagree, the token after the suffix's latest occurrence (prompt lookup's
guess) is a fourth source, "recent": in code the latest of several continuations is often the next.

A source's empirical frequency is not the model's acceptance probability, so each source is calibrated
online: for every matched-suffix length bucket, the drafter keeps how often the source's most frequent
token was the token the model actually produced, against how often the source said it would be, and
scales that source's probabilities by the ratio. A token's estimate is the largest calibrated estimate
any source gives it. A second calibration turns that estimate into the probability the tree is built
from: for every candidate edge at a node the model reached, whether the model took it, kept per
(the set of sources that proposed the token, estimate bin). The largest of several noisy estimates is
biased upward, a source's second and third tokens fare differently from its first, and sources that
agree are right far more often than either alone; this catches all three.

``propose_tree(context, k, width, key)`` returns root-to-leaf chains, the most probable first (what
``speculative_generate_tree`` verifies in one pass); ``propose(context, k, key)`` returns that first
chain alone (for chain verifiers such as ``speculative_generate``).
"""

from __future__ import annotations

import heapq
import time
from typing import Sequence

import numpy as np

from lm_integration.context import ContextNgramModel
from lm_integration.infgram import InfgramCache, estimate_from_ntd

_LEN_BUCKETS = (0, 1, 2, 3, 5, 9, 17)  # matched-suffix lengths: 0, 1, 2, 3-4, 5-8, 9-16, 17+


def _bucket(suffix_len: int) -> int:
    return int(np.searchsorted(_LEN_BUCKETS, suffix_len, side="right")) - 1


class _Calibration:
    """Per (source, suffix-length bucket): observed hits of the source's top token over the hits its
    own probabilities predicted, with a pseudo-count prior of ``prior`` observations at ratio 1."""

    def __init__(self, prior: float = 4.0):
        self.prior = prior
        self.hits: dict[tuple[str, int], float] = {}
        self.expected: dict[tuple[str, int], float] = {}

    def scale(self, source: str, suffix_len: int) -> float:
        key = (source, _bucket(suffix_len))
        return (self.hits.get(key, 0.0) + self.prior) / (self.expected.get(key, 0.0) + self.prior)

    def observe(self, source: str, suffix_len: int, predicted_prob: float, hit: bool) -> None:
        key = (source, _bucket(suffix_len))
        self.hits[key] = self.hits.get(key, 0.0) + float(hit)
        self.expected[key] = self.expected.get(key, 0.0) + predicted_prob


class _AcceptanceCalibration:
    """The probability that the model takes a drafted edge, given the estimate the drafter gave it:
    per (the sources that proposed the token, estimate bin), how often such edges were the model's
    token, over every candidate edge at a node the model reached (accepted or not, drafted or not), with a
    pseudo-count prior of ``prior`` observations at the estimate itself. The per-source calibration
    above scales a source's whole distribution by how its top token fared; this one corrects what a
    tree is actually built from, the estimates after the max over sources (a max over noisy sources
    is biased upward)."""

    BINS = 10

    def __init__(self, prior: float = 8.0):
        self.prior = prior
        self.hits: dict[tuple[str, int], float] = {}
        self.seen: dict[tuple[str, int], float] = {}

    def _key(self, source: str, estimate: float) -> tuple[str, int]:
        return source, min(int(estimate * self.BINS), self.BINS - 1)

    def __call__(self, source: str, estimate: float) -> float:
        key = self._key(source, estimate)
        return (self.hits.get(key, 0.0) + self.prior * estimate) / (self.seen.get(key, 0.0) + self.prior)

    def observe(self, source: str, estimate: float, hit: bool) -> None:
        key = self._key(source, estimate)
        self.hits[key] = self.hits.get(key, 0.0) + float(hit)
        self.seen[key] = self.seen.get(key, 0.0) + 1.0


class _Sequence:
    """One sequence's context model and how much of the context it holds."""

    def __init__(self, context: list[int], max_suffix_len: int):
        self.model = ContextNgramModel(context, max_suffix_len=max_suffix_len)
        self.start = len(context)  # where generation began (what history receives)
        self.last_tree: dict[tuple, dict] = {}  # path -> {source: (top token, its prob, suffix_len)}
        self.last_edges: dict[tuple, dict] = {}  # path -> {candidate token: (estimate, source)}
        self.last_len = len(context)


class TreeDrafter:
    """Draft trees that maximise expected accepted tokens (see module docstring).

    ``source``: an NgramSource for the corpus, or None for context and history alone. ``max_nodes``:
    the most draft tokens per step. ``token_cost`` and ``draft_overhead``: the cost of verifying, as
    shares of a plain greedy step: a pass over n draft tokens costs 1 + draft_overhead + token_cost * n.
    The defaults are SmolLM2-135M's on one CPU thread here (a greedy step 67 ms, a pass with 1 / 8 / 16 /
    32 draft tokens about 108 / 110 / 142 / 199 ms); on a GPU both are near 0 and trees grow. The tree is
    grown best first while a node pays at the margin, then cut to the prefix with the most expected
    tokens per unit of cost, which is no draft at all when a greedy step does better.
    ``min_path_prob``: the least acceptance probability of a path worth verifying at all. ``max_support`` caps the corpus scans (drafts only need the top continuations).
    ``history``: also draft from earlier outputs. Pass ``tokenizer``/``model`` to refuse an index built
    with another tokenizer.
    """

    def __init__(self, source=None, *, max_nodes: int = 32, min_path_prob: float = 0.05, max_depth: int = 16,
                 branch: int = 4, max_suffix_len: int = 32, max_support: int | None = 2000, history: bool = True,
                 token_cost: float = 0.05, draft_overhead: float = 0.5, cache: InfgramCache | None = None,
                 tokenizer=None, model=None):
        if source is not None:
            from lm_integration.tokenizer_compat import check_tokenizer_compat

            check_tokenizer_compat(source, tokenizer, model=model)
        if max_nodes < 0 or not 0.0 < min_path_prob <= 1.0:
            raise ValueError("need max_nodes >= 0 and 0 < min_path_prob <= 1")
        self.source = source
        self.max_nodes, self.min_path_prob, self.max_depth = int(max_nodes), float(min_path_prob), int(max_depth)
        self.branch, self.max_suffix_len, self.max_support = int(branch), int(max_suffix_len), max_support
        if token_cost < 0 or draft_overhead < 0:
            raise ValueError(f"token_cost and draft_overhead must be >= 0, got {token_cost}, {draft_overhead}")
        self.token_cost, self.draft_overhead = float(token_cost), float(draft_overhead)
        self.cache = cache if cache is not None else InfgramCache(max_entries=65536)
        self.history = ContextNgramModel(max_suffix_len=max_suffix_len) if history else None
        self.calibration = _Calibration()
        self.acceptance = _AcceptanceCalibration()
        self._seqs: dict[int, _Sequence] = {}
        self.seconds = 0.0
        self.queries = 0  # corpus queries (cache misses)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every sequence (their outputs stay in the history)."""
        for seq in self._seqs.values():
            self._retire(seq)
        self._seqs.clear()

    def _retire(self, seq: _Sequence) -> None:
        if self.history is not None and len(seq.model) > seq.start:
            self.history.extend(seq.model.tokens[seq.start:].tolist())

    def _sync(self, context: list[int], key: int) -> _Sequence:
        """The sequence state for ``context``: extended by the tokens added since the last call (and the
        calibration taught by them), or started afresh when ``context`` is a new sequence."""
        seq = self._seqs.get(key)
        held = len(seq.model) if seq is not None else 0
        tail = 8
        if seq is None or len(context) < held or \
                seq.model.tokens[max(0, held - tail):held].tolist() != context[max(0, held - tail):held]:
            if seq is not None:
                self._retire(seq)
            seq = self._seqs[key] = _Sequence(context, self.max_suffix_len)
            return seq
        new = context[held:]
        self._learn(seq, new)
        seq.model.extend(new)
        return seq

    def _learn(self, seq: _Sequence, new: list[int]) -> None:
        """Score the last tree's predictions along the path the model actually took."""
        path: tuple = ()
        for tok in new:
            preds = seq.last_tree.get(path)
            if preds is None:
                break
            for name, (top, prob, suffix_len) in preds.items():
                self.calibration.observe(name, suffix_len, prob, top == tok)
            for cand, (estimate, name) in seq.last_edges.get(path, {}).items():
                self.acceptance.observe(name, estimate, cand == tok)
            path = path + (tok,)
        seq.last_tree = {}
        seq.last_edges = {}

    # ------------------------------------------------------------------ estimates
    def _corpus(self, text: list[int]):
        q = text[-self.max_suffix_len:]
        key = (self.max_support, "inf", *q)
        est = self.cache.get(key)
        if est is None:
            self.queries += 1
            est = estimate_from_ntd(self.source.infgram_ntd(q, max_support=self.max_support))
            self.cache.put(key, est)
        return est.suffix_len, est.tokens, est.counts

    def _estimates(self, seq: _Sequence, text: list[int]) -> tuple[dict[int, tuple[float, str]], dict]:
        """({token: (calibrated estimate, the sources that proposed it joined by "+")},
        {source: (top, its prob, suffix_len)}) after ``text``."""
        found = []
        d = seq.model.infgram_ntd(text[-self.max_suffix_len:])
        if d.prompt_count:
            found.append(("context", d.suffix_len, d.tokens, d.counts))
            if len(d.tokens) > 1:  # where the counts disagree, the latest occurrence is its own guess
                found.append(("recent", d.suffix_len, np.array([d.recent]), np.ones(1, np.int64)))
        if self.history is not None and len(self.history) > 1:
            d = self.history.infgram_ntd(text[-self.max_suffix_len:])
            if d.prompt_count:
                found.append(("history", d.suffix_len, d.tokens, d.counts))
        if self.source is not None:
            suffix_len, tokens, counts = self._corpus(text)
            if len(tokens) and suffix_len > 0:  # a 0-token match is the unigram distribution: no evidence
                found.append(("corpus", suffix_len, tokens, counts))
        best: dict[int, float] = {}
        named: dict[int, list[str]] = {}
        preds: dict = {}
        for name, suffix_len, tokens, counts in found:
            total = float(counts.sum())
            order = np.argsort(-counts, kind="stable")[: self.branch]
            scale = self.calibration.scale(name, suffix_len)
            top = int(tokens[order[0]])
            preds[name] = (top, float(counts[order[0]]) / total, suffix_len)
            for i in order:
                tok = int(tokens[i])
                best[tok] = max(best.get(tok, 0.0), min(0.98, scale * float(counts[i]) / total))
                named.setdefault(tok, []).append(name)
        # Sources that agree are right far more often than either alone (kernel set: a context token
        # the corpus also proposes was the model's 89% of the time, against 54%), so the edge is
        # calibrated per set of sources that proposed it.
        probs = {tok: (p, "+".join(sorted(named[tok]))) for tok, p in best.items()}
        return probs, preds

    def _children(self, seq: _Sequence, text: list[int], path: tuple, width: int) -> list[tuple[int, float]]:
        """The ``width`` likeliest next tokens after ``text`` (the context plus ``path``), each with the
        probability that the model takes it; what the estimates were is kept to learn from (_learn)."""
        probs, preds = self._estimates(seq, text)
        seq.last_tree[path] = preds
        best = sorted(probs.items(), key=lambda kv: -kv[1][0])[:width]
        seq.last_edges[path] = dict(best)
        return [(tok, self.acceptance(name, p)) for tok, (p, name) in best]

    # ------------------------------------------------------------------ drafting
    def propose_tree(self, context: Sequence[int], k: int, width: int = 3, key: int = 0) -> list[list[int]]:
        """Root-to-leaf chains of this step's draft tree (at most ``k`` deep, at most ``width``
        children per node), the most probable path first; [] when nothing is likely enough."""
        t0 = time.perf_counter()
        context = [int(t) for t in context]
        seq = self._sync(context, key)
        depth_cap = min(int(k), self.max_depth)
        chains: list[list[int]] = []
        if depth_cap > 0 and self.max_nodes > 0:
            chains = self._grow(seq, context, depth_cap, max(1, int(width)))
        self.seconds += time.perf_counter() - t0
        return chains

    def _grow(self, seq: _Sequence, context: list[int], depth_cap: int, width: int) -> list[list[int]]:
        seq.last_tree, seq.last_edges = {}, {}
        heap: list[tuple[float, int, tuple]] = []  # (-path prob, tie-break, path)
        tick = 0
        for tok, p in self._children(seq, context, (), width):
            heapq.heappush(heap, (-p, tick, (tok,)))
            tick += 1
        nodes: dict[tuple, float] = {}
        expected = 1.0  # tokens the step yields: the model's own token plus each node's acceptance chance
        while heap and len(nodes) < self.max_nodes:
            neg, _, path = heapq.heappop(heap)
            # A node pays when it raises tokens per unit of verification cost: with the cost of a pass
            # over n draft tokens 1 + token_cost * n (relative to the pass itself), a node of path
            # probability p is worth it while p > expected * token_cost / (1 + token_cost * n).
            if -neg < max(self.min_path_prob, expected * self.token_cost / (1 + self.token_cost * len(nodes))):
                break
            nodes[path] = -neg
            expected += -neg
            if len(path) >= depth_cap:
                continue
            for tok, p in self._children(seq, context + list(path), path, width):
                heapq.heappush(heap, (neg * p, tick, path + (tok,)))
                tick += 1
        nodes = self._worth_verifying(nodes)
        leaves = [p for p in nodes if not any(len(q) == len(p) + 1 and q[:-1] == p for q in nodes)]
        best_first = sorted(leaves, key=lambda p: (-self._chain_value(p, nodes), p))
        return [list(p) for p in best_first]

    def _worth_verifying(self, nodes: dict[tuple, float]) -> dict[tuple, float]:
        """The prefix of the best-first nodes (each one's parent comes before it) that maximises expected
        tokens per unit of step cost, a step with no draft costing 1 and one with n draft tokens
        1 + draft_overhead + token_cost * n; no nodes at all when a plain greedy step does best."""
        best_k, best_ratio, expected = 0, 1.0, 1.0
        for k, p in enumerate(nodes.values(), start=1):
            expected += p
            ratio = expected / (1.0 + self.draft_overhead + self.token_cost * k)
            if ratio > best_ratio:
                best_k, best_ratio = k, ratio
        return dict(list(nodes.items())[:best_k])

    @staticmethod
    def _chain_value(path: tuple, nodes: dict) -> float:
        """Expected accepted tokens along one chain: the sum of its prefixes' path probabilities."""
        return sum(nodes[path[:i]] for i in range(1, len(path) + 1))

    def propose(self, context: Sequence[int], k: int, key: int = 0) -> list[int]:
        """The most probable chain of the draft tree (for verifiers of one chain)."""
        chains = self.propose_tree(context, k, width=self.branch, key=key)
        return chains[0] if chains else []
