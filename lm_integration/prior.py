"""∞-gram logit prior as a Hugging Face LogitsProcessor (needs torch; transformers optional).

Two modes, per row of the batch, on whatever device the scores live:

* ``"interpolate"``: P = λ·P∞ + (1-λ)·P_LM, returned as log P (so argmax / softmax / sampling
  downstream act on P). λ is ``lambda_sparse`` when the ∞-gram estimate is sparse (a single
  possible next token) and ``lambda_dense`` otherwise, as in the infini-gram paper. The result is a
  normalised log-distribution (logsumexp = 0).
* ``"additive"``: scores + λ·log max(P∞, floor): a log-space prior; tokens the ∞-gram never saw
  get λ·log(floor).

λ = 0 (both weights) returns the scores object untouched (bit-identical). A row whose ∞-gram
estimate is empty keeps its scores. Tokens masked to -inf by earlier processors stay masked: their
∞-gram mass is removed and the rest renormalised.

Per-row state extends the previous step's suffix match (lm_integration.infgram.InfgramTracker),
so each generation step asks the engine about at most suffix_len + 1 tokens per row, in one
batched call.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from lm_integration.infgram import InfgramTracker, sync_batch
from lm_integration.tokenizer_compat import check_tokenizer_compat

try:  # transformers is optional: without it this is still a plain callable
    from transformers import LogitsProcessor as _Base
except Exception:  # pragma: no cover - exercised only without transformers
    _Base = object


class InfgramLogitsProcessor(_Base):
    def __init__(
        self,
        source,
        *,
        mode: str = "interpolate",
        lambda_sparse: float = 0.5,
        lambda_dense: float | None = None,
        floor: float = 1e-6,
        max_support: int | None = None,
        end_token_id: int | None = None,
        pad_token_id: int | None = None,
        max_query_len: int | None = None,
        tokenizer=None,
        model=None,
        check_tokenizer: bool = True,
    ):
        if mode not in ("interpolate", "additive"):
            raise ValueError(f"mode must be 'interpolate' or 'additive', not {mode!r}")
        lambda_dense = lambda_sparse if lambda_dense is None else lambda_dense
        for name, lam in (("lambda_sparse", lambda_sparse), ("lambda_dense", lambda_dense)):
            if mode == "interpolate" and not 0.0 <= lam <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] for interpolation, got {lam}")
            if mode == "additive" and lam < 0:
                raise ValueError(f"{name} must be >= 0, got {lam}")
        if not 0.0 < floor < 1.0:
            raise ValueError(f"floor must be in (0, 1), got {floor}")
        if check_tokenizer and (tokenizer is not None or model is not None):
            check_tokenizer_compat(source, tokenizer, model=model)
        self.source = source
        self.mode = mode
        self.lambda_sparse = float(lambda_sparse)
        self.lambda_dense = float(lambda_dense)
        self.floor = float(floor)
        self.max_support = max_support
        self.end_token_id = end_token_id
        self.pad_token_id = pad_token_id
        self.max_query_len = max_query_len
        self.vocab_size = int(source.vocab_size)
        self._trackers: list[InfgramTracker] = []
        self.calls = 0
        self.seconds = 0.0  # time spent in __call__ (queries + tensor work)

    def reset(self) -> None:
        """Forget per-row state (a new generate() call also resets rows whose context changed)."""
        self._trackers = []

    @property
    def identity(self) -> bool:
        return self.lambda_sparse == 0.0 and self.lambda_dense == 0.0

    def _tracker(self) -> InfgramTracker:
        return InfgramTracker(self.source, max_support=self.max_support, end_token_id=self.end_token_id,
                              max_query_len=self.max_query_len)

    def _contexts(self, input_ids: torch.Tensor) -> list[np.ndarray]:
        ids = input_ids.detach().to("cpu", torch.int64).numpy()
        out = []
        for row in ids:
            if self.pad_token_id is not None:  # drop left padding
                nz = np.flatnonzero(row != self.pad_token_id)
                row = row[nz[0]:] if len(nz) else row[:0]
            out.append(row)
        return out

    def estimates(self, input_ids: torch.Tensor):
        """∞-gram estimates for every row of ``input_ids`` (advancing the per-row state)."""
        contexts = self._contexts(input_ids)
        while len(self._trackers) < len(contexts):
            self._trackers.append(self._tracker())
        del self._trackers[len(contexts):]
        return sync_batch(self._trackers, contexts)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return scores
        t0 = time.perf_counter()
        ests = self.estimates(input_ids)
        B, V = scores.shape
        lams = np.zeros(B, dtype=np.float64)
        r_idx, t_idx, vals = [], [], []
        for b, est in enumerate(ests):
            if est.empty:
                continue
            lam = self.lambda_sparse if est.sparse else self.lambda_dense
            keep = est.tokens < V
            if lam == 0.0 or not keep.any():
                continue
            lams[b] = lam
            r_idx.append(np.full(int(keep.sum()), b, dtype=np.int64))
            t_idx.append(est.tokens[keep])
            vals.append(est.probs[keep])
        if not r_idx:
            self._account(t0)
            return scores
        dev = scores.device
        work = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
        wd = work.dtype
        r_t = torch.as_tensor(np.concatenate(r_idx), device=dev)
        tk_t = torch.as_tensor(np.concatenate(t_idx), device=dev)
        p_t = torch.as_tensor(np.concatenate(vals), device=dev, dtype=wd)
        s_at = work[r_t, tk_t]
        # respect tokens masked by earlier processors: drop their ∞-gram mass, renormalise per row
        p_t = torch.where(s_at > torch.finfo(wd).min, p_t, torch.zeros_like(p_t))
        mass = torch.zeros(B, device=dev, dtype=wd).index_add_(0, r_t, p_t)
        lam_t = torch.as_tensor(lams, device=dev, dtype=wd) * (mass > 0)
        p_t = p_t / mass.clamp_min(torch.finfo(wd).tiny)[r_t]
        lam_at = lam_t[r_t]
        if self.mode == "interpolate":
            # log((1-λ)·P_LM + λ·P∞): (1-λ)·P_LM everywhere in log space, then the ∞-gram support
            out = torch.log_softmax(work, dim=-1)
            lsm_at = out[r_t, tk_t]
            out.add_(torch.log1p(-lam_t).unsqueeze(1))
            out[r_t, tk_t] = torch.log((1.0 - lam_at) * torch.exp(lsm_at) + lam_at * p_t)
        else:
            out = work + (lam_t * math.log(self.floor)).unsqueeze(1)
            out[r_t, tk_t] = s_at + lam_at * torch.log(p_t.clamp_min(self.floor))
        unused = torch.nonzero(lam_t == 0).reshape(-1)
        if len(unused):
            out[unused] = work[unused]  # rows without an estimate (or whose mass was masked) stay as they were
        if out.dtype != scores.dtype:
            out = out.to(scores.dtype)
        self._account(t0)
        return out

    def _account(self, t0: float) -> None:
        self.calls += 1
        self.seconds += time.perf_counter() - t0
