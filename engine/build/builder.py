"""Build an index: stream documents, tokenize, cut into shards, sort each, write the manifest last.

A build runs in three resumable phases, each leaving a durable marker:
1. tokenize: every shard's ``tokenized``/``offset``/``metadata`` files, then ``.build/tokenized.json``;
2. sort: ``table.s`` for each shard that lacks one (each written atomically, so a present table is
   a finished table);
3. directories and manifest: each shard's search directory (``directory.s``, atomic; engine.storage.directory),
   checksums, then ``manifest.json`` (atomic), then the build-state folder is removed.
Rerunning the same command after a kill resumes at the first unfinished step; an index directory
whose ``.build`` folder still exists is refused by NgramIndex.open as incomplete.

Shard work runs on an executor (engine.build.executors): threads in this process by default, or Ray
(``executor="ray"``), one task per shard sort with its estimated peak memory. With a distributed
executor, phase 1 also runs as tasks over slices of the input files (engine.build.slices); the
files written are byte-identical to the serial build's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import psutil
from tqdm import tqdm

from engine.errors import BuildError, IndexFormatError
from engine.build.executors import Executor, Task, make_executor
from engine.format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    STATE_DIR,
    NUMPY_TOKEN_DTYPES,
    TOKEN_DTYPES,
    file_sha256,
    pointer_size,
    read_manifest,
    separator_id,
    shard_path,
    write_json_atomic,
)
from engine.build.sorting import MAX_SHARD_BYTES, sort_peak_bytes, sort_shard

ENGINE_VERSION = "0.1.0"


@dataclass(frozen=True)
class BuildOptions:
    """What determines the bytes of an index; a resumed build must be given the same."""

    inputs: tuple[str, ...]
    tokenizer: str | None
    text_field: str
    line_per_doc: bool
    shard_bytes: int
    token_width: int
    vocab_size: int
    metadata: bool

    def fingerprint(self) -> str:
        # shard_bytes is left out: by default it follows the memory available at the time, which
        # differs between a build and its resumption; a resumed build reuses the recorded plan.
        identity = {k: v for k, v in self.__dict__.items() if k != "shard_bytes"}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def default_max_memory() -> int:
    """60% of the memory available now: room for the sort and for the page cache."""
    return int(psutil.virtual_memory().available * 0.6)


def plan_shard_bytes(max_memory: int, token_width: int) -> int:
    """Largest shard (in bytes of tokenized data) whose sort fits in ``max_memory``."""
    shard_bytes = min(MAX_SHARD_BYTES, max_memory // 6)
    shard_bytes -= shard_bytes % token_width
    if shard_bytes < 1 << 16:
        raise BuildError(f"--max-memory {max_memory} bytes is too small to sort a shard; give at least 1 MB")
    return shard_bytes


class _ShardWriter:
    """Appends documents to one shard's files under temporary names; ``finish`` renames them."""

    def __init__(self, directory: Path, number: int, with_metadata: bool):
        self.directory = directory
        self.number = number
        self.files = {"tokenized": None, "offset": None}
        if with_metadata:
            self.files.update({"metadata": None, "metaoff": None})
        self._tmp = {k: directory / f".{k}.{number}.partial" for k in self.files}
        self._fh = {k: open(p, "wb") for k, p in self._tmp.items()}
        self.bytes = 0
        self.docs = 0
        self.meta_bytes = 0

    def add_batch(self, payload: np.ndarray, sizes: np.ndarray, metadatas: list) -> None:
        """Append documents: ``payload`` holds each one's separator and tokens, ``sizes`` their lengths
        in tokens, ``metadatas`` their metadata (dicts or None)."""
        nbytes = sizes * payload.itemsize
        self._fh["offset"].write(_starts(nbytes, self.bytes).tobytes())
        self._fh["tokenized"].write(memoryview(np.ascontiguousarray(payload)).cast("B"))
        self.bytes += int(nbytes.sum())
        self.docs += len(sizes)
        if "metadata" in self._fh:
            lines = [(_metadata_json(m) if m else "").encode() + b"\n" for m in metadatas]
            lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
            self._fh["metaoff"].write(_starts(lengths, self.meta_bytes).tobytes())
            block = b"".join(lines)
            self._fh["metadata"].write(block)
            self.meta_bytes += len(block)

    def finish(self) -> dict:
        for kind, fh in self._fh.items():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(self._tmp[kind], shard_path(self.directory, kind, self.number))
        return {"shard": self.number, "bytes": self.bytes, "num_docs": self.docs}


# json.dumps(m, ensure_ascii=False) without making an encoder for every document.
_metadata_json = json.JSONEncoder(ensure_ascii=False).encode


def _starts(lengths: np.ndarray, first: int) -> np.ndarray:
    """Little-endian u64 start of each of consecutive pieces of ``lengths``, the first at ``first``."""
    starts = np.empty(len(lengths), dtype=np.int64)
    starts[0] = first
    np.cumsum(lengths[:-1], out=starts[1:])
    starts[1:] += first
    return starts.astype("<u8")


def _token_batches(options: "BuildOptions", documents, workers: int,
                   tokenizer=None) -> Iterator[tuple[np.ndarray, np.ndarray, int, list]]:
    """``(payload, sizes, bad, metadatas)`` for runs of documents, in input order: the documents as a
    shard stores them (separator + tokens, in the index's dtype), each one's size in tokens, and
    the position in the run of the first document with an id outside the vocabulary (-1: none).

    A build is either all text (tokenized in parallel, streaming) or all pre-tokenized; the
    first document decides which. ``tokenizer``: the loaded options.tokenizer, when the caller has it.
    """
    from engine.build.readers import chain_first, iter_documents, text_stream, token_stream

    if documents is not None:
        source = (_as_raw_document(d) for d in documents)
    else:
        source = iter_documents(list(options.inputs), text_field=options.text_field, line_per_doc=options.line_per_doc)
    source = iter(source)
    first = next(source, None)
    if first is None:
        raise BuildError("the inputs hold no documents; check the paths, globs and --text-field")
    rest = chain_first(first, source)
    limit = min(options.vocab_size, separator_id(options.token_width))
    if first.tokens is not None:
        dtype = NUMPY_TOKEN_DTYPES[options.token_width]
        separator = np.full(1, separator_id(options.token_width), dtype=dtype)
        for tokens, metadata in token_stream(rest):
            bad = bool(tokens.size and (tokens.min() < 0 or tokens.max() >= limit))
            payload = separator if bad else np.concatenate([separator, tokens.astype(dtype, copy=False)])
            yield payload, np.array([tokens.size + 1], dtype=np.int64), 0 if bad else -1, [metadata]
        return
    if options.tokenizer is None:
        raise BuildError("text documents need a tokenizer; pass tokenizer='bytes', 'gpt2', a tokenizer.json path, ...")
    from engine.tokenizers import tokenize_to_payloads

    for payload, sizes, highest, metadatas in tokenize_to_payloads(text_stream(rest), tokenizer or options.tokenizer,
                                                                   workers, options.token_width):
        wrong = np.flatnonzero(highest >= limit)
        yield payload, sizes, int(wrong[0]) if wrong.size else -1, metadatas


def _as_raw_document(doc):
    from engine.build.readers import RawDocument

    if isinstance(doc, RawDocument):
        return doc
    if isinstance(doc, str):
        return RawDocument(text=doc, tokens=None, metadata=None)
    return RawDocument(text=None, tokens=np.asarray(doc), metadata=None)


def _tokenize_phase(out: Path, options: BuildOptions, documents, workers: int, progress: bool,
                    executor: Executor | None = None, tokenizer_spec: dict | None = None,
                    tokenizer=None) -> list[dict]:
    """Phase 1: write every shard's token, offset and metadata files; return the shard list."""
    state = out / STATE_DIR / "tokenized.json"
    if state.exists():
        return json.loads(state.read_text())["shards"]
    if executor is not None and executor.distributed and documents is None:
        from engine.build.slices import tokenize_sliced

        return tokenize_sliced(out, options, executor, tokenizer_spec, progress)
    shards: list[dict] = []
    writer: _ShardWriter | None = None
    width = options.token_width
    limit = min(options.vocab_size, separator_id(width))
    bar = tqdm(desc="tokenizing", unit=" docs", disable=not progress, mininterval=1.0)
    done = 0  # documents before this run
    for payload, sizes, bad, metadatas in _token_batches(options, documents, workers, tokenizer):
        doc_bytes = sizes * width
        too_big = np.flatnonzero(doc_bytes > options.shard_bytes)
        if bad >= 0 and (not too_big.size or bad <= too_big[0]):
            raise BuildError(
                f"document {done + bad} has token ids outside 0..{limit - 1}; pass the right vocab_size / tokenizer"
            )
        if too_big.size:
            n = int(too_big[0])
            raise BuildError(
                f"document {done + n} ({int(doc_bytes[n])} bytes) is larger than a shard ({options.shard_bytes} "
                "bytes); raise --max-memory"
            )
        # The greedy cut: a shard takes documents while they fit in shard_bytes.
        ends = np.cumsum(doc_bytes)
        first = 0
        while first < len(sizes):
            if writer is None:
                writer = _ShardWriter(out, len(shards), options.metadata)
            base = int(ends[first - 1]) if first else 0
            end = int(np.searchsorted(ends, base + options.shard_bytes - writer.bytes, side="right"))
            if end == first:
                shards.append(writer.finish())
                writer = None
                continue
            writer.add_batch(payload[base // width:int(ends[end - 1]) // width], sizes[first:end], metadatas[first:end])
            first = end
        done += len(sizes)
        bar.update(len(sizes))
    bar.close()
    if writer is None:
        raise BuildError("the inputs hold no documents; check the paths, globs and --text-field")
    shards.append(writer.finish())
    write_json_atomic(state, {"shards": shards})
    return shards


def _sort_one(args: tuple[str, int, int]) -> int:
    directory, shard, token_width = args
    return sort_shard(Path(directory), shard, token_width)


def _sort_phase(out: Path, shards: list[dict], token_width: int, executor: Executor, progress: bool) -> None:
    """Phase 2: sort every shard that has no finished table, one task each, as many at once as the
    executor's memory allows (locally: threads suffice, divsufsort and numba release the GIL)."""
    todo = [s for s in shards if not _table_complete(out, s, token_width)]
    tasks = [Task(f"sort-{s['shard']}", _sort_one, ((str(out.resolve()), s["shard"], token_width),),
                  memory=sort_peak_bytes(s["bytes"], token_width)) for s in todo]
    bar = tqdm(total=len(todo), desc="sorting", unit=" shards", disable=not progress or not todo)
    for _ in executor.run(tasks):
        bar.update(1)
    bar.close()


def _table_complete(out: Path, shard: dict, token_width: int) -> bool:
    table = shard_path(out, "table", shard["shard"])
    positions = shard["bytes"] // token_width
    return table.exists() and table.stat().st_size == positions * pointer_size(shard["bytes"])


def _manifest_phase(out: Path, options: BuildOptions, shards: list[dict], tokenizer_spec: dict | None,
                    tokenizer_fingerprint: str | None, eos_token_id: int | None, started: float,
                    how: dict | None = None, directory_budget: int | None = None) -> dict:
    """Phase 3: checksum every file and write manifest.json last."""
    shard_entries = []
    for s in shards:
        n = s["shard"]
        files = {}
        for kind in ("tokenized", "table", "offset", "metadata", "metaoff", "directory"):
            path = shard_path(out, kind, n)
            if path.exists():
                files[path.name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        shard_entries.append({
            "shard": n,
            "num_tokens": s["bytes"] // options.token_width,
            "num_docs": s["num_docs"],
            "ptr_size": pointer_size(s["bytes"]),
            "files": files,
        })
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "infinigram_version": 4,
        "token_dtype": TOKEN_DTYPES[options.token_width],
        "token_width": options.token_width,
        "vocab_size": options.vocab_size,
        "separator_id": separator_id(options.token_width),
        "eos_token_id": eos_token_id,
        "tokenizer": tokenizer_spec,
        "tokenizer_fingerprint": tokenizer_fingerprint,
        "num_tokens": sum(e["num_tokens"] for e in shard_entries),
        "num_docs": sum(e["num_docs"] for e in shard_entries),
        "shards": shard_entries,
        "build": {
            "engine_version": ENGINE_VERSION,
            "options_fingerprint": options.fingerprint(),
            "inputs": list(options.inputs),
            "shard_bytes": options.shard_bytes,
            "metadata": options.metadata,
            "directory_budget": directory_budget,
            "seconds": round(time.time() - started, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(how or {}),
        },
    }
    write_json_atomic(out / MANIFEST_NAME, manifest)
    return manifest


def build_index(
    output_dir: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] | None = None,
    *,
    documents: Iterable | None = None,
    tokenizer: str | os.PathLike | None = "bytes",
    text_field: str = "text",
    line_per_doc: bool = False,
    vocab_size: int | None = None,
    eos_token_id: int | None = None,
    max_memory: int | None = None,
    shard_bytes: int | None = None,
    workers: int | None = None,
    metadata: bool = True,
    overwrite: bool = False,
    progress: bool = False,
    executor: str | Executor = "local",
    ray_address: str | None = None,
    serve_targets: Iterable[str] | None = None,
    directory_budget: int | None = None,
) -> Path:
    """Build (or resume building) an index in ``output_dir``; return its path.

    Give ``inputs`` (files, directories, globs of text / JSONL / Parquet / .npz) or ``documents``
    (an iterable of strings or of token-id arrays). ``tokenizer`` is a spec for
    engine.tokenizers.load_tokenizer ("bytes", "gpt2", a tokenizer.json, a .tiktoken or .model
    file), or None for pre-tokenized documents, which then need ``vocab_size``. Shards are sized
    so that sorting one fits in ``max_memory`` bytes (default: 60% of available memory), or
    exactly ``shard_bytes`` when given.

    ``executor`` runs the shard tasks: "local" (threads here), "ray" (an embedded Ray, or the
    cluster at ``ray_address``) or an engine.build.executors.Executor instance. Every executor writes
    the same bytes. ``serve_targets`` (shard-server addresses) also writes, once the index is
    complete, per-server views and the router's ``shardmap.json`` (engine.build.shardmap).

    Each shard's search directory is written as ``directory.N`` (engine.storage.directory), its samples
    fitting ``directory_budget`` bytes (default engine.storage.directory.DEFAULT_BUDGET), so that opening
    the index reads nothing proportional to it.
    """
    started = time.time()
    out = Path(output_dir)
    if (inputs is None) == (documents is None):
        raise BuildError("give exactly one of inputs=[paths...] or documents=[...]")
    workers = workers or max(1, os.cpu_count() or 1)
    max_memory = max_memory or default_max_memory()

    tok = None
    if tokenizer is not None:
        from engine.tokenizers import load_tokenizer, token_width_for

        tok = load_tokenizer(tokenizer)
        vocab_size = vocab_size or tok.vocab_size
        token_width = 1 if tok.kind == "bytes" else token_width_for(vocab_size)
        if eos_token_id is None:
            eos_token_id = tok.eos_token_id
    elif vocab_size is None:
        raise BuildError("pre-tokenized input without a tokenizer needs vocab_size=")
    else:
        token_width = 1 if vocab_size <= 255 else (2 if vocab_size <= 65535 else 4)
    if vocab_size > separator_id(token_width) + (1 if token_width == 1 else 0):
        raise BuildError(f"vocab_size {vocab_size} does not fit token width {token_width}")

    options = BuildOptions(
        inputs=tuple(str(p) for p in inputs) if inputs is not None else ("<documents>",),
        tokenizer=str(tokenizer) if tokenizer is not None else None,
        text_field=text_field,
        line_per_doc=line_per_doc,
        shard_bytes=shard_bytes or plan_shard_bytes(max_memory, token_width),
        token_width=token_width,
        vocab_size=vocab_size,
        metadata=metadata,
    )
    if options.shard_bytes > MAX_SHARD_BYTES:
        raise BuildError(f"shard_bytes may be at most {MAX_SHARD_BYTES}")
    if inputs is not None:  # inputs that match nothing fail here, before any folder or progress bar appears
        from engine.build.readers import expand_inputs

        expand_inputs(list(options.inputs))
    try:
        options = _prepare_output(out, options, overwrite)
    except OSError as exc:  # a read-only or missing parent, a file in the way, ...
        raise BuildError(f"cannot write the index to {out} ({exc.strerror or exc}); choose a directory you can "
                         "write to") from exc
    if (out / MANIFEST_NAME).exists():
        # Finished before: a kill between writing the manifest and removing the state leaves the latter.
        shutil.rmtree(out / STATE_DIR, ignore_errors=True)
        return _write_shard_map(out, serve_targets)

    tokenizer_spec = tok.save(out / "tokenizer") if tok is not None else None
    runner = make_executor(executor, ray_address=ray_address, workers=workers, max_memory=max_memory)
    try:
        shards = _tokenize_phase(out, options, documents, workers, progress, runner, tokenizer_spec, tok)
        _release_free_memory()  # the sort's peak starts from what tokenizing left behind
        _sort_phase(out, shards, token_width, runner, progress)
        how = runner.describe() if runner.name != "local" else None
    finally:
        if runner is not executor:  # made here: ours to close (an Executor passed in is the caller's)
            runner.close()
    _remove_stale_temporaries(out)
    from engine.storage.directory import DEFAULT_BUDGET, write_directories

    directory_budget = directory_budget or DEFAULT_BUDGET
    write_directories(out, [s["shard"] for s in shards], token_width, directory_budget, progress=progress)
    _manifest_phase(out, options, shards, tokenizer_spec, tok.fingerprint() if tok else None, eos_token_id, started,
                    how, directory_budget)
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    return _write_shard_map(out, serve_targets)


def _release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc keeps them after large frees)."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files left by a killed task (a worker's kill skips its cleanup); none is running now."""
    for path in list(out.glob(".*.tmp-*")) + list(out.glob(".*.partial")):
        path.unlink(missing_ok=True)


def _write_shard_map(out: Path, serve_targets: Iterable[str] | None) -> Path:
    if serve_targets:  # derived from the finished manifest, so written after it
        from engine.build.shardmap import write_shard_map

        write_shard_map(out, list(serve_targets))
    return out


# What an index directory holds (besides manifest.json and the .build state): shard files, their
# temporaries, the tokenizer copy, per-server views and the router's map. --overwrite removes only these.
_SHARD_FILE = re.compile(r"^(tokenized|table|offset|metadata|metaoff|directory)\.(\d+)$")
_INDEX_TEMPORARY = re.compile(r"^\.[\w.-]+\.(tmp-\d+|partial)$")
_INDEX_EXTRAS = {"tokenizer", "servers", "shardmap.json"}


def _index_entries(out: Path) -> tuple[list[Path], list[Path], bool]:
    """(entries an index build writes, other entries, whether ``out`` is recognisably an index or
    an index build): our manifest, the .build state, or whole shards numbered from 0."""
    ours, others, shards = [], [], {}
    our_manifest = False
    for entry in sorted(out.iterdir()):
        name = entry.name
        match = _SHARD_FILE.match(name)
        if name == MANIFEST_NAME:
            try:  # ours, even if damaged otherwise, when it says so
                our_manifest = json.loads(entry.read_text()).get("format") == FORMAT_NAME
            except (OSError, ValueError, AttributeError):
                our_manifest = False
            (ours if our_manifest else others).append(entry)
        elif name == STATE_DIR and entry.is_dir():
            ours.append(entry)
        elif match and entry.is_file():
            ours.append(entry)
            shards.setdefault(int(match.group(2)), set()).add(match.group(1))
        elif _INDEX_TEMPORARY.match(name) or name in _INDEX_EXTRAS:
            ours.append(entry)
        else:
            others.append(entry)
    whole_shards = bool(shards) and sorted(shards) == list(range(len(shards))) and \
        all({"tokenized", "table", "offset"} <= kinds for kinds in shards.values())
    recognised = our_manifest or (out / STATE_DIR).is_dir() or whole_shards
    return ours, others, recognised


def _not_an_index(out: Path, others: list[Path]) -> BuildError:
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in others[:3])
    what = f"{len(others)} {'entries' if len(others) > 1 else 'entry'} that {'are' if len(others) > 1 else 'is'} " \
        f"not index files (e.g. {names})" if others else "index files of no complete index"
    return BuildError(f"{out} holds {what}; choose an empty or new directory (--overwrite replaces only an index)")


def _check_inputs(out: Path, options: BuildOptions) -> None:
    """Before anything in ``out`` is removed: every input exists, is readable and lies outside it."""
    if options.inputs == ("<documents>",):
        return
    from engine.build.readers import expand_inputs

    files = expand_inputs(list(options.inputs))
    inside = [f for f in files if out.resolve() in f.resolve().parents]
    if inside:
        raise BuildError(f"input {inside[0]} lies inside the output directory {out}; write the index elsewhere")
    unreadable = [f for f in files if not os.access(f, os.R_OK)]
    if unreadable:
        raise BuildError(f"input {unreadable[0]} cannot be read; check its permissions")


def _remove_index(out: Path, entries: list[Path]) -> None:
    """Remove an index's entries (never ``out`` itself or anything else in it). The state folder is
    made first, so an index half removed by a kill is still recognised (as a build) by the rerun."""
    (out / STATE_DIR).mkdir(exist_ok=True)
    for entry in entries:
        if entry.name == STATE_DIR:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    for entry in (out / STATE_DIR).iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _prepare_output(out: Path, options: BuildOptions, overwrite: bool) -> BuildOptions:
    """Create the output folder, or check that an existing one is this same build (to resume).

    Returns the options to build with: a resumed build keeps the shard size it was planned with.
    An existing folder that holds anything but an index is refused; with ``overwrite`` a different
    index is removed, but only once the inputs have been found."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"{out} is a file, not a directory; choose a new or empty directory for the index")
    state_file = out / STATE_DIR / "options.json"
    try:
        manifest = read_manifest(out) if out.exists() else None
    except IndexFormatError:
        manifest = None  # damaged or foreign: not this build (_index_entries tells which)
    same = False
    if manifest is not None:
        same = manifest["build"]["options_fingerprint"] == options.fingerprint()
    elif state_file.exists():
        try:
            same = json.loads(state_file.read_text())["fingerprint"] == options.fingerprint()
        except (ValueError, KeyError, TypeError):  # a state file cut short by a kill: not resumable
            same = False
    existing = out.exists() and any(out.iterdir())
    if existing and not same:
        ours, others, recognised = _index_entries(out)
        if others or not recognised:
            raise _not_an_index(out, others)
        if not overwrite:
            raise BuildError(
                f"{out} already holds a different index or build; choose another directory, or replace it with "
                "`ngram build --overwrite` (overwrite=True in build_index)"
            )
        _check_inputs(out, options)
        _remove_index(out, ours)
    if existing and same and state_file.exists():
        recorded = json.loads(state_file.read_text())["options"]["shard_bytes"]
        return dataclasses.replace(options, shard_bytes=recorded)
    if not existing or not same:
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        write_json_atomic(state_file, {"fingerprint": options.fingerprint(), "options": options.__dict__})
    return options
