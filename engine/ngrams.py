"""Frequent n-grams of a whole index, exact, streamed to disk; SCONE f-gram vocabularies.

``frequent_ngrams(index, n_min, n_max, min_count=C)`` lists every n-gram of n_min..n_max tokens
whose count over *all* shards is at least C; ``top_k=K`` lists the K most frequent instead (with
``min_count`` as a floor). No n-gram crosses a document separator. Rows come sorted by count
descending, then by token ids (a prefix before its extensions): that order is the f-gram id
order of a SCONE vocabulary.

How (see engine.kernels.ngrams for the walk itself):

1. The walk runs over the n-gram trie shared by all shards, with the threshold applied to the
   total count, so an n-gram spread thinly over many shards is still found; children are found
   by sampling each shard at stride ceil(C / shards) (pigeonhole) and then counted exactly in
   every shard. Rows come out in token order and go straight to two temporary files
   (fixed-width token rows and counts) a chunk at a time; nothing holds all of them in memory.
2. ``top_k`` needs the threshold C* = the K-th largest count. Each pass at a guessed threshold
   also yields the exact histogram of counts above it; too few rows, and the next guess is
   extrapolated from that histogram (counts follow a power law); enough rows, and C* is read off
   the histogram and the same pass's rows are kept. A pass that would produce far more rows than
   needed stops early and the guess is raised.
3. A stable counting sort by count (one pass over the counts file, writing a permutation into a
   memory-mapped file) gives the final order, since rows are already in token order; then the
   table file (engine.storage.ngram_table) is written member by member from the permutation.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm
from engine.kernels import ngrams as kernels_ngrams
from engine.errors import InvalidQueryError
from engine.kernels.suffix import tokens_to_keys
from engine.storage.ngram_table import NgramTable, NgramTableWriter

MAX_N = 64
PAD = np.uint32(0xFFFFFFFF)
DEFAULT_CHUNK_ROWS = 1 << 20


def positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidQueryError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def parse_n_range(spec) -> tuple[int, int]:
    """"2-5" / "3" / (2, 5) / 3 -> (n_min, n_max)."""
    if isinstance(spec, str):
        parts = spec.replace(":", "-").split("-")
        try:
            values = [int(p) for p in parts if p.strip()]
        except ValueError:
            raise InvalidQueryError(f"n range {spec!r} must look like '2-5' or '3'") from None
        if len(values) == 1:
            return values[0], values[0]
        if len(values) == 2:
            return values[0], values[1]
        raise InvalidQueryError(f"n range {spec!r} must look like '2-5' or '3'")
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return int(spec[0]), int(spec[1])
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return int(spec), int(spec)
    raise InvalidQueryError(f"n range {spec!r} must look like '2-5', 3 or (2, 5)")


def check_n(n_min, n_max) -> tuple[int, int]:
    n_min = positive_int(n_min, "n_min")
    n_max = positive_int(n_max, "n_max")
    if n_min > n_max:
        raise InvalidQueryError(f"n_min ({n_min}) must not exceed n_max ({n_max})")
    if n_max > MAX_N:
        raise InvalidQueryError(f"n_max may be at most {MAX_N}")
    return n_min, n_max


# ---------------------------------------------------------------------------------------- roots
def _roots(index, threshold: int):
    """First tokens with total count >= threshold, in id order: (paths, depths, lo, hi, counts)."""
    tw = index.token_width
    sep_key = index.separator_id  # all ones: the same value as key and as id
    if tw in (1, 2):
        ftlo, fthi = index.first_token_ranges()
        totals = (fthi - ftlo).sum(axis=0)
        keys = np.flatnonzero(totals >= threshold).astype(np.int64)
        keys = keys[keys != sep_key]
        ids = tokens_to_keys(keys, tw)
        order = np.argsort(ids, kind="stable")
        keys = keys[order]
        lo = np.ascontiguousarray(ftlo[:, keys].T)
        hi = np.ascontiguousarray(fthi[:, keys].T)
        counts = totals[keys].astype(np.int64)
    else:
        lo_a = np.zeros(index.num_shards, dtype=np.int64)
        hi_a = np.array([s.num_positions for s in index.shards], dtype=np.int64)
        keys, counts, lo, hi = kernels_ngrams.expand_node(*index._search, sep_key,
                                                          lo_a, hi_a, 0, threshold)
    return _batch(keys[:, None], 1, lo, hi, counts)


def _batch(key_paths: np.ndarray, depth: int, lo, hi, counts):
    return {"depth": depth, "paths": key_paths, "lo": np.ascontiguousarray(lo, dtype=np.int64),
            "hi": np.ascontiguousarray(hi, dtype=np.int64), "counts": np.asarray(counts, dtype=np.int64)}


# ---------------------------------------------------------------------------------------- one pass
class _RowSink:
    """Appends (token rows, counts) to two temporary files and keeps the count histogram."""

    def __init__(self, directory: Path, n_max: int, token_width: int, store_rows: bool, max_rows: int | None):
        self.directory = directory
        self.n_max = n_max
        self.tw = token_width
        self.store_rows = store_rows
        self.max_rows = max_rows
        self.rows = 0
        self.hist_values = np.zeros(0, dtype=np.int64)
        self.hist_freqs = np.zeros(0, dtype=np.int64)
        self.rows_path = directory / "rows.u32"
        self.counts_path = directory / "counts.i64"
        self._rows_fh = open(self.rows_path, "wb") if store_rows else None
        self._counts_fh = open(self.counts_path, "wb") if store_rows else None

    def add(self, key_paths: np.ndarray, counts: np.ndarray) -> None:
        if len(counts) == 0:
            return
        values, freqs = np.unique(counts, return_counts=True)
        merged_v = np.concatenate([self.hist_values, values])
        merged_f = np.concatenate([self.hist_freqs, freqs])
        uniq, inverse = np.unique(merged_v, return_inverse=True)
        self.hist_values = uniq
        self.hist_freqs = np.bincount(inverse, weights=merged_f).astype(np.int64)
        self.rows += len(counts)
        if self.store_rows:
            ids = np.where(key_paths >= 0, tokens_to_keys(key_paths, self.tw), PAD).astype(np.uint32)
            self._rows_fh.write(np.ascontiguousarray(ids).tobytes())
            self._counts_fh.write(np.ascontiguousarray(counts, dtype=np.int64).tobytes())

    @property
    def full(self) -> bool:
        return self.max_rows is not None and self.rows > self.max_rows

    def close(self) -> None:
        for fh in (self._rows_fh, self._counts_fh):
            if fh is not None:
                fh.close()

    def rows_at_least(self, c: int) -> int:
        return int(self.hist_freqs[self.hist_values >= c].sum())


class _PassAborted(Exception):
    pass


def _run_pass(index, n_min: int, n_max: int, threshold: int, sink: _RowSink, chunk_rows: int,
              progress: bool, desc: str, check_alive: Callable[[], None] | None = None) -> None:
    """Walk every n-gram with count >= threshold into ``sink``; raise _PassAborted when it is full.
    ``check_alive`` is called after every chunk of rows (one kernel call)."""
    tw = index.token_width
    sep_key = index.separator_id
    out_paths = np.empty((chunk_rows, n_max), dtype=np.int64)
    out_counts = np.empty(chunk_rows, dtype=np.int64)
    roots = _roots(index, threshold)
    bar = tqdm(total=int(roots["counts"].sum()), desc=desc, unit="pos", unit_scale=True, disable=not progress,
               mininterval=1.0, dynamic_ncols=True)

    def run(batch, top_level: bool):
        depth = batch["depth"]
        n = len(batch["counts"])
        paths = np.full((n, n_max), -1, dtype=np.int64)
        paths[:, :depth] = batch["paths"]
        depths = np.full(n, depth, dtype=np.int64)
        i = 0
        while i < n:
            nxt, rows = kernels_ngrams.enumerate_frequent(
                *index._search, sep_key, paths, depths, batch["lo"], batch["hi"],
                batch["counts"], i, n_min, n_max, threshold, out_paths, out_counts, False)
            sink.add(out_paths[:rows], out_counts[:rows])
            if check_alive is not None:
                check_alive()
            if sink.full:
                raise _PassAborted()
            if top_level:
                bar.update(int(batch["counts"][i:nxt].sum()))
                bar.set_postfix(rows=sink.rows, refresh=False)
            if nxt > i:
                i = nxt
                continue
            # Root i's subtree does not fit in one chunk: emit it, then walk its children one by one.
            if n_min <= depth <= n_max:
                sink.add(paths[i:i + 1].copy(), batch["counts"][i:i + 1])
            keys, counts, lo, hi = kernels_ngrams.expand_node(
                *index._search, sep_key, batch["lo"][i], batch["hi"][i], depth * tw, threshold)
            child_paths = np.empty((len(keys), depth + 1), dtype=np.int64)
            child_paths[:, :depth] = batch["paths"][i]
            child_paths[:, depth] = keys
            run(_batch(child_paths, depth + 1, lo, hi, counts), False)
            if top_level:
                bar.update(int(batch["counts"][i]))
            i += 1

    try:
        run(roots, True)
    finally:
        bar.close()


# ---------------------------------------------------------------------------------------- ordering
def _final_order(sink: _RowSink, threshold: int, keep: int, directory: Path, chunk_rows: int,
                 check_alive: Callable[[], None] | None = None) -> np.ndarray:
    """Permutation (memory-mapped) of the first ``keep`` rows in (count desc, file order) order,
    over rows with count >= threshold: a stable counting sort by count."""
    values = sink.hist_values[sink.hist_values >= threshold][::-1]  # descending
    freqs = sink.hist_freqs[sink.hist_values >= threshold][::-1]
    starts = np.concatenate([[0], np.cumsum(freqs)[:-1]]).astype(np.int64)
    cursor = starts.copy()
    order = np.lib.format.open_memmap(directory / "order.npy", mode="w+", dtype=np.int64, shape=(keep,))
    counts_mm = np.memmap(sink.counts_path, dtype=np.int64, mode="r") if sink.rows else np.zeros(0, np.int64)
    neg_values = -values  # ascending, for searchsorted
    for a in range(0, sink.rows, chunk_rows):
        if check_alive is not None:
            check_alive()
        c = np.asarray(counts_mm[a:a + chunk_rows])
        idx = np.flatnonzero(c >= threshold)
        if len(idx) == 0:
            continue
        rank = np.searchsorted(neg_values, -c[idx])
        o = np.argsort(rank, kind="stable")
        rank_sorted = rank[o]
        first = np.flatnonzero(np.concatenate([[True], rank_sorted[1:] != rank_sorted[:-1]]))
        group_sizes = np.diff(np.concatenate([first, [len(o)]]))
        within = np.arange(len(o)) - np.repeat(first, group_sizes)
        dest = cursor[rank_sorted] + within
        cursor[rank_sorted[first]] += group_sizes
        ok = dest < keep
        order[dest[ok]] = a + idx[o][ok]
    order.flush()
    return order


def _write_table(sink: _RowSink, order: np.ndarray, out: Path, meta: dict, chunk_rows: int,
                 check_alive: Callable[[], None] | None = None) -> None:
    keep = len(order)
    check = check_alive if check_alive is not None else (lambda: None)
    rows_mm = (np.memmap(sink.rows_path, dtype=np.uint32, mode="r").reshape(-1, sink.n_max)
               if sink.rows else np.zeros((0, sink.n_max), np.uint32))
    counts_mm = np.memmap(sink.counts_path, dtype=np.int64, mode="r") if sink.rows else np.zeros(0, np.int64)
    with NgramTableWriter(out, keep, meta) as w:
        w.write_counts(np.zeros(0, dtype=np.int64))
        for a in range(0, keep, chunk_rows):
            check()
            w.write_counts(counts_mm[np.asarray(order[a:a + chunk_rows])])
        w.write_lengths(np.zeros(0, dtype=np.int64))
        for a in range(0, keep, chunk_rows):
            check()
            rows = rows_mm[np.asarray(order[a:a + chunk_rows])]
            w.write_lengths((rows != PAD).sum(axis=1))
        w.write_tokens(np.zeros(0, dtype=np.uint32))
        for a in range(0, keep, chunk_rows):
            check()
            rows = rows_mm[np.asarray(order[a:a + chunk_rows])]
            w.write_tokens(rows[rows != PAD])


# ---------------------------------------------------------------------------------------- public
def frequent_ngrams(index, n_min: int = 1, n_max: int | None = None, *, min_count: int | None = None,
                    top_k: int | None = None, out: str | os.PathLike | None = None, progress: bool = False,
                    chunk_rows: int = DEFAULT_CHUNK_ROWS, tmp_dir: str | os.PathLike | None = None,
                    kind: str = "frequent_ngrams", check_alive: Callable[[], None] | None = None) -> NgramTable:
    """Every n-gram (n_min <= n <= n_max) with count >= ``min_count``, or the ``top_k`` most frequent
    (among those with count >= ``min_count``, default 1), exact over all shards.

    Rows are sorted by count descending, then token ids; with ``top_k`` exactly min(top_k, #n-grams)
    rows are returned, ties at the cut broken by that order. With ``out`` the table is written
    there (see engine.storage.ngram_table for the format) and returned memory-mapped; without it the
    table is returned in memory. Memory stays bounded by ``chunk_rows`` rows plus the walk's stack;
    temporary files go to ``tmp_dir`` (default: next to ``out``, else the system temp dir).

    ``check_alive``: called between chunks of work (every ``chunk_rows`` rows walked, sorted or
    written); an exception it raises stops the computation (temporary files are removed) and
    propagates. A server passes one that raises at the call's deadline, when the client leaves or
    at shutdown, so that smaller ``chunk_rows`` means a prompter stop.
    """
    n_min, n_max = check_n(n_min, n_min if n_max is None else n_max)
    if min_count is None and top_k is None:
        raise InvalidQueryError("give min_count=C (every n-gram occurring at least C times) or top_k=K")
    floor = 1 if min_count is None else positive_int(min_count, "min_count")
    if top_k is not None:
        top_k = positive_int(top_k, "top_k")
    chunk_rows = positive_int(chunk_rows, "chunk_rows")
    started = time.time()
    out_path = Path(out) if out is not None else None
    base_tmp = Path(tmp_dir) if tmp_dir is not None else (out_path.parent if out_path is not None else None)
    if base_tmp is not None:
        base_tmp.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ngrams-", dir=base_tmp))
    try:
        passes = []
        if top_k is None:
            sink = _RowSink(work, n_max, index.token_width, True, None)
            try:
                _run_pass(index, n_min, n_max, floor, sink, chunk_rows, progress, f"n-grams >= {floor}",
                          check_alive)
            finally:
                sink.close()
            threshold = floor
            keep = sink.rows
            passes.append({"threshold": floor, "rows": sink.rows})
        else:
            sink, threshold, keep = _top_k_passes(index, n_min, n_max, floor, top_k, work, chunk_rows, progress,
                                                  passes, check_alive)
        meta = {
            "kind": kind, "n_min": n_min, "n_max": n_max, "min_count": floor, "threshold": threshold,
            "top_k": top_k, "num_tokens": index.num_tokens, "num_docs": index.num_docs,
            "token_width": index.token_width, "tokenizer_fingerprint": index.tokenizer_fingerprint,
            "index_paths": [str(p) for p in index.paths], "order": "count desc, then token ids",
            "passes": passes,
        }
        order = _final_order(sink, threshold, keep, work, chunk_rows, check_alive)
        target = out_path if out_path is not None else work / "result.npz"
        meta["seconds"] = round(time.time() - started, 3)
        _write_table(sink, order, target, meta, chunk_rows, check_alive)
        del order
        if out_path is not None:
            return NgramTable.open(target, mmap=True)
        return NgramTable.open(target, mmap=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _top_k_passes(index, n_min, n_max, floor, top_k, work, chunk_rows, progress, passes, check_alive=None):
    """Find C* (the top_k-th largest count, at least ``floor``) and keep the rows of a pass at or
    below it. Returns (sink, C*, rows to keep)."""
    max_rows = max(4 * top_k, top_k + 4 * chunk_rows)
    guess = max(floor, index.num_tokens // max(top_k, 1))
    too_high = None  # smallest threshold known to give fewer than top_k rows
    too_low = None  # largest threshold known to overflow max_rows
    while True:
        sink = _RowSink(work, n_max, index.token_width, True, max_rows)
        aborted = False
        try:
            _run_pass(index, n_min, n_max, guess, sink, chunk_rows, progress, f"top {top_k}: n-grams >= {guess}",
                      check_alive)
        except _PassAborted:
            aborted = True
        finally:
            sink.close()
        passes.append({"threshold": guess, "rows": sink.rows, "aborted": aborted})
        if aborted:
            too_low = guess
            guess = (guess + too_high) // 2 if too_high is not None else guess * 4
            if too_high is not None and guess <= too_low:
                guess = too_low + 1
            continue
        if sink.rows >= top_k or guess == floor:
            cum = np.cumsum(sink.hist_freqs[::-1])  # rows with count >= value, values descending
            values = sink.hist_values[::-1]
            if sink.rows >= top_k:
                threshold = int(values[np.searchsorted(cum, top_k)])
            else:
                threshold = guess
            keep = min(top_k, sink.rows_at_least(threshold))
            return sink, threshold, keep
        too_high = guess
        guess = _next_guess(sink, guess, top_k, floor, too_low)


def _next_guess(sink: _RowSink, guess: int, top_k: int, floor: int, too_low: int | None) -> int:
    """Extrapolate the threshold that yields top_k rows from the counts seen above ``guess``."""
    have = max(sink.rows, 1)
    half = sink.rows_at_least(2 * guess)
    ratio = have / half if half > 0 else 4.0  # rows gained per halving of the threshold
    ratio = min(max(ratio, 1.2), 16.0)
    halvings = math.log(top_k / have) / math.log(ratio) if have < top_k else 0.0
    new = int(guess / (2.0 ** halvings) * 0.8)
    new = min(new, guess - 1)
    new = max(new, guess // 64, floor)
    if too_low is not None:
        new = max(new, too_low + 1)
    return max(new, floor)


# ---------------------------------------------------------------------------------------- SCONE
@dataclass
class CoverageReport:
    """How much of a token sequence an f-gram vocabulary covers.

    ``matched_share``: share of positions where some f-gram ends (the position's longest ending
    f-gram is in the vocabulary); ``covered_share``: share of tokens inside at least one matched
    f-gram; ``length_counts``: positions by the length of their longest ending f-gram (0 = none).
    """

    num_tokens: int
    matched_positions: int
    matched_share: float
    covered_share: float
    length_counts: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"num_tokens": self.num_tokens, "matched_positions": self.matched_positions,
                "matched_share": self.matched_share, "covered_share": self.covered_share,
                "length_counts": {str(k): v for k, v in self.length_counts.items()}}


class FgramVocab:
    """A SCONE f-gram vocabulary: f-gram i is row i of an NgramTable (count descending, then ids),
    with a causal matcher from positions to the id of the longest f-gram ending there."""

    def __init__(self, table: NgramTable):
        self.table = table
        self._matcher = None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[int, ...]:
        return self.table[i]

    @property
    def counts(self) -> np.ndarray:
        return self.table.counts

    @property
    def max_len(self) -> int:
        return int(self.table.lengths.max()) if len(self.table) else 0

    @classmethod
    def open(cls, path: str | os.PathLike, mmap: bool = False) -> "FgramVocab":
        return cls(NgramTable.open(path, mmap=mmap))

    def save(self, path: str | os.PathLike) -> Path:
        return self.table.save(path)

    def _prepared(self):
        if self._matcher is None:
            padded = self.table.padded(-1)
            lengths = self.table.lengths.astype(np.int64)
            rev = np.full_like(padded, -1)
            for n in np.unique(lengths):
                rows = np.flatnonzero(lengths == n)
                rev[rows, :n] = padded[rows, :n][:, ::-1]
            order = np.lexsort(rev.T[::-1]) if len(rev) else np.zeros(0, dtype=np.int64)
            self._matcher = (np.ascontiguousarray(rev[order]), np.ascontiguousarray(lengths[order]),
                             np.ascontiguousarray(order.astype(np.int64)))
        return self._matcher

    def longest(self, tokens) -> tuple[np.ndarray, np.ndarray]:
        """(ids, lengths): for each position, the id of the longest f-gram ending there (-1 if
        none) and its length (0 if none). Looks only at tokens up to the position (causal)."""
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        rev, rev_len, rev_id = self._prepared()
        out_id = np.empty(len(ids), dtype=np.int64)
        out_len = np.empty(len(ids), dtype=np.int64)
        if len(rev):
            kernels_ngrams.fgram_longest(rev, rev_len, rev_id, ids, out_id, out_len)
        else:
            out_id[:] = -1
            out_len[:] = 0
        return out_id, out_len

    def coverage(self, tokens) -> CoverageReport:
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        _, lengths = self.longest(ids)
        n = len(ids)
        covered = np.zeros(n + 1, dtype=np.int64)
        ends = np.flatnonzero(lengths > 0)
        np.add.at(covered, ends - lengths[ends] + 1, 1)
        np.add.at(covered, ends + 1, -1)
        covered_tokens = int((np.cumsum(covered[:n]) > 0).sum())
        values, freqs = np.unique(lengths, return_counts=True)
        matched = int((lengths > 0).sum())
        return CoverageReport(n, matched, matched / n if n else 0.0, covered_tokens / n if n else 0.0,
                              {int(v): int(f) for v, f in zip(values, freqs)})


def build_fgram_vocab(index, max_len: int = 3, size: int = 1 << 20, min_count: int = 2, *,
                      out: str | os.PathLike | None = None, progress: bool = False, **kwargs) -> FgramVocab:
    """The ``size`` most frequent n-grams of 2..max_len tokens with count >= ``min_count``, ranked
    together (count descending, then token ids): f-gram id = rank."""
    max_len = positive_int(max_len, "max_len", 2)
    table = frequent_ngrams(index, 2, max_len, min_count=min_count, top_k=positive_int(size, "size"), out=out,
                            progress=progress, kind="fgram_vocab", **kwargs)
    return FgramVocab(table)


def ngram_table_text(table: NgramTable, decode, limit: int | None = None) -> str:
    return "\n".join(table.text_rows(decode, limit))


__all__ = ["CoverageReport", "FgramVocab", "NgramTable", "build_fgram_vocab", "frequent_ngrams", "parse_n_range",
           "ngram_table_text"]
