"""Tokenizers: real GPT-2 ranks, trained small Hugging Face and SentencePiece models, the byte-level
tokenizer, specs that save and load, fingerprints, errors, and parallel streaming tokenization."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidQueryError, TokenizerError, TokenizerMismatchError
from engine.tokenizers import (
    BytesTokenizer,
    Tokenizer,
    load_tokenizer,
    token_width_for,
    tokenize_stream,
)

SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.\n\nIt's 2024;   spaces  and\ttabs.",
    "naïve café — 日本語のテキスト 🙂",
    "",
    " leading space and trailing ",
]

TRAIN_TEXT = [
    "the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "naïve café 日本",
    "It's the end of the world as we know it", "numbers 123 4567 and symbols !?#",
] * 20


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gpt2() -> Tokenizer:
    # 0.8 MB download the first time (PyPI sdist of openai-whisper), then from the cache.
    return load_tokenizer("gpt2")


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TRAIN_TEXT, trainer)
    d = tmp_path_factory.mktemp("hf")
    tok.save(str(d / "tokenizer.json"))
    return d


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory) -> Path:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAIN_TEXT), model_writer=buf, vocab_size=400, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, minloglevel=2, num_threads=1,
    )
    path = tmp_path_factory.mktemp("sp") / "tiny.model"
    path.write_bytes(buf.getvalue())
    return path


# -- token widths --------------------------------------------------------------------------------


def test_token_width_for():
    assert token_width_for(255) == 1
    assert token_width_for(256) == 2
    assert token_width_for(256, byte_level=True) == 1
    assert token_width_for(BytesTokenizer()) == 1
    assert token_width_for(50257) == 2
    assert token_width_for(65535) == 2
    assert token_width_for(65536) == 4
    assert token_width_for(128256) == 4
    with pytest.raises(TokenizerError):
        token_width_for(0)
    with pytest.raises(TokenizerError):
        token_width_for(2**32)
    with pytest.raises(TokenizerError):
        token_width_for(300, byte_level=True)


# -- bytes ---------------------------------------------------------------------------------------


def test_bytes_tokenizer_basics():
    tok = load_tokenizer("bytes")
    assert tok.kind == "bytes" and tok.vocab_size == 256 and tok.eos_token_id is None
    ids = tok.encode("hé")
    assert ids.dtype == np.uint32 and ids.tolist() == [0x68, 0xC3, 0xA9]
    assert tok.decode(ids) == "hé"
    assert tok.token_str(ord("A")) == "A"
    assert tok.token_str(0xC3) == "\\xc3"
    assert tok.token_bytes(0xC3) == b"\xc3"
    assert tok.token_width == 1
    assert tok.encode_batch(["a", "bc"])[1].tolist() == [98, 99]
    # lone surrogates (possible in JSON input) are replaced rather than crashing
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"
    assert tok.decode(np.array([0xC3], dtype=np.uint8)) == "\ufffd"


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_bytes_round_trip_and_never_0xff(text):
    tok = BytesTokenizer()
    ids = tok.encode(text)
    assert 0xFF not in ids.tolist()
    assert ids.max(initial=0) < 256
    # lone surrogates become U+FFFD; everything else round-trips exactly
    clean = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert tok.decode(ids) == clean


# -- GPT-2 (real ranks) --------------------------------------------------------------------------


def test_gpt2_known_ids(gpt2):
    assert gpt2.kind == "tiktoken" and gpt2.name == "gpt2"
    assert gpt2.vocab_size == 50257 and gpt2.eos_token_id == 50256
    assert gpt2.token_width == 2
    assert gpt2.encode("Hello world").tolist() == [15496, 995]
    assert gpt2.encode("a  b").tolist() == [64, 220, 275]  # whitespace rule of the GPT-2 regex
    assert gpt2.encode(" the").tolist() == [262]
    assert gpt2.token_str(262) == " the"
    assert gpt2.token_str(50256) == "<|endoftext|>"
    # special-token text in the input is plain text: a corpus cannot inject EOS
    assert 50256 not in gpt2.encode("x <|endoftext|> y").tolist()


def test_gpt2_round_trips_and_display(gpt2):
    for text in SAMPLES:
        ids = gpt2.encode(text)
        assert ids.dtype == np.uint32 and ids.ndim == 1
        assert gpt2.decode(ids) == text
        assert gpt2.decode(ids.tolist()) == text
    batch = gpt2.encode_batch(SAMPLES)
    assert [b.tolist() for b in batch] == [gpt2.encode(t).tolist() for t in SAMPLES]
    # a CJK character split over tokens: partial UTF-8 is shown escaped, never as U+FFFD
    parts = [gpt2.token_str(i) for i in gpt2.encode("日本")]
    assert "".join(parts) != "日本" and any("\\x" in p for p in parts)
    assert all("\ufffd" not in p for p in parts)
    assert b"".join(gpt2.token_bytes(i) for i in gpt2.encode("日本")) == "日本".encode()


def test_decode_and_token_str_validate_ids(gpt2):
    with pytest.raises(InvalidQueryError, match="outside the vocabulary"):
        gpt2.decode([1, 50257])
    with pytest.raises(InvalidQueryError, match="outside the vocabulary"):
        gpt2.token_str(-1)
    with pytest.raises(InvalidQueryError):
        gpt2.decode(np.array([[1, 2]]))
    with pytest.raises(InvalidQueryError):
        gpt2.decode([1.5])
    assert gpt2.decode([]) == ""


def test_gpt2_save_load_fingerprint(gpt2, tmp_path):
    fp = gpt2.fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    spec = gpt2.save(tmp_path / "tok")
    json.dumps(spec)  # serialisable
    assert spec["kind"] == "tiktoken" and spec["ranks"] == "gpt2.tiktoken"
    assert spec["fingerprint"] == fp and spec["vocab_size"] == 50257 and spec["eos_token_id"] == 50256
    assert not Path(spec["ranks"]).is_absolute()

    # load from another place: copy the whole directory, resolve relative to it
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "tok", moved)
    again = load_tokenizer(spec, base_dir=moved)
    assert again.fingerprint() == fp
    assert again.encode(SAMPLES[1]).tolist() == gpt2.encode(SAMPLES[1]).tolist()
    # a bare ranks file with a known stem, and a directory holding it, are the same tokenizer
    assert load_tokenizer(moved / "gpt2.tiktoken").fingerprint() == fp
    assert load_tokenizer(moved).fingerprint() == fp
    # the absolute spec and pickling
    assert load_tokenizer(gpt2.to_spec()).fingerprint() == fp
    assert pickle.loads(pickle.dumps(gpt2)).fingerprint() == fp
    # a saved spec.json next to the files loads too
    (moved / "spec.json").write_text(json.dumps(spec))
    assert load_tokenizer(moved / "spec.json").fingerprint() == fp
    # different content -> different fingerprint; changed files -> mismatch error
    assert BytesTokenizer().fingerprint() != fp
    lines = (moved / "gpt2.tiktoken").read_bytes().splitlines(keepends=True)
    (moved / "gpt2.tiktoken").write_bytes(b"".join(lines[:-1]))
    with pytest.raises(TokenizerMismatchError, match="fingerprint"):
        load_tokenizer(spec, base_dir=moved)


def test_tiktoken_dict_spec_with_pattern(gpt2, tmp_path):
    ranks = gpt2.path
    tok = load_tokenizer({"kind": "tiktoken", "ranks": str(ranks), "pattern": "gpt2",
                          "special_tokens": {"<|endoftext|>": 50256}})
    assert tok.fingerprint() == gpt2.fingerprint()
    assert tok.eos_token_id == 50256
    # an explicit regex gives the same tokenizer
    tok2 = load_tokenizer({"kind": "tiktoken", "ranks": str(ranks), "pattern": gpt2.pattern,
                           "special_tokens": {"<|endoftext|>": 50256}})
    assert tok2.fingerprint() == gpt2.fingerprint()
    # an unknown ranks file needs a pattern, and the error says how to give one
    other = tmp_path / "mine.tiktoken"
    shutil.copyfile(ranks, other)
    with pytest.raises(TokenizerError, match="pattern"):
        load_tokenizer(other)
    tok3 = load_tokenizer({"kind": "tiktoken", "ranks": str(other), "pattern": "gpt2"})
    assert tok3.vocab_size == 50256 and tok3.eos_token_id is None  # no special tokens given
    assert tok3.encode("Hello world").tolist() == [15496, 995]


# -- Hugging Face --------------------------------------------------------------------------------


def test_huggingface_tokenizer(hf_dir, tmp_path):
    tok = load_tokenizer(hf_dir)
    assert tok.kind == "huggingface"
    assert tok.vocab_size == 300
    assert tok.eos_token_id == 0  # <|endoftext|> is the only special token, id 0
    for text in SAMPLES:
        assert tok.decode(tok.encode(text)) == text
    assert [a.tolist() for a in tok.encode_batch(SAMPLES)] == [tok.encode(t).tolist() for t in SAMPLES]
    ids = tok.encode(" the cat")
    assert "".join(tok.token_str(i) for i in ids) == " the cat"
    assert any(tok.token_str(i).startswith(" ") for i in ids)  # 'Ġ' shown as a space
    assert tok.token_str(0) == "<|endoftext|>"
    assert 0 not in tok.encode("a<|endoftext|>b").tolist()
    parts = [tok.token_str(i) for i in tok.encode("日")]
    assert any("\\x" in p for p in parts)

    spec = tok.save(tmp_path / "saved")
    assert spec["path"] == "tokenizer.json" and spec["fingerprint"] == tok.fingerprint()
    again = load_tokenizer(spec, base_dir=tmp_path / "saved")
    assert again.fingerprint() == tok.fingerprint() and again.eos_token_id == 0
    assert load_tokenizer(hf_dir / "tokenizer.json").fingerprint() == tok.fingerprint()
    # same content, different formatting of the JSON: same fingerprint
    obj = json.loads((hf_dir / "tokenizer.json").read_text())
    (tmp_path / "pretty").mkdir()
    (tmp_path / "pretty" / "tokenizer.json").write_text(json.dumps(obj, indent=4))
    assert load_tokenizer(tmp_path / "pretty").fingerprint() == tok.fingerprint()
    assert pickle.loads(pickle.dumps(tok)).encode("the dog").tolist() == tok.encode("the dog").tolist()


def test_huggingface_eos_from_tokenizer_config(hf_dir, tmp_path):
    d = tmp_path / "cfg"
    shutil.copytree(hf_dir, d)
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|endoftext|>"}}))
    assert load_tokenizer(d).eos_token_id == 0
    with pytest.raises(TokenizerError, match="eos_token"):
        load_tokenizer({"kind": "huggingface", "path": str(d / "tokenizer.json"), "eos_token": "</nope>"})
    explicit = load_tokenizer({"kind": "huggingface", "path": str(d / "tokenizer.json"), "eos_token_id": 7})
    assert explicit.eos_token_id == 7


# -- SentencePiece -------------------------------------------------------------------------------


def test_sentencepiece_tokenizer(sp_model, tmp_path):
    tok = load_tokenizer(sp_model)
    assert tok.kind == "sentencepiece" and tok.vocab_size == 400
    assert tok.eos_token_id == 2
    for text in ["the cat sat on the mat", "naïve café 日本", "zebra 🙂 unseen"]:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("the cat")
    assert "".join(tok.token_str(i) for i in ids).strip() == "the cat"
    # byte-fallback pieces show their byte
    emoji = tok.encode("🙂").tolist()
    assert b"".join(tok.token_bytes(i) for i in emoji).strip() == "🙂".encode()
    assert tok.token_str(2) == "</s>"
    spec = tok.save(tmp_path / "s")
    assert spec["model"] == "tiny.model"
    assert load_tokenizer(spec, base_dir=tmp_path / "s").fingerprint() == tok.fingerprint()
    shutil.copyfile(sp_model, tmp_path / "renamed.model")
    assert load_tokenizer(tmp_path / "renamed.model").fingerprint() == tok.fingerprint()


# -- bad specs -----------------------------------------------------------------------------------


def test_bad_specs_raise_tokenizer_error_saying_what_to_pass(tmp_path):
    cases = [
        "no-such-tokenizer",
        str(tmp_path / "missing.json"),
        {"kind": "word2vec"},
        {"kind": "huggingface"},
        {"kind": "sentencepiece", "model": str(tmp_path / "nope.model")},
        {"path": "x"},
        "",
        42,
    ]
    for spec in cases:
        with pytest.raises(TokenizerError) as ei:
            load_tokenizer(spec)
        assert "pass" in str(ei.value) or "needs" in str(ei.value), (spec, str(ei.value))

    (tmp_path / "garbage.json").write_text('{"model": {"type": "Nonsense"}}')
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(tmp_path / "garbage.json")
    (tmp_path / "garbage.model").write_bytes(b"\x00\x01not a model")
    with pytest.raises(TokenizerError, match="SentencePiece"):
        load_tokenizer(tmp_path / "garbage.model")
    (tmp_path / "bad.tiktoken").write_text("!!! not base64\n")
    with pytest.raises(TokenizerError, match="bad.tiktoken:1"):
        load_tokenizer({"kind": "tiktoken", "ranks": str(tmp_path / "bad.tiktoken"), "pattern": "gpt2"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="holds no tokenizer"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "x.bin").write_bytes(b"x")
    with pytest.raises(TokenizerError, match="cannot tell"):
        load_tokenizer(tmp_path / "x.bin")
    with pytest.raises(TokenizerMismatchError):
        load_tokenizer({"kind": "bytes", "fingerprint": "0" * 64})
    with pytest.raises(TokenizerMismatchError, match="300"):
        load_tokenizer({"kind": "bytes", "vocab_size": 300})


def test_bytes_spec_forms():
    fp = BytesTokenizer().fingerprint()
    assert load_tokenizer({"kind": "bytes"}).fingerprint() == fp
    assert load_tokenizer({"name": "bytes"}).fingerprint() == fp
    assert load_tokenizer(Path("bytes") if Path("bytes").exists() else "bytes").fingerprint() == fp


def test_bytes_save_writes_no_files(tmp_path):
    spec = BytesTokenizer().save(tmp_path)
    assert spec == {"kind": "bytes", "vocab_size": 256, "eos_token_id": None,
                    "fingerprint": BytesTokenizer().fingerprint()}
    assert list(tmp_path.iterdir()) == []
    assert load_tokenizer(spec, base_dir=tmp_path).kind == "bytes"


# -- tokenize_stream -----------------------------------------------------------------------------


def _docs(n: int):
    for i in range(n):
        text = f"document {i}: " + " ".join(["the cat sat", "naïve 日本", "x" * (i % 13)][: 1 + i % 3]) * (1 + i % 5)
        yield text, ({"i": i} if i % 4 else None)


def test_tokenize_stream_in_process_matches_encode(gpt2):
    out = list(tokenize_stream(_docs(50), "gpt2", workers=1, batch_docs=7))
    assert len(out) == 50
    for (ids, meta), (text, want_meta) in zip(out, _docs(50)):
        assert ids.dtype == np.uint32
        assert ids.tolist() == gpt2.encode(text).tolist()
        assert meta == want_meta


def test_tokenize_stream_workers_preserve_order(gpt2):
    from tqdm import tqdm

    n = 600
    single = list(tokenize_stream(_docs(n), gpt2.to_spec(), workers=1, batch_docs=16))
    with tqdm(total=n, file=io.StringIO(), mininterval=3600) as bar:
        multi = list(tokenize_stream(_docs(n), gpt2, workers=2, batch_docs=16, progress=bar))
        assert bar.n == n
    assert len(multi) == n
    for (a, ma), (b, mb) in zip(single, multi):
        assert a.dtype == b.dtype == np.uint32
        assert np.array_equal(a, b)
        assert ma == mb
    assert [m for _, m in multi] == [m for _, m in _docs(n)]


def test_tokenize_stream_mixed_pretokenized_bytes_and_char_batches():
    docs = [("ab", {"k": 1}), (np.array([7, 8, 9], dtype=np.int64), {"k": 2}), ("c", None)] * 5
    for workers in (1, 2):
        out = list(tokenize_stream(iter(docs), "bytes", workers=workers, batch_docs=4, batch_chars=3))
        assert [o[0].tolist() for o in out] == [[97, 98], [7, 8, 9], [99]] * 5
        assert [o[1] for o in out] == [{"k": 1}, {"k": 2}, None] * 5


def test_tokenize_stream_early_stop_and_errors(tmp_path):
    gen = tokenize_stream(_docs(10_000), "bytes", workers=2, batch_docs=8)
    first = [next(gen) for _ in range(3)]
    gen.close()  # shuts the pool down without draining the corpus
    assert len(first) == 3
    with pytest.raises(TokenizerError):
        list(tokenize_stream(_docs(3), str(tmp_path / "missing.json"), workers=2))
    with pytest.raises(TypeError, match="str"):
        list(tokenize_stream([(5, None)], "bytes", workers=1))


def test_tokenize_stream_is_lazy():
    consumed = []

    def source():
        for i in range(10_000):
            consumed.append(i)
            yield "x" * 10, None

    gen = tokenize_stream(source(), "bytes", workers=1, batch_docs=10)
    next(gen)
    assert len(consumed) <= 10


# -- real presets (larger downloads) -------------------------------------------------------------


@pytest.mark.slow
def test_llama3_preset():
    tok = load_tokenizer("llama3")  # 17.6 MB npm tarball, once per cache
    assert tok.kind == "huggingface" and tok.vocab_size == 128256
    assert tok.eos_token_id == 128001  # <|end_of_text|>
    assert tok.token_width == 4
    for text in SAMPLES:
        assert tok.decode(tok.encode(text)) == text
    ids = tok.encode("Hello world")
    assert ids.tolist() == [9906, 1917]
    assert tok.token_str(1917) == " world"
    assert 128000 not in ids.tolist()  # no BOS added


@pytest.mark.slow
def test_mistral_preset(tmp_path):
    tok = load_tokenizer("mistral")  # 6.6 MB wheel of mistral-common, once per cache
    assert tok.kind == "sentencepiece" and tok.vocab_size == 32000 and tok.eos_token_id == 2
    assert tok.token_width == 2
    for text in ["Hello world", "The quick brown fox.", "naïve café 日本語"]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.token_str(tok.encode("\n")[-1]) == "\n"
    spec = tok.save(tmp_path)
    assert load_tokenizer(spec, base_dir=tmp_path).fingerprint() == tok.fingerprint()


# -- encode_serial and shard payloads (the builder's path) ---------------------------------------

SPECIAL_TEXT = ["a <|endoftext|> b", "<|endoftext|>", "x<|endoftext|><|endoftext|>y", "<|endo", "\ud800 lone"]


def test_encode_serial_gives_encodes_ids_for_every_kind(gpt2, hf_dir, sp_model):
    for tok in (gpt2, load_tokenizer("bytes"), load_tokenizer(hf_dir / "tokenizer.json"), load_tokenizer(sp_model)):
        for text in SAMPLES + SPECIAL_TEXT:
            fast = tok.encode_serial(text)
            assert fast.dtype.kind == "u"
            assert fast.tolist() == tok.encode(text).tolist(), (tok.kind, text)


def test_gpt2_special_token_text_is_plain_text(gpt2):
    # encode_serial goes through tiktoken's buffer path with no special token allowed: the ids must be
    # those of encode_ordinary, never the <|endoftext|> id.
    for text in SPECIAL_TEXT:
        ids = gpt2.encode_serial(text).tolist()
        assert 50256 not in ids
        assert ids == gpt2._enc.encode_ordinary(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))


# Every Unicode White_Space character, characters Python's re calls space but the regex crate does not
# (U+001C..U+001F), zero-width non-spaces, letters, digits, symbols, contractions and the cut marker.
_SPACEY = list("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2003\u200a\u2028\u2029\u202f\u205f\u3000") + list(
    "\x1c\x1d\x1e\x1f\u200b\ufeffaZ\u00e9\u65e51\u0663'.-{}!") + ["'s", "'t", "'re", "'ll", "<|endoftext|>", "\x00"]
_SPACEY_ASCII = [c for c in _SPACEY if c.isascii() and c != "\x00"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_SPACEY), max_size=60), st.lists(st.sampled_from(_SPACEY_ASCII), max_size=60))
def test_gpt2_cut_encoder_gives_the_lookahead_regex_ids(gpt2, pieces, ascii_pieces):
    # encode_serial cuts whitespace runs and encodes with a regex without GPT-2's look-ahead
    # (engine.tokenizers.tiktoken_bpe._CUT): the ids must be those of the GPT-2 regex itself, on short texts (re
    # cuts them), long ASCII texts (numpy cuts them) and texts holding the marker (encoded as they are).
    short, ascii_text = "".join(pieces), "".join(ascii_pieces)
    for text in (short, ascii_text, ascii_text * (1 + 1100 // max(1, len(ascii_text))), short * 30):
        assert gpt2.encode_serial(text).tolist() == gpt2._enc.encode_ordinary(text), repr(text[:80])


def test_gpt2_cut_encoder_on_source_code(gpt2):
    code = "static int f(void)\n{\n\tif (x  ==  1)\n\t\treturn 0;   \n  \t\n\n}\n" * 40 + "\t  x\r\n\r\n  y"
    for text in (code, code[:500], code + " caf\u00e9  \u3000\u3000z"):
        assert gpt2.encode_serial(text).tolist() == gpt2._enc.encode_ordinary(text)


@pytest.mark.parametrize("width", [1, 2, 4])
def test_encode_shard_payload_layout(width):
    from engine.tokenizers import encode_shard_payload

    tok = load_tokenizer("bytes")
    texts = ["ab", "", "\u00e9z"]
    payload, sizes, highest = encode_shard_payload(tok, texts, width)
    sep = (1 << (8 * width)) - 1
    assert payload.dtype == np.dtype(f"<u{width}")
    assert payload.tolist() == [sep, 97, 98, sep, sep, 0xC3, 0xA9, 122]
    assert sizes.tolist() == [3, 1, 4]
    assert highest.tolist() == [98, -1, 0xC3]


def test_tokenize_to_payloads_workers_agree_and_keep_order(gpt2):
    from engine.tokenizers import tokenize_to_payloads

    docs = list(_docs(300))
    single = list(tokenize_to_payloads(iter(docs), "gpt2", 1, 2, batch_docs=17))
    threads = list(tokenize_to_payloads(iter(docs), gpt2, 2, 2, batch_docs=17, batch_chars=500))
    processes = list(tokenize_to_payloads(iter(docs), gpt2, 2, 2, batch_docs=17, pool="processes"))
    for runs in (single, threads, processes):
        payload = np.concatenate([r[0] for r in runs])
        sizes = np.concatenate([r[1] for r in runs])
        assert [m for r in runs for m in r[3]] == [m for _, m in docs]
        ends = np.cumsum(sizes)
        assert (payload[ends - sizes] == 0xFFFF).all()
        for (text, _), end, size in zip(docs, ends.tolist(), sizes.tolist()):
            assert payload[end - size + 1:end].tolist() == gpt2.encode(text).tolist()
    with pytest.raises(TypeError, match="str"):
        list(tokenize_to_payloads([(np.array([1]), None)], "bytes", 1, 1))
    with pytest.raises(ValueError, match="pool"):
        list(tokenize_to_payloads(iter(docs), "bytes", 2, 1, pool="fibers"))


def test_tokenize_to_payloads_threads_and_processes_agree_for_every_kind(hf_dir, sp_model):
    from engine.tokenizers import tokenize_to_payloads

    docs = list(_docs(120))
    for spec in ("bytes", str(hf_dir / "tokenizer.json"), str(sp_model)):
        width = load_tokenizer(spec).token_width
        runs = {pool: [(p.tolist(), s.tolist(), h.tolist(), m) for p, s, h, m in
                       tokenize_to_payloads(iter(docs), spec, 2, width, batch_docs=9, pool=pool)]
                for pool in ("threads", "processes")}
        assert runs["threads"] == runs["processes"], spec
