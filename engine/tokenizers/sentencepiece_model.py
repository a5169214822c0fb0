"""SentencePiece models (``*.model``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine.errors import TokenizerError
from engine.tokenizers.base import BYTE_FALLBACK, SPEC_HELP, Tokenizer, clean_text

__all__ = ["SentencePieceTokenizer"]


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model: str | os.PathLike, *, eos_token_id: int | None = None, name: str | None = None):
        import sentencepiece as spm

        self.path = Path(model).resolve()
        self.name = name
        try:
            self._model_bytes = self.path.read_bytes()
            self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
        except OSError as exc:
            raise TokenizerError(f"cannot read SentencePiece model {self.path}: {exc}; {SPEC_HELP}") from exc
        except Exception as exc:
            raise TokenizerError(f"{self.path}: not a valid SentencePiece model ({exc}); {SPEC_HELP}") from exc
        self.vocab_size = int(self._sp.get_piece_size())
        if eos_token_id is None:
            eos = int(self._sp.eos_id())
            eos_token_id = eos if eos >= 0 else None
        self.eos_token_id = None if eos_token_id is None else int(eos_token_id)

    def encode(self, text: str) -> np.ndarray:
        return np.array(self._sp.encode(clean_text(text), out_type=int), dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = self._sp.encode([clean_text(t) for t in texts], out_type=int)
        return [np.array(ids, dtype=np.uint32) for ids in out]

    def _decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def token_bytes(self, token_id: int) -> bytes:
        t = self._check_id(token_id)
        piece = self._sp.id_to_piece(t)
        if self._sp.is_byte(t):
            m = BYTE_FALLBACK.match(piece)
            if m:
                return bytes([int(m.group(1), 16)])
        if self._sp.is_control(t) or self._sp.is_unknown(t):
            return piece.encode("utf-8")
        return piece.replace("\u2581", " ").encode("utf-8")

    def _fingerprint_parts(self) -> list[bytes]:
        return [self._sp.serialized_model_proto()]

    def to_spec(self) -> dict:
        spec: dict[str, Any] = {"kind": self.kind, "model": str(self.path), "eos_token_id": self.eos_token_id}
        if self.name:
            spec["name"] = self.name
        return spec

    @classmethod
    def from_spec(cls, spec: dict) -> "SentencePieceTokenizer":
        return cls(spec["model"], eos_token_id=spec.get("eos_token_id"), name=spec.get("name"))

    def _save_files(self, directory: Path) -> dict:
        target = directory / (self.path.name if self.path.suffix == ".model" else "tokenizer.model")
        if not target.exists() or target.resolve() != self.path:
            target.write_bytes(self._model_bytes)
        return {"model": target.name}


