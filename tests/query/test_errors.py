"""Every kind of bad input gets a typed error whose message says how to fix the call."""

import json

import numpy as np
import pytest

from engine import (
    IndexFormatError,
    IndexNotFoundError,
    InvalidQueryError,
    NgramIndex,
    TokenizerError,
    build_index,
)
from tests.helpers.corpora import build_from_token_docs


@pytest.fixture(scope="module")
def u16(tmp_path_factory):
    directory = tmp_path_factory.mktemp("u16") / "idx"
    return build_from_token_docs(directory, [[1, 2, 3, 1, 2], [0x100, 2]], 2)


@pytest.mark.parametrize(
    "query, match",
    [
        ([70000], "outside the vocabulary"),
        ([-1], "outside the vocabulary"),
        ([65535], "separator"),
        ([1.5], "integer token ids"),
        ([1.0], "floats"),
        ([[1, 2]], "one-dimensional"),
        (5, "wrap a single id"),
        (None, "sequence of token ids"),
        (b"ab", "not bytes"),
        (["a"], "integer token ids"),
    ],
)
def test_bad_queries_raise_invalid_query(u16, query, match):
    with pytest.raises(InvalidQueryError, match=match):
        u16.count(query)


def test_empty_is_refused_where_it_means_nothing(u16):
    assert u16.count([]) == u16.num_tokens  # counting the empty query is defined: every position
    with pytest.raises(InvalidQueryError, match="empty"):
        u16.search_docs([])


@pytest.mark.parametrize("cont", [70000, 65535, "a", 1.0, True, None])
def test_bad_continuations(u16, cont):
    with pytest.raises(InvalidQueryError, match="cont_id"):
        u16.prob([1], cont)


def test_bad_batch_arguments(u16):
    with pytest.raises(InvalidQueryError, match=r"queries\[1\]"):
        u16.count_batch([[1], [70000]])
    with pytest.raises(InvalidQueryError, match="cont_ids"):
        u16.prob_batch([[1], [2]], [1])
    with pytest.raises(InvalidQueryError, match="list of queries"):
        u16.count_batch("abc")


def test_bad_document_arguments(u16):
    with pytest.raises(InvalidQueryError, match="doc_ix"):
        u16.get_doc_by_ix(2)
    with pytest.raises(InvalidQueryError, match="shard"):
        u16.get_doc_by_rank(1, 0)
    with pytest.raises(InvalidQueryError, match="rank"):
        u16.get_doc_by_rank(0, 10_000)
    with pytest.raises(InvalidQueryError, match="multiple of 2"):
        u16.get_doc_by_ptr(0, 3)
    with pytest.raises(InvalidQueryError, match="max_disp_len"):
        u16.get_doc_by_ix(0, max_disp_len=0)
    with pytest.raises(InvalidQueryError, match="max_support"):
        u16.ntd([1], max_support=0)


def test_text_to_an_index_without_tokenizer(u16):
    with pytest.raises(TokenizerError, match="token ids instead of text"):
        u16.count("hello")


def test_missing_and_inconsistent_indexes(tmp_path):
    with pytest.raises(IndexNotFoundError, match="does not exist"):
        NgramIndex.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexNotFoundError, match="no shard files"):
        NgramIndex.open(tmp_path / "empty")
    build_from_token_docs(tmp_path / "idx", [[1, 2, 3]], 1)
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shards"][0]["num_docs"] = 7
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="do not match the manifest"):
        NgramIndex.open(tmp_path / "idx")
    manifest_path.write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        NgramIndex.open(tmp_path / "idx")
    manifest_path.unlink()
    (tmp_path / "idx" / "table.0").write_bytes(b"\x00" * 7)
    with pytest.raises(IndexFormatError):
        NgramIndex.open(tmp_path / "idx")
    (tmp_path / "idx" / "table.0").unlink()
    with pytest.raises(IndexFormatError, match="lacks table.0"):
        NgramIndex.open(tmp_path / "idx", token_width=1)


def test_bad_build_arguments(tmp_path):
    from engine import BuildError

    with pytest.raises(BuildError, match="exactly one"):
        build_index(tmp_path / "a")
    with pytest.raises(BuildError, match="vocab_size"):
        build_index(tmp_path / "b", documents=[np.array([1])], tokenizer=None)
    with pytest.raises(BuildError, match="outside"):
        build_index(tmp_path / "c", documents=[np.array([300])], tokenizer=None, vocab_size=255)
    with pytest.raises(BuildError, match="no documents"):
        build_index(tmp_path / "d", documents=[], tokenizer=None, vocab_size=255)
    with pytest.raises(BuildError):
        build_index(tmp_path / "e", [tmp_path / "no-such-file.txt"])
