"""Suffix-array construction for one shard: pydivsufsort, then a compact pointer table.

Peak memory for a shard of B bytes is about 5B (the bytes plus divsufsort's int32 array); the
pointer table is written to a temporary file through a small buffer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.format import atomic_write_path, pointer_size, shard_path

MAX_SHARD_BYTES = (1 << 31) - 1  # divsufsort's 32-bit variant; keeps the SA at 4 bytes per byte
WRITE_CHUNK_ENTRIES = 1 << 22  # suffix-array entries encoded and written at a time


def sort_peak_bytes(shard_bytes: int, token_width: int) -> int:
    """Estimated peak resident memory of sorting a shard of ``shard_bytes`` bytes."""
    return shard_bytes * 5 + (shard_bytes // token_width) * pointer_size(shard_bytes) // 4 + (64 << 20)


def _pointer_bytes(sa: np.ndarray, token_width: int, ptr_size: int) -> np.ndarray:
    """The entries of ``sa`` (a chunk of a byte-level suffix array) that start on a token boundary,
    in order, as ``ptr_size``-byte little-endian pointers (a flat uint8 array)."""
    if token_width > 1:
        sa = sa[(sa & (token_width - 1)) == 0]
    if ptr_size == 4:
        # divsufsort's int32 entries are non-negative: their little-endian bytes are the pointers.
        return (sa if sa.dtype == np.dtype("<i4") else sa.astype("<u4")).view(np.uint8)
    wide = sa.astype("<u8").view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(wide[:, :ptr_size]).reshape(-1)


def suffix_array_bytes(ds: np.ndarray, token_width: int) -> tuple[np.ndarray, int]:
    """The token-aligned suffix array of ``ds`` (uint8, writable) and its length."""
    from pydivsufsort import divsufsort

    sa = divsufsort(ds)
    if token_width > 1:
        sa = sa[(sa & (token_width - 1)) == 0]
    return sa, len(sa)


def sort_shard(directory: Path, shard: int, token_width: int) -> int:
    """Write ``table.<shard>`` for an existing ``tokenized.<shard>``; return the pointer size."""
    from pydivsufsort import divsufsort

    ds_path = shard_path(directory, "tokenized", shard)
    ds = np.fromfile(ds_path, dtype=np.uint8)  # writable: pydivsufsort refuses read-only buffers
    ps = pointer_size(len(ds))
    sa = divsufsort(ds)
    del ds
    # Token-aligned entries are picked out and encoded as pointers a chunk at a time, written through
    # small buffers rather than a memory map of the whole table: dirty mapped pages count towards the
    # sort's peak memory (about 4 bytes per token more). numpy rather than a JIT-compiled loop: as
    # fast here, and no compiler start-up (half a second) in every build.
    with atomic_write_path(shard_path(directory, "table", shard)) as tmp, open(tmp, "wb") as fh:
        for start in range(0, len(sa), WRITE_CHUNK_ENTRIES):
            fh.write(memoryview(_pointer_bytes(sa[start:start + WRITE_CHUNK_ENTRIES], token_width, ps)))
    return ps
