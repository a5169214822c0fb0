"""tiktoken ranks files (``*.tiktoken``) with a pre-tokenizer regex, and GPT-2's fast encoder."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine.errors import InvalidQueryError, TokenizerError
from engine.tokenizers.base import EOS_CANDIDATES, SPEC_HELP, Tokenizer, clean_text

__all__ = ["TIKTOKEN_KNOWN", "TIKTOKEN_PATTERNS", "TiktokenTokenizer"]

#: Pre-tokenizer regexes for tiktoken ranks files, by preset name.
TIKTOKEN_PATTERNS: dict[str, str] = {
    # GPT-2 / r50k: contractions, optional-space letter runs, digit runs, other symbols, whitespace.
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
}


#: Special tokens that go with a known ranks file (by file stem).
TIKTOKEN_KNOWN = {
    "gpt2": ("gpt2", {"<|endoftext|>": 50256}, 50256),
    "r50k_base": ("gpt2", {"<|endoftext|>": 50256}, 50256),
}


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
        raise TokenizerError(f"cannot read tiktoken ranks {path}: {exc}; {SPEC_HELP}") from exc
    except ValueError as exc:
        raise TokenizerError(
            f"{path}:{lineno}: not a tiktoken ranks file (expected 'BASE64TOKEN RANK' per line); {SPEC_HELP}"
        ) from exc
    if not ranks:
        raise TokenizerError(f"{path}: empty tiktoken ranks file; {SPEC_HELP}")
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
            raise TokenizerError(f"{self.path}: tiktoken rejected the ranks/pattern ({exc}); {SPEC_HELP}") from exc
        self.vocab_size = max([*self._ranks.values(), *self.special_tokens.values()]) + 1
        if eos_token_id is None and self.special_tokens:
            for cand in EOS_CANDIDATES:
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
            text = clean_text(text)
        if self._to_buffer is None:  # pragma: no cover
            return np.array(self._enc.encode_ordinary(text), dtype=np.uint32)
        if self._cuts and _CUT not in text:
            cut = _cut_space_runs(text)
            ids = np.frombuffer(self._cut_encoder()(cut, _CUT_SET), dtype=np.uint32)
            return ids if cut is text else ids[ids != _CUT_ID]
        return np.frombuffer(self._to_buffer(text, set()), dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        out = self._enc.encode_ordinary_batch([clean_text(t) for t in texts])
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

    @classmethod
    def from_spec(cls, spec: dict) -> "TiktokenTokenizer":
        return cls(spec["ranks"], pattern=spec["pattern"], special_tokens=spec.get("special_tokens"),
                   eos_token_id=spec.get("eos_token_id"), name=spec.get("name"))

    def _save_files(self, directory: Path) -> dict:
        target = directory / self.path.name
        if target.resolve() != self.path:
            shutil.copyfile(self.path, target)
        spec = {"ranks": target.name, **self._spec_common()}
        spec.pop("name", None)
        spec.pop("eos_token_id", None)
        return spec


