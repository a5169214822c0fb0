"""The gRPC server: NgramServicer + health + reflection + limits + TLS + bearer-token auth.

    server, port = create_server(index, "127.0.0.1:0")   # started; SERVING once warmed up
    ...
    server.shutdown(grace=10)                            # NOT_SERVING, in-flight calls finish

With ``http_address`` the same servicer also answers HTTP/JSON (engine/serve/http), on its own port
with the same token, TLS, limits and access log; ``server.http_port`` is the bound port.

``serve()`` runs a server until SIGTERM/SIGINT and then shuts it down gracefully (exit status 0);
``ngram serve`` (engine/cli/serve.py) is its command line.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engine.serve.admission import Admission, default_heavy_slots
from engine.serve.servicer import SERVICE_NAME, NgramServicer, ServerLimits, add_to_server

__all__ = ["create_server", "NgramServer", "serve", "default_max_workers", "BearerTokenInterceptor"]

log = logging.getLogger("engine.serve.server")
access_log = logging.getLogger("engine.access")

_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def default_max_workers() -> int:
    """Worker threads: the kernels release the GIL, so a few per core keep the cores busy while
    other threads parse and serialize messages."""
    return max(4, min(64, 4 * (os.cpu_count() or 1)))


# ------------------------------------------------------------------------------------------------
# Auth


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every call except the health service.

    The comparison is constant time (hmac.compare_digest over SHA-256 digests, so that neither
    content nor length leaks). A call without the right token gets UNAUTHENTICATED.
    """

    def __init__(self, token: str):
        if not token:
            raise ValueError("the auth token is empty")
        self._expected = hashlib.sha256(f"Bearer {token}".encode()).digest()

    def _ok(self, metadata) -> bool:
        given = b""
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                break
        return hmac.compare_digest(hashlib.sha256(given).digest(), self._expected)

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(_HEALTH_PREFIX) or self._ok(handler_call_details.invocation_metadata):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        msg = "missing or invalid bearer token: send the metadata 'authorization: Bearer <token>'"

        def deny(request, context):
            t0 = time.perf_counter()
            access_log.info("%s UNAUTHENTICATED %.3fms peer=%s", method.rsplit("/", 1)[-1],
                            (time.perf_counter() - t0) * 1e3, context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, msg)

        if handler.response_streaming:
            def deny_stream(request, context):
                deny(request, context)
                yield  # pragma: no cover

            return grpc.unary_stream_rpc_method_handler(deny_stream)
        return grpc.unary_unary_rpc_method_handler(deny)


# ------------------------------------------------------------------------------------------------
# Server


class NgramServer:
    """A started grpc.Server with its health service, servicer and backend.

    Attribute access falls through to the grpc.Server (``stop``, ``wait_for_termination``, ...).
    """

    def __init__(self, grpc_server: grpc.Server, health_servicer, servicer: NgramServicer, port: int, address: str):
        self.grpc_server = grpc_server
        self.health = health_servicer
        self.servicer = servicer
        self.backend = servicer.backend
        self.port = port
        self.address = address
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self._serving = False
        self.http = None  # engine.serve.http.HttpServer, when create_server got an http_address
        self.http_port: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grpc_server, name)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self._serving = serving
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def _watch_backend(self, interval: float) -> None:
        """Mirror a backend's own health (the router's shard servers) into this server's health."""
        while not self._stop_watch.wait(interval):
            try:
                ok = bool(self.backend.health_status())
            except Exception:  # pragma: no cover - a broken check means not serving
                log.exception("backend health check failed")
                ok = False
            if ok != self._serving:
                log.warning("backend is %s", "serving again" if ok else "NOT serving (a shard is down)")
                self.set_serving(ok)

    def start_health_watch(self, interval: float) -> None:
        if self.backend.forwards_requests and self._watcher is None:  # a router: its shards' health
            self._watcher = threading.Thread(target=self._watch_backend, args=(interval,), name="ngram-health", daemon=True)
            self._watcher.start()

    def shutdown(self, grace: float | None = 10.0) -> None:
        """Health goes NOT_SERVING, new calls are refused, in-flight calls get ``grace`` seconds;
        then gRPC cancels what is left and the admission's shutdown flag stops long work at its next
        check (a few milliseconds), whether or not its client is still there."""
        self._stop_watch.set()
        self.health.enter_graceful_shutdown()
        admission = getattr(self.servicer, "admission", None)
        if admission is not None and grace is not None:
            # gRPC cancels the calls at the end of the grace period; the flag goes up at the same time
            # (work that is between two checks sees it at its next one).
            timer = threading.Timer(max(0.0, grace), admission.shutdown.set)
            timer.daemon = True
            timer.start()
        elif admission is not None:
            admission.shutdown.set()
        http_stop = self._stop_http(grace)  # both transports drain at once, within the same grace
        self.grpc_server.stop(grace).wait()
        if http_stop is not None:
            http_stop.join()
        if admission is not None:
            admission.shutdown.set()
        close = getattr(self.backend, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # pragma: no cover
                log.exception("closing the backend failed")

    def stop(self, grace: float | None = None):
        self._stop_watch.set()
        self._stop_http(grace)
        return self.grpc_server.stop(grace)

    def _stop_http(self, grace: float | None) -> threading.Thread | None:
        """Stop the HTTP server (if any) on a thread: requests in flight get ``grace`` seconds."""
        http, self.http = self.http, None
        if http is None:
            return None

        t = threading.Thread(target=http.stop, args=(grace or 0,), name="ngram-http-stop", daemon=True)
        t.start()
        return t


def _read(value) -> bytes:
    if isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def create_server(
    backend,
    address: str = "127.0.0.1:0",
    *,
    limits: ServerLimits | None = None,
    max_workers: int | None = None,
    max_concurrent_rpcs: int | None = None,
    tls_cert: bytes | str | os.PathLike | None = None,
    tls_key: bytes | str | os.PathLike | None = None,
    auth_token: str | None = None,
    warmup: bool = True,
    health_interval: float = 1.0,
    options: Sequence[tuple[str, Any]] = (),
    max_memory: int | None = None,
    heavy_workers: int | None = None,
    http_address: str | None = None,
) -> tuple[NgramServer, int]:
    """Build, bind and start a server for ``backend``; return (server, bound port).

    ``address`` "host:port" (port 0 picks a free one). Health reports NOT_SERVING until
    ``backend.warmup()`` (kernel compilation) has returned, then SERVING. With ``tls_cert`` and
    ``tls_key`` (PEM bytes or paths) the port serves TLS; with ``auth_token`` every call but the
    health checks needs ``authorization: Bearer <token>``.

    Admission (engine.serve.admission): ``heavy_workers`` expensive calls run at once (default: half the
    cores), and a few more may wait, never more than leaves two worker threads for cheap calls;
    ``max_memory`` (bytes of private memory) is a budget the server stays under, refusing calls
    that would exceed it with RESOURCE_EXHAUSTED.

    ``http_address`` "host:port": also serve the HTTP/JSON API and the web explorer there, from
    the same servicer (engine/serve/http), with the same TLS, token and limits.
    """
    limits = limits or ServerLimits()
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both tls_cert and tls_key")
    interceptors = [BearerTokenInterceptor(auth_token)] if auth_token else []
    opts = [
        ("grpc.max_receive_message_length", int(limits.max_message_bytes)),
        ("grpc.max_send_message_length", int(limits.max_message_bytes)),
        ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
        *options,
    ]
    workers = max_workers or default_max_workers()
    heavy = max(1, min(heavy_workers or default_heavy_slots(), workers - 1)) if workers > 1 else 1
    # Expensive calls, running or waiting for a slot, hold worker threads: keep two for cheap calls.
    admission = Admission(max_memory=max_memory, heavy_slots=heavy, max_waiting=max(0, workers - 2 - heavy))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ngram-rpc"),
        interceptors=interceptors,
        options=opts,
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    servicer = NgramServicer(backend, limits)
    servicer.admission = admission
    add_to_server(servicer, server)

    health_servicer = health.HealthServicer(
        experimental_non_blocking=True,
        experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ngram-health"),
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)

    try:
        if tls_cert is not None:
            creds = grpc.ssl_server_credentials([(_read(tls_key), _read(tls_cert))])
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    if not port:
        raise OSError(f"cannot listen on {address} (address in use or not available?)")

    ngram_server = NgramServer(server, health_servicer, servicer, port, address)
    ngram_server.set_serving(False)
    if http_address is not None:
        try:
            _attach_http(ngram_server, http_address, auth_token, tls_cert, tls_key, workers)
        except BaseException:
            server.stop(0)
            raise
    server.start()
    if warmup:
        t0 = time.perf_counter()
        if not backend.forwards_requests:  # an index (a router has nothing to compile)
            from engine.kernels.cache import COMPILE_SECONDS, compile_notice
            from engine.kernels.suffix import query_kernels

            log.info("warming up: %s", compile_notice(query_kernels(), "the query kernels",
                                                      COMPILE_SECONDS["warmup"]) or "loading the compiled kernels")
        try:
            from engine.warmup import compile_in_workers

            compile_in_workers(backend)  # an empty numba cache: compile on every core at once
            backend.warmup()
            if not backend.forwards_requests:  # longest matches, attribution and CNF too
                backend.warmup_ngrams()
        except BaseException:
            ngram_server.stop(0)  # a server that cannot warm up must not linger (and keep the process alive)
            raise
        log.info("warmed up in %.2fs", time.perf_counter() - t0)
    try:
        admission.set_baseline()  # what the server uses at rest, warmed up: the rest is the calls' budget
    except ValueError as exc:
        ngram_server.stop(0)
        raise OSError(str(exc)) from None
    ngram_server.set_serving(True)
    ngram_server.start_health_watch(health_interval)
    return ngram_server, port


def _attach_http(server: NgramServer, address: str, auth_token, tls_cert, tls_key, workers: int) -> None:
    """Bind and start the HTTP server of ``server``'s servicer (its /healthz follows the gRPC health)."""
    from engine.serve.http import HttpServer, HttpApi

    host, _, port = address.rpartition(":")
    api = HttpApi(server.servicer, health=server.health, auth_token=auth_token, max_workers=workers)
    http = HttpServer(api, host or "127.0.0.1", int(port), tls_cert=tls_cert, tls_key=tls_key)
    http.start()
    server.http, server.http_port = http, http.port


def _flush_and_exit(status: int) -> None:
    for h in logging.getLogger().handlers:
        try:
            h.flush()
        except Exception:  # pragma: no cover
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # pragma: no cover
            pass
    os._exit(status)


def _exit_after(seconds: float) -> None:
    """A daemon timer that ends the process (status 0) after ``seconds``, unless it ended before.
    The worker threads of gRPC's pool are not daemons: without this, interpreter exit would wait
    for a call that no check has stopped yet."""

    def fire():
        log.warning("exiting although calls are still running %.1fs after the signal", seconds)
        _flush_and_exit(0)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


def serve(
    backend,
    host: str = "127.0.0.1",
    port: int = 50051,
    *,
    grace: float = 10.0,
    ready_message: bool = True,
    force_exit: bool = False,
    http_port: int | None = None,
    **server_kwargs,
) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; return the exit status (0).

    With ``force_exit`` (``ngram serve``: the process is the server) the process ends at most
    ``grace`` + 0.9 s after the signal even if a call is stuck inside one uninterruptible step:
    long work stops at its next check once the grace period is over, and this is the backstop."""
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        bound_host = address.rsplit(":", 1)[0]
        if http_port is not None:
            server_kwargs["http_address"] = f"{bound_host}:{http_port}"
        server, bound = create_server(backend, address, **server_kwargs)
        scheme = "TLS" if server_kwargs.get("tls_cert") else "plaintext"
        log.info("serving ngram.v1.NgramService on %s:%d (%s)", bound_host, bound, scheme)
        if server.http is not None:
            log.info("serving HTTP/JSON and the explorer on %s", server.http.url)
            if ready_message:  # before "listening on": once that line is out, both ports answer
                print(f"http on {server.http.url}", flush=True)
        if ready_message:
            print(f"listening on {bound_host}:{bound}", flush=True)
        while not stop.wait(0.5):
            pass
        name = signal.Signals(received[0]).name if received else "signal"
        log.info("%s received: NOT_SERVING, finishing in-flight calls (grace %.1fs)", name, grace)
        if force_exit:
            _exit_after(grace + 0.9)
        server.shutdown(grace)
        log.info("stopped")
        if force_exit:
            # Skip the interpreter's teardown (0.3-0.4 s of unloading compiled kernels, more under load):
            # everything worth keeping is written and the backend is closed.
            _flush_and_exit(0)
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
