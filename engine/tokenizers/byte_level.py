"""The byte-level tokenizer: the UTF-8 bytes of a text are its ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.tokenizers.base import Tokenizer, clean_text

__all__ = ["BytesTokenizer"]


class BytesTokenizer(Tokenizer):
    """UTF-8 bytes as ids (0..255; 0xff never occurs and is the u8 document separator)."""

    kind = "bytes"
    threads_parallel = True  # its work is one memory copy: threads cost nothing, processes do
    vocab_size = 256
    eos_token_id = None

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(clean_text(text).encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def encode_serial(self, text: str) -> np.ndarray:
        return np.frombuffer(clean_text(text).encode("utf-8"), dtype=np.uint8)

    def _decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([self._check_id(token_id)])

    def _fingerprint_parts(self) -> list[bytes]:
        return [b"utf-8"]

    def to_spec(self) -> dict:
        return {"kind": "bytes"}

    @classmethod
    def from_spec(cls, spec: dict) -> "BytesTokenizer":
        return cls()

    def _save_files(self, directory: Path) -> dict:
        return {}


