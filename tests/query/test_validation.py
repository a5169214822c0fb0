"""Validation gaps of issue 15: vocabularies past the separator, ids beyond int64, damaged manifest
fields, bools among ids, a closed client, lone surrogates over gRPC: each a typed error (or, for
surrogates, the in-process answer)."""

import json

import numpy as np
import pytest

from engine import ClientClosedError, IndexFormatError, InvalidQueryError, NgramIndex
from engine.build.verify import verify_index
from tests.helpers.corpora import build_from_token_docs

DOCS = [[1, 0x100, 3, 1, 0x100], [0x100, 3], [1], [3, 1, 0x100, 3, 3]]


@pytest.fixture(scope="module")
def u16(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "idx"
    build_from_token_docs(path, DOCS, 2)
    return path


def test_vocab_size_past_the_separator_is_refused(u16, tmp_path):
    with pytest.raises(InvalidQueryError, match="does not fit 16-bit tokens"):
        NgramIndex.open(u16, vocab_size=65798)
    with pytest.raises(InvalidQueryError, match="positive int"):
        NgramIndex.open(u16, vocab_size=0)
    copy = tmp_path / "idx"
    import shutil

    shutil.copytree(u16, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["vocab_size"] = 70000
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="does not fit 16-bit tokens"):
        NgramIndex.open(copy)
    assert any("does not fit" in p for p in verify_index(copy).problems)


def test_ids_beyond_int64(u16):
    index = NgramIndex.open(u16)
    for call in (lambda: index.prob([1], 10**30), lambda: index.infgram_prob([1], -(10**30)),
                 lambda: index.count([10**30]), lambda: index.prob([10**30], 1), lambda: index.ntd([1, 10**30])):
        with pytest.raises(InvalidQueryError):
            call()


@pytest.mark.parametrize("damage", [
    ("pop", "token_width"), ("pop", "vocab_size"), ("pop", "shards"), ("pop", "build"),
    ("set", "token_width", 0), ("set", "token_width", "2"), ("set", "vocab_size", -5), ("set", "vocab_size", None),
    ("set", "shards", []), ("set", "shards", {}), ("set", "format_version", "1"), ("set", "eos_token_id", "x"),
    ("shard", "num_tokens", 0), ("shard", "num_docs", -1), ("shard", "ptr_size", "3"), ("shard", "files", None),
    ("shard", "ptr_size", 0), ("shard", "num_tokens", True), ("raw", "[1, 2]"),
])
def test_bad_manifest_fields_are_index_format_errors(u16, tmp_path, damage):
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(u16, copy)
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    if damage[0] == "pop":
        manifest.pop(damage[1])
    elif damage[0] == "set":
        manifest[damage[1]] = damage[2]
    elif damage[0] == "shard":
        manifest["shards"][0][damage[1]] = damage[2]
    path.write_text(damage[1] if damage[0] == "raw" else json.dumps(manifest))
    with pytest.raises(IndexFormatError):
        NgramIndex.open(copy)
    assert verify_index(copy).problems  # reported, not raised


@pytest.mark.parametrize("query", [[1, True], [True, 1], [0x100, False, 3], (1, True), [np.True_, 1], [True]])
def test_bools_among_ids_are_refused(u16, query):
    index = NgramIndex.open(u16)
    calls = [index.count, index.ntd, index.find, index.infgram_ntd, lambda q: index.prob(q, 1),
             lambda q: index.infgram_prob(q, 1), lambda q: index.search_docs(q), lambda q: index.count_batch([q]),
             lambda q: index.count_batch([[1], q]), lambda q: index.prob_batch([q], [1]),
             lambda q: index.ntd_batch([q])]
    for call in calls:
        with pytest.raises(InvalidQueryError):
            call(query)
    assert index.count([1, 0x100]) == 3 and index.count_batch([[1, 0x100], [3]]).tolist() == [3, 5]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from engine.serve.server import create_server
    from tests.helpers.corpora import build_text_index, make_docs

    index = NgramIndex.open(build_text_index(tmp_path_factory.mktemp("grpc") / "idx", make_docs(3, 30)))
    server, port = create_server(index, warmup=False)
    yield index, f"127.0.0.1:{port}"
    server.shutdown(0)


def test_closed_client_raises_a_typed_error(served):
    from engine.serve.client import NgramClient

    _, target = served
    client = NgramClient(target)
    assert client.count("the") >= 0
    client.close()
    for call in (lambda: client.count("the"), lambda: client.count_batch([[1], [2]]), client.health,
                 lambda: list(client.search_docs("the").documents), lambda: client.ntd([116])):
        with pytest.raises(ClientClosedError, match="closed"):
            call()


def test_lone_surrogates_over_grpc_answer_as_in_process(served):
    from engine.serve.client import NgramClient

    index, target = served
    texts = ["the \ud800cat", "\udfff", "a\ud83dcat"]
    with NgramClient(target) as client:
        for text in texts:
            assert client.count(text) == index.count(text)
            assert np.array_equal(client.tokenize(text), index.tokenize(text))
            assert client.ntd(text) == index.ntd(text)
        assert client.count_batch(texts).tolist() == index.count_batch(texts).tolist()
        with pytest.raises(InvalidQueryError):
            client.count([1, True])
