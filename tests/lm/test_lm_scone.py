import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lm_integration import CausalFgramMatcher, FgramVocab  # noqa: E402
from lm_integration.scone import FgramEncoder, SconeEmbedding, open_fgram_table, precompute_fgram_table  # noqa: E402

V, D = 20, 8
GRAMS = [(1, 2), (2, 3), (1, 2, 3), (4, 4), (4, 4, 4, 4), (5, 6, 7)]


def make(combine="add"):
    torch.manual_seed(0)
    vocab = FgramVocab(GRAMS)
    enc = FgramEncoder(V, vocab.max_len, D, d_model=16, n_layers=1).eval()
    return vocab, enc, SconeEmbedding(V, D, vocab, encoder=enc, combine=combine).eval()


def ids():
    return torch.tensor([[1, 2, 3, 9, 4, 4, 4, 4, 4], [0, 5, 6, 7, 1, 2, 8, 8, 3]])


@pytest.mark.parametrize("combine", ["replace", "add"])
def test_training_mode_uses_longest_fgram(combine):
    vocab, enc, emb = make(combine)
    x = ids()
    out = emb(x)
    fids = CausalFgramMatcher(vocab)(x)
    tok = emb.tok(x)
    with torch.no_grad():
        for b in range(x.shape[0]):
            for t in range(x.shape[1]):
                if fids[b, t] < 0:
                    assert torch.equal(out[b, t], tok[b, t])
                else:
                    g = torch.tensor([list(vocab[fids[b, t]]) + [-1] * (vocab.max_len - len(vocab[fids[b, t]]))])
                    f = enc(g)[0]
                    expect = f if combine == "replace" else tok[b, t] + f
                    assert torch.allclose(out[b, t], expect, atol=1e-5)
    out.sum().backward()
    assert enc.tok.weight.grad is not None and enc.tok.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["mmap", "pinned"])
@pytest.mark.parametrize("suffix", [".f32", ".npy"])
def test_precomputed_table_equals_encoder(tmp_path, mode, suffix):
    vocab, enc, emb = make()
    x = ids()
    with torch.no_grad():
        ref = emb(x)
        path = precompute_fgram_table(enc, vocab, tmp_path / f"table{suffix}", batch_size=4)
        table = open_fgram_table(path, mode)
        assert table.shape == (len(vocab), D)
        emb.use_table(table)
        out = emb(x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert emb.encoder is None
    fids = CausalFgramMatcher(vocab)(x)
    assert emb.rows_gathered == len(np.unique(fids[fids >= 0]))  # only the rows this batch needs


def test_prefetch_gives_the_same_result(tmp_path):
    vocab, enc, emb = make()
    with torch.no_grad():
        emb.use_table(open_fgram_table(precompute_fgram_table(enc, vocab, tmp_path / "t.f32"), "mmap"))
        x = ids()
        ref = emb(x)
        emb.prefetch(x)
        assert emb._pending is not None
        out = emb(x)
        assert emb._pending is None
        other = torch.tensor([[4, 4, 4, 4, 1]])
        emb.prefetch(other)
        out2 = emb(x)  # a different tensor: computed directly, prefetch stays pending
        assert torch.equal(out2, ref) and torch.equal(out, ref)


def test_demo_runs_small():
    from lm_integration.scone_demo import build_fgram_vocab, run, synthetic_text

    data = synthetic_text(30_000)
    v = build_fgram_vocab(np.frombuffer(data, np.uint8), size=50)
    assert len(v) == 50 and all(2 <= len(v[i]) <= 4 for i in range(50))
    assert list(v.counts) == sorted(v.counts, reverse=True)
    res = run(data, steps=3, batch=4, ctx=32, d=16, layers=1, heads=2, fgrams=64)
    assert res["inference_params_per_token"]["baseline"] == res["inference_params_per_token"]["scone"]
    assert abs(res["scone_val_loss"] - res["scone_val_loss_train_mode"]) < 1e-4
