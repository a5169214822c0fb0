"""Fixtures shared by the serving tests: three shard servers over parts of one corpus, a router
over them, and a gRPC server in front of the router."""

from __future__ import annotations

import pytest

from engine import NgramIndex
from engine.serve.client import NgramClient
from engine.serve.router import NgramRouter
from engine.serve.server import create_server
from tests.helpers.corpora import UNIQUE, build_text_index, make_docs



@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    base = tmp_path_factory.mktemp("router")
    paths, all_docs = [], []
    for i in range(3):
        docs = make_docs(10 + i, 80) + [{"text": UNIQUE[i], "id": f"u{i}", "n": -1}]
        # the middle server holds two shards, so global shard numbers must be mapped
        paths.append(build_text_index(base / f"p{i}", docs, shard_bytes=1400 if i == 1 else None))
        all_docs += docs
    full = NgramIndex.open(paths)
    # 4 shards like test_service's corpus: numba compiles the batch kernels once per shard count
    assert [NgramIndex.open(p).num_shards for p in paths] == [1, 2, 1]
    return paths, full, all_docs


@pytest.fixture(scope="module")
def shard_servers(parts):
    paths, _, _ = parts
    servers = [create_server(NgramIndex.open(p)) for p in paths]
    yield servers
    for server, _ in servers:
        server.shutdown(0)


@pytest.fixture(scope="module")
def router(shard_servers):
    r = NgramRouter([f"127.0.0.1:{port}" for _, port in shard_servers], health_interval=0.2)
    r.warmup()
    yield r
    r.close()


@pytest.fixture(scope="module")
def routed_client(router):
    server, port = create_server(router)
    with NgramClient(f"127.0.0.1:{port}") as c:
        yield c
    server.shutdown(0)
