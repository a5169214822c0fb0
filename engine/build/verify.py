"""Check an index against its manifest: file sizes, checksums, suffix-array order and the structure
of every shard file (engine.storage.integrity); report problems, never crash."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit
from tqdm import tqdm
import engine.kernels.cache  # noqa: F401  (before the cached kernel below)
from engine.kernels import suffix as kernels
from engine.storage import integrity
from engine.errors import IndexFormatError, NgramError
from engine.format import discover_shards, file_sha256, infer_token_width, read_manifest, separator_id, shard_path
from engine.index import NgramIndex


@dataclass
class VerifyReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@njit(nogil=True, cache=True)
def _first_disorder(ds, sa, ps, tw, ranks):
    """First rank r in ``ranks`` whose suffix is greater than the suffix at r + 1 (memcmp), else -1."""
    n = ds.shape[0]
    for r in ranks:
        a = kernels.pointer_at(sa, ps, r)
        b = kernels.pointer_at(sa, ps, r + 1)
        if a % tw or b % tw or a >= n or b >= n or a == b:
            return r
        while a < n and b < n and ds[a] == ds[b]:
            a += 1
            b += 1
        if b >= n or (a < n and ds[a] > ds[b]):
            return r
    return -1


def verify_index(path: str | Path, *, full: bool = False, samples: int = 100_000, checksums: bool = True,
                 progress: bool = False) -> VerifyReport:
    """Re-check sizes, checksums, suffix order (``samples`` random adjacent pairs, or all with ``full``,
    which also checks that the table is a permutation), document and metadata offsets and token
    values. Never raises on a damaged index: every finding is a line of ``problems``."""
    path = Path(path)
    report = VerifyReport(path)
    try:
        manifest = read_manifest(path)
    except IndexFormatError as exc:
        report.problems.append(str(exc))
        manifest = None
    if manifest is not None and checksums:
        entries = [(s["shard"], name, meta) for s in manifest["shards"] for name, meta in s["files"].items()]
        for shard_no, name, meta in tqdm(entries, desc="checksums", disable=not progress):
            file = path / name
            if not file.exists():
                report.problems.append(f"{name} is missing")
            elif file.stat().st_size != meta["bytes"]:
                report.problems.append(f"{name} has {file.stat().st_size} bytes, manifest says {meta['bytes']}")
            elif file_sha256(file) != meta["sha256"]:
                report.problems.append(f"{name} checksum differs from the manifest")
        report.checked.append(f"sizes and sha256 of {len(entries)} files")
    try:
        numbers = discover_shards(path)
        width = manifest["token_width"] if manifest is not None else infer_token_width(path)
    except IndexFormatError as exc:
        report.problems.append(str(exc))
        return report
    vocab_size = manifest["vocab_size"] if manifest is not None else separator_id(width)
    rng = np.random.default_rng(0)
    for number in tqdm(numbers, desc="shards", disable=not progress):
        shard, found = integrity.shard_problems(path, number, width)
        report.problems.extend(found)
        if shard is None:
            continue
        n = shard.num_positions
        if n >= 2:
            ranks = np.arange(n - 1, dtype=np.int64) if full or n - 1 <= samples else \
                np.sort(rng.choice(n - 1, size=samples, replace=False)).astype(np.int64)
            bad = _first_disorder(shard.tokenized, shard.table, shard.ptr_size, shard.token_width, ranks)
            if bad >= 0:
                report.problems.append(f"{shard_path(path, 'table', number).name}: suffixes at ranks {bad} and "
                                       f"{bad + 1} are out of order (or invalid pointers); rebuild this shard")
            report.checked.append(f"shard {number}: order of {len(ranks)} adjacent suffix pairs")
        if full:
            report.problems.extend(integrity.pointer_problems(shard))
        report.problems.extend(integrity.offsets_problems(shard))
        report.problems.extend(integrity.metaoff_problems(shard))
        report.problems.extend(integrity.vocab_problems(shard, vocab_size, full=full, samples=samples, rng=rng))
        report.checked.append(f"shard {number}: offsets, metadata offsets and token values")
        from engine.storage.directory import verify_problems

        try:
            found, what = verify_problems(path, shard, full=full, samples=samples, rng=rng)
        except IndexFormatError as exc:
            found, what = [str(exc)], f"shard {number}: search directory"
        report.problems.extend(found)
        report.checked.append(what)
    try:  # what opening checks besides (the pointers the search directory reads, the manifest's counts)
        NgramIndex.open(path)
    except NgramError as exc:
        report.problems.append(f"cannot open: {exc}")
    except Exception as exc:  # noqa: BLE001 - verify reports whatever a damaged index does to open
        report.problems.append(f"cannot open ({type(exc).__name__}): {exc}")
    return report
