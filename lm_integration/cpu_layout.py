"""Column-major linear weights: cheaper multi-token forward passes on CPU (needs torch).

Speculative decoding verifies a draft by feeding the pending token and the draft tokens through the
model in one pass, so every linear layer multiplies a few rows (2-33) by its weight. ``nn.Linear``
stores its weight as (out, in) and computes ``x @ W.T``; with a transposed operand and so few rows,
MKL's single-thread sgemm runs far below what it does without one. Measured on this project's 2-core
Xeon (AVX-512, torch 2.13, one thread), SmolLM2-135M's tied output layer (49,152 x 576) took 20 / 91 ms
for 1 / 9 rows as stored and 17 / 48 ms re-laid; ``bench/bench_step_cost.py --rounds 4`` measured a
whole verification pass over 1 + 8 / 12 / 32 tokens at 154 / 225 / 198 ms as stored and 110 / 122 /
143 ms re-laid (medians of alternating rounds; this VM's speed drifts, see lm_integration/README.md).

``use_column_major_linears(model)`` keeps every weight's values and shape and changes only its memory
order: the weight becomes the transposed view of a contiguous (in, out) matrix, so ``F.linear`` hands
BLAS an untransposed operand. Nothing else in the model changes, tied weights stay tied, one-token
steps cost what they did. The sums run in another order, so logits move in the last bits (5.9e-5 at
most on SmolLM2 here); greedy tokens of any decoder using the same model object are unaffected by the
choice, since every method then runs on the same weights.
"""

from __future__ import annotations

import torch


def use_column_major_linears(model: torch.nn.Module) -> int:
    """Re-lay the weight of every CPU ``nn.Linear`` of ``model`` column-major (see module docstring),
    in place, for inference. Parameters shared with other modules (tied embeddings) are replaced
    everywhere they appear. Returns how many weights were re-laid; 0 when all were already or are not
    on the CPU (GPU BLAS handles transposed operands at full speed)."""
    relaid: dict[int, torch.nn.Parameter] = {}
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        w = module.weight
        if id(w) in relaid or w.device.type != "cpu" or w.dim() != 2 or w.t().is_contiguous():
            continue
        relaid[id(w)] = torch.nn.Parameter(w.detach().t().contiguous().t(), requires_grad=False)
    if not relaid:
        return 0
    for module in model.modules():  # every place a re-laid parameter appears, tied ones included
        for name, p in list(module.named_parameters(recurse=False)):
            if id(p) in relaid:
                setattr(module, name, relaid[id(p)])
    return len(relaid)
