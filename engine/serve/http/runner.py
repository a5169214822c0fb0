"""Uvicorn on a thread of the gRPC server's process.

The gRPC server runs on its own threads and the process's main thread waits for a signal
(engine/serve/server.py ``serve``); uvicorn gets a thread with its own event loop, so neither
transport's loop or pool holds up the other, and stopping one is ``should_exit`` plus a join.
The socket is bound here, before uvicorn starts, so that port 0 works and a taken port fails at once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

__all__ = ["HttpServer"]

log = logging.getLogger("engine.serve.http")


def _pem(value) -> bytes:
    return value if isinstance(value, bytes) else Path(value).read_bytes()


def _ssl_factory(cert, key):
    """An ssl_context_factory for PEM bytes or paths (the same arguments as create_server's)."""
    cert_pem, key_pem = _pem(cert), _pem(key)

    def factory(config, default):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # load_cert_chain reads files only: the PEM goes through a private temporary directory.
        with tempfile.TemporaryDirectory(prefix="ngram-tls-") as d:
            cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
            for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as fh:
                    fh.write(data)
            ctx.load_cert_chain(cert_path, key_path)
        return ctx

    return factory


def _http_impl() -> str:
    """uvicorn's faster HTTP parser when it is installed (a core dependency), else its pure-Python one."""
    return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"


class HttpServer:
    """An ASGI app (or an HttpApi, whose worker threads stop with it) served by uvicorn on a
    background thread.

        http = HttpServer(app, "127.0.0.1", 0); port = http.start(); ...; http.stop(grace=10)
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, tls_cert=None, tls_key=None,
                 grace: float = 10.0):
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key")
        self.api = app if hasattr(app, "executor") else None
        if self.api is not None:
            app = self.api.app
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.socket = socket.create_server((host.strip("[]"), port), family=family)
        except OSError as exc:
            raise OSError(f"cannot listen on {host}:{port} for HTTP: {exc.strerror or exc}") from exc
        # Accepted connections inherit this: uvicorn writes a response's head and body separately,
        # and with Nagle's algorithm the body would wait for the client's delayed ACK (40 ms).
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self.socket.getsockname()[1]
        self.tls = tls_cert is not None
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", loop="asyncio", http=_http_impl(),
            timeout_graceful_shutdown=max(1, int(round(grace))),
            ssl_context_factory=_ssl_factory(tls_cert, tls_key) if self.tls else None,
        )
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> int:
        """Start serving; return the bound port once uvicorn accepts connections."""
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                       name="ngram-http", daemon=True)
        self.thread.start()
        t_end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise OSError(f"the HTTP server on {self.url} did not start (see the log)")
            if time.monotonic() > t_end:
                raise OSError(f"the HTTP server on {self.url} did not start within {timeout:.0f}s")
            time.sleep(0.005)
        return self.port

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let requests in flight finish (uvicorn's graceful timeout), then return."""
        if grace is not None:
            self.server.config.timeout_graceful_shutdown = max(0, int(round(grace)))
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join((grace or 0) + 5)
            if self.thread.is_alive():  # pragma: no cover
                log.warning("the HTTP server thread did not stop in time")
        self.socket.close()
        if self.api is not None:
            self.api.close()
