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

import inspect
import json
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import grpc
import numpy as np

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine._proto.ngram.v1 import ngram_pb2_grpc as pb_grpc
from engine.errors import ClientClosedError, DeadlineExceededError, InvalidQueryError, NgramError
from engine.results import PackedQueries
from engine.serve.codec import as_ids, concat_results, pack_queries, slice_packed, tokenize_mixed
from engine.serve.rpcs import QUERIES, SERVICE_NAME, Query
from engine.serve.status import error_from_rpc

__all__ = ["NgramClient", "RemoteTokenizer", "retry_service_config"]


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

    def _options(self, timeout: float | None) -> dict:
        return {"timeout": self.timeout if timeout is None else timeout, "metadata": self._metadata,
                "wait_for_ready": self._wait_for_ready}

    def call_raw(self, method: str, request, timeout: float | None = None):
        """A unary call that raises grpc.RpcError (for callers that map errors themselves: the router)."""
        self._check_open()
        return self._unary[method](request, **self._options(timeout))

    def future_raw(self, method: str, request, timeout: float | None = None):
        """Start a unary call; ``.result()`` returns the response or raises grpc.RpcError."""
        self._check_open()
        return self._unary[method].future(request, **self._options(timeout))

    def stream_raw(self, method: str, request, timeout: float | None = None):
        """Start a server-streaming call: an iterator of messages that raises grpc.RpcError."""
        self._check_open()
        return getattr(self._stub, method)(request, **self._options(timeout))

    def _read_stream(self, method: str, request, timeout: float | None) -> list:
        try:
            return list(self.stream_raw(method, request, timeout))
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def index_info(self) -> pb.GetIndexInfoResponse:
        if self._info is None:
            with self._info_lock:
                if self._info is None:
                    self._info = self._call("GetIndexInfo", pb.GetIndexInfoRequest())
        return self._info

    def _batch_size(self) -> int:
        return int(self.index_info().limits.max_batch_size) or 1 << 62

    def _batched(self, q: Query, call: inspect.BoundArguments, timeout: float | None):
        """A batch query (``call``: its arguments bound to the request builder's signature) in requests
        of at most the server's max_batch_size queries (asked for only when the batch is large), the
        answers concatenated."""
        queries = tokenize_mixed(call.arguments[q.batch], self.tokenize)
        call.arguments[q.batch] = queries
        n = len(queries) if not isinstance(queries, (str, bytes)) else 0
        size = self._batch_size() if n > 1024 else n
        if n <= size:
            req = q.build(*call.args, **call.kwargs)
            return q.decode(self._call(q.rpc, req, timeout), req)
        cont = call.arguments.get("cont_ids")
        if cont is not None:
            cont = as_ids(cont, "cont_ids")
            if len(cont) != n:
                raise InvalidQueryError(f"cont_ids holds {len(cont)} ids for {n} prompts: give one per prompt")
        if not isinstance(queries, (list, tuple, np.ndarray)):
            queries = pack_queries(queries, q.batch)
        parts = []
        for start in range(0, n, size):
            stop = min(n, start + size)
            call.arguments[q.batch] = (slice_packed(queries, start, stop) if isinstance(queries, PackedQueries)
                                       else queries[start:stop])
            if cont is not None:
                call.arguments["cont_ids"] = cont[start:stop]
            req = q.build(*call.args, **call.kwargs)
            parts.append(q.decode(self._call(q.rpc, req, timeout), req))
        return concat_results(parts)

    # -- index properties (fetched once with GetIndexInfo) -------------------------------------

    vocab_size = property(lambda self: int(self.index_info().vocab_size))
    token_width = property(lambda self: int(self.index_info().token_width))
    num_tokens = property(lambda self: int(self.index_info().num_tokens))
    num_docs = property(lambda self: int(self.index_info().num_docs))
    num_shards = property(lambda self: int(self.index_info().num_shards))

    @property
    def eos_token_id(self) -> int | None:
        info = self.index_info()
        return int(info.eos_token_id) if info.HasField("eos_token_id") else None

    @property
    def tokenizer_fingerprint(self) -> str | None:
        return self.index_info().tokenizer_fingerprint or None

    @property
    def tokenizer(self) -> RemoteTokenizer | None:
        info = self.index_info()
        if not info.has_tokenizer:
            return None
        return RemoteTokenizer(self, info.tokenizer_kind, info.tokenizer_fingerprint, int(info.vocab_size))

    @property
    def manifest(self) -> dict:
        return json.loads(self.index_info().manifest_json or "{}")

    @property
    def limits(self) -> dict:
        """The server's limits (ServerLimits fields)."""
        lim = self.index_info().limits
        return {f.name: int(getattr(lim, f.name)) for f in lim.DESCRIPTOR.fields}

    def info(self) -> dict:
        return json.loads(self.index_info().info_json or "{}")

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


def _client_method(q: Query):
    """NgramClient's method for one entry of the RPC table: build the request, call, decode."""
    build, decode, pick, rpc = q.build, q.decode, q.pick, q.rpc
    sig = inspect.signature(build)
    if q.batch is not None:
        def method(self, *args, timeout: float | None = None, **kwargs):
            return self._batched(q, sig.bind(*args, **kwargs), timeout)
    elif q.stream:
        def method(self, *args, timeout: float | None = None, **kwargs):
            req = build(*args, **kwargs)
            return pick(decode(self._read_stream(rpc, req, timeout), req))
    else:
        def method(self, *args, timeout: float | None = None, **kwargs):
            req = build(*args, **kwargs)
            return pick(decode(self._call(rpc, req, timeout), req))
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *sig.parameters.values(),
              inspect.Parameter("timeout", inspect.Parameter.KEYWORD_ONLY, default=None)]
    method.__signature__ = sig.replace(parameters=params)
    method.__name__ = q.method
    method.__qualname__ = f"NgramClient.{q.method}"
    method.__doc__ = f"NgramIndex.{q.method} over gRPC (the {rpc} RPC); ``timeout`` in seconds."
    return method


for _q in QUERIES:
    setattr(NgramClient, _q.method, _client_method(_q))
del _q
