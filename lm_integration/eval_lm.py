"""Perplexity of a causal LM on held-out text, with and without ∞-gram interpolation.

    python -m lm_integration.eval_lm --index INDEX --text held_out/*.txt [--model smollm2]

For every token x_t of every held-out document (the first token of a document has no context and
is skipped): log P_LM(x_t | x_<t) from the model, over sliding windows of ``--window`` tokens that
advance by ``--stride`` (each window scores only the tokens the previous one did not), and
P∞(x_t | x_<t) from the index (longest matching suffix, incrementally). The mixture is
P = λ·P∞ + (1-λ)·P_LM with λ = λ_sparse when the ∞-gram estimate has a single possible next token
and λ_dense otherwise; both are tuned on a validation split of the documents and reported on the
rest. Reported: PPL of the LM, PPL of the mixture, the relative reduction 1 - PPL_mix/PPL_LM, and
(PPL_LM - PPL_mix)/(PPL_LM - 1), the measure the infini-gram paper reports.

``--priors`` compares, in perplexity and bits per byte, the LM alone and with the corpus ∞-gram, the
document's own online ∞-gram and both (weights per matched suffix length, tuned), and the online
configurations that tune nothing (lm_integration.prior.OnlineMixer; with ``--adapt`` also
OnlineOutputAdapter, the output layer adapted while coding).

torch is needed only for the LM part (imported when used).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from lm_integration.context import ContextNgramModel
from lm_integration.infgram import InfgramTracker

DEFAULT_GRID = np.round(np.linspace(0.0, 0.99, 100), 4)


def _windows(n: int, window: int, stride: int):
    """(begin, end, first) of each sliding window over n tokens: the window holds ids[begin:end] and
    scores the targets first .. end-1 (those the window before did not; target 0 never is)."""
    if not 0 < stride <= window:
        raise ValueError(f"need 0 < stride <= window, got stride={stride} window={window}")
    first, begin = 1, 0
    while first < n:
        end = min(begin + window, n)
        yield begin, end, first
        first = end
        begin = min(begin + stride, max(end - 1, 0)) if end < n else end


def lm_token_logprobs(model, ids, *, window: int = 1024, stride: int = 512, device: str | None = None) -> np.ndarray:
    """log P_LM(ids[t] | ids[:t]) for t = 1 .. len(ids)-1 (float64), sliding window with stride."""
    import torch

    ids = [int(i) for i in ids]
    out = np.zeros(max(len(ids) - 1, 0), dtype=np.float64)
    dev = device or next(model.parameters()).device
    with torch.no_grad():
        for begin, end, first in _windows(len(ids), window, stride):
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids[begin:end]], device=dev)).logits[0].double(), -1)
            # logits at window index i predict absolute token begin + i + 1
            rows = torch.arange(first, end, device=dev) - begin - 1
            out[first - 1:end - 1] = logp[rows, torch.tensor(ids[first:end], device=dev)].cpu().numpy()
    return out


def lm_token_stats(model, ids, *, window: int = 1024, stride: int = 512, adapter=None, dynamic=None) -> dict:
    """Per target t = 1 .. len(ids)-1, over the same sliding windows as lm_token_logprobs: ``logp``
    (log P_LM of the true token, float64), ``ent`` (the LM's entropy, nats) and, with ``adapter`` (an
    lm_integration.prior.OnlineOutputAdapter, fed the final hidden states in text order),
    ``logp_adapt`` and ``ent_adapt`` of the adapted output layer. With ``dynamic`` (an entered
    lm_integration.dynamic_eval.DynamicEvaluation), each window's targets are scored and then used
    for one update of the model, so the figures are those of dynamic evaluation."""
    import torch

    ids = [int(i) for i in ids]
    n = max(len(ids) - 1, 0)
    out = {k: np.zeros(n) for k in ("logp", "ent", *(("logp_adapt", "ent_adapt") if adapter is not None else ()))}
    dev = next(model.parameters()).device
    head = model.get_output_embeddings()
    for begin, end, first in _windows(len(ids), window, stride):
        with torch.set_grad_enabled(dynamic is not None):
            hidden = model.base_model(input_ids=torch.tensor([ids[begin:end]], device=dev)).last_hidden_state[0]
            rows = torch.arange(first, end, device=dev) - begin - 1
            h = hidden[rows]
            y = torch.tensor(ids[first:end], device=dev)
            logits = head(h)
        with torch.no_grad():
            logp = torch.log_softmax(logits.detach().double(), -1)
            out["logp"][first - 1:end - 1] = logp.gather(1, y[:, None])[:, 0].cpu().numpy()
            out["ent"][first - 1:end - 1] = (-(logp.exp() * logp).sum(-1)).cpu().numpy()
            if adapter is not None:
                out["logp_adapt"][first - 1:end - 1], out["ent_adapt"][first - 1:end - 1] = adapter.score(h.detach(), y)
        if dynamic is not None:  # scored: now learn from these targets
            dynamic.step(torch.nn.functional.cross_entropy(logits.float(), y))
    return out


def infgram_token_probs(source, ids, *, max_support: int | None = None, max_query_len: int | None = None):
    """(p_inf, sparse, has, suffix_len) for t = 1 .. len(ids)-1: P∞(ids[t] | ids[:t]), whether that
    estimate is sparse, whether there was an estimate at all, and the matched suffix length."""
    ids = [int(i) for i in ids]
    n = max(len(ids) - 1, 0)
    p = np.zeros(n, dtype=np.float64)
    sparse = np.zeros(n, dtype=bool)
    has = np.zeros(n, dtype=bool)
    slen = np.zeros(n, dtype=np.int64)
    tr = InfgramTracker(source, max_support=max_support, max_query_len=max_query_len)
    for t in range(1, len(ids)):
        est = tr.extend([ids[t - 1]])
        p[t - 1] = est.prob_of(ids[t])
        sparse[t - 1] = est.sparse
        has[t - 1] = not est.empty
        slen[t - 1] = est.suffix_len
    return p, sparse, has, slen


def context_token_probs(ids, *, max_suffix_len: int = 64):
    """(p_ctx, has, suffix_len) for t = 1 .. len(ids)-1: the online ∞-gram estimate of ids[t] from the
    document's own earlier tokens ids[:t] (lm_integration.context), whether there was one, and its
    matched suffix length."""
    ids = [int(i) for i in ids]
    n = max(len(ids) - 1, 0)
    p = np.zeros(n, dtype=np.float64)
    has = np.zeros(n, dtype=bool)
    slen = np.zeros(n, dtype=np.int64)
    ctx = ContextNgramModel(max_suffix_len=max_suffix_len)
    for t in range(1, len(ids)):
        ctx.extend(ids[t - 1 : t])
        d = ctx.infgram_ntd(ids[max(0, t - max_suffix_len) : t])
        if d.prompt_count:
            has[t - 1] = True
            slen[t - 1] = d.suffix_len
            i = np.searchsorted(d.tokens, ids[t])
            if i < len(d.tokens) and d.tokens[i] == ids[t]:
                p[t - 1] = d.counts[i] / d.prompt_count
    return p, has, slen


def mix_nll(logp_lm, parts) -> np.ndarray:
    """Per-token -log(Σ w_k·P_k + (1 - Σ w_k)·P_LM) for parts [(P_k, w_k)], weights per token."""
    p_lm = np.exp(logp_lm)
    mix = p_lm.copy()
    for p, w in parts:
        mix += w * (p - p_lm)
    with np.errstate(divide="ignore"):
        return -np.log(np.maximum(mix, 1e-300))


def mixture_nll(logp_lm, p_inf, use, lam) -> np.ndarray:
    """Per-token -log(λ·P∞ + (1-λ)·P_LM) where ``use``; -log P_LM elsewhere."""
    return mix_nll(logp_lm, [(p_inf, np.where(use, lam, 0.0))])


def tune_lambdas(logp_lm, p_inf, sparse, has, grid=DEFAULT_GRID) -> tuple[float, float]:
    """λ_sparse and λ_dense minimising validation NLL (independent: each token is one or the other)."""
    best = []
    for group in (has & sparse, has & ~sparse):
        if not group.any():
            best.append(0.0)
            continue
        lp, pi = logp_lm[group], p_inf[group]
        nll = [mixture_nll(lp, pi, np.ones_like(pi, dtype=bool), lam).sum() for lam in grid]
        best.append(float(grid[int(np.argmin(nll))]))
    return best[0], best[1]


def score(logp_lm, p_inf, sparse, has, lam_sparse, lam_dense) -> dict:
    lam = np.where(sparse, lam_sparse, lam_dense)
    n = len(logp_lm)
    nll_lm = float(-logp_lm.sum() / max(n, 1))
    nll_mix = float(mixture_nll(logp_lm, p_inf, has, lam).sum() / max(n, 1))
    ppl_lm, ppl_mix = float(np.exp(nll_lm)), float(np.exp(nll_mix))
    return {
        "tokens": n,
        "ppl_lm": ppl_lm,
        "ppl_mix": ppl_mix,
        "relative_reduction": 1.0 - ppl_mix / ppl_lm,
        "paper_relative_improvement": (ppl_lm - ppl_mix) / (ppl_lm - 1.0) if ppl_lm > 1 else 0.0,
        "sparse_share": float((has & sparse).mean()) if n else 0.0,
    }


def collect(model, source, docs_ids, *, window, stride, max_tokens=None, max_support=None, progress=False,
            doc_tokens=None):
    """Concatenated per-token arrays over documents (up to max_tokens scored tokens in all, and the
    first doc_tokens tokens of each document)."""
    parts = {k: [] for k in ("logp", "p_inf", "sparse", "has", "slen")}
    total = 0
    t_lm = t_ng = 0.0
    for i, ids in enumerate(docs_ids):
        if max_tokens is not None and total >= max_tokens:
            break
        if doc_tokens is not None:
            ids = ids[: doc_tokens + 1]
        if max_tokens is not None:
            ids = ids[: max_tokens - total + 1]
        if len(ids) < 2:
            continue
        t0 = time.perf_counter()
        lp = lm_token_logprobs(model, ids, window=window, stride=stride)
        t1 = time.perf_counter()
        p, sp, hs, sl = infgram_token_probs(source, ids, max_support=max_support)
        t2 = time.perf_counter()
        t_lm += t1 - t0
        t_ng += t2 - t1
        for k, v in zip(parts, (lp, p, sp, hs, sl)):
            parts[k].append(v)
        total += len(lp)
        if progress:
            print(f"  doc {i + 1}/{len(docs_ids)}: {total} tokens (LM {t_lm:.1f}s, ∞-gram {t_ng:.1f}s)",
                  file=sys.stderr)
    cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
    cat["sparse"] = cat["sparse"].astype(bool)
    cat["has"] = cat["has"].astype(bool)
    cat["seconds_lm"], cat["seconds_infgram"] = t_lm, t_ng
    return cat


def evaluate(model, source, val_docs, test_docs, *, window=1024, stride=512, max_tokens=None,
             max_support=None, grid=DEFAULT_GRID, progress=False, doc_tokens=None) -> dict:
    """Tune λs on val_docs, report on test_docs (lists of token-id lists)."""
    kw = dict(window=window, stride=stride, max_tokens=max_tokens, max_support=max_support, progress=progress,
              doc_tokens=doc_tokens)
    val = collect(model, source, val_docs, **kw)
    test = collect(model, source, test_docs, **kw)
    lam_s, lam_d = tune_lambdas(val["logp"], val["p_inf"], val["sparse"], val["has"], grid)
    res = {
        "lambda_sparse": lam_s,
        "lambda_dense": lam_d,
        "window": window,
        "stride": stride,
        "validation": score(val["logp"], val["p_inf"], val["sparse"], val["has"], lam_s, lam_d),
        "test": score(test["logp"], test["p_inf"], test["sparse"], test["has"], lam_s, lam_d),
        "mean_suffix_len": float(test["slen"].mean()) if len(test["slen"]) else 0.0,
        "seconds_lm": val["seconds_lm"] + test["seconds_lm"],
        "seconds_infgram": val["seconds_infgram"] + test["seconds_infgram"],
    }
    return res


PRIOR_CONFIGS = ("LM alone", "LM + corpus ∞-gram", "LM + context ∞-gram", "LM + corpus + context")
# A prior's weight depends on how long a suffix it matched: a long match is nearly always right, a
# one-token match says little. Buckets of matched length: 1, 2, 3-4, 5-8, 9-16, 17+.
SUFFIX_BUCKETS = np.array([1, 2, 3, 5, 9, 17])


def _buckets(suffix_len: np.ndarray) -> np.ndarray:
    return np.searchsorted(SUFFIX_BUCKETS, np.maximum(suffix_len, 1), side="right") - 1


def collect_priors(model, source, docs_ids, decode, *, window, stride, max_suffix_len=64, adapt=False,
                   dynamic_lr=None, progress=False) -> dict:
    """Per-token arrays over whole documents for evaluate_priors: LM log-probs and entropies (with
    ``adapt``, also those of an lm_integration.prior.OnlineOutputAdapter started afresh for each
    document; with ``dynamic_lr``, a second pass under lm_integration.dynamic_eval.DynamicEvaluation
    at that learning rate, started afresh for each document, its arrays under ``dyn_`` names), the
    corpus ∞-gram (when ``source``), the document's own online ∞-gram, and the UTF-8 bytes up to each
    token."""
    lm_keys = ("logp", "ent", *(("logp_adapt", "ent_adapt") if adapt else ()))
    dyn_keys = tuple(f"dyn_{k}" for k in lm_keys) if dynamic_lr else ()
    parts = {k: [] for k in (*lm_keys, *dyn_keys, "p_inf", "sparse", "has", "slen", "p_ctx", "has_ctx", "slen_ctx",
                             "bytes")}

    def adapter():
        if not adapt:
            return None
        from lm_integration.prior import OnlineOutputAdapter

        head = model.get_output_embeddings()
        return OnlineOutputAdapter(head.weight, getattr(head, "bias", None))

    for i, ids in enumerate(docs_ids):
        if len(ids) < 2:
            continue
        stats = lm_token_stats(model, ids, window=window, stride=stride, adapter=adapter())
        if dynamic_lr:
            from lm_integration.dynamic_eval import DynamicEvaluation

            with DynamicEvaluation(model, lr=dynamic_lr) as dynamic:
                dyn = lm_token_stats(model, ids, window=window, stride=stride, adapter=adapter(), dynamic=dynamic)
            stats.update({f"dyn_{k}": v for k, v in dyn.items()})
        lp = stats["logp"]
        if source is not None:
            p, sp, hs, sl = infgram_token_probs(source, ids)
        else:
            p, sp, hs, sl = np.zeros(len(lp)), np.zeros(len(lp), bool), np.zeros(len(lp), bool), np.zeros(len(lp), int)
        pc, hc, slc = context_token_probs(ids, max_suffix_len=max_suffix_len)
        # bytes each scored token adds (the first token has no context and is not scored)
        ends = _byte_ends(ids, decode)
        for k, v in zip(parts, (*(stats[k] for k in (*lm_keys, *dyn_keys)), p, sp, hs, sl, pc, hc, slc,
                                np.diff(ends))):
            parts[k].append(v)
        if progress:
            print(f"  doc {i + 1}/{len(docs_ids)}: {sum(map(len, parts['logp']))} tokens", file=sys.stderr)
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    for k in ("sparse", "has", "has_ctx"):
        cat[k] = cat[k].astype(bool)
    return cat


def _byte_ends(ids, decode, window: int = 256) -> np.ndarray:
    """UTF-8 bytes of the text of ids[:t+1], for every t. Decoding every prefix would cost time
    quadratic in the document; instead each window of tokens is decoded on its own after an exactly
    decoded prefix, so a character split across a window's start may be counted a few bytes off
    inside that window (the document's total is exact)."""
    n = len(ids)
    ends = np.zeros(n, dtype=np.int64)
    for start in range(0, n, window):
        base = len(decode(ids[:start]).encode("utf-8")) if start else 0
        for t in range(start, min(start + window, n)):
            ends[t] = base + len(decode(ids[start : t + 1]).encode("utf-8"))
    if n:
        ends[-1] = len(decode(ids).encode("utf-8"))
    return ends


def _prior_parts(d: dict, lams: np.ndarray) -> list:
    """Mixture parts for weights ``lams``: corpus weights per (sparse, bucket), then context per bucket."""
    nb = len(SUFFIX_BUCKETS)
    lam_inf = lams[:2 * nb].reshape(2, nb)[d["sparse"].astype(int), _buckets(d["slen"])]
    lam_ctx = lams[2 * nb:][_buckets(d["slen_ctx"])]
    return [(d["p_inf"], np.where(d["has"], lam_inf, 0.0)), (d["p_ctx"], np.where(d["has_ctx"], lam_ctx, 0.0))]


def tune_priors(val: dict, use_corpus: bool, use_context: bool, grid=DEFAULT_GRID, rounds: int = 3) -> np.ndarray:
    """Mixture weights (corpus per sparse/dense and suffix bucket, context per suffix bucket) minimising
    validation NLL by coordinate descent over ``grid``; a source that is off keeps weight 0, and the
    weights never leave the LM less than 1% of the mass."""
    nb = len(SUFFIX_BUCKETS)
    lams = np.zeros(3 * nb)
    free = ([*range(2 * nb)] if use_corpus else []) + ([*range(2 * nb, 3 * nb)] if use_context else [])
    for _ in range(rounds):
        for i in free:
            best = None
            for value in grid:
                trial = lams.copy()
                trial[i] = value
                if trial[:2 * nb].max() + trial[2 * nb:].max() > 0.99:
                    continue
                nll = mix_nll(val["logp"], _prior_parts(val, trial)).sum()
                if best is None or nll < best[0]:
                    best = (nll, float(value))
            lams[i] = best[1]
    return lams


def score_priors(val: dict, test: dict, source_present: bool = True, grid=DEFAULT_GRID) -> dict:
    """{config: weights, NLL sum, tokens, bytes} on ``test`` with weights tuned on ``val``."""
    out = {}
    for name, corpus, context in zip(PRIOR_CONFIGS, (False, True, False, True), (False, False, True, True)):
        if corpus and not source_present:
            continue
        lams = tune_priors(val, corpus, context, grid)
        out[name] = {"lambdas": lams.tolist(), "nll": float(mix_nll(test["logp"], _prior_parts(test, lams)).sum()),
                     "tokens": len(test["logp"]), "bytes": int(test["bytes"].sum())}
    return out


def _split(d: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in d.items()}


def priors_report(test: dict, val: dict | None, source_present: bool = True, grid=DEFAULT_GRID) -> dict:
    """Perplexity and bits per byte of each configuration on ``test``: weights tuned on ``val``, or,
    without one, two-fold cross-fitting on ``test`` (tuned on one half, scored on the other, both ways)."""
    if val is not None:
        runs = [score_priors(val, test, source_present, grid)]
    else:
        mid = len(test["logp"]) // 2
        first, second = _split(test, 0, mid), _split(test, mid, len(test["logp"]))
        runs = [score_priors(first, second, source_present, grid), score_priors(second, first, source_present, grid)]
    n = len(test["logp"])
    out = {"tokens": n, "bytes": int(test["bytes"].sum()), "tuning": "validation" if val is not None else
           "two-fold cross-fitting", "context_coverage": float(test["has_ctx"].mean()) if n else 0.0,
           "corpus_coverage": float(test["has"].mean()) if n else 0.0, "configs": {}}
    for name in runs[0]:
        nll = sum(r[name]["nll"] for r in runs)
        out["configs"][name] = {"ppl": float(np.exp(nll / max(n, 1))),
                                "bits_per_byte": float(nll / np.log(2) / max(out["bytes"], 1)),
                                "lambdas": [r[name]["lambdas"] for r in runs]}
    for name, nll in online_nll(test, source_present).items():
        out["configs"][name] = {"ppl": float(np.exp(nll.sum() / max(n, 1))),
                                "bits_per_byte": float(nll.sum() / np.log(2) / max(out["bytes"], 1)), "online": True}
    return out


ONLINE_CONFIGS = ("LM + online mixer (corpus, context)", "LM + online output adaptation",
                  "LM + online output adaptation + online mixer", "LM + dynamic evaluation",
                  "LM + dynamic evaluation + online mixer", "LM + dynamic evaluation + online output adaptation",
                  "LM + dynamic evaluation + online output adaptation + online mixer")


def online_nll(d: dict, source_present: bool = True) -> dict:
    """Per-token NLL of the online configurations (nothing tuned on the text: each learns while it
    codes, in text order): the LM with lm_integration.prior.OnlineMixer over the corpus and context
    ∞-grams; with ``logp_adapt`` (collect_priors(adapt=True)), ``dyn_logp`` (dynamic_lr=...) or
    ``dyn_logp_adapt`` (both) in ``d``, that LM alone and mixed."""
    from lm_integration.prior import OnlineMixer

    sources = [(d["p_ctx"], d["has_ctx"], d["slen_ctx"])]
    if source_present:
        sources.insert(0, (d["p_inf"], d["has"], d["slen"]))
    out = {}
    # per LM variant: its arrays, its row alone (the plain LM's is "LM alone", scored elsewhere), its row
    # with the mixer
    variants = (("logp", "ent", None, ONLINE_CONFIGS[0]), ("logp_adapt", "ent_adapt", *ONLINE_CONFIGS[1:3]),
                ("dyn_logp", "dyn_ent", *ONLINE_CONFIGS[3:5]), ("dyn_logp_adapt", "dyn_ent_adapt", *ONLINE_CONFIGS[5:7]))
    for logp, ent, alone, mixed in variants:
        if logp in d and ent in d:
            if alone is not None:
                out[alone] = -d[logp]
            out[mixed] = OnlineMixer(len(sources)).nll(d[logp], d[ent], sources)
    return out


def evaluate_priors(model, source, val_docs, test_docs, decode, *, window=1024, stride=512, max_suffix_len=64,
                    grid=DEFAULT_GRID, adapt=False, dynamic_lr=None, progress=False) -> dict:
    """Perplexity and bits per byte on test_docs of the LM alone, with the corpus ∞-gram prior, with
    the document's own online ∞-gram prior (lm_integration.context), and with both, every mixture
    weight tuned on val_docs (or cross-fitted on test_docs when val_docs is empty); and the online
    configurations of online_nll (``adapt``: with the online output adaptation too; ``dynamic_lr``:
    with dynamic evaluation too). ``decode`` turns token ids back into text (for the byte count)."""
    kw = dict(window=window, stride=stride, max_suffix_len=max_suffix_len, progress=progress)
    test = collect_priors(model, source, test_docs, decode, adapt=adapt, dynamic_lr=dynamic_lr, **kw)
    val = collect_priors(model, source, val_docs, decode, **kw) if val_docs else None
    res = priors_report(test, val, source is not None, grid)
    res.update(window=window, stride=stride)
    return res


def format_priors_table(res: dict) -> str:
    base = res["configs"]["LM alone"]["bits_per_byte"]
    rows = ["| model | PPL | bits per byte | vs LM alone |", "| --- | ---: | ---: | ---: |"]
    for name, r in res["configs"].items():
        rows.append(f"| {name} | {r['ppl']:.3f} | {r['bits_per_byte']:.4f} | {100 * (r['bits_per_byte'] / base - 1):+.1f}% |")
    rows.append("")
    rows.append(f"{res['tokens']:,} scored tokens, {res['bytes']:,} bytes; weights by matched suffix length, "
                f"tuning: {res['tuning']} (the online rows tune nothing: they learn while coding); window {res.get('window')}, stride {res.get('stride')}; an estimate "
                f"existed for {100 * res['corpus_coverage']:.0f}% of tokens from the corpus and "
                f"{100 * res['context_coverage']:.0f}% from the document so far")
    return "\n".join(rows)


def format_table(res: dict) -> str:
    rows = ["| split | tokens | PPL LM | PPL LM+∞-gram | 1 - PPL_mix/PPL_LM | (PPL_LM-PPL_mix)/(PPL_LM-1) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for split in ("validation", "test"):
        r = res[split]
        rows.append(f"| {split} | {r['tokens']} | {r['ppl_lm']:.3f} | {r['ppl_mix']:.3f} | "
                    f"{100 * r['relative_reduction']:.1f}% | {100 * r['paper_relative_improvement']:.1f}% |")
    rows.append("")
    rows.append(f"λ_sparse = {res['lambda_sparse']}, λ_dense = {res['lambda_dense']} (tuned on validation); "
                f"window {res['window']}, stride {res['stride']}; mean matched suffix {res['mean_suffix_len']:.1f} tokens")
    return "\n".join(rows)


def _read_docs(args) -> list[str]:
    docs: list[str] = []
    for f in args.text or []:
        t = Path(f).read_text(encoding="utf-8", errors="replace")
        docs.extend([line for line in t.splitlines() if line.strip()] if args.line_per_doc else [t])
    for f in args.jsonl or []:
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    docs.append(json.loads(line)[args.field])
    return docs


def load_model(spec: str, device: str = "cpu"):
    if spec == "smollm2":
        from lm_integration import smollm2

        return smollm2.load(device=device)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(spec).to(device).eval()
    return model, AutoTokenizer.from_pretrained(spec)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lm_integration.eval_lm",
        description="Held-out perplexity of a causal LM with and without ∞-gram interpolation "
                    "(λ_sparse/λ_dense tuned on a validation split, sliding window with stride).",
    )
    p.add_argument("--index", required=True,
                   help="index directory (engine.NgramIndex), grpc://HOST:PORT for a server, or 'none' with --priors")
    p.add_argument("--model", default="smollm2",
                   help="'smollm2' (`ngram fetch smollm2` once) or a local transformers model dir")
    p.add_argument("--text", nargs="*", help="held-out text files (one document each, or see --line-per-doc)")
    p.add_argument("--line-per-doc", action="store_true", help="every non-empty line of --text is a document")
    p.add_argument("--jsonl", nargs="*", help="held-out JSONL files")
    p.add_argument("--field", default="text", help="JSONL text field (default: text)")
    p.add_argument("--val-frac", type=float, default=0.5, help="share of documents used to tune λ (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed of the validation/test split")
    p.add_argument("--window", type=int, default=1024, help="LM context window in tokens (default 1024)")
    p.add_argument("--stride", type=int, default=512, help="window stride in tokens (default 512)")
    p.add_argument("--max-tokens", type=int, default=None, help="score at most this many tokens per split")
    p.add_argument("--doc-tokens", type=int, default=None, help="score at most this many tokens per document")
    p.add_argument("--max-support", type=int, default=None, help="cap ntd scans (approximate, infini-gram style)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--priors", action="store_true",
                   help="compare LM alone, + corpus ∞-gram, + the document's own online ∞-gram, and both "
                        "(perplexity and bits per byte, whole documents; --index none for the context only)")
    p.add_argument("--adapt", action="store_true",
                   help="with --priors: also the LM with its output layer adapted online to each document "
                        "(lm_integration.prior.OnlineOutputAdapter), alone and with the online mixer")
    p.add_argument("--dynamic-lr", type=float, metavar="LR",
                   help="with --priors: also dynamic evaluation (lm_integration.dynamic_eval: one Adam step at "
                        "this rate on each window's tokens once scored; 1e-4 suits SmolLM2-135M), alone and "
                        "with the online mixer (and the adapted output layer with --adapt); a second LM pass "
                        "with gradients, about three times the first")
    p.add_argument("--no-check", action="store_true", help="skip the tokenizer compatibility check")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    docs = _read_docs(args)
    if len(docs) < 2:
        print("need at least 2 held-out documents (use --text/--jsonl, or --line-per-doc)", file=sys.stderr)
        return 2
    from lm_integration.open_source import open_source
    from lm_integration.tokenizer_compat import check_tokenizer_compat

    source = None if args.index == "none" else open_source(args.index)
    model, tok = load_model(args.model, args.device)
    if not args.no_check and source is not None:
        check_tokenizer_compat(source, tok, model=model)
    ids = [tok.encode(d, add_special_tokens=False) for d in docs]
    order = list(range(len(ids)))
    random.Random(args.seed).shuffle(order)
    n_val = max(1, min(len(ids) - 1, int(round(args.val_frac * len(ids)))))
    val = [ids[i] for i in order[:n_val]]
    test = [ids[i] for i in order[n_val:]]
    if args.priors:
        res = evaluate_priors(model, source, val, test, tok.decode, window=args.window, stride=args.stride,
                              adapt=args.adapt, dynamic_lr=args.dynamic_lr, progress=args.progress)
        res.update(index=args.index, model=args.model, documents=len(docs))
        print(format_priors_table(res))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
        return 0
    if source is None:
        print("--index none needs --priors (the corpus comparison needs an index)", file=sys.stderr)
        return 2
    res = evaluate(model, source, val, test, window=args.window, stride=args.stride, max_tokens=args.max_tokens,
                   max_support=args.max_support, progress=args.progress, doc_tokens=args.doc_tokens)
    res.update(index=args.index, model=args.model, documents=len(docs))
    print(format_table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
