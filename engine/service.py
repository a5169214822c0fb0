"""The gRPC servicer of ngram.v1.NgramService, written against the NgramIndex API.

The same servicer serves a local ``engine.NgramIndex`` and an ``engine.router.NgramRouter``
(anything with NgramIndex's query methods and properties). It owns everything that is about the
wire rather than the index:

- decoding requests (token ids or text, packed batches) and encoding typed results;
- the server's limits (``ServerLimits``): query length, text size, batch size, documents per
  stream, ``max_support`` and ``max_disp_len``; over a limit is RESOURCE_EXHAUSTED naming it;
- mapping engine errors to status codes (``status_for``); a user error is never INTERNAL;
- deadlines and cancellation: the remaining time is published to the backend through
  ``time_left()`` (the router forwards it to its shard servers), and batches run in chunks so
  that an expired or cancelled call stops working between chunks;
- one access-log line per call (logger ``engine.access``): method, status, latency, peer.

RPC methods are registered from the service descriptor (``add_to_server``), with a request
deserializer that turns unparseable bytes into INVALID_ARGUMENT instead of gRPC's default
INTERNAL. A new RPC (issue 4: FrequentNgrams, LongestMatches, ...) slots in by adding it to the
proto, regenerating, and writing one ``_XYZ(self, request, context)`` method below.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import inspect
import json
import logging
import threading
import time
from typing import Any, Callable, Iterator

import grpc
import numpy as np

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine._proto.ngram.v1 import ngram_pb2_grpc as pb_grpc
from engine.errors import (
    IndexFormatError,
    InvalidQueryError,
    LimitExceededError,
    NgramError,
    ShardUnavailableError,
    TokenizerError,
)
from engine.results import (
    Document,
    InfgramNtdResult,
    NextTokenDistribution,
    PackedQueries,
    ProbBatchResult,
)

__all__ = [
    "SERVICE_NAME",
    "ServerLimits",
    "NgramServicer",
    "add_to_server",
    "status_for",
    "time_left",
    "current_deadline",
]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NgramService"].full_name  # "ngram.v1.NgramService"

access_log = logging.getLogger("engine.access")
log = logging.getLogger("engine.service")

_I8 = np.dtype("<i8")
_F8 = np.dtype("<f8")


# ------------------------------------------------------------------------------------------------
# Limits


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for. Every field is configurable from ``ngram serve``.

    max_support: the largest ``max_support`` a request may ask for, and the cap applied to a
    request that asks for an exact distribution (the result says ``approx`` when the cap was
    reached). 0 disables the cap.
    """

    max_message_bytes: int = 64 * 1024 * 1024
    max_query_tokens: int = 8192
    max_text_bytes: int = 256 * 1024
    max_batch_size: int = 100_000
    max_results_per_stream: int = 1000
    max_support: int = 1_000_000
    max_disp_len: int = 100_000
    max_ngram_rows: int = 1_000_000
    max_clause_freq: int = 1_000_000

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"ServerLimits.{f.name} must be a non-negative int, got {v!r}")
            if v == 0 and f.name != "max_support":
                raise ValueError(f"ServerLimits.{f.name} must be positive, got 0")

    def to_proto(self) -> pb.ServerLimits:
        return pb.ServerLimits(**{f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)})


def _over(what: str, value: int, limit_name: str, limit: int) -> LimitExceededError:
    return LimitExceededError(
        f"{what} is {value}, over the server limit {limit_name}={limit}; "
        f"split the request or ask the operator to raise --{limit_name.replace('_', '-')}"
    )


# ------------------------------------------------------------------------------------------------
# Deadlines shared with the backend (the router forwards them to shard servers)

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("ngram_deadline", default=None)


def current_deadline() -> float | None:
    """time.monotonic() deadline of the RPC being served on this thread, or None."""
    return _DEADLINE.get()


def time_left() -> float | None:
    """Seconds left before the current RPC's deadline (may be <= 0), or None without one."""
    d = _DEADLINE.get()
    return None if d is None else d - time.monotonic()


class _Expired(Exception):
    """The call's deadline passed or the client cancelled it: stop working."""


# ------------------------------------------------------------------------------------------------
# Status codes


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code of an exception raised while serving a call.

    InvalidQueryError -> INVALID_ARGUMENT; LimitExceededError -> RESOURCE_EXHAUSTED;
    TokenizerError -> FAILED_PRECONDITION; ShardUnavailableError -> UNAVAILABLE;
    TimeoutError -> DEADLINE_EXCEEDED; IndexFormatError -> DATA_LOSS; NotImplementedError (the
    router's engine.client.NotSupportedError: no exact merge) -> UNIMPLEMENTED; any other NgramError
    -> FAILED_PRECONDITION; anything else is a bug -> INTERNAL.
    """
    if isinstance(exc, ShardUnavailableError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, LimitExceededError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, InvalidQueryError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, TokenizerError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, (TimeoutError, _Expired)):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, IndexFormatError):
        return grpc.StatusCode.DATA_LOSS
    if isinstance(exc, NgramError) and isinstance(exc, NotImplementedError):
        return grpc.StatusCode.UNIMPLEMENTED
    if isinstance(exc, NgramError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


class _Malformed:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("type_name", "error")

    def __init__(self, type_name: str, error: str):
        self.type_name = type_name
        self.error = error


def _lenient_deserializer(cls) -> Callable[[bytes], Any]:
    from_string = cls.FromString
    name = cls.DESCRIPTOR.full_name

    def deserialize(data: bytes):
        try:
            return from_string(data)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field, ...
            return _Malformed(name, str(exc) or type(exc).__name__)

    return deserialize


# ------------------------------------------------------------------------------------------------
# RPC wrappers: errors, deadlines, access log


def _peer(context) -> str:
    try:
        return context.peer()
    except Exception:  # pragma: no cover
        return "?"


def _log_call(method: str, code: grpc.StatusCode, t0: float, context, detail: str = "") -> None:
    if access_log.isEnabledFor(logging.INFO):
        ms = (time.perf_counter() - t0) * 1e3
        if detail:
            access_log.info("%s %s %.3fms peer=%s msg=%r", method, code.name, ms, _peer(context), detail[:200])
        else:
            access_log.info("%s %s %.3fms peer=%s", method, code.name, ms, _peer(context))


def _fail(method: str, exc: BaseException, context, t0: float):
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("%s failed", method)
        detail = f"internal error ({type(exc).__name__}); see the server log"
    elif isinstance(exc, _Expired):
        detail = str(exc) or "deadline exceeded"
    else:
        detail = str(exc) or type(exc).__name__
    _log_call(method, code, t0, context, detail)
    context.abort(code, detail)


def _unary(fn):
    method = fn.__name__.lstrip("_")
    monotonic, perf_counter = time.monotonic, time.perf_counter
    set_deadline, reset_deadline = _DEADLINE.set, _DEADLINE.reset

    # The per-call work here is part of every unary RPC's latency: one time_remaining() (a call
    # into gRPC's C core), one contextvar set/reset, and nothing else unless the access log is on.
    @functools.wraps(fn)
    def wrapper(self, request, context):
        t0 = perf_counter()
        remaining = context.time_remaining()
        token = set_deadline(None if remaining is None else monotonic() + remaining)
        try:
            if type(request) is _Malformed:
                raise InvalidQueryError(f"request is not a valid {request.type_name}: {request.error}")
            if remaining is not None and remaining <= 0:
                raise _Expired("deadline exceeded before the call started")
            response = fn(self, request, context)
        except Exception as exc:
            _fail(method, exc, context, t0)
        finally:
            reset_deadline(token)
        if access_log.isEnabledFor(logging.INFO):
            if remaining is not None and context.time_remaining() <= 0:
                _log_call(method, grpc.StatusCode.DEADLINE_EXCEEDED, t0, context, "finished after the deadline")
            else:
                _log_call(method, grpc.StatusCode.OK, t0, context)
        return response

    wrapper.rpc_name = method
    return wrapper


_END = object()


def _stream(fn):
    method = fn.__name__.lstrip("_")

    @functools.wraps(fn)
    def wrapper(self, request, context):
        t0 = time.perf_counter()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        n = 0
        try:
            if isinstance(request, _Malformed):
                raise InvalidQueryError(f"request is not a valid {request.type_name}: {request.error}")
            it = iter(fn(self, request, context))
            while True:
                token = _DEADLINE.set(deadline)
                try:
                    item = next(it, _END)
                finally:
                    _DEADLINE.reset(token)
                if item is _END:
                    break
                yield item
                n += 1
                if not context.is_active():
                    raise _Expired("call cancelled or deadline exceeded during the stream")
        except GeneratorExit:  # the client went away mid-stream
            _log_call(method, grpc.StatusCode.CANCELLED, t0, context, f"after {n} messages")
            raise
        except Exception as exc:
            _fail(method, exc, context, t0)
        _log_call(method, grpc.StatusCode.OK, t0, context, f"{n} messages")

    wrapper.rpc_name = method
    return wrapper


def _check_alive(context) -> None:
    """Raise _Expired when the call's deadline has passed or the client went away."""
    remaining = context.time_remaining()
    if (remaining is not None and remaining <= 0) or not context.is_active():
        raise _Expired("deadline exceeded or call cancelled; the remaining work was skipped")


def _stop_check(context, what: str) -> Callable[[], None]:
    """A callable that raises _Expired once the call's deadline has passed or the client left."""
    time_remaining, is_active = context.time_remaining, context.is_active

    def check() -> None:
        remaining = time_remaining()
        if (remaining is not None and remaining <= 0) or not is_active():
            raise _Expired(f"deadline exceeded or call cancelled: {what} stopped mid-run")

    return check


# Stopping frequent_ngrams mid-run. The engine runs the whole computation in one call; the
# servicer needs a hook inside it. If engine.ngrams.frequent_ngrams takes ``check_alive`` (a
# callable it calls between chunks of work, which raises to abort), the servicer passes it.
# Until the engine has that hook, the servicer reaches the same place through the row sink that
# every chunk of rows passes through (engine.ngrams._RowSink.add): a guarded wrapper that calls
# the check of the RPC running on this thread, found through a context variable. Outside an RPC
# the variable is unset and the wrapper only costs one lookup per chunk.
_NGRAMS_CHECK: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("ngram_ngrams_check",
                                                                                          default=None)
_NGRAMS_HOOK_LOCK = threading.Lock()
_NGRAMS_HOOK: str | None = None  # "kwarg", "sink" or "none", decided on first use


def _ngrams_stop_hook() -> str:
    """How FrequentNgrams can stop the engine mid-run: "kwarg", "sink" or "none"."""
    global _NGRAMS_HOOK
    if _NGRAMS_HOOK is not None:
        return _NGRAMS_HOOK
    with _NGRAMS_HOOK_LOCK:
        if _NGRAMS_HOOK is not None:
            return _NGRAMS_HOOK
        try:
            from engine import ngrams
        except Exception:  # pragma: no cover - the engine always has it
            _NGRAMS_HOOK = "none"
            return _NGRAMS_HOOK
        try:
            params = inspect.signature(ngrams.frequent_ngrams).parameters
        except (TypeError, ValueError):  # pragma: no cover
            params = {}
        sink = getattr(ngrams, "_RowSink", None)
        add = getattr(sink, "add", None)
        if "check_alive" in params:
            _NGRAMS_HOOK = "kwarg"
        elif callable(add):
            if not getattr(add, "_ngram_stop_check", False):
                def checked_add(self, *args, **kwargs):
                    check = _NGRAMS_CHECK.get()
                    if check is not None:
                        check()
                    return add(self, *args, **kwargs)

                checked_add._ngram_stop_check = True
                functools.update_wrapper(checked_add, add)
                sink.add = checked_add
            _NGRAMS_HOOK = "sink"
        else:  # pragma: no cover - the engine changed; the call is only checked before and after
            log.warning("engine.ngrams has neither a check_alive hook nor _RowSink.add: FrequentNgrams "
                        "cannot stop mid-run at its deadline")
            _NGRAMS_HOOK = "none"
        return _NGRAMS_HOOK


# ------------------------------------------------------------------------------------------------
# Encoding helpers


def _le(data: bytes, dtype: np.dtype, field: str) -> np.ndarray:
    if len(data) % dtype.itemsize:
        raise InvalidQueryError(
            f"{field} holds {len(data)} bytes, not a multiple of {dtype.itemsize}: it must be "
            f"packed little-endian {dtype.name} values"
        )
    # A writable copy: numba compiles separate specializations for read-only arrays, and the
    # warmed-up kernels are the writable ones. The copy costs microseconds per batch.
    return np.frombuffer(data, dtype=dtype).copy()


def _i8(a) -> bytes:
    return np.ascontiguousarray(a, dtype=_I8).tobytes()


def _dist_proto(d: NextTokenDistribution) -> pb.TokenDistribution:
    return pb.TokenDistribution(
        prompt_count=int(d.prompt_count),
        token_ids=np.asarray(d.tokens, dtype=np.int64).tolist(),
        counts=np.asarray(d.counts, dtype=np.int64).tolist(),
        end_count=int(d.end_count),
        approx=bool(d.approx),
    )


def _pack_dists(dists: list, with_suffix: bool) -> pb.PackedTokenDistributions:
    n = len(dists)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        offsets[1:] = np.cumsum([len(d.tokens) for d in dists])
        tokens = np.concatenate([np.asarray(d.tokens, dtype=np.int64) for d in dists])
        counts = np.concatenate([np.asarray(d.counts, dtype=np.int64) for d in dists])
    else:
        tokens = counts = np.zeros(0, dtype=np.int64)
    msg = pb.PackedTokenDistributions(
        prompt_counts=_i8([d.prompt_count for d in dists]),
        end_counts=_i8([d.end_count for d in dists]),
        approx=np.array([bool(d.approx) for d in dists], dtype=np.uint8).tobytes(),
        offsets=_i8(offsets),
        token_ids=_i8(tokens),
        counts=_i8(counts),
    )
    if with_suffix:
        msg.suffix_lens = _i8([d.suffix_len for d in dists])
    return msg


def _doc_proto(doc: Document) -> pb.Document:
    msg = pb.Document(
        doc_ix=int(doc.doc_ix),
        doc_len=int(doc.doc_len),
        disp_len=int(doc.disp_len),
        needle_offset=int(doc.needle_offset),
        token_ids=np.asarray(doc.token_ids, dtype=np.int64).tolist(),
        shard=int(doc.shard),
    )
    if doc.metadata is not None:
        msg.metadata_json = json.dumps(doc.metadata, ensure_ascii=False)
    return msg


def _json(obj) -> str:
    def default(o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.dumps(obj, default=default, sort_keys=True)


def _f8(a) -> bytes:
    return np.ascontiguousarray(a, dtype=_F8).tobytes()


def _search_messages(r) -> Iterator[pb.SearchDocumentsResponse]:
    yield pb.SearchDocumentsResponse(
        summary=pb.SearchSummary(count=int(r.count), num_documents=len(r.documents), approx=bool(r.approx)))
    for doc in r.documents:
        yield pb.SearchDocumentsResponse(document=_doc_proto(doc))


def _longest_matches_proto(m) -> pb.LongestMatchesResponse:
    p = m.infgram
    return pb.LongestMatchesResponse(
        token_ids=_i8(m.tokens), lengths=_i8(m.lengths), counts=_i8(m.counts),
        prompt_counts=_i8(p.prompt_counts), cont_counts=_i8(p.cont_counts), probs=_f8(p.probs),
        suffix_lens=_i8(p.suffix_lens))


def _attribution_proto(a) -> pb.AttributeResponse:
    return pb.AttributeResponse(
        token_ids=_i8(a.matches.tokens), creativity=float(a.creativity), creativity_n=int(a.creativity_n),
        lengths=_i8(a.matches.lengths), counts=_i8(a.matches.counts),
        spans=[pb.AttributedSpan(start=sp.start, end=sp.end, count=sp.count,
                                 token_ids=np.asarray(sp.token_ids, dtype=np.int64).tolist(),
                                 documents=[_doc_proto(d) for d in sp.documents]) for sp in a.spans])


def _count_cnf_proto(r) -> pb.CountCnfResponse:
    return pb.CountCnfResponse(count=int(r.count), approx=bool(r.approx), clause_counts=list(r.clause_counts),
                               scanned_clauses=list(r.scanned_clauses))


def _search_cnf_messages(r) -> Iterator[pb.SearchDocumentsCnfResponse]:
    yield pb.SearchDocumentsCnfResponse(summary=pb.SearchDocumentsCnfSummary(
        count=int(r.count), approx=bool(r.approx), clause_counts=list(r.clause_counts),
        scanned_clauses=list(r.scanned_clauses), num_documents=len(r.documents)))
    for doc in r.documents:
        yield pb.SearchDocumentsCnfResponse(document=_doc_proto(doc))


def _slice_packed(pq: PackedQueries, start: int, stop: int) -> PackedQueries:
    lo, hi = int(pq.offsets[start]), int(pq.offsets[stop])
    return PackedQueries(pq.tokens[lo:hi], pq.offsets[start : stop + 1] - lo)


# ------------------------------------------------------------------------------------------------
# The servicer


class NgramServicer(pb_grpc.NgramServiceServicer):
    """Serves ngram.v1.NgramService from ``backend`` (an NgramIndex or an NgramRouter)."""

    def __init__(self, backend, limits: ServerLimits | None = None, *, batch_chunk: int = 16384):
        self.backend = backend
        self.limits = limits or ServerLimits()
        self.batch_chunk = int(batch_chunk)
        self._info_response: pb.GetIndexInfoResponse | None = None

    # -- request decoding ----------------------------------------------------------------------

    def _tokenize(self, text: str, field: str) -> np.ndarray:
        nbytes = len(text.encode("utf-8", "surrogatepass"))
        if nbytes > self.limits.max_text_bytes:
            raise _over(f"{field}: text of {nbytes} bytes", nbytes, "max_text_bytes", self.limits.max_text_bytes)
        ids = np.asarray(self.backend.tokenize(text), dtype=np.int64)
        if len(ids) > self.limits.max_query_tokens:
            raise _over(f"{field}: the text's token count", len(ids), "max_query_tokens", self.limits.max_query_tokens)
        return ids

    def _ids(self, ids, field: str) -> list[int]:
        """The token ids of a query as a list of ints: NgramIndex takes a list on its fastest path
        (one compiled call that validates and counts; 5.5 us against 8.5 us through an array)."""
        if len(ids) > self.limits.max_query_tokens:
            raise _over(f"{field}: query length", len(ids), "max_query_tokens", self.limits.max_query_tokens)
        return list(ids)

    def _query(self, request, field: str) -> list[int] | np.ndarray:
        q = getattr(request, field)
        kind = q.WhichOneof("kind")
        if kind == "token_ids":
            return self._ids(q.token_ids.ids, field)
        if kind == "text":
            return self._tokenize(q.text, field)
        if not request.HasField(field):
            raise InvalidQueryError(f"{field} is missing: set {field}.token_ids or {field}.text")
        raise InvalidQueryError(f"{field} is empty: set {field}.token_ids or {field}.text")

    def _batch(self, request, field: str) -> PackedQueries:
        if not request.HasField(field):
            raise InvalidQueryError(f"{field} is missing: set {field}.packed or {field}.texts")
        qb = getattr(request, field)
        kind = qb.WhichOneof("kind")
        lim = self.limits
        if kind == "packed":
            tokens = _le(qb.packed.token_ids, _I8, f"{field}.packed.token_ids")
            offsets = _le(qb.packed.offsets, _I8, f"{field}.packed.offsets")
            if len(offsets) == 0:
                raise InvalidQueryError(
                    f"{field}.packed.offsets is empty: it needs one more entry than the number of "
                    f"queries, starting at 0"
                )
            n = len(offsets) - 1
            if n > lim.max_batch_size:
                raise _over(f"{field}: batch size", n, "max_batch_size", lim.max_batch_size)
            if offsets[0] != 0 or offsets[-1] != len(tokens):
                raise InvalidQueryError(
                    f"{field}.packed.offsets must start at 0 and end at the number of token ids "
                    f"({len(tokens)}); got {int(offsets[0])} .. {int(offsets[-1])}"
                )
            if n:
                lengths = np.diff(offsets)
                if lengths.min() < 0:
                    raise InvalidQueryError(f"{field}.packed.offsets must be non-decreasing")
                longest = int(lengths.max())
                if longest > lim.max_query_tokens:
                    i = int(np.argmax(lengths))
                    raise _over(f"{field}: query {i}'s length", longest, "max_query_tokens", lim.max_query_tokens)
            return PackedQueries(tokens, offsets)
        if kind == "texts":
            texts = qb.texts.texts
            if len(texts) > lim.max_batch_size:
                raise _over(f"{field}: batch size", len(texts), "max_batch_size", lim.max_batch_size)
            return PackedQueries.from_list([self._tokenize(t, f"{field}.texts[{i}]") for i, t in enumerate(texts)])
        raise InvalidQueryError(f"{field} is empty: set {field}.packed or {field}.texts")

    # -- validation without decoding (for a backend that forwards requests as they came) --------

    def _check_query_msg(self, q: pb.Query, field: str) -> None:
        """The limits of one Query, without tokenizing its text or copying its ids."""
        kind = q.WhichOneof("kind")
        if kind == "token_ids":
            n = len(q.token_ids.ids)
            if n > self.limits.max_query_tokens:
                raise _over(f"{field}: query length", n, "max_query_tokens", self.limits.max_query_tokens)
        elif kind == "text":
            nbytes = len(q.text.encode("utf-8", "surrogatepass"))
            if nbytes > self.limits.max_text_bytes:
                raise _over(f"{field}: text of {nbytes} bytes", nbytes, "max_text_bytes", self.limits.max_text_bytes)
        else:
            raise InvalidQueryError(f"{field} is empty: set {field}.token_ids or {field}.text")

    def _checked_query(self, request, field: str) -> pb.Query:
        if not request.HasField(field):
            raise InvalidQueryError(f"{field} is missing: set {field}.token_ids or {field}.text")
        q = getattr(request, field)
        self._check_query_msg(q, field)
        return q

    def _checked_batch(self, request, field: str) -> int:
        """The number of queries of a QueryBatch field, after the same checks as _batch."""
        if request.HasField(field) and getattr(request, field).WhichOneof("kind") == "texts":
            texts = getattr(request, field).texts.texts
            lim = self.limits
            if len(texts) > lim.max_batch_size:
                raise _over(f"{field}: batch size", len(texts), "max_batch_size", lim.max_batch_size)
            for i, t in enumerate(texts):
                nbytes = len(t.encode("utf-8", "surrogatepass"))
                if nbytes > lim.max_text_bytes:
                    raise _over(f"{field}.texts[{i}]: text of {nbytes} bytes", nbytes, "max_text_bytes",
                                lim.max_text_bytes)
            return len(texts)
        return len(self._batch(request, field))

    def _checked_cnf(self, request) -> int:
        """The max_clause_freq of a CNF request, after checking its clauses against the limits."""
        if not request.clauses:
            raise InvalidQueryError("clauses is empty: give at least one clause of at least one term")
        terms = sum(len(c.terms) for c in request.clauses)
        if terms > self.limits.max_batch_size:
            raise _over("the number of CNF terms", terms, "max_batch_size", self.limits.max_batch_size)
        for i, c in enumerate(request.clauses):
            if not c.terms:
                raise InvalidQueryError(f"clauses[{i}] has no terms: give at least one n-gram per clause")
            for k, t in enumerate(c.terms):
                self._check_query_msg(t, f"clauses[{i}].terms[{k}]")
        cap = self.limits.max_clause_freq
        freq = self._opt(request, "max_clause_freq", cap)
        if freq > cap:
            raise _over("max_clause_freq", freq, "max_clause_freq", cap)
        return freq

    def _cont_ids(self, request, n: int) -> np.ndarray:
        cont = _le(request.cont_ids, _I8, "cont_ids")
        if len(cont) != n:
            raise InvalidQueryError(f"cont_ids holds {len(cont)} ids for {n} prompts: give one per prompt")
        return cont

    def _cont_id(self, request) -> int:
        if not request.HasField("cont_id"):
            raise InvalidQueryError("cont_id is missing: set the id of the continuation token")
        return int(request.cont_id)

    def _max_support(self, request) -> int | None:
        cap = self.limits.max_support or None
        if not request.HasField("max_support"):
            return cap
        v = int(request.max_support)
        if v <= 0:
            raise InvalidQueryError(f"max_support must be positive, got {v}; leave it unset for an exact distribution")
        if cap is not None and v > cap:
            raise _over("max_support", v, "max_support", cap)
        return v

    def _disp_len(self, request) -> int:
        if not request.HasField("max_disp_len"):
            return min(1000, self.limits.max_disp_len)
        v = int(request.max_disp_len)
        if v < 0:
            raise InvalidQueryError(f"max_disp_len must be non-negative, got {v}")
        if v > self.limits.max_disp_len:
            raise _over("max_disp_len", v, "max_disp_len", self.limits.max_disp_len)
        return v

    def _chunked(self, pq: PackedQueries, context, fn: Callable[[PackedQueries], Any]) -> list:
        """Run fn over chunks of the batch, checking the deadline between chunks."""
        n = len(pq)
        if n <= self.batch_chunk:
            return [fn(pq)]
        out = []
        for start in range(0, n, self.batch_chunk):
            if start:
                _check_alive(context)
            out.append(fn(_slice_packed(pq, start, min(n, start + self.batch_chunk))))
        return out

    # -- info and tokenization -----------------------------------------------------------------

    @_unary
    def _GetIndexInfo(self, request, context):
        if self._info_response is None:
            b = self.backend
            tok = b.tokenizer
            resp = pb.GetIndexInfoResponse(
                num_tokens=int(b.num_tokens),
                num_docs=int(b.num_docs),
                num_shards=int(b.num_shards),
                vocab_size=int(b.vocab_size),
                token_width=int(b.token_width),
                has_tokenizer=tok is not None,
                tokenizer_kind=str(getattr(tok, "kind", "") or "") if tok is not None else "",
                tokenizer_fingerprint=str(b.tokenizer_fingerprint or ""),
                manifest_json=_json(b.manifest),
                info_json=_json(b.info()),
                limits=self.limits.to_proto(),
            )
            if b.eos_token_id is not None:
                resp.eos_token_id = int(b.eos_token_id)
            if hasattr(b, "health_status"):  # a router: its info (shard health) changes, do not cache
                return resp
            self._info_response = resp
        return self._info_response

    @_unary
    def _Tokenize(self, request, context):
        return pb.TokenizeResponse(token_ids=self._tokenize(request.text, "text").tolist())

    @_unary
    def _Detokenize(self, request, context):
        ids = self._ids(request.token_ids, "token_ids")
        return pb.DetokenizeResponse(text=self.backend.detokenize(ids))

    # -- counting ------------------------------------------------------------------------------

    @_unary
    def _Count(self, request, context):
        return pb.CountResponse(count=int(self.backend.count(self._query(request, "query"))))

    @_unary
    def _CountBatch(self, request, context):
        pq = self._batch(request, "queries")
        parts = self._chunked(pq, context, self.backend.count_batch)
        counts = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return pb.CountBatchResponse(counts=_i8(counts))

    @_unary
    def _Find(self, request, context):
        r = self.backend.find(self._query(request, "query"))
        return pb.FindResponse(
            count=int(r.count),
            segments=[pb.SuffixArraySegment(start=int(s), end=int(e)) for s, e in r.segments],
        )

    # -- probabilities and distributions -------------------------------------------------------

    @_unary
    def _Prob(self, request, context):
        prompt = self._query(request, "prompt")
        r = self.backend.prob(prompt, self._cont_id(request))
        return pb.ProbResponse(prompt_count=int(r.prompt_count), cont_count=int(r.cont_count), prob=float(r.prob))

    def _prob_batch(self, request, context, fn) -> ProbBatchResult:
        pq = self._batch(request, "prompts")
        cont = self._cont_ids(request, len(pq))
        if len(pq) <= self.batch_chunk:
            return fn(pq, cont)
        parts = []
        for start in range(0, len(pq), self.batch_chunk):
            if start:
                _check_alive(context)
            stop = min(len(pq), start + self.batch_chunk)
            parts.append(fn(_slice_packed(pq, start, stop), cont[start:stop]))
        cat = lambda name: None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return ProbBatchResult(cat("prompt_counts"), cat("cont_counts"), cat("probs"), cat("suffix_lens"))

    @_unary
    def _ProbBatch(self, request, context):
        r = self._prob_batch(request, context, self.backend.prob_batch)
        return pb.ProbBatchResponse(
            prompt_counts=_i8(r.prompt_counts),
            cont_counts=_i8(r.cont_counts),
            probs=np.ascontiguousarray(r.probs, dtype=_F8).tobytes(),
        )

    @_unary
    def _NextTokenDistribution(self, request, context):
        prompt = self._query(request, "prompt")
        d = self.backend.ntd(prompt, max_support=self._max_support(request))
        return pb.NextTokenDistributionResponse(distribution=_dist_proto(d))

    @_unary
    def _NextTokenDistributionBatch(self, request, context):
        pq = self._batch(request, "prompts")
        ms = self._max_support(request)
        parts = self._chunked(pq, context, lambda p: self.backend.ntd_batch(p, max_support=ms))
        dists = [d for part in parts for d in part]
        return pb.NextTokenDistributionBatchResponse(distributions=_pack_dists(dists, with_suffix=False))

    @_unary
    def _InfgramProb(self, request, context):
        prompt = self._query(request, "prompt")
        r = self.backend.infgram_prob(prompt, self._cont_id(request))
        return pb.InfgramProbResponse(
            prompt_count=int(r.prompt_count),
            cont_count=int(r.cont_count),
            prob=float(r.prob),
            suffix_len=int(r.suffix_len),
        )

    @_unary
    def _InfgramProbBatch(self, request, context):
        r = self._prob_batch(request, context, self.backend.infgram_prob_batch)
        return pb.InfgramProbBatchResponse(
            prompt_counts=_i8(r.prompt_counts),
            cont_counts=_i8(r.cont_counts),
            probs=np.ascontiguousarray(r.probs, dtype=_F8).tobytes(),
            suffix_lens=_i8(r.suffix_lens),
        )

    @_unary
    def _InfgramNextTokenDistribution(self, request, context):
        prompt = self._query(request, "prompt")
        d: InfgramNtdResult = self.backend.infgram_ntd(prompt, max_support=self._max_support(request))
        return pb.InfgramNextTokenDistributionResponse(distribution=_dist_proto(d), suffix_len=int(d.suffix_len))

    @_unary
    def _InfgramNextTokenDistributionBatch(self, request, context):
        pq = self._batch(request, "prompts")
        ms = self._max_support(request)
        parts = self._chunked(pq, context, lambda p: self.backend.infgram_ntd_batch(p, max_support=ms))
        dists = [d for part in parts for d in part]
        return pb.InfgramNextTokenDistributionBatchResponse(distributions=_pack_dists(dists, with_suffix=True))

    # -- documents -----------------------------------------------------------------------------

    @_stream
    def _SearchDocuments(self, request, context) -> Iterator[pb.SearchDocumentsResponse]:
        query = self._query(request, "query")
        max_docs = int(request.max_docs) if request.HasField("max_docs") else 10
        if max_docs < 0:
            raise InvalidQueryError(f"max_docs must be non-negative, got {max_docs}")
        if max_docs > self.limits.max_results_per_stream:
            raise _over("max_docs", max_docs, "max_results_per_stream", self.limits.max_results_per_stream)
        r = self.backend.search_docs(query, max_docs=max_docs, max_disp_len=self._disp_len(request))
        yield from _search_messages(r)

    @_unary
    def _GetDocument(self, request, context):
        disp = self._disp_len(request)
        which = request.WhichOneof("locator")
        b = self.backend
        if which == "doc_ix":
            doc = b.get_doc_by_ix(int(request.doc_ix), max_disp_len=disp)
        elif which == "rank":
            doc = b.get_doc_by_rank(int(request.rank.shard), int(request.rank.rank), max_disp_len=disp)
        elif which == "pointer":
            doc = b.get_doc_by_ptr(int(request.pointer.shard), int(request.pointer.ptr), max_disp_len=disp)
        else:
            raise InvalidQueryError("the document locator is missing: set doc_ix, rank or pointer")
        return pb.GetDocumentResponse(document=_doc_proto(doc))


    # -- frequent n-grams, longest matches, attribution, AND/OR search (issue 4) ---------------

    def _backend_method(self, name: str):
        fn = getattr(self.backend, name, None)
        if fn is None:
            raise NgramError(f"{name} is not served by this backend ({type(self.backend).__name__}); "
                             "ask a server that holds the index itself")
        return fn

    @staticmethod
    def _opt(request, field: str, default):
        return int(getattr(request, field)) if request.HasField(field) else default

    def _query_msg(self, q: pb.Query, field: str) -> list[int] | np.ndarray:
        kind = q.WhichOneof("kind")
        if kind == "token_ids":
            return self._ids(q.token_ids.ids, field)
        if kind == "text":
            return self._tokenize(q.text, field)
        raise InvalidQueryError(f"{field} is empty: set its token_ids or text")

    def _cnf(self, request) -> tuple[list, int]:
        if not request.clauses:
            raise InvalidQueryError("clauses is empty: give at least one clause of at least one term")
        terms = sum(len(c.terms) for c in request.clauses)
        if terms > self.limits.max_batch_size:
            raise _over("the number of CNF terms", terms, "max_batch_size", self.limits.max_batch_size)
        cnf = [[self._query_msg(t, f"clauses[{i}].terms[{k}]") for k, t in enumerate(c.terms)]
               for i, c in enumerate(request.clauses)]
        cap = self.limits.max_clause_freq
        freq = self._opt(request, "max_clause_freq", cap)
        if freq > cap:
            raise _over("max_clause_freq", freq, "max_clause_freq", cap)
        return cnf, freq

    def _max_docs(self, request, default: int) -> int:
        n = self._opt(request, "max_docs", default)
        if n < 0:
            raise InvalidQueryError(f"max_docs must be non-negative, got {n}")
        if n > self.limits.max_results_per_stream:
            raise _over("max_docs", n, "max_results_per_stream", self.limits.max_results_per_stream)
        return n

    def _frequent_ngrams(self, context, n_min: int, n_max: int, **kwargs):
        """backend.frequent_ngrams, stopped mid-run (DEADLINE_EXCEEDED) once the call's deadline
        passes or the client cancels: the computation can take minutes on a large index."""
        fn = self._backend_method("frequent_ngrams")
        check = _stop_check(context, "FrequentNgrams")
        check()
        if getattr(self.backend, "forwards_deadlines", False):  # a router: the shard servers stop themselves
            return fn(n_min, n_max, **kwargs)
        hook = _ngrams_stop_hook()
        if hook == "kwarg":
            table = fn(n_min, n_max, check_alive=check, **kwargs)
        else:
            token = _NGRAMS_CHECK.set(check)
            try:
                table = fn(n_min, n_max, **kwargs)
            finally:
                _NGRAMS_CHECK.reset(token)
        check()
        return table

    @_stream
    def _FrequentNgrams(self, request, context) -> Iterator[pb.FrequentNgramsResponse]:
        min_count = self._opt(request, "min_count", None)
        top_k = self._opt(request, "top_k", None)
        if min_count is None and top_k is None:
            raise InvalidQueryError("set min_count (every n-gram occurring that often), top_k, or both")
        cap = self.limits.max_ngram_rows
        if top_k is not None and top_k > cap:
            raise _over("top_k", top_k, "max_ngram_rows", cap)
        n_max = int(request.n_max)
        chunk = self._opt(request, "chunk_rows", 65536)
        if chunk < 1:
            raise InvalidQueryError(f"chunk_rows must be positive, got {chunk}")
        # Keep each message under the size limit (a row is at most n_max ids, an offset and a count).
        chunk = max(1, min(chunk, self.limits.max_message_bytes // (8 * (max(n_max, 1) + 2)) - 1))
        table = self._frequent_ngrams(context, int(request.n_min), n_max, min_count=min_count,
                                      top_k=cap + 1 if top_k is None else top_k)
        if top_k is None:
            if len(table) > cap:
                raise _over(f"the number of n-grams occurring at least {min_count} times", f"more than {cap}",
                            "max_ngram_rows", cap)
            table.meta["top_k"] = None
        yield pb.FrequentNgramsResponse(summary=pb.FrequentNgramsSummary(
            num_rows=len(table), threshold=int(table.meta.get("threshold", 0)), meta_json=_json(table.meta)))
        for a in range(0, len(table), chunk):
            b = min(len(table), a + chunk)
            lo, hi = int(table.offsets[a]), int(table.offsets[b])
            yield pb.FrequentNgramsResponse(rows=pb.NgramRows(
                token_ids=_i8(table.tokens[lo:hi]), offsets=_i8(np.asarray(table.offsets[a:b + 1]) - lo),
                counts=_i8(table.counts[a:b])))

    @_unary
    def _LongestMatches(self, request, context):
        text = self._query(request, "text")
        max_len = self._opt(request, "max_len", None)
        return _longest_matches_proto(self._backend_method("longest_matches")(text, max_len, infgram=True))

    def _attribute_args(self, request) -> tuple[int, int | None, dict]:
        """(min_len, max_count, keyword arguments) of an AttributeRequest, with the server's limits."""
        disp = self._disp_len(request) if request.HasField("max_disp_len") else min(100, self.limits.max_disp_len)
        kwargs = {"max_docs": self._max_docs(request, 3), "max_disp_len": disp}
        if request.HasField("creativity_n"):
            kwargs["creativity_n"] = int(request.creativity_n)
        return self._opt(request, "min_len", 8), self._opt(request, "max_count", None), kwargs

    @_unary
    def _Attribute(self, request, context):
        text = self._query(request, "text")
        min_len, max_count, kwargs = self._attribute_args(request)
        return _attribution_proto(self._backend_method("attribute")(text, min_len, max_count, **kwargs))

    @_unary
    def _CountCnf(self, request, context):
        cnf, freq = self._cnf(request)
        return _count_cnf_proto(self._backend_method("count_cnf")(cnf, max_clause_freq=freq))

    @_stream
    def _SearchDocumentsCnf(self, request, context) -> Iterator[pb.SearchDocumentsCnfResponse]:
        cnf, freq = self._cnf(request)
        r = self._backend_method("search_docs_cnf")(cnf, max_docs=self._max_docs(request, 10), max_clause_freq=freq,
                                                    max_disp_len=self._disp_len(request))
        yield from _search_cnf_messages(r)


def _public_rpcs(cls) -> None:
    """Expose each ``_Name`` implementation as the servicer method ``Name``."""
    for m in pb.DESCRIPTOR.services_by_name["NgramService"].methods:
        impl = getattr(cls, "_" + m.name, None)
        if impl is not None:
            setattr(cls, m.name, impl)


_public_rpcs(NgramServicer)


def add_to_server(servicer: NgramServicer, server: grpc.Server) -> None:
    """Register every RPC of the service descriptor that the servicer implements.

    Unlike the generated add_NgramServiceServicer_to_server, requests whose bytes do not parse
    reach the servicer (as INVALID_ARGUMENT) instead of failing as INTERNAL inside gRPC.
    """
    service = pb.DESCRIPTOR.services_by_name["NgramService"]
    handlers = {}
    for m in service.methods:
        req_cls = getattr(pb, m.input_type.name)
        resp_cls = getattr(pb, m.output_type.name)
        fn = getattr(servicer, m.name)
        make = grpc.unary_stream_rpc_method_handler if m.server_streaming else grpc.unary_unary_rpc_method_handler
        if m.client_streaming:  # pragma: no cover - the service has none yet
            raise NotImplementedError(f"client-streaming RPC {m.name} needs a handler here")
        handlers[m.name] = make(
            fn,
            request_deserializer=_lenient_deserializer(req_cls),
            response_serializer=resp_cls.SerializeToString,
        )
    if hasattr(server, "add_registered_method_handlers"):
        server.add_registered_method_handlers(service.full_name, handlers)
    else:  # pragma: no cover - older grpcio
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
