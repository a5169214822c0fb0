"""The tokenizer interface every backend implements, and the helpers the backends share."""

from __future__ import annotations

import abc
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import InvalidQueryError, TokenizerError
from engine.format import sha256_parts

__all__ = ["BYTE_FALLBACK", "EOS_CANDIDATES", "SPEC_HELP", "Tokenizer", "clean_text", "token_width_for"]

#: What a tokenizer spec may be, appended to every error about one.
SPEC_HELP = (
    "pass 'bytes', a preset name (gpt2, llama3, mistral), a path to a Hugging Face tokenizer.json "
    "(or a directory holding one), a SentencePiece *.model, a *.tiktoken ranks file, or a dict spec "
    "such as {'kind': 'tiktoken', 'ranks': PATH, 'pattern': 'gpt2', 'special_tokens': {...}}"
)

#: Token texts taken as end-of-sequence when a tokenizer does not name its own.
EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")

#: A byte-fallback piece (``<0xE2>``) of SentencePiece-style vocabularies.
BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def token_width_for(vocab_size: "int | Tokenizer", *, byte_level: bool = False) -> int:
    """Bytes per stored token id for a vocabulary: 1, 2 or 4.

    The all-ones value of the width (255 / 65535 / 2**32-1) is the document separator, so it must not
    be a real id. The byte-level tokenizer uses u8 even with 256 ids because 0xff never occurs in
    UTF-8 (pass the tokenizer itself, or ``byte_level=True``). Otherwise: ids below 255 -> 1,
    ``vocab_size <= 65535`` -> 2, else 4.
    """
    if isinstance(vocab_size, Tokenizer):
        return vocab_size.token_width
    n = int(vocab_size)
    if n <= 0:
        raise TokenizerError(f"vocab_size must be positive, got {n}")
    if byte_level:
        if n > 256:
            raise TokenizerError(f"a byte-level vocabulary has at most 256 ids, got {n}")
        return 1
    if n <= 255:
        return 1
    if n <= 0xFFFF:
        return 2
    if n <= 0xFFFFFFFF:
        return 4
    raise TokenizerError(f"vocab_size {n} does not fit 32-bit token ids (the maximum is {0xFFFFFFFF})")


def clean_text(text: str) -> str:
    """Replace lone surrogates (possible in JSON input) so every backend can encode the text."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _display(b: bytes) -> str:
    """Readable form of a token's bytes: the text when valid UTF-8, invalid bytes escaped as \\xNN."""
    return b.decode("utf-8", errors="backslashreplace")


class Tokenizer(abc.ABC):
    """One tokenizer: encode/decode, display, fingerprint, and save as a self-contained spec."""

    kind: str = ""
    #: True when :meth:`encode_serial` releases the GIL for its work, so that threads of one process
    #: encode in parallel (the builder then tokenizes on threads instead of worker processes).
    threads_parallel: bool = False
    vocab_size: int = 0
    eos_token_id: int | None = None
    name: str | None = None  # preset name, when loaded from one

    # -- encoding ------------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, text: str) -> np.ndarray:
        """Token ids of TEXT as a 1-D uint32 array; no special tokens are added."""

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """:meth:`encode` for many texts (backends with a parallel batch path override this)."""
        return [self.encode(t) for t in texts]

    def encode_serial(self, text: str) -> np.ndarray:
        """The ids of :meth:`encode` computed on the calling thread alone, for callers that parallelize
        themselves (the builder's worker threads or processes). The array may be read-only and of any
        unsigned dtype wide enough for the vocabulary."""
        return self.encode(text)

    @abc.abstractmethod
    def _decode(self, ids: list[int]) -> str: ...

    def decode(self, ids) -> str:
        """Text of a sequence of ids (invalid UTF-8 is replaced by U+FFFD)."""
        return self._decode(self._check_ids(ids))

    @abc.abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes one token stands for (special tokens: their text)."""

    def token_str(self, token_id: int) -> str:
        """Readable display form of one token: ``'Ġthe'`` -> ``' the'``, invalid UTF-8 -> ``'\\xe2'``."""
        return _display(self.token_bytes(self._check_id(token_id)))

    # -- identity ------------------------------------------------------------------------------
    @abc.abstractmethod
    def _fingerprint_parts(self) -> list[bytes]: ...

    def fingerprint(self) -> str:
        """sha256 hex over the kind and the canonical content; independent of where files live."""
        fp = getattr(self, "_fp", None)
        if fp is None:
            fp = sha256_parts(self.kind.encode(), *self._fingerprint_parts())
            self._fp = fp
        return fp

    @abc.abstractmethod
    def to_spec(self) -> dict:
        """A dict spec with absolute paths that :func:`load_tokenizer` turns back into this tokenizer."""

    @abc.abstractmethod
    def _save_files(self, directory: Path) -> dict: ...

    def save(self, directory: str | os.PathLike) -> dict:
        """Copy this tokenizer's files into DIRECTORY; return a JSON-serialisable spec whose paths are
        relative to it (load with ``load_tokenizer(spec, base_dir=directory)``). The spec records the
        fingerprint, vocab size and EOS id; loading checks the fingerprint."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        spec = {"kind": self.kind, **self._save_files(directory)}
        if self.name:
            spec["name"] = self.name
        spec["vocab_size"] = self.vocab_size
        spec["eos_token_id"] = self.eos_token_id
        spec["fingerprint"] = self.fingerprint()
        return spec

    # -- helpers -------------------------------------------------------------------------------
    @property
    def token_width(self) -> int:
        """Bytes per stored id in an index (1, 2 or 4)."""
        return token_width_for(self.vocab_size, byte_level=self.kind == "bytes")

    def _check_id(self, token_id: int) -> int:
        try:
            t = int(token_id)
        except (TypeError, ValueError):
            raise InvalidQueryError(f"token id must be an integer, got {token_id!r}") from None
        if not 0 <= t < self.vocab_size:
            raise InvalidQueryError(
                f"token id {t} is outside the vocabulary [0, {self.vocab_size}) of this {self.kind} tokenizer"
            )
        return t

    def _check_ids(self, ids) -> list[int]:
        arr = np.asarray(ids)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise InvalidQueryError(f"decode takes a 1-D sequence of ids, got shape {arr.shape}")
        if arr.size == 0:
            return []
        if arr.dtype.kind not in "iu":
            raise InvalidQueryError(f"decode takes integer ids, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise InvalidQueryError(
                f"token id {bad} is outside the vocabulary [0, {self.vocab_size}) of this {self.kind} tokenizer"
            )
        return arr.astype(np.int64).tolist()

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: dict) -> "Tokenizer":
        """This kind of tokenizer from the dict :meth:`to_spec` returns (absolute paths)."""

    def __reduce__(self):
        return (type(self).from_spec, (self.to_spec(),))

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<{type(self).__name__}{label} vocab_size={self.vocab_size} eos={self.eos_token_id}>"


