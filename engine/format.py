"""The on-disk contract: infini-gram v4 shard files plus our manifest.json.

Per shard s: ``tokenized.s`` (documents, each a separator then its tokens, little-endian),
``table.s`` (suffix array of token-aligned byte offsets, ``ptr_size`` bytes each, memcmp order),
``offset.s`` (u64 byte offset of each document start) and optionally ``metadata.s`` /
``metaoff.s`` (one JSON line per document and its u64 offset).

Everything that writes goes through :func:`atomic_write_path`: a file is written under a
temporary name and renamed into place only when complete, so a killed process never leaves
a half file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import mmap
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.errors import IndexFormatError, IndexNotFoundError

MANIFEST_NAME = "manifest.json"
# An unfinished build keeps its resumable state here; the manifest is written last.
STATE_DIR = ".build"
FORMAT_NAME = "ngram-engine"
FORMAT_VERSION = 1
TOKEN_DTYPES = {1: "u8", 2: "u16", 4: "u32"}
NUMPY_TOKEN_DTYPES = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4")}
SHARD_FILES = ("tokenized", "table", "offset")
OPTIONAL_SHARD_FILES = ("metadata", "metaoff")
_SHARD_FILE_RE = re.compile(r"^tokenized\.(\d+)$")


def separator_id(token_width: int) -> int:
    """The all-ones token value that starts every document (255, 65535 or 2**32-1)."""
    return (1 << (8 * token_width)) - 1


def pointer_size(ds_bytes: int) -> int:
    """Bytes per suffix-array pointer, as infini-gram computes it: ceil(log2(size) / 8), at least 1."""
    if ds_bytes <= 1:
        return 1
    return max(1, math.ceil(math.log2(ds_bytes) / 8))


def shard_path(directory: Path, kind: str, shard: int) -> Path:
    return Path(directory) / f"{kind}.{shard}"


@contextlib.contextmanager
def atomic_write_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place only if the body succeeds."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: Path, payload: dict) -> None:
    with atomic_write_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def sha256_parts(*parts: bytes) -> str:
    """sha256 over ``parts``, each prefixed by its length (so that no two splits of the same bytes
    hash alike): the tokenizer fingerprints a manifest records, which lm_integration recomputes."""
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def discover_shards(directory: Path) -> list[int]:
    """Shard numbers that have a ``tokenized.s`` file, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexNotFoundError(f"index directory {directory} does not exist")
    shards = sorted(int(m.group(1)) for p in directory.iterdir() if (m := _SHARD_FILE_RE.match(p.name)))
    if not shards:
        raise IndexNotFoundError(
            f"{directory} holds no shard files (tokenized.0, table.0, offset.0); build one with `ngram build`"
        )
    if shards != list(range(len(shards))):
        raise IndexFormatError(f"{directory}: shard numbers {shards} are not 0..{len(shards) - 1}")
    return shards


def check_vocab_size(vocab_size, token_width: int, source: str, error: type = IndexFormatError) -> None:
    """A vocabulary must fit the token width: an id past the separator would alias a smaller one
    (the kernels keep only the low bytes), so its counts would be another token's."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise error(f"{source}: vocab_size must be a positive int, not {vocab_size!r}")
    limit = separator_id(token_width) + 1  # ids up to the separator (which no query may hold)
    if vocab_size > limit:
        raise error(
            f"{source}: vocab_size {vocab_size} does not fit {8 * token_width}-bit tokens (at most {limit}); "
            "pass the vocab_size the index was built with"
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_manifest(manifest, path) -> None:
    """Types and ranges of every manifest field the engine reads (called by read_manifest),
    so a damaged manifest is an IndexFormatError, not a KeyError or ZeroDivisionError later."""
    def bad(what: str):
        raise IndexFormatError(f"{path}: {what}; rebuild the index (or restore its manifest.json)")

    if not isinstance(manifest, dict):
        bad("is not a JSON object")
    version = manifest.get("format_version", 0)
    if manifest.get("format") != FORMAT_NAME or not _is_int(version) or version > FORMAT_VERSION:
        if not _is_int(version):
            bad(f"format_version {version!r} is not an int")
        return  # read_manifest words these
    width = manifest.get("token_width")
    if width not in (1, 2, 4) or not _is_int(width):
        bad(f"token_width {width!r} is not 1, 2 or 4")
    check_vocab_size(manifest.get("vocab_size"), width, str(path))
    eos = manifest.get("eos_token_id")
    if eos is not None and (not _is_int(eos) or not 0 <= eos < manifest["vocab_size"]):
        bad(f"eos_token_id {eos!r} is not an id in the vocabulary")
    for key, kind in (("tokenizer", dict), ("tokenizer_fingerprint", str)):
        if manifest.get(key) is not None and not isinstance(manifest[key], kind):
            bad(f"{key} is not a {kind.__name__}")
    build = manifest.get("build")
    if not isinstance(build, dict) or not isinstance(build.get("options_fingerprint"), str):
        bad("the build record (build.options_fingerprint) is missing")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        bad("shards is not a non-empty list")
    for i, entry in enumerate(shards):
        if not isinstance(entry, dict) or entry.get("shard") != i or not _is_int(entry.get("shard")):
            bad(f"shards[{i}] is not the entry of shard {i}")
        for key, low in (("num_tokens", 1), ("num_docs", 1), ("ptr_size", 1)):
            if not _is_int(entry.get(key)) or entry[key] < low:
                bad(f"shards[{i}].{key} is {entry.get(key)!r}, not an int >= {low}")
        files = entry.get("files")
        if not isinstance(files, dict) or not all(
                isinstance(name, str) and isinstance(meta, dict) and _is_int(meta.get("bytes"))
                and isinstance(meta.get("sha256"), str) for name, meta in files.items()):
            bad(f"shards[{i}].files is not a map of file names to their bytes and sha256")


def read_manifest(directory: Path) -> dict | None:
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise IndexFormatError(f"{path} is not valid JSON ({exc}); rebuild the index or remove the file") from exc
    check_manifest(manifest, path)
    if manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path} is not an {FORMAT_NAME} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format version {manifest['format_version']}; this engine reads up to {FORMAT_VERSION}"
        )
    return manifest


@dataclass
class Shard:
    """The arrays of one shard, memory-mapped read-only (or loaded into RAM)."""

    directory: Path
    number: int
    tokenized: np.ndarray  # uint8, the raw bytes
    table: np.ndarray  # uint8, n_positions * ptr_size
    offsets: np.ndarray  # uint64 byte offsets of document starts
    ptr_size: int
    token_width: int
    metadata: np.ndarray | None = None  # uint8 bytes of JSON lines
    metaoffsets: np.ndarray | None = None  # uint64

    @property
    def num_positions(self) -> int:
        """Tokens including separators: the length of the suffix array."""
        return len(self.tokenized) // self.token_width

    @property
    def num_docs(self) -> int:
        return len(self.offsets)

    def doc_metadata(self, local_doc: int) -> dict | None:
        if self.metadata is None or self.metaoffsets is None:
            return None
        start = int(self.metaoffsets[local_doc])
        end = int(self.metaoffsets[local_doc + 1]) if local_doc + 1 < len(self.metaoffsets) else len(self.metadata)
        raw = bytes(self.metadata[start:end]).strip()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or absurdly nested: a damaged file
            return {"raw": raw.decode("utf-8", errors="replace")}


def advise(buffer: mmap.mmap, advice: str, start: int = 0, length: int | None = None) -> None:
    """madvise ``buffer`` (or its bytes [start, start + length), widened to whole pages) with
    mmap.MADV_<advice>; a no-op where the platform lacks it."""
    option = getattr(mmap, f"MADV_{advice}", None)
    if option is None or not hasattr(buffer, "madvise"):
        return
    end = len(buffer) if length is None else min(len(buffer), start + length)
    start -= start % mmap.PAGESIZE
    if end <= start:
        return
    try:
        buffer.madvise(option, start, end - start)
    except OSError:
        pass


def map_file(path: Path, advice: str = "RANDOM") -> mmap.mmap:
    """A read-only mapping of ``path`` advised MADV_RANDOM: a page fault on it reads that page, not
    the readahead window (megabytes on some disks). Queries jump around an index, so on a cold
    index the default readahead reads mostly bytes no query looks at."""
    with open(path, "rb") as fh:
        buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    advise(buffer, advice)
    return buffer


def mapping_of(arr: np.ndarray) -> mmap.mmap | None:
    """The mmap an array made by _load_array views, or None (RAM, or not ours)."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer's
        base = base.obj
    return base if isinstance(base, mmap.mmap) else None


@contextlib.contextmanager
def read_in_full(*arrays: np.ndarray) -> Iterator[None]:
    """Give mapped arrays the default readahead (MADV_NORMAL) for a pass that touches most of their
    pages (building a search directory), then MADV_RANDOM again."""
    buffers = [b for b in map(mapping_of, arrays) if b is not None]
    for buffer in buffers:
        advise(buffer, "NORMAL")
    try:
        yield
    finally:
        for buffer in buffers:
            advise(buffer, "RANDOM")


def _load_array(path: Path, dtype, load: str) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    if load == "ram":
        arr = np.fromfile(path, dtype=dtype)
    else:
        arr = np.frombuffer(map_file(path), dtype=dtype)  # read-only: the mapping is
    # A plain ndarray view (not the memmap subclass) makes numba dispatch several times faster.
    arr = np.asarray(arr)
    arr.flags.writeable = False
    return arr


def open_shard(directory: Path, number: int, token_width: int, load: str = "mmap") -> Shard:
    """Open one shard's files and check that their sizes agree with each other."""
    directory = Path(directory)
    paths = {kind: shard_path(directory, kind, number) for kind in SHARD_FILES + OPTIONAL_SHARD_FILES}
    for kind in SHARD_FILES:
        if not paths[kind].exists():
            raise IndexFormatError(
                f"{directory}: shard {number} lacks {paths[kind].name}; the build did not finish "
                "(rerun the same `ngram build` command to resume)"
            )
    ds_bytes = paths["tokenized"].stat().st_size
    table_bytes = paths["table"].stat().st_size
    if ds_bytes % token_width:
        raise IndexFormatError(
            f"{paths['tokenized']} has {ds_bytes} bytes, not a multiple of the token width {token_width}; "
            "pass the right token_width (1, 2 or 4)"
        )
    positions = ds_bytes // token_width
    if positions == 0 or table_bytes % positions:
        raise IndexFormatError(
            f"{paths['table']} has {table_bytes} bytes for {positions} positions; the shard is corrupt or the "
            "token width is wrong"
        )
    ptr_size = table_bytes // positions
    if not 1 <= ptr_size <= 8:
        raise IndexFormatError(f"{paths['table']}: pointer size {ptr_size} is outside 1..8; wrong token width?")
    if paths["offset"].stat().st_size % 8:
        raise IndexFormatError(f"{paths['offset']} is not a whole number of u64 offsets")
    has_meta = paths["metadata"].exists() and paths["metaoff"].exists()
    if has_meta and paths["metaoff"].stat().st_size % 8:
        raise IndexFormatError(f"{paths['metaoff']} is not a whole number of u64 offsets; rebuild the shard")
    return Shard(
        directory=directory,
        number=number,
        tokenized=_load_array(paths["tokenized"], np.uint8, load),
        table=_load_array(paths["table"], np.uint8, load),
        offsets=_load_array(paths["offset"], np.dtype("<u8"), load),
        ptr_size=ptr_size,
        token_width=token_width,
        metadata=_load_array(paths["metadata"], np.uint8, load) if has_meta else None,
        metaoffsets=_load_array(paths["metaoff"], np.dtype("<u8"), load) if has_meta else None,
    )


def infer_token_width(directory: Path, shard: int = 0) -> int:
    """Guess the token width of an index without a manifest from its file sizes.

    The table holds one pointer per position and pointers are ceil(log2(bytes)/8) wide, so only
    the right width makes ``table_bytes == positions * pointer_size(ds_bytes)``.
    """
    ds_bytes = shard_path(directory, "tokenized", shard).stat().st_size
    table_bytes = shard_path(directory, "table", shard).stat().st_size
    candidates = [
        w for w in (1, 2, 4) if ds_bytes % w == 0 and ds_bytes and table_bytes == (ds_bytes // w) * pointer_size(ds_bytes)
    ]
    if len(candidates) != 1:
        raise IndexFormatError(
            f"{directory}: cannot infer the token width from file sizes (candidates {candidates}); "
            "pass token_width=1, 2 or 4"
        )
    return candidates[0]
