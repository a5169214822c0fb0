"""The online combiners of lm_integration.prior (OnlineOutputAdapter, OnlineMixer) against autograd and
plain recomputations, and their place in eval_lm --priors."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lm_integration.prior import OnlineMixer, OnlineOutputAdapter  # noqa: E402

V, D = 40, 8


def _data(n=70, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(V, D, generator=g)
    H = torch.randn(n, D, generator=g)
    y = torch.randint(0, V, (n,), generator=g)
    return W, H, y


def test_adapter_without_learning_is_the_plain_output_layer():
    W, H, y = _data()
    bias = torch.randn(V)
    logq, ent = OnlineOutputAdapter(W, bias, lr_hidden=0.0, lr_bias=0.0).score(H, y)
    lsm = torch.log_softmax(H @ W.T + bias, -1)
    assert np.allclose(logq, lsm[torch.arange(len(y)), y].numpy(), atol=1e-5)
    assert np.allclose(ent, (-(lsm.exp() * lsm).sum(-1)).numpy(), atol=1e-5)


def test_adapter_update_is_the_gradient_step_of_the_log_loss():
    W, H, y = _data(n=16)
    ad = OnlineOutputAdapter(W, lr_hidden=0.01, lr_bias=0.1)
    ad.A = torch.randn(D, D) * 0.1  # from a non-zero state
    ad.b = torch.randn(V) * 0.1
    A = ad.A.clone().requires_grad_(True)
    b = ad.b.clone().requires_grad_(True)
    loss = -torch.log_softmax((H + H @ A.T) @ W.T + b, -1)[torch.arange(16), y].sum()
    loss.backward()
    ad.update(H, y, ad.log_probs(H))
    assert torch.allclose(ad.A, A.detach() - 0.01 * A.grad, atol=1e-5)
    assert torch.allclose(ad.b, b.detach() - 0.1 * b.grad, atol=1e-5)


def test_adapter_is_causal_and_learns():
    W, H, y = _data(n=96)
    first, _ = OnlineOutputAdapter(W, lr_hidden=1e-2, lr_bias=0.0, block=8).score(H, y)
    y2 = y.clone()
    y2[40:] = (y2[40:] + 1) % V  # other later tokens: the scores up to their block stay
    second, _ = OnlineOutputAdapter(W, lr_hidden=1e-2, lr_bias=0.0, block=8).score(H, y2)
    assert np.array_equal(first[:40], second[:40]) and not np.array_equal(first[40:], second[40:])
    # one context and one answer, again and again: the adapter learns it, the plain layer cannot
    Hr, yr = H[:1].repeat(64, 1), y[:1].repeat(64)
    logq, _ = OnlineOutputAdapter(W, lr_hidden=1e-2, lr_bias=0.5, block=8).score(Hr, yr)
    assert logq[-8:].mean() > logq[:8].mean() + 1.0


def _mixer_by_autograd(logp, ent, sources, lr, init):
    """The same mixer written with autograd: weights from θ before each token, then θ += lr·∇ log P."""
    mixer = OnlineMixer(len(sources), lr=lr, init=init)
    theta = torch.tensor(mixer.theta, requires_grad=True)
    out = []
    for t in range(len(logp)):
        live = [k for k, s in enumerate(sources) if s[1][t]]
        if not live:
            out.append(-logp[t])
            continue
        s = [torch.zeros((), dtype=torch.float64)]
        for k in live:
            f = mixer._features(np.array([sources[k][2][t]]), np.array([ent[t]]))[0]
            s.append(theta[k, torch.as_tensor(f)].sum())
        w = torch.softmax(torch.stack(s), 0)
        probs = torch.tensor([math.exp(logp[t])] + [sources[k][0][t] for k in live], dtype=torch.float64)
        logmix = torch.log(w @ probs)
        out.append(-float(logmix.detach()))
        (g,) = torch.autograd.grad(logmix, theta)
        with torch.no_grad():
            theta += lr * g
    return np.array(out)


def test_mixer_matches_autograd():
    rng = np.random.default_rng(1)
    n = 60
    logp = np.log(rng.uniform(0.01, 0.9, n))
    ent = rng.uniform(0, 5, n)
    sources = [(rng.uniform(0, 1, n) * (rng.random(n) < 0.8), rng.random(n) < 0.7, rng.integers(0, 30, n)),
               (rng.uniform(0, 1, n), rng.random(n) < 0.5, rng.integers(1, 5, n))]
    got = OnlineMixer(2, lr=0.3, init=-1.0).nll(logp, ent, sources)
    want = _mixer_by_autograd(logp, ent, sources, 0.3, -1.0)
    assert np.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_mixer_without_estimates_is_the_lm_and_learns_a_good_source():
    n = 400
    logp = np.full(n, math.log(0.1))
    none = (np.zeros(n), np.zeros(n, bool), np.zeros(n, int))
    assert np.array_equal(OnlineMixer(1).nll(logp, np.ones(n), [none]), -logp)
    right = (np.ones(n), np.ones(n, bool), np.full(n, 9))  # a source that is always right
    nll = OnlineMixer(1, lr=0.1).nll(logp, np.ones(n), [right])
    assert nll[-50:].mean() < 0.1 < nll[:5].mean()
    with pytest.raises(ValueError, match="made for 2 sources"):
        OnlineMixer(2).nll(logp, np.ones(n), [right])


def test_lm_token_stats_match_the_logprobs_and_adapt():
    pytest.importorskip("transformers")
    from tests.helpers.lm_fakes import tiny_llama
    from lm_integration.eval_lm import lm_token_logprobs, lm_token_stats

    model = tiny_llama(vocab_size=30, seed=2)
    ids = np.random.default_rng(0).integers(0, 30, 40).tolist()
    ref = lm_token_logprobs(model, ids, window=16, stride=8)
    head = model.get_output_embeddings()
    frozen = OnlineOutputAdapter(head.weight, lr_hidden=0.0, lr_bias=0.0)
    st = lm_token_stats(model, ids, window=16, stride=8, adapter=frozen)
    assert np.allclose(st["logp"], ref, rtol=0, atol=1e-12)
    assert np.allclose(st["logp_adapt"], ref, atol=1e-5)  # (the adapter works in float32)
    assert np.all(st["ent"] > 0) and np.allclose(st["ent_adapt"], st["ent"], atol=1e-4)
    learning = lm_token_stats(model, ids * 4, window=16, stride=8,
                              adapter=OnlineOutputAdapter(head.weight, lr_hidden=0.0, lr_bias=0.5, block=4))
    assert learning["logp_adapt"][-40:].mean() > learning["logp"][-40:].mean()  # a text that repeats itself


def test_priors_report_has_the_online_rows():
    from lm_integration.eval_lm import ONLINE_CONFIGS, priors_report

    rng = np.random.default_rng(3)
    n = 300
    d = {"logp": np.log(rng.uniform(0.01, 0.5, n)), "ent": rng.uniform(0, 4, n), "p_inf": rng.uniform(0, 1, n),
         "sparse": rng.random(n) < 0.3, "has": rng.random(n) < 0.9, "slen": rng.integers(0, 20, n),
         "p_ctx": rng.uniform(0, 1, n), "has_ctx": rng.random(n) < 0.8, "slen_ctx": rng.integers(0, 20, n),
         "bytes": np.full(n, 4)}
    d["logp_adapt"], d["ent_adapt"] = d["logp"] + 0.1, d["ent"]
    d["dyn_logp"], d["dyn_ent"] = d["logp"] + 0.2, d["ent"]
    d["dyn_logp_adapt"], d["dyn_ent_adapt"] = d["logp"] + 0.3, d["ent"]
    res = priors_report(d, None)
    for name in ONLINE_CONFIGS:
        assert res["configs"][name]["online"]
    adapted = res["configs"][ONLINE_CONFIGS[1]]["bits_per_byte"]
    assert adapted == pytest.approx(-(d["logp"] + 0.1).sum() / math.log(2) / (4 * n))
    both = res["configs"][ONLINE_CONFIGS[5]]["bits_per_byte"]  # dynamic evaluation + adapted output layer
    assert both == pytest.approx(-(d["logp"] + 0.3).sum() / math.log(2) / (4 * n))
