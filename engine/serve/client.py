"""NgramClient: the NgramIndex API over gRPC.

    with NgramClient("127.0.0.1:50051") as index:
        index.count([464, 3290])             # same methods, arguments and result types as NgramIndex
        index.infgram_ntd_batch(prompts)     # batches travel as packed little-endian arrays

Every query method takes token ids (list / numpy int array) or text (tokenized by the server).
Errors come back as the engine's typed exceptions (InvalidQueryError, LimitExceededError,
TokenizerError, ShardUnavailableError, ...), so a caller can swap NgramIndex and NgramClient;
the gRPC status is on ``exc.code`` and the original grpc.RpcError on ``exc.__cause__``.

Options: ``timeout`` (default deadline of every call, seconds; each method also takes
``timeout=``), ``root_certificates`` / ``tls`` for TLS, ``token`` / ``token_file`` for bearer-token
auth, ``retry`` (retries UNAVAILABLE with exponential backoff through the gRPC retry policy in
the channel's service config). Large batches are split to the server's ``max_batch_size``.
The client pickles by its constructor arguments.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Sequence

import grpc
import numpy as np

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine._proto.ngram.v1 import ngram_pb2_grpc as pb_grpc
from engine.errors import (
    ClientClosedError,
    IndexFormatError,
    InvalidQueryError,
    LimitExceededError,
    NgramError,
    ShardUnavailableError,
    TokenizerError,
)
from engine.results import (
    Document,
    FindResult,
    InfgramNtdResult,
    InfgramProbResult,
    NextTokenDistribution,
    PackedQueries,
    ProbBatchResult,
    ProbResult,
    SearchResult,
)

__all__ = [
    "NgramClient",
    "RemoteTokenizer",
    "DeadlineExceededError",
    "AuthenticationError",
    "RpcFailedError",
    "NotSupportedError",
    "error_from_rpc",
    "encode_query",
    "fill_query",
]

SERVICE_NAME = "ngram.v1.NgramService"
_I8 = np.dtype("<i8")
_F8 = np.dtype("<f8")


# ------------------------------------------------------------------------------------------------
# Errors


class DeadlineExceededError(NgramError, TimeoutError):
    """The call's deadline passed before the server answered."""


class AuthenticationError(NgramError, PermissionError):
    """The server requires a bearer token that was missing or wrong."""


class RpcFailedError(NgramError):
    """A gRPC failure with no more specific engine error (CANCELLED, INTERNAL, ...)."""


class NotSupportedError(NgramError, NotImplementedError):
    """The server cannot answer this request (UNIMPLEMENTED): e.g. a router asked for an answer
    that cannot be merged exactly from its shard servers. The message says what to ask instead."""


_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidQueryError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidQueryError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitExceededError,
    grpc.StatusCode.FAILED_PRECONDITION: TokenizerError,
    grpc.StatusCode.UNAVAILABLE: ShardUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.DATA_LOSS: IndexFormatError,
    grpc.StatusCode.UNIMPLEMENTED: NotSupportedError,
}


def error_from_rpc(exc: grpc.RpcError, where: str = "") -> NgramError:
    """The engine exception for a failed call (``.code`` holds the status code)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    cls = _ERRORS.get(code, RpcFailedError)
    msg = f"{details}" if not where else f"{where}: {details}"
    if cls is RpcFailedError:
        msg = f"{code.name}: {msg}"
    err = cls(msg)
    err.code = code
    return err


# ------------------------------------------------------------------------------------------------
# Encoding and decoding (shared with engine.serve.router)


def as_ids(query, what: str = "query") -> np.ndarray:
    """A token-id query as a 1-D int64 array (InvalidQueryError when it is not one)."""
    if isinstance(query, (bytes, bytearray, memoryview)):
        raise InvalidQueryError(f"{what} must be token ids (ints) or text (str), not {type(query).__name__}")
    arr = np.asarray(query)
    if arr.ndim != 1:
        raise InvalidQueryError(f"{what} must be a 1-D sequence of token ids, got an array of shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise InvalidQueryError(f"{what} must hold integer token ids, got dtype {arr.dtype}")
    if isinstance(query, (list, tuple)) and any(isinstance(t, (bool, np.bool_)) for t in query):
        raise InvalidQueryError(f"{what} holds a bool; pass int token ids")  # numpy made it 0 / 1
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidQueryError(f"{what} holds a token id above 2**63-1")
    return arr.astype(np.int64, copy=False)


def fill_query(msg: pb.Query, query, what: str = "query") -> pb.Query:
    """Set a Query message in place (text, or token ids) and return it.

    Filling the request's own sub-message is about 3x faster than building a Query and copying it
    into the request (protobuf copies sub-messages passed to a constructor), which is a visible
    part of a unary call's client-side cost.
    """
    if isinstance(query, str):
        try:
            msg.text = query
        except UnicodeEncodeError:  # lone surrogates, which proto strings refuse
            msg.text = _wire_text(query)
        return msg
    if type(query) is np.ndarray and query.dtype == np.int64 and query.ndim == 1:
        ids = msg.token_ids  # fast path: already int64 ids
        ids.SetInParent()  # an empty query is still a token-id query
        ids.ids.extend(query.tolist())
        return msg
    if type(query) is list:  # fast path: protobuf checks the ints itself
        try:
            ids = msg.token_ids
            ids.SetInParent()
            ids.ids.extend(query)
            return msg
        except (TypeError, ValueError):
            msg.Clear()  # as_ids below says what is wrong
    ids = as_ids(query, what).tolist()
    msg.token_ids.SetInParent()  # an empty query is still a token-id query
    msg.token_ids.ids.extend(ids)
    return msg


def _wire_text(text: str) -> str:
    """``text`` with lone surrogates replaced as the index's tokenizers replace them in process
    (U+FFFD), so that over gRPC (whose strings must be valid UTF-8) the answer is the same."""
    from engine.tokenizers import clean_text

    return clean_text(text)


def encode_query(query, what: str = "query") -> pb.Query:
    return fill_query(pb.Query(), query, what)


def pack_queries(queries, what: str = "queries") -> PackedQueries:
    """Token-id queries (PackedQueries, 2-D int array or list of sequences) as PackedQueries."""
    if isinstance(queries, PackedQueries):
        return queries
    if isinstance(queries, np.ndarray) and queries.ndim == 2:
        n, w = queries.shape
        if queries.size and (queries.dtype.kind not in "iu" or queries.dtype == np.bool_):
            raise InvalidQueryError(f"{what} must hold integer token ids, got dtype {queries.dtype}")
        return PackedQueries(queries.astype(np.int64).reshape(-1), np.arange(n + 1, dtype=np.int64) * w)
    if isinstance(queries, (str, bytes)):
        raise InvalidQueryError(f"{what} must be a list of queries, not a single {type(queries).__name__}")
    return PackedQueries.from_list([as_ids(q, f"{what}[{i}]") for i, q in enumerate(queries)])


def encode_packed(pq: PackedQueries) -> pb.QueryBatch:
    return pb.QueryBatch(
        packed=pb.PackedTokenIds(
            token_ids=np.ascontiguousarray(pq.tokens, dtype=_I8).tobytes(),
            offsets=np.ascontiguousarray(pq.offsets, dtype=_I8).tobytes(),
        )
    )


def _arr(data: bytes, dtype=_I8) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)


def decode_dist(d: pb.TokenDistribution, suffix_len: int | None = None) -> NextTokenDistribution:
    common = dict(
        prompt_count=int(d.prompt_count),
        tokens=np.array(d.token_ids, dtype=np.int64),
        counts=np.array(d.counts, dtype=np.int64),
        end_count=int(d.end_count),
        approx=bool(d.approx),
    )
    if suffix_len is None:
        return NextTokenDistribution(**common)
    return InfgramNtdResult(**common, suffix_len=int(suffix_len))


def decode_packed_dists(p: pb.PackedTokenDistributions, infgram: bool) -> list:
    prompt_counts = _arr(p.prompt_counts)
    end_counts = _arr(p.end_counts)
    approx = np.frombuffer(p.approx, dtype=np.uint8)
    offsets = _arr(p.offsets)
    tokens = _arr(p.token_ids)
    counts = _arr(p.counts)
    suffix = _arr(p.suffix_lens) if infgram else None
    out = []
    for i in range(len(prompt_counts)):
        lo, hi = offsets[i], offsets[i + 1]
        common = dict(
            prompt_count=int(prompt_counts[i]),
            tokens=tokens[lo:hi],
            counts=counts[lo:hi],
            end_count=int(end_counts[i]),
            approx=bool(approx[i]),
        )
        out.append(InfgramNtdResult(**common, suffix_len=int(suffix[i])) if infgram else NextTokenDistribution(**common))
    return out


def decode_document(d: pb.Document) -> Document:
    return Document(
        doc_ix=int(d.doc_ix),
        doc_len=int(d.doc_len),
        disp_len=int(d.disp_len),
        needle_offset=int(d.needle_offset),
        token_ids=np.array(d.token_ids, dtype=np.int64),
        metadata=json.loads(d.metadata_json) if d.HasField("metadata_json") else None,
        shard=int(d.shard),
    )


def decode_prob_batch(r, infgram: bool) -> ProbBatchResult:
    return ProbBatchResult(
        prompt_counts=_arr(r.prompt_counts),
        cont_counts=_arr(r.cont_counts),
        probs=_arr(r.probs, _F8),
        suffix_lens=_arr(r.suffix_lens) if infgram else None,
    )


# ------------------------------------------------------------------------------------------------
# Channel construction


def retry_service_config(max_attempts: int = 5, initial_backoff: float = 0.05, max_backoff: float = 2.0) -> str:
    """A gRPC service config that retries UNAVAILABLE with exponential backoff."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": SERVICE_NAME}, {"service": "grpc.health.v1.Health"}],
                    "retryPolicy": {
                        "maxAttempts": int(max_attempts),
                        "initialBackoff": f"{initial_backoff}s",
                        "maxBackoff": f"{max_backoff}s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def _read_bytes(value) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class RemoteTokenizer:
    """The server's tokenizer, used through Tokenize/Detokenize (no local tokenizer files)."""

    def __init__(self, client: "NgramClient", kind: str, fingerprint: str, vocab_size: int):
        self._client = client
        self.kind = kind
        self._fingerprint = fingerprint
        self.vocab_size = vocab_size

    def encode(self, text: str) -> np.ndarray:
        return self._client.tokenize(text)

    def decode(self, ids) -> str:
        return self._client.detokenize(ids)

    def token_str(self, token_id: int) -> str:
        return self._client.detokenize([int(token_id)])

    def fingerprint(self) -> str:
        return self._fingerprint

    def __repr__(self) -> str:
        return f"RemoteTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, via={self._client.target!r})"


# ------------------------------------------------------------------------------------------------
# The client


class NgramClient:
    """The NgramIndex API over a gRPC channel to ``ngram serve`` (or a router)."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 30.0,
        root_certificates: bytes | str | os.PathLike | None = None,
        tls: bool | None = None,
        server_name: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike | None = None,
        retry: bool = True,
        max_attempts: int = 5,
        max_message_bytes: int = 256 * 1024 * 1024,
        wait_for_ready: bool = False,
        options: Sequence[tuple[str, Any]] = (),
    ):
        self._init_kwargs = dict(
            timeout=timeout, root_certificates=root_certificates, tls=tls, server_name=server_name,
            token=token, token_file=token_file, retry=retry, max_attempts=max_attempts,
            max_message_bytes=max_message_bytes, wait_for_ready=wait_for_ready, options=tuple(options),
        )
        self.target = target
        self.timeout = timeout
        self._wait_for_ready = wait_for_ready
        if token_file is not None:
            token = Path(token_file).read_text().strip()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        opts = [
            ("grpc.max_receive_message_length", int(max_message_bytes)),
            ("grpc.max_send_message_length", int(max_message_bytes)),
            ("grpc.enable_retries", 1 if retry else 0),
        ]
        if retry:
            opts.append(("grpc.service_config", retry_service_config(max_attempts)))
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        opts.extend(options)
        roots = _read_bytes(root_certificates)
        if roots is not None or tls:
            creds = grpc.ssl_channel_credentials(root_certificates=roots)
            self._channel = grpc.secure_channel(target, creds, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._stub = pb_grpc.NgramServiceStub(self._channel)
        # The unary multicallables by method name (one dict lookup per call instead of getattr).
        self._unary = {
            m.name: getattr(self._stub, m.name)
            for m in pb.DESCRIPTOR.services_by_name["NgramService"].methods
            if not m.server_streaming and not m.client_streaming
        }
        self._info: pb.GetIndexInfoResponse | None = None
        self._info_lock = threading.Lock()
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> "NgramClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        return {"target": self.target, "kwargs": self._init_kwargs}

    def __setstate__(self, state):
        self.__init__(state["target"], **state["kwargs"])

    def __repr__(self) -> str:
        return f"NgramClient({self.target!r})"

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    # -- plumbing ------------------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError(f"this NgramClient ({self.target}) is closed; make a new one to query again")

    def _call(self, method: str, request, timeout: float | None = None):
        if self._closed:
            self._check_open()
        try:
            return self._unary[method](
                request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata,
                wait_for_ready=self._wait_for_ready,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def _blocking(self, method: str, request, timeout: float | None = None):
        """A unary call that raises grpc.RpcError (for callers that map errors themselves)."""
        self._check_open()
        return self._unary[method](
            request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata,
            wait_for_ready=self._wait_for_ready,
        )

    def _future(self, method: str, request, timeout: float | None = None):
        """Start a unary call; ``.result()`` returns the response or raises grpc.RpcError."""
        self._check_open()
        return self._unary[method].future(
            request, timeout=self._timeout(timeout), metadata=self._metadata, wait_for_ready=self._wait_for_ready
        )

    def _stream(self, method: str, request, timeout: float | None = None):
        self._check_open()
        return getattr(self._stub, method)(
            request, timeout=self._timeout(timeout), metadata=self._metadata, wait_for_ready=self._wait_for_ready
        )

    def _index_info(self) -> pb.GetIndexInfoResponse:
        if self._info is None:
            with self._info_lock:
                if self._info is None:
                    self._info = self._call("GetIndexInfo", pb.GetIndexInfoRequest())
        return self._info

    def _batch_size(self) -> int:
        return int(self._index_info().limits.max_batch_size) or 1 << 62

    def _batches(self, queries, what: str) -> Iterable[tuple[pb.QueryBatch, int, int]]:
        """(QueryBatch, start, stop) chunks no larger than the server's max_batch_size."""
        if isinstance(queries, (list, tuple)) and queries and all(isinstance(q, str) for q in queries):
            n = len(queries)
            size = self._batch_size() if n > 1024 else n
            for start in range(0, n, max(1, size)):
                stop = min(n, start + size)
                try:
                    batch = pb.QueryBatch(texts=pb.TextBatch(texts=list(queries[start:stop])))
                except UnicodeEncodeError:
                    batch = pb.QueryBatch(texts=pb.TextBatch(texts=[_wire_text(t) for t in queries[start:stop]]))
                yield batch, start, stop
            return
        if isinstance(queries, (list, tuple)) and any(isinstance(q, str) for q in queries):
            queries = [self.tokenize(q) if isinstance(q, str) else q for q in queries]
        pq = pack_queries(queries, what)
        n = len(pq)
        size = self._batch_size() if n > 1024 else max(n, 1)
        if n <= size:
            yield encode_packed(pq), 0, n
            return
        for start in range(0, n, size):
            stop = min(n, start + size)
            lo, hi = int(pq.offsets[start]), int(pq.offsets[stop])
            yield encode_packed(PackedQueries(pq.tokens[lo:hi], pq.offsets[start : stop + 1] - lo)), start, stop

    # -- index properties (fetched once with GetIndexInfo) -------------------------------------

    @property
    def vocab_size(self) -> int:
        return int(self._index_info().vocab_size)

    @property
    def token_width(self) -> int:
        return int(self._index_info().token_width)

    @property
    def num_tokens(self) -> int:
        return int(self._index_info().num_tokens)

    @property
    def num_docs(self) -> int:
        return int(self._index_info().num_docs)

    @property
    def num_shards(self) -> int:
        return int(self._index_info().num_shards)

    @property
    def eos_token_id(self) -> int | None:
        info = self._index_info()
        return int(info.eos_token_id) if info.HasField("eos_token_id") else None

    @property
    def tokenizer_fingerprint(self) -> str | None:
        return self._index_info().tokenizer_fingerprint or None

    @property
    def tokenizer(self) -> RemoteTokenizer | None:
        info = self._index_info()
        if not info.has_tokenizer:
            return None
        return RemoteTokenizer(self, info.tokenizer_kind, info.tokenizer_fingerprint, int(info.vocab_size))

    @property
    def manifest(self) -> dict:
        return json.loads(self._index_info().manifest_json or "{}")

    @property
    def limits(self) -> dict:
        """The server's limits (ServerLimits fields)."""
        lim = self._index_info().limits
        return {f.name: int(getattr(lim, f.name)) for f in lim.DESCRIPTOR.fields}

    def info(self) -> dict:
        return json.loads(self._index_info().info_json or "{}")

    def health(self, timeout: float | None = 5.0) -> str:
        """The server's health status name (SERVING, NOT_SERVING, ...)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self._check_open()
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            r = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        """Block until the server's health reports SERVING (DeadlineExceededError otherwise)."""
        import time

        end = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise DeadlineExceededError(
                    f"{self.target} did not report SERVING within {timeout}s" + (f" (last: {last})" if last else "")
                )
            try:
                grpc.channel_ready_future(self._channel).result(timeout=left)
                if self.health(timeout=min(left, 5.0)) == "SERVING":
                    return
                last = None
            except (grpc.FutureTimeoutError, NgramError) as exc:
                last = exc
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def warmup(self) -> None:
        """The server compiles its kernels before it reports SERVING; wait for that."""
        self.wait_until_serving(self.timeout or 30.0)

    # -- tokenization --------------------------------------------------------------------------

    def tokenize(self, text: str, *, timeout: float | None = None) -> np.ndarray:
        if not isinstance(text, str):
            raise InvalidQueryError(f"text must be a str, not {type(text).__name__}")
        try:
            request = pb.TokenizeRequest(text=text)
        except UnicodeEncodeError:
            request = pb.TokenizeRequest(text=_wire_text(text))
        r = self._call("Tokenize", request, timeout)
        return np.array(r.token_ids, dtype=np.int64)

    def detokenize(self, ids, *, timeout: float | None = None) -> str:
        r = self._call("Detokenize", pb.DetokenizeRequest(token_ids=as_ids(ids, "ids").tolist()), timeout)
        return r.text

    # -- single queries ------------------------------------------------------------------------

    def find(self, query, *, timeout: float | None = None) -> FindResult:
        req = pb.FindRequest()
        fill_query(req.query, query)
        r = self._call("Find", req, timeout)
        return FindResult(count=int(r.count), segments=tuple((int(s.start), int(s.end)) for s in r.segments))

    def count(self, query, *, timeout: float | None = None) -> int:
        req = pb.CountRequest()
        fill_query(req.query, query)
        return int(self._call("Count", req, timeout).count)

    def prob(self, prompt, cont_id: int, *, timeout: float | None = None) -> ProbResult:
        req = pb.ProbRequest(cont_id=_int(cont_id, "cont_id"))
        fill_query(req.prompt, prompt, "prompt")
        r = self._call("Prob", req, timeout)
        return ProbResult(prompt_count=int(r.prompt_count), cont_count=int(r.cont_count), prob=float(r.prob))

    def ntd(self, prompt, max_support: int | None = None, *, timeout: float | None = None) -> NextTokenDistribution:
        req = pb.NextTokenDistributionRequest()
        fill_query(req.prompt, prompt, "prompt")
        if max_support is not None:
            req.max_support = _int(max_support, "max_support")
        return decode_dist(self._call("NextTokenDistribution", req, timeout).distribution)

    def infgram_prob(self, prompt, cont_id: int, *, timeout: float | None = None) -> InfgramProbResult:
        req = pb.InfgramProbRequest(cont_id=_int(cont_id, "cont_id"))
        fill_query(req.prompt, prompt, "prompt")
        r = self._call("InfgramProb", req, timeout)
        return InfgramProbResult(
            prompt_count=int(r.prompt_count), cont_count=int(r.cont_count), prob=float(r.prob), suffix_len=int(r.suffix_len)
        )

    def infgram_ntd(self, prompt, max_support: int | None = None, *, timeout: float | None = None) -> InfgramNtdResult:
        req = pb.InfgramNextTokenDistributionRequest()
        fill_query(req.prompt, prompt, "prompt")
        if max_support is not None:
            req.max_support = _int(max_support, "max_support")
        r = self._call("InfgramNextTokenDistribution", req, timeout)
        return decode_dist(r.distribution, suffix_len=r.suffix_len)

    # -- documents -----------------------------------------------------------------------------

    def search_docs(
        self, query, max_docs: int = 10, max_disp_len: int = 1000, *, timeout: float | None = None
    ) -> SearchResult:
        req = pb.SearchDocumentsRequest(max_docs=_int(max_docs, "max_docs"), max_disp_len=_int(max_disp_len, "max_disp_len"))
        fill_query(req.query, query)
        summary = None
        docs: list[Document] = []
        try:
            for msg in self._stream("SearchDocuments", req, timeout):
                if msg.WhichOneof("item") == "summary":
                    summary = msg.summary
                else:
                    docs.append(decode_document(msg.document))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        if summary is None:
            raise RpcFailedError("SearchDocuments stream ended without its summary message")
        return SearchResult(count=int(summary.count), documents=docs, approx=bool(summary.approx))

    def _get_doc(self, req: pb.GetDocumentRequest, max_disp_len: int, timeout) -> Document:
        req.max_disp_len = _int(max_disp_len, "max_disp_len")
        return decode_document(self._call("GetDocument", req, timeout).document)

    def get_doc_by_ix(self, doc_ix: int, max_disp_len: int = 1000, *, timeout: float | None = None) -> Document:
        return self._get_doc(pb.GetDocumentRequest(doc_ix=_int(doc_ix, "doc_ix")), max_disp_len, timeout)

    def get_doc_by_rank(self, shard: int, rank: int, max_disp_len: int = 1000, *, timeout: float | None = None) -> Document:
        loc = pb.ShardRank(shard=_int(shard, "shard"), rank=_int(rank, "rank"))
        return self._get_doc(pb.GetDocumentRequest(rank=loc), max_disp_len, timeout)

    def get_doc_by_ptr(self, shard: int, ptr: int, max_disp_len: int = 1000, *, timeout: float | None = None) -> Document:
        loc = pb.ShardPointer(shard=_int(shard, "shard"), ptr=_int(ptr, "ptr"))
        return self._get_doc(pb.GetDocumentRequest(pointer=loc), max_disp_len, timeout)

    # -- batches -------------------------------------------------------------------------------

    def count_batch(self, queries, *, timeout: float | None = None) -> np.ndarray:
        parts = [
            _arr(self._call("CountBatch", pb.CountBatchRequest(queries=qb), timeout).counts)
            for qb, _, _ in self._batches(queries, "queries")
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def _prob_batch(self, method, req_cls, prompts, cont_ids, infgram, timeout) -> ProbBatchResult:
        cont = as_ids(cont_ids, "cont_ids")
        chunks = list(self._batches(prompts, "prompts"))
        n = chunks[-1][2] if chunks else 0
        if len(chunks) > 1 and len(cont) != n:
            raise InvalidQueryError(f"cont_ids holds {len(cont)} ids for {n} prompts: give one per prompt")
        parts = []
        for qb, start, stop in chunks:
            c = cont if len(chunks) == 1 else cont[start:stop]
            req = req_cls(prompts=qb, cont_ids=np.ascontiguousarray(c, dtype=_I8).tobytes())
            parts.append(decode_prob_batch(self._call(method, req, timeout), infgram))
        if len(parts) == 1:
            return parts[0]
        if not parts:
            empty = np.zeros(0, np.int64)
            return ProbBatchResult(empty, empty.copy(), np.zeros(0), empty.copy() if infgram else None)
        cat = lambda name: None if getattr(parts[0], name) is None else np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return ProbBatchResult(cat("prompt_counts"), cat("cont_counts"), cat("probs"), cat("suffix_lens"))

    def prob_batch(self, prompts, cont_ids, *, timeout: float | None = None) -> ProbBatchResult:
        return self._prob_batch("ProbBatch", pb.ProbBatchRequest, prompts, cont_ids, False, timeout)

    def infgram_prob_batch(self, prompts, cont_ids, *, timeout: float | None = None) -> ProbBatchResult:
        return self._prob_batch("InfgramProbBatch", pb.InfgramProbBatchRequest, prompts, cont_ids, True, timeout)

    def _ntd_batch(self, method, req_cls, prompts, max_support, infgram, timeout) -> list:
        out: list = []
        for qb, _, _ in self._batches(prompts, "prompts"):
            req = req_cls(prompts=qb)
            if max_support is not None:
                req.max_support = _int(max_support, "max_support")
            out.extend(decode_packed_dists(self._call(method, req, timeout).distributions, infgram))
        return out

    def ntd_batch(self, prompts, max_support: int | None = None, *, timeout: float | None = None) -> list[NextTokenDistribution]:
        return self._ntd_batch(
            "NextTokenDistributionBatch", pb.NextTokenDistributionBatchRequest, prompts, max_support, False, timeout
        )

    def infgram_ntd_batch(self, prompts, max_support: int | None = None, *, timeout: float | None = None) -> list[InfgramNtdResult]:
        return self._ntd_batch(
            "InfgramNextTokenDistributionBatch", pb.InfgramNextTokenDistributionBatchRequest, prompts, max_support, True, timeout
        )


    # -- frequent n-grams, longest matches, attribution, AND/OR search (issue 4) ---------------

    def frequent_ngrams(self, n_min: int = 1, n_max: int | None = None, *, min_count: int | None = None,
                        top_k: int | None = None, chunk_rows: int | None = None, timeout: float | None = None):
        """NgramIndex.frequent_ngrams over gRPC: the whole table (engine.storage.ngram_table.NgramTable) in memory.
        The server caps the rows (max_ngram_rows)."""
        from engine.storage.ngram_table import NgramTable

        req = pb.FrequentNgramsRequest(n_min=_int(n_min, "n_min"), n_max=_int(n_min if n_max is None else n_max, "n_max"))
        if min_count is not None:
            req.min_count = _int(min_count, "min_count")
        if top_k is not None:
            req.top_k = _int(top_k, "top_k")
        if chunk_rows is not None:
            req.chunk_rows = _int(chunk_rows, "chunk_rows")
        summary, tokens, offsets, counts, base = None, [], [np.zeros(1, dtype=np.int64)], [], 0
        try:
            for msg in self._stream("FrequentNgrams", req, timeout):
                if msg.WhichOneof("item") == "summary":
                    summary = msg.summary
                    continue
                t, o, c = _arr(msg.rows.token_ids), _arr(msg.rows.offsets), _arr(msg.rows.counts)
                tokens.append(t)
                offsets.append(o[1:] + base)
                counts.append(c)
                base += len(t)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        if summary is None:
            raise RpcFailedError("FrequentNgrams stream ended without its summary message")
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
        return NgramTable(cat(tokens).astype(np.uint32), cat(offsets), cat(counts), json.loads(summary.meta_json))

    def longest_matches(self, text, max_len: int | None = None, infgram: bool = False, *,
                        timeout: float | None = None):
        """NgramIndex.longest_matches over gRPC (engine.match.LongestMatches)."""
        from engine.match import LongestMatches

        req = pb.LongestMatchesRequest(text=encode_query(text, "text"))
        if max_len is not None:
            req.max_len = _int(max_len, "max_len")
        r = self._call("LongestMatches", req, timeout)
        probs = ProbBatchResult(_arr(r.prompt_counts), _arr(r.cont_counts), _arr(r.probs, _F8), _arr(r.suffix_lens))
        return LongestMatches(_arr(r.token_ids), _arr(r.lengths), _arr(r.counts), probs if infgram else None)

    def infgram_probs(self, text, max_len: int | None = None, *, timeout: float | None = None) -> ProbBatchResult:
        """NgramIndex.infgram_probs over gRPC: the ∞-gram probability of every position of ``text``."""
        return self.longest_matches(text, max_len, True, timeout=timeout).infgram

    def attribute(self, text, min_len: int = 8, max_count: int | None = None, *, max_docs: int = 3,
                  max_disp_len: int = 100, creativity_n: int | None = None, timeout: float | None = None):
        """NgramIndex.attribute over gRPC (engine.match.Attribution)."""
        from engine.match import AttributedSpan, Attribution, LongestMatches

        req = pb.AttributeRequest(text=encode_query(text, "text"), min_len=_int(min_len, "min_len"),
                                  max_docs=_int(max_docs, "max_docs"), max_disp_len=_int(max_disp_len, "max_disp_len"))
        if max_count is not None:
            req.max_count = _int(max_count, "max_count")
        if creativity_n is not None:
            req.creativity_n = _int(creativity_n, "creativity_n")
        r = self._call("Attribute", req, timeout)
        spans = [AttributedSpan(int(sp.start), int(sp.end), int(sp.count), np.asarray(sp.token_ids, dtype=np.int64),
                                [decode_document(d) for d in sp.documents]) for sp in r.spans]
        tokens = _arr(r.token_ids)
        return Attribution(len(tokens), spans, float(r.creativity), int(r.creativity_n), int(min_len),
                           None if max_count is None else int(max_count),
                           LongestMatches(tokens, _arr(r.lengths), _arr(r.counts)))

    def count_cnf(self, cnf, max_clause_freq: int | None = None, *, timeout: float | None = None):
        """NgramIndex.count_cnf over gRPC (engine.cnf.CnfResult; doc_ixs is left empty: only the
        count travels)."""
        from engine.cnf import CnfResult

        req = pb.CountCnfRequest(clauses=_encode_cnf(cnf))
        if max_clause_freq is not None:
            req.max_clause_freq = _int(max_clause_freq, "max_clause_freq")
        r = self._call("CountCnf", req, timeout)
        return CnfResult(int(r.count), bool(r.approx), tuple(int(c) for c in r.clause_counts),
                         tuple(int(c) for c in r.scanned_clauses), np.zeros(0, dtype=np.int64))

    def search_docs_cnf(self, cnf, max_docs: int = 10, max_clause_freq: int | None = None,
                        max_disp_len: int = 1000, *, timeout: float | None = None):
        """NgramIndex.search_docs_cnf over gRPC (engine.cnf.CnfResult)."""
        from engine.cnf import CnfResult

        req = pb.SearchDocumentsCnfRequest(clauses=_encode_cnf(cnf), max_docs=_int(max_docs, "max_docs"),
                                           max_disp_len=_int(max_disp_len, "max_disp_len"))
        if max_clause_freq is not None:
            req.max_clause_freq = _int(max_clause_freq, "max_clause_freq")
        summary, docs = None, []
        try:
            for msg in self._stream("SearchDocumentsCnf", req, timeout):
                if msg.WhichOneof("item") == "summary":
                    summary = msg.summary
                else:
                    docs.append(decode_document(msg.document))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        if summary is None:
            raise RpcFailedError("SearchDocumentsCnf stream ended without its summary message")
        return CnfResult(int(summary.count), bool(summary.approx), tuple(int(c) for c in summary.clause_counts),
                         tuple(int(c) for c in summary.scanned_clauses),
                         np.array([d.doc_ix for d in docs], dtype=np.int64), docs)


def _encode_cnf(cnf) -> list:
    """A CNF query (list of clauses, each a list of n-grams as ids or text; a str stands for a
    one-term clause or a one-clause query) as CnfClause messages."""
    if isinstance(cnf, str):
        cnf = [[cnf]]
    if not isinstance(cnf, (list, tuple)) or not cnf:
        raise InvalidQueryError("cnf must be a non-empty list of clauses, each a list of n-grams (ids or text)")
    clauses = []
    for i, clause in enumerate(cnf):
        if isinstance(clause, str):
            clause = [clause]
        if not isinstance(clause, (list, tuple)) or not clause:
            raise InvalidQueryError(f"clause {i} must be a non-empty list of n-grams (each a list of ids or text)")
        if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in clause):
            raise InvalidQueryError(f"clause {i} is a flat list of ids; wrap it: a clause is a list of n-grams")
        clauses.append(pb.CnfClause(terms=[encode_query(t, f"cnf[{i}][{k}]") for k, t in enumerate(clause)]))
    return clauses


def _int(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidQueryError(f"{what} must be an int, got {type(value).__name__}")
    v = int(value)
    if not -(1 << 63) <= v < (1 << 63):
        raise InvalidQueryError(f"{what}={v} does not fit in int64")
    return v
