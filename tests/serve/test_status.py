"""Errors round-trip: every error class a backend raises on purpose reaches an NgramClient as the
same class (engine/serve/status.py's table), with the server's message; a status code from a
server that sends no class name maps to its default class."""

from __future__ import annotations

import grpc
import pytest

from engine import errors
from engine.serve.client import NgramClient
from engine.serve.server import create_server
from engine.serve.status import CODE_DEFAULT, ERROR_STATUS, error_from_rpc, status_of
from tests.helpers.serving import Wrapped

RAISED = [cls for cls, _ in ERROR_STATUS if issubclass(cls, errors.NgramError)]


def test_every_engine_error_class_is_in_the_table():
    defined = {obj for obj in vars(errors).values()
               if isinstance(obj, type) and issubclass(obj, errors.NgramError)}
    assert defined == set(RAISED)


def test_each_class_round_trips_over_grpc(tiny_index):
    index, _ = tiny_index
    raising = {"cls": None}

    class Failing(Wrapped):
        def count(self, query):
            if raising["cls"] is None:
                return self._index.count(query)
            raise raising["cls"](f"{raising['cls'].__name__}: this is why")

    server, port = create_server(Failing(index))
    try:
        with NgramClient(f"127.0.0.1:{port}", retry=False) as client:
            for cls in RAISED:
                raising["cls"] = cls
                with pytest.raises(errors.NgramError) as info:
                    client.count([1, 2])
                assert type(info.value) is cls, (cls, type(info.value))
                assert f"{cls.__name__}: this is why" in str(info.value)
                assert info.value.code == status_of(cls("x"))[0]
            raising["cls"] = None
            assert client.count([1, 2]) == index.count([1, 2])  # the server kept serving
    finally:
        server.shutdown(0)


def test_a_code_without_a_class_name_maps_to_its_default():
    class Bare(grpc.RpcError):
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

        def details(self):
            return "no name sent"

        def trailing_metadata(self):
            return ()

    for code, cls in CODE_DEFAULT.items():
        assert type(error_from_rpc(Bare(code))) is cls
    assert isinstance(error_from_rpc(Bare(grpc.StatusCode.DEADLINE_EXCEEDED)), TimeoutError)
    err = error_from_rpc(Bare(grpc.StatusCode.CANCELLED))
    assert type(err) is errors.RpcFailedError and err.code == grpc.StatusCode.CANCELLED and "no name sent" in str(err)


def test_one_tokenizer_mismatch_error():
    import lm_integration

    assert lm_integration.TokenizerMismatchError is errors.TokenizerMismatchError
