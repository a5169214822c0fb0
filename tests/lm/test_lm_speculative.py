import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.helpers.lm_fakes import FakeSource, smollm_or_skip, tiny_llama  # noqa: E402
from lm_integration.drafter import (  # noqa: E402
    ConstantDrafter, HybridDrafter, InfgramDrafter, NullDrafter, PromptLookupDrafter,
)
from lm_integration.speculative import generate_with_drafter, speculative_generate  # noqa: E402

V = 48


@pytest.fixture(scope="module")
def model():
    return tiny_llama(vocab_size=V, seed=1)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V - 1, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :6] = 0
    ids[mask == 0] = 0
    return ids, mask


def drafters(model, ids, mask, n):
    ref = model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False)
    oracle = FakeSource([r.tolist() for r in ref], vocab_size=V)  # knows the answer: drafts all accepted
    noisy = FakeSource([r.tolist()[::-1] for r in ref] + [list(range(2, V))], vocab_size=V)
    return ref, [NullDrafter(), ConstantDrafter(5), PromptLookupDrafter(), InfgramDrafter(oracle), InfgramDrafter(noisy),
                 HybridDrafter(noisy)]


@pytest.mark.parametrize("num_draft", [1, 4])
def test_equals_greedy_batch(model, num_draft):
    ids, mask = batch()
    ref, ds = drafters(model, ids, mask, 30)
    for d in ds:
        out, st = speculative_generate(model, d, ids, 30, attention_mask=mask, num_draft=num_draft, return_stats=True)
        assert torch.equal(out, ref), type(d).__name__
        assert st.new_tokens == 3 * 30
    oracle = ds[3]
    _, st = speculative_generate(model, oracle, ids, 30, attention_mask=mask, num_draft=num_draft, return_stats=True)
    assert st.acceptance_rate == 1.0 and st.tokens_per_step > 1.0


def test_equals_greedy_batch_one(model):
    for seed in range(3):
        ids, mask = batch(seed)
        x = ids[2:3, 6:]
        ref, ds = drafters(model, x, None, 25)
        for d in ds:
            assert torch.equal(speculative_generate(model, d, x, 25, num_draft=5), ref)


def test_useless_drafter_costs_one_step_per_token(model):
    ids, mask = batch()
    out, st = speculative_generate(model, ConstantDrafter(3), ids[:1], 12, num_draft=4, return_stats=True)
    assert torch.equal(out, model.generate(ids[:1], max_new_tokens=12, do_sample=False))
    assert st.steps >= 12 and st.tokens_per_step <= 1.0 + 1e-9


def test_eos_and_padding_match_generate():
    # make EOS likely: pick the token the model most often emits as its EOS
    m = tiny_llama(vocab_size=V, seed=3)
    ids, mask = batch(1)
    probe = m.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False)
    eos = int(torch.mode(probe[:, 10:].reshape(-1)).values)
    m.generation_config.eos_token_id = eos
    m.generation_config.pad_token_id = 0
    ref = m.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False)
    assert (ref[:, 10:] == eos).any()
    _, ds = drafters(m, ids, mask, 20)
    for d in ds:
        out = speculative_generate(m, d, ids, 20, attention_mask=mask, num_draft=3)
        assert torch.equal(out, ref), type(d).__name__


def test_stats_shape(model):
    ids, _ = batch()
    _, st = speculative_generate(model, PromptLookupDrafter(), ids[:1], 8, return_stats=True)
    d = st.as_dict()
    for key in ("tokens_per_step", "acceptance_rate", "drafter_ms_per_step", "tokens_per_second"):
        assert key in d
    out, st = speculative_generate(model, NullDrafter(), ids[:1], 0, return_stats=True)
    assert torch.equal(out, ids[:1])


def test_hf_generate_hook(model):
    ids, mask = batch()
    x = ids[:1]
    ref, ds = drafters(model, x, None, 20)
    for d in ds:
        out = generate_with_drafter(model, d, x, num_draft=4, max_new_tokens=20)
        assert torch.equal(out, ref), type(d).__name__
    assert "_get_candidate_generator" not in model.__dict__  # the hook is removed again
    with pytest.raises(ValueError, match="batch size 1"):
        generate_with_drafter(model, NullDrafter(), ids, max_new_tokens=2)


def test_hf_hook_refuses_untested_transformers():
    from lm_integration.errors import UnsupportedTransformersError
    from lm_integration.speculative import _check_hf_hook_version

    _check_hf_hook_version("5.25.0")  # the locked release
    for version in ("4.57.1", "5.24.9", "5.26.0", "6.0.0"):
        with pytest.raises(UnsupportedTransformersError, match="supports transformers >=5.25,<5.26") as err:
            _check_hf_hook_version(version)
        assert version in str(err.value) and "speculative_generate" in str(err.value)


@pytest.mark.smollm
def test_smollm_speculative_equals_greedy():
    model, tok = smollm_or_skip()
    text = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
            "it was the age of foolishness, it was the epoch of belief")
    full = tok(text, return_tensors="pt").input_ids
    src = FakeSource([full[0].tolist()], vocab_size=len(tok), fingerprint=None)
    prompt = full[:, :12]
    ref = model.generate(prompt, max_new_tokens=10, do_sample=False)
    for d in (PromptLookupDrafter(), InfgramDrafter(src)):
        out, st = speculative_generate(model, d, prompt, 10, num_draft=6, return_stats=True)
        assert torch.equal(out, ref)


def test_tree_equals_greedy(model):
    from lm_integration.speculative import speculative_generate_tree

    ids, _ = batch(2)
    x = ids[:1]
    ref = model.generate(x, max_new_tokens=25, do_sample=False)
    # a corpus where the greedy continuation is the *second* branch after most contexts
    cont = ref[0].tolist()
    decoy = [t + 1 if t + 1 < V else 2 for t in cont]
    src = FakeSource([cont[:-1] + [c] for c in decoy[-1:]] + [cont, cont[:12] + decoy[12:], cont[:12] + decoy[12:]],
                     vocab_size=V)
    for width in (1, 2, 3):
        out, st = speculative_generate_tree(model, InfgramDrafter(src), x, 25, width=width, num_draft=5,
                                            return_stats=True)
        assert torch.equal(out, ref), width
    assert st.tokens_per_step > 1.0
    out = speculative_generate_tree(model, InfgramDrafter(FakeSource([[1, 2]], vocab_size=V)), x, 25, width=2)
    assert torch.equal(out, ref)


def test_draft_trie_merges_prefixes_depth_first():
    from lm_integration.speculative import draft_trie

    tokens, parents = draft_trie([[5, 6, 7], [5, 8], [9], [5, 6, 4]])
    # 5 -> 6 -> (7, 4); 5 -> 8; 9 : depth first with the first chain at nodes 0, 1, 2
    assert tokens == [5, 6, 7, 4, 8, 9]
    assert parents == [-1, 0, 1, 1, 0, -1]
    assert draft_trie([]) == ([], [])


class _BranchyOracle:
    """Test double: knows greedy's continuation and proposes it inside a tree of decoys, in a shuffled
    branch position, sometimes cut short, so the verifier must find a path that is not the first chain."""

    def __init__(self, prompt_len, truth, vocab, seed):
        self.prompt_len, self.truth, self.vocab = prompt_len, truth, vocab
        self.rng = np.random.default_rng(seed)

    def propose_tree(self, context, k, width=2, key=0):
        done = len(context) - self.prompt_len
        true = self.truth[done:done + int(self.rng.integers(0, k + 1))]
        chains = [true]
        for _ in range(width - 1):
            cut = int(self.rng.integers(0, len(true) + 1))
            decoy = list(true[:cut]) + [int(t) for t in self.rng.integers(2, self.vocab, k - cut)]
            chains.append(decoy)
        self.rng.shuffle(chains)
        return [c for c in chains if c]


def test_tree_verification_keeps_greedy_on_any_branch(model):
    from lm_integration.speculative import speculative_generate_tree

    ids, _ = batch(3)
    x = ids[:1]
    ref = model.generate(x, max_new_tokens=30, do_sample=False)
    truth = ref[0, x.shape[1]:].tolist()
    for seed in range(6):
        drafter = _BranchyOracle(x.shape[1], truth, V, seed)
        out, st = speculative_generate_tree(model, drafter, x, 30, width=3, num_draft=6, return_stats=True)
        assert torch.equal(out, ref), seed
        assert st.tokens_per_step > 1.5 and st.accepted > 0
