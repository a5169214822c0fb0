"""f-gram vocabularies (SCONE) and a causal longest-f-gram matcher (numpy only).

An f-gram vocabulary is an ordered list of token n-grams (n >= 2); the i-th is f-gram id i. The
matcher gives, for every position t of a token sequence, the id of the longest f-gram that ends at
t (covers tokens t-n+1 .. t), or -1: it never looks at tokens after t.

File formats read by ``load_fgram_vocab`` (the frequent-n-grams work may add its own through
``register_fgram_loader``):

* ``.npz`` with ``tokens`` (int) and ``offsets`` (int, len S+1): f-gram i is
  tokens[offsets[i]:offsets[i+1]] (the PackedQueries layout); optional ``counts`` and ``meta``
  (a JSON string). This is the layout of engine/storage/ngram_table.py, so the f-gram vocabularies that
  ``ngram scone-vocab`` writes load directly;
* ``.jsonl``: one f-gram a line, either a list of ids or an object with ``tokens`` (and ``count``);
* ``.json``: a list of id lists, or an object with ``ngrams``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from lm_integration.errors import FgramVocabError

_MASK64 = (1 << 64) - 1


class FgramVocab:
    """An ordered, duplicate-free list of f-grams (token-id tuples of length >= 2)."""

    def __init__(self, ngrams: Iterable[Sequence[int]], counts: Sequence[int] | None = None):
        arrays = [np.asarray(g, dtype=np.int64).reshape(-1) for g in ngrams]
        for i, a in enumerate(arrays):
            if len(a) < 2:
                raise FgramVocabError(f"f-gram {i} has {len(a)} tokens; f-grams are n-grams with n >= 2")
            if (a < 0).any():
                raise FgramVocabError(f"f-gram {i} has a negative token id")
        seen: dict[tuple, int] = {}
        for i, a in enumerate(arrays):
            key = tuple(a.tolist())
            if key in seen:
                raise FgramVocabError(f"f-grams {seen[key]} and {i} are the same n-gram {key}")
            seen[key] = i
        self.offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        if arrays:
            self.offsets[1:] = np.cumsum([len(a) for a in arrays])
        self.tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        self.counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self.meta: dict = {}  # what the file says about itself (e.g. tokenizer_fingerprint), if anything
        if self.counts is not None and len(self.counts) != len(arrays):
            raise FgramVocabError(f"{len(self.counts)} counts for {len(arrays)} f-grams")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def max_len(self) -> int:
        return int(self.lengths.max()) if len(self) else 0

    def padded(self, pad: int = -1) -> np.ndarray:
        """(S, max_len) array of f-gram tokens, right-padded with ``pad``."""
        out = np.full((len(self), max(self.max_len, 1)), pad, dtype=np.int64)
        for i in range(len(self)):
            g = self[i]
            out[i, : len(g)] = g
        return out

    def save(self, path) -> None:
        """Write the .npz format."""
        arrays = {"tokens": self.tokens, "offsets": self.offsets}
        if self.counts is not None:
            arrays["counts"] = self.counts
        with open(path, "wb") as f:
            np.savez(f, **arrays)


_LOADERS: list[tuple[Callable[[Path], bool], Callable[[Path], FgramVocab]]] = []


def register_fgram_loader(accepts: Callable[[Path], bool], load: Callable[[Path], FgramVocab]) -> None:
    """Teach load_fgram_vocab another file format (tried before the built-in ones)."""
    _LOADERS.insert(0, (accepts, load))


def load_fgram_vocab(path) -> FgramVocab:
    path = Path(path)
    for accepts, load in _LOADERS:
        if accepts(path):
            return load(path)
    if not path.exists():
        raise FgramVocabError(f"no f-gram vocabulary at {path}")
    name = path.name
    if name.endswith(".npz"):
        with np.load(path) as z:
            if "tokens" not in z or "offsets" not in z:
                raise FgramVocabError(f"{path}: an .npz f-gram vocabulary needs arrays 'tokens' and 'offsets'")
            tokens, offsets = z["tokens"].astype(np.int64), z["offsets"].astype(np.int64)
            counts = z["counts"] if "counts" in z else None
            meta = json.loads(str(z["meta"][()])) if "meta" in z else {}
        if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(tokens) or (np.diff(offsets) < 0).any():
            raise FgramVocabError(f"{path}: offsets must start at 0, not decrease and end at len(tokens)")
        vocab = FgramVocab((tokens[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)), counts)
        vocab.meta = meta if isinstance(meta, dict) else {}
        return vocab
    if name.endswith(".jsonl"):
        grams, counts = [], []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            obj = json.loads(line)
            if isinstance(obj, dict):
                grams.append(obj["tokens"])
                counts.append(obj.get("count"))
            else:
                grams.append(obj)
                counts.append(None)
        return FgramVocab(grams, None if any(c is None for c in counts) else counts)
    if name.endswith(".json"):
        obj = json.loads(path.read_text())
        grams = obj["ngrams"] if isinstance(obj, dict) else obj
        return FgramVocab(grams)
    raise FgramVocabError(f"{path}: unknown f-gram vocabulary format (expected .npz, .jsonl or .json)")


def _window_hashes(x: np.ndarray, n: int, mult: np.uint64) -> np.ndarray:
    """Polynomial hash (mod 2^64) of every length-n window along the last axis."""
    w = np.lib.stride_tricks.sliding_window_view(x, n, axis=-1).astype(np.uint64)
    h = np.zeros(w.shape[:-1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * mult + w[..., j] + np.uint64(1)
    return h


class CausalFgramMatcher:
    """For each position, the id of the longest f-gram ending there (or -1). Exact: hashes find
    candidates, a token-by-token comparison confirms them."""

    def __init__(self, vocab: FgramVocab | Iterable[Sequence[int]], seed: int = 0):
        self.vocab = vocab if isinstance(vocab, FgramVocab) else FgramVocab(vocab)
        self._padded = self.vocab.padded()
        lengths = self.vocab.lengths
        self.lengths_present = sorted(set(int(n) for n in lengths))
        rng = np.random.default_rng(seed)
        for _attempt in range(8):
            mult = np.uint64(int(rng.integers(1 << 40, 1 << 62)) | 1)
            tables = {}
            ok = True
            for n in self.lengths_present:
                ids = np.flatnonzero(lengths == n)
                h = _window_hashes(self._padded[ids, :n], n, mult)[:, 0]
                order = np.argsort(h, kind="stable")
                hs = h[order]
                if len(hs) > 1 and (hs[1:] == hs[:-1]).any():  # two f-grams share a hash: new multiplier
                    ok = False
                    break
                tables[n] = (hs, ids[order])
            if ok:
                break
        else:  # pragma: no cover - astronomically unlikely
            raise FgramVocabError("could not find a collision-free hash for this vocabulary")
        self._mult = mult
        self._tables = tables

    def __call__(self, ids, attention_mask=None, return_lengths: bool = False):
        """``ids``: (T,) or (B, T) integer array (numpy or torch). Returns int64 f-gram ids of the
        same shape (numpy), and the matched lengths (0 where none) when ``return_lengths``.
        Positions whose window reaches a masked (0) position of ``attention_mask`` do not match."""
        is_torch = hasattr(ids, "detach")
        x = ids.detach().cpu().numpy() if is_torch else np.asarray(ids)
        x = x.astype(np.int64, copy=False)
        squeeze = x.ndim == 1
        if squeeze:
            x = x[None, :]
        B, T = x.shape
        out = np.full((B, T), -1, dtype=np.int64)
        lens = np.zeros((B, T), dtype=np.int64)
        if attention_mask is not None:
            m = attention_mask.detach().cpu().numpy() if hasattr(attention_mask, "detach") else np.asarray(attention_mask)
            bad = np.concatenate([np.zeros((B, 1), np.int64), np.cumsum(m.reshape(B, T) == 0, axis=1)], axis=1)
        for n in self.lengths_present:  # ascending: longer matches overwrite shorter ones
            if T < n:
                break
            hs, hid = self._tables[n]
            h = _window_hashes(x, n, self._mult)  # (B, T-n+1); window s ends at s+n-1
            pos = np.searchsorted(hs, h)
            pos_c = np.minimum(pos, len(hs) - 1)
            cand = (pos < len(hs)) & (hs[pos_c] == h)
            if not cand.any():
                continue
            bi, si = np.nonzero(cand)
            fid = hid[pos_c[bi, si]]
            win = np.lib.stride_tricks.sliding_window_view(x, n, axis=-1)[bi, si]
            exact = (win == self._padded[fid, :n]).all(axis=1)
            if attention_mask is not None:
                exact &= (bad[bi, si + n] - bad[bi, si]) == 0
            bi, si, fid = bi[exact], si[exact], fid[exact]
            out[bi, si + n - 1] = fid
            lens[bi, si + n - 1] = n
        if squeeze:
            out, lens = out[0], lens[0]
        return (out, lens) if return_lengths else out


def brute_force_match(vocab: FgramVocab | Iterable[Sequence[int]], seq: Sequence[int]) -> list[int]:
    """The obvious O(T * max_len) matcher, for tests."""
    v = vocab if isinstance(vocab, FgramVocab) else FgramVocab(vocab)
    table = {tuple(v[i].tolist()): i for i in range(len(v))}
    seq = [int(t) for t in seq]
    out = []
    for t in range(len(seq)):
        best = -1
        for n in range(min(v.max_len, t + 1), 1, -1):
            g = tuple(seq[t - n + 1 : t + 1])
            if g in table:
                best = table[g]
                break
        out.append(best)
    return out
