"""Column-major linear weights (lm_integration.cpu_layout) and measured step costs (step_cost)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.helpers.lm_fakes import FakeSource, smollm_or_skip, tiny_llama  # noqa: E402
from lm_integration.cpu_layout import use_column_major_linears  # noqa: E402
from lm_integration.speculative import speculative_generate_tree  # noqa: E402
from lm_integration.step_cost import StepCost, fit_step_cost, measure_step_cost  # noqa: E402
from lm_integration.tree_drafter import TreeDrafter  # noqa: E402

V = 48


def _tied_tiny_llama():
    model = tiny_llama(vocab_size=V, seed=3)
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, like SmolLM2
    return model


def test_relaid_weights_keep_values_ties_and_logits():
    model = _tied_tiny_llama()
    x = torch.randint(2, V - 1, (1, 20), generator=torch.Generator().manual_seed(0))
    before_logits = model(input_ids=x).logits
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    linears = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}

    assert use_column_major_linears(model) == len(linears)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            assert m.weight.t().is_contiguous() and not m.weight.is_contiguous()
            assert not m.weight.requires_grad
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tie survives
    after_logits = model(input_ids=x).logits
    assert torch.allclose(after_logits, before_logits, atol=1e-12)
    assert use_column_major_linears(model) == 0  # already re-laid: nothing to do


def test_tree_decoding_on_relaid_weights_equals_greedy():
    model = _tied_tiny_llama()
    x = torch.randint(2, V - 1, (1, 12), generator=torch.Generator().manual_seed(4))
    ref = model.generate(x, max_new_tokens=30, do_sample=False)
    use_column_major_linears(model)
    assert torch.equal(model.generate(x, max_new_tokens=30, do_sample=False), ref)
    src = FakeSource([ref[0].tolist()], vocab_size=V)
    out, st = speculative_generate_tree(model, TreeDrafter(src), x, 30, width=3, num_draft=8, return_stats=True)
    assert torch.equal(out, ref)
    assert st.tokens_per_step > 1.0


def test_smollm2_greedy_tokens_unchanged_by_the_layout():
    model, tok = smollm_or_skip()
    ids = torch.tensor([tok.encode("The Queen said to Alice that the rabbit", add_special_tokens=False)])
    ref = model.generate(ids, max_new_tokens=12, do_sample=False)
    stored = [(m, name, p) for m in model.modules() for name, p in m.named_parameters(recurse=False)]
    try:
        assert use_column_major_linears(model) > 0
        assert model.lm_head.weight is model.model.embed_tokens.weight
        assert torch.equal(model.generate(ids, max_new_tokens=12, do_sample=False), ref)
    finally:  # the model is shared by other tests: put its weights back
        for m, name, p in stored:
            setattr(m, name, p)


def test_fit_recovers_a_linear_cost():
    cost = fit_step_cost({0: 0.1, 1: 0.16, 5: 0.20, 9: 0.24})
    assert cost.greedy_seconds == pytest.approx(0.1)
    assert cost.draft_overhead == pytest.approx(0.5)
    assert cost.token_cost == pytest.approx(0.1)
    assert cost.relative(0) == 1.0 and cost.relative(4) == pytest.approx(1.9)
    assert cost.drafter_kwargs() == {"draft_overhead": cost.draft_overhead, "token_cost": cost.token_cost}
    # a pass cheaper than a greedy step (a GPU's noise) never gives negative costs
    assert fit_step_cost({0: 0.1, 2: 0.09, 4: 0.095}).draft_overhead == 0.0


def test_measure_step_cost_times_every_size_and_feeds_the_tree_drafter():
    model = tiny_llama(vocab_size=V, seed=1)
    cost = measure_step_cost(model, context_len=16, sizes=(2, 4), reps=2)
    assert isinstance(cost, StepCost)
    assert sorted(cost.measured) == [0, 2, 4]
    assert all(t > 0 for t in cost.measured.values())
    assert cost.draft_overhead >= 0 and cost.token_cost >= 0
    drafter = TreeDrafter(None, **cost.drafter_kwargs())
    assert drafter.token_cost == cost.token_cost and drafter.draft_overhead == cost.draft_overhead
