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
batched call, and an exact LRU cache of estimates (lm_integration.infgram.InfgramCache, shareable
with a drafter) answers contexts seen before without the engine.

Per-step cost: on CPU the ∞-gram support (a few to a few thousand tokens) is handled with numpy on
views of the tensors, so the only full-vocabulary work is one log-softmax and one add. On a CUDA
device with one row (the usual decoding step) each CUDA call costs more than the arithmetic, so the
step makes five: a log-softmax, copies of the score row and of its log-softmax to pinned host
memory (issued before the new tokens are read back, so that one synchronisation serves all three),
the token read-back, and one copy of the mixed row back; the masking, renormalisation, shift and
support values are worked out on the host (one pass over the row). The pinned rows are kept per
device, dtype and vocabulary size. Batches and other devices take the general device path: the
support of each estimate is uploaded once and kept (``device_cache`` estimates), and the step does
one host synchronisation (to see whether earlier processors masked the whole support). A variant
with no synchronisation at all (a select restoring fully masked rows) measured slower on an H100
host: more kernel launches cost more than the synchronisation saved.

For compression-style evaluation (``eval_lm --priors``, bits per byte) the module also holds two
online learners that tune nothing on the text they code: :class:`OnlineOutputAdapter` (the LM's
output layer adapted while coding) and :class:`OnlineMixer` (an online gated mixture of the LM and
∞-gram sources). ``vllm_logits`` runs this processor inside vLLM; ``check_prior_params`` is the one
check of its settings.
"""

from __future__ import annotations

import math
import numbers
import time
from collections import OrderedDict

import numpy as np
import torch

from lm_integration.infgram import InfgramCache, InfgramTracker, sync_batch
from lm_integration.tokenizer_compat import check_tokenizer_compat

try:  # transformers is optional: without it this is still a plain callable
    from transformers import LogitsProcessor as _Base
except Exception:  # pragma: no cover - exercised only without transformers
    _Base = object


_SMALL = 32  # supports up to this many tokens are mixed with Python floats on CPU


def _log1m(lam: float) -> float:
    """log(1 - λ), -inf at λ = 1."""
    return -math.inf if lam >= 1.0 else math.log1p(-lam)


def _small_support(est, V: int) -> tuple[list, list]:
    """An estimate's support as Python lists (tokens, probabilities), tokens beyond the model's
    vocabulary dropped."""
    toks = est.tokens.tolist()
    probs = est.probs.tolist()
    if toks and max(toks) >= V:
        probs = [pp for t, pp in zip(toks, probs) if t < V]
        toks = [t for t in toks if t < V]
    return toks, probs


def _mixed_support_values(toks, probs, svals, lsm, lam: float, floor: float, fmin: float):
    """New scores of one row's support tokens as (token, value) pairs, with Python floats (fewer
    calls than numpy for a small support, which matters when the caches are cold after a forward
    pass); None when earlier processors masked the whole support (a masked token loses its ∞-gram
    mass). ``lsm``: the row's log-softmax at the tokens when interpolating, None for the additive
    prior."""
    mass = 0.0
    for pp, sv in zip(probs, svals):
        if sv > fmin:
            mass += pp
    if mass <= 0.0:
        return None
    if lsm is not None:
        return [(t, math.log((1.0 - lam) * math.exp(l) + lam * (pp / mass)))
                for t, pp, sv, l in zip(toks, probs, svals, lsm) if sv > fmin]
    return [(t, sv + lam * math.log(max(pp / mass, floor))) for t, pp, sv in zip(toks, probs, svals) if sv > fmin]


def check_prior_params(mode: str, lambda_sparse: float, lambda_dense: float | None, floor: float) -> float:
    """ValueError unless the prior's settings are valid; returns λ_dense (λ_sparse when None)."""
    if mode not in ("interpolate", "additive"):
        raise ValueError(f"mode must be 'interpolate' or 'additive', not {mode!r}")
    lambda_dense = lambda_sparse if lambda_dense is None else lambda_dense
    for name, lam in (("lambda_sparse", lambda_sparse), ("lambda_dense", lambda_dense)):
        if not isinstance(lam, numbers.Real) or isinstance(lam, bool):
            raise ValueError(f"{name} must be a number, got {lam!r}")
        if mode == "interpolate" and not 0.0 <= lam <= 1.0:
            raise ValueError(f"{name} must be in [0, 1] for interpolation, got {lam}")
        if mode == "additive" and lam < 0:
            raise ValueError(f"{name} must be >= 0, got {lam}")
    if not 0.0 < floor < 1.0:
        raise ValueError(f"floor must be in (0, 1), got {floor}")
    return lambda_dense


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
        cache: InfgramCache | None = None,
        cache_size: int = 65536,
        device_cache: int = 512,
        tokenizer=None,
        model=None,
        check_tokenizer: bool = True,
    ):
        lambda_dense = check_prior_params(mode, lambda_sparse, lambda_dense, floor)
        if check_tokenizer:  # warns when given neither tokenizer nor model
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
        self.cache = cache if cache is not None else InfgramCache(max_entries=cache_size)
        self.device_cache = int(device_cache)
        self._support: OrderedDict = OrderedDict()  # id(estimate) -> (estimate, key, tensors)
        self._bufs: dict = {}  # (device, dtype) -> _Buffers (one-row CUDA path)
        self._trackers: list[InfgramTracker] = []
        self.calls = 0
        self.seconds = 0.0  # time spent in __call__ (queries + tensor work)
        self.cpu_seconds = 0.0  # this thread's CPU time in __call__ (immune to preemption)
        self.step_seconds: list[float] | None = None  # set to a list to record each call's wall time

    def reset(self) -> None:
        """Forget per-row state (a new generate() call also resets rows whose context changed)."""
        self._trackers = []

    @property
    def identity(self) -> bool:
        return self.lambda_sparse == 0.0 and self.lambda_dense == 0.0

    def _tracker(self) -> InfgramTracker:
        return InfgramTracker(self.source, max_support=self.max_support, end_token_id=self.end_token_id,
                              max_query_len=self.max_query_len, cache=self.cache)

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
        if input_ids.shape[0] == 1 and self.pad_token_id is None and len(self._trackers) == 1:
            # one row continuing the previous call's (the usual decoding step): read back only the
            # tokens the state checks and the new ones
            tr = self._trackers[0]
            n = tr.length
            lo = n - len(tr._chk)
            if not tr._fresh and input_ids.shape[1] >= n and lo >= 0:
                tail = input_ids[0, lo:].tolist()
                if tail[:n - lo] == tr._chk:
                    return [tr.extend(tail[n - lo:])]
        contexts = self._contexts(input_ids)
        while len(self._trackers) < len(contexts):
            self._trackers.append(self._tracker())
        del self._trackers[len(contexts):]
        return sync_batch(self._trackers, contexts)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return scores
        t0 = time.perf_counter()
        self._c0 = time.thread_time()
        if scores.shape[0] == 1 and scores.device.type == "cuda":
            return self._call_cuda_one(input_ids, scores, t0)
        ests = self.estimates(input_ids)
        B, V = scores.shape
        rows = []  # (row, estimate, λ)
        for b, est in enumerate(ests):
            if est.empty:
                continue
            lam = self.lambda_sparse if est.sparse else self.lambda_dense
            if lam == 0.0 or (est.tokens[-1] >= V and est.tokens[0] >= V):
                continue
            rows.append((b, est, lam))
        if not rows:
            self._account(t0)
            return scores
        work = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
        if work.device.type == "cpu":
            out = self._mix_cpu(work, rows, V)
        else:
            out = self._mix_device(work, rows, V)
        if out is None:
            self._account(t0)
            return scores
        if out.dtype != scores.dtype:
            out = out.to(scores.dtype)
        self._account(t0)
        return out

    @staticmethod
    def _support_np(est, V: int):
        """(tokens, probabilities) of an estimate's support inside the model's vocabulary."""
        if est.tokens[-1] < V:
            return est.tokens, est.probs
        keep = est.tokens < V
        return est.tokens[keep], est.probs[keep]

    def _support_dev(self, est, V: int, device, dtype):
        """The support as tensors on ``device`` (kept for the last ``device_cache`` estimates)."""
        key = (V, device, dtype)
        hit = self._support.get(id(est))
        if hit is not None and hit[0] is est and hit[1] == key:
            self._support.move_to_end(id(est))
            return hit[2]
        tk, p = self._support_np(est, V)
        t = (torch.as_tensor(tk, device=device), torch.as_tensor(p, device=device, dtype=dtype))
        if self.device_cache > 0:
            self._support[id(est)] = (est, key, t)
            while len(self._support) > self.device_cache:
                self._support.popitem(last=False)
        return t

    def _mix_cpu(self, work: torch.Tensor, rows, V: int):
        """The mixture on CPU: numpy on views of the tensors for the support, torch for the rest."""
        wn = work.detach().numpy()
        fmin = np.finfo(wn.dtype).min
        interpolate = self.mode == "interpolate"
        if interpolate:
            out = torch.log_softmax(work, dim=-1)
        else:
            out = work.clone()
        on = out.numpy()
        used = np.zeros(work.shape[0], dtype=bool)
        for b, est, lam in rows:
            if len(est.tokens) <= _SMALL:
                used[b] = self._mix_row_small(wn[b], on[b], out[b], est, lam, V, float(fmin), interpolate)
                continue
            tk, p = self._support_np(est, V)
            s_at = wn[b, tk]
            ok = s_at > fmin  # tokens masked by earlier processors lose their ∞-gram mass
            if not ok.all():
                p = np.where(ok, p, 0.0)
            mass = float(p.sum())
            if mass <= 0.0:
                continue
            if mass != 1.0:
                p = p / mass
            used[b] = True
            if interpolate:
                lsm_at = on[b, tk].astype(np.float64)
                out[b].add_(_log1m(lam))
                with np.errstate(divide="ignore"):
                    on[b, tk] = np.log((1.0 - lam) * np.exp(lsm_at) + lam * p)
            else:
                out[b].add_(lam * math.log(self.floor))
                on[b, tk] = s_at + lam * np.log(np.maximum(p, self.floor))
        if not used.any():
            return None
        if not used.all():
            out[torch.from_numpy(~used)] = work[torch.from_numpy(~used)]  # rows without an estimate stay
        return out

    def _mix_row_small(self, wrow, orow, out_row, est, lam: float, V: int, fmin: float, interpolate: bool) -> bool:
        """One row of _mix_cpu for a small support (see _mixed_support_values)."""
        toks, probs = _small_support(est, V)
        svals = [float(wrow[t]) for t in toks]
        lsm = [float(orow[t]) for t in toks] if interpolate else None
        values = _mixed_support_values(toks, probs, svals, lsm, lam, self.floor, fmin)
        if values is None:
            return False
        out_row.add_(_log1m(lam) if interpolate else lam * math.log(self.floor))
        for t, v in values:
            orow[t] = v
        return True

    def _call_cuda_one(self, input_ids: torch.Tensor, scores: torch.Tensor, t0: float) -> torch.Tensor:
        out = self._call_one(input_ids, scores)
        self._account(t0)
        return out

    def _call_one(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """One row on a CUDA device (on CPU tensors too, for tests): the score row (and, for
        interpolation, its log-softmax) go to pinned host memory before the tokens are read back, so
        that one synchronisation serves all three; the masking, renormalisation and the mixture are
        then worked out on the host, and the mixed row goes back in one copy."""
        work = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
        st = self._buffers(work)
        if st.cuda:
            stream = torch.cuda.current_stream(work.device)
            if st.stream is not None and st.stream != stream:
                st.stream.synchronize()  # the pinned buffers' last copies ran on another stream
            st.stream = stream
        interpolate = self.mode == "interpolate"
        st.h_scores.copy_(work, non_blocking=st.cuda)
        if interpolate:
            st.h_out.copy_(torch.log_softmax(work, dim=-1), non_blocking=st.cuda)
        est = self.estimates(input_ids)[0]
        if est.empty:
            return scores
        lam = self.lambda_sparse if est.sparse else self.lambda_dense
        V = work.shape[1]
        if lam == 0.0 or est.tokens[0] >= V:  # (ascending tokens)
            return scores
        if st.cuda and input_ids.device != work.device:
            st.stream.synchronize()  # (else reading the tokens back waited for the copies)
        if not self._mix_one_host(est, lam, V, st.s_np, st.o_np, interpolate):
            return scores
        out = torch.empty_like(work)
        out.copy_(st.h_out, non_blocking=st.cuda)
        return out if out.dtype == scores.dtype else out.to(scores.dtype)

    def _buffers(self, work: torch.Tensor) -> "_Buffers":
        key = (work.device, work.dtype, work.shape[1])
        st = self._bufs.get(key)
        if st is None:
            st = self._bufs[key] = _Buffers(work.device, work.dtype, work.shape[1])
        return st

    def _mix_one_host(self, est, lam: float, V: int, s: np.ndarray, o: np.ndarray, interpolate: bool) -> bool:
        """The mixed row, on the host, into ``o`` (which holds the log-softmax of the scores ``s``
        when interpolating). False (``o`` then unusable) when earlier processors masked the whole
        support: the scores stay as they are."""
        fmin = float(np.finfo(s.dtype).min)
        if len(est.tokens) <= _SMALL:
            toks, probs = _small_support(est, V)
            svals = s[toks].tolist()
            lsm = o[toks].tolist() if interpolate else None
            values = _mixed_support_values(toks, probs, svals, lsm, lam, self.floor, fmin)
            if values is None:
                return False
            if interpolate:
                np.add(o, _log1m(lam), out=o)
            else:
                np.add(s, lam * math.log(self.floor), out=o)
            for t, v in values:
                o[t] = v
            return True
        tk, p = self._support_np(est, V)
        s_at = s[tk]
        ok = s_at > fmin
        if not ok.all():
            p = np.where(ok, p, 0.0)
        mass = float(p.sum())
        if mass <= 0.0:
            return False
        if mass != 1.0:
            p = p / mass
        tk, p, s_at = tk[ok], p[ok], s_at[ok]
        if interpolate:
            lsm = o[tk].astype(np.float64)
            np.add(o, _log1m(lam), out=o)
            with np.errstate(divide="ignore"):
                o[tk] = np.log((1.0 - lam) * np.exp(lsm) + lam * p)
        else:
            np.add(s, lam * math.log(self.floor), out=o)
            o[tk] = s_at + lam * np.log(np.maximum(p, self.floor))
        return True

    def _mix_device(self, work: torch.Tensor, rows, V: int):
        """The mixture on an accelerator: cached support tensors, one host synchronisation."""
        dev, wd = work.device, work.dtype
        sup = [self._support_dev(est, V, dev, wd) for _, est, _ in rows]
        if len(rows) == 1:
            b = rows[0][0]
            tk_t, p_t = sup[0]
            s_at = work[b].index_select(0, tk_t)
            p_t = p_t * (s_at > torch.finfo(wd).min)
            mass = p_t.sum().reshape(1)
            r_t, row_of = None, [b]
        else:
            r_t = torch.cat([torch.full((len(t[0]),), i, dtype=torch.long, device=dev) for i, t in enumerate(sup)])
            tk_t = torch.cat([t[0] for t in sup])
            p_t = torch.cat([t[1] for t in sup])
            row_of = [b for b, _, _ in rows]
            rows_t = torch.as_tensor(row_of, device=dev)
            s_at = work[rows_t[r_t], tk_t]
            p_t = p_t * (s_at > torch.finfo(wd).min)
            mass = torch.zeros(len(rows), device=dev, dtype=wd).index_add_(0, r_t, p_t)
        mass_h = mass.cpu().tolist()  # the one synchronisation
        if not any(m > 0 for m in mass_h):
            return None
        lam_h = [lam if m > 0 else 0.0 for (_, _, lam), m in zip(rows, mass_h)]
        inv = torch.as_tensor([1.0 / m if m > 0 else 0.0 for m in mass_h], device=dev, dtype=wd)
        lam_t = torch.as_tensor(lam_h, device=dev, dtype=wd)
        if r_t is None:
            p_t = p_t * inv
            lam_at = lam_t
            idx = (row_of[0], tk_t)
        else:
            p_t = p_t * inv[r_t]
            lam_at = lam_t[r_t]
            idx = (rows_t[r_t], tk_t)
        if self.mode == "interpolate":
            out = torch.log_softmax(work, dim=-1)
            lsm_at = out[idx]
            shift = [_log1m(l) for l in lam_h]
        else:
            out = work.clone()
            shift = [l * math.log(self.floor) for l in lam_h]
            lsm_at = None
        B = work.shape[0]
        if B == 1:
            out.add_(shift[0])
        else:
            col = [0.0] * B
            for b, sh in zip(row_of, shift):
                col[b] = sh
            out.add_(torch.as_tensor(col, device=dev, dtype=wd).unsqueeze(1))
        if self.mode == "interpolate":
            out[idx] = torch.log((1.0 - lam_at) * torch.exp(lsm_at) + lam_at * p_t)
        else:
            out[idx] = s_at + lam_at * torch.log(p_t.clamp_min(self.floor))
        keep = [b for b in range(B) if b not in {r for r, l in zip(row_of, lam_h) if l > 0}]
        if keep:
            k = torch.as_tensor(keep, device=dev)
            out[k] = work[k]  # rows without an estimate (or whose mass was masked) stay as they were
        return out

    def _account(self, t0: float) -> None:
        dt = time.perf_counter() - t0
        self.calls += 1
        self.seconds += dt
        self.cpu_seconds += time.thread_time() - self._c0
        if self.step_seconds is not None:
            self.step_seconds.append(dt)


class _Buffers:
    """Per device, dtype and vocabulary size, the one-row path's pinned host rows: the scores, and
    the log-softmax that becomes the mixed row (plain tensors on CPU, for tests). Each is reused
    only after the copies of the call before: the next call's copies queue behind them on the
    same stream (or wait for the old stream), and the host reads only after the synchronisation."""

    def __init__(self, device, dtype, V: int):
        self.cuda = device.type == "cuda"
        self.h_scores = torch.empty((1, V), dtype=dtype, pin_memory=self.cuda)
        self.h_out = torch.empty((1, V), dtype=dtype, pin_memory=self.cuda)
        self.s_np = self.h_scores.numpy()[0]
        self.o_np = self.h_out.numpy()[0]
        self.stream = None


class OnlineOutputAdapter:
    """Online adaptation of an LM's output layer to the text being scored, for compression-style
    evaluation (``eval_lm --priors``): dynamic evaluation of the last layer only.

    With h the model's final hidden state and W, c its output layer (``logits = W h + c``)::

        log q(· | h) = log_softmax(W (h + A h) + c + b)

    A (hidden x hidden) and b (one bias per token: Nacrith's adaptive log-space bias head) start at
    zero and follow online gradient descent on the log loss of the tokens already scored: the tokens
    are taken in order in blocks of ``block``, each block scored with the state left by the blocks
    before it, then used for one update (causal: a token's probability never depends on itself or on
    later tokens). The defaults were chosen on the first 12,000 tokens of lcet10.txt with SmolLM2-135M,
    not on the text they are measured on: cross-entropy there -0.93% with ``lr_hidden`` = 1e-5 and
    ``lr_bias`` = 0.03 (A alone -0.81%, 2e-5 -0.54%, 1e-4 diverges; b alone at its best rate, 0.1,
    -0.74%; blocks of 8 instead of 32 -0.84% for A alone).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, lr_hidden: float = 1e-5,
                 lr_bias: float = 0.03, block: int = 32):
        if weight.dim() != 2:
            raise ValueError(f"weight must be the output layer's (vocabulary x hidden) matrix, got shape "
                             f"{tuple(weight.shape)}")
        if lr_hidden < 0 or lr_bias < 0:
            raise ValueError(f"learning rates must be >= 0, got lr_hidden={lr_hidden}, lr_bias={lr_bias}")
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.weight = weight.detach().float()
        self.out_bias = None if bias is None else bias.detach().float()
        V, d = self.weight.shape
        self.A = torch.zeros(d, d, device=self.weight.device)
        self.b = torch.zeros(V, device=self.weight.device)
        self.lr_hidden, self.lr_bias, self.block = float(lr_hidden), float(lr_bias), int(block)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """log q of every token for each row of ``hidden`` (n x hidden), with the current state."""
        h = hidden.float()
        z = (h + h @ self.A.T) @ self.weight.T + self.b
        if self.out_bias is not None:
            z = z + self.out_bias
        return torch.log_softmax(z, dim=-1)

    def update(self, hidden: torch.Tensor, targets: torch.Tensor, log_probs: torch.Tensor) -> None:
        """One gradient step on Σ -log q(target) of these rows (``log_probs`` from log_probs())."""
        g = log_probs.exp()
        g[torch.arange(len(targets), device=g.device), targets] -= 1.0  # d loss / d logits
        if self.lr_hidden:
            self.A -= self.lr_hidden * ((g @ self.weight).T @ hidden.float())
        if self.lr_bias:
            self.b -= self.lr_bias * g.sum(0)

    def score(self, hidden: torch.Tensor, targets) -> tuple[np.ndarray, np.ndarray]:
        """(log q(target), entropy of q) per row, in nats, float64, adapting after each block."""
        targets = torch.as_tensor(targets, dtype=torch.long, device=hidden.device)
        n = len(targets)
        logq, ent = np.zeros(n), np.zeros(n)
        for s in range(0, n, self.block):
            h, y = hidden[s:s + self.block], targets[s:s + self.block]
            lq = self.log_probs(h)
            logq[s:s + len(y)] = lq.gather(1, y[:, None])[:, 0].double().cpu().numpy()
            ent[s:s + len(y)] = (-(lq.exp() * lq).sum(-1)).double().cpu().numpy()
            self.update(h, y, lq)
        return logq, ent


#: Bucket edges of the gate's features: the matched suffix length, and the LM's entropy in nats.
GATE_SUFFIX_EDGES = (1, 2, 3, 5, 9, 17)
GATE_ENTROPY_EDGES = (0.1, 0.3, 1.0, 2.0, 4.0)


class OnlineMixer:
    """Online gated linear mixture of an LM and ∞-gram sources, learned while coding.

    At each token, P = Σ_k w_k P_k over the LM (k = 0) and the sources that have an estimate, with
    w = softmax(s), s_0 = 0 and s_k = θ_k·φ (φ: one-hot buckets of the source's matched suffix length
    and of the LM's entropy, and a constant). After the token, θ takes one gradient step on log P
    (d log P / d s_k = w_k (P_k - P) / P): the weights follow how much each source is worth here and
    now, with no tuning on held-out text. ``lr`` = 0.02 and ``init`` = -2 are fixed a priori; on
    alice29.txt every rate in 0.01-0.1 gave the same figure to 0.01%.
    """

    def __init__(self, num_sources: int, *, lr: float = 0.02, init: float = -2.0):
        if num_sources < 1:
            raise ValueError(f"num_sources must be >= 1, got {num_sources}")
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        self.lr = float(lr)
        self.sizes = (1, len(GATE_SUFFIX_EDGES) + 1, len(GATE_ENTROPY_EDGES) + 1)
        self.theta = np.zeros((num_sources, sum(self.sizes)))
        self.theta[:, 0] = init

    def _features(self, suffix_len: np.ndarray, entropy: np.ndarray) -> np.ndarray:
        s = np.searchsorted(GATE_SUFFIX_EDGES, suffix_len, side="right")
        e = np.searchsorted(GATE_ENTROPY_EDGES, entropy, side="right")
        return np.stack([np.zeros_like(s), self.sizes[0] + s, self.sizes[0] + self.sizes[1] + e], axis=1)

    def nll(self, logp_lm: np.ndarray, entropy: np.ndarray, sources) -> np.ndarray:
        """Per-token -log P (nats) for the LM's log-probabilities of the true tokens and its entropies,
        and ``sources``: (P_k of the true token, whether there was an estimate, matched suffix length)
        per source, each an array over the tokens. Learns as it goes (call once, in text order)."""
        K = len(sources)
        if K != len(self.theta):
            raise ValueError(f"this mixer was made for {len(self.theta)} sources, got {K}")
        p = np.stack([np.asarray(s[0], dtype=np.float64) for s in sources])
        has = np.stack([np.asarray(s[1], dtype=bool) for s in sources])
        feats = np.stack([self._features(np.asarray(s[2]), entropy) for s in sources])
        p_lm = np.exp(logp_lm)
        out = np.empty(len(p_lm))
        theta = self.theta
        for t in range(len(p_lm)):
            live = np.flatnonzero(has[:, t])
            if not len(live):
                out[t] = -logp_lm[t]
                continue
            f = feats[live, t]
            s = theta[live[:, None], f].sum(1)
            m = max(0.0, float(s.max()))
            e = np.exp(s - m)
            z = math.exp(-m) + e.sum()
            w0, w = math.exp(-m) / z, e / z
            pk = p[live, t]
            mix = w0 * p_lm[t] + float(w @ pk)
            mix = max(mix, 1e-300)
            out[t] = -math.log(mix)
            g = self.lr * w * (pk - mix) / mix
            for j, k in enumerate(live):
                theta[k, f[j]] += g[j]
        return out
