"""Open an NgramSource from a command-line spec. The engine is imported only here, only when asked,
so importing lm_integration never pulls in numba or grpc."""

from __future__ import annotations

import importlib
import os


def open_source(spec: str, *, load: str = "mmap"):
    """``grpc://HOST:PORT`` (or ``HOST:PORT`` with ``server=True`` callers) -> engine.NgramClient;
    anything else is an index directory -> engine.NgramIndex.open."""
    if spec.startswith("grpc://"):
        return importlib.import_module("engine.serve.client").NgramClient(spec[len("grpc://"):])
    return importlib.import_module("engine.index").NgramIndex.open(spec, load=load)


def open_source_from_env():
    """The source named by the environment, for plugins that a host builds from its own config alone
    (vLLM's proposer and logits processor): ``NGRAM_INDEX`` (an index directory, opened and warmed up
    here) or ``NGRAM_TARGET`` (HOST:PORT of ``ngram serve``); None when neither is set."""
    path, target = os.environ.get("NGRAM_INDEX"), os.environ.get("NGRAM_TARGET")
    if path and target:
        raise ValueError("set only one of NGRAM_INDEX (an index directory) and NGRAM_TARGET (HOST:PORT)")
    if path:
        index = open_source(path)
        index.warmup()
        return index
    if target:
        return open_source("grpc://" + target)
    return None
