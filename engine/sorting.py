"""Suffix-array construction for one shard: pydivsufsort, then a compact pointer table.

Peak memory for a shard of B bytes is about 5B (the bytes plus divsufsort's int32 array); the
pointer table is written to a temporary file through a small buffer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from engine.format import atomic_write_path, pointer_size, shard_path

MAX_SHARD_BYTES = (1 << 31) - 1  # divsufsort's 32-bit variant; keeps the SA at 4 bytes per byte
WRITE_CHUNK_POINTERS = 1 << 22


def sort_peak_bytes(shard_bytes: int, token_width: int) -> int:
    """Estimated peak resident memory of sorting a shard of ``shard_bytes`` bytes."""
    return shard_bytes * 5 + (shard_bytes // token_width) * pointer_size(shard_bytes) // 4 + (64 << 20)


@njit(nogil=True, cache=True)
def _compact_aligned(sa, token_width):
    """Keep, in order and in place, the suffixes that start on a token boundary; return how many."""
    mask = token_width - 1
    n = 0
    for i in range(sa.shape[0]):
        value = sa[i]
        sa[n] = value
        n += (value & mask) == 0  # branch-free: an unaligned entry is overwritten by the next
    return n


@njit(nogil=True, cache=True)
def _pack_pointers(sa, start, mask, ptr_size, out, capacity):
    """Encode ``sa[start:]`` entries that are multiples of ``mask + 1`` as ``ptr_size``-byte
    little-endian pointers into ``out`` (room for ``capacity`` + 1 of them), until ``capacity`` are
    written or ``sa`` ends; return (next start, pointers written). Compaction and encoding in one pass."""
    n = 0
    i = start
    size = sa.shape[0]
    while i < size and n < capacity:
        value = np.int64(sa[i])
        base = n * ptr_size
        for k in range(ptr_size):
            out[base + k] = (value >> (8 * k)) & 0xFF
        n += (value & mask) == 0  # branch-free: an unaligned entry is overwritten by the next
        i += 1
    return i, n


def suffix_array_bytes(ds: np.ndarray, token_width: int) -> tuple[np.ndarray, int]:
    """The token-aligned suffix array of ``ds`` (uint8, writable) and its length."""
    from pydivsufsort import divsufsort

    sa = divsufsort(ds)
    if token_width == 1:
        return sa, len(sa)
    return sa, _compact_aligned(sa, token_width)


def sort_shard(directory: Path, shard: int, token_width: int) -> int:
    """Write ``table.<shard>`` for an existing ``tokenized.<shard>``; return the pointer size."""
    from pydivsufsort import divsufsort

    ds_path = shard_path(directory, "tokenized", shard)
    ds = np.fromfile(ds_path, dtype=np.uint8)  # writable: pydivsufsort refuses read-only buffers
    ps = pointer_size(len(ds))
    sa = divsufsort(ds)
    del ds
    # Token-aligned entries are picked out and encoded as pointers chunk by chunk, through a small
    # buffer rather than a memory map of the whole table: dirty mapped pages count towards the
    # sort's peak memory (about 4 bytes per token more).
    chunk = min(WRITE_CHUNK_POINTERS, len(sa))
    buffer = np.empty((chunk + 1) * ps, dtype=np.uint8)
    with atomic_write_path(shard_path(directory, "table", shard)) as tmp, open(tmp, "wb") as fh:
        start = 0
        while start < len(sa):
            start, count = _pack_pointers(sa, start, token_width - 1, ps, buffer, chunk)
            fh.write(memoryview(buffer)[: count * ps])
    return ps
