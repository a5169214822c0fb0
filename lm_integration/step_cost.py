"""What a verification pass costs on this machine, measured (needs torch).

A draft tree pays only if the tokens it is expected to add outweigh what verifying it costs, and that
cost depends on the model, the hardware and the BLAS: on one CPU thread here a pass over 1 + 8 tokens
of SmolLM2-135M took 1.8-2.2x a one-token step, on a GPU it costs about the same as one. So the cost is
measured, not assumed: ``measure_step_cost(model)`` times forward passes over 1 + n tokens after a
context, interleaved and repeated (medians: shared machines are noisy), and fits the line
``cost(n) / cost(0) = 1 + draft_overhead + token_cost * n`` for n >= 1 that ``TreeDrafter`` takes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class StepCost:
    """A pass over n draft tokens costs ``greedy_seconds * (1 + draft_overhead + token_cost * n)``
    (n >= 1); ``measured`` holds the medians it was fitted to, {n: seconds}."""

    greedy_seconds: float
    draft_overhead: float
    token_cost: float
    measured: dict

    def relative(self, n: int) -> float:
        return 1.0 if n <= 0 else 1.0 + self.draft_overhead + self.token_cost * n

    def drafter_kwargs(self) -> dict:
        """The keyword arguments of ``TreeDrafter`` that carry this cost."""
        return {"draft_overhead": self.draft_overhead, "token_cost": self.token_cost}


def fit_step_cost(measured: dict[int, float]) -> StepCost:
    """StepCost from {draft tokens: seconds per pass} (0 required): least squares over n >= 1, clipped at 0."""
    base = measured[0]
    ns = np.array([n for n in measured if n > 0], dtype=np.float64)
    rel = np.array([measured[int(n)] / base - 1.0 for n in ns])
    if len(ns) >= 2:
        token_cost, overhead = np.polyfit(ns, rel, 1)
    else:
        token_cost, overhead = 0.0, float(rel[0]) if len(rel) else 0.0
    return StepCost(float(base), max(0.0, float(overhead)), max(0.0, float(token_cost)), dict(measured))


def _chain_mask(cached: int, q: int, dtype, device) -> torch.Tensor:
    """(1, 1, q, cached + q) additive mask: every new token sees the cache and the new tokens up to itself."""
    allowed = torch.ones((q, cached + q), dtype=torch.bool)
    allowed[:, cached:] = torch.tril(allowed[:, cached:])
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None].to(device)


@torch.no_grad()
def measure_step_cost(model, *, context_len: int = 256, sizes=(0, 2, 4, 8, 16, 32), reps: int = 15) -> StepCost:
    """Median seconds of a cached forward pass over 1 + n tokens, for each n in ``sizes`` (0 included:
    a greedy step), after ``context_len`` tokens of context; fitted as StepCost. The ids are drawn at
    random (the cost does not depend on them); each pass carries a 4D additive mask, as a draft tree's
    verification does (``speculative_generate_tree``), here a chain's."""
    from lm_integration.speculative import new_kv_cache

    sizes = sorted({0, *(int(n) for n in sizes)})
    device = next(model.parameters()).device
    vocab = int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, vocab, (1, context_len), generator=gen).to(device)
    cache = new_kv_cache(model)
    out = model(input_ids=ctx, cache=cache, use_cache=True)
    cache, dtype = out.cache, out.logits.dtype

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: dict[int, list[float]] = {n: [] for n in sizes}
    for rep in range(reps + 1):  # the first round warms up and is not counted
        for n in sizes:
            ids = torch.randint(0, vocab, (1, 1 + n), generator=gen).to(device)
            pos = torch.arange(context_len, context_len + 1 + n, device=device)[None]
            mask = _chain_mask(context_len, 1 + n, dtype, device)
            sync()
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
            sync()
            if rep:
                times[n].append(time.perf_counter() - t0)
            cache.crop(-(1 + n))
    return fit_step_cost({n: float(np.median(v)) for n, v in times.items()})
