import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.lm_fakes import FakeSource
from lm_integration.eval_lm import infgram_token_probs, mixture_nll, score, tune_lambdas

ROOT = Path(__file__).resolve().parents[2]


def test_help():
    r = subprocess.run([sys.executable, "-m", "lm_integration.eval_lm", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--stride" in r.stdout and "λ" in r.stdout


def test_infgram_token_probs_brute_force():
    docs = [[1, 2, 3, 4], [1, 2, 5], [2, 3, 4, 4]]
    src = FakeSource(docs, vocab_size=8)
    ids = [1, 2, 3, 4, 6, 2]
    p, sparse, has, slen = infgram_token_probs(src, ids)
    assert slen.tolist() == [1, 2, 3, 4, 0]
    # [1]->2 always; [1,2]->3 or 5; [1,2,3]->4; [1,2,3,4] only ends a document (no estimate);
    # 6 never occurs -> the unigram distribution (11 tokens, three 2s)
    assert np.allclose(p, [1.0, 0.5, 1.0, 0.0, 3 / 11])
    assert sparse.tolist() == [True, False, True, False, False]
    assert has.tolist() == [True, True, True, False, True]


def test_tune_and_score():
    rng = np.random.default_rng(0)
    n = 400
    logp = np.log(rng.uniform(0.01, 0.5, n))
    sparse = rng.random(n) < 0.5
    p_inf = np.where(sparse, (rng.random(n) < 0.9).astype(float), rng.uniform(0, 0.3, n))
    has = np.ones(n, dtype=bool)
    ls, ld = tune_lambdas(logp, p_inf, sparse, has)
    assert 0 < ls < 1 and 0 <= ld < 1
    r = score(logp, p_inf, sparse, has, ls, ld)
    r0 = score(logp, p_inf, sparse, has, 0.0, 0.0)
    assert r0["ppl_mix"] == pytest.approx(r0["ppl_lm"]) and r["ppl_mix"] < r["ppl_lm"]
    # the tuned λ is the grid minimum for the sparse group
    grp = sparse & has
    nll = lambda lam: mixture_nll(logp[grp], p_inf[grp], np.ones(grp.sum(), bool), lam).sum()  # noqa: E731
    assert nll(ls) <= min(nll(ls - 0.01), nll(min(ls + 0.01, 0.99))) + 1e-12


def test_sliding_window_logprobs_match_direct():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers.lm_fakes import tiny_llama
    from lm_integration.eval_lm import lm_token_logprobs

    model = tiny_llama(vocab_size=30, seed=2)
    ids = np.random.default_rng(0).integers(0, 30, 14).tolist()
    full = lm_token_logprobs(model, ids, window=64, stride=32)
    with torch.no_grad():
        lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    direct = np.array([lp[t - 1, ids[t]].item() for t in range(1, len(ids))])
    assert np.allclose(full, direct, atol=1e-10)
    for window, stride in ((6, 4), (5, 5)):
        got = lm_token_logprobs(model, ids, window=window, stride=stride)
        # recompute each target with the context the schedule gives it
        begin, prev_end, expect = 0, 1, np.zeros(len(ids) - 1)
        while prev_end < len(ids):
            end = min(begin + window, len(ids))
            for t in range(prev_end, end):
                with torch.no_grad():
                    lg = model(torch.tensor([ids[begin:t]])).logits[0, -1].double()
                expect[t - 1] = torch.log_softmax(lg, -1)[ids[t]].item()
            prev_end = end
            begin = min(begin + stride, end - 1) if end < len(ids) else end
        assert np.allclose(got, expect, atol=1e-10), (window, stride)


def test_evaluate_end_to_end():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers.lm_fakes import tiny_llama
    from lm_integration.eval_lm import evaluate, format_table

    rng = np.random.default_rng(3)
    corpus = [rng.integers(2, 20, 40).tolist() for _ in range(6)]
    src = FakeSource(corpus, vocab_size=24)
    held = [d[5:30] for d in corpus]  # held-out text that the index knows well
    res = evaluate(tiny_llama(vocab_size=24), src, held[:3], held[3:], window=16, stride=8)
    assert res["test"]["ppl_mix"] < res["test"]["ppl_lm"]
    assert res["test"]["relative_reduction"] > 0.1
    assert "PPL LM" in format_table(res)


def _brute_context(tokens, query, max_len):
    """Longest suffix of query (<= max_len) with an occurrence in tokens followed by a token; its next counts."""
    q = list(query)[-max_len:]
    for L in range(len(q), 0, -1):
        suf = q[-L:]
        nxt = [tokens[p + L] for p in range(len(tokens) - L) if tokens[p:p + L] == suf]
        if nxt:
            return L, {t: nxt.count(t) for t in set(nxt)}
    return 0, {}


@given(st.lists(st.integers(0, 3), max_size=60), st.lists(st.integers(0, 3), min_size=1, max_size=12),
       st.integers(1, 8))
@settings(max_examples=300, deadline=None)
def test_context_model_matches_brute_force(tokens, query, max_len):
    from lm_integration.context import ContextNgramModel

    model = ContextNgramModel(max_suffix_len=max_len)
    model.extend(tokens[: len(tokens) // 2])  # grown in two steps, as in decoding
    model.extend(tokens[len(tokens) // 2:])
    d = model.infgram_ntd(query)
    L, counts = _brute_context(tokens, query, max_len)
    assert d.suffix_len == L
    assert dict(zip(d.tokens.tolist(), d.counts.tolist())) == counts
    if L:  # the token after the suffix's latest occurrence (prompt lookup's guess)
        latest = max(p for p in range(len(tokens) - L) if tokens[p:p + L] == list(query)[-L:])
        assert d.recent == tokens[latest + L]
    assert d.prompt_count == sum(counts.values())


def test_context_token_probs_and_priors_end_to_end():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers.lm_fakes import tiny_llama
    from lm_integration.eval_lm import (ONLINE_CONFIGS, PRIOR_CONFIGS, context_token_probs, evaluate_priors,
                                        format_priors_table)

    p, has, slen = context_token_probs([5, 6, 7, 5, 6, 7, 5, 6])
    # after "5 6 7 5" the document has seen "5" followed by "6" once: certain
    assert has.tolist() == [False, False, False, True, True, True, True]
    assert p[3:].tolist() == [1.0, 1.0, 1.0, 1.0] and slen[3:].tolist() == [1, 2, 3, 4]

    rng = np.random.default_rng(5)
    corpus = [rng.integers(2, 20, 40).tolist() for _ in range(6)]
    src = FakeSource(corpus, vocab_size=24)
    # held-out documents that repeat their own random phrase: only the context prior can know it
    docs = []
    for _ in range(6):
        phrase = rng.integers(2, 20, 7).tolist()
        docs.append(phrase * 5)
    res = evaluate_priors(tiny_llama(vocab_size=24), src, docs[:3], docs[3:], lambda ids: " ".join(map(str, ids)),
                          window=16, stride=8)
    assert list(res["configs"]) == [*PRIOR_CONFIGS, ONLINE_CONFIGS[0]]
    bpb = {k: v["bits_per_byte"] for k, v in res["configs"].items()}
    assert bpb["LM + context ∞-gram"] < 0.5 * bpb["LM alone"]
    assert bpb[ONLINE_CONFIGS[0]] < 0.7 * bpb["LM alone"]  # the online mixer learns to trust the context
    assert bpb["LM + corpus + context"] < 0.7 * bpb["LM alone"]
    assert not any(any(l) for l in res["configs"]["LM alone"]["lambdas"])
    assert "bits per byte" in format_priors_table(res)
    # without validation documents the weights are cross-fitted on the test documents' two halves
    res = evaluate_priors(tiny_llama(vocab_size=24), src, [], docs, lambda ids: " ".join(map(str, ids)),
                          window=16, stride=8)
    assert res["tuning"] == "two-fold cross-fitting" and len(res["configs"]["LM alone"]["lambdas"]) == 2
    assert res["configs"]["LM + context ∞-gram"]["bits_per_byte"] < 0.5 * res["configs"]["LM alone"]["bits_per_byte"]
    res = evaluate_priors(tiny_llama(vocab_size=24), src, [], docs, lambda ids: " ".join(map(str, ids)),
                          window=16, stride=8, adapt=True)
    assert list(res["configs"]) == [*PRIOR_CONFIGS, *ONLINE_CONFIGS[:3]]


def test_dynamic_evaluation_learns_the_document_causally_and_restores_the_model():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers.lm_fakes import tiny_llama
    from lm_integration.dynamic_eval import DynamicEvaluation
    from lm_integration.eval_lm import ONLINE_CONFIGS, _windows, evaluate_priors, lm_token_stats

    model = tiny_llama(vocab_size=24)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(7)
    doc = rng.integers(2, 20, 9).tolist() * 12  # a phrase the random model cannot know, repeated
    plain = lm_token_stats(model, doc, window=16, stride=8)
    with DynamicEvaluation(model, lr=1e-2) as dynamic:
        dyn = lm_token_stats(model, doc, window=16, stride=8, dynamic=dynamic)
    assert dynamic.steps == len(list(_windows(len(doc), 16, 8))) == 13  # one update per window
    # the first window is scored before any update; later ones learn the phrase
    assert np.allclose(dyn["logp"][:15], plain["logp"][:15])
    assert dyn["logp"][-40:].mean() > plain["logp"][-40:].mean() + 0.5
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # weights put back
    assert all(p.requires_grad for p in model.parameters())

    res = evaluate_priors(model, None, [], [doc], lambda ids: " ".join(map(str, ids)), window=16, stride=8,
                          adapt=True, dynamic_lr=1e-2)
    bpb = {k: v["bits_per_byte"] for k, v in res["configs"].items()}
    assert set(ONLINE_CONFIGS) <= set(bpb)
    assert bpb["LM + dynamic evaluation"] < 0.9 * bpb["LM alone"]
    with pytest.raises(ValueError, match="lr"):
        DynamicEvaluation(model, lr=0.0)
    with pytest.raises(ValueError, match="layers"):
        DynamicEvaluation(model, layers=99)
