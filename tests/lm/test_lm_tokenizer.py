import warnings

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from tests.helpers.lm_fakes import FakeSource, smollm_or_skip
from lm_integration import TokenizerMismatchError, check_tokenizer_compat, tokenizer_fingerprint


def wordlevel(words):
    vocab = {w: i for i, w in enumerate(["[UNK]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


A = wordlevel(["the", "quick", "brown", "fox", "dog", "lazy", "jumps", "over"])
B = wordlevel(["the", "quick", "brown", "fox", "dog", "lazy", "over", "jumps"])  # same size, ids swapped


def test_fingerprint_stable_and_discriminating():
    assert tokenizer_fingerprint(A) == tokenizer_fingerprint(A)
    assert tokenizer_fingerprint(A).startswith("probe-v1:")
    assert tokenizer_fingerprint(A) != tokenizer_fingerprint(B)
    # a plain function text -> ids with the same behaviour has the same fingerprint
    fn = lambda text: A.encode(text, add_special_tokens=False).ids  # noqa: E731
    assert tokenizer_fingerprint(fn, vocab_size=A.get_vocab_size()) == tokenizer_fingerprint(A)


def test_accepts_matching_tokenizer():
    src = FakeSource([[1, 2, 3]], vocab_size=9, fingerprint=tokenizer_fingerprint(A))
    check_tokenizer_compat(src, A)
    check_tokenizer_compat(src, A, model_vocab_size=16)  # padded embeddings are fine


def test_refuses_other_vocab_size():
    src = FakeSource([[1, 2, 3]], vocab_size=50257, fingerprint="x")
    with pytest.raises(TokenizerMismatchError, match="vocabulary size differs.*9 ids.*50257"):
        check_tokenizer_compat(src, A)


def test_refuses_same_size_other_fingerprint():
    src = FakeSource([[1, 2, 3]], vocab_size=9, fingerprint=tokenizer_fingerprint(B))
    with pytest.raises(TokenizerMismatchError, match="fingerprint differs.*rebuild the index"):
        check_tokenizer_compat(src, A)


def test_refuses_model_smaller_than_index():
    src = FakeSource([[1, 2, 3]], vocab_size=9, fingerprint=None)
    with pytest.raises(TokenizerMismatchError, match="the model has 5 logits"):
        check_tokenizer_compat(src, None, model_vocab_size=5)


def test_index_without_fingerprint_warns_or_refuses_when_strict():
    src = FakeSource([[1, 2, 3]], vocab_size=9, fingerprint=None)
    with pytest.warns(UserWarning, match="records no tokenizer fingerprint"):
        check_tokenizer_compat(src, A)
    with pytest.raises(TokenizerMismatchError, match="strict=False"):
        check_tokenizer_compat(src, A, strict=True)


def test_prior_refuses_mismatch():
    pytest.importorskip("torch")
    from lm_integration.prior import InfgramLogitsProcessor

    src = FakeSource([[1, 2, 3]], vocab_size=9, fingerprint=tokenizer_fingerprint(B))
    with pytest.raises(TokenizerMismatchError):
        InfgramLogitsProcessor(src, tokenizer=A)


@pytest.mark.smollm
def test_smollm_tokenizer_fingerprint_matches_tokenizers_library():
    model, tok = smollm_or_skip()
    from lm_integration import smollm2

    raw = Tokenizer.from_file(str(smollm2.model_dir() / "tokenizer.json"))
    assert tokenizer_fingerprint(tok) == tokenizer_fingerprint(raw)
    src = FakeSource([[1, 2]], vocab_size=len(tok), fingerprint=tokenizer_fingerprint(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_tokenizer_compat(src, tok, model=model)
    with pytest.raises(TokenizerMismatchError):
        check_tokenizer_compat(src, A, model=model)


def test_same_behaviour_other_serialisation_is_accepted():
    # the index's fingerprint is a content hash we cannot reproduce, but it tokenizes like A
    enc = lambda text: A.encode(text, add_special_tokens=False).ids  # noqa: E731
    src = FakeSource([[1]], vocab_size=9, fingerprint="some-other-hash", tokenize=enc)
    check_tokenizer_compat(src, A)
    enc_b = lambda text: B.encode(text, add_special_tokens=False).ids  # noqa: E731
    src = FakeSource([[1]], vocab_size=9, fingerprint="some-other-hash", tokenize=enc_b)
    with pytest.raises(TokenizerMismatchError, match="encode text differently: 'The quick brown fox jumps"):
        check_tokenizer_compat(src, A)


def test_content_fingerprint_of_tokenizers_json_is_the_engines(tmp_path):
    engine = pytest.importorskip("engine")
    from lm_integration.tokenizer_compat import content_fingerprint

    A.save(str(tmp_path / "tokenizer.json"))
    out = engine.build_index(tmp_path / "idx", documents=["the quick brown fox", "the lazy dog"],
                             tokenizer=str(tmp_path / "tokenizer.json"), workers=1)
    idx = engine.NgramIndex.open(out)
    assert idx.tokenizer_fingerprint in content_fingerprint(Tokenizer.from_file(str(tmp_path / "tokenizer.json")))
    check_tokenizer_compat(idx, A)
    with pytest.raises(TokenizerMismatchError, match="fingerprint differs"):
        check_tokenizer_compat(idx, B)


def test_drafter_refuses_mismatch():
    from lm_integration import InfgramDrafter

    src = FakeSource([[1, 2, 3]], vocab_size=9, fingerprint=tokenizer_fingerprint(B))
    with pytest.raises(TokenizerMismatchError):
        InfgramDrafter(src, tokenizer=A)
    InfgramDrafter(FakeSource([[1]], vocab_size=9, fingerprint=tokenizer_fingerprint(A)), tokenizer=A)


def test_neither_tokenizer_nor_model_warns_naming_the_arguments():
    pytest.importorskip("torch")
    from lm_integration import InfgramDrafter
    from lm_integration.prior import InfgramLogitsProcessor

    src = FakeSource([[1, 2, 3]], vocab_size=9, fingerprint=tokenizer_fingerprint(A))
    for make in (lambda: InfgramLogitsProcessor(src), lambda: InfgramDrafter(src)):
        with pytest.warns(UserWarning, match="cannot check that the model fits the index: pass tokenizer="):
            make()


def test_model_alone_must_match_the_index_vocabulary():
    class Config:
        def __init__(self, vocab_size):
            self.vocab_size = vocab_size

    class Model:  # only the config is read
        def __init__(self, vocab_size):
            self.config = Config(vocab_size)

    src = FakeSource([[1, 2, 3]], vocab_size=9, fingerprint=tokenizer_fingerprint(A))
    check_tokenizer_compat(src, model=Model(9))
    for other in (8, 10, 50257):
        with pytest.raises(TokenizerMismatchError, match=f"the model has {other} logits"):
            check_tokenizer_compat(src, model=Model(other))
    # a padded embedding matrix is accepted once the tokenizer itself is checked
    check_tokenizer_compat(src, A, model=Model(16))
