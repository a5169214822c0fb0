"""Is the model's tokenizer the index's tokenizer? Refuse with a clear error when it is not.

Two checks, both cheap:

* vocabulary size: ``source.vocab_size`` against the tokenizer's (``len(tokenizer)`` for Hugging
  Face, ``n_vocab`` for tiktoken, ...), and against the model's logit width, which may be larger
  (padded embedding matrices) but never smaller;
* fingerprint: ``source.tokenizer_fingerprint`` against the fingerprints of the model's
  tokenizer. :func:`content_fingerprint` computes the engine's own content hash (sha256 over the
  kind and the canonical tokenizer.json, or the tiktoken ranks, as engine.tokenizers does), so a
  model whose tokenizer.json the index was built from matches directly. When the content differs
  only in serialisation (transformers rewrites tokenizer.json on save), and the source can
  ``tokenize`` text (NgramIndex and NgramClient can), the two tokenizers are compared on behaviour:
  the ids they give to a fixed set of probe texts (ASCII, digits, code, whitespace runs, accents,
  CJK, emoji) must be identical. :func:`tokenizer_fingerprint` hashes that behaviour
  (library-independent: tiktoken's GPT-2 and Hugging Face's GPT-2 get the same one).

Nothing here imports torch or transformers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import warnings
from typing import Any, Callable, Sequence

from engine.format import sha256_parts
from lm_integration.errors import TokenizerMismatchError

FINGERPRINT_VERSION = "probe-v1"

PROBE_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "In the beginning God created the heaven and the earth.",
    "  leading spaces, trailing spaces   \n\n\tand tabs\r\n",
    "0 1 12 123 1234 12345 3.14159 -42 1e-9 0x7fffffff",
    "static int foo(struct bar *b) { return b->x << 2; } // C\n#include <linux/kernel.h>",
    "def f(x):\n    return {'a': [1, 2, 3]}  # python",
    "naïve café résumé Straße Ærøskøbing ñandú",
    "日本語のテキスト 中文文本 한국어",
    "Привет, мир! Γειά σου κόσμε",
    "emoji 😀🚀 and symbols ©®™ ∞ ≤ ≥ →",
    "<|endoftext|> <s> </s> [CLS] <pad>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
)


def tokenizer_vocab_size(tokenizer: Any) -> int:
    """Number of token ids of a tokenizer object of any supported library."""
    for attr in ("n_vocab",):  # tiktoken.Encoding
        if hasattr(tokenizer, attr):
            return int(getattr(tokenizer, attr))
    if hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        return int(tokenizer.get_vocab_size(with_added_tokens=True))
    if hasattr(tokenizer, "get_piece_size"):  # sentencepiece.SentencePieceProcessor
        return int(tokenizer.get_piece_size())
    if hasattr(tokenizer, "__len__"):  # transformers tokenizers: base vocab + added tokens
        return int(len(tokenizer))
    if hasattr(tokenizer, "vocab_size"):
        return int(tokenizer.vocab_size)
    raise TypeError(f"cannot tell the vocabulary size of a {type(tokenizer).__name__}")


def _encoder(tokenizer: Any) -> Callable[[str], Sequence[int]]:
    if callable(tokenizer) and not hasattr(tokenizer, "encode"):
        return tokenizer  # a plain text -> ids function
    if hasattr(tokenizer, "encode_ordinary"):  # tiktoken: no special-token parsing
        return tokenizer.encode_ordinary
    if hasattr(tokenizer, "get_piece_size"):  # sentencepiece
        return lambda text: tokenizer.encode(text)
    backend = getattr(tokenizer, "backend_tokenizer", None)  # transformers' fast tokenizers
    if backend is not None and hasattr(backend, "to_str"):
        tokenizer = backend
    if hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        if getattr(tokenizer, "padding", None) is not None or getattr(tokenizer, "truncation", None) is not None:
            # Left set by an earlier `padding=True` / `truncation=True` call: probe an unpadded,
            # untruncated copy so the answer does not depend on that state (the caller's is untouched).
            tokenizer = type(tokenizer).from_str(tokenizer.to_str())
            tokenizer.no_padding()
            tokenizer.no_truncation()
        return lambda text: tokenizer.encode(text, add_special_tokens=False).ids
    if hasattr(tokenizer, "encode"):  # transformers (slow tokenizers)
        return lambda text: tokenizer.encode(text, add_special_tokens=False)
    raise TypeError(f"cannot encode text with a {type(tokenizer).__name__}")


def tokenizer_fingerprint(tokenizer: Any, vocab_size: int | None = None) -> str:
    """Library-independent fingerprint: ``probe-v1:<sha256 hex>`` of the vocabulary size and the
    ids of PROBE_TEXTS. ``tokenizer`` is a Hugging Face tokenizer, a ``tokenizers.Tokenizer``, a
    ``tiktoken.Encoding``, a SentencePiece processor, or a function text -> ids (then pass
    ``vocab_size``)."""
    if vocab_size is None:
        vocab_size = tokenizer_vocab_size(tokenizer)
    encode = _encoder(tokenizer)
    h = hashlib.sha256(f"{FINGERPRINT_VERSION}|{int(vocab_size)}".encode())
    for text in PROBE_TEXTS:
        ids = [int(i) for i in encode(text)]
        h.update(("|" + ",".join(map(str, ids))).encode())
    return f"{FINGERPRINT_VERSION}:{h.hexdigest()}"


def content_fingerprint(tokenizer: Any) -> set[str]:
    """The engine's content fingerprint(s) of ``tokenizer`` (engine/tokenizers/huggingface.py's ``fingerprint()``:
    sha256 over the kind and canonical content). A set: Hugging Face tokenizers give one per
    ``parse_special`` setting. Empty when the library is not one the engine fingerprints this way."""
    out: set[str] = set()
    backend = getattr(tokenizer, "backend_tokenizer", None) or (
        tokenizer if hasattr(tokenizer, "to_str") and hasattr(tokenizer, "get_vocab_size") else None)
    if backend is not None:
        try:
            obj = json.loads(backend.to_str())
        except Exception:
            return out
        for setting in ("padding", "truncation"):  # call-time state, as engine/tokenizers/huggingface.py ignores it
            if setting in obj:
                obj[setting] = None
        canon = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        for ps in (False, True):
            out.add(sha256_parts(b"huggingface", canon, json.dumps({"parse_special": ps}).encode()))
        return out
    ranks = getattr(tokenizer, "_mergeable_ranks", None)
    if ranks is not None and hasattr(tokenizer, "_pat_str"):  # tiktoken.Encoding
        canon = b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n"
                         for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))
        specials = json.dumps(dict(getattr(tokenizer, "_special_tokens", {})), sort_keys=True).encode()
        out.add(sha256_parts(b"tiktoken", canon, tokenizer._pat_str.encode("utf-8"), specials))
    return out


def _probe_difference(source: Any, tokenizer: Any) -> str | None:
    """None when source.tokenize and tokenizer agree on every probe text, else a description."""
    encode = _encoder(tokenizer)
    for text in PROBE_TEXTS:
        a = [int(i) for i in source.tokenize(text)]
        b = [int(i) for i in encode(text)]
        if a != b:
            return f"{text!r} -> index {a[:12]}{'...' if len(a) > 12 else ''}, model {b[:12]}{'...' if len(b) > 12 else ''}"
    return None


def check_tokenizer_compat(
    source: Any,
    tokenizer: Any = None,
    *,
    model: Any = None,
    model_vocab_size: int | None = None,
    fingerprint: str | None = None,
    strict: bool = False,
) -> None:
    """Raise TokenizerMismatchError unless ``tokenizer`` (and ``model``) fit the index ``source``.

    * ``tokenizer``: the model's tokenizer (any supported library). Its vocabulary size must equal
      the index's, and its fingerprint (or ``fingerprint`` when given) the index's.
    * ``model`` / ``model_vocab_size``: the model's logit width must be at least the index's
      vocabulary size (embedding matrices are often padded; the extra ids get no n-gram mass).
    * an index that records no fingerprint (an infini-gram directory without a manifest) passes on
      the size check alone with a warning, or raises when ``strict``.
    """
    index_vs = int(source.vocab_size)
    if model is not None and model_vocab_size is None:
        cfg = getattr(model, "config", None)
        if cfg is not None and hasattr(cfg, "get_text_config"):
            cfg = cfg.get_text_config()
        model_vocab_size = getattr(cfg, "vocab_size", None)
    if tokenizer is None and model_vocab_size is None and fingerprint is None:
        warnings.warn(
            "cannot check that the model fits the index: pass tokenizer= (the model's tokenizer) and/or "
            "model= so that a different tokenizer or vocabulary is refused instead of giving wrong statistics",
            stacklevel=3,
        )
        return
    # A padded embedding matrix (more logits than tokenizer ids) is only accepted when the tokenizer
    # itself is given and checked below; the model alone must match the index's vocabulary exactly.
    if model_vocab_size is not None and (int(model_vocab_size) < index_vs or
                                         (tokenizer is None and int(model_vocab_size) != index_vs)):
        raise TokenizerMismatchError(
            f"the model has {model_vocab_size} logits but the index's tokenizer has {index_vs} ids: "
            "this index was built with another tokenizer; rebuild it with the model's tokenizer "
            "(e.g. `ngram build --tokenizer <model dir>/tokenizer.json`)"
            + ("" if int(model_vocab_size) < index_vs else
               "; if the model's embedding matrix is padded, pass tokenizer= too so the tokenizer can be checked")
        )
    if tokenizer is None:
        if fingerprint is None:
            return
        tok_fps = {fingerprint}
    else:
        tok_vs = tokenizer_vocab_size(tokenizer)
        if tok_vs != index_vs:
            raise TokenizerMismatchError(
                f"tokenizer vocabulary size differs: the model's tokenizer has {tok_vs} ids, the index's "
                f"has {index_vs}; the n-gram counts would be about other tokens. Rebuild the index with "
                "the model's tokenizer (`ngram build --tokenizer ...`) or use an index built for this model"
            )
        tok_fps = {fingerprint} if fingerprint is not None else (
            content_fingerprint(tokenizer) | {tokenizer_fingerprint(tokenizer, tok_vs)})
    index_fp = getattr(source, "tokenizer_fingerprint", None)
    if index_fp is None:
        msg = (
            "the index records no tokenizer fingerprint (built without a manifest?): only the vocabulary "
            f"size ({index_vs}) was checked"
        )
        if strict:
            raise TokenizerMismatchError(msg + "; pass strict=False to accept it")
        warnings.warn(msg, stacklevel=2)
        return
    if str(index_fp) in tok_fps:
        return
    detail = ""
    if tokenizer is not None and callable(getattr(source, "tokenize", None)):
        try:
            diff = _probe_difference(source, tokenizer)
        except Exception as exc:  # a source that cannot tokenize: fall through to the refusal
            diff = f"(could not compare behaviour: {exc})"
        if diff is None:
            return  # same ids on every probe text: the same tokenizer, serialised differently
        detail = f" They encode text differently: {diff}."
    raise TokenizerMismatchError(
        f"tokenizer fingerprint differs: index {index_fp!r}, model {sorted(tok_fps)[0]!r} (both have "
        f"{index_vs} ids).{detail} The n-gram statistics would not describe the model's tokens; "
        "rebuild the index with the model's tokenizer"
    )
