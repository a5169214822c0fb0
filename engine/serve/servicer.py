"""The gRPC servicer of ngram.v1.NgramService, written against the NgramIndex API.

The same servicer serves a local ``engine.NgramIndex`` and an ``engine.serve.router.NgramRouter``
(anything with NgramIndex's query methods and properties). It owns everything that is about the
wire rather than the index:

- decoding requests (token ids or text, packed batches) and encoding typed results;
- the server's limits (``ServerLimits``): query length, text size, batch size, documents per
  stream, ``max_support`` and ``max_disp_len``; over a limit is RESOURCE_EXHAUSTED naming it;
- mapping engine errors to status codes (engine.serve.status); a user error is never INTERNAL;
- deadlines and cancellation: the remaining time is published to the backend through
  ``time_left()`` (the router forwards it to its shard servers), and batches run in chunks so
  that an expired or cancelled call stops working between chunks; the long operations (frequent
  n-grams, attribution, CNF) take a stop check (``check_alive``) that they call between pieces
  of work, which raises at the deadline, when the client leaves or when the server shuts down;
- admission (engine.serve.admission): every call's response size and working memory are bounded
  before the work, from what the engine knows cheaply (suffix-array range sizes, the
  vocabulary, the request's own caps); a call over a limit is RESOURCE_EXHAUSTED naming it and
  saying how to ask for less. Expensive calls share a bounded pool of slots so that cheap ones
  keep flowing; a memory budget (``--max-memory``) refuses calls that would go over it.
- distributions are exact unless the request asks for ``max_support``;
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
import logging
import time
from typing import Any, Callable, Iterator

import grpc
import numpy as np

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine._proto.ngram.v1 import ngram_pb2_grpc as pb_grpc
from engine.serve.admission import Admission, Ticket
from engine.errors import (
    DeadlineExceededError,
    InvalidQueryError,
    LimitExceededError,
    NotSupportedError,
    ShardUnavailableError,
)
from engine.results import PackedQueries, ProbBatchResult
from engine.serve.codec import DistPacker, I8, checked_le_array, concat_results, slice_packed, to_json
from engine.serve.rpcs import SERVICE, SERVICE_NAME, Query, queries_of
from engine.serve.status import ERROR_METADATA_KEY, status_of

__all__ = [
    "SERVICE_NAME",
    "ServerLimits",
    "NgramServicer",
    "add_to_server",
    "time_left",
    "current_deadline",
]


access_log = logging.getLogger("engine.access")
log = logging.getLogger("engine.serve.servicer")



# ------------------------------------------------------------------------------------------------
# Limits


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for. Every field is configurable from ``ngram serve``.

    max_support: the largest ``max_support`` a request may ask for (0: no cap). A request that
    does not ask for one gets the exact distribution, as in process.
    max_distinct_tokens: the most (token, count) entries the distributions of one response may
    hold in all, bounded before the work by min(prompt count, vocabulary) per prompt; an exact
    answer that could hold more is RESOURCE_EXHAUSTED, telling the client to ask for max_support
    or to split the batch.
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
    max_distinct_tokens: int = 4_000_000

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


class _Expired(DeadlineExceededError):
    """The call's deadline passed or the client cancelled it: stop working."""


class _ShuttingDown(ShardUnavailableError):
    """The server is shutting down: stop working (UNAVAILABLE, another server can answer)."""


# ------------------------------------------------------------------------------------------------
# Status codes


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
    code, name = status_of(exc)
    if name is not None:
        context.set_trailing_metadata(((ERROR_METADATA_KEY, name),))
    if code is grpc.StatusCode.INTERNAL:
        log.exception("%s failed", method)
        detail = f"internal error ({type(exc).__name__}); see the server log"
    elif isinstance(exc, (_Expired, _ShuttingDown)):
        detail = str(exc) or "deadline exceeded"
    else:
        detail = str(exc) or type(exc).__name__
    _log_call(method, code, t0, context, detail)
    context.abort(code, detail)


def _unary(method: str, fn: Callable[[Any, Any], Any]):
    """The gRPC handler of a unary RPC: ``fn(request, context)`` returns the response."""
    monotonic, perf_counter = time.monotonic, time.perf_counter
    set_deadline, reset_deadline = _DEADLINE.set, _DEADLINE.reset

    # The per-call work here is part of every unary RPC's latency: one time_remaining() (a call
    # into gRPC's C core), one contextvar set/reset, and nothing else unless the access log is on.
    def wrapper(request, context):
        t0 = perf_counter()
        remaining = context.time_remaining()
        token = set_deadline(None if remaining is None else monotonic() + remaining)
        try:
            if type(request) is _Malformed:
                raise InvalidQueryError(f"request is not a valid {request.type_name}: {request.error}")
            if remaining is not None and remaining <= 0:
                raise _Expired("deadline exceeded before the call started")
            response = fn(request, context)
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

    return wrapper


_END = object()


def _stream(method: str, fn: Callable[[Any, Any], Iterator]):
    """The gRPC handler of a server-streaming RPC: ``fn(request, context)`` returns the messages
    (an iterator, advanced with the call's deadline set)."""

    def wrapper(request, context):
        t0 = time.perf_counter()
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        n = 0
        try:
            if isinstance(request, _Malformed):
                raise InvalidQueryError(f"request is not a valid {request.type_name}: {request.error}")
            it = iter(fn(request, context))
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

    return wrapper


def _stop_check(context, what: str, shutdown=None) -> Callable[[], None]:
    """A callable that raises _Expired once the call's deadline has passed or the client left, and
    _ShuttingDown once ``shutdown`` (a threading.Event) is set. Long operations call it between
    pieces of work (each a few milliseconds); it costs two calls into gRPC's core."""
    time_remaining, is_active = context.time_remaining, context.is_active
    stopping = shutdown.is_set if shutdown is not None else (lambda: False)

    def check() -> None:
        if stopping():
            raise _ShuttingDown(f"the server is shutting down: {what} stopped mid-run; retry on another server")
        remaining = time_remaining()
        if (remaining is not None and remaining <= 0) or not is_active():
            raise _Expired(f"deadline exceeded or call cancelled: {what} stopped mid-run")

    return check


# ------------------------------------------------------------------------------------------------
# Estimates made before the work (engine.serve.admission), in bytes. Deliberately on the high side: an
# estimate that runs short lets a call through that the limits were meant to stop.

_PACKED_ENTRY = 16  # a (token id, count) pair in a packed batch response: two int64
_PACKED_PROMPT = 25  # per prompt: prompt count, end count, offset (int64) and approx (1 byte)
_LIST_ENTRY = 20  # the same pair as two varints in a single distribution (at most 10 bytes each)
_MEM_ENTRY = 112  # per entry: the engine's arrays, the packed copies, the message, its serialization
_MEM_PROMPT = 1024  # per prompt: a result object and its arrays' headers
_DOC_WIRE = 96  # a document's fixed fields in a message (besides its tokens and metadata)
_DOC_MEM = 1024  # a Document, its metadata, array headers and its message (measured ~0.4-1 KiB)
_TOKEN_MEM = 24  # a document token: numpy, the message, its serialization (~20 B measured)
_OCC_MEM = 128  # a CNF occurrence turned into a document: its arrays, sorting and intersections
_HEAVY_BYTES = 16 << 20  # a call estimated to need more than this takes a slot of the expensive pool
_HEAVY_ENTRIES = 1 << 16  # ... as does a distribution batch that may hold more entries than this
_CHUNK_ENTRIES = 1 << 14  # distribution batches check the deadline after about this many entries
_RESERVE_MIN = 1 << 20  # smaller estimates are not reserved (cheap calls stay cheap)


def _varint_len(value: int) -> int:
    return max(1, (max(int(value), 1).bit_length() + 6) // 7)


# ------------------------------------------------------------------------------------------------
# Encoding helpers


# ------------------------------------------------------------------------------------------------
# The servicer


class NgramServicer(pb_grpc.NgramServiceServicer):
    """Serves ngram.v1.NgramService from ``backend`` (an NgramIndex or an NgramRouter)."""

    def __init__(self, backend, limits: ServerLimits | None = None, *, batch_chunk: int = 16384,
                 admission: Admission | None = None):
        self.backend = backend
        self.limits = limits or ServerLimits()
        self.batch_chunk = int(batch_chunk)
        # Shared by every call of this servicer; create_server replaces it with the server's own.
        self.admission = admission or Admission()
        self._info_response: pb.GetIndexInfoResponse | None = None
        # One gRPC handler per RPC of the service, each driven by its entries in engine.serve.rpcs.
        for m in SERVICE.methods:
            setattr(self, m.name, self._handler(m.name, m.server_streaming))

    def _handler(self, rpc: str, stream: bool):
        """The handler of ``rpc``: parse and bound the request (the ``_<Rpc>`` method below; or, for a
        backend that forwards requests as they came, the table's checks and its merge method), then
        encode the result as the table says."""
        queries = queries_of(rpc)
        forward = None if self._local else next((q for q in queries if q.forward), None)
        run = functools.partial(self._forward, forward) if forward is not None else getattr(self, "_" + rpc)
        encode = queries[0].encode if queries else (lambda response, request: response)
        if stream:
            def messages(request, context):
                yield from encode(run(request, context), request)

            return _stream(rpc, messages)
        return _unary(rpc, lambda request, context: encode(run(request, context), request))

    def _forward(self, q: Query, request, context):
        """A request checked against this server's limits (without tokenizing or decoding it) and
        handed to the backend's merge method for its RPC (an NgramRouter's)."""
        for check in q.checks:
            kind = check[0]
            if kind == "query":
                self._checked_query(request, check[1])
            elif kind == "batch":
                self._checked_batch(request, check[1])
            elif kind == "cont_id":
                self._cont_id(request)
            elif kind == "cont_ids":
                self._cont_ids(request, self._checked_batch(request, check[1]))
            elif kind == "max_support":
                ms = self._max_support(request)
                if ms is not None:
                    request.max_support = ms
            elif kind == "max_docs":
                request.max_docs = self._max_docs(request, check[1])
            elif kind == "max_disp_len":
                request.max_disp_len = self._disp_len(request)
            elif kind == "cnf":
                request.max_clause_freq = self._checked_cnf(request)
            else:  # pragma: no cover - a table entry naming a check that does not exist
                raise ValueError(f"unknown check {check!r} in the RPC table")
        return getattr(self.backend, q.forward)(request)

    @property
    def _local(self) -> bool:
        """The backend computes here (an NgramIndex), rather than forwarding (a router, whose shard
        servers bound and stop their own work)."""
        return not self.backend.forwards_requests

    # -- admission (engine.serve.admission) -----------------------------------------------------------

    def _ticket(self, context, what: str, *, heavy: bool) -> Ticket:
        """``with self._ticket(...) as t``: a slot of the expensive pool when ``heavy`` (waiting for
        one while the call is alive), memory reservations through ``t.reserve``, and ``t.check``,
        the call's stop check (deadline, client gone, shutdown)."""
        return self.admission.call(what, _stop_check(context, what, self.admission.shutdown), heavy=heavy)

    def _check_response(self, nbytes: int, what: str, hint: str) -> None:
        """Refuse, before the work, an answer that could not be sent (max_message_bytes)."""
        cap = self.limits.max_message_bytes
        if nbytes > cap:
            raise LimitExceededError(
                f"{what} could take up to {nbytes:,} bytes, over the server limit max_message_bytes={cap}; {hint}")

    def _reserve_documents(self, ticket: Ticket, what: str, documents: int, tokens: int, hint: str,
                           wire: bool = True) -> None:
        """Admit an answer of up to ``documents`` documents of ``tokens`` tokens in all: the response
        size (when it is one message) and the memory it takes."""
        if wire:
            per_token = _varint_len(self.backend.vocab_size)
            self._check_response(documents * _DOC_WIRE + tokens * per_token,
                                 f"{what}: an answer of up to {documents:,} documents and {tokens:,} tokens", hint)
        need = documents * _DOC_MEM + tokens * _TOKEN_MEM
        if need >= _RESERVE_MIN:
            ticket.reserve(need, hint)

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
            tokens = checked_le_array(qb.packed.token_ids, I8, f"{field}.packed.token_ids")
            offsets = checked_le_array(qb.packed.offsets, I8, f"{field}.packed.offsets")
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
        cont = checked_le_array(request.cont_ids, I8, "cont_ids")
        if len(cont) != n:
            raise InvalidQueryError(f"cont_ids holds {len(cont)} ids for {n} prompts: give one per prompt")
        return cont

    def _cont_id(self, request) -> int:
        if not request.HasField("cont_id"):
            raise InvalidQueryError("cont_id is missing: set the id of the continuation token")
        return int(request.cont_id)

    def _max_support(self, request) -> int | None:
        """The request's max_support, or None: exact (never capped silently, as in process)."""
        cap = self.limits.max_support or None
        if not request.HasField("max_support"):
            return None
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

    def _chunked(self, pq: PackedQueries, context, fn: Callable[[PackedQueries], Any], what: str) -> list:
        """Run fn over chunks of the batch, checking the deadline between chunks; a batch longer than
        one chunk is expensive and takes a slot of the pool."""
        n = len(pq)
        if n <= self.batch_chunk:
            return [fn(pq)]
        out = []
        with self._ticket(context, what, heavy=True) as t:
            for start in range(0, n, self.batch_chunk):
                if start:
                    t.check()
                out.append(fn(slice_packed(pq, start, min(n, start + self.batch_chunk))))
        return out

    # -- distributions: exact unless max_support is asked for, bounded before the work -----------

    def _entry_bounds(self, counts: np.ndarray, max_support: int | None) -> np.ndarray:
        """Upper bounds of the (token, count) entries of each prompt's distribution: at most one per
        occurrence and per vocabulary token; a sample (count > max_support) at most 2 * max_support
        + 256 (engine.index's sampling reads at most that many positions)."""
        vocab = max(1, int(self.backend.vocab_size))
        bounds = np.minimum(np.asarray(counts, dtype=np.int64), vocab)
        if max_support is not None:
            bounds = np.where(counts > max_support, np.minimum(bounds, 2 * max_support + 256), bounds)
        return bounds

    def _admit_distributions(self, what: str, n: int, counts_of: Callable[[], np.ndarray],
                             max_support: int | None, packed: bool) -> tuple[np.ndarray | None, int]:
        """(per-prompt entry bounds or None, total bound) of ``n`` distributions, after refusing
        answers that could exceed max_distinct_tokens or max_message_bytes. The prompts are counted
        (``counts_of``: one batched search) only when the vocabulary alone does not settle it."""
        lim = self.limits
        per_entry, per_prompt = (_PACKED_ENTRY, _PACKED_PROMPT) if packed else (_LIST_ENTRY, 64)
        vocab = max(1, int(self.backend.vocab_size))
        cap = vocab if max_support is None else min(vocab, 2 * max_support + 256)
        total = n * cap
        bounds = None
        if total > min(_HEAVY_ENTRIES, lim.max_distinct_tokens) or \
                n * per_prompt + total * per_entry > lim.max_message_bytes:
            bounds = self._entry_bounds(counts_of(), max_support)
            total = int(bounds.sum())
        if max_support is None:
            ask = (f"ask for a sampled distribution with max_support (at most {lim.max_support or 'any'}; a "
                   f"prompt then holds at most about 2 * max_support + 256 entries)")
        else:
            ask = "lower max_support"
        ask += ", split the batch" if n > 1 else ""
        if total > lim.max_distinct_tokens:
            raise LimitExceededError(
                f"{what}: the {'exact ' if max_support is None else ''}distribution{'s' if n > 1 else ''} of "
                f"{'these ' + format(n, ',') + ' prompts' if n > 1 else 'this prompt'} may hold up to {total:,} (token, "
                f"count) entries (per prompt: min(its count, the vocabulary of {vocab:,})), over the server limit "
                f"max_distinct_tokens={lim.max_distinct_tokens}; {ask}, or ask the operator to raise "
                f"--max-distinct-tokens")
        self._check_response(n * per_prompt + total * per_entry,
                             f"{what}: {n:,} distribution{'s' if n > 1 else ''} of up to {total:,} entries",
                             f"{ask}, or ask the operator to raise --max-message-bytes")
        return bounds, total

    def _distributions(self, context, what: str, pq: PackedQueries, max_support: int | None, infgram: bool):
        """The packed distributions of a batch: admitted first (size bounds, memory, a slot of the
        expensive pool when big), then computed in chunks of about _CHUNK_ENTRIES entries with the
        call's stop check between them."""
        b = self.backend
        n = len(pq)

        def counts_of() -> np.ndarray:
            if infgram:  # the count of each prompt's longest occurring suffix, which infgram_ntd uses
                return b.infgram_prob_batch(pq, np.zeros(n, dtype=np.int64)).prompt_counts
            return b.count_batch(pq)

        bounds, total = self._admit_distributions(what, n, counts_of, max_support, packed=True)
        fn = b.infgram_ntd_batch if infgram else b.ntd_batch
        packer = DistPacker(with_suffix=infgram)
        heavy = total > _HEAVY_ENTRIES or n > self.batch_chunk
        need = total * _MEM_ENTRY + n * _MEM_PROMPT + 2 * pq.tokens.nbytes
        if not heavy and need < _RESERVE_MIN:
            packer.add(fn(pq, max_support=max_support))
            return packer.message()
        hint = "ask for a smaller max_support or split the batch"
        self.admission.check_fits(need, what, hint)
        with self._ticket(context, what, heavy=heavy) as t:
            if need >= _RESERVE_MIN:
                t.reserve(need, hint)
            ends = (np.cumsum(bounds) if bounds is not None else None)
            start = 0
            while start < n:
                if start:
                    t.check()
                stop = min(n, start + self.batch_chunk)
                if ends is not None:  # about _CHUNK_ENTRIES entries at a time, at least one prompt
                    reached = int(np.searchsorted(ends, (ends[start - 1] if start else 0) + _CHUNK_ENTRIES, "right"))
                    stop = min(stop, max(start + 1, reached))
                packer.add(fn(slice_packed(pq, start, stop), max_support=max_support))
                start = stop
            t.check()
            return packer.message()

    def _distribution(self, context, what: str, prompt, max_support: int | None, infgram: bool):
        """One prompt's distribution, refused before the work when it could exceed the limits (which
        takes a count only when the vocabulary is larger than they allow)."""
        b = self.backend

        def counts_of() -> np.ndarray:
            if infgram:
                return np.array([b.infgram_prob(prompt, 0).prompt_count], dtype=np.int64)
            return np.array([b.count(prompt)], dtype=np.int64)

        self._admit_distributions(what, 1, counts_of, max_support, packed=False)
        if infgram:
            return b.infgram_ntd(prompt, max_support=max_support)
        return b.ntd(prompt, max_support=max_support)

    # -- info and tokenization -----------------------------------------------------------------

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
                manifest_json=to_json(b.manifest),
                info_json=to_json(b.info()),
                limits=self.limits.to_proto(),
            )
            if b.eos_token_id is not None:
                resp.eos_token_id = int(b.eos_token_id)
            if b.forwards_requests:  # a router: its info (shard health) changes, do not cache
                return resp
            self._info_response = resp
        return self._info_response

    def _Tokenize(self, request, context):
        return self._tokenize(request.text, "text")

    def _Detokenize(self, request, context):
        ids = self._ids(request.token_ids, "token_ids")
        return self.backend.detokenize(ids)

    # -- counting ------------------------------------------------------------------------------

    def _Count(self, request, context):
        return self.backend.count(self._query(request, "query"))

    def _CountBatch(self, request, context):
        pq = self._batch(request, "queries")
        parts = self._chunked(pq, context, self.backend.count_batch, "CountBatch")
        return concat_results(parts)

    def _Find(self, request, context):
        return self.backend.find(self._query(request, "query"))

    # -- probabilities and distributions -------------------------------------------------------

    def _Prob(self, request, context):
        prompt = self._query(request, "prompt")
        return self.backend.prob(prompt, self._cont_id(request))

    def _prob_batch(self, request, context, fn, what: str) -> ProbBatchResult:
        pq = self._batch(request, "prompts")
        cont = self._cont_ids(request, len(pq))
        if len(pq) <= self.batch_chunk:
            return fn(pq, cont)
        parts = []
        with self._ticket(context, what, heavy=True) as t:  # a big batch shares the expensive pool
            for start in range(0, len(pq), self.batch_chunk):
                if start:
                    t.check()
                stop = min(len(pq), start + self.batch_chunk)
                parts.append(fn(slice_packed(pq, start, stop), cont[start:stop]))
        return concat_results(parts)

    def _ProbBatch(self, request, context):
        return self._prob_batch(request, context, self.backend.prob_batch, "ProbBatch")

    def _InfgramProb(self, request, context):
        prompt = self._query(request, "prompt")
        return self.backend.infgram_prob(prompt, self._cont_id(request))

    def _InfgramProbBatch(self, request, context):
        return self._prob_batch(request, context, self.backend.infgram_prob_batch, "InfgramProbBatch")


    def _distribution_handler(rpc: str, infgram: bool, batch: bool):
        """The handler of one of the four distribution RPCs (single or batch, n-gram or ∞-gram)."""
        def handler(self, request, context):
            if batch:
                pq = self._batch(request, "prompts")
                return self._distributions(context, rpc, pq, self._max_support(request), infgram=infgram)
            prompt = self._query(request, "prompt")
            return self._distribution(context, rpc, prompt, self._max_support(request), infgram=infgram)
        return handler

    _NextTokenDistribution = _distribution_handler("NextTokenDistribution", False, False)
    _NextTokenDistributionBatch = _distribution_handler("NextTokenDistributionBatch", False, True)
    _InfgramNextTokenDistribution = _distribution_handler("InfgramNextTokenDistribution", True, False)
    _InfgramNextTokenDistributionBatch = _distribution_handler("InfgramNextTokenDistributionBatch", True, True)
    del _distribution_handler

    # -- documents -----------------------------------------------------------------------------

    def _SearchDocuments(self, request, context):
        query = self._query(request, "query")
        max_docs = int(request.max_docs) if request.HasField("max_docs") else 10
        if max_docs < 0:
            raise InvalidQueryError(f"max_docs must be non-negative, got {max_docs}")
        if max_docs > self.limits.max_results_per_stream:
            raise _over("max_docs", max_docs, "max_results_per_stream", self.limits.max_results_per_stream)
        disp = self._disp_len(request)
        if max_docs * (disp * _TOKEN_MEM + _DOC_MEM) < _HEAVY_BYTES:  # the usual call: nothing to admit
            return self.backend.search_docs(query, max_docs=max_docs, max_disp_len=disp)
        # Up to max_docs whole windows are held at once: admitted from the query's count.
        docs = min(max_docs, int(self.backend.count(query)))
        with self._ticket(context, "SearchDocuments", heavy=docs * (disp * _TOKEN_MEM + _DOC_MEM) >= _HEAVY_BYTES) as t:
            self._reserve_documents(t, "SearchDocuments", docs, docs * disp, "lower max_docs or max_disp_len",
                                    wire=False)
            return self.backend.search_docs(query, max_docs=max_docs, max_disp_len=disp)

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
        return doc


    # -- frequent n-grams, longest matches, attribution, AND/OR search (issue 4) ---------------

    def _backend_method(self, name: str):
        fn = getattr(self.backend, name, None)
        if fn is None:
            raise NotSupportedError(f"{name} is not served by this backend ({type(self.backend).__name__}); "
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

    # Rows per chunk of the engine's frequent-n-gram walk on a server: the stop check runs after
    # each chunk, and the walk's buffers are chunk_rows x n_max int64 (the engine's default of 1M
    # rows is 512 MiB at n_max=64).
    NGRAM_CHUNK_ROWS = 1 << 14

    def _frequent_ngrams(self, ticket: Ticket, n_min: int, n_max: int, **kwargs):
        """backend.frequent_ngrams, stopped mid-run once the call's deadline passes, the client
        cancels or the server shuts down: the computation can take minutes on a large index."""
        fn = self._backend_method("frequent_ngrams")
        ticket.check()
        if not self._local:  # a router: the shard servers stop themselves
            return fn(n_min, n_max, **kwargs)
        table = fn(n_min, n_max, check_alive=ticket.check, chunk_rows=self.NGRAM_CHUNK_ROWS, **kwargs)
        ticket.check()
        return table

    def _FrequentNgrams(self, request, context):
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
        rows = cap + 1 if top_k is None else top_k
        width = max(1, min(n_max, 64))
        # The table in memory (counts, lengths, u32 tokens), one message's arrays and the walk's buffers.
        need = rows * (16 + 4 * width) + min(rows, chunk) * 8 * (width + 2) * 3 + \
            self.NGRAM_CHUNK_ROWS * 8 * (width + 1) * 3
        hint = "lower top_k (or raise min_count) or n_max"
        self.admission.check_fits(need, "FrequentNgrams", hint)
        request.chunk_rows = chunk  # the table's encoder cuts the messages at this many rows
        with self._ticket(context, "FrequentNgrams", heavy=True) as t:
            t.reserve(need, hint)
            table = self._frequent_ngrams(t, int(request.n_min), n_max, min_count=min_count,
                                          top_k=cap + 1 if top_k is None else top_k)
        if top_k is None:
            if len(table) > cap:
                raise _over(f"the number of n-grams occurring at least {min_count} times", f"more than {cap}",
                            "max_ngram_rows", cap)
            table.meta["top_k"] = None
        return table

    def _LongestMatches(self, request, context):
        text = self._query(request, "text")
        max_len = self._opt(request, "max_len", None)
        infgram = not request.HasField("infgram") or request.infgram
        return self._backend_method("longest_matches")(text, max_len, infgram=infgram)

    def _attribute_args(self, request) -> tuple[int, int | None, dict]:
        """(min_len, max_count, keyword arguments) of an AttributeRequest, with the server's limits."""
        disp = self._disp_len(request) if request.HasField("max_disp_len") else min(100, self.limits.max_disp_len)
        kwargs = {"max_docs": self._max_docs(request, 3), "max_disp_len": disp}
        if request.HasField("creativity_n"):
            kwargs["creativity_n"] = int(request.creativity_n)
        return self._opt(request, "min_len", 8), self._opt(request, "max_count", None), kwargs

    def _Attribute(self, request, context):
        text = self._query(request, "text")
        min_len, max_count, kwargs = self._attribute_args(request)
        fn = self._backend_method("attribute")
        if not self._local:
            return fn(text, min_len, max_count, **kwargs)
        with self._ticket(context, "Attribute", heavy=True) as t:
            def admit(documents: int, tokens: int) -> None:  # after the longest-match pass, before any document
                self._reserve_documents(t, "Attribute", documents, tokens,
                                        "raise min_len, set max_count, or lower max_docs or max_disp_len")

            return fn(text, min_len, max_count, check_alive=t.check, admit=admit, **kwargs)

    def _cnf_call(self, context, what: str, fn, cnf, freq: int, **kwargs):
        """A CNF evaluation in the expensive pool: the occurrences it will enumerate are admitted once
        the clauses' counts are known, and it stops at the call's stop check."""
        if not self._local:
            return fn(cnf, max_clause_freq=freq, **kwargs)
        with self._ticket(context, what, heavy=True) as t:
            docs = int(kwargs.get("max_docs", 0))
            if docs:
                self._reserve_documents(t, what, docs, docs * int(kwargs["max_disp_len"]),
                                        "lower max_docs or max_disp_len", wire=False)

            def admit(occurrences: int) -> None:
                need = occurrences * _OCC_MEM
                if need >= _RESERVE_MIN:
                    t.reserve(need, "lower max_clause_freq (clauses over it are checked by scanning the candidate "
                                    "documents instead), or use rarer terms")

            return fn(cnf, max_clause_freq=freq, check_alive=t.check, admit=admit, **kwargs)

    def _CountCnf(self, request, context):
        cnf, freq = self._cnf(request)
        return self._cnf_call(context, "CountCnf", self._backend_method("count_cnf"), cnf, freq)

    def _SearchDocumentsCnf(self, request, context):
        cnf, freq = self._cnf(request)
        return self._cnf_call(context, "SearchDocumentsCnf", self._backend_method("search_docs_cnf"), cnf, freq,
                              max_docs=self._max_docs(request, 10), max_disp_len=self._disp_len(request))




def add_to_server(servicer: NgramServicer, server: grpc.Server) -> None:
    """Register every RPC of the service descriptor.

    Unlike the generated add_NgramServiceServicer_to_server, requests whose bytes do not parse
    reach the servicer (as INVALID_ARGUMENT) instead of failing as INTERNAL inside gRPC.
    """
    handlers = {}
    for m in SERVICE.methods:
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
        server.add_registered_method_handlers(SERVICE.full_name, handlers)
    else:  # pragma: no cover - older grpcio
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
