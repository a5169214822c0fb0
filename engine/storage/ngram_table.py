"""N-gram tables on disk: the file format of frequent n-grams and of SCONE f-gram vocabularies.

Pure numpy (no numba, no grpc), so anything may read these files.

Format: an uncompressed ``.npz`` (a zip of ``.npy`` members, ZIP_STORED, zip64) holding

- ``tokens``  uint32, all n-grams' token ids concatenated;
- ``offsets`` int64, length R + 1: n-gram i is ``tokens[offsets[i]:offsets[i+1]]`` (the
  PackedQueries layout), offsets[0] == 0;
- ``counts``  int64, length R: each n-gram's exact number of occurrences in the index;
- ``meta``    a 0-d unicode array holding a JSON object: ``kind`` ("frequent_ngrams" or
  "fgram_vocab"), ``n_min``, ``n_max``, ``min_count`` (the threshold actually applied),
  ``top_k``, ``num_tokens`` of the index, its ``tokenizer_fingerprint``, ``order``.

Rows are sorted by count descending, then by token ids lexicographically (a prefix before its
extensions). In an f-gram vocabulary the row number is the f-gram id. ``np.load(path)`` reads
it (no pickle needed); :func:`NgramTable.open` can also memory-map the members, because they
are stored uncompressed. lm_integration.fgram.load_fgram_vocab reads the same files.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

TOKENS_DTYPE = np.dtype("<u4")
FORMAT_VERSION = 1

_HEADER_LOCK = threading.Lock()


@dataclass
class NgramTable:
    """R n-grams with counts, in the on-disk order (count descending, then token ids)."""

    tokens: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> tuple[int, ...]:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"n-gram {i} out of range 0..{len(self) - 1}")
        return tuple(int(t) for t in self.tokens[self.offsets[i]:self.offsets[i + 1]])

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __iter__(self) -> Iterator[tuple[tuple[int, ...], int]]:
        """(token ids, count) of every row, in order."""
        for i in range(len(self)):
            yield self[i], int(self.counts[i])

    def to_list(self) -> list[tuple[tuple[int, ...], int]]:
        return list(self)

    def padded(self, pad: int = -1) -> np.ndarray:
        """(R, max length) int64 token ids, right-padded with ``pad``."""
        lengths = self.lengths
        width = int(lengths.max()) if len(lengths) else 0
        out = np.full((len(self), max(width, 1)), pad, dtype=np.int64)
        if len(self):
            rows = np.repeat(np.arange(len(self)), lengths)
            cols = np.arange(len(self.tokens)) - np.repeat(self.offsets[:-1], lengths)
            out[rows, cols] = self.tokens[: self.offsets[-1]]
        return out

    def save(self, path: str | os.PathLike) -> Path:
        with NgramTableWriter(path, len(self), self.meta) as w:
            w.write_counts(np.asarray(self.counts, dtype=np.int64))
            w.write_lengths(np.diff(np.asarray(self.offsets, dtype=np.int64)))
            w.write_tokens(np.asarray(self.tokens))
        return Path(path)

    @classmethod
    def open(cls, path: str | os.PathLike, mmap: bool = True) -> "NgramTable":
        """Read a table file; ``mmap`` maps the big members instead of reading them into memory."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no n-gram table at {path}")
        # numpy parses .npy headers with ast.literal_eval, which CPython 3.11 does not make safe to
        # run on several threads at once ("AST constructor recursion depth mismatch", seen with
        # in-process shard servers loading tables together): one table is read at a time.
        with _HEADER_LOCK:
            if mmap:
                arrays = _npz_memmap(path)
            else:
                with np.load(path) as z:
                    arrays = {k: z[k] for k in z.files}
        for need in ("tokens", "offsets", "counts"):
            if need not in arrays:
                raise ValueError(f"{path} is not an n-gram table: it lacks the {need!r} array")
        meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
        table = cls(arrays["tokens"], arrays["offsets"], arrays["counts"], meta)
        off = table.offsets
        if len(off) == 0 or off[0] != 0 or off[-1] != len(table.tokens) or len(table.counts) != len(off) - 1:
            raise ValueError(f"{path}: offsets and counts do not match the tokens; the file is damaged")
        return table

    def text_rows(self, decode, limit: int | None = None) -> Iterator[str]:
        """``count<TAB>n<TAB>ids<TAB>decoded`` lines (decoded as a JSON string so that spaces,
        newlines and partial characters stay visible)."""
        stop = len(self) if limit is None else min(limit, len(self))
        for i in range(stop):
            ids = self[i]
            try:
                text = decode(list(ids))
            except Exception as exc:  # a decoder may refuse a partial sequence
                text = f"<undecodable: {exc}>"
            yield f"{int(self.counts[i])}\t{len(ids)}\t{' '.join(map(str, ids))}\t{json.dumps(text, ensure_ascii=False)}"


class NgramTableWriter:
    """Writes a table file member by member in bounded memory: counts, then lengths (turned into
    offsets), then tokens, each in as many chunks as the caller likes (call each at least once). Written to a temporary
    name and renamed into place on success."""

    def __init__(self, path: str | os.PathLike, rows: int, meta: dict):
        self.path = Path(path)
        self.rows = rows
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.zf = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        meta = dict(meta, format_version=FORMAT_VERSION, rows=rows)
        self._member("meta.npy", np.array(json.dumps(meta, sort_keys=True)))
        self._stage = None
        self._done: set[str] = set()
        self._written = 0
        self._fh = None
        self._offset = 0

    def _member(self, name: str, arr: np.ndarray) -> None:
        with self.zf.open(name, "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, arr, allow_pickle=False)

    def _begin(self, stage: str, dtype, length: int) -> None:
        if self._fh is not None:
            self._end()
        if stage in self._done:
            raise RuntimeError(f"{stage} was already written; write counts, then lengths, then tokens")
        self._done.add(stage)
        self._stage = stage
        self._expected = length
        self._written = 0
        self._fh = self.zf.open(f"{stage}.npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                  "shape": (length,)}
        np.lib.format.write_array_header_2_0(self._fh, header)

    def _end(self) -> None:
        if self._written != self._expected:
            raise RuntimeError(f"{self._stage}: wrote {self._written} values, expected {self._expected}")
        self._fh.close()
        self._fh = None

    def write_counts(self, counts: np.ndarray) -> None:
        if self._stage != "counts":
            self._begin("counts", np.int64, self.rows)
        self._fh.write(np.ascontiguousarray(counts, dtype="<i8").tobytes())
        self._written += len(counts)

    def write_lengths(self, lengths: np.ndarray) -> None:
        if self._stage != "offsets":
            self._begin("offsets", np.int64, self.rows + 1)
            self._fh.write(np.zeros(1, dtype="<i8").tobytes())
            self._written = 1
        offsets = self._offset + np.cumsum(np.asarray(lengths, dtype=np.int64))
        if len(offsets):
            self._offset = int(offsets[-1])
        self._fh.write(offsets.astype("<i8").tobytes())
        self._written += len(offsets)

    def write_tokens(self, tokens: np.ndarray) -> None:
        if self._stage != "tokens":
            if "offsets" not in self._done:
                raise RuntimeError("write every length before the tokens")
            self._begin("tokens", TOKENS_DTYPE, self._offset)
        self._fh.write(np.ascontiguousarray(tokens, dtype=TOKENS_DTYPE).tobytes())
        self._written += len(tokens)

    def close(self) -> None:
        if self._fh is not None:
            self._end()
        names = {i.filename for i in self.zf.infolist()}
        missing = [m for m in ("counts", "offsets", "tokens") if f"{m}.npy" not in names]
        if missing:
            raise RuntimeError(f"the table lacks its {', '.join(missing)} member(s); write every stage")
        self.zf.close()
        os.replace(self.tmp, self.path)

    def __enter__(self) -> "NgramTableWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._fh is not None:
                self._fh.close()
            self.zf.close()
            self.tmp.unlink(missing_ok=True)


def _npz_memmap(path: Path) -> dict[str, np.ndarray]:
    """Every member of an uncompressed .npz, memory-mapped read-only (compressed ones are read)."""
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        for info in zf.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                with zf.open(info) as fh:
                    out[name] = np.lib.format.read_array(fh, allow_pickle=False)
                continue
            raw.seek(info.header_offset)
            local = raw.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            raw.seek(start)
            version = np.lib.format.read_magic(raw)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(raw)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(raw)
            data_start = raw.tell()
            count = int(np.prod(shape)) if shape else 1
            if count == 0 or shape == () or dtype.hasobject:
                with zf.open(info) as fh:
                    out[name] = np.lib.format.read_array(fh, allow_pickle=False)
                continue
            arr = np.memmap(path, dtype=dtype, mode="r", offset=data_start, shape=shape,
                            order="F" if fortran else "C")
            arr = np.asarray(arr)
            out[name] = arr
    return out
