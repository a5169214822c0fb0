"""Parallel streaming tokenization for the index builder: documents in, shard-ready payloads out."""

from __future__ import annotations

import collections
import json
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from engine.tokenizers.base import Tokenizer
from engine.tokenizers.load import load_tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from tqdm import tqdm

__all__ = ["encode_shard_payload", "tokenize_stream", "tokenize_to_payloads"]


_WORKER_CACHE: dict[str, Tokenizer] = {}


def _worker_tokenizer(spec_json: str) -> Tokenizer:
    tok = _WORKER_CACHE.get(spec_json)
    if tok is None:
        _WORKER_CACHE.clear()
        tok = _WORKER_CACHE[spec_json] = load_tokenizer(json.loads(spec_json))
    return tok


def _worker_encode(spec_json: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    # One document after another on this process's thread: the pool already has a process per core,
    # and a backend's own batch threads would only compete with it for the cores.
    tok = _worker_tokenizer(spec_json)
    arrays = [tok.encode_serial(t) for t in texts]
    lengths = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint32)
    return flat.astype(np.uint32, copy=False), lengths


def encode_shard_payload(tok: Tokenizer, texts: Sequence[str], token_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode ``texts`` straight into the bytes a shard stores: per document, the separator then its ids.

    Returns ``(payload, sizes, highest)``: ``payload`` in the width's little-endian dtype, each
    document's size in tokens (its ids plus the separator), and each document's largest id (-1 when
    it has none), by which the caller rejects ids that do not fit below the separator.
    """
    dtype = np.dtype(f"<u{token_width}")
    arrays = [tok.encode_serial(t) for t in texts]
    count = len(arrays)
    sizes = np.fromiter((a.size + 1 for a in arrays), dtype=np.int64, count=count)
    highest = np.fromiter((int(a.max()) if a.size else -1 for a in arrays), dtype=np.int64, count=count)
    payload = np.empty(int(sizes.sum()), dtype=dtype)
    ends = np.cumsum(sizes)
    payload[ends - sizes] = (1 << (8 * token_width)) - 1
    for a, end in zip(arrays, ends.tolist()):
        if a.size:
            payload[end - a.size:end] = a  # an id too wide for the dtype is caught by ``highest``
    return payload, sizes, highest


def _worker_payload(spec_json: str, texts: list[str], token_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return encode_shard_payload(_worker_tokenizer(spec_json), texts, token_width)


def _batches(docs: Iterable[tuple[Any, dict | None]], batch_docs: int, batch_chars: int):
    batch: list[tuple[Any, dict | None]] = []
    chars = 0
    for item in docs:
        try:
            text, meta = item
        except (TypeError, ValueError):
            raise TypeError(f"tokenize_stream takes (text, metadata) pairs, got {type(item).__name__}") from None
        if isinstance(text, str):
            chars += len(text)
        elif isinstance(text, np.ndarray):
            chars += text.size
        else:
            raise TypeError(f"document text must be str (or a pre-tokenized array), got {type(text).__name__}")
        batch.append((text, meta))
        if len(batch) >= batch_docs or chars >= batch_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _assemble(batch, encoded: Iterator[np.ndarray]):
    for text, meta in batch:
        if isinstance(text, str):
            yield next(encoded), meta
        else:
            yield np.asarray(text, dtype=np.uint32), meta


def _split(flat: np.ndarray, lengths: np.ndarray) -> Iterator[np.ndarray]:
    start = 0
    for n in lengths.tolist():
        yield flat[start:start + n]
        start += n


def tokenize_stream(
    docs: Iterable[tuple[str, dict | None]],
    spec: "dict | str | os.PathLike | Tokenizer",
    workers: int,
    batch_docs: int = 256,
    progress: "tqdm | None" = None,
    *,
    batch_chars: int = 1 << 23,
    base_dir: str | os.PathLike | None = None,
) -> Iterator[tuple[np.ndarray, dict | None]]:
    """Tokenize ``(text, metadata)`` pairs; yield ``(uint32 ids, metadata)`` in input order.

    With ``workers > 1`` batches go to a pool of spawned processes (each loads the tokenizer once);
    at most ``2 * workers`` batches are in flight, so memory stays bounded whatever the corpus size.
    A batch closes at ``batch_docs`` documents or ``batch_chars`` characters. A pre-tokenized document
    (an integer array instead of a str) passes through unchanged. ``progress`` is advanced by the
    number of documents as each batch is yielded.
    """
    if batch_docs < 1 or batch_chars < 1:
        raise ValueError("batch_docs and batch_chars must be at least 1")
    tok = load_tokenizer(spec, base_dir=base_dir)  # validate the spec up front, in this process
    workers = max(1, int(workers))
    if workers == 1:
        for batch in _batches(docs, batch_docs, batch_chars):
            texts = [t for t, _ in batch if isinstance(t, str)]
            yield from _assemble(batch, iter(tok.encode_batch(texts)))
            if progress is not None:
                progress.update(len(batch))
        return

    import multiprocessing

    spec_json = json.dumps(tok.to_spec())
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    pending: collections.deque[tuple[list, Future | None]] = collections.deque()
    max_inflight = 2 * workers

    def finish(batch, fut):
        if fut is None:
            encoded: Iterator[np.ndarray] = iter(())
        else:
            flat, lengths = fut.result()
            encoded = _split(flat, lengths)
        yield from _assemble(batch, encoded)
        if progress is not None:
            progress.update(len(batch))

    try:
        for batch in _batches(docs, batch_docs, batch_chars):
            texts = [t for t, _ in batch if isinstance(t, str)]
            fut = pool.submit(_worker_encode, spec_json, texts) if texts else None
            pending.append((batch, fut))
            while len(pending) >= max_inflight:
                yield from finish(*pending.popleft())
        while pending:
            yield from finish(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def tokenize_to_payloads(
    docs: Iterable[tuple[str, Any]],
    spec: "dict | str | os.PathLike | Tokenizer",
    workers: int,
    token_width: int,
    *,
    batch_docs: int = 1024,
    batch_chars: int = 1 << 22,
    base_dir: str | os.PathLike | None = None,
    pool: str = "auto",
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list]]:
    """Tokenize ``(text, metadata)`` pairs into shard-ready batches, in input order.

    Yields ``(payload, sizes, highest, metadatas)`` per batch (see :func:`encode_shard_payload`):
    the index builder writes ``payload`` as it is. With ``workers > 1`` the batches are encoded in
    parallel, one document at a time per worker, while the caller reads the input and writes what
    comes back; at most ``2 * workers`` batches are in flight. ``pool`` picks the workers: "threads"
    of this process (for a tokenizer whose encoder releases the GIL, see
    :attr:`Tokenizer.threads_parallel`), spawned "processes", or "auto" (threads where they run in
    parallel, else processes). A batch closes at ``batch_docs`` documents or ``batch_chars`` characters.
    """
    if batch_docs < 1 or batch_chars < 1:
        raise ValueError("batch_docs and batch_chars must be at least 1")
    if token_width not in (1, 2, 4):
        raise ValueError(f"token_width must be 1, 2 or 4, got {token_width}")
    if pool not in ("auto", "threads", "processes"):
        raise ValueError(f"pool must be 'auto', 'threads' or 'processes', got {pool!r}")
    tok = load_tokenizer(spec, base_dir=base_dir)
    workers = max(1, int(workers))

    def split(batch):
        texts = [t for t, _ in batch]
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"document text must be str, got {type(t).__name__}")
        return texts, [m for _, m in batch]

    if workers == 1:
        for batch in _batches(docs, batch_docs, batch_chars):
            texts, metas = split(batch)
            yield (*encode_shard_payload(tok, texts, token_width), metas)
        return

    if pool == "threads" or (pool == "auto" and tok.threads_parallel):
        # The encoder runs without the GIL: threads of this process encode in parallel, with no
        # worker start-up, no copies of texts and payloads between processes, one tokenizer in memory.
        from concurrent.futures import ThreadPoolExecutor

        executor: Any = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tokenize")

        def submit(texts):
            return executor.submit(encode_shard_payload, tok, texts, token_width)
    else:
        import multiprocessing

        spec_json = json.dumps(tok.to_spec())
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

        def submit(texts):
            return executor.submit(_worker_payload, spec_json, texts, token_width)
    pending: collections.deque[tuple[Future, list]] = collections.deque()
    try:
        for batch in _batches(docs, batch_docs, batch_chars):
            texts, metas = split(batch)
            pending.append((submit(texts), metas))
            del batch, texts
            while len(pending) >= 2 * workers:
                fut, metas = pending.popleft()
                yield (*fut.result(), metas)
        while pending:
            fut, metas = pending.popleft()
            yield (*fut.result(), metas)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)

