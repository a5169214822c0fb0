"""Hugging Face ``tokenizer.json`` files (the ``tokenizers`` library)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine.errors import TokenizerError
from engine.tokenizers.base import BYTE_FALLBACK, EOS_CANDIDATES, SPEC_HELP, Tokenizer, clean_text

__all__ = ["HuggingFaceTokenizer", "bytes_to_unicode"]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (ByteLevel vocab.json and merges.txt spell tokens with it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _byte_decoder() -> dict[str, int]:
    """Inverse of bytes_to_unicode, used to decode ByteLevel tokenizers' tokens."""
    return {ch: b for b, ch in bytes_to_unicode().items()}


_BYTE_DECODER: dict[str, int] | None = None


class HuggingFaceTokenizer(Tokenizer):
    kind = "huggingface"

    def __init__(self, path: str | os.PathLike, *, eos_token_id: int | None = None,
                 eos_token: str | None = None, parse_special: bool = False, name: str | None = None):
        from tokenizers import Tokenizer as HFTokenizer

        self.path = Path(path).resolve()
        try:
            self._tok = HFTokenizer.from_file(str(self.path))
        except Exception as exc:  # the Rust side raises plain Exception
            raise TokenizerError(f"{self.path}: not a valid Hugging Face tokenizer.json ({exc}); {SPEC_HELP}") from exc
        self.parse_special = bool(parse_special)
        # Special-token text in the corpus is encoded as plain text unless parse_special is set.
        self._tok.encode_special_tokens = not self.parse_special
        self.name = name
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.vocab_size = (max(vocab.values()) + 1) if vocab else 0
        if self.vocab_size == 0:
            raise TokenizerError(f"{self.path}: the tokenizer has an empty vocabulary; {SPEC_HELP}")
        self._added = {i: t.content for i, t in self._tok.get_added_tokens_decoder().items()}
        self._byte_level = any(
            comp is not None and b'"ByteLevel"' in comp.__getstate__()
            for comp in (self._tok.decoder, self._tok.pre_tokenizer)
        )
        if eos_token_id is None:
            eos_token_id = self._find_eos(eos_token)
        self.eos_token_id = None if eos_token_id is None else int(eos_token_id)

    def _find_eos(self, eos_token: str | None) -> int | None:
        if eos_token is None:
            config = self.path.parent / "tokenizer_config.json"
            if config.is_file():
                try:
                    eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
                except (OSError, ValueError):
                    eos = None
                if isinstance(eos, dict):
                    eos = eos.get("content")
                if isinstance(eos, str):
                    eos_token = eos
        candidates = [eos_token] if eos_token else list(EOS_CANDIDATES)
        for tok in candidates:
            tid = self._tok.token_to_id(tok)
            if tid is not None:
                return tid
        if eos_token:
            raise TokenizerError(f"{self.path}: eos_token {eos_token!r} is not in the vocabulary")
        return None

    def encode(self, text: str) -> np.ndarray:
        ids = self._tok.encode(clean_text(text), add_special_tokens=False).ids
        return np.array(ids, dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        texts = [clean_text(t) for t in texts]
        fast = getattr(self._tok, "encode_batch_fast", None) or self._tok.encode_batch
        return [np.array(e.ids, dtype=np.uint32) for e in fast(texts, add_special_tokens=False)]

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        global _BYTE_DECODER
        t = self._check_id(token_id)
        if t in self._added:
            return self._added[t].encode("utf-8")
        piece = self._tok.id_to_token(t)
        if piece is None:  # a hole in the id space
            return b""
        if self._byte_level:
            if _BYTE_DECODER is None:
                _BYTE_DECODER = _byte_decoder()
            try:
                return bytes(_BYTE_DECODER[ch] for ch in piece)
            except KeyError:
                return piece.encode("utf-8")
        m = BYTE_FALLBACK.match(piece)
        if m:
            return bytes([int(m.group(1), 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    def _fingerprint_parts(self) -> list[bytes]:
        try:
            obj = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TokenizerError(f"{self.path}: cannot read the tokenizer file for its fingerprint ({exc})") from exc
        # Padding and truncation are call-time settings (a tokenizer saved after `padding=True` keeps
        # them), not part of what ids text gets: nulled so they never change the fingerprint.
        # lm_integration.tokenizer_compat.content_fingerprint does the same.
        for setting in ("padding", "truncation"):
            if setting in obj:
                obj[setting] = None
        canon = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return [canon, json.dumps({"parse_special": self.parse_special}).encode()]

    def to_spec(self) -> dict:
        spec: dict[str, Any] = {"kind": self.kind, "path": str(self.path), "eos_token_id": self.eos_token_id}
        if self.parse_special:
            spec["parse_special"] = True
        if self.name:
            spec["name"] = self.name
        return spec

    @classmethod
    def from_spec(cls, spec: dict) -> "HuggingFaceTokenizer":
        return cls(spec["path"], eos_token_id=spec.get("eos_token_id"),
                   parse_special=spec.get("parse_special", False), name=spec.get("name"))

    def _save_files(self, directory: Path) -> dict:
        target = directory / "tokenizer.json"
        if target.resolve() != self.path:
            shutil.copyfile(self.path, target)
        spec: dict[str, Any] = {"path": "tokenizer.json"}
        if self.parse_special:
            spec["parse_special"] = True
        return spec


