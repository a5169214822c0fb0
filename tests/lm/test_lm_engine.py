"""lm_integration against a real engine.NgramIndex built by engine.build_index."""

import warnings

import numpy as np
import pytest

engine = pytest.importorskip("engine")

from tests.helpers.lm_fakes import FakeSource, brute_longest_suffix, smollm_or_skip  # noqa: E402
from lm_integration import InfgramDrafter, InfgramTracker, NgramSource, check_tokenizer_compat  # noqa: E402

V = 40


@pytest.fixture(scope="module")
def docs():
    rng = np.random.default_rng(0)
    base = rng.integers(2, 12, size=60).tolist()
    out = [base[i : i + rng.integers(3, 25)] for i in range(0, 60, 7)]
    out += [base[5:40], [3, 3, 3, 3], [7], list(range(2, V - 1))]
    return [d for d in out if d]


@pytest.fixture(scope="module")
def index(docs, tmp_path_factory):
    path = tmp_path_factory.mktemp("lmidx") / "idx"
    engine.build_index(path, documents=[np.array(d, dtype=np.uint16) for d in docs], tokenizer=None,
                       vocab_size=V, workers=1)
    return engine.NgramIndex.open(path)


def test_index_satisfies_protocol(index):
    assert isinstance(index, NgramSource)
    assert index.vocab_size == V


def test_fake_agrees_with_engine(index, docs):
    fake = FakeSource(docs, vocab_size=V)
    rng = np.random.default_rng(1)
    for _ in range(200):
        q = rng.integers(2, 13, size=rng.integers(1, 6)).tolist()
        a, b = index.infgram_ntd(q), fake.infgram_ntd(q)
        assert a.suffix_len == b.suffix_len, q
        assert a.tokens.tolist() == b.tokens.tolist() and a.counts.tolist() == b.counts.tolist(), q
        assert a.end_count == b.end_count and a.prompt_count == b.prompt_count, q
        assert index.count(q) == fake.count(q)


def test_tracker_on_index(index, docs):
    rng = np.random.default_rng(2)
    seq = (docs[0] + rng.integers(2, 13, size=30).tolist() + docs[-1][:10])
    tr = InfgramTracker(index)
    for t in range(len(seq)):
        est = tr.extend([seq[t]])
        assert est.suffix_len == brute_longest_suffix(docs, seq[: t + 1])


def test_speculative_with_index_equals_greedy(index, docs, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers.lm_fakes import tiny_llama
    from lm_integration.prior import InfgramLogitsProcessor
    from lm_integration.speculative import speculative_generate
    from transformers import LogitsProcessorList

    model = tiny_llama(vocab_size=V, seed=5)
    ids = torch.tensor([docs[0][:6], docs[1][:6]])
    ref = model.generate(ids, max_new_tokens=15, do_sample=False)
    out, st = speculative_generate(model, InfgramDrafter(index), ids, 15, num_draft=4, return_stats=True)
    assert torch.equal(out, ref)
    # the prior runs on the real index too, and λ = 0 is the identity inside generate
    p0 = InfgramLogitsProcessor(index, lambda_sparse=0.0, lambda_dense=0.0)
    assert torch.equal(model.generate(ids, max_new_tokens=5, do_sample=False, logits_processor=LogitsProcessorList([p0])),
                       model.generate(ids, max_new_tokens=5, do_sample=False))
    p = InfgramLogitsProcessor(index, lambda_sparse=0.5, lambda_dense=0.5)
    scores = p(ids, torch.randn(2, V))
    assert torch.allclose(torch.logsumexp(scores, -1), torch.zeros(2), atol=1e-5)


def test_pretokenized_index_has_no_fingerprint(index):
    with pytest.warns(UserWarning, match="no tokenizer fingerprint"):
        check_tokenizer_compat(index, None, fingerprint="x")


@pytest.fixture
def smollm_index(tmp_path):
    """(model, tokenizer, an index built with SmolLM2's own tokenizer.json)."""
    model, tok = smollm_or_skip()
    from lm_integration import smollm2

    path = engine.build_index(tmp_path / "idx", documents=["In the beginning God created the heaven and the earth."],
                              tokenizer=str(smollm2.model_dir() / "tokenizer.json"), workers=1)
    return model, tok, engine.NgramIndex.open(path)


@pytest.mark.smollm
def test_smollm_tokenizer_against_index_built_with_it(tmp_path, smollm_index):
    model, tok, idx = smollm_index
    check_tokenizer_compat(idx, tok, model=model)
    gpt2_like = engine.build_index(tmp_path / "bytes", documents=["abc"], tokenizer="bytes", workers=1)
    with pytest.raises(Exception, match="vocabulary size differs"):
        check_tokenizer_compat(engine.NgramIndex.open(gpt2_like), tok, model=model)


@pytest.mark.smollm
def test_smollm_padding_and_truncation_state_does_not_change_the_check(smollm_index):
    # A tokenizer once called with padding=True / truncation=True keeps that state in its backend; the
    # fingerprint must not depend on it (the index was built from the same tokenizer.json).
    model, tok, idx = smollm_index
    from lm_integration import InfgramDrafter
    from lm_integration.prior import InfgramLogitsProcessor
    from lm_integration.tokenizer_compat import content_fingerprint

    before = content_fingerprint(tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok(["a b c", "a much longer second text than the first"], padding=True, truncation=True, max_length=4)
    assert tok.backend_tokenizer.padding is not None and tok.backend_tokenizer.truncation is not None
    assert content_fingerprint(tok) == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_tokenizer_compat(idx, tok, model=model)
        InfgramLogitsProcessor(idx, tokenizer=tok, model=model)
        InfgramDrafter(idx, tokenizer=tok, model=model)
    assert tok.backend_tokenizer.truncation is not None  # the caller's tokenizer is left as it was
