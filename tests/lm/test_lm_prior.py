import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from transformers import LogitsProcessorList  # noqa: E402

from tests.helpers.lm_fakes import FakeSource, brute_longest_suffix, smollm_or_skip, tiny_llama  # noqa: E402
from lm_integration.prior import InfgramLogitsProcessor  # noqa: E402

V = 12
DOCS = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 5, 6], [2, 3, 4, 8], [9, 9, 10, 11, 1, 2, 3, 4]]


def src():
    return FakeSource(DOCS, vocab_size=V)


def test_lambda_zero_is_bit_identical():
    scores = torch.randn(3, V)
    ids = torch.tensor([[1, 2, 3], [2, 3, 4], [9, 9, 10]])
    for mode in ("interpolate", "additive"):
        p = InfgramLogitsProcessor(src(), mode=mode, lambda_sparse=0.0, lambda_dense=0.0)
        out = p(ids, scores)
        assert out is scores
    # per-row zero weight leaves that row bit-identical too
    p = InfgramLogitsProcessor(src(), lambda_sparse=0.0, lambda_dense=0.7)
    out = p(ids, scores.clone())
    sparse_rows = [b for b, e in enumerate(p.estimates(ids)) if e.sparse]
    assert sparse_rows  # [2,3,4] is followed by 5 or 8: dense; [9,9,10] -> 11 only: sparse
    for b in sparse_rows:
        assert torch.equal(out[b], scores[b])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_interpolation_sums_to_one_and_mixes(dtype):
    scores = (torch.randn(4, V + 3) * 3).to(dtype)  # model vocab padded past the index's
    ids = torch.tensor([[0, 1, 2, 3], [5, 2, 3, 4], [9, 9, 10, 11], [0, 0, 0, 0]])
    lam_s, lam_d = 0.6, 0.3
    p = InfgramLogitsProcessor(src(), lambda_sparse=lam_s, lambda_dense=lam_d)
    out = p(ids, scores.clone())
    assert out.dtype == dtype and out.shape == scores.shape
    total = torch.logsumexp(out.double(), -1)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert torch.allclose(total, torch.zeros_like(total), atol=tol)
    ests = p.estimates(ids)
    p_lm = torch.softmax(scores.double(), -1)
    for b, est in enumerate(ests):
        lam = lam_s if est.sparse else lam_d
        expect = (1 - lam) * p_lm[b]
        if est.empty:
            continue
        for t, pr in zip(est.tokens, est.probs):
            expect[t] += lam * pr
        if dtype != torch.bfloat16:
            assert torch.allclose(out[b].double().exp(), expect, atol=1e-6)
    # [0,0,0,0]: token 0 never occurs -> suffix 0 -> unigram estimate, still a valid mixture
    assert not ests[3].empty and ests[3].suffix_len == 0


def test_additive_prior_with_floor():
    scores = torch.randn(2, V)
    ids = torch.tensor([[1, 2, 3], [9, 9, 10]])
    lam, floor = 0.5, 1e-4
    p = InfgramLogitsProcessor(src(), mode="additive", lambda_sparse=lam, floor=floor)
    out = p(ids, scores.clone())
    for b, est in enumerate(p.estimates(ids)):
        bonus = torch.full((V,), float(np.log(floor)))
        for t, pr in zip(est.tokens, est.probs):
            bonus[t] = float(np.log(max(pr, floor)))
        assert torch.allclose(out[b], scores[b] + lam * bonus, atol=1e-6)


def test_masked_tokens_stay_masked():
    scores = torch.randn(1, V)
    scores[0, 4] = -float("inf")  # [1,2,3] -> 4 (3x) or 7 (1x); forbid 4
    p = InfgramLogitsProcessor(src(), lambda_sparse=0.5)
    out = p(torch.tensor([[1, 2, 3]]), scores.clone())
    assert out[0, 4] == -float("inf")
    assert torch.allclose(torch.logsumexp(out, -1), torch.zeros(1), atol=1e-5)
    assert out[0, 7].exp() >= 0.5 - 1e-6  # all the ∞-gram mass moved to 7


def test_incremental_state_queries_at_most_l_plus_one():
    class RecordingSource(FakeSource):  # also records plain ntd queries (a token known to continue the match)
        def ntd(self, prompt, max_support=None):
            self.query_lens.append(len(self._q(prompt)))
            return super().ntd(prompt, max_support)

    s = RecordingSource(DOCS, vocab_size=V)
    p = InfgramLogitsProcessor(s, lambda_sparse=0.5, cache_size=0)
    seq = [9, 9, 10, 11, 1, 2, 3, 4, 5, 6, 6, 6]
    scores = torch.zeros(1, V)
    for t in range(2, len(seq) + 1):
        prev = p._trackers[0].suffix_len if p._trackers else None
        s.query_lens.clear()
        p(torch.tensor([seq[:t]]), scores)
        l = p._trackers[0].suffix_len
        assert l == brute_longest_suffix(DOCS, seq[:t])
        assert s.query_lens == ([t] if prev is None else [prev + 1])


def test_left_padding_is_ignored():
    s = src()
    p = InfgramLogitsProcessor(s, lambda_sparse=0.5, pad_token_id=0)
    p(torch.tensor([[0, 0, 1, 2], [1, 2, 3, 4]]), torch.zeros(2, V))
    assert [t.length for t in p._trackers] == [2, 4]


def test_works_with_generate():
    model = tiny_llama(vocab_size=V, eos_token_id=V - 1)
    ids = torch.tensor([[1, 2, 3]])
    plain = model.generate(ids, max_new_tokens=6, do_sample=False)
    zero = InfgramLogitsProcessor(src(), lambda_sparse=0.0, lambda_dense=0.0)
    same = model.generate(ids, max_new_tokens=6, do_sample=False, logits_processor=LogitsProcessorList([zero]))
    assert torch.equal(plain, same)
    strong = InfgramLogitsProcessor(src(), lambda_sparse=0.999, lambda_dense=0.999)
    out = model.generate(ids, max_new_tokens=3, do_sample=False, logits_processor=LogitsProcessorList([strong]))
    assert out[0, 3:].tolist() == [4, 5, 6]  # the corpus continuation of [1, 2, 3] dominates
    ids2 = torch.tensor([[1, 2, 3], [9, 9, 10]])
    out2 = model.generate(ids2, max_new_tokens=2, do_sample=True, top_k=0,
                          logits_processor=LogitsProcessorList([InfgramLogitsProcessor(src(), lambda_sparse=1.0)]),
                          pad_token_id=0)
    assert out2.shape == (2, 5)


def test_validation_errors():
    with pytest.raises(ValueError, match="mode"):
        InfgramLogitsProcessor(src(), mode="mix")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        InfgramLogitsProcessor(src(), lambda_sparse=1.5)
    with pytest.raises(ValueError, match="floor"):
        InfgramLogitsProcessor(src(), mode="additive", floor=0.0)


@pytest.mark.smollm
def test_smollm_generate_with_prior():
    model, tok = smollm_or_skip()
    text = "In the beginning God created the heaven and the earth. And the earth was without form, and void"
    ids = tok(text, return_tensors="pt").input_ids
    docs = [ids[0].tolist()]
    s = FakeSource(docs, vocab_size=len(tok), fingerprint=None)
    p = InfgramLogitsProcessor(s, lambda_sparse=0.9, lambda_dense=0.9)
    out = model.generate(ids[:, :8], max_new_tokens=8, do_sample=False, logits_processor=LogitsProcessorList([p]))
    assert out[0, 8:16].tolist() == ids[0, 8:16].tolist()
