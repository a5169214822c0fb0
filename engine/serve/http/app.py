"""The HTTP/JSON API: an ASGI app (Starlette) over the gRPC servicer, in-process.

Each RPC of ``ngram.v1.NgramService`` (read from the service descriptor) is ``POST
/v1/<snake_case_name>``: the JSON body becomes the RPC's request message (engine/serve/http/codec.py),
the servicer's own handler runs on a worker thread with a small stand-in for ``grpc.ServicerContext``
(deadline, peer, abort), and the response message goes back as JSON; a server stream is a JSON array
of its messages, or NDJSON with ``Accept: application/x-ndjson``. Limits, admission, deadlines, the
access log and error codes are therefore the servicer's, the same as over gRPC. A gRPC status becomes
an HTTP status (``context.HTTP_STATUS``) with the body ``{"error": {"code": "INVALID_ARGUMENT", "message": ...}}``.

Also: ``GET /openapi.json`` (from the descriptors), ``GET /healthz`` (the gRPC health service's
overall status: 200 when SERVING, else 503), ``GET /`` the web explorer (static files in
``static/``), and ``POST /`` infini-gram's API (engine/serve/http/infinigram.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, Callable

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine.serve import rpcs
from engine.serve.http.codec import JsonRequestError, openapi_schema, parse_request, snake_case, to_json
from engine.serve.http.context import CallContext, RpcError
from engine.serve.http.infinigram import InfinigramApi

__all__ = ["HttpApi", "create_app", "rpc_routes"]

access_log = logging.getLogger("engine.access")
log = logging.getLogger("engine.serve.http")

C = grpc.StatusCode
DEFAULT_MAX_BODY_BYTES = 64 << 20
NDJSON = "application/x-ndjson"


def rpc_routes() -> dict[str, Any]:
    """``/v1/<snake_case>`` -> MethodDescriptor, for every RPC of the RPC table (engine.serve.rpcs)."""
    return {f"/v1/{snake_case(name)}": rpcs.SERVICE.methods_by_name[name] for name in rpcs.RPC_NAMES}


def _log(method: str, code: str, t0: float, peer: str, detail: str = "") -> None:
    """An access-log line for a request refused before it reached the servicer (which logs the rest)."""
    if access_log.isEnabledFor(logging.INFO):
        access_log.info("%s %s %.3fms peer=%s msg=%r", method, code, (time.perf_counter() - t0) * 1e3, peer,
                        detail[:200])


class HttpApi:
    """The routes over one servicer. ``app`` is the ASGI application.

    ``health``: the server's grpc_health HealthServicer (``/healthz`` asks it; without one,
    /healthz answers 200). ``auth_token``: every route but /healthz and the explorer's static
    files needs ``Authorization: Bearer <token>``. ``max_body_bytes``: larger bodies get 413.
    """

    def __init__(self, servicer, *, health=None, auth_token: str | None = None,
                 max_body_bytes: int | None = None, max_workers: int = 16):
        self.servicer = servicer
        self.health = health
        self._token = hashlib.sha256(f"Bearer {auth_token}".encode()).digest() if auth_token else None
        limits = getattr(servicer, "limits", None)
        self.max_body_bytes = int(max_body_bytes or getattr(limits, "max_message_bytes", DEFAULT_MAX_BODY_BYTES))
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ngram-http")
        self.routes = rpc_routes()
        self._openapi: dict | None = None
        self.infinigram = InfinigramApi(self)
        routes = [Route(path, self._endpoint(m), methods=["POST"]) for path, m in self.routes.items()]
        static = resources.files("engine.serve.http") / "static"
        self._index_html = str(static / "index.html")
        routes += [
            Route("/", self._root, methods=["GET", "POST"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/openapi.json", self._openapi_json, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes, exception_handlers={HTTPException: self._http_exception})
        self.app.mount("/static", StaticFiles(directory=str(static)), name="static")

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- plumbing -------------------------------------------------------------------------------

    @staticmethod
    async def _http_exception(request: Request, exc: HTTPException) -> Response:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "INVALID_ARGUMENT")
        message = exc.detail
        if exc.status_code == 404:
            message = f"no route {request.url.path}; the routes are listed at /openapi.json"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @staticmethod
    def peer(request: Request) -> str:
        c = request.client
        return f"http:{c.host}:{c.port}" if c else "http:?"

    def authorize(self, request: Request) -> None:
        if self._token is None:
            return
        given = request.headers.get("authorization", "").encode()
        # Digests, so that the comparison leaks neither the token's content nor its length.
        if not hmac.compare_digest(hashlib.sha256(given).digest(), self._token):
            raise RpcError(C.UNAUTHENTICATED,
                           "missing or invalid bearer token: send the header 'Authorization: Bearer <token>'")

    @staticmethod
    def deadline(request: Request) -> float | None:
        """Deadline from ``?timeout=`` or the ``X-Request-Timeout`` header (seconds)."""
        raw = request.query_params.get("timeout") or request.headers.get("x-request-timeout")
        if raw is None:
            return None
        try:
            seconds = float(raw)
        except ValueError:
            seconds = float("nan")
        if not seconds > 0 or seconds == float("inf"):
            raise RpcError(C.INVALID_ARGUMENT, f"timeout must be a positive number of seconds, got {raw!r}")
        return time.monotonic() + seconds

    async def json_body(self, request: Request) -> Any:
        """The decoded body ({} when empty); 413 over max_body_bytes, 400 when not JSON."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _too_large(int(declared), self.max_body_bytes)
        chunks, size = [], 0
        async for chunk in request.stream():  # counted as it arrives: a missing or false length is no way round
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(size, self.max_body_bytes)
            chunks.append(chunk)
        body = b"".join(chunks)
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RpcError(C.INVALID_ARGUMENT, f"the body is not valid JSON: {exc}") from None
        except RecursionError:  # [[[[...: no message of the service nests that deep
            raise RpcError(C.INVALID_ARGUMENT, "the body's JSON nests too deep") from None

    def run(self, fn: Callable, *args):
        """``fn(*args)`` on a worker thread (the engine's calls block; the event loop must not)."""
        return asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def call(self, request: Request, ctx: CallContext, fn: Callable, *args):
        """``run(fn, *args)`` for one request: should its client disconnect meanwhile, ``ctx`` turns
        inactive, and the servicer's stop checks end long work as for a cancelled gRPC call."""
        watch = asyncio.ensure_future(_watch_disconnect(request, ctx))
        try:
            return await self.run(fn, *args)
        finally:
            watch.cancel()

    def handler(self, m):
        """The servicer's bound handler of RPC ``m``, or None."""
        return getattr(self.servicer, m.name, None)

    # -- routes ---------------------------------------------------------------------------------

    def _endpoint(self, m):
        req_cls = getattr(pb, m.input_type.name)

        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            peer = self.peer(request)
            try:
                self.authorize(request)
                deadline = self.deadline(request)
                try:
                    msg = parse_request(req_cls, await self.json_body(request))
                except JsonRequestError as exc:
                    raise RpcError(C.INVALID_ARGUMENT, f"not a valid {m.input_type.name}: {exc}") from None
                fn = self.handler(m)
                if fn is None:
                    raise RpcError(C.UNIMPLEMENTED, f"{m.name} is not served by this server")
            except RpcError as exc:
                _log(m.name, exc.code.name, t0, peer, exc.message)
                return exc.response()
            ctx = CallContext(deadline, peer)
            if not m.server_streaming:
                try:
                    return JSONResponse(await self.call(request, ctx, _unary_json, fn, msg, ctx))
                except RpcError as exc:
                    return exc.response()
            if NDJSON in request.headers.get("accept", ""):
                return StreamingResponse(self._ndjson(fn(msg, ctx), ctx), media_type=NDJSON)
            try:
                return JSONResponse(await self.call(request, ctx, _stream_json, fn, msg, ctx))
            except RpcError as exc:
                return exc.response()

        endpoint.__name__ = m.name
        return endpoint

    async def _ndjson(self, stream, ctx: CallContext):
        """One line per message; a failure after the first line (the status is sent by then) is a
        last line ``{"error": ...}``."""
        end = object()
        try:
            while True:
                item = await self.run(next, stream, end)
                if item is end:
                    return
                yield json.dumps(to_json(item), ensure_ascii=False).encode() + b"\n"
        except RpcError as exc:
            yield json.dumps({"error": {"code": exc.code.name, "message": exc.message}}).encode() + b"\n"
        finally:
            ctx.cancelled = True  # the client left early: the servicer's stop checks see it
            await self.run(stream.close)

    async def _healthz(self, request: Request) -> Response:
        serving = self.health_status()
        return JSONResponse({"status": "SERVING" if serving else "NOT_SERVING"}, status_code=200 if serving else 503)

    def health_status(self) -> bool:
        if self.health is None:
            return True
        from grpc_health.v1 import health_pb2

        ctx = CallContext(None, "http:healthz")
        reply = self.health.Check(health_pb2.HealthCheckRequest(service=""), ctx)
        return ctx.code is None and reply.status == health_pb2.HealthCheckResponse.SERVING

    async def _openapi_json(self, request: Request) -> Response:
        if self._openapi is None:
            doc = openapi_schema(rpcs.SERVICE, self.routes, "ngram-engine HTTP API", _version())
            doc["paths"]["/"] = self.infinigram.openapi_path()
            doc["paths"]["/healthz"] = {"get": {"summary": "200 when the gRPC health status is SERVING, else 503",
                                                "responses": {"200": {"description": "SERVING"},
                                                              "503": {"description": "not serving"}}}}
            self._openapi = doc
        return JSONResponse(self._openapi)

    async def _root(self, request: Request) -> Response:
        if request.method == "GET":
            return FileResponse(self._index_html, media_type="text/html")
        return await self.infinigram.endpoint(request)


def _too_large(size: int, cap: int) -> RpcError:
    return RpcError(C.RESOURCE_EXHAUSTED, f"the body is {size:,} bytes or more, over the limit of {cap:,} bytes; "
                                          "split the request", http_status=413)


async def _watch_disconnect(request: Request, ctx: CallContext) -> None:
    # The body has been read: the next message is the disconnect (uvicorn also sends one once the
    # response is out, by when the watch has been cancelled).
    while (await request.receive())["type"] != "http.disconnect":
        pass
    ctx.cancelled = True


def _unary_json(fn, msg, ctx) -> dict:
    return to_json(fn(msg, ctx))


def _stream_json(fn, msg, ctx) -> list:
    return [to_json(item) for item in fn(msg, ctx)]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("ngram-engine")
    except Exception:  # pragma: no cover - running from a source tree that is not installed
        return "0"


def create_app(servicer, **kwargs) -> Starlette:
    """The ASGI app serving ``servicer`` (see HttpApi for the keyword arguments)."""
    api = HttpApi(servicer, **kwargs)
    api.app.state.api = api
    return api.app
