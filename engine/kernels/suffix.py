"""numba kernels: arrays and scalars in, arrays and scalars out; no files, no objects, no raising.

Conventions shared by every kernel:
- A shard is ``ds`` (uint8 bytes of tokenized.s) and ``sa`` (uint8 bytes of table.s, ``ps`` bytes
  per little-endian pointer). Kernels over a whole index take its shard table ``st`` (``shard_table``)
  and the token width ``tw``; the one-query kernels (count_at, prob_at) take an index handle
  (``index_handle``) holding both instead.
- Tokens are compared as *keys*: the big-endian value of the token's stored bytes, which orders
  exactly like memcmp on the little-endian bytes (the order the suffix array was sorted in).
  ``tokens_to_keys`` converts; the conversion is its own inverse. A position past the end of the
  data has key -1, so shorter suffixes sort first, as memcmp does.
- The separator (all ones) has the largest key, so "document ends here" sorts last in a range.
- Ranges are half-open ``[lo, hi)`` over suffix-array ranks, per shard.
- Each shard has a search directory ``dr`` (``build_directory``): the range of every first
  token (widths 1 and 2; for width 4 searches start from the whole shard) and the first 14 bytes
  of every 2**shift-th suffix, so a search reads the suffix array and the tokens (a cache miss
  each) only inside a window of 2**shift ranks at each end.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
import engine.kernels.cache  # noqa: F401  (before any cached kernel: one stamp for all kernel modules)


@intrinsic
def prefetch(typingctx, arr, index):
    """Start loading the cache line of arr[index] without waiting for it (a hint: no effect on
    results, and no fault for an index past the end)."""
    sig = types.void(arr, types.intp)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        address = cgutils.get_item_pointer(context, builder, array_type, array, [args[1]], wraparound=False)
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn_type = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, "llvm.prefetch.p0")
        # read, keep in all cache levels, data cache
        builder.call(fn, [builder.bitcast(address, byte_ptr), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _load_be64(typingctx, arr, pos):
    """The 8 bytes arr[pos:pos + 8] as a big-endian int64 (one unaligned load; the caller keeps
    pos + 8 within the array)."""
    sig = types.int64(arr, types.intp)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        array = context.make_array(array_type)(context, builder, args[0])
        address = cgutils.get_item_pointer(context, builder, array_type, array, [args[1]], wraparound=False)
        i64 = ir.IntType(64)
        value = builder.load(builder.bitcast(address, i64.as_pointer()), align=1)
        bswap = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64]), "llvm.bswap.i64")
        return builder.call(bswap, [value])

    return sig, codegen


_CLOCK_MONOTONIC = 1  # Linux


@intrinsic
def monotonic_ns(typingctx):
    """clock_gettime(CLOCK_MONOTONIC) in nanoseconds (the vDSO's, tens of ns; 0 where it fails)."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        timespec = ir.LiteralStructType([i64, i64])
        ts = cgutils.alloca_once(builder, timespec)
        builder.store(timespec([i64(0), i64(0)]), ts)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, timespec.as_pointer()]),
                                            "clock_gettime")
        builder.call(fn, [i32(_CLOCK_MONOTONIC), ts])
        seconds = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        nanos = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(seconds, i64(1_000_000_000)), nanos)

    return sig, codegen


def tokens_to_keys(tokens: np.ndarray, token_width: int) -> np.ndarray:
    """int64 keys (big-endian values) of int token ids; also maps keys back to token ids."""
    t = np.asarray(tokens, dtype=np.int64)
    if token_width == 1:
        return t.copy()
    if token_width == 2:
        return ((t & 0xFF) << 8) | ((t >> 8) & 0xFF)
    return ((t & 0xFF) << 24) | (((t >> 8) & 0xFF) << 16) | (((t >> 16) & 0xFF) << 8) | ((t >> 24) & 0xFF)


# ------------------------------------------------------------------------------ shard tables
# Kernels take an index's shards as one "shard table": an int64 array with a row per shard holding
# the addresses and lengths of its arrays, from which shard_views rebuilds them as views. Two reasons:
# numba unboxes each array argument of a call (about 60 ns apiece), and it compiles a kernel afresh
# for every distinct argument type, so tuples of arrays cost a specialization per shard count and
# per read-only flag. With a table every kernel has one type signature. The index object keeps the
# arrays alive.
ST_TOKENS, ST_TOKENS_LEN, ST_TABLE, ST_TABLE_LEN, ST_PTR_SIZE, ST_DIR, ST_DIR_LEN = range(7)


def shard_table(shards: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]) -> np.ndarray:
    """The shard table (layout above) of (tokenized, table, ptr_size, directory) per shard."""
    rows = []
    for ds, sa, ps, directory in shards:
        for a in (ds, sa, directory):
            if not a.flags.c_contiguous:
                raise ValueError("shard tables need contiguous arrays")
        rows.append([ds.ctypes.data, ds.shape[0], sa.ctypes.data, sa.shape[0], ps,
                     directory.ctypes.data, directory.shape[0]])
    # Left writable (kernels never write it): the tables that index handles rebuild from an address
    # are, and one array type keeps every kernel that takes a table to one compiled variant.
    return np.array(rows, dtype=np.int64).reshape(len(rows), ST_DIR_LEN + 1)


def _pointer_cast(element_type):
    """An intrinsic that turns an int64 address into a pointer to ``element_type``."""
    pointer_type = types.CPointer(element_type)

    @intrinsic
    def cast(typingctx, address):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(pointer_type))

        return pointer_type(types.int64), codegen

    return cast


_byte_pointer = _pointer_cast(types.uint8)
_int64_pointer = _pointer_cast(types.int64)


@njit(inline="always")
def shard_views(st, s):
    """(tokenized bytes, suffix-array bytes, pointer size, search directory) of shard ``s``."""
    ds = numba.carray(_byte_pointer(st[s, ST_TOKENS]), st[s, ST_TOKENS_LEN])
    sa = numba.carray(_byte_pointer(st[s, ST_TABLE]), st[s, ST_TABLE_LEN])
    dr = numba.carray(_int64_pointer(st[s, ST_DIR]), st[s, ST_DIR_LEN])
    return ds, sa, st[s, ST_PTR_SIZE], dr


@njit(inline="always")
def shard_positions(st, s):
    """How many suffixes shard ``s`` has."""
    return st[s, ST_TABLE_LEN] // st[s, ST_PTR_SIZE]


# ------------------------------------------------------------------------------ index handles
# count() and prob() run one short query per call, and numba's entry unboxes every argument on
# every call (an array about 60 ns, an int about 25 ns). Their kernels take the whole index as one
# int: the address of its "handle", an int64 array the index keeps alive, holding the shard
# table's address and shape, the token width, the vocabulary size, the separator, and after how many
# nanoseconds count_at reports a search as slow (0: never).
H_TABLE, H_SHARDS, H_TOKEN_WIDTH, H_VOCAB, H_SEPARATOR, H_SLOW_NS = range(6)


def index_handle(st: np.ndarray, tw: int, vocab_size: int, separator: int, slow_ns: int = 0) -> np.ndarray:
    """The handle (layout above) of shard table ``st``; pass ``handle.ctypes.data`` to kernels and
    keep both arrays alive while they run."""
    handle = np.array([st.ctypes.data, st.shape[0], tw, vocab_size, separator, slow_ns], dtype=np.int64)
    handle.flags.writeable = False
    return handle


def decode_count(n: int) -> tuple[int, bool]:
    """(count or -1, whether the search was slow) from count_at's result (or prob_at's first)."""
    return (-2 - n, True) if n < -1 else (n, False)


@njit(inline="always")
def open_handle(address):
    """(shard table, token width, vocabulary size, separator) of the handle at ``address``."""
    h = numba.carray(_int64_pointer(address), H_SLOW_NS + 1)
    st = numba.carray(_int64_pointer(h[H_TABLE]), (h[H_SHARDS], ST_DIR_LEN + 1))
    return st, h[H_TOKEN_WIDTH], h[H_VOCAB], h[H_SEPARATOR]


@njit(inline="always")
def _is_token_id(t, vocab_size, separator):
    """Whether ``t`` may appear in a query: inside the vocabulary and not the separator."""
    return 0 <= t < vocab_size and t != separator


@njit(nogil=True, cache=True)
def ids_ok(ids, vocab_size, separator):
    """True when every id is in 0..vocab_size-1 and none is the separator: the fast path of
    validation (the Python layer works out the error message only when this says False)."""
    for i in range(ids.shape[0]):
        if not _is_token_id(ids[i], vocab_size, separator):
            return False
    return True


@njit(inline="always")
def _swap_key(t, token_width):
    """One token id to its key, or a key back to its token id (the mapping is its own inverse)."""
    t = np.int64(t)
    if token_width == 1:
        return t
    if token_width == 2:
        return ((t & 0xFF) << 8) | ((t >> 8) & 0xFF)
    return ((t & 0xFF) << 24) | (((t >> 8) & 0xFF) << 16) | (((t >> 16) & 0xFF) << 8) | ((t >> 24) & 0xFF)


@njit(nogil=True, cache=True)
def ids_to_keys(ids, token_width):
    """tokens_to_keys compiled: one call instead of several numpy temporaries per (small) query."""
    out = np.empty(ids.shape[0], dtype=np.int64)
    for i in range(ids.shape[0]):
        out[i] = _swap_key(ids[i], token_width)
    return out


# Pointers are read masked to 62 bits: 8-byte pointers (allowed, see tests) of a damaged table
# could otherwise be negative, and a pointer plus any offset a kernel adds must stay non-negative
# for the end-of-data checks (token_key, compare_at, _sample_word) to keep reads inside the data.
_PTR_MASK = (np.int64(1) << 62) - 1


@njit(inline="always")
def pointer_at(sa, ps, rank):
    base = rank * ps
    value = np.int64(0)
    for k in range(ps):
        value |= np.int64(sa[base + k]) << (8 * k)
    return value & _PTR_MASK


@njit(inline="always")
def token_key(ds, tw, pos):
    if pos + tw > ds.shape[0]:
        return np.int64(-1)
    if tw == 1:
        return np.int64(ds[pos])
    if tw == 2:
        return (np.int64(ds[pos]) << 8) | np.int64(ds[pos + 1])
    return (
        (np.int64(ds[pos]) << 24) | (np.int64(ds[pos + 1]) << 16) | (np.int64(ds[pos + 2]) << 8) | np.int64(ds[pos + 3])
    )


@njit(inline="always")
def key_at_rank(ds, sa, ps, tw, rank, depth):
    return token_key(ds, tw, pointer_at(sa, ps, rank) + depth)


@njit(inline="always")
def lower_bound(ds, sa, ps, tw, lo, hi, depth, key):
    while lo < hi:
        mid = (lo + hi) >> 1
        if key_at_rank(ds, sa, ps, tw, mid, depth) < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(inline="always")
def _upper_bound(ds, sa, ps, tw, lo, hi, depth, key):
    while lo < hi:
        mid = (lo + hi) >> 1
        if key_at_rank(ds, sa, ps, tw, mid, depth) <= key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def narrow_range(ds, sa, ps, tw, lo, hi, depth, key):
    """The sub-range of [lo, hi) whose token at byte depth ``depth`` has ``key``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        k = key_at_rank(ds, sa, ps, tw, mid, depth)
        if k < key:
            lo = mid + 1
        elif k > key:
            hi = mid
        else:
            return (
                lower_bound(ds, sa, ps, tw, lo, mid, depth, key),
                _upper_bound(ds, sa, ps, tw, mid + 1, hi, depth, key),
            )
    return lo, lo


@njit(inline="always")
def compare_at(ds, sa, ps, tw, rank, keys, start, stop, skip):
    """Sign of the suffix at ``rank`` against keys[start:stop], from token ``skip`` on (the tokens
    before are known equal): -1 if it sorts before, 0 if it starts with the keys, 1 if after.

    Equal stretches are skipped 8 bytes at a time (suffixes next to each other in the suffix array
    often share long prefixes: copied code, boilerplate); the first differing token is then found
    token by token."""
    ptr = pointer_at(sa, ps, rank)
    per_word = 8 // tw
    j = start + skip
    pos = ptr + skip * tw
    end = ds.shape[0] - 8
    while j + per_word <= stop and pos <= end:
        q = np.int64(0)
        for t in range(per_word):
            q = (q << (8 * tw)) | keys[j + t]
        if _load_be64(ds, pos) != q:
            break
        j += per_word
        pos += 8
    for j in range(j, stop):
        k = token_key(ds, tw, ptr + (j - start) * tw)
        q = keys[j]
        if k != q:
            return -1 if k < q else 1
    return 0


# ------------------------------------------------------------------------------ search directory
# Each shard has a read-only int64 "search directory", built when the index opens
# (build_directory), that takes a search from the first token to a small window of ranks at each
# end of the answer while touching few cache lines:
#   header        D_SHIFT: log2 of the sample stride; D_FIRST / D_SAMPLES / D_TOP: where the parts
#                 below start; D_NFIRST / D_NSAMPLES: their lengths
#   first tokens  lo and hi rank of every first key k side by side (one cache line) at
#                 D_FIRST + 2k, D_FIRST + 2k + 1; empty for 4-byte tokens (too many keys)
#   samples       the sample key of every 2**shift-th suffix: three words, its bytes 0-6, 7-13 and
#                 14-20 (_sample_word), at D_SAMPLES + 3i .. D_SAMPLES + 3i + 2
#   top           every TOP_STRIDE-th sample key (three words each): small enough to stay in the CPU
#                 caches, it leads a search to one TOP_STRIDE-sample block of the samples
# A query of up to 21 bytes (10 tokens of 2 bytes) is then matched exactly by the samples alone,
# so its search reads the suffix array and the tokens only inside one window at each end.
D_SHIFT, D_FIRST, D_NFIRST, D_SAMPLES, D_NSAMPLES, D_TOP = range(6)
HEADER = 8
WORD_BYTES = 7  # bytes of a suffix per sample word: 56 bits + 3 length bits fit a non-negative int64
SAMPLE_WORDS = 3  # a third word (2 had 14 bytes) made cold 10-token counts read a third (bench_cold.py)
SAMPLE_BYTES = WORD_BYTES * SAMPLE_WORDS
# 256 MiB of samples per shard at most: every 64th suffix of a 651M-token shard, whose cold count
# reads about 60 KiB (16 pages) against about 85 KiB at 64 MiB (every 256th; bench_cold.py)
MAX_SAMPLES_PER_SHARD = (256 << 20) // (8 * SAMPLE_WORDS)
MIN_SAMPLE_SHIFT = 4
TOP_SHIFT = 6  # a top entry per 64 samples: a block of samples is 16 cache lines
TOP_STRIDE = 1 << TOP_SHIFT
PREFETCH_RANKS = 64  # a search range this short has all its suffixes fetched at once
WIDE_PIVOTS = 7  # suffixes compared per step of a search over a wider range


def sample_shift(n_positions: int) -> int:
    """log2 of the sampling stride: every 16th suffix, sparser when a shard would exceed the cap."""
    shift = MIN_SAMPLE_SHIFT
    while (n_positions >> shift) >= MAX_SAMPLES_PER_SHARD:
        shift += 1
    return shift


@njit(inline="always")
def _sample_word(ds, pos):
    """Bytes pos..pos+6 of the data as a big-endian int (zero past its end), shifted left 3 bits
    to hold how many of them exist. The words of a suffix (at its start, then 7 bytes on) never
    decrease along the suffix array: a suffix that ends early sorts before one that goes on with
    zero bytes, as in memcmp."""
    v = np.int64(0)
    n = ds.shape[0]
    for k in range(WORD_BYTES):
        v <<= 8
        if pos + k < n:
            v |= np.int64(ds[pos + k])
    return (v << 3) | max(0, min(n - pos, WORD_BYTES))


@njit(nogil=True, cache=True)
def fill_samples(ds, sa, ps, tw, shift, out):
    """The sample key of the suffix at rank i << shift, for every i, into out[3i .. 3i + 2].
    Returns -1, or the first sampled rank whose pointer is past the data or not token-aligned
    (a corrupt table: the caller must not use the samples)."""
    n = ds.shape[0]
    for i in range(out.shape[0] // SAMPLE_WORDS):
        rank = np.int64(i) << shift
        pos = pointer_at(sa, ps, rank)
        if pos % tw or pos + tw > n:
            return rank
        for w in range(SAMPLE_WORDS):
            out[SAMPLE_WORDS * i + w] = _sample_word(ds, pos + w * WORD_BYTES)
    return np.int64(-1)


def build_directory(ds: np.ndarray, sa: np.ndarray, ps: int, tw: int, name: str = "the suffix array") -> np.ndarray:
    """One shard's search directory (read-only int64 array; layout above).

    The pointers it reads (every run start and every sample) are checked on the way: a table
    whose pointers leave the data, are misaligned or out of order raises IndexFormatError naming
    ``name`` (its file), instead of producing a directory that would send searches astray."""
    n_pos = sa.shape[0] // ps
    shift = sample_shift(n_pos)
    n_first = 1 << (8 * tw) if tw < 4 else 0
    n_samples = (n_pos + (1 << shift) - 1) >> shift
    n_top = (n_samples + TOP_STRIDE - 1) >> TOP_SHIFT
    samples = HEADER + 2 * n_first
    top = samples + SAMPLE_WORDS * n_samples
    out = np.zeros(top + SAMPLE_WORDS * n_top, dtype=np.int64)
    out[[D_SHIFT, D_FIRST, D_NFIRST, D_SAMPLES, D_NSAMPLES, D_TOP]] = shift, HEADER, n_first, samples, n_samples, top
    bad = first_key_table(ds, sa, ps, tw, out[HEADER:samples]) if n_first else -1
    if bad < 0:
        bad = fill_samples(ds, sa, ps, tw, shift, out[samples:top])
    if bad >= 0:
        from engine.errors import IndexFormatError

        ptr = int.from_bytes(bytes(sa[bad * ps:(bad + 1) * ps]), "little")
        raise IndexFormatError(
            f"{name} is corrupt: the pointer at rank {bad} is {ptr} (tokenized has {ds.shape[0]} bytes, "
            f"tokens of {tw}), or the suffixes around it are out of order; run `ngram verify` and rebuild the index"
        )
    pairs = out[samples:top].reshape(n_samples, SAMPLE_WORDS)
    out[top:] = pairs[::TOP_STRIDE].ravel()
    out.flags.writeable = False
    return out


def first_token_ranges(directory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) views of a directory's first-token table, indexed by key (empty for 4-byte tokens)."""
    first, n_first = int(directory[D_FIRST]), int(directory[D_NFIRST])
    table = directory[first : first + 2 * n_first]
    return table[0::2], table[1::2]


@njit(inline="always")
def _word_bounds(v, nb):
    """The least and the greatest sample word that starts with the ``nb`` bytes of ``v``."""
    pad = 8 * (WORD_BYTES - nb)
    low = v << pad
    high = low | ((np.int64(1) << pad) - 1)
    return (low << 3) | nb, (high << 3) | WORD_BYTES


@njit(inline="always")
def query_sample_range(keys, start, stop, tw):
    """(low, high, exact): the sample keys (word triples) of the suffixes starting with
    keys[start:stop] lie in [low, high]; when ``exact`` (the query fits in SAMPLE_BYTES) every
    sample key in that span is a match."""
    v0 = np.int64(0)
    v1 = np.int64(0)
    v2 = np.int64(0)
    nb = 0
    for j in range(start, stop):
        k = keys[j]
        for b in range(tw - 1, -1, -1):
            byte = (k >> (8 * b)) & 0xFF
            if nb < WORD_BYTES:
                v0 = (v0 << 8) | byte
            elif nb < 2 * WORD_BYTES:
                v1 = (v1 << 8) | byte
            elif nb < SAMPLE_BYTES:
                v2 = (v2 << 8) | byte
            nb += 1
        if nb >= SAMPLE_BYTES:
            break
    nb = min(nb, SAMPLE_BYTES)
    # Bytes per word: full words, then the one the query ends in, then empty ones (0 / the maximum).
    l0, h0 = _word_bounds(v0, min(nb, WORD_BYTES))
    l1, h1 = _word_bounds(v1, max(0, min(nb - WORD_BYTES, WORD_BYTES)))
    l2, h2 = _word_bounds(v2, max(0, nb - 2 * WORD_BYTES))
    return (l0, l1, l2), (h0, h1, h2), (stop - start) * tw <= SAMPLE_BYTES


@njit(inline="always")
def _sample_below(dr, at, key, inclusive):
    """Whether the sample key at dr[at:at + 3] is < ``key`` (a word triple), or <= unless ``inclusive``."""
    v = dr[at]
    if v != key[0]:
        return v < key[0]
    v = dr[at + 1]
    if v != key[1]:
        return v < key[1]
    v = dr[at + 2]
    return v < key[2] or (v == key[2] and not inclusive)


@njit(inline="always")
def bisect_samples(dr, base, a, b, key, inclusive):
    """First i in [a, b) whose sample key (dr[base + 3i .. base + 3i + 2]) is > ``key`` (>= when
    ``inclusive``); b if none."""
    while a < b:
        m = (a + b) >> 1
        if _sample_below(dr, base + SAMPLE_WORDS * m, key, inclusive):
            a = m + 1
        else:
            b = m
    return a


@njit(inline="always")
def sample_block(dr, a, b, key, inclusive):
    """The block [a', b') of at most TOP_STRIDE samples inside [a, b) that holds the first sample
    above ``key`` (see bisect_samples), found in the top level alone (in memory)."""
    ja = (a + TOP_STRIDE - 1) >> TOP_SHIFT  # top entries j whose sample j * TOP_STRIDE is in [a, b)
    jb = (b + TOP_STRIDE - 1) >> TOP_SHIFT
    j = bisect_samples(dr, dr[D_TOP], ja, jb, key, inclusive)
    if j > ja:
        a = ((j - 1) << TOP_SHIFT) + 1  # sample (j - 1) * TOP_STRIDE is not above key
    if j < jb:
        b = j << TOP_SHIFT  # sample j * TOP_STRIDE is
    return a, b


@njit(inline="always")
def narrow_by_samples(lo, hi, i0, i1, first_in, first_after, shift):
    """[lo, hi) cut by the samples i0 <= i < i1 (sample i is the suffix at rank i << shift): those
    before ``first_in`` sort before every match, those from ``first_after`` on after them."""
    if first_in > i0:
        lo = ((first_in - 1) << shift) + 1
    if first_after < i1:
        hi = first_after << shift
    return lo, hi


@njit(cache=True)
def _first_sample_above(dr, a, b, key, inclusive):
    """First sample index in [a, b) whose key is > ``key`` (>= when ``inclusive``); b if none.
    The top level picks the block of TOP_STRIDE samples that holds the answer."""
    a, b = sample_block(dr, a, b, key, inclusive)
    return bisect_samples(dr, dr[D_SAMPLES], a, b, key, inclusive)


@njit(inline="always")
def _prefetch_window(ds, sa, ps, tw, a, b, skip):
    for r in range(a, b):
        prefetch(ds, pointer_at(sa, ps, r) + skip * tw)


@njit(inline="always")
def _prefetch_range(ds, sa, ps, tw, a, b, skip):
    """Start fetching every suffix of ranks [a, b): their suffix-array lines, then their tokens."""
    for r in range(a * ps, b * ps, 64):
        prefetch(sa, r)
    _prefetch_window(ds, sa, ps, tw, a, b, skip)


@njit(inline="always")
def _fetch_pivots(ds, sa, ps, tw, a, step, skip):
    """Start fetching the suffixes at ranks a + i * step, i = 1 .. WIDE_PIVOTS."""
    for i in range(1, WIDE_PIVOTS + 1):
        prefetch(sa, (a + i * step) * ps)
    for i in range(1, WIDE_PIVOTS + 1):
        prefetch(ds, pointer_at(sa, ps, a + i * step) + skip * tw)


# The searches below are compiled once each, called (not inlined at the numba level): inlining
# them into every caller made the first count compile for about 40 s on 2 cores (type inference
# over the copies), and each constant argument (0, True, False) would compile a variant of its
# own, so callers pass these instead.
@njit(inline="always")
def _ZERO():
    return np.int64(0)


@njit(inline="always")
def _TRUE():
    return np.bool_(True)


@njit(inline="always")
def _FALSE():
    return np.bool_(False)


@njit(cache=True)
def _first_at_least(ds, sa, ps, tw, a, b, keys, start, stop, skip, strict):
    """First rank in [a, b) whose suffix sorts after keys[start:stop] (``strict``) or does not sort
    before it; b if none. A wide range is cut to an eighth per step by WIDE_PIVOTS suffixes fetched
    together, so the step costs about one memory latency instead of three."""
    while b - a > PREFETCH_RANKS:
        step = (b - a) // (WIDE_PIVOTS + 1)
        _fetch_pivots(ds, sa, ps, tw, a, step, skip)
        na = a
        nb = b
        for i in range(1, WIDE_PIVOTS + 1):
            m = a + i * step
            c = compare_at(ds, sa, ps, tw, m, keys, start, stop, skip)
            if c < 0 or (c == 0 and strict):
                na = m + 1
            else:
                nb = m
                break
        a = na
        b = nb
        if b - a <= PREFETCH_RANKS:
            _prefetch_range(ds, sa, ps, tw, a, b, skip)
    while a < b:
        m = (a + b) >> 1
        c = compare_at(ds, sa, ps, tw, m, keys, start, stop, skip)
        if c < 0 or (c == 0 and strict):
            a = m + 1
        else:
            b = m
    return a


@njit(inline="always")
def _ends_around(ds, sa, ps, tw, lo, first_match, last_match, hi, keys, start, stop, skip):
    """The range of matches in [lo, hi), given matches at ranks first_match..last_match."""
    first = _first_at_least(ds, sa, ps, tw, lo, first_match, keys, start, stop, skip, _FALSE())
    end = _first_at_least(ds, sa, ps, tw, last_match + 1, hi, keys, start, stop, skip, _TRUE())
    return first, end


@njit(cache=True)
def _find_in_shard(ds, sa, ps, tw, dr, keys, start, stop):
    """Range of the suffixes that start with keys[start:stop].

    The first-token table gives a first range; the samples narrow each end of it to a window of
    2**shift ranks, where a binary search finds the boundary. The rest of the query is matched
    whole at each step (its tokens lie side by side in tokenized.s), so a query costs
    O(log window) random reads whatever its length.
    """
    n_pos = sa.shape[0] // ps
    if start >= stop:
        return np.int64(0), np.int64(n_pos)
    if dr[D_NFIRST] > 0:
        k = dr[D_FIRST] + 2 * keys[start]
        lo = dr[k]
        hi = dr[k + 1]
        skip = 1
    else:
        lo = np.int64(0)
        hi = np.int64(n_pos)
        skip = 0
    if stop - start <= skip or lo >= hi:
        return lo, hi
    shift = dr[D_SHIFT]
    mask = (np.int64(1) << shift) - 1
    i0 = (lo + mask) >> shift  # the samples inside [lo, hi)
    i1 = (hi + mask) >> shift
    low, high, exact = query_sample_range(keys, start, stop, tw)
    first_in = _first_sample_above(dr, i0, i1, low, _TRUE())
    first_after = _first_sample_above(dr, first_in, i1, high, _FALSE())
    lo, hi = narrow_by_samples(lo, hi, i0, i1, first_in, first_after, shift)
    if exact and first_in < first_after:
        # Sample first_in matches: the range starts at most there and ends after the last match.
        # Both windows' suffixes are fetched at once, so their cache misses overlap.
        w1 = ((first_after - 1) << shift) + 1
        prefetch(sa, lo * ps)
        prefetch(sa, w1 * ps)
        _prefetch_window(ds, sa, ps, tw, lo, first_in << shift, skip)
        _prefetch_window(ds, sa, ps, tw, w1, hi, skip)
        first = _first_at_least(ds, sa, ps, tw, lo, first_in << shift, keys, start, stop, skip, _FALSE())
        end = _first_at_least(ds, sa, ps, tw, ((first_after - 1) << shift) + 1, hi, keys, start, stop, skip, _TRUE())
        return first, end
    # Both ends are searched together until a match splits them (a range of one match costs
    # one search, not two); a wide range in steps of WIDE_PIVOTS suffixes fetched together.
    while hi - lo > PREFETCH_RANKS:
        step = (hi - lo) // (WIDE_PIVOTS + 1)
        _fetch_pivots(ds, sa, ps, tw, lo, step, skip)
        nlo = lo
        nhi = hi
        first_match = np.int64(-1)
        last_match = np.int64(-1)
        for i in range(1, WIDE_PIVOTS + 1):
            m = lo + i * step
            c = compare_at(ds, sa, ps, tw, m, keys, start, stop, skip)
            if c < 0:
                nlo = m + 1
            elif c > 0:
                nhi = m
                break
            else:
                if first_match < 0:
                    first_match = m
                last_match = m
        if first_match >= 0:
            return _ends_around(ds, sa, ps, tw, nlo, first_match, last_match, nhi, keys, start, stop, skip)
        lo = nlo
        hi = nhi
    _prefetch_range(ds, sa, ps, tw, lo, hi, skip)  # a few sample windows: every candidate at once
    while lo < hi:
        m = (lo + hi) >> 1
        c = compare_at(ds, sa, ps, tw, m, keys, start, stop, skip)
        if c < 0:
            lo = m + 1
        elif c > 0:
            hi = m
        else:
            return _ends_around(ds, sa, ps, tw, lo, m, m, hi, keys, start, stop, skip)
    return lo, lo


@njit(inline="always")
def _count(st, tw, keys, start, stop):
    """Occurrences of keys[start:stop] over all shards."""
    total = np.int64(0)
    for s in range(st.shape[0]):
        ds, sa, ps, dr = shard_views(st, s)
        lo, hi = _find_in_shard(ds, sa, ps, tw, dr, keys, start, stop)
        total += hi - lo
    return total


@njit(inline="always")
def shard_ranges(st, tw, keys, start, stop, lo_out, hi_out):
    """Fill each shard's range of keys[start:stop]; return the total count."""
    total = np.int64(0)
    for s in range(st.shape[0]):
        ds, sa, ps, dr = shard_views(st, s)
        lo, hi = _find_in_shard(ds, sa, ps, tw, dr, keys, start, stop)
        lo_out[s] = lo
        hi_out[s] = hi
        total += hi - lo
    return total


@njit(nogil=True, cache=True)
def find_ranges(st, tw, keys, start, stop, lo_out, hi_out):
    """Fill each shard's range of keys[start:stop]; return the total count."""
    return shard_ranges(st, tw, keys, start, stop, lo_out, hi_out)


@njit(nogil=True, cache=True)
def count_at(handle, ids):
    """Total occurrences of the int64 token ids over all shards of the index at ``handle`` (see
    index_handle), validated here; -1 when an id is out of range or the separator, for the caller
    to work out the error; -2 - count when the search took longer than the handle's H_SLOW_NS
    (decode_count), which tells engine.index that pages came from disk, for two clock reads here
    instead of two in Python."""
    st, tw, vocab_size, separator = open_handle(handle)
    if not ids_ok(ids, vocab_size, separator):
        return np.int64(-1)
    t0 = monotonic_ns()
    keys = ids_to_keys(ids, tw)
    n = _count(st, tw, keys, _ZERO(), keys.shape[0])
    slow_ns = numba.carray(_int64_pointer(handle), H_SLOW_NS + 1)[H_SLOW_NS]
    if slow_ns > 0 and monotonic_ns() - t0 > slow_ns:
        return -2 - n
    return n


@njit(nogil=True, cache=True)
def longest_suffix(st, tw, keys, max_len):
    """Length of the longest suffix of ``keys`` (at most ``max_len`` long) that occurs in the index.

    Counts only shrink as a suffix grows, so exponential then binary search over the length
    finds it with O(log L) searches (the same search infini-gram's infgram queries use).
    """
    n = keys.shape[0]
    limit = min(n, max_len)
    good = 0
    probe = 1
    while probe <= limit and _count(st, tw, keys, n - probe, n) > 0:
        good = probe
        probe *= 2
    bad = min(probe, limit + 1)
    while bad - good > 1:
        mid = (good + bad) >> 1
        if _count(st, tw, keys, n - mid, n) > 0:
            good = mid
        else:
            bad = mid
    return good


@njit(inline="always")
def _prob_counts(st, tw, keys, cont, use_suffix):
    """(count of the prompt ``keys``, count of prompt + cont, prompt length used); with
    ``use_suffix`` the prompt is first cut to its longest occurring suffix (infgram)."""
    n = keys.shape[0]
    start = 0
    if use_suffix:
        start = n - longest_suffix(st, tw, keys, n)
    prompt_count, cont_count = _prompt_and_cont(st, tw, keys, start, n, _swap_key(cont, tw))
    return prompt_count, cont_count, n - start


@njit(nogil=True, cache=True)
def prob_at(handle, ids, cont, use_suffix):
    """_prob_counts for one query of int64 token ids on the index at ``handle``. All -1 when an id
    is out of range or the separator, for the caller to work out the error; the prompt count as
    -2 - count when the searches took longer than the handle's H_SLOW_NS (as count_at)."""
    st, tw, vocab_size, separator = open_handle(handle)
    if not ids_ok(ids, vocab_size, separator) or not _is_token_id(cont, vocab_size, separator):
        return np.int64(-1), np.int64(-1), np.int64(-1)
    t0 = monotonic_ns()
    prompt_count, cont_count, used = _prob_counts(st, tw, ids_to_keys(ids, tw), cont, use_suffix)
    slow_ns = numba.carray(_int64_pointer(handle), H_SLOW_NS + 1)[H_SLOW_NS]
    if slow_ns > 0 and monotonic_ns() - t0 > slow_ns:
        return -2 - prompt_count, cont_count, used
    return prompt_count, cont_count, used


@njit(cache=True)
def _prompt_and_cont(st, tw, keys, start, stop, cont_key):
    """Counts of keys[start:stop] and of keys[start:stop] + cont_key over all shards.

    The continuation narrows the prompt's range when that range is a few sample windows wide;
    a wider one is searched afresh with the continuation appended, through the search directory.
    """
    prompt_count = np.int64(0)
    cont_count = np.int64(0)
    scratch = np.empty(0, dtype=np.int64)
    for s in range(st.shape[0]):
        ds, sa, ps, dr = shard_views(st, s)
        lo, hi = _find_in_shard(ds, sa, ps, tw, dr, keys, start, stop)
        prompt_count += hi - lo
        if hi - lo <= (np.int64(4) << dr[D_SHIFT]):
            if hi > lo:
                clo, chi = narrow_range(ds, sa, ps, tw, lo, hi, (stop - start) * tw, cont_key)
                cont_count += chi - clo
            continue
        if scratch.shape[0] == 0:
            scratch = np.empty(stop - start + 1, dtype=np.int64)
            for j in range(start, stop):  # a loop: parfors reject this slice copy inside prange
                scratch[j - start] = keys[j]
            scratch[stop - start] = cont_key
        clo, chi = _find_in_shard(ds, sa, ps, tw, dr, scratch, _ZERO(), scratch.shape[0])
        cont_count += chi - clo
    return prompt_count, cont_count


@njit(cache=True)
def run_end(ds, sa, ps, tw, i, hi, depth, key):
    """End (exclusive) of the run of ``key`` that contains rank ``i``: gallop to bracket it, then
    binary search inside the bracket, so a run costs O(log run length)."""
    last_equal = i
    step = 1
    bound = hi
    while i + step < hi:
        if key_at_rank(ds, sa, ps, tw, i + step, depth) == key:
            last_equal = i + step
            step <<= 1
        else:
            bound = i + step
            break
    return _upper_bound(ds, sa, ps, tw, last_equal + 1, bound, depth, key)


@njit(cache=True)
def _runs_in_range(ds, sa, ps, tw, lo, hi, depth, out_keys, out_counts, n):
    """Append (key, run length) of each distinct key at ``depth`` in [lo, hi), jumping over runs.
    Returns the new length, or -1 when the outputs fill up first: a sorted range has at most as
    many runs as distinct keys, so only a corrupt index (unsorted, or tokens past the
    vocabulary) gets there, and it must not write past the outputs."""
    cap = out_keys.shape[0]
    i = lo
    while i < hi:
        if n >= cap:
            return -1
        key = key_at_rank(ds, sa, ps, tw, i, depth)
        j = run_end(ds, sa, ps, tw, i, hi, depth, key)
        out_keys[n] = key
        out_counts[n] = j - i
        n += 1
        i = j
    return n


@njit(nogil=True, cache=True)
def next_token_runs(st, tw, lo_a, hi_a, depth, out_keys, out_counts):
    """Distinct keys following ranges that match a ``depth``-byte prefix, merged over shards.

    Writes keys sorted ascending with their total counts; returns how many. Key -1 (end of data)
    and the separator key mean "the document ends here". The outputs must hold the sum over
    shards of min(hi - lo, distinct keys possible); -1 when they do not (a corrupt index).
    """
    n = _ZERO()
    for s in range(st.shape[0]):
        ds, sa, ps, _ = shard_views(st, s)
        n = _runs_in_range(ds, sa, ps, tw, lo_a[s], hi_a[s], depth, out_keys, out_counts, n)
        if n < 0:
            return -1
    if st.shape[0] == 1:
        return n
    order = np.argsort(out_keys[:n], kind="mergesort")
    merged = 0
    keys = out_keys[:n][order]
    counts = out_counts[:n][order]
    for i in range(n):
        if merged > 0 and out_keys[merged - 1] == keys[i]:
            out_counts[merged - 1] += counts[i]
        else:
            out_keys[merged] = keys[i]
            out_counts[merged] = counts[i]
            merged += 1
    return merged


@njit(nogil=True, cache=True)
def next_tokens_ids(st, tw, ids, use_suffix, max_distinct, separator):
    """The exact next-token distribution of one validated prompt of token ids (with ``use_suffix``,
    of its longest occurring suffix), in one call: (prompt count, token ids ascending, their counts,
    how many occurrences end a document, prompt length used). ``max_distinct`` bounds the distinct
    keys one shard can hold (vocabulary + 2); a prompt count of -1 means a shard holds more (it is
    corrupt)."""
    keys = ids_to_keys(ids, tw)
    n = keys.shape[0]
    start = 0
    if use_suffix:
        start = n - longest_suffix(st, tw, keys, n)
    n_shards = st.shape[0]
    lo = np.empty(n_shards, dtype=np.int64)
    hi = np.empty(n_shards, dtype=np.int64)
    total = np.int64(0)
    capacity = 0
    for s in range(n_shards):
        ds, sa, ps, dr = shard_views(st, s)
        a, b = _find_in_shard(ds, sa, ps, tw, dr, keys, start, n)
        lo[s] = a
        hi[s] = b
        total += b - a
        capacity += min(b - a, max_distinct)
    run_keys = np.empty(capacity, dtype=np.int64)
    run_counts = np.empty(capacity, dtype=np.int64)
    m = next_token_runs(st, tw, lo, hi, (n - start) * tw, run_keys, run_counts)
    if m < 0:  # more distinct next tokens than the vocabulary has: a corrupt index
        empty = np.empty(0, dtype=np.int64)
        return np.int64(-1), empty, empty, np.int64(0), n - start
    tokens = np.empty(m, dtype=np.int64)
    counts = np.empty(m, dtype=np.int64)
    k = 0
    ends = np.int64(0)
    for i in range(m):
        key = run_keys[i]
        if key < 0 or key == separator:
            ends += run_counts[i]
        else:
            tokens[k] = _swap_key(key, tw)
            counts[k] = run_counts[i]
            k += 1
    tokens = tokens[:k]
    counts = counts[:k]
    if tw != 1:  # keys ascend in byte order; ids must ascend numerically
        order = np.argsort(tokens, kind="mergesort")
        tokens = tokens[order]
        counts = counts[order]
    return total, tokens, counts, ends, n - start


@njit(inline="always")
def piece_sample(rank, end, unit):
    """(rank read, ranks it stands for) of the capped ntd walk's sample that starts at ``rank`` in a
    piece ending at ``end``: the middle of a block of ``unit`` ranks, or of what is left."""
    if rank + unit <= end:
        return rank + (unit >> 1), unit
    return (rank + end) >> 1, end - rank


@njit(inline="always")
def walk_piece(ds, sa, ps, tw, start, end, depth, unit, out_keys, out_weights, n):
    """One piece [start, end) of the capped ntd walk (approx_next_keys): a piece shorter than
    4 * unit is read every ``unit`` ranks; one whose first and last keys agree is credited whole.
    Appends its (key, weight) pairs from ``n`` while they fit; returns (pairs so far, whether the
    piece must be split instead)."""
    cap = out_keys.shape[0]
    if end - start < 4 * unit:
        rank = start
        while rank < end:
            mid, weight = piece_sample(rank, end, unit)
            if n < cap:
                out_keys[n] = key_at_rank(ds, sa, ps, tw, mid, depth)
                out_weights[n] = weight
            n += 1
            rank += unit
        return n, False
    first = key_at_rank(ds, sa, ps, tw, start, depth)
    if first == key_at_rank(ds, sa, ps, tw, end - 1, depth):
        if n < cap:
            out_keys[n] = first
            out_weights[n] = end - start
        return n + 1, False
    return n, True


@njit(nogil=True, cache=True)
def approx_next_keys(st, tw, lo_a, hi_a, depth, unit, out_keys, out_weights):
    """infini-gram's capped ntd, step for step: per shard, divide ``[lo, hi)`` in halves until a piece
    either starts and ends with the same key (credited whole) or is shorter than ``4 * unit``; such a
    piece is read every ``unit`` ranks at the middle of each block, each read weighted by its block.

    unit is the smallest power of two with ``count <= unit * max_support`` (unit 1 is exact). Writes
    (key, weight) pairs, unsorted and unmerged, while they fit; returns how many there are, so a
    caller whose outputs were too small can retry with that size. Unlike infini-gram, the end of the
    data (key -1) and a separator are different keys here, so a piece holding both is not credited
    whole to "end of document".
    """
    n = 0
    stack = np.empty(256, dtype=np.int64)
    for s in range(st.shape[0]):
        ds, sa, ps, _ = shard_views(st, s)
        top = 0
        if hi_a[s] > lo_a[s]:
            stack[0] = lo_a[s]
            stack[1] = hi_a[s]
            top = 2
        while top > 0:
            top -= 2
            start = stack[top]
            end = stack[top + 1]
            n, split = walk_piece(ds, sa, ps, tw, start, end, depth, unit, out_keys, out_weights, n)
            if not split:
                continue
            mi = (start + end) >> 1
            # Right half below the left one, so the left half is taken first (infini-gram's order
            # does not matter for the sums, but a depth-first stack stays O(log range) deep).
            stack[top] = mi
            stack[top + 1] = end
            stack[top + 2] = start
            stack[top + 3] = mi
            top += 4
    return n


@njit(nogil=True, cache=True)
def first_key_table(ds, sa, ps, tw, table):
    """Each first key's rank range in one shard (lo at table[2k], hi at table[2k + 1]), from one
    jumping pass over the whole suffix array. Returns -1, or the first rank found whose pointer
    is past the data or misaligned, or whose key does not follow the previous run's: the table is
    corrupt, and this one is left incomplete (every write stays inside it whatever the bytes)."""
    n_pos = sa.shape[0] // ps
    n_keys = table.shape[0] // 2
    n = ds.shape[0]
    done = 0  # keys whose entries are written
    prev = np.int64(-1)
    i = np.int64(0)
    while i < n_pos:
        p = pointer_at(sa, ps, i)
        if p % tw or p + tw > n:
            return i
        key = token_key(ds, tw, p)
        if key <= prev or key >= n_keys:
            return i
        j = run_end(ds, sa, ps, tw, i, n_pos, 0, key)
        while done < key:  # absent keys get an empty range at their insertion point
            table[2 * done] = i
            table[2 * done + 1] = i
            done += 1
        table[2 * key] = i
        table[2 * key + 1] = j
        done = key + 1
        prev = key
        i = j
    while done < n_keys:
        table[2 * done] = n_pos
        table[2 * done + 1] = n_pos
        done += 1
    return np.int64(-1)


@njit(nogil=True, cache=True)
def locality_order(keys, offsets, tw):
    """An order of the queries keys[offsets[i]:offsets[i+1]] sorted by their first few keys.

    Answering a batch in this order makes neighbouring queries search the same parts of the
    suffix array, so most of their reads hit the CPU caches instead of memory.
    """
    nq = offsets.shape[0] - 1
    bits = 8 * tw + 1  # a key, plus one value for "the query has ended"
    per = max(1, 63 // bits)
    packed = np.empty(nq, dtype=np.int64)
    for q in range(nq):
        v = np.int64(0)
        for j in range(per):
            i = offsets[q] + j
            v = (v << bits) | (keys[i] + 1 if i < offsets[q + 1] else 0)
        packed[q] = v
    return np.argsort(packed, kind="mergesort")


@njit(parallel=True, cache=True)
def count_batch_keys(st, tw, keys, offsets, out):
    """Counts of many key sequences, query i being keys[offsets[i]:offsets[i+1]]."""
    order = locality_order(keys, offsets, tw)
    for i in prange(offsets.shape[0] - 1):
        q = order[i]
        out[q] = _count(st, tw, keys, offsets[q], offsets[q + 1])


@njit(parallel=True, cache=True)
def prob_batch_keys(st, tw, keys, offsets, cont_keys, use_suffix, out):
    """Per query: prompt count, continuation count and suffix length (columns of ``out``).

    With ``use_suffix`` the prompt is first cut to its longest occurring suffix (the infgram form).
    """
    order = locality_order(keys, offsets, tw)
    for i in prange(offsets.shape[0] - 1):
        q = order[i]
        start = offsets[q]
        stop = offsets[q + 1]
        if use_suffix:
            start = stop - longest_suffix(st, tw, keys[start:stop], stop - start)
        prompt_count, cont_count = _prompt_and_cont(st, tw, keys, start, stop,
                                                    cont_keys[q])
        out[q, 0] = prompt_count
        out[q, 1] = cont_count
        out[q, 2] = stop - start


@njit(nogil=True, cache=True)
def pointers_at(sa, ps, lo, hi, out):
    """Suffix-array entries (byte offsets into tokenized.s) for ranks lo..hi-1."""
    for r in range(lo, hi):
        out[r - lo] = pointer_at(sa, ps, r)


def query_kernels() -> list:
    """The entry kernels NgramIndex.warmup compiles (the rest compile as their callees)."""
    return [ids_ok, count_at, prob_at, next_tokens_ids, find_ranges, count_batch_keys, prob_batch_keys,
            approx_next_keys]
