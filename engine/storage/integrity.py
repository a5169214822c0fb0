"""Structural checks of index files: what the kernels rely on, checked before they run.

The numba kernels index their arrays without bounds checks, so bytes that break the format's rules
(a pointer past the data, a table of the wrong length, an offset past the end) must be caught
before a kernel trusts them. Two levels:

- ``check_*`` run when an index opens. They are cheap (file sizes and a few values: nothing
  proportional to the index) and raise IndexFormatError naming the file. The pointers that the
  search directory reads are checked by kernels.build_directory itself, as it reads them (a
  directory read from a file is checked by engine.storage.directory). The query kernels bound their
  own reads and writes, so bytes these checks cannot see change answers, never memory.
- ``*_problems`` are ``ngram verify``'s full passes over offsets, metadata offsets, token values
  and pointers; they return findings (strings) instead of raising.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit
import engine.kernels.cache  # noqa: F401  (before the cached kernels below)
from engine.errors import IndexFormatError
from engine.format import pointer_size, separator_id, shard_path

_CHUNK = 1 << 24  # tokens per pass of the vectorized scans: bounded scratch memory


def _name(shard, kind: str) -> str:
    return str(shard_path(shard.directory, kind, shard.number))


# ------------------------------------------------------------------------------------- at open
def check_shard(shard) -> None:
    """Cheap checks of one opened shard (sizes and a few values), raising IndexFormatError."""
    tw = shard.token_width
    ds_bytes = len(shard.tokenized)
    expected = pointer_size(ds_bytes)
    if not expected <= shard.ptr_size <= 8:
        # Narrower pointers cannot reach the data: the sizes of table and tokenized disagree. (Wider
        # ones are allowed, as a huge shard would have; kernels read pointers masked non-negative.)
        raise IndexFormatError(
            f"{_name(shard, 'table')} holds {shard.ptr_size}-byte pointers, but {ds_bytes} bytes of tokens need "
            f"{expected}-byte ones; the table or tokenized file is truncated or corrupt: rebuild the shard"
        )
    sep = bytes([0xFF]) * tw
    if bytes(shard.tokenized[:tw]) != sep:
        raise IndexFormatError(
            f"{_name(shard, 'tokenized')} does not start with a document separator; it is corrupt: rebuild the shard"
        )
    offsets = shard.offsets
    if len(offsets) == 0 or int(offsets[0]) != 0 or int(offsets[-1]) >= ds_bytes or int(offsets[-1]) % tw:
        raise IndexFormatError(
            f"{_name(shard, 'offset')}: document offsets must start at 0 and end inside tokenized ({ds_bytes} "
            f"bytes, multiples of {tw}); found {len(offsets)} offsets"
            + (f" from {int(offsets[0])} to {int(offsets[-1])}" if len(offsets) else "") + ": rebuild the shard"
        )
    if shard.metadata is not None:
        meta = shard.metaoffsets
        if len(meta) != len(offsets):
            raise IndexFormatError(
                f"{_name(shard, 'metaoff')} has {len(meta)} entries for {len(offsets)} documents; rebuild the shard")
        if int(meta[0]) != 0 or int(meta[-1]) > len(shard.metadata):
            raise IndexFormatError(
                f"{_name(shard, 'metaoff')}: metadata offsets must start at 0 and stay inside metadata "
                f"({len(shard.metadata)} bytes); rebuild the shard")


# ------------------------------------------------------------------------------------- verify
def offsets_problems(shard) -> list[str]:
    """Document offsets: strictly increasing from 0, inside tokenized, token-aligned, each at a
    separator, and one per separator."""
    name = f"offset.{shard.number}"
    tw = shard.token_width
    offsets = np.asarray(shard.offsets, dtype=np.uint64)
    ds_bytes = len(shard.tokenized)
    if len(offsets) == 0:
        return [f"{name} is empty" + (" but tokenized is not" if ds_bytes else "")]
    problems = []
    if offsets[0] != 0:
        problems.append(f"{name}: the first document starts at {int(offsets[0])}, not 0")
    outside = np.flatnonzero(offsets >= ds_bytes)
    if outside.size:
        problems.append(f"{name}: {outside.size} offsets point past tokenized ({ds_bytes} bytes), "
                        f"the first at document {int(outside[0])}")
    misaligned = np.flatnonzero(offsets % np.uint64(tw))
    if misaligned.size:
        problems.append(f"{name}: {misaligned.size} offsets are not multiples of the token width {tw}, "
                        f"the first at document {int(misaligned[0])}")
    if len(offsets) > 1:
        disorder = np.flatnonzero(offsets[1:] <= offsets[:-1])  # unsigned: no overflow
        if disorder.size:
            problems.append(f"{name}: offsets do not increase at document {int(disorder[0]) + 1} "
                            f"({disorder.size} places)")
    if problems:
        return problems
    tokens = np.asarray(shard.tokenized).view(f"<u{tw}")
    sep = separator_id(tw)
    starts = (offsets // np.uint64(tw)).astype(np.int64)
    not_sep = np.flatnonzero(tokens[starts] != sep)
    if not_sep.size:
        problems.append(f"{name}: {not_sep.size} offsets do not point at a document separator, the first at "
                        f"document {int(not_sep[0])}")
    separators = sum(int(np.count_nonzero(tokens[i:i + _CHUNK] == sep)) for i in range(0, len(tokens), _CHUNK))
    if separators != len(offsets):
        problems.append(f"tokenized.{shard.number} holds {separators} document separators but {name} lists "
                        f"{len(offsets)} documents")
    return problems


def metaoff_problems(shard) -> list[str]:
    """Metadata offsets: one per document, non-decreasing from 0, inside the metadata file."""
    if shard.metadata is None:
        return []
    name = f"metaoff.{shard.number}"
    meta = np.asarray(shard.metaoffsets, dtype=np.uint64)
    problems = []
    if len(meta) != shard.num_docs:
        problems.append(f"{name} has {len(meta)} entries for {shard.num_docs} documents")
    if len(meta):
        if meta[0] != 0:
            problems.append(f"{name}: the first entry is {int(meta[0])}, not 0")
        outside = np.flatnonzero(meta > len(shard.metadata))
        if outside.size:
            problems.append(f"{name}: {outside.size} entries point past metadata.{shard.number} "
                            f"({len(shard.metadata)} bytes), the first at document {int(outside[0])}")
        disorder = np.flatnonzero(meta[1:] < meta[:-1])
        if disorder.size:
            problems.append(f"{name}: entries decrease at document {int(disorder[0]) + 1} ({disorder.size} places)")
    return problems


def vocab_problems(shard, vocab_size: int, *, full: bool, samples: int, rng) -> list[str]:
    """Tokens at or past vocab_size (other than separators): every token with ``full``, else
    ``samples`` random blocks of 64."""
    tw = shard.token_width
    sep = separator_id(tw)
    if vocab_size >= sep:
        return []  # every value but the separator is an id
    tokens = np.asarray(shard.tokenized).view(f"<u{tw}")
    if full or len(tokens) <= 64 * samples:
        chunks = (tokens[i:i + _CHUNK] for i in range(0, len(tokens), _CHUNK))
    else:
        starts = rng.integers(0, len(tokens) - 64, size=samples)
        chunks = (tokens[starts[i:i + 4096, None] + np.arange(64)].ravel() for i in range(0, samples, 4096))
    bad = 0
    for chunk in chunks:
        bad += int(np.count_nonzero((chunk >= vocab_size) & (chunk != sep)))
    if bad:
        return [f"tokenized.{shard.number} holds {bad} tokens outside the vocabulary 0..{vocab_size - 1}"
                + ("" if full else " (in the sampled blocks)")]
    return []


@njit(nogil=True, cache=True)
def _first_bad_pointer(ds_len, sa, ps, tw, seen):
    """First rank whose pointer is past the data, misaligned or a repeat (``seen``: one flag per
    position, all False), else -1."""
    n_pos = sa.shape[0] // ps
    for r in range(n_pos):
        base = r * ps
        p = np.int64(0)
        for k in range(ps):
            p |= np.int64(sa[base + k]) << (8 * k)
        if p % tw or p + tw > ds_len:
            return r
        i = p // tw
        if seen[i]:
            return r
        seen[i] = True
    return -1


def pointer_problems(shard) -> list[str]:
    """Every pointer in range, aligned and distinct (the table is a permutation of the positions)."""
    seen = np.zeros(shard.num_positions, dtype=np.bool_)
    bad = _first_bad_pointer(len(shard.tokenized), shard.table, shard.ptr_size, shard.token_width, seen)
    if bad >= 0:
        return [f"table.{shard.number}: the pointer at rank {bad} is past the data, misaligned or a repeat"]
    return []


def shard_problems(path: Path, number: int, token_width: int) -> tuple[object | None, list[str]]:
    """(the shard or None when it cannot be opened, what the open-time checks found), for verify."""
    from engine.format import open_shard

    try:
        shard = open_shard(path, number, token_width)
    except (IndexFormatError, OSError, ValueError) as exc:
        return None, [str(exc)]
    try:
        check_shard(shard)
    except IndexFormatError as exc:
        return shard, [str(exc)]
    return shard, []
