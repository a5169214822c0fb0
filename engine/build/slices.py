"""Phase 1 of a build as parallel tasks: tokenize slices of the inputs, then assemble the shards.

Used by engine.build.builder for executors whose tasks may run elsewhere (Ray). Every step reads and
writes files under the output directory only, so any machine that mounts it can run any task:

1. The input files are cut into *slices*: runs of consecutive files of roughly equal total size
   (the plan is saved in ``.build/slices.json`` so a resumed build uses the same one).
2. One task per slice streams its documents through the tokenizer and writes a numbered part
   under ``.build/parts``: the documents exactly as a shard stores them (separator + tokens),
   each document's byte length, and its metadata line. ``part-K.json``, written last, marks it
   finished; a rerun skips finished parts.
3. The driver reads the document lengths of all parts (8 bytes a document) and cuts shards with
   the same greedy rule as the serial builder: a shard takes documents while they fit in
   ``shard_bytes``. Because parts are concatenated in input order, the documents, their order and
   the shard boundaries are exactly those of the serial build, whatever the slicing.
4. One task per shard copies its byte ranges out of the parts into ``tokenized.s``, ``offset.s``
   and ``metadata.s``/``metaoff.s`` (temporary names, fsync, rename; a shard whose files all exist
   with the planned sizes is skipped). Then ``.build/tokenized.json`` is written and the parts
   are deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
from array import array
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.errors import BuildError
from engine.build.executors import Executor, Task
from engine.format import NUMPY_TOKEN_DTYPES, separator_id, shard_path, write_json_atomic

PARTS_DIR = "parts"
SLICE_TASK_MEMORY = 1 << 30  # a slice task holds a batch of text (8M chars) and the tokenizer
ASSEMBLE_TASK_MEMORY = 256 << 20
MIN_SLICE_BYTES = 16 << 20
MAX_SLICE_BYTES = 512 << 20

_TOKENIZERS: dict[str, object] = {}


def plan_slices(files: list[Path], parallelism: int) -> list[list[str]]:
    """Consecutive runs of files, about ``total / (4 * parallelism)`` bytes each (clamped to
    16 MB..512 MB), so that every worker gets several tasks and the last ones finish together."""
    sizes = [f.stat().st_size for f in files]
    target = sum(sizes) // max(1, 4 * parallelism)
    target = min(MAX_SLICE_BYTES, max(MIN_SLICE_BYTES, target))
    slices: list[list[str]] = []
    current: list[str] = []
    current_bytes = 0
    for path, size in zip(files, sizes):
        if current and current_bytes + size > target:
            slices.append(current)
            current, current_bytes = [], 0
        current.append(str(path))
        current_bytes += size
    if current:
        slices.append(current)
    return slices


@contextlib.contextmanager
def _replacing(tmp: dict[str, Path], final):
    """Files ``tmp`` (kind -> temporary path) open for writing; when the block ends without an error
    each is synced and moved to ``final(kind)``, and on any error none is left behind (a killed task
    leaves only temporary names, which no reader takes for a finished file)."""
    fh = {k: open(p, "wb") for k, p in tmp.items()}
    try:
        yield fh
        for k, f in fh.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp[k], final(k))
    finally:
        for k, f in fh.items():
            f.close()
            if tmp[k].exists():
                tmp[k].unlink()


def _part(parts: Path, index: int, kind: str) -> Path:
    return parts / f"part-{index:06d}.{kind}"


def _load_tokenizer(spec: dict, base_dir: str):
    from engine.tokenizers import load_tokenizer

    key = json.dumps([spec, base_dir], sort_keys=True)
    tok = _TOKENIZERS.get(key)
    if tok is None:
        _TOKENIZERS.clear()
        tok = _TOKENIZERS[key] = load_tokenizer(spec, base_dir=base_dir)
    return tok


def tokenize_slice(out: str, index: int, files: list[str], options, tokenizer_spec: dict | None,
                   cwd: str | None = None) -> dict:
    """Task: tokenize the documents of ``files`` into part ``index``; return its summary.

    Relative input paths are opened from ``cwd`` (the driver's working directory) but recorded in
    the metadata as given, exactly as the serial builder records them.
    """
    if cwd is not None and any(not os.path.isabs(f) for f in files) and os.getcwd() != cwd:
        previous = os.getcwd()
        os.chdir(cwd)  # a Ray worker runs one task at a time
        try:
            return tokenize_slice(out, index, files, options, tokenizer_spec)
        finally:
            os.chdir(previous)
    from engine.build.readers import chain_first, iter_documents, text_stream, token_stream

    parts = Path(out) / ".build" / PARTS_DIR
    done = _part(parts, index, "json")
    if done.exists():
        return json.loads(done.read_text())
    width = options.token_width
    dtype = NUMPY_TOKEN_DTYPES[width]
    separator = np.full(1, separator_id(width), dtype=dtype).tobytes()
    limit = min(options.vocab_size, separator_id(width))

    source = iter(iter_documents(files, text_field=options.text_field, line_per_doc=options.line_per_doc))
    first = next(source, None)
    kind = None if first is None else ("tokens" if first.tokens is not None else "text")
    if first is None:
        stream = iter(())
    elif kind == "tokens":
        stream = token_stream(chain_first(first, source))
    else:
        if tokenizer_spec is None:
            raise BuildError("text documents need a tokenizer; pass tokenizer='bytes', 'gpt2', a tokenizer.json "
                             "path, ...")
        tok = _load_tokenizer(tokenizer_spec, str(Path(out) / "tokenizer"))
        # One document at a time on this task's one CPU (encode_serial: no backend threads competing
        # for the core; tiktoken straight into an array): the same ids as the serial builder's.
        stream = ((tok.encode_serial(text), metadata) for text, metadata in text_stream(chain_first(first, source)))

    kinds = ("tokens", "lens") + (("meta", "metalens") if options.metadata else ())
    tmp = {k: parts / f".part-{index:06d}.{k}.tmp-{os.getpid()}" for k in kinds}
    lens = array("Q")
    metalens = array("Q")
    total = meta_total = 0
    with _replacing(tmp, lambda k: _part(parts, index, k)) as fh:
        for n, (tokens, metadata) in enumerate(stream):
            if tokens.size and (tokens.min() < 0 or tokens.max() >= limit):
                where = f" ({metadata['path']})" if isinstance(metadata, dict) and "path" in metadata else ""
                raise BuildError(
                    f"document {n} of input slice {index}{where} has token ids outside 0..{limit - 1}; "
                    "pass the right vocab_size / tokenizer"
                )
            payload = separator + tokens.astype(dtype, copy=False).tobytes()
            fh["tokens"].write(payload)
            lens.append(len(payload))
            total += len(payload)
            if options.metadata:
                line = (json.dumps(metadata, ensure_ascii=False) if metadata else "").encode() + b"\n"
                fh["meta"].write(line)
                metalens.append(len(line))
                meta_total += len(line)
        fh["lens"].write(lens.tobytes())
        if options.metadata:
            fh["metalens"].write(metalens.tobytes())
    summary = {"part": index, "kind": kind, "docs": len(lens), "bytes": total, "meta_bytes": meta_total}
    write_json_atomic(done, summary)
    return summary


def _copy_range(src, dst, start: int, length: int) -> None:
    src.seek(start)
    remaining = length
    while remaining:
        block = src.read(min(remaining, 16 << 20))
        if not block:
            raise BuildError(f"{src.name} ended early; remove the .build folder and rebuild")
        dst.write(block)
        remaining -= len(block)


def _exclusive_cumsum(lengths: np.ndarray) -> np.ndarray:
    starts = np.zeros(len(lengths) + 1, dtype=np.uint64)
    np.cumsum(lengths, dtype=np.uint64, out=starts[1:])
    return starts


def assemble_shard(out: str, shard: int, pieces: list[tuple[int, int, int]], metadata: bool) -> dict:
    """Task: write shard ``shard`` from the document ranges ``pieces`` = [(part, first, end), ...]."""
    out_dir = Path(out)
    parts = out_dir / ".build" / PARTS_DIR
    kinds = ("tokenized", "offset") + (("metadata", "metaoff") if metadata else ())
    tmp = {k: out_dir / f".{k}.{shard}.partial" for k in kinds}
    position = meta_position = docs = 0
    with _replacing(tmp, lambda k: shard_path(out_dir, k, shard)) as fh:
        for part, first, end in pieces:
            lens = np.fromfile(_part(parts, part, "lens"), dtype="<u8")
            starts = _exclusive_cumsum(lens)
            with open(_part(parts, part, "tokens"), "rb") as src:
                _copy_range(src, fh["tokenized"], int(starts[first]), int(starts[end] - starts[first]))
            fh["offset"].write((starts[first:end] - starts[first] + np.uint64(position)).astype("<u8").tobytes())
            position += int(starts[end] - starts[first])
            docs += end - first
            if metadata:
                mlens = np.fromfile(_part(parts, part, "metalens"), dtype="<u8")
                mstarts = _exclusive_cumsum(mlens)
                with open(_part(parts, part, "meta"), "rb") as src:
                    _copy_range(src, fh["metadata"], int(mstarts[first]), int(mstarts[end] - mstarts[first]))
                fh["metaoff"].write(
                    (mstarts[first:end] - mstarts[first] + np.uint64(meta_position)).astype("<u8").tobytes())
                meta_position += int(mstarts[end] - mstarts[first])
    return {"shard": shard, "bytes": position, "num_docs": docs}


def _shard_files_complete(out: Path, shard: int, expected: dict[str, int]) -> bool:
    for kind, size in expected.items():
        path = shard_path(out, kind, shard)
        if not path.exists() or path.stat().st_size != size:
            return False
    return True


def plan_shards(lens: np.ndarray, shard_bytes: int) -> list[tuple[int, int]]:
    """Document ranges [first, end) of each shard: the serial builder's greedy cut, computed with
    one binary search per shard over the cumulative document sizes."""
    cum = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])
    ranges = []
    first = 0
    while first < len(lens):
        end = int(np.searchsorted(cum, cum[first] + shard_bytes, side="right")) - 1
        end = max(end, first + 1)
        ranges.append((first, end))
        first = end
    return ranges


def tokenize_sliced(out: Path, options, executor: Executor, tokenizer_spec: dict | None, progress: bool) -> list[dict]:
    """Phase 1 as tasks (see the module docstring); writes ``.build/tokenized.json``; returns the
    shard list [{"shard", "bytes", "num_docs"}] exactly as the serial builder would."""
    from engine.build.readers import expand_inputs

    build = out / ".build"
    parts = build / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    plan_path = build / "slices.json"
    if plan_path.exists():
        slices = json.loads(plan_path.read_text())["slices"]
    else:
        slices = plan_slices(expand_inputs(list(options.inputs)), executor.parallelism)
        write_json_atomic(plan_path, {"slices": slices})

    tasks = [Task(f"tokenize-{i}", tokenize_slice, (str(out.resolve()), i, files, options, tokenizer_spec, os.getcwd()),
                  memory=SLICE_TASK_MEMORY)
             for i, files in enumerate(slices) if not _part(parts, i, "json").exists()]
    bar = tqdm(total=len(slices), initial=len(slices) - len(tasks), desc="tokenizing", unit=" slices",
               disable=not progress)
    for _ in executor.run(tasks):
        bar.update(1)
    bar.close()

    summaries = [json.loads(_part(parts, i, "json").read_text()) for i in range(len(slices))]
    kinds = {s["kind"] for s in summaries if s["docs"]}
    if not kinds:
        raise BuildError("the inputs hold no documents; check the paths, globs and --text-field")
    if len(kinds) > 1:
        raise BuildError("a build mixes text and pre-tokenized documents; give one kind only")
    lens = np.concatenate([np.fromfile(_part(parts, i, "lens"), dtype="<u8") for i in range(len(slices))])
    too_big = np.flatnonzero(lens > options.shard_bytes)
    if too_big.size:
        n = int(too_big[0])
        raise BuildError(
            f"document {n} ({int(lens[n])} bytes) is larger than a shard ({options.shard_bytes} bytes); "
            "raise --max-memory"
        )
    if options.metadata:
        metalens = np.concatenate([np.fromfile(_part(parts, i, "metalens"), dtype="<u8")
                                   for i in range(len(slices))])
    part_start = np.concatenate([[0], np.cumsum([s["docs"] for s in summaries])])
    cum = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])

    shards, tasks = [], []
    for number, (first, end) in enumerate(plan_shards(lens, options.shard_bytes)):
        pieces = []
        for i in range(len(slices)):
            lo, hi = max(first, int(part_start[i])), min(end, int(part_start[i + 1]))
            if lo < hi:
                pieces.append((i, lo - int(part_start[i]), hi - int(part_start[i])))
        entry = {"shard": number, "bytes": int(cum[end] - cum[first]), "num_docs": end - first}
        shards.append(entry)
        expected = {"tokenized": entry["bytes"], "offset": 8 * entry["num_docs"]}
        if options.metadata:
            expected.update(metadata=int(metalens[first:end].sum()), metaoff=8 * entry["num_docs"])
        if not _shard_files_complete(out, number, expected):
            tasks.append(Task(f"assemble-{number}", assemble_shard, (str(out.resolve()), number, pieces, options.metadata),
                              memory=ASSEMBLE_TASK_MEMORY))
    for _ in executor.run(tasks):
        pass
    write_json_atomic(build / "tokenized.json", {"shards": shards})
    import shutil

    shutil.rmtree(parts, ignore_errors=True)
    plan_path.unlink(missing_ok=True)
    return shards
