"""TreeDrafter: probability-guided draft trees from the corpus, the context and earlier outputs."""

import numpy as np
import pytest

from tests.helpers.lm_fakes import FakeSource
from lm_integration.tree_drafter import TreeDrafter

V = 48


def test_tree_follows_the_corpus_and_branches_where_it_is_unsure():
    # after [1, 2]: 3 four times, 9 twice; after [1, 2, 3]: always 4 5 6
    corpus = [[1, 2, 3, 4, 5, 6]] * 4 + [[1, 2, 9, 10]] * 2
    d = TreeDrafter(FakeSource(corpus, vocab_size=V), min_path_prob=0.2, max_nodes=16, history=False)
    chains = d.propose_tree([7, 1, 2], 4, width=2)
    assert chains[0] == [3, 4, 5, 6]  # the most probable path first
    assert [9, 10] in chains  # the second branch (1/3) is worth verifying too
    assert d.propose([7, 1, 2], 4) == [3, 4, 5, 6]


def test_nothing_likely_enough_gives_an_empty_draft():
    corpus = [[1, t] for t in range(2, 40)]  # after 1: 38 different tokens, none likely
    d = TreeDrafter(FakeSource(corpus, vocab_size=V), min_path_prob=0.2, history=False)
    assert d.propose_tree([5, 1], 6) == []
    assert TreeDrafter(None, history=False).propose_tree([1, 2, 3], 6) == []  # no source, no repeats


def test_context_and_history_draft_without_a_corpus():
    d = TreeDrafter(None, history=True)
    phrase = [11, 12, 13, 14, 15, 16]
    # the context repeats its own phrase: drafts continue it
    assert d.propose([1, 2] + phrase + [3] + phrase[:2], 4, key=0) == phrase[2:6]
    # what a sequence generated (the tokens after its first context) goes to the history when it ends
    d.reset()
    d.propose([1, 2, 3], 4, key=0)
    d.propose([1, 2, 3] + phrase, 4, key=0)  # the model generated the phrase
    d.reset()
    assert d.propose([30, 31, 11, 12, 13], 3, key=1) == [14, 15, 16]
    assert TreeDrafter(None, history=False).propose([30, 31, 11, 12, 13], 3) == []


def test_calibration_learns_from_what_the_model_did():
    corpus = [[1, 2, 3]] * 5
    d = TreeDrafter(FakeSource(corpus, vocab_size=V), min_path_prob=0.5, history=False)
    ctx = [8, 1, 2]
    assert d.propose(ctx, 1) == [3]
    for i in range(30):  # the model never says 3 after "1 2": the corpus's estimate drops
        ctx = ctx + [20 + i % 5, 1, 2]
        d.propose(ctx, 1)
    assert d.calibration.scale("corpus", 2) < 0.3
    # the corpus's 3 is no longer drafted; the context has learnt the cycle the model follows instead
    assert d.propose(ctx, 1) == [20]


def test_edges_the_model_never_takes_stop_being_drafted():
    # the corpus: after "1 2", 3 six times and 9 four times; the model always says 3. The source's own
    # calibration (its top token's hit rate) then raises both estimates; the per-edge acceptance
    # calibration sees that the 9 edge is never taken and stops drafting it
    corpus = [[1, 2, 3]] * 6 + [[1, 2, 9]] * 4
    d = TreeDrafter(FakeSource(corpus, vocab_size=V), min_path_prob=0.3, token_cost=0.0, draft_overhead=0.0,
                    history=False)
    ctx = [8, 1, 2]
    assert sorted(d.propose_tree(ctx, 1, width=2)) == [[3], [9]]
    for i in range(40):
        ctx = ctx + [3, 20 + i % 7, 1, 2]
        d.propose_tree(ctx, 1, width=2)
    assert d.calibration.scale("corpus", 2) > 1.0  # the top token did better than the corpus said
    nine = d.acceptance.seen, d.acceptance.hits
    assert any(n >= 10 and nine[1].get(key, 0.0) == 0.0 for key, n in nine[0].items())
    assert d.propose_tree(ctx, 1, width=2) == [[3]]


def test_edges_are_labelled_by_the_sources_that_agree_on_them():
    # after "7 1 2" the context has seen 3 and then 9 (its latest occurrence), and the corpus says 3:
    # the acceptance calibration keeps "context + corpus" edges apart from the context's alone (on the
    # kernel set the model took 89% of the first against 54% of the second)
    corpus = [[1, 2, 3]] * 5
    d = TreeDrafter(FakeSource(corpus, vocab_size=V), min_path_prob=0.05, token_cost=0.0, draft_overhead=0.0,
                    history=False)
    d.propose_tree([7, 1, 2, 3, 7, 1, 2, 9, 7, 1, 2], 1, width=3)
    edges = d._seqs[0].last_edges[()]
    assert {tok: name for tok, (_, name) in edges.items()} == {3: "context+corpus", 9: "context+recent"}
    assert d.acceptance("context+corpus", 0.5) == d.acceptance("context", 0.5) == 0.5  # nothing learnt yet
    d.acceptance.observe("context+corpus", 0.5, True)
    assert d.acceptance("context+corpus", 0.5) > d.acceptance("context", 0.5)


def test_trees_verify_to_greedy_and_beat_prompt_lookup_on_repeats():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.helpers.lm_fakes import tiny_llama
    from lm_integration.drafter import PromptLookupDrafter
    from lm_integration.speculative import speculative_generate, speculative_generate_tree

    model = tiny_llama(vocab_size=V, seed=1)
    x = torch.randint(2, V - 1, (1, 12), generator=torch.Generator().manual_seed(4))
    ref = model.generate(x, max_new_tokens=40, do_sample=False)
    # a corpus holding greedy's continuation of this prompt (as an in-domain corpus would)
    src = FakeSource([ref[0].tolist()], vocab_size=V)
    _, plain = speculative_generate(model, PromptLookupDrafter(), x, 40, return_stats=True)
    out, st = speculative_generate_tree(model, TreeDrafter(src), x, 40, width=3, num_draft=8, return_stats=True)
    assert torch.equal(out, ref)
    assert st.tokens_per_step > plain.tokens_per_step
    out = speculative_generate(model, TreeDrafter(src), x, 40, num_draft=8)
    assert torch.equal(out, ref)


def test_vllm_proposer_drafts_per_request_row(tmp_path, monkeypatch):
    # vLLM builds the proposer from its config and calls propose() with its batch arrays; the real
    # engine runs in bench/bench_vllm.py (vLLM's CPU build lives in an environment of its own)
    from types import SimpleNamespace

    import engine
    from lm_integration.vllm_proposer import CorpusProposer

    path = engine.build_index(tmp_path / "idx", documents=[[1, 2, 3, 4, 5, 6]] * 3, vocab_size=V, workers=1)
    monkeypatch.setenv("NGRAM_INDEX", str(path))
    config = SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=3),
                             model_config=SimpleNamespace(max_model_len=10))
    with pytest.warns(UserWarning, match="cannot check that the model fits the index"):
        proposer = CorpusProposer(config)  # no tokenizer folder in this config
    proposer.load_model(object())
    rows = np.zeros((3, 16), dtype=np.int32)
    rows[0, :3] = [9, 1, 2]  # the corpus continues 1 2 with 3 4 5
    rows[1, :2] = [40, 41]  # nothing known
    rows[2, :9] = [7, 1, 2, 3, 4, 5, 6, 7, 1]  # 9 tokens of a 10-token limit: no room for a draft
    drafts = proposer.propose([[2], [41], [1]], np.array([3, 2, 9]), rows)
    assert drafts == [[3, 4, 5], [], []]
    assert proposer.propose([[], [41], [1]], np.array([3, 2, 9]), rows)[0] == []  # no sampled token: skip


def test_vllm_proposer_refuses_an_index_of_another_tokenizer(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import engine
    from lm_integration import TokenizerMismatchError
    from lm_integration.vllm_proposer import CorpusProposer
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(["[UNK]", "a", "b", "c"])},
                                       unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp_path / "model").mkdir()
    words.save(str(tmp_path / "model" / "tokenizer.json"))
    path = engine.build_index(tmp_path / "idx", documents=["abc abc"], tokenizer="bytes", workers=1)
    monkeypatch.setenv("NGRAM_INDEX", str(path))
    config = SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=3),
                             model_config=SimpleNamespace(max_model_len=64, tokenizer=str(tmp_path / "model")))
    with pytest.raises(TokenizerMismatchError, match="vocabulary size differs"):
        CorpusProposer(config)
