"""Open an NgramSource from a command-line spec. The engine is imported only here, only when asked,
so importing lm_integration never pulls in numba or grpc."""

from __future__ import annotations

import importlib


def open_source(spec: str, *, load: str = "mmap"):
    """``grpc://HOST:PORT`` (or ``HOST:PORT`` with ``server=True`` callers) -> engine.NgramClient;
    anything else is an index directory -> engine.NgramIndex.open."""
    if spec.startswith("grpc://"):
        return importlib.import_module("engine.serve.client").NgramClient(spec[len("grpc://"):])
    return importlib.import_module("engine.index").NgramIndex.open(spec, load=load)
