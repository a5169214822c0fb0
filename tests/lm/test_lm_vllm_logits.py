"""lm_integration.vllm_logits without vLLM: the per-request settings and the per-request prior, which
must give InfgramLogitsProcessor's rows exactly. The processor inside a real vLLM engine is measured
by bench/bench_vllm_prior.py (vLLM's CPU build lives in an environment of its own)."""

import importlib.util

import pytest

torch = pytest.importorskip("torch")

from tests.helpers.lm_fakes import FakeSource  # noqa: E402
from lm_integration.prior import InfgramLogitsProcessor  # noqa: E402
from lm_integration.vllm_logits import TIMES, InfgramVllmLogitsProcessor, RequestPrior, request_options  # noqa: E402

V = 12
DOCS = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 5, 6], [2, 3, 4, 8], [9, 9, 10, 11, 1, 2, 3, 4]]


def test_request_options():
    assert request_options(None) is None
    assert request_options({"other": 1}) is None
    opts = {"lambda_sparse": 0.8, "lambda_dense": 0.2, "mode": "interpolate", "max_support": 100}
    assert request_options({"infgram": opts}) == opts
    for bad, match in (({"infgram": 0.5}, "must be a dict"), ({"infgram": {"lambda_dense": 0.2}}, "needs lambda_sparse"),
                       ({"infgram": {"lambda_sparse": 0.5, "lamda_dense": 0.2}}, "unknown"),
                       ({"infgram": {"lambda_sparse": 1.5}}, r"\[0, 1\]"),
                       ({"infgram": {"lambda_sparse": "0.5"}}, "must be a number"),
                       ({"infgram": {"lambda_sparse": 0.5, "mode": "mix"}}, "mode"),
                       ({"infgram": {"lambda_sparse": 0.5, "max_support": -1}}, "non-negative integer")):
        with pytest.raises(ValueError, match=match):
            request_options(bad)


@pytest.mark.parametrize("mode", ["interpolate", "additive"])
def test_request_prior_equals_the_hf_processor_step_by_step(mode):
    src = FakeSource(DOCS, vocab_size=V)
    opts = request_options({"infgram": {"lambda_sparse": 0.7, "lambda_dense": 0.3, "mode": mode}})
    req = RequestPrior(src, opts)
    ref = InfgramLogitsProcessor(src, check_tokenizer=False, **opts)
    prompt, output = [9, 1, 2], []  # vLLM appends each sampled token to the same output list
    gen = torch.Generator().manual_seed(0)
    changed, calls = 0, TIMES["calls"]
    for token in (3, 4, 40 % V, 5, 6):
        logits = torch.randn(V, generator=gen)
        got = req(prompt, output, logits.clone())
        want = ref(torch.tensor([prompt + output]), logits.clone().unsqueeze(0))[0]
        assert torch.equal(got, want)
        changed += not torch.equal(got, logits)
        output.append(token)
    assert changed >= 3  # the corpus knows most of these contexts
    assert TIMES["calls"] == calls + 5 and TIMES["seconds"] > 0  # every call is timed


def test_request_prior_returns_the_row_itself_when_nothing_applies():
    src = FakeSource(DOCS, vocab_size=V)
    req = RequestPrior(src, {"lambda_sparse": 0.0, "lambda_dense": 0.0})
    row = torch.randn(V)
    assert req([1, 2], [3], row) is row


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_processor_needs_vllm():
    with pytest.raises(ImportError, match="needs vLLM"):
        InfgramVllmLogitsProcessor(object(), "cpu", False)


def test_request_prior_publishes_its_clock_when_asked(tmp_path, monkeypatch):
    import json

    from lm_integration.vllm_logits import TIMES_ENV

    path = tmp_path / "times.json"
    monkeypatch.setenv(TIMES_ENV, str(path))
    req = RequestPrior(FakeSource(DOCS, vocab_size=V), {"lambda_sparse": 0.5})
    req([1, 2], [3], torch.randn(V))
    assert json.loads(path.read_text()) == TIMES and TIMES["calls"] >= 1
