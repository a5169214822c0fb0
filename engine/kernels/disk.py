"""Searches for an index whose pages are on disk: every page a step needs is asked for before any
is touched, so the reads overlap instead of waiting for one another.

A search over memory-mapped files that are not in the page cache waits for a page fault at each of
its ~15 dependent reads (a sample block of the directory, a suffix-array page, then a token page per
bisection step), one after another, at both ends of the answer and in every shard: about 60-90 us
each on a cloud SSD. The CPU's prefetch instructions do not help there (they are dropped on a page
that is not mapped in). Here the two ends of every shard are searched in lockstep, and each step
first hands the kernel the pages of all of them at once with madvise(MADV_WILLNEED), which queues
the reads and returns, then compares. A step then costs about one disk latency whatever the number
of searches, up to what the disk overlaps, and reads the same pages as the in-memory search.

The answers equal engine.kernels.suffix's searches (the same directory and comparisons); only the
order in which pages are read differs. In memory these kernels are slower (a system call per page),
so callers use them only while queries take major page faults (engine.index).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

import engine.kernels.cache  # noqa: F401  (before any cached kernel: one stamp for all kernel modules)
from engine.kernels.suffix import (
    D_FIRST, D_NFIRST, D_SAMPLES, D_SHIFT, PREFETCH_RANKS, SAMPLE_WORDS, bisect_samples, compare_at,
    narrow_by_samples, piece_sample, pointer_at, query_sample_range, sample_block, shard_views, walk_piece,
)

PAGE = 4096
_MADV_WILLNEED = 3
# Pivots per step over a range wider than PREFETCH_RANKS: a step cuts it to 1/(DISK_PIVOTS + 1) for
# two disk latencies (suffix-array pages, then token pages) and 2 * DISK_PIVOTS page reads. In
# memory (engine.kernels.suffix) more pivots pay, since misses are cheap and overlap freely; here
# each costs two page reads (bench_cold.py: 3 read fewer bytes than 7 for about the same time).
DISK_PIVOTS = 3


@intrinsic
def willneed(typingctx, arr, index, nbytes):
    """Ask the kernel to start reading the pages under arr[index] and the ``nbytes`` bytes from there
    (madvise MADV_WILLNEED: the reads are queued and the call returns; a hint without effect on
    results, whose errors, such as for memory not backed by a file, are ignored)."""
    sig = types.void(arr, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        address = cgutils.get_item_pointer(context, builder, array_type, array, [args[1]], wraparound=False)
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        byte_ptr = ir.IntType(8).as_pointer()
        start = builder.ptrtoint(address, i64)
        page = builder.and_(start, i64(~(PAGE - 1) & (2**64 - 1)))
        length = builder.sub(builder.add(start, args[2]), page)
        madvise = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [byte_ptr, i64, i32]),
                                                 "madvise")
        builder.call(madvise, [builder.inttoptr(page, byte_ptr), length, i32(_MADV_WILLNEED)])
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def _ask(arr, index, nbytes):
    """willneed for arr[index:index + nbytes] clipped to the array (nothing for an empty span)."""
    nbytes = min(nbytes, arr.shape[0] - index)
    if index >= 0 and nbytes > 0:
        willneed(arr, index, nbytes)


@njit(inline="always")
def _pivots(a, b):
    """(first pivot, step, count) of one step over [a, b): DISK_PIVOTS evenly spaced ranks of a wide
    range, the middle one of a window of PREFETCH_RANKS or fewer."""
    if b - a > PREFETCH_RANKS:
        step = (b - a) // (DISK_PIVOTS + 1)
        return a + step, step, DISK_PIVOTS
    return (a + b) >> 1, np.int64(1), 1


@njit(nogil=True, cache=True)
def find_ranges_on_disk(st, tw, keys, start, stop, lo_out, hi_out):
    """Each shard's range of keys[start:stop] (as suffix.find_ranges); returns the total count. The
    caller validates the ids (count_at's checks: kernels.suffix.ids_ok)."""
    n_shards = st.shape[0]
    # Searches 2s and 2s + 1 are shard s's first match and first rank past the matches, each a
    # half-open rank range [a, b) that holds its answer; skip tokens of every suffix there are known.
    a = np.zeros(2 * n_shards, dtype=np.int64)
    b = np.zeros(2 * n_shards, dtype=np.int64)
    skip = np.zeros(n_shards, dtype=np.int64)
    bounds = np.zeros((n_shards, 8), dtype=np.int64)  # per shard: lo, hi, i0, i1, two sample blocks
    low, high, exact = query_sample_range(keys, start, stop, tw)  # the same for every shard
    for s in range(n_shards):
        ds, sa, ps, dr = shard_views(st, s)
        lo = np.int64(0)
        hi = sa.shape[0] // ps
        if start < stop and dr[D_NFIRST] > 0:
            k = dr[D_FIRST] + 2 * keys[start]
            lo = dr[k]
            hi = dr[k + 1]
            skip[s] = 1
        a[2 * s] = lo
        a[2 * s + 1] = hi
        b[2 * s] = lo
        b[2 * s + 1] = hi  # empty searches: the answer is [lo, hi) unless the samples are needed
        if stop - start <= skip[s] or lo >= hi:
            continue
        shift = dr[D_SHIFT]
        mask = (np.int64(1) << shift) - 1
        i0 = (lo + mask) >> shift
        i1 = (hi + mask) >> shift
        la, lb = sample_block(dr, i0, i1, low, True)
        ha, hb = sample_block(dr, i0, i1, high, False)
        _ask(dr, dr[D_SAMPLES] + SAMPLE_WORDS * la, 8 * SAMPLE_WORDS * (lb - la))
        _ask(dr, dr[D_SAMPLES] + SAMPLE_WORDS * ha, 8 * SAMPLE_WORDS * (hb - ha))
        bounds[s, 0] = lo
        bounds[s, 1] = hi
        bounds[s, 2] = i0
        bounds[s, 3] = i1
        bounds[s, 4] = la
        bounds[s, 5] = lb
        bounds[s, 6] = ha
        bounds[s, 7] = hb
    for s in range(n_shards):
        lo, hi, i0, i1 = bounds[s, 0], bounds[s, 1], bounds[s, 2], bounds[s, 3]
        la, lb, ha, hb = bounds[s, 4], bounds[s, 5], bounds[s, 6], bounds[s, 7]
        if lo >= hi:
            continue
        ds, sa, ps, dr = shard_views(st, s)
        shift = dr[D_SHIFT]
        first_in = bisect_samples(dr, dr[D_SAMPLES], la, lb, low, True)
        # Samples below the low key are below the high one too, so starting at i0 gives the same
        # answer as starting at first_in, and both blocks can be asked for together.
        first_after = bisect_samples(dr, dr[D_SAMPLES], ha, hb, high, False)
        lo, hi = narrow_by_samples(lo, hi, i0, i1, first_in, first_after, shift)
        a[2 * s] = lo
        a[2 * s + 1] = lo
        b[2 * s] = hi
        b[2 * s + 1] = hi
        if exact and first_in < first_after:  # a sample matches: each end lies in its own window
            b[2 * s] = first_in << shift
            a[2 * s + 1] = ((first_after - 1) << shift) + 1
    _bisect_in_lockstep(st, tw, keys, start, stop, skip, a, b)
    total = np.int64(0)
    for s in range(n_shards):
        lo_out[s] = a[2 * s]
        hi_out[s] = a[2 * s + 1]
        total += a[2 * s + 1] - a[2 * s]
    return total


@njit(cache=True)
def _bisect_in_lockstep(st, tw, keys, start, stop, skip, a, b):
    """Narrow every search [a[q], b[q]) to its answer a[q]: the first rank whose suffix does not sort
    before keys[start:stop] (even q) or sorts after it (odd q: the matches end there). Each round
    asks for the suffix-array pages of every search's pivots, then for their token pages, then
    compares."""
    n_bytes = (stop - start) * tw
    active = True
    while active:
        active = False
        for q in range(a.shape[0]):
            if a[q] < b[q]:
                ds, sa, ps, dr = shard_views(st, q >> 1)
                first, step, n = _pivots(a[q], b[q])
                for i in range(n):
                    _ask(sa, (first + i * step) * ps, ps)
        for q in range(a.shape[0]):
            if a[q] < b[q]:
                ds, sa, ps, dr = shard_views(st, q >> 1)
                first, step, n = _pivots(a[q], b[q])
                skip_bytes = skip[q >> 1] * tw
                for i in range(n):
                    _ask(ds, pointer_at(sa, ps, first + i * step) + skip_bytes, n_bytes - skip_bytes)
        for q in range(a.shape[0]):
            if a[q] >= b[q]:
                continue
            ds, sa, ps, dr = shard_views(st, q >> 1)
            first, step, n = _pivots(a[q], b[q])
            strict = q & 1
            na = a[q]
            nb = b[q]
            for i in range(n):
                m = first + i * step
                c = compare_at(ds, sa, ps, tw, m, keys, start, stop, skip[q >> 1])
                if c < 0 or (c == 0 and strict):
                    na = m + 1
                else:
                    nb = m
                    break
            a[q] = na
            b[q] = nb
            active = active or na < nb


@njit(inline="always")
def _ask_rank(ds, sa, ps, tw, rank, depth, tokens):
    """willneed for the suffix-array entry of ``rank`` (``tokens`` False), or for the token at
    ``depth`` bytes into its suffix (True; the entry must be in memory by then)."""
    if tokens:
        _ask(ds, pointer_at(sa, ps, rank) + depth, tw)
    else:
        _ask(sa, rank * ps, ps)


@njit(inline="always")
def _ask_level(st, tw, shard, start, end, m, depth, unit, tokens):
    """willneed for every rank the pieces of one level read (see sample_next_keys_on_disk)."""
    for i in range(m):
        ds, sa, ps, dr = shard_views(st, shard[i])
        a = start[i]
        b = end[i]
        if b - a < 4 * unit:
            rank = a
            while rank < b:
                _ask_rank(ds, sa, ps, tw, piece_sample(rank, b, unit)[0], depth, tokens)
                rank += unit
        else:
            _ask_rank(ds, sa, ps, tw, a, depth, tokens)
            _ask_rank(ds, sa, ps, tw, b - 1, depth, tokens)


@njit(nogil=True, cache=True)
def sample_next_keys_on_disk(st, tw, lo_a, hi_a, depth, unit, out_keys, out_weights):
    """suffix.approx_next_keys (infini-gram's capped ntd walk; exact with ``unit`` 1) with its reads
    asked for a level at a time: every piece of a level has its suffix-array entries, then its
    tokens, requested together before any is read. The same (key, weight) pairs, in another order;
    the same contract (returns how many pairs there are, written while they fit)."""
    n = 0
    n_shards = st.shape[0]
    shard = np.empty(n_shards, dtype=np.int64)
    start = np.empty(n_shards, dtype=np.int64)
    end = np.empty(n_shards, dtype=np.int64)
    m = 0
    for s in range(n_shards):
        if hi_a[s] > lo_a[s]:
            shard[m] = s
            start[m] = lo_a[s]
            end[m] = hi_a[s]
            m += 1
    while m > 0:
        _ask_level(st, tw, shard, start, end, m, depth, unit, False)
        _ask_level(st, tw, shard, start, end, m, depth, unit, True)
        next_shard = np.empty(2 * m, dtype=np.int64)
        next_start = np.empty(2 * m, dtype=np.int64)
        next_end = np.empty(2 * m, dtype=np.int64)
        k = 0
        for i in range(m):
            ds, sa, ps, dr = shard_views(st, shard[i])
            a = start[i]
            b = end[i]
            n, split = walk_piece(ds, sa, ps, tw, a, b, depth, unit, out_keys, out_weights, n)
            if not split:
                continue
            mid = (a + b) >> 1
            next_shard[k] = shard[i]
            next_start[k] = a
            next_end[k] = mid
            next_shard[k + 1] = shard[i]
            next_start[k + 1] = mid
            next_end[k + 1] = b
            k += 2
        shard = next_shard
        start = next_start
        end = next_end
        m = k
    return n
