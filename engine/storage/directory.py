"""Search directories on disk: written once, memory-mapped when an index opens.

Every shard needs a search directory (engine.kernels.suffix, "search directory"): the suffix-array range
of every first token and the first bytes of every 2**shift-th suffix. Building one reads every
sampled suffix, random reads over the whole suffix array: seconds for a large shard, far more on
a cold disk. So ``ngram build`` writes each shard's directory as ``directory.N`` next to its
files (checksummed in the manifest like them), and an index without one (built by infini-gram,
or by an older version of this engine) gets them from ``ngram index-directory INDEX``, stored
beside the index or, when that directory is read-only, in the user cache
(``$NGRAM_CACHE/directories/<key>``, the key taken from the index's path, file sizes and mtimes).
An index opened without one builds it in memory, as before, and logs a hint to run the command.

File layout (little-endian int64 words): a 4096-byte header (MAGIC, FILE_VERSION, token width,
positions, pointer size, tokenized bytes, directory words, then zeros), then the directory array
exactly as kernels lays it out. Opening checks the header against the shard and the directory's
own layout (so no rank or offset in it can send a kernel outside its arrays) and raises
IndexFormatError naming the file when anything disagrees.

At open the small parts every search reads first (header, first-token table, top level: about
2 MiB per shard) are read into memory; the samples stay on disk behind a MADV_RANDOM mapping at
their place in the same array (one page read per search end on a cold index).
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from engine.kernels import suffix as kernels
from engine.errors import IndexFormatError
from engine.format import atomic_write_path, discover_shards, file_sha256, read_in_full, read_manifest, shard_path
from engine.units import size_arg

log = logging.getLogger("engine.storage.directory")

MAGIC = int.from_bytes(b"NGRAMDIR", "little")
FILE_VERSION = 2  # 2: samples of three words (21 bytes), not two
HEADER_BYTES = 4096
_H_MAGIC, _H_VERSION, _H_TOKEN_WIDTH, _H_POSITIONS, _H_PTR_SIZE, _H_DS_BYTES, _H_WORDS = range(7)
KIND = "directory"  # file name: directory.N
SAMPLE_ENTRY_BYTES = 8 * kernels.SAMPLE_WORDS
DEFAULT_BUDGET = 256 << 20  # bytes of samples per shard: kernels.MAX_SAMPLES_PER_SHARD samples
HINT_POSITIONS = 1 << 24  # shards this large log the hint at WARNING (a few seconds to build)
_CHUNK_SAMPLES = 1 << 18


@dataclass(frozen=True)
class Layout:
    """Where the parts of one shard's directory lie (in int64 words)."""

    shift: int
    n_first: int
    n_samples: int
    n_top: int

    @property
    def samples(self) -> int:
        return kernels.HEADER + 2 * self.n_first

    @property
    def top(self) -> int:
        return self.samples + kernels.SAMPLE_WORDS * self.n_samples

    @property
    def words(self) -> int:
        return self.top + kernels.SAMPLE_WORDS * self.n_top

    @property
    def nbytes(self) -> int:
        return 8 * self.words


def sample_shift(n_positions: int, budget: int = DEFAULT_BUDGET) -> int:
    """log2 of the sampling stride: every 16th suffix, sparser until the samples fit ``budget``
    bytes (the default reproduces kernels.sample_shift)."""
    cap = max(1, int(budget) // SAMPLE_ENTRY_BYTES)
    shift = kernels.MIN_SAMPLE_SHIFT
    while (n_positions >> shift) >= cap:
        shift += 1
    return shift


def layout(n_positions: int, token_width: int, shift: int) -> Layout:
    n_samples = (n_positions + (1 << shift) - 1) >> shift
    return Layout(shift, 1 << (8 * token_width) if token_width < 4 else 0, n_samples,
                  (n_samples + kernels.TOP_STRIDE - 1) >> kernels.TOP_SHIFT)


def directory_bytes(n_positions: int, token_width: int, budget: int = DEFAULT_BUDGET) -> int:
    """Size of a shard's directory under ``budget``."""
    return layout(n_positions, token_width, sample_shift(n_positions, budget)).nbytes


def parse_budget(text: str) -> int:
    budget = size_arg(text)
    if budget < SAMPLE_ENTRY_BYTES:
        import argparse

        raise argparse.ArgumentTypeError(f"a directory budget of {budget} bytes holds no sample; give e.g. 64M")
    return budget


# ------------------------------------------------------------------------------------- building
def build(shard, budget: int = DEFAULT_BUDGET, bar=None, *, shift: int | None = None) -> np.ndarray:
    """One shard's directory under ``budget`` (or with the sample stride 2**``shift``; equal to
    kernels.build_directory's at the default), filled in chunks so that ``bar`` (a tqdm, or None)
    advances by sampled positions."""
    ds, sa, ps, tw = shard.tokenized, shard.table, shard.ptr_size, shard.token_width
    n_pos = shard.num_positions
    lay = layout(n_pos, tw, sample_shift(n_pos, budget) if shift is None else shift)
    out = np.zeros(lay.words, dtype=np.int64)
    out[[kernels.D_SHIFT, kernels.D_FIRST, kernels.D_NFIRST, kernels.D_SAMPLES, kernels.D_NSAMPLES, kernels.D_TOP]] = \
        lay.shift, kernels.HEADER, lay.n_first, lay.samples, lay.n_samples, lay.top
    with read_in_full(ds, sa):  # a small stride samples nearly every page of both
        bad = _fill(shard, lay, out, bar)
    if bad >= 0:
        ptr = int.from_bytes(bytes(sa[bad * ps:(bad + 1) * ps]), "little")
        raise IndexFormatError(
            f"{shard_path(shard.directory, 'table', shard.number)} is corrupt: the pointer at rank {bad} is {ptr} "
            f"(tokenized has {len(ds)} bytes, tokens of {tw}), or the suffixes around it are out of order; run "
            "`ngram verify` and rebuild the index")
    pairs = out[lay.samples:lay.top].reshape(lay.n_samples, kernels.SAMPLE_WORDS)
    out[lay.top:] = pairs[::kernels.TOP_STRIDE].ravel()
    out.flags.writeable = False
    return out


def _fill(shard, lay: Layout, out: np.ndarray, bar) -> int:
    """Fill the first-token table and the samples; -1, or the first bad rank found."""
    ds, sa, ps, tw = shard.tokenized, shard.table, shard.ptr_size, shard.token_width
    n_pos = shard.num_positions
    bad = -1
    if lay.n_first:
        bad = int(kernels.first_key_table(ds, sa, ps, tw, out[kernels.HEADER:lay.samples]))
    for c0 in range(0, lay.n_samples, _CHUNK_SAMPLES):
        if bad >= 0:
            break
        c1 = min(lay.n_samples, c0 + _CHUNK_SAMPLES)
        part = out[lay.samples + kernels.SAMPLE_WORDS * c0:lay.samples + kernels.SAMPLE_WORDS * c1]
        bad = int(kernels.fill_samples(ds, sa[(c0 << lay.shift) * ps:], ps, tw, lay.shift, part))
        if bad >= 0:
            bad += c0 << lay.shift
        if bar is not None:
            bar.update((c1 - c0) << lay.shift if c1 < lay.n_samples else n_pos - (c0 << lay.shift))
    return bad


# ------------------------------------------------------------------------------------- the file
def _file_header(shard, words: int) -> np.ndarray:
    header = np.zeros(HEADER_BYTES // 8, dtype="<i8")
    header[:_H_WORDS + 1] = (MAGIC, FILE_VERSION, shard.token_width, shard.num_positions, shard.ptr_size,
                             len(shard.tokenized), words)
    return header


def write(path: Path, shard, directory: np.ndarray) -> Path:
    """Write ``directory`` (of ``shard``) to ``path`` atomically."""
    with atomic_write_path(Path(path)) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(_file_header(shard, len(directory)).tobytes())
            fh.write(np.ascontiguousarray(directory, dtype="<i8").tobytes())
    return Path(path)


def read(path: Path, shard, load: str = "mmap") -> np.ndarray:
    """The directory in ``path`` for ``shard``, checked (IndexFormatError naming the file on any
    mismatch); memory-mapped (hot parts read in now, samples on demand) or read into RAM."""
    path = Path(path)
    size = path.stat().st_size
    if size < HEADER_BYTES or (size - HEADER_BYTES) % 8:
        raise IndexFormatError(f"{path} is not a search directory ({size} bytes); delete it, then rebuild it "
                               "with `ngram index-directory`")
    header = np.frombuffer(_pread(path, 0, 8 * (_H_WORDS + 1)), dtype="<i8")
    if int(header[_H_MAGIC]) != MAGIC:
        raise IndexFormatError(f"{path} is not a search directory (bad magic); delete it, then rebuild it with "
                               "`ngram index-directory`")
    if int(header[_H_VERSION]) != FILE_VERSION:
        raise IndexFormatError(f"{path} has directory format version {int(header[_H_VERSION])}, this engine reads "
                               f"{FILE_VERSION}; rebuild it with `ngram index-directory`")
    expected = (shard.token_width, shard.num_positions, shard.ptr_size, len(shard.tokenized))
    found = tuple(int(v) for v in header[_H_TOKEN_WIDTH:_H_DS_BYTES + 1])
    words = int(header[_H_WORDS])
    if found != expected or size != HEADER_BYTES + 8 * words:
        raise IndexFormatError(
            f"{path} does not belong to shard {shard.number} as it is now (token width, positions, pointer size, "
            f"bytes: {found} in the file, {expected} on disk; {size} bytes for {words} words); rebuild it with "
            "`ngram index-directory`")
    dr = None
    if load != "ram":
        shift = int.from_bytes(_pread(path, HEADER_BYTES + 8 * kernels.D_SHIFT, 8), "little", signed=True)
        if kernels.MIN_SAMPLE_SHIFT <= shift <= 62:
            lay = layout(shard.num_positions, shard.token_width, shift)
            if lay.words == words:
                dr = _map_samples(path, lay)
    if dr is None:  # RAM asked for, a small directory, no MAP_FIXED here, or a layout check() refuses
        dr = np.fromfile(path, dtype="<i8", offset=HEADER_BYTES)
    check(dr, shard.num_positions, shard.token_width, str(path))
    dr.flags.writeable = False
    return dr


def _pread(path: Path, offset: int, length: int) -> bytes:
    """Those bytes of the file only (no readahead: the rest of a directory is read where needed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


_PROT_READ, _MAP_SHARED, _MAP_FIXED, _MADV_RANDOM = 1, 1, 0x10, 1
_MIN_MAPPED_SAMPLES = 1 << 20  # bytes of samples below which the whole directory is read into memory


def _map_samples(path: Path, lay: Layout) -> np.ndarray | None:
    """The directory as one array whose header, first-token table and top level are read into
    memory now (anonymous pages: every search reads them) and whose samples are the file's pages,
    mapped at their place in the array with MAP_FIXED and advised MADV_RANDOM (a search reads one
    page of them per end). None where that cannot be done (not Linux, pages larger than the file
    header, few samples): the caller reads the file into memory instead."""
    page = mmap.PAGESIZE
    first_page = -(-8 * lay.samples // page) * page  # the whole pages of the samples, in array bytes
    end_page = 8 * lay.top // page * page
    if not sys.platform.startswith("linux") or HEADER_BYTES % page or end_page - first_page < _MIN_MAPPED_SAMPLES:
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    nbytes = lay.nbytes
    region = mmap.mmap(-1, -(-nbytes // page) * page)  # private anonymous; unmapped (overlay too) when freed
    view = memoryview(region)
    try:
        with open(path, "rb") as fh:
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_RANDOM)  # read these bytes, no readahead
            fh.seek(HEADER_BYTES)
            fh.readinto(view[:first_page])
            fh.seek(HEADER_BYTES + end_page)
            fh.readinto(view[end_page:nbytes])
            base = ctypes.addressof(ctypes.c_char.from_buffer(region))
            got = libc.mmap(base + first_page, end_page - first_page, _PROT_READ, _MAP_SHARED | _MAP_FIXED,
                            fh.fileno(), HEADER_BYTES + first_page)
        if got != base + first_page:
            return None
        libc.madvise(base + first_page, end_page - first_page, _MADV_RANDOM)
    finally:
        view.release()
    return np.frombuffer(region, dtype="<i8", count=lay.words)


def _layout_of(dr: np.ndarray) -> Layout:
    return Layout(int(dr[kernels.D_SHIFT]), int(dr[kernels.D_NFIRST]), int(dr[kernels.D_NSAMPLES]),
                  (int(dr[kernels.D_NSAMPLES]) + kernels.TOP_STRIDE - 1) >> kernels.TOP_SHIFT)


def check(dr: np.ndarray, n_positions: int, token_width: int, source: str) -> None:
    """Raise IndexFormatError unless ``dr`` is laid out as a directory of a shard of ``n_positions``
    positions (any sample stride) with every first-token range inside it: what the kernels trust."""
    def bad(what: str):
        raise IndexFormatError(f"{source}: {what}; delete it, then rebuild it with `ngram index-directory`")

    if len(dr) < kernels.HEADER:
        bad("too short for a search directory")
    shift = int(dr[kernels.D_SHIFT])
    if not kernels.MIN_SAMPLE_SHIFT <= shift <= 62:
        bad(f"sample stride 2**{shift} is out of range")
    lay = layout(n_positions, token_width, shift)
    header = (shift, kernels.HEADER, lay.n_first, lay.samples, lay.n_samples, lay.top)
    fields = (kernels.D_SHIFT, kernels.D_FIRST, kernels.D_NFIRST, kernels.D_SAMPLES, kernels.D_NSAMPLES, kernels.D_TOP)
    if tuple(int(dr[f]) for f in fields) != header or len(dr) != lay.words:
        bad(f"its layout does not fit a shard of {n_positions} positions")
    if lay.n_first:
        first = np.asarray(dr[kernels.HEADER:lay.samples])
        lo, hi = first[0::2], first[1::2]
        if lo[0] != 0 or hi[-1] != n_positions or np.any(hi < lo) or np.any(lo[1:] != hi[:-1]):
            bad("its first-token ranges do not tile the shard")


# ------------------------------------------------------------------------------------- where they live
def cache_root() -> Path:
    from engine.fetch import cache_dir

    return cache_dir() / "directories"


def cache_key(index_dir: Path) -> str:
    """Key of an index in the user cache: its resolved path and each shard file's size and mtime."""
    index_dir = Path(index_dir).resolve()
    digest = hashlib.sha256(str(index_dir).encode())
    for n in discover_shards(index_dir):
        for kind in ("tokenized", "table"):
            st = shard_path(index_dir, kind, n).stat()
            digest.update(f"{kind}.{n}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{index_dir.name}-{digest.hexdigest()[:16]}"


def candidates(index_dir: Path, number: int) -> list[Path]:
    """Where shard ``number``'s directory may be, in the order looked at."""
    paths = [shard_path(index_dir, KIND, number)]
    try:
        paths.append(cache_root() / cache_key(index_dir) / f"{KIND}.{number}")
    except OSError:
        pass
    return paths


def find(index_dir: Path, number: int) -> Path | None:
    beside = shard_path(index_dir, KIND, number)
    if beside.is_file():  # the usual case: no cache key (a stat of every shard file) to compute
        return beside
    return next((p for p in candidates(index_dir, number)[1:] if p.is_file()), None)


def open_directories(index_dir: Path, shards, load: str = "mmap",
                     budget: int | None = None) -> list[tuple[np.ndarray, str] | None]:
    """Each shard's (directory, where from): read from its file (beside the index or in the user
    cache); where there is none, None (the caller builds it the default way). Given a ``budget``,
    a directory whose stride differs from the budget's is built in memory now instead. A file
    that does not fit raises IndexFormatError naming it."""
    out = []
    for shard in shards:
        path = find(index_dir, shard.number)
        if path is not None and _older_format(path):
            path = None  # built in memory instead, with the hint; `ngram verify` reports the file
        found = (read(path, shard, load), str(path)) if path is not None else None
        if budget is not None and (found is not None or budget != DEFAULT_BUDGET) and \
                (found is None or int(found[0][kernels.D_SHIFT]) != sample_shift(shard.num_positions, budget)):
            found = (build(shard, budget), "memory")  # a budget asked for and not what the file has
        out.append(found)
    return out


def _older_format(path: Path) -> bool:
    """Whether ``path`` is a directory of an older format than FILE_VERSION (logged at WARNING: a
    server keeps starting after an upgrade, building its directories in memory until
    `ngram index-directory` rewrites them). Anything else wrong with it is left to read()."""
    try:
        header = np.frombuffer(_pread(path, 0, 16), dtype="<i8")
    except OSError:
        return False
    if len(header) < 2 or int(header[_H_MAGIC]) != MAGIC or not 0 < int(header[_H_VERSION]) < FILE_VERSION:
        return False
    log.warning("%s has search directory format %d, older than this engine's %d: building one in memory instead; "
                "run `ngram index-directory %s` once to rewrite it", path, int(header[_H_VERSION]), FILE_VERSION,
                path.parent)
    return True


def hint(paths, n_positions: int, seconds: float) -> None:
    """One line saying that the directories were built in memory, and how not to."""
    level = logging.WARNING if n_positions >= HINT_POSITIONS else logging.INFO
    log.log(level, "%s: no search directory on disk, built one in memory (%.1f s); run `ngram index-directory %s` "
            "once to open instantly", ", ".join(map(str, paths)), seconds, " ".join(map(str, paths)))


# ------------------------------------------------------------------------------------- verify
def verify_problems(index_dir: Path, shard, *, full: bool, samples: int = 100_000, rng=None) -> tuple[list[str], str]:
    """(problems, what was checked) for the directory file of ``shard``: it opens (header and
    layout), its top level repeats its samples, and its first-token ranges and samples equal ones
    built afresh from the table (all of them with ``full``, else about ``samples`` samples in
    blocks at random places)."""
    path = find(index_dir, shard.number)
    if path is None:
        return [], f"shard {shard.number}: no search directory file (built in memory at open)"
    try:
        dr = read(path, shard, "mmap")
    except IndexFormatError as exc:
        return [str(exc)], f"{path.name}: header and layout"
    lay = _layout_of(dr)
    stored = np.asarray(dr[lay.samples:lay.top]).reshape(lay.n_samples, kernels.SAMPLE_WORDS)
    problems = []
    if not np.array_equal(np.asarray(dr[lay.top:]).reshape(-1, kernels.SAMPLE_WORDS), stored[::kernels.TOP_STRIDE]):
        problems.append(f"{path}: its top level does not repeat every {kernels.TOP_STRIDE}th sample")
    if full:
        if not np.array_equal(build(shard, shift=lay.shift), dr):
            problems.append(f"{path} differs from a directory built afresh from table.{shard.number}; rebuild it with "
                            "`ngram index-directory --force`")
        return problems, f"{path.name}: equal to one built afresh"
    rng = rng or np.random.default_rng(0)
    ds, sa, ps, tw = shard.tokenized, shard.table, shard.ptr_size, shard.token_width
    if lay.n_first:
        first = np.zeros(2 * lay.n_first, dtype=np.int64)
        kernels.first_key_table(ds, sa, ps, tw, first)
        if not np.array_equal(first, dr[kernels.HEADER:lay.samples]):
            problems.append(f"{path}: its first-token ranges differ from the table's; rebuild it with "
                            "`ngram index-directory --force`")
    block = 1024
    if lay.n_samples <= samples:
        starts = np.arange(0, lay.n_samples, block)
    else:
        starts = np.unique(rng.integers(0, lay.n_samples - block + 1, size=max(1, samples // block)))
    for c0 in starts.tolist():
        c1 = min(lay.n_samples, c0 + block)
        fresh = np.zeros(kernels.SAMPLE_WORDS * (c1 - c0), dtype=np.int64)
        kernels.fill_samples(ds, sa[(c0 << lay.shift) * ps:], ps, tw, lay.shift, fresh)
        if not np.array_equal(fresh.reshape(-1, kernels.SAMPLE_WORDS), stored[c0:c1]):
            problems.append(f"{path}: samples {c0}..{c1 - 1} differ from the table's; rebuild it with "
                            "`ngram index-directory --force`")
            break
    checked = sum(min(lay.n_samples, c0 + block) - c0 for c0 in starts.tolist())
    return problems, f"{path.name}: layout, first-token ranges and {checked} samples against the table"


# ------------------------------------------------------------------------------------- the command
def _writable(directory: Path) -> bool:
    return os.access(directory, os.W_OK | os.X_OK)


def index_directories(index_dir: str | os.PathLike, budget: int = DEFAULT_BUDGET, *, progress: bool = True,
                      force: bool = False, cache: bool | None = None) -> list[Path]:
    """Build and store the directory of every shard of ``index_dir`` that lacks one (all with
    ``force``): beside the index when it is writable (and recorded in its manifest, if it has one),
    else (or with ``cache=True``) in the user cache. Returns the files."""
    from tqdm import tqdm

    from engine.format import infer_token_width, open_shard

    index_dir = Path(index_dir)
    numbers = discover_shards(index_dir)
    manifest = read_manifest(index_dir)
    width = manifest["token_width"] if manifest else infer_token_width(index_dir)
    beside = _writable(index_dir) if cache is None else not cache
    target = index_dir if beside else cache_root() / cache_key(index_dir)
    target.mkdir(parents=True, exist_ok=True)
    shards = [open_shard(index_dir, n, width) for n in numbers]
    todo = []
    for shard in shards:
        path = shard_path(target, KIND, shard.number)
        current = None
        if path.is_file() and not force:
            try:
                current = read(path, shard, "ram")
            except IndexFormatError:
                current = None
        if current is None or (force or sample_shift(shard.num_positions, budget) != int(current[kernels.D_SHIFT])):
            todo.append(shard)
    written = []
    with tqdm(total=sum(s.num_positions for s in todo), unit="pos", unit_scale=True, desc="search directory",
              disable=not progress or not todo, file=sys.stderr) as bar:
        for shard in todo:
            written.append(write(shard_path(target, KIND, shard.number), shard, build(shard, budget, bar)))
    if beside and manifest is not None and written:
        record_in_manifest(index_dir, budget)
    return [shard_path(target, KIND, s.number) for s in shards]


def write_directories(index_dir: Path, numbers, token_width: int, budget: int = DEFAULT_BUDGET, *,
                      progress: bool = False) -> list[Path]:
    """``ngram build``'s step: write directory.N beside each finished shard that lacks one built
    under ``budget`` (a present one is complete: the write is atomic). Returns the files."""
    from tqdm import tqdm

    from engine.format import open_shard

    shards = [open_shard(index_dir, n, token_width) for n in numbers]
    todo = []
    for shard in shards:
        path = shard_path(index_dir, KIND, shard.number)
        try:
            current = read(path, shard, "ram") if path.is_file() else None
        except IndexFormatError:
            current = None
        if current is None or int(current[kernels.D_SHIFT]) != sample_shift(shard.num_positions, budget):
            todo.append(shard)
    with tqdm(total=sum(s.num_positions for s in todo), unit="pos", unit_scale=True, desc="search directory",
              disable=not progress or not todo, file=sys.stderr) as bar:
        for shard in todo:
            write(shard_path(index_dir, KIND, shard.number), shard, build(shard, budget, bar))
    return [shard_path(index_dir, KIND, s.number) for s in shards]


def record_in_manifest(index_dir: Path, budget: int) -> dict:
    """Add each shard's directory file (bytes, sha256) to the manifest, and the budget."""
    from engine.format import MANIFEST_NAME, write_json_atomic

    manifest = read_manifest(index_dir)
    for entry in manifest["shards"]:
        path = shard_path(index_dir, KIND, entry["shard"])
        if path.is_file():
            entry["files"][path.name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    manifest["build"]["directory_budget"] = int(budget)
    write_json_atomic(Path(index_dir) / MANIFEST_NAME, manifest)
    return manifest


def describe(index) -> list[dict]:
    """Per shard: where its directory came from, its bytes and sample stride (for `ngram info`)."""
    return [{"shard": i, "source": src, "bytes": int(d.nbytes), "sample_stride": 1 << int(d[kernels.D_SHIFT])}
            for i, (d, src) in enumerate(zip(index._dirs, index.directory_sources))]
