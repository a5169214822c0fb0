"""Comparisons and probes for the gRPC tests: result equality, status codes, health, a wrapper."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import ssl
import time
import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.results import ProbBatchResult


def assert_same(got, want):
    """Equality of engine results, including dataclasses that hold numpy arrays."""
    if isinstance(want, ProbBatchResult):
        assert isinstance(got, ProbBatchResult)
        for name in ("prompt_counts", "cont_counts", "probs", "suffix_lens"):
            a, b = getattr(got, name), getattr(want, name)
            if b is None:
                assert a is None, name
            else:
                assert np.array_equal(a, b), name
        return
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and np.array_equal(got, want) and got.dtype == np.int64
        return
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_same(g, w)
        return
    assert type(got) is type(want), (type(got), type(want))
    if dataclasses.is_dataclass(want) and type(want).__module__ in ("engine.match", "engine.cnf"):
        for f in dataclasses.fields(want):  # results that hold arrays: field by field
            assert_same(getattr(got, f.name), getattr(want, f.name))
        return
    assert got == want


def rpc_code(fn) -> grpc.StatusCode:
    """The status code of a raw stub call that must fail."""
    with pytest.raises(grpc.RpcError) as info:
        r = fn()
        if hasattr(r, "__iter__") and not isinstance(r, (bytes, str)):
            list(r)
    return info.value.code()


def health_status(channel, service="ngram.v1.NgramService") -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    r = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)


class Wrapped:
    """Delegates to an NgramIndex; tests override single methods (slow, failing, blocking)."""

    def __init__(self, index):
        self._index = index

    def __getattr__(self, name):
        return getattr(self._index, name)


def self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate and key for localhost / 127.0.0.1 (openssl), for the TLS tests of both transports."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class Http:
    """A keep-alive HTTP client of one server: ``post(path, body)`` -> (status, decoded JSON)."""

    def __init__(self, port: int, *, tls: ssl.SSLContext | None = None, headers: dict | None = None):
        self.conn = (http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=30) if tls
                     else http.client.HTTPConnection("127.0.0.1", port, timeout=30))
        self.headers = headers or {}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
        r = self.conn.getresponse()
        data = r.read()
        ctype = r.getheader("content-type", "")
        if "ndjson" in ctype:
            return r.status, [json.loads(line) for line in data.splitlines()]
        return r.status, (json.loads(data) if "json" in ctype else data)

    def post(self, path: str, body=None, **kw):
        raw = body if isinstance(body, bytes) else json.dumps({} if body is None else body).encode()
        return self.request("POST", path, raw, {"Content-Type": "application/json", **kw.pop("headers", {})})


class LateNgrams(Wrapped):
    """An index whose frequent_ngrams starts ``delay`` seconds late (after a short deadline has passed)
    and records in ``outcome`` what the engine's run then ended with (the table, or the exception)."""

    def __init__(self, index, outcome: list, delay: float = 0.6):
        super().__init__(index)
        self._outcome, self._delay = outcome, delay

    def frequent_ngrams(self, *args, **kwargs):
        time.sleep(self._delay)
        try:
            table = self._index.frequent_ngrams(*args, **kwargs)
        except BaseException as exc:
            self._outcome.append(exc)
            raise
        self._outcome.append(table)
        return table


@contextlib.contextmanager
def router_over(backends):
    """A server for each backend, a router over them and a server in front of the router; yields the
    front server's port and shuts everything down after."""
    from engine.serve.router import NgramRouter
    from engine.serve.server import create_server

    servers = [create_server(b) for b in backends]
    router = NgramRouter([f"127.0.0.1:{port}" for _, port in servers])
    front, port = create_server(router)
    try:
        yield port
    finally:
        front.shutdown(0)
        router.close()
        for server, _ in servers:
            server.shutdown(0)
