"""``POST /``: infini-gram's HTTP API (api.infini-gram.io) on this server.

The request is infini-gram's: ``query_type``, exactly one of ``query`` (text; " AND " / " OR "
make it a CNF) and ``query_ids`` (ids, or a triply nested list for a CNF), and the type's own
arguments (``max_support``, ``max_clause_freq``, ``max_diff_tokens``, ``maxnum``,
``max_disp_len``, ``s``, ``rank``, ``ptr``, ``min_len``, ``max_cnt``). ``index`` / ``corpus`` are
accepted and ignored: a server serves one index. The answer carries infini-gram's fields plus
``token_ids``, ``tokens`` and ``latency`` (ms); an error is ``{"error": "..."}`` with a 4xx/5xx
status. Every query goes through the gRPC servicer's handlers (its limits, admission and deadlines).

Where the answers differ, the response says so instead of pretending:

- ``ntd`` / ``infgram_ntd`` are exact unless the request sets ``max_support`` (infini-gram samples
  at most 1000 occurrences by default): ``"exact": true``. A document's end is reported as infini-gram
  does, as the eos token id (when the index has one) in ``result_by_token_id``.
- CNF queries AND their clauses over whole documents (``count`` and ``find_cnf`` count matching
  documents), where infini-gram asks for occurrences within ``max_diff_tokens`` tokens:
  ``"cnf_scope": "document"``. ``find_cnf`` has no ``ptrs_by_shard``.
- ``search_docs`` returns the first ``maxnum`` occurrences in suffix-array order, not a random
  sample; ``idxs`` are their positions in that order.
- ``attribute`` reports the maximal spans of at least ``min_len`` tokens (default 1) occurring at most
  ``max_cnt`` times, as infini-gram's engine does; each source is ``{"s", "doc_ix",
  "needle_offset"}`` (no byte pointer) and ``delim_ids`` / ``enforce_bow`` are not supported.
- Text queries are tokenized as infini-gram's server does: a space is put before a non-empty query
  for byte-level BPE tokenizers (``hf``, ``tiktoken``), so ``"natural language"`` counts
  ``" natural language"``. ``"leading_space": false`` turns that off.
- As infini-gram's server does, ``token_ids`` is always the query's, also in a ``get_doc_by_*``
  answer (whose document text is in ``spans``).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np

from starlette.requests import Request
from starlette.responses import JSONResponse

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine.serve.http.context import CallContext, RpcError

__all__ = ["QUERY_TYPES", "InfinigramApi"]

QUERY_TYPES = ("count", "prob", "ntd", "infgram_prob", "infgram_ntd", "find", "find_cnf", "search_docs",
               "get_doc_by_rank", "get_doc_by_ptr", "attribute")
# Defaults of infini-gram's engine for the arguments a request may leave out.
DEFAULT_MAXNUM = 1
DEFAULT_MAX_DISP_LEN = 1000
DEFAULT_MAX_CLAUSE_FREQ = 50000
_SPACED_KINDS = ("hf", "tiktoken")


class BadRequest(Exception):
    """An infini-gram request that cannot be served as sent (400)."""


def _int(data: dict, name: str, default: int | None = None, *, minimum: int = 1) -> int | None:
    value = data.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadRequest(f"{name} must be an integer >= {minimum}, got {json.dumps(value)}")
    return value


def _is_ids(x) -> bool:
    return isinstance(x, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in x)


def _query(ids: list[int]) -> pb.Query:
    return pb.Query(token_ids=pb.TokenIds(ids=ids))


def _clauses(cnf: list[list[list[int]]]) -> list[pb.CnfClause]:
    return [pb.CnfClause(terms=[_query(t) for t in clause]) for clause in cnf]


def _occurrences(haystack: list[int], needle: list[int]) -> list[int]:
    """Start positions of the non-overlapping occurrences of ``needle``, left to right."""
    out, n, p = [], len(needle), 0
    if not n:
        return out
    while p + n <= len(haystack):
        if haystack[p:p + n] == needle:
            out.append(p)
            p += n
        else:
            p += 1
    return out


class InfinigramApi:
    """infini-gram's ``POST /`` over an HttpApi's servicer."""

    def __init__(self, api):
        self.api = api
        self._info: pb.GetIndexInfoResponse | None = None

    # -- calls into the servicer ------------------------------------------------------------------

    def call(self, name: str, request, ctx: CallContext):
        result = getattr(self.api.servicer, name)(request, ctx)
        return list(result) if not hasattr(result, "DESCRIPTOR") else result

    def info(self, ctx: CallContext) -> pb.GetIndexInfoResponse:
        if self._info is None:
            self._info = self.call("GetIndexInfo", pb.GetIndexInfoRequest(), ctx)
        return self._info

    def tokenize(self, text: str, leading_space: bool, ctx: CallContext) -> list[int]:
        if leading_space and text:
            text = " " + text
        return list(self.call("Tokenize", pb.TokenizeRequest(text=text), ctx).token_ids)

    def decode(self, ids: list[int], ctx: CallContext) -> str:
        if not ids or not self.info(ctx).has_tokenizer:
            return ""
        return self.call("Detokenize", pb.DetokenizeRequest(token_ids=ids), ctx).text

    def token_strs(self, ids: list[int]) -> list[str]:
        tok = getattr(self.api.servicer.backend, "tokenizer", None)
        if tok is None:
            return [str(i) for i in ids]
        return [tok.token_str(int(i)) for i in ids]

    # -- the route ------------------------------------------------------------------------------

    async def endpoint(self, request: Request) -> JSONResponse:
        peer = self.api.peer(request)
        try:
            self.api.authorize(request)
            deadline = self.api.deadline(request)
            data = await self.api.json_body(request)
        except RpcError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.http_status)
        ctx = CallContext(deadline, peer)
        status, body = await self.api.call(request, ctx, self.handle, data, ctx)
        return JSONResponse(body, status_code=status)

    def handle(self, data: Any, ctx: CallContext) -> tuple[int, dict]:
        try:
            return 200, self.process(data, ctx)
        except BadRequest as exc:
            return 400, {"error": str(exc)}
        except RpcError as exc:
            return exc.http_status, {"error": exc.message}

    def process(self, data: Any, ctx: CallContext) -> dict:
        if not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object with query_type and query or query_ids")
        query_type = data.get("query_type")
        if query_type not in QUERY_TYPES:
            raise BadRequest(f"invalid query_type {json.dumps(query_type)}: use one of {', '.join(QUERY_TYPES)}")
        if ("query" in data) == ("query_ids" in data):
            raise BadRequest("exactly one of query and query_ids must be present")
        ids = self._query_ids(data, ctx)
        cnf = not _is_ids(ids)
        t0 = time.perf_counter()
        result = getattr(self, "_" + query_type)(data, ids, cnf, ctx)
        result["latency"] = (time.perf_counter() - t0) * 1e3
        result["token_ids"] = ids
        result["tokens"] = [[self.token_strs(t) for t in c] for c in ids] if cnf else self.token_strs(ids)
        return result

    def _query_ids(self, data: dict, ctx: CallContext):
        if "query" in data:
            text = data["query"]
            if not isinstance(text, str):
                raise BadRequest("query must be a string (or send query_ids)")
            spaced = data.get("leading_space")
            if spaced is None:
                spaced = self.info(ctx).tokenizer_kind in _SPACED_KINDS
            elif not isinstance(spaced, bool):
                raise BadRequest("leading_space must be true or false")
            if " AND " in text or " OR " in text:
                return [[self.tokenize(term, spaced, ctx) for term in clause.split(" OR ")]
                        for clause in text.split(" AND ")]
            return self.tokenize(text, spaced, ctx)
        ids = data["query_ids"]
        if _is_ids(ids):
            return ids
        if isinstance(ids, list) and ids and all(isinstance(c, list) and c and all(_is_ids(t) for t in c) for c in ids):
            return ids
        raise BadRequest("query_ids must be a list of integers, or a non-empty triply nested list of integers (a CNF)")

    @staticmethod
    def _simple(ids, cnf: bool, query_type: str) -> list[int]:
        if cnf:
            raise BadRequest(f"{query_type} takes a simple query, not a CNF (no AND / OR)")
        return ids

    @staticmethod
    def _nonempty(ids, cnf: bool, query_type: str) -> list[int]:
        ids = InfinigramApi._simple(ids, cnf, query_type)
        if not ids:
            raise BadRequest("Please provide a non-empty query")
        return ids

    # -- query types ----------------------------------------------------------------------------

    def _count(self, data, ids, cnf, ctx) -> dict:
        if cnf:
            r = self._count_cnf(data, ids, ctx)
            return {"count": r.count, "approx": r.approx, "cnf_scope": "document"}
        return {"count": self.call("Count", pb.CountRequest(query=_query(ids)), ctx).count, "approx": False}

    def _count_cnf(self, data, ids, ctx) -> pb.CountCnfResponse:
        _int(data, "max_diff_tokens")  # validated as infini-gram does; the AND is document-wide here
        req = pb.CountCnfRequest(clauses=_clauses(ids))
        freq = _int(data, "max_clause_freq")
        if freq is not None:
            req.max_clause_freq = freq
        return self.call("CountCnf", req, ctx)

    def _find_cnf(self, data, ids, cnf, ctx) -> dict:
        r = self._count_cnf(data, ids if cnf else [[ids]], ctx)
        return {"cnt": r.count, "approx": r.approx, "cnf_scope": "document"}

    def _prob(self, data, ids, cnf, ctx) -> dict:
        ids = self._nonempty(ids, cnf, "prob")
        r = self.call("Prob", pb.ProbRequest(prompt=_query(ids[:-1]), cont_id=ids[-1]), ctx)
        return {"prompt_cnt": r.prompt_count, "cont_cnt": r.cont_count, "prob": r.prob}

    def _infgram_prob(self, data, ids, cnf, ctx) -> dict:
        ids = self._nonempty(ids, cnf, "infgram_prob")
        r = self.call("InfgramProb", pb.InfgramProbRequest(prompt=_query(ids[:-1]), cont_id=ids[-1]), ctx)
        prompt = ids[:-1]
        return {"prompt_cnt": r.prompt_count, "cont_cnt": r.cont_count, "prob": r.prob, "suffix_len": r.suffix_len,
                "longest_suffix": self.decode(prompt[len(prompt) - r.suffix_len:], ctx)}

    def _distribution(self, d: pb.TokenDistribution, ctx: CallContext) -> dict:
        total = d.prompt_count if not d.approx else sum(d.counts) + d.end_count
        entries = list(zip(d.token_ids, d.counts))
        eos = self.info(ctx).eos_token_id if self.info(ctx).HasField("eos_token_id") else None
        if d.end_count and eos is not None:  # infini-gram reports a document's end as its eos token
            entries.append((eos, d.end_count))
        names = self.token_strs([t for t, _ in entries])
        by_id = {str(t): {"cont_cnt": c, "prob": c / total if total else 0.0, "token": name}
                 for (t, c), name in zip(entries, names)}
        out = {"prompt_cnt": d.prompt_count, "result_by_token_id": by_id, "approx": d.approx, "exact": not d.approx}
        if d.end_count and eos is None:
            out["end_cnt"] = d.end_count
        return out

    def _ntd_request(self, cls, data, ids, cnf, what):
        req = cls(prompt=_query(self._simple(ids, cnf, what)))
        support = _int(data, "max_support")
        if support is not None:
            req.max_support = support
        return req

    def _ntd(self, data, ids, cnf, ctx) -> dict:
        req = self._ntd_request(pb.NextTokenDistributionRequest, data, ids, cnf, "ntd")
        return self._distribution(self.call("NextTokenDistribution", req, ctx).distribution, ctx)

    def _infgram_ntd(self, data, ids, cnf, ctx) -> dict:
        req = self._ntd_request(pb.InfgramNextTokenDistributionRequest, data, ids, cnf, "infgram_ntd")
        r = self.call("InfgramNextTokenDistribution", req, ctx)
        out = self._distribution(r.distribution, ctx)
        out["suffix_len"] = r.suffix_len
        out["longest_suffix"] = self.decode(ids[len(ids) - r.suffix_len:], ctx)
        return out

    def _find(self, data, ids, cnf, ctx) -> dict:
        r = self.call("Find", pb.FindRequest(query=_query(self._simple(ids, cnf, "find"))), ctx)
        return {"cnt": r.count, "segment_by_shard": [[s.start, s.end] for s in r.segments]}

    # -- documents --------------------------------------------------------------------------------

    def _document(self, doc: pb.Document, needles: list[list[list[int]]], ctx: CallContext) -> dict:
        """infini-gram's document fields, with ``spans``: [text, label] pieces of the window where
        label is the index of the clause whose n-gram the piece is (a simple query is clause 0)."""
        toks = list(doc.token_ids)
        labels: list[str | None] = [None] * len(toks)
        for c, clause in enumerate(needles):
            for needle in clause:
                for p in _occurrences(toks, needle):
                    if all(lab is None for lab in labels[p:p + len(needle)]):
                        labels[p:p + len(needle)] = [str(c)] * len(needle)
        spans, start = [], 0
        for i in range(1, len(toks) + 1):
            if i == len(toks) or labels[i] != labels[start]:
                spans.append([self.decode(toks[start:i], ctx), labels[start]])
                start = i
        return {"doc_ix": doc.doc_ix, "doc_len": doc.doc_len, "disp_len": doc.disp_len,
                "needle_offset": doc.needle_offset,
                "metadata": doc.metadata_json if doc.HasField("metadata_json") else "",
                "token_ids": toks, "blocked": False, "spans": spans}

    def _search_docs(self, data, ids, cnf, ctx) -> dict:
        maxnum = _int(data, "maxnum", DEFAULT_MAXNUM)
        disp = _int(data, "max_disp_len", DEFAULT_MAX_DISP_LEN)
        if cnf:
            _int(data, "max_diff_tokens")
            req = pb.SearchDocumentsCnfRequest(clauses=_clauses(ids), max_docs=maxnum, max_disp_len=disp)
            freq = _int(data, "max_clause_freq")
            if freq is not None:
                req.max_clause_freq = freq
            stream = self.call("SearchDocumentsCnf", req, ctx)
            needles = ids
        else:
            req = pb.SearchDocumentsRequest(query=_query(ids), max_docs=maxnum, max_disp_len=disp)
            stream = self.call("SearchDocuments", req, ctx)
            needles = [[ids]]
        summary, docs = stream[0].summary, [m.document for m in stream[1:]]
        out = {"cnt": summary.count, "approx": summary.approx, "idxs": list(range(len(docs))),
               "documents": [self._document(d, needles, ctx) for d in docs]}
        if cnf:
            out["cnf_scope"] = "document"
        out["message"] = (f"{'Approximately ' if summary.approx else ''}{summary.count} "
                          f"{'documents' if cnf else 'occurrences'} found" +
                          (f"; displaying the first {len(docs)}" if docs else ""))
        return out

    def _get_doc(self, data, ids, cnf, ctx, locator: dict) -> dict:
        req = pb.GetDocumentRequest(max_disp_len=_int(data, "max_disp_len", DEFAULT_MAX_DISP_LEN), **locator)
        doc = self.call("GetDocument", req, ctx).document
        return self._document(doc, ids if cnf else [[ids]], ctx)

    def _get_doc_by_rank(self, data, ids, cnf, ctx) -> dict:
        s, rank = _int(data, "s", minimum=0), _int(data, "rank", minimum=0)
        if s is None or rank is None:
            raise BadRequest("get_doc_by_rank needs s (the shard) and rank")
        return self._get_doc(data, ids, cnf, ctx, {"rank": pb.ShardRank(shard=s, rank=rank)})

    def _get_doc_by_ptr(self, data, ids, cnf, ctx) -> dict:
        s, ptr = _int(data, "s", minimum=0), _int(data, "ptr", minimum=0)
        if s is None or ptr is None:
            raise BadRequest("get_doc_by_ptr needs s (the shard) and ptr")
        return self._get_doc(data, ids, cnf, ctx, {"pointer": pb.ShardPointer(shard=s, ptr=ptr)})

    # -- attribution ------------------------------------------------------------------------------

    def _attribute(self, data, ids, cnf, ctx) -> dict:
        ids = self._nonempty(ids, cnf, "attribute")
        req = pb.AttributeRequest(text=_query(ids), min_len=_int(data, "min_len", 1),
                                  max_docs=_int(data, "maxnum", 1, minimum=0))
        max_cnt = _int(data, "max_cnt")
        if max_cnt is not None:
            req.max_count = max_cnt
        disp = _int(data, "max_disp_len")
        if disp is not None:
            req.max_disp_len = disp
        r = self.call("Attribute", req, ctx)
        # infini-gram's unigram_logprob_sum: sum of log(count(token) / total tokens) over the span.
        uni = self._unigram_logprobs(sorted({t for sp in r.spans for t in sp.token_ids}), ctx)
        return {"spans": [{
            "l": sp.start, "r": sp.end, "length": sp.end - sp.start, "count": sp.count,
            "unigram_logprob_sum": sum(uni[t] for t in sp.token_ids),
            "docs": [{"s": d.shard, "doc_ix": d.doc_ix, "needle_offset": d.needle_offset} for d in sp.documents],
        } for sp in r.spans]}

    def _unigram_logprobs(self, tokens: list[int], ctx: CallContext) -> dict[int, float]:
        if not tokens:
            return {}
        packed = pb.PackedTokenIds(token_ids=np.asarray(tokens, dtype="<i8").tobytes(),
                                   offsets=np.arange(len(tokens) + 1, dtype="<i8").tobytes())
        r = self.call("CountBatch", pb.CountBatchRequest(queries=pb.QueryBatch(packed=packed)), ctx)
        counts = np.frombuffer(r.counts, dtype="<i8")
        total = self.info(ctx).num_tokens
        # every token of an occurring span occurs: c >= 1
        return {t: math.log(max(int(c), 1) / max(total, 1)) for t, c in zip(tokens, counts)}

    # -- OpenAPI --------------------------------------------------------------------------------

    @staticmethod
    def openapi_path() -> dict:
        return {
            "get": {"summary": "the web explorer (HTML)", "responses": {"200": {"description": "the page"}}},
            "post": {
                "summary": "infini-gram's API (see engine/serve/http/infinigram.py for the differences)",
                "requestBody": {"content": {"application/json": {"schema": {
                    "type": "object", "required": ["query_type"],
                    "properties": {
                        "query_type": {"type": "string", "enum": list(QUERY_TYPES)},
                        "query": {"type": "string"},
                        "query_ids": {"type": "array"},
                        **{k: {"type": "integer"} for k in ("max_support", "max_clause_freq", "max_diff_tokens",
                                                            "maxnum", "max_disp_len", "s", "rank", "ptr",
                                                            "min_len", "max_cnt")},
                        "leading_space": {"type": "boolean"},
                        "index": {"type": "string"}, "corpus": {"type": "string"},
                    }}}}},
                "responses": {"200": {"description": "infini-gram's response fields"},
                              "4XX": {"description": '{"error": "..."}'}},
            },
        }
