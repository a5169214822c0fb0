"""Input documents for the index builder: text, JSONL (plain, .gz, .zst), Parquet and pre-tokenized .npz.

:func:`expand_inputs` turns files, directories and globs into a deterministic list of files;
:func:`iter_documents` streams :class:`RawDocument` objects from them with bounded memory (line by line,
record batch by record batch, or from a memory-mapped token array).

Format by extension (``fmt="auto"``):

==============================  =============================================================
``.jsonl`` ``.ndjson`` (+ ``.gz``/``.zst``)  one JSON object per line; text from ``text_field``, the
                                          other fields are the metadata
``.parquet``                    column ``text_field`` is the text, the other columns the metadata
``.npz``                        arrays ``tokens`` (1-D ints) and ``offsets`` (n_docs + 1 starts)
anything else (``.txt``, ...)   plain text (``.gz``/``.zst`` decompressed), one document per file,
                                or per non-empty line with ``line_per_doc=True``
==============================  =============================================================
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from engine.errors import BuildError

__all__ = ["FORMATS", "RawDocument", "chain_first", "detect_format", "expand_inputs", "iter_documents", "text_stream",
           "token_stream"]

FORMATS = ("auto", "text", "jsonl", "parquet", "npz")
_COMPRESSED = (".gz", ".zst", ".zstd")
_GLOB_CHARS = set("*?[")


@dataclass
class RawDocument:
    """One input document: either ``text`` or pre-tokenized ``tokens`` is set."""

    text: str | None
    tokens: np.ndarray | None
    metadata: dict | None


def _as_list(inputs) -> list:
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    return list(inputs)


def _walk(directory: Path) -> list[Path]:
    out: list[Path] = []
    for root, dirs, files in os.walk(directory, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(Path(root) / f for f in files if not f.startswith("."))
    return sorted(out)


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files, directories (recursively; hidden entries skipped) and glob patterns (``**``
    allowed) into files. Each input's matches are sorted; inputs keep their order; duplicates are
    dropped. Raises :class:`BuildError` naming every input that matches nothing."""
    result: list[Path] = []
    seen: set[Path] = set()
    missing: list[str] = []
    items = _as_list(inputs)
    if not items:
        raise BuildError("no inputs given; pass files, directories or glob patterns")
    for item in items:
        s = os.fspath(item)
        p = Path(s).expanduser()
        if p.is_file():
            matches = [p]
        elif p.is_dir():
            matches = _walk(p)
        elif _GLOB_CHARS & set(s):
            matches = []
            for m in sorted(glob.glob(os.path.expanduser(s), recursive=True)):
                mp = Path(m)
                if mp.is_file():
                    matches.append(mp)
                elif mp.is_dir():
                    matches.extend(_walk(mp))
        else:
            matches = []
        if not matches:
            missing.append(s)
            continue
        for m in matches:
            key = m.resolve()
            if key not in seen:
                seen.add(key)
                result.append(m)
    if missing:
        raise BuildError(
            f"no input files match {', '.join(repr(m) for m in missing)}; pass existing files, "
            f"directories, or glob patterns such as 'data/**/*.jsonl'"
        )
    return result


def _strip_compression(path: Path) -> tuple[str, str | None]:
    name = path.name.lower()
    for ext in _COMPRESSED:
        if name.endswith(ext):
            return name[: -len(ext)], ext
    return name, None


def detect_format(path: str | os.PathLike) -> str:
    """The reader used for PATH under ``fmt="auto"``: "jsonl", "parquet", "npz" or "text"."""
    name, _ = _strip_compression(Path(path))
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".npz"):
        return "npz"
    return "text"


def _open_text(path: Path) -> IO[str]:
    """Open PATH for text reading (UTF-8, errors replaced), decompressing .gz / .zst on the fly."""
    _, comp = _strip_compression(path)
    if comp == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    if comp in (".zst", ".zstd"):
        import zstandard

        raw = open(path, "rb")
        try:
            stream = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        except Exception:
            raw.close()
            raise
        return io.TextIOWrapper(io.BufferedReader(stream), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _read_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, ValueError)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:  # pragma: no cover
        pass
    return errors


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, line with its ending) of a text file; failing to open it or to read it (a
    truncated or corrupt compressed stream) is a BuildError naming the file and the line."""
    try:
        fh = _open_text(path)
    except OSError as exc:
        raise BuildError(f"{path}: cannot open ({exc})") from exc
    with fh:
        lineno = 0
        try:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line
        except _read_errors() as exc:
            raise BuildError(f"{path}:{lineno + 1}: cannot read ({exc})") from exc


def _read_text(path: Path, line_per_doc: bool) -> Iterator[RawDocument]:
    if not line_per_doc:
        yield RawDocument("".join(line for _, line in _lines(path)), None, {"path": str(path)})
        return
    for lineno, line in _lines(path):
        line = line.rstrip("\r\n")
        if line.strip():
            yield RawDocument(line, None, {"path": str(path), "line": lineno})


def _read_jsonl(path: Path, text_field: str) -> Iterator[RawDocument]:
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise BuildError(f"{path}:{lineno}: invalid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise BuildError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        if text_field not in obj:
            raise BuildError(
                f"{path}:{lineno}: no field {text_field!r} (fields: {sorted(obj)}); "
                f"pass text_field= to name the text field"
            )
        text = obj.pop(text_field)
        if not isinstance(text, str):
            raise BuildError(f"{path}:{lineno}: field {text_field!r} must be a string, got {type(text).__name__}")
        yield RawDocument(text, None, obj or None)


def _read_parquet(path: Path, text_field: str, batch_rows: int = 1024) -> Iterator[RawDocument]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise BuildError(f"{path}: not a readable Parquet file ({exc})") from exc
    names = pf.schema_arrow.names
    if text_field not in names:
        raise BuildError(f"{path}: no column {text_field!r} (columns: {names}); pass text_field= to name it")
    others = [n for n in names if n != text_field]
    row = 0
    for batch in pf.iter_batches(batch_size=batch_rows):
        texts = batch.column(text_field).to_pylist()
        metas = batch.select(others).to_pylist() if others else [None] * len(texts)
        for text, meta in zip(texts, metas):
            if not isinstance(text, str):
                raise BuildError(
                    f"{path}: row {row}: column {text_field!r} must be a string, got "
                    f"{'null' if text is None else type(text).__name__}"
                )
            yield RawDocument(text, None, meta)
            row += 1


def _npz_member(path: Path, zf: zipfile.ZipFile, name: str) -> np.ndarray:
    """Memory-map an uncompressed .npy member of an .npz; load it when compressed."""
    member = f"{name}.npy"
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise BuildError(
            f"{path}: no array {name!r} (arrays: {[n[:-4] for n in zf.namelist()]}); a pre-tokenized .npz "
            f"needs 'tokens' (1-D ints) and 'offsets' (n_docs + 1 document starts)"
        ) from None
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as raw:
            raw.seek(info.header_offset)
            header = raw.read(30)
            if header[:4] == b"PK\x03\x04":
                name_len = int.from_bytes(header[26:28], "little")
                extra_len = int.from_bytes(header[28:30], "little")
                raw.seek(info.header_offset + 30 + name_len + extra_len)
                version = np.lib.format.read_magic(raw)
                if version in ((1, 0), (2, 0)):
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read(raw)
                    if not dtype.hasobject and not fortran:
                        if int(np.prod(shape)) == 0:
                            return np.zeros(shape, dtype=dtype)
                        return np.memmap(path, dtype=dtype, mode="r", offset=raw.tell(), shape=shape)
    with zf.open(member) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def _read_npz(path: Path) -> Iterator[RawDocument]:
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BuildError(f"{path}: not a readable .npz file ({exc})") from exc
    with zf:
        tokens = _npz_member(path, zf, "tokens")
        offsets = np.asarray(_npz_member(path, zf, "offsets"))
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
        raise BuildError(f"{path}: 'tokens' must be a 1-D integer array, got {tokens.dtype} {tokens.shape}")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu" or offsets.size < 1:
        raise BuildError(f"{path}: 'offsets' must be a 1-D integer array of n_docs + 1 document starts")
    offsets = offsets.astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != tokens.size or np.any(np.diff(offsets) < 0):
        raise BuildError(
            f"{path}: 'offsets' must start at 0, never decrease and end at len(tokens) = {tokens.size} "
            f"(got first {int(offsets[0])}, last {int(offsets[-1])}); it holds n_docs + 1 document starts"
        )
    signed = tokens.dtype.kind == "i"
    for i in range(offsets.size - 1):
        doc = tokens[offsets[i]:offsets[i + 1]]
        if doc.size and ((signed and int(doc.min()) < 0) or int(doc.max()) > 0xFFFFFFFF):
            raise BuildError(f"{path}: document {i} holds token ids outside [0, 2**32)")
        yield RawDocument(None, np.array(doc, dtype=np.uint32), None)


def iter_documents(
    inputs: Iterable[str | os.PathLike] | str | os.PathLike,
    *,
    text_field: str = "text",
    line_per_doc: bool = False,
    fmt: str = "auto",
) -> Iterator[RawDocument]:
    """Stream documents from INPUTS (see :func:`expand_inputs`) in a deterministic order.

    ``fmt`` forces one reader for every file ("text", "jsonl", "parquet", "npz"); "auto" picks it by
    extension. Text-file metadata is ``{"path": ...}`` (plus ``"line"`` with ``line_per_doc``); JSONL
    and Parquet metadata are the record's other fields (None when there are none); .npz documents have
    ``tokens`` set and no metadata. Bad records raise :class:`BuildError` naming file and line.
    """
    if fmt not in FORMATS:
        raise BuildError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
    for path in expand_inputs(inputs):
        kind = detect_format(path) if fmt == "auto" else fmt
        if kind == "jsonl":
            yield from _read_jsonl(path, text_field)
        elif kind == "parquet":
            yield from _read_parquet(path, text_field)
        elif kind == "npz":
            yield from _read_npz(path)
        else:
            yield from _read_text(path, line_per_doc)


def chain_first(first, rest):
    """``first`` then the items of ``rest`` (a stream whose first item was read to see its kind)."""
    yield first
    yield from rest


def token_stream(docs) -> Iterator[tuple[np.ndarray, dict | None]]:
    """``(ids, metadata)`` of pre-tokenized documents; BuildError at a text document."""
    for doc in docs:
        if doc.tokens is None:
            raise BuildError("a build mixes text and pre-tokenized documents; give one kind only")
        yield np.asarray(doc.tokens), doc.metadata


def text_stream(docs) -> Iterator[tuple[str, dict | None]]:
    """``(text, metadata)`` of text documents; BuildError at a pre-tokenized document."""
    for doc in docs:
        if doc.text is None:
            raise BuildError("a build mixes text and pre-tokenized documents; give one kind only")
        yield doc.text, doc.metadata
