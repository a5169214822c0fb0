"""numba kernels for longest matches per position, attribution and CNF document search
(same conventions as engine.kernels.suffix: keys, per-shard half-open ranges, shard tables).
"""

from __future__ import annotations

import numpy as np
from numba import njit
import engine.kernels.cache  # noqa: F401  (before any cached kernel: one stamp for all kernel modules)

from engine.kernels.suffix import token_key, narrow_range, shard_positions, pointer_at, shard_ranges, shard_views, longest_suffix


@njit(inline="always")
def _narrow_all(st, tw, lo_a, hi_a, depth, key, lo_out, hi_out):
    total = np.int64(0)
    for s in range(st.shape[0]):
        if hi_a[s] > lo_a[s]:
            ds, sa, ps, _ = shard_views(st, s)
            lo, hi = narrow_range(ds, sa, ps, tw, lo_a[s], hi_a[s], depth, key)
        else:
            lo, hi = lo_a[s], lo_a[s]
        lo_out[s] = lo
        hi_out[s] = hi
        total += hi - lo
    return total


@njit(nogil=True, cache=True)
def longest_matches(st, tw, keys, max_len, j0, j1, out_len, out_count, out_lo,
                    out_hi, prompt_count, cont_count, suffix_len):
    """For every position j in [j0, j1) of ``keys``: the longest span ending at j that occurs
    (out_len, its count in out_count, its ranges in out_lo/out_hi rows), and the infini-gram terms
    of P(keys[j] | keys[:j]): the count of the longest occurring suffix of keys[:j] (prompt_count),
    of that suffix followed by keys[j] (cont_count), and its length (suffix_len).

    One left-to-right pass keeps the ranges of the current longest match. Extending it by the next
    token is one narrowing step; only when that fails is the next match searched for, among the
    suffixes of the failed span (counts shrink as a span grows, so an exponential then binary
    search over the length finds it). ``max_len`` caps the match length. A pass starting at
    j0 > 0 first finds the match ending at j0 - 1 the same way, so chunks of a text can run in
    parallel and agree with one pass over all of it.
    """
    n_shards = st.shape[0]
    lo = np.zeros(n_shards, dtype=np.int64)
    # hi, then the ranges of the probe (nlo, nhi) and of the longest match so far (blo, bhi)
    ranges = np.empty((5, n_shards), dtype=np.int64)
    hi, nlo, nhi, blo, bhi = ranges[0], ranges[1], ranges[2], ranges[3], ranges[4]
    total = np.int64(0)
    for s in range(n_shards):
        hi[s] = shard_positions(st, s)
        total += hi[s]
    length = 0
    count = total
    if j0 > 0:
        length = longest_suffix(st, tw, keys[:j0], max_len)
        if length > 0:
            count = shard_ranges(st, tw, keys, j0 - length, j0, lo, hi)
    for j in range(j0, j1):
        prompt_count[j] = count
        suffix_len[j] = length
        if length == 0:
            c = shard_ranges(st, tw, keys, j, j + 1, nlo, nhi)
        else:
            c = _narrow_all(st, tw, lo, hi, length * tw, keys[j], nlo, nhi)
        cont_count[j] = c
        if c > 0 and length < max_len:
            length += 1
            count = c
            for s in range(n_shards):
                lo[s] = nlo[s]
                hi[s] = nhi[s]
        elif c > 0:
            # At the cap: the last max_len tokens occur (inside the longer span); find their ranges.
            count = shard_ranges(st, tw, keys, j - length + 1, j + 1, lo, hi)
        else:
            # The span cannot grow: the longest occurring suffix of keys[j-length+1..j] is next.
            # Galloping (probe lengths 1, 2, 4, ... until one does not occur), then bisection between
            # the longest length that occurs (good) and the shortest that does not (bad).
            good = 0
            good_count = total
            bad = length + 1
            probe = 1
            galloping = True
            while True:
                if galloping and probe > length:
                    galloping = False
                if galloping:
                    mid = probe
                elif bad - good > 1:
                    mid = (good + bad) >> 1
                else:
                    break
                c = shard_ranges(st, tw, keys, j - mid + 1, j + 1, nlo, nhi)
                if c > 0:
                    good = mid
                    good_count = c
                    blo[:] = nlo
                    bhi[:] = nhi
                    probe *= 2
                else:
                    bad = mid
                    galloping = False
            length = good
            count = good_count
            if good == 0:
                for s in range(n_shards):
                    lo[s] = 0
                    hi[s] = shard_positions(st, s)
            else:
                for s in range(n_shards):
                    lo[s] = blo[s]
                    hi[s] = bhi[s]
        out_len[j] = length
        out_count[j] = count if length > 0 else 0
        for s in range(n_shards):
            out_lo[j, s] = lo[s]
            out_hi[j, s] = hi[s]


# ---------------------------------------------------------------------------------------- documents
@njit(inline="always")
def _doc_of(offsets, ptr):
    """Local document holding byte offset ``ptr``: the last document start <= ptr."""
    a = 0
    b = offsets.shape[0]
    while a < b:
        m = (a + b) >> 1
        if np.int64(offsets[m]) <= ptr:
            a = m + 1
        else:
            b = m
    return a - 1


@njit(nogil=True, cache=True)
def range_docs(sa, ps, offsets, lo, hi, step, out_doc, out_ptr):
    """Local document and pointer of ranks lo, lo + step, ... < hi of one shard; returns how many."""
    n = 0
    r = lo
    while r < hi:
        p = pointer_at(sa, ps, r)
        out_doc[n] = _doc_of(offsets, p)
        out_ptr[n] = p
        n += 1
        r += step
    return n


@njit(nogil=True, cache=True)
def docs_containing(ds, tw, offsets, docs, term_keys, term_offsets, out_ptr):
    """For each local document in ``docs``: the byte offset of the first position where any term
    (term i is term_keys[term_offsets[i]:term_offsets[i+1]]) starts, or -1. A plain scan."""
    n_docs = offsets.shape[0]
    n_terms = term_offsets.shape[0] - 1
    for i in range(docs.shape[0]):
        d = docs[i]
        # Clamped to the data: offsets come from a file that may be damaged.
        start = min(max(np.int64(offsets[d]), np.int64(0)), np.int64(ds.shape[0])) + tw
        end = np.int64(offsets[d + 1]) if d + 1 < n_docs else np.int64(ds.shape[0])
        end = min(max(end, np.int64(0)), np.int64(ds.shape[0]))
        found = np.int64(-1)
        p = start
        while p < end and found < 0:
            for t in range(n_terms):
                a = term_offsets[t]
                b = term_offsets[t + 1]
                if p + (b - a) * tw > end:
                    continue
                ok = True
                for k in range(b - a):
                    if token_key(ds, tw, p + k * tw) != term_keys[a + k]:
                        ok = False
                        break
                if ok:
                    found = p
                    break
            p += tw
        out_ptr[i] = found
