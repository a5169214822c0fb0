"""Input readers: every format, compression, globs, directories, and the errors users see."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from engine.errors import BuildError
from engine.build.readers import RawDocument, detect_format, expand_inputs, iter_documents

RECORDS = [
    {"text": "the cat sat", "id": 1, "src": "a"},
    {"text": "on the mat\nwith a hat", "id": 2, "src": "b"},
    {"text": "naïve — 日本語", "id": 3, "src": "c"},
]


def _jsonl(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _expected_jsonl_docs():
    return [(r["text"], {k: v for k, v in r.items() if k != "text"}) for r in RECORDS]


def _texts_metas(docs):
    return [(d.text, d.metadata) for d in docs]


# -- expand_inputs ------------------------------------------------------------------------------


def test_expand_inputs_files_dirs_globs_sorted_and_deduplicated(tmp_path: Path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for rel in ["d/b.txt", "d/a.txt", "d/sub/c.jsonl", "d/.hidden", "x.txt", "y.txt"]:
        (tmp_path / rel).write_text("x")
    (tmp_path / "d" / ".git").mkdir()
    (tmp_path / "d" / ".git" / "config").write_text("x")

    got = expand_inputs([tmp_path / "d"])
    assert got == [tmp_path / "d/a.txt", tmp_path / "d/b.txt", tmp_path / "d/sub/c.jsonl"]

    got = expand_inputs([str(tmp_path / "*.txt"), tmp_path / "x.txt", str(tmp_path / "**/*.jsonl")])
    assert got == [tmp_path / "x.txt", tmp_path / "y.txt", tmp_path / "d/sub/c.jsonl"]

    # a single path (not a list) is accepted
    assert expand_inputs(tmp_path / "y.txt") == [tmp_path / "y.txt"]
    # deterministic
    assert expand_inputs([tmp_path]) == expand_inputs([tmp_path])


def test_expand_inputs_nothing_matches_names_the_inputs(tmp_path: Path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(BuildError) as ei:
        expand_inputs([tmp_path / "a.txt", tmp_path / "missing.txt", str(tmp_path / "*.parquet")])
    msg = str(ei.value)
    assert "missing.txt" in msg and "*.parquet" in msg and "a.txt" not in msg.split("match")[1].split(";")[0]
    with pytest.raises(BuildError):
        expand_inputs([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="empty"):
        expand_inputs([tmp_path / "empty"])


def test_detect_format():
    assert detect_format("a.jsonl") == "jsonl"
    assert detect_format("a.JSONL.GZ") == "jsonl"
    assert detect_format("a.jsonl.zst") == "jsonl"
    assert detect_format("a.ndjson") == "jsonl"
    assert detect_format("a.parquet") == "parquet"
    assert detect_format("a.npz") == "npz"
    assert detect_format("a.txt") == "text"
    assert detect_format("Makefile") == "text"
    assert detect_format("a.c") == "text"
    assert detect_format("a.txt.gz") == "text"


# -- text ---------------------------------------------------------------------------------------


def test_text_one_doc_per_file_and_per_line(tmp_path: Path):
    (tmp_path / "b.txt").write_text("line one\n\n  \nline two\n", encoding="utf-8")
    (tmp_path / "a.c").write_text("int main(void) { return 0; }\n", encoding="utf-8")
    docs = list(iter_documents([tmp_path]))
    assert _texts_metas(docs) == [
        ("int main(void) { return 0; }\n", {"path": str(tmp_path / "a.c")}),
        ("line one\n\n  \nline two\n", {"path": str(tmp_path / "b.txt")}),
    ]
    assert all(d.tokens is None for d in docs)

    lines = list(iter_documents([tmp_path / "b.txt"], line_per_doc=True))
    assert _texts_metas(lines) == [
        ("line one", {"path": str(tmp_path / "b.txt"), "line": 1}),
        ("line two", {"path": str(tmp_path / "b.txt"), "line": 4}),
    ]


def test_text_invalid_utf8_is_replaced_and_crlf_kept(tmp_path: Path):
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe bytes\r\nnext")
    (doc,) = iter_documents(tmp_path / "bad.txt")
    assert doc.text == "ok \ufffd\ufffd bytes\r\nnext"
    lines = [d.text for d in iter_documents(tmp_path / "bad.txt", line_per_doc=True)]
    assert lines == ["ok \ufffd\ufffd bytes", "next"]


def test_text_compressed(tmp_path: Path):
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress("gzipped text\n".encode()))
    (tmp_path / "b.txt.zst").write_bytes(zstandard.ZstdCompressor().compress("zstd text\n".encode()))
    assert [d.text for d in iter_documents([tmp_path])] == ["gzipped text\n", "zstd text\n"]


def test_real_canterbury_text_files():
    from engine.fetch import fetch, is_fetched

    if not is_fetched("canterbury"):
        pytest.skip("canterbury not in the cache (fetched by test_fetch, marked slow)")
    d = fetch("canterbury")
    docs = list(iter_documents([d / "*.txt"]))
    assert [Path(x.metadata["path"]).name for x in docs] == ["alice29.txt", "asyoulik.txt", "lcet10.txt", "plrabn12.txt"]
    assert len(docs[0].text) == 152089  # alice29.txt is ASCII
    assert "Alice" in docs[0].text


# -- JSONL --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_jsonl_plain_and_compressed(tmp_path: Path, suffix: str):
    data = _jsonl(RECORDS).encode("utf-8")
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
    elif suffix.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"docs{suffix}"
    path.write_bytes(data)
    docs = list(iter_documents([path]))
    assert _texts_metas(docs) == _expected_jsonl_docs()
    assert all(isinstance(d, RawDocument) and d.tokens is None for d in docs)


def test_jsonl_custom_text_field_blank_lines_and_no_other_fields(tmp_path: Path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "x y"}\n\n{"body": "z", "k": [1, 2]}\n')
    docs = list(iter_documents(path, text_field="body"))
    assert _texts_metas(docs) == [("x y", None), ("z", {"k": [1, 2]})]


def test_jsonl_bad_json_names_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "broken"\n')
    it = iter_documents(path)
    assert next(it).text == "fine"
    with pytest.raises(BuildError, match=r"bad\.jsonl:2: invalid JSON"):
        next(it)


def test_jsonl_missing_field_names_file_line_and_fix(tmp_path: Path):
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n{"text": "b"}\n{"content": "c"}\n'))
    with pytest.raises(BuildError) as ei:
        list(iter_documents(path))
    msg = str(ei.value)
    assert "m.jsonl.gz:3" in msg and "'text'" in msg and "content" in msg and "text_field" in msg


def test_jsonl_non_object_and_non_string_text(tmp_path: Path):
    (tmp_path / "a.jsonl").write_text('["not", "an", "object"]\n')
    with pytest.raises(BuildError, match=r"a\.jsonl:1: expected a JSON object"):
        list(iter_documents(tmp_path / "a.jsonl"))
    (tmp_path / "b.jsonl").write_text('{"text": 5}\n')
    with pytest.raises(BuildError, match=r"b\.jsonl:1: field 'text' must be a string"):
        list(iter_documents(tmp_path / "b.jsonl"))


def test_jsonl_truncated_gzip_is_a_build_error(tmp_path: Path):
    data = gzip.compress(_jsonl(RECORDS * 50).encode())
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BuildError, match="t.jsonl.gz"):
        list(iter_documents(path))


def test_real_kjv_jsonl_streams_verses():
    from engine.fetch import fetch

    d = fetch("kjv")  # 1.5 MB download, once per cache
    it = iter_documents([d], text_field="text")
    first = next(it)
    assert first.text == "In the beginning God created the heaven and the earth."
    assert first.metadata == {"citation": "Genesis 1:1", "book": "Genesis", "chapter": 1, "verse": 1}
    n = 1 + sum(1 for _ in it)
    assert n == 31103  # verses in this KJV edition (one per line)


# -- Parquet ------------------------------------------------------------------------------------


def test_parquet_text_and_metadata_in_record_batches(tmp_path: Path):
    n = 2500  # several record batches
    table = pa.table({
        "id": pa.array(range(n), pa.int64()),
        "text": pa.array([f"doc {i} text" for i in range(n)]),
        "lang": pa.array(["en"] * n),
    })
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=700)
    docs = list(iter_documents([tmp_path / "*.parquet"]))
    assert len(docs) == n
    assert docs[0].text == "doc 0 text" and docs[0].metadata == {"id": 0, "lang": "en"}
    assert docs[-1].text == f"doc {n - 1} text" and docs[-1].metadata == {"id": n - 1, "lang": "en"}
    assert [d.metadata["id"] for d in docs] == list(range(n))


def test_parquet_text_only_and_errors(tmp_path: Path):
    pq.write_table(pa.table({"content": ["a", "b"]}), tmp_path / "c.parquet")
    assert [(d.text, d.metadata) for d in iter_documents(tmp_path / "c.parquet", text_field="content")] == [
        ("a", None), ("b", None)]
    with pytest.raises(BuildError, match=r"no column 'text'.*content"):
        list(iter_documents(tmp_path / "c.parquet"))
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "n.parquet")
    with pytest.raises(BuildError, match="row 1"):
        list(iter_documents(tmp_path / "n.parquet"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BuildError, match="bad.parquet"):
        list(iter_documents(tmp_path / "bad.parquet"))


# -- npz ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("dtype", [np.uint16, np.int64, np.uint32])
def test_npz_pretokenized(tmp_path: Path, compressed: bool, dtype):
    docs = [[5, 6, 7], [], [1], [65000, 2, 3, 4]]
    tokens = np.array([t for d in docs for t in d], dtype=dtype)
    offsets = np.cumsum([0] + [len(d) for d in docs])
    path = tmp_path / "pre.npz"
    (np.savez_compressed if compressed else np.savez)(path, tokens=tokens, offsets=offsets)
    got = list(iter_documents(path))
    assert len(got) == len(docs)
    for raw, want in zip(got, docs):
        assert raw.text is None and raw.metadata is None
        assert raw.tokens.dtype == np.uint32
        assert raw.tokens.tolist() == want


def test_npz_uncompressed_is_memory_mapped(tmp_path: Path):
    from engine.build.readers import _npz_member
    import zipfile

    path = tmp_path / "m.npz"
    np.savez(path, tokens=np.arange(1000, dtype=np.uint32), offsets=np.array([0, 1000]))
    with zipfile.ZipFile(path) as zf:
        arr = _npz_member(path, zf, "tokens")
    assert isinstance(arr, np.memmap)
    assert arr.tolist() == list(range(1000))


def test_npz_bad_arrays(tmp_path: Path):
    np.savez(tmp_path / "a.npz", tokens=np.arange(5))
    with pytest.raises(BuildError, match="no array 'offsets'"):
        list(iter_documents(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", tokens=np.arange(5), offsets=np.array([0, 3, 4]))
    with pytest.raises(BuildError, match="end at len"):
        list(iter_documents(tmp_path / "b.npz"))
    np.savez(tmp_path / "c.npz", tokens=np.array([1, -2, 3]), offsets=np.array([0, 1, 3]))
    with pytest.raises(BuildError, match="document 1"):
        list(iter_documents(tmp_path / "c.npz"))
    np.savez(tmp_path / "d.npz", tokens=np.ones((2, 2), dtype=np.int32), offsets=np.array([0, 4]))
    with pytest.raises(BuildError, match="1-D integer"):
        list(iter_documents(tmp_path / "d.npz"))


# -- mixing and forcing formats -----------------------------------------------------------------


def test_mixed_directory_in_sorted_order_and_forced_format(tmp_path: Path):
    (tmp_path / "1.jsonl").write_text(_jsonl(RECORDS[:1]))
    np.savez(tmp_path / "2.npz", tokens=np.array([9, 8], dtype=np.uint16), offsets=np.array([0, 2]))
    (tmp_path / "3.txt").write_text("plain")
    docs = list(iter_documents(tmp_path))
    assert docs[0].text == "the cat sat"
    assert docs[1].tokens.tolist() == [9, 8]
    assert docs[2].text == "plain"

    (tmp_path / "data.log").write_text(_jsonl(RECORDS))
    forced = list(iter_documents(tmp_path / "data.log", fmt="jsonl"))
    assert _texts_metas(forced) == _expected_jsonl_docs()
    with pytest.raises(BuildError, match="unknown input format"):
        list(iter_documents(tmp_path, fmt="csv"))


def test_iter_documents_is_lazy(tmp_path: Path):
    path = tmp_path / "big.jsonl"
    path.write_text(_jsonl(RECORDS) + "this line is broken\n")
    it = iter_documents(path)
    # the first records come out before the bad line is read
    assert [next(it).text for _ in range(3)] == [r["text"] for r in RECORDS]
    with pytest.raises(BuildError, match=r"big\.jsonl:4"):
        next(it)
