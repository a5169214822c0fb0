"""``POST /`` (infini-gram's API) against the real infini-gram 2.6.0 engine on the same index files.

The same requests go to our HTTP server and to ``infini_gram.engine.InfiniGramEngine``, whose answers
are shaped here as infini-gram's API server shapes them (the query split into prompt and
continuation for prob, ``token``, ``longest_suffix`` and ``spans`` added, then ``latency``,
``token_ids`` and ``tokens``). Every response has infini-gram's fields; values are compared where
both sides are exact. The documented differences (engine/serve/http/infinigram.py) are checked as
such: ntd says ``"exact": true``, CNF counts documents, search_docs takes the first occurrences.

Two indexes: byte-level in two shards (infini-gram's u8) and GPT-2 (u16, where a text query gets
infini-gram's leading space).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

ig_engine = pytest.importorskip("infini_gram.engine", reason="needs the infini-gram==2.6.0 package (dev extra)")

from engine import NgramIndex, build_index  # noqa: E402
from engine.serve.http import HttpServer, create_app  # noqa: E402
from engine.serve.server import create_server  # noqa: E402
from tests.helpers.corpora import build_text_index, make_docs  # noqa: E402
from tests.helpers.serving import Http  # noqa: E402

DOCS = make_docs(11, 300)
IG_MAX_SUPPORT = 1000  # infini-gram's default: distributions of prompts occurring more often are sampled


class Side:
    """One index served by us over HTTP and opened by infini-gram's engine."""

    def __init__(self, path, ours: NgramIndex):
        self.ours = ours
        width = ours.token_width
        self.tokens = [np.frombuffer(bytes(s.tokenized), dtype=f"<u{width}").astype(np.int64) for s in ours.shards]
        present = set(np.unique(np.concatenate(self.tokens)).tolist())
        tok = ours.tokenizer
        # infini-gram reports document ends as eos: the tokenizer's (absent from the corpus), or
        # for bytes the smallest absent byte.
        self.eos = tok.eos_token_id if tok.eos_token_id is not None else min(set(range(255)) - present)
        assert self.eos not in present
        self.theirs = ig_engine.InfiniGramEngine(
            str(path), eos_token_id=self.eos, vocab_size=255 if width == 1 else 65535,
            token_dtype=f"u{8 * width}", ds_prefetch_depth=0)
        self.server, _ = create_server(ours)
        self.web = HttpServer(create_app(self.server.servicer, health=self.server.health), "127.0.0.1", 0)
        self.web.start()
        self.http = Http(self.web.port)

    def close(self):
        self.web.stop(0)
        self.server.shutdown(0)

    def ends_a_shard(self, q: list[int]) -> bool:
        """infini-gram's ntd credits a whole range to eos when the prompt ends a shard's data (see
        tests/query/test_infinigram_compat.py): its distribution is not compared there."""
        return any(len(t) >= len(q) and t[len(t) - len(q):].tolist() == q for t in self.tokens)

    def ask(self, **request) -> dict:
        status, body = self.http.post("/", request)
        assert status == 200, (request, body)
        return body

    # -- infini-gram's engine, shaped as its API server shapes its answers ------------------------

    def decode(self, ids) -> str:
        return self.ours.tokenizer.decode(list(ids)) if len(ids) else ""

    def spans(self, token_ids: list[int], needle: list[int]) -> list:
        """[text, label] pieces: the needle's occurrences labelled "0", as infini-gram's server does."""
        out, rest = [], list(token_ids)
        while True:
            hit = next((p for p in range(len(rest) - len(needle) + 1) if rest[p:p + len(needle)] == needle), None)
            if hit is None or not needle:
                break
            if hit:
                out.append([self.decode(rest[:hit]), None])
            out.append([self.decode(needle), "0"])
            rest = rest[hit + len(needle):]
        if rest:
            out.append([self.decode(rest), None])
        return out

    def reference(self, query_type: str, ids, **kw) -> dict:
        e = self.theirs
        if query_type == "count":
            r = e.count_cnf(ids, **kw) if ids and isinstance(ids[0], list) else e.count(ids)
        elif query_type == "prob":
            r = e.prob(ids[:-1], ids[-1])
        elif query_type in ("ntd", "infgram_ntd"):
            r = getattr(e, query_type)(ids, max_support=kw.get("max_support", IG_MAX_SUPPORT))
            for t, v in r["result_by_token_id"].items():
                v["token"] = self.ours.tokenizer.token_str(t) if t != self.eos else ""
            if query_type == "infgram_ntd":
                r["longest_suffix"] = self.decode(ids[len(ids) - r["suffix_len"]:])
        elif query_type == "infgram_prob":
            r = e.infgram_prob(ids[:-1], ids[-1])
            r["longest_suffix"] = self.decode(ids[:-1][len(ids) - 1 - r["suffix_len"]:])
        elif query_type == "find":
            r = e.find(ids)
        elif query_type == "find_cnf":
            r = e.find_cnf(ids)
        elif query_type == "search_docs":
            r = e.search_docs(ids, **kw)
            for d in r["documents"]:
                d["spans"] = self.spans(d["token_ids"], ids)
        elif query_type in ("get_doc_by_rank", "get_doc_by_ptr"):
            r = getattr(e, query_type)(**kw)
            r["spans"] = self.spans(r["token_ids"], ids)
        elif query_type == "attribute":
            r = e.attribute(ids, delim_ids=[], min_len=kw["min_len"], max_cnt=kw["max_cnt"], enforce_bow=False)
        else:  # pragma: no cover
            raise AssertionError(query_type)
        assert "error" not in r, r
        r.update(latency=0.0, token_ids=ids, tokens=[])
        return json.loads(json.dumps(r))  # as its server's jsonify sends it: tuples become lists, keys strings


@pytest.fixture(scope="module", params=["bytes-2shards", "gpt2"])
def side(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("igcompat")
    if request.param == "gpt2":
        src = root / "docs.jsonl"
        src.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
        path = build_index(root / "gpt2", inputs=[src], tokenizer="gpt2", workers=1)
    else:
        path = build_text_index(root / "bytes", DOCS, shard_bytes=4000)
    ours = NgramIndex.open(path)
    assert ours.num_shards == (2 if request.param != "gpt2" else 1) or request.param == "gpt2"
    s = Side(path, ours)
    yield s
    s.close()


def same_fields(ours: dict, theirs: dict, *, missing=()):
    """Every field infini-gram answers is in ours (``missing``: documented exceptions)."""
    assert set(theirs) - set(ours) == set(missing), (sorted(ours), sorted(theirs))


QUERIES = ["the cat", "sat on the mat", "a", "dog ran to", "big red hat and", "mat the", "zebra", "the"]


def _ids(side: Side, text: str) -> list[int]:
    return side.ours.tokenize(text).tolist()


def _phrase(side: Side, text: str) -> list[int]:
    """The ids of ``text`` as infini-gram's server tokenizes a query (a leading space for BPE)."""
    return _ids(side, (" " if side.ours.tokenizer.kind in ("hf", "tiktoken") else "") + text)


def test_text_queries_tokenize_as_infinigram_does(side):
    for text in ("the cat", "red hat"):
        by_text = side.ask(query_type="count", query=text)
        spaced = side.ours.tokenizer.kind in ("hf", "tiktoken")
        want = _ids(side, (" " if spaced else "") + text)
        assert by_text["token_ids"] == want
        assert by_text["count"] == side.ask(query_type="count", query_ids=want)["count"]
        assert by_text["tokens"] == [side.ours.tokenizer.token_str(t) for t in want]
        assert side.ask(query_type="count", query=text, leading_space=False)["token_ids"] == _ids(side, text)


def test_counts_probs_and_find_equal_infinigram(side):
    for text in QUERIES:
        ids = _phrase(side, text)
        for qt in ("count", "find", "prob", "infgram_prob"):
            ours, theirs = side.ask(query_type=qt, query_ids=ids), side.reference(qt, ids)
            same_fields(ours, theirs)
            for k in set(theirs) - {"latency", "tokens"}:
                assert ours[k] == theirs[k], (qt, text, k, ours[k], theirs[k])
            assert isinstance(ours["latency"], float) and len(ours["tokens"]) == len(ids)


def test_distributions_exact_where_infinigram_is_exact(side):
    compared = 0
    for text in QUERIES:
        ids = _phrase(side, text)
        for qt in ("ntd", "infgram_ntd"):
            ours, theirs = side.ask(query_type=qt, query_ids=ids), side.reference(qt, ids)
            same_fields(ours, theirs)
            assert ours["exact"] is True and ours["approx"] is False  # exact without max_support
            if qt == "infgram_ntd":
                assert ours["suffix_len"] == theirs["suffix_len"]
                if theirs["suffix_len"]:
                    assert ours["longest_suffix"] == theirs["longest_suffix"]
                prompt = ids[len(ids) - ours["suffix_len"]:]
            else:
                prompt = ids
            if theirs["approx"] or side.ends_a_shard(prompt):
                continue  # infini-gram sampled (over 1000 occurrences) or hit its end-of-shard defect
            compared += 1
            assert ours["prompt_cnt"] == theirs["prompt_cnt"], (qt, text)
            mine, want = ours["result_by_token_id"], dict(theirs["result_by_token_id"])
            if side.ours.tokenizer.eos_token_id is None:
                # No eos id of its own: document ends are a separate count (end_cnt).
                end = want.pop(str(side.eos), {"cont_cnt": 0})
                assert ours.get("end_cnt", 0) == end["cont_cnt"], (qt, text)
            assert set(mine) == set(want), (qt, text)
            for t, v in want.items():
                assert mine[t]["cont_cnt"] == v["cont_cnt"] and mine[t]["prob"] == pytest.approx(v["prob"])
                if int(t) != side.eos:
                    assert mine[t]["token"] == v["token"]
        # Capped by max_support, both sample and say so.
        capped = side.ask(query_type="ntd", query_ids=ids, max_support=1)
        assert capped["exact"] is (not capped["approx"])
    assert compared >= 6


def test_documents_equal_infinigram(side):
    ids = _phrase(side, "the cat")
    ours = side.ask(query_type="search_docs", query_ids=ids, maxnum=3, max_disp_len=20)
    theirs = side.reference("search_docs", ids, maxnum=3, max_disp_len=20)
    same_fields(ours, theirs)
    assert (ours["cnt"], ours["approx"]) == (theirs["cnt"], theirs["approx"])
    assert len(ours["documents"]) == len(theirs["documents"]) == 3
    for d, t in zip(ours["documents"], theirs["documents"]):
        assert set(d) >= set(t)
        assert any(label == "0" for _, label in d["spans"])  # the match is highlighted
        assert "".join(text for text, _ in d["spans"]) == side.decode(d["token_ids"])
    # Ours are the first occurrences in suffix-array order: the documents at the first ranks.
    seg = side.reference("find", ids)["segment_by_shard"]
    s = next(i for i, (a, b) in enumerate(seg) if b > a)
    for i, d in enumerate(ours["documents"][:seg[s][1] - seg[s][0]]):
        ref = side.theirs.get_doc_by_rank(s=s, rank=seg[s][0] + i, max_disp_len=20)
        ref["spans"] = side.spans(ref["token_ids"], ids)
        assert {k: d[k] for k in ("doc_ix", "doc_len", "disp_len", "needle_offset", "token_ids", "spans")} == \
               {k: ref[k] for k in ("doc_ix", "doc_len", "disp_len", "needle_offset", "token_ids", "spans")}

    for qt, kw in (("get_doc_by_rank", {"s": s, "rank": seg[s][0] + 1, "max_disp_len": 30}),
                   ("get_doc_by_ptr", {"s": 0, "ptr": 40 * side.tokens[0].itemsize, "max_disp_len": 30})):
        ours, theirs = side.ask(query_type=qt, query_ids=ids, **kw), side.reference(qt, ids, **kw)
        same_fields(ours, theirs)
        # As infini-gram's server does, token_ids is the query's (the document's text is in spans).
        assert ours["token_ids"] == ids
        for k in ("doc_ix", "doc_len", "disp_len", "needle_offset", "token_ids", "blocked", "spans"):
            assert ours[k] == theirs[k], (qt, k)
        assert json.loads(ours["metadata"]) == json.loads(theirs["metadata"])


def test_cnf_has_infinigrams_fields_and_says_it_counts_documents(side):
    a, b, c = (_phrase(side, t) for t in ("cat", "dog", "red"))
    cnf = [[a, b], [c]]
    ours, theirs = side.ask(query_type="count", query_ids=cnf), side.reference("count", cnf)
    same_fields(ours, theirs)
    assert ours["cnf_scope"] == "document"
    want = side.ours.count_cnf([[a, b], [c]])
    assert ours["count"] == want.count and ours["tokens"] and len(ours["tokens"]) == 2
    # The same CNF written as text.
    spaced = " " if side.ours.tokenizer.kind in ("hf", "tiktoken") else ""
    by_text = side.ask(query_type="count", query="cat OR dog AND red", leading_space=bool(spaced))
    assert by_text["token_ids"] == [[_ids(side, spaced + "cat"), _ids(side, spaced + "dog")], [_ids(side, spaced + "red")]]
    ours, theirs = side.ask(query_type="find_cnf", query_ids=cnf), side.reference("find_cnf", cnf)
    same_fields(ours, theirs, missing={"ptrs_by_shard"})  # documented: no occurrence pointers
    assert ours["cnt"] == want.count
    docs = side.ask(query_type="search_docs", query_ids=cnf, maxnum=2, max_disp_len=40)
    assert docs["cnt"] == want.count and len(docs["documents"]) == min(2, want.count)
    for d in docs["documents"]:
        labels = {label for _, label in d["spans"]}
        assert labels & {"0", "1"}, d["spans"]


def test_attribution_spans_equal_infinigram(side):
    ids = _phrase(side, "the cat sat on the mat and the dog ran to a log")
    ours = side.ask(query_type="attribute", query_ids=ids, min_len=3, max_cnt=1000)
    theirs = side.reference("attribute", ids, min_len=3, max_cnt=1000)
    same_fields(ours, theirs)
    assert ours["spans"], ours
    assert [(s["l"], s["r"], s["length"], s["count"]) for s in ours["spans"]] == \
           [(s["l"], s["r"], s["length"], s["count"]) for s in theirs["spans"]]
    assert set(ours["spans"][0]) >= set(theirs["spans"][0]) - {"docs"}


def test_errors_follow_infinigrams_convention(side):
    cases = [
        ({"query_type": "nope", "query": "a"}, "query_type"),
        ({"query_type": "count"}, "exactly one of query and query_ids"),
        ({"query_type": "count", "query": "a", "query_ids": [1]}, "exactly one"),
        ({"query_type": "count", "query": 5}, "string"),
        ({"query_type": "count", "query_ids": [[1], 2]}, "query_ids"),
        ({"query_type": "prob", "query_ids": []}, "non-empty"),
        ({"query_type": "ntd", "query": "a", "max_support": 0}, "max_support"),
        ({"query_type": "get_doc_by_rank", "query_ids": [], "s": 0}, "rank"),
        ({"query_type": "count", "query_ids": [10 ** 7]}, "vocabulary"),
    ]
    for body, words in cases:
        status, reply = side.http.post("/", body)
        assert 400 <= status < 500 and set(reply) == {"error"} and words in reply["error"], (body, status, reply)
    status, reply = side.http.post("/", b"[1,")
    assert status == 400 and "JSON" in reply["error"]
    assert side.ask(query_type="count", query_ids=[])["count"] == side.ours.num_tokens  # still serving
