"""The RPC table: every query of ngram.v1.NgramService declared once.

Each entry ties a QueryBackend method (engine.backend) to the RPC that carries it and says
- ``build``: the method's arguments -> the request message (NgramClient, and NgramRouter's
  Python API, which builds the same request its shard servers get);
- ``decode``: the response (a list of messages for a streaming RPC) and the request -> the
  method's result (NgramClient; the router decodes each shard's answer the same way);
- ``encode``: the result and the request -> the response, or an iterator of messages (the servicer);
- ``forward``: the NgramRouter method that fans a request out and merges the shard answers,
  or None where the router answers the method itself (documents by number, frequent n-grams,
  attribution: see engine.serve.router);
- ``checks``: what the servicer checks in a request it forwards as it came (limits, without
  tokenizing or decoding), and ``batch``: the argument a client splits to the server's
  max_batch_size.
The request fields are the proto's; the limits applied to them are the servicer's
(NgramServicer's handler of the same name parses and bounds them before calling the backend).

Adding a query: its backend method on NgramIndex (and QueryBackend), its messages in the
proto, one entry here, the servicer's handler, and the router's merge.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator

import numpy as np

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine.errors import InvalidQueryError, ShardUnavailableError
from engine.results import FindResult, InfgramProbResult, ProbBatchResult, ProbResult, SearchResult
from engine.serve.codec import (
    I8,
    F8,
    decode_dist,
    decode_document,
    decode_packed_dists,
    decode_prob_batch,
    encode_attribution,
    encode_count_cnf,
    encode_cnf,
    encode_dist,
    encode_document,
    encode_longest_matches,
    f8,
    fill_batch,
    fill_query,
    i8,
    int_arg,
    as_ids,
    le_array,
    pack_dists,
    search_cnf_messages,
    search_messages,
    summary_and_documents,
    to_json,
    wire_text,
)

SERVICE_NAME = "ngram.v1.NgramService"
SERVICE = pb.DESCRIPTOR.services_by_name["NgramService"]


@dataclasses.dataclass(frozen=True)
class Query:
    method: str  # the QueryBackend method
    rpc: str  # the RPC that carries it
    build: Callable[..., Any]
    decode: Callable[[Any, Any], Any]
    encode: Callable[[Any, Any], Any]
    forward: str | None = None
    checks: tuple[tuple, ...] = ()
    batch: str | None = None
    pick: Callable[[Any], Any] = lambda result: result  # the method's part of the RPC's result

    @property
    def stream(self) -> bool:
        return SERVICE.methods_by_name[self.rpc].server_streaming


# ------------------------------------------------------------------------------------------------
# Requests from the backend methods' arguments


def _set_opt(req, field: str, value, what: str | None = None):
    if value is not None:
        setattr(req, field, int_arg(value, what or field))
    return req


def _filled(cls, field: str, fill, value, **fields):
    """A ``cls`` request with ``fields`` set and its query (or batch) ``field`` filled from ``value``."""
    req = cls(**fields)
    fill(getattr(req, field), value, field)
    return req


def _on_query(cls, field: str = "query"):
    return lambda query: _filled(cls, field, fill_query, query)


def _on_prompt_cont(cls):
    def build(prompt, cont_id: int):
        return _filled(cls, "prompt", fill_query, prompt, cont_id=int_arg(cont_id, "cont_id"))
    return build


def _on_prompts_conts(cls):
    def build(prompts, cont_ids):
        cont = np.ascontiguousarray(as_ids(cont_ids, "cont_ids"), dtype=I8).tobytes()
        return _filled(cls, "prompts", fill_batch, prompts, cont_ids=cont)
    return build


def _on_prompt_support(cls):
    def build(prompt, max_support: int | None = None):
        return _set_opt(_filled(cls, "prompt", fill_query, prompt), "max_support", max_support)
    return build


def _on_prompts_support(cls):
    def build(prompts, max_support: int | None = None):
        return _set_opt(_filled(cls, "prompts", fill_batch, prompts), "max_support", max_support)
    return build


def _tokenize_request(text: str):
    if not isinstance(text, str):
        raise InvalidQueryError(f"text must be a str, not {type(text).__name__}")
    try:
        return pb.TokenizeRequest(text=text)
    except UnicodeEncodeError:  # lone surrogates, which proto strings refuse
        return pb.TokenizeRequest(text=wire_text(text))


def _count_batch_request(queries):
    return _filled(pb.CountBatchRequest, "queries", fill_batch, queries)


def _search_request(query, max_docs: int = 10, max_disp_len: int = 1000):
    req = pb.SearchDocumentsRequest(max_docs=int_arg(max_docs, "max_docs"),
                                    max_disp_len=int_arg(max_disp_len, "max_disp_len"))
    fill_query(req.query, query)
    return req


def _doc_by_ix_request(doc_ix: int, max_disp_len: int = 1000):
    return pb.GetDocumentRequest(doc_ix=int_arg(doc_ix, "doc_ix"), max_disp_len=int_arg(max_disp_len, "max_disp_len"))


def _doc_by_rank_request(shard: int, rank: int, max_disp_len: int = 1000):
    return pb.GetDocumentRequest(rank=pb.ShardRank(shard=int_arg(shard, "shard"), rank=int_arg(rank, "rank")),
                                 max_disp_len=int_arg(max_disp_len, "max_disp_len"))


def _doc_by_ptr_request(shard: int, ptr: int, max_disp_len: int = 1000):
    return pb.GetDocumentRequest(pointer=pb.ShardPointer(shard=int_arg(shard, "shard"), ptr=int_arg(ptr, "ptr")),
                                 max_disp_len=int_arg(max_disp_len, "max_disp_len"))


def _frequent_ngrams_request(n_min: int = 1, n_max: int | None = None, *, min_count: int | None = None,
                             top_k: int | None = None, chunk_rows: int | None = None):
    req = pb.FrequentNgramsRequest(n_min=int_arg(n_min, "n_min"), n_max=int_arg(n_min if n_max is None else n_max, "n_max"))
    _set_opt(req, "min_count", min_count)
    _set_opt(req, "top_k", top_k)
    return _set_opt(req, "chunk_rows", chunk_rows)


def _longest_matches_request(text, max_len: int | None = None, infgram: bool = False):
    req = _set_opt(pb.LongestMatchesRequest(infgram=bool(infgram)), "max_len", max_len)
    fill_query(req.text, text, "text")
    return req


def _infgram_probs_request(text, max_len: int | None = None):
    return _longest_matches_request(text, max_len, True)


def _attribute_request(text, min_len: int = 8, max_count: int | None = None, *, max_docs: int = 3,
                       max_disp_len: int = 100, creativity_n: int | None = None):
    req = pb.AttributeRequest(min_len=int_arg(min_len, "min_len"), max_docs=int_arg(max_docs, "max_docs"),
                              max_disp_len=int_arg(max_disp_len, "max_disp_len"))
    fill_query(req.text, text, "text")
    _set_opt(req, "max_count", max_count)
    return _set_opt(req, "creativity_n", creativity_n)


def _count_cnf_request(cnf, max_clause_freq: int | None = None):
    return _set_opt(pb.CountCnfRequest(clauses=encode_cnf(cnf)), "max_clause_freq", max_clause_freq)


def _search_cnf_request(cnf, max_docs: int = 10, max_clause_freq: int | None = None, max_disp_len: int = 1000):
    req = pb.SearchDocumentsCnfRequest(clauses=encode_cnf(cnf), max_docs=int_arg(max_docs, "max_docs"),
                                       max_disp_len=int_arg(max_disp_len, "max_disp_len"))
    return _set_opt(req, "max_clause_freq", max_clause_freq)


# ------------------------------------------------------------------------------------------------
# Results from responses (a list of messages for a stream)


def _decode_search(msgs: list, req) -> SearchResult:
    summary, docs = summary_and_documents(msgs, "the SearchDocuments stream")
    return SearchResult(count=int(summary.count), documents=docs, approx=bool(summary.approx))


def _decode_frequent_ngrams(msgs: list, req):
    from engine.storage.ngram_table import NgramTable

    summary, tokens, offsets, counts, base = None, [], [np.zeros(1, dtype=np.int64)], [], 0
    for msg in msgs:
        if msg.WhichOneof("item") == "summary":
            summary = msg.summary
            continue
        t, o, c = le_array(msg.rows.token_ids), le_array(msg.rows.offsets), le_array(msg.rows.counts)
        tokens.append(t)
        offsets.append(o[1:] + base)
        counts.append(c)
        base += len(t)
    if summary is None:
        raise ShardUnavailableError("the FrequentNgrams stream ended without its summary message")
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return NgramTable(cat(tokens).astype(np.uint32), cat(offsets), cat(counts), json.loads(summary.meta_json))


def _decode_matches(r, req):
    from engine.match import LongestMatches

    probs = None
    if not req.HasField("infgram") or req.infgram:
        probs = ProbBatchResult(le_array(r.prompt_counts), le_array(r.cont_counts), le_array(r.probs, F8),
                                le_array(r.suffix_lens))
    return LongestMatches(le_array(r.token_ids), le_array(r.lengths), le_array(r.counts), probs)


def _decode_attribution(r, req):
    from engine.match import AttributedSpan, Attribution, LongestMatches

    spans = [AttributedSpan(int(sp.start), int(sp.end), int(sp.count), np.asarray(sp.token_ids, dtype=np.int64),
                            [decode_document(d) for d in sp.documents]) for sp in r.spans]
    tokens = le_array(r.token_ids)
    return Attribution(len(tokens), spans, float(r.creativity), int(r.creativity_n), int(req.min_len),
                       int(req.max_count) if req.HasField("max_count") else None,
                       LongestMatches(tokens, le_array(r.lengths), le_array(r.counts)))


def _decode_count_cnf(r, req):
    from engine.cnf import CnfResult

    return CnfResult(int(r.count), bool(r.approx), tuple(int(c) for c in r.clause_counts),
                     tuple(int(c) for c in r.scanned_clauses), np.zeros(0, dtype=np.int64))


def _decode_search_cnf(msgs: list, req):
    from engine.cnf import CnfResult

    summary, docs = summary_and_documents(msgs, "the SearchDocumentsCnf stream")
    return CnfResult(int(summary.count), bool(summary.approx), tuple(int(c) for c in summary.clause_counts),
                     tuple(int(c) for c in summary.scanned_clauses),
                     np.array([d.doc_ix for d in docs], dtype=np.int64), docs)


# ------------------------------------------------------------------------------------------------
# Responses from results


def _encode_frequent_ngrams(table, chunk: int) -> Iterator[pb.FrequentNgramsResponse]:
    yield pb.FrequentNgramsResponse(summary=pb.FrequentNgramsSummary(
        num_rows=len(table), threshold=int(table.meta.get("threshold", 0)), meta_json=to_json(table.meta)))
    for a in range(0, len(table), chunk):
        b = min(len(table), a + chunk)
        lo, hi = int(table.offsets[a]), int(table.offsets[b])
        yield pb.FrequentNgramsResponse(rows=pb.NgramRows(
            token_ids=i8(table.tokens[lo:hi]), offsets=i8(np.asarray(table.offsets[a:b + 1]) - lo),
            counts=i8(table.counts[a:b])))


def _prob_batch_response(cls, infgram: bool):
    def encode(r, req):
        msg = cls(prompt_counts=i8(r.prompt_counts), cont_counts=i8(r.cont_counts), probs=f8(r.probs))
        if infgram:
            msg.suffix_lens = i8(r.suffix_lens)
        return msg
    return encode


def _packed_dists_response(cls, infgram: bool):
    def encode(dists, req):  # the servicer packs big batches chunk by chunk; a merge gives a list
        return cls(distributions=dists if isinstance(dists, pb.PackedTokenDistributions) else pack_dists(dists, infgram))
    return encode


_Q, _B = ("query",), ("batch",)  # checks: a Query field / a QueryBatch field, by name below

QUERIES: tuple[Query, ...] = (
    Query("tokenize", "Tokenize", _tokenize_request,
          lambda r, req: np.array(r.token_ids, dtype=np.int64),
          lambda ids, req: pb.TokenizeResponse(token_ids=np.asarray(ids, dtype=np.int64).tolist())),
    Query("detokenize", "Detokenize", lambda ids: pb.DetokenizeRequest(token_ids=as_ids(ids, "ids").tolist()),
          lambda r, req: r.text, lambda text, req: pb.DetokenizeResponse(text=text)),
    Query("count", "Count", _on_query(pb.CountRequest),
          lambda r, req: int(r.count), lambda n, req: pb.CountResponse(count=int(n)),
          forward="count_request", checks=(_Q + ("query",),)),
    Query("count_batch", "CountBatch", _count_batch_request,
          lambda r, req: le_array(r.counts), lambda counts, req: pb.CountBatchResponse(counts=i8(counts)),
          forward="count_batch_request", checks=(_B + ("queries",),), batch="queries"),
    Query("find", "Find", _on_query(pb.FindRequest),
          lambda r, req: FindResult(count=int(r.count), segments=tuple((int(s.start), int(s.end)) for s in r.segments)),
          lambda f, req: pb.FindResponse(count=int(f.count), segments=[
              pb.SuffixArraySegment(start=int(s), end=int(e)) for s, e in f.segments]),
          forward="find_request", checks=(_Q + ("query",),)),
    Query("prob", "Prob", _on_prompt_cont(pb.ProbRequest),
          lambda r, req: ProbResult(prompt_count=int(r.prompt_count), cont_count=int(r.cont_count), prob=float(r.prob)),
          lambda p, req: pb.ProbResponse(prompt_count=int(p.prompt_count), cont_count=int(p.cont_count),
                                         prob=float(p.prob)),
          forward="prob_request", checks=(_Q + ("prompt",), ("cont_id",))),
    Query("prob_batch", "ProbBatch", _on_prompts_conts(pb.ProbBatchRequest),
          lambda r, req: decode_prob_batch(r, False), _prob_batch_response(pb.ProbBatchResponse, False),
          forward="prob_batch_request", checks=(("cont_ids", "prompts"),), batch="prompts"),
    Query("ntd", "NextTokenDistribution", _on_prompt_support(pb.NextTokenDistributionRequest),
          lambda r, req: decode_dist(r.distribution),
          lambda d, req: pb.NextTokenDistributionResponse(distribution=encode_dist(d)),
          forward="ntd_request", checks=(_Q + ("prompt",), ("max_support",))),
    Query("ntd_batch", "NextTokenDistributionBatch", _on_prompts_support(pb.NextTokenDistributionBatchRequest),
          lambda r, req: decode_packed_dists(r.distributions, False),
          _packed_dists_response(pb.NextTokenDistributionBatchResponse, False),
          forward="ntd_batch_request", checks=(_B + ("prompts",), ("max_support",)), batch="prompts"),
    Query("infgram_prob", "InfgramProb", _on_prompt_cont(pb.InfgramProbRequest),
          lambda r, req: InfgramProbResult(prompt_count=int(r.prompt_count), cont_count=int(r.cont_count),
                                           prob=float(r.prob), suffix_len=int(r.suffix_len)),
          lambda p, req: pb.InfgramProbResponse(prompt_count=int(p.prompt_count), cont_count=int(p.cont_count),
                                                prob=float(p.prob), suffix_len=int(p.suffix_len)),
          forward="infgram_prob_request", checks=(_Q + ("prompt",), ("cont_id",))),
    Query("infgram_prob_batch", "InfgramProbBatch", _on_prompts_conts(pb.InfgramProbBatchRequest),
          lambda r, req: decode_prob_batch(r, True), _prob_batch_response(pb.InfgramProbBatchResponse, True),
          forward="infgram_prob_batch_request", checks=(("cont_ids", "prompts"),), batch="prompts"),
    Query("infgram_ntd", "InfgramNextTokenDistribution", _on_prompt_support(pb.InfgramNextTokenDistributionRequest),
          lambda r, req: decode_dist(r.distribution, suffix_len=r.suffix_len),
          lambda d, req: pb.InfgramNextTokenDistributionResponse(distribution=encode_dist(d),
                                                                 suffix_len=int(d.suffix_len)),
          forward="infgram_ntd_request", checks=(_Q + ("prompt",), ("max_support",))),
    Query("infgram_ntd_batch", "InfgramNextTokenDistributionBatch",
          _on_prompts_support(pb.InfgramNextTokenDistributionBatchRequest),
          lambda r, req: decode_packed_dists(r.distributions, True),
          _packed_dists_response(pb.InfgramNextTokenDistributionBatchResponse, True),
          forward="infgram_ntd_batch_request", checks=(_B + ("prompts",), ("max_support",)), batch="prompts"),
    Query("search_docs", "SearchDocuments", _search_request, _decode_search, lambda r, req: search_messages(r),
          forward="search_docs_request", checks=(_Q + ("query",), ("max_docs", 10), ("max_disp_len",))),
    Query("get_doc_by_ix", "GetDocument", _doc_by_ix_request, lambda r, req: decode_document(r.document),
          lambda doc, req: pb.GetDocumentResponse(document=encode_document(doc))),
    Query("get_doc_by_rank", "GetDocument", _doc_by_rank_request, lambda r, req: decode_document(r.document),
          lambda doc, req: pb.GetDocumentResponse(document=encode_document(doc))),
    Query("get_doc_by_ptr", "GetDocument", _doc_by_ptr_request, lambda r, req: decode_document(r.document),
          lambda doc, req: pb.GetDocumentResponse(document=encode_document(doc))),
    Query("frequent_ngrams", "FrequentNgrams", _frequent_ngrams_request, _decode_frequent_ngrams,
          lambda table, req: _encode_frequent_ngrams(table, int(req.chunk_rows) or 65536)),
    Query("longest_matches", "LongestMatches", _longest_matches_request, _decode_matches,
          lambda m, req: encode_longest_matches(m), forward="longest_matches_request", checks=(_Q + ("text",),)),
    Query("infgram_probs", "LongestMatches", _infgram_probs_request, _decode_matches,
          lambda m, req: encode_longest_matches(m), forward="longest_matches_request", checks=(_Q + ("text",),),
          pick=lambda m: m.infgram),
    Query("attribute", "Attribute", _attribute_request, _decode_attribution,
          lambda a, req: encode_attribution(a)),
    Query("count_cnf", "CountCnf", _count_cnf_request, _decode_count_cnf, lambda r, req: encode_count_cnf(r),
          forward="count_cnf_request", checks=(("cnf",),)),
    Query("search_docs_cnf", "SearchDocumentsCnf", _search_cnf_request, _decode_search_cnf,
          lambda r, req: search_cnf_messages(r),
          forward="search_docs_cnf_request", checks=(("cnf",), ("max_docs", 10), ("max_disp_len",))),
)

BY_METHOD: dict[str, Query] = {q.method: q for q in QUERIES}
# The RPC each servicer handler answers; GetIndexInfo is the one RPC that is no query (index facts).
RPC_NAMES: tuple[str, ...] = tuple(m.name for m in SERVICE.methods)


def queries_of(rpc: str) -> list[Query]:
    return [q for q in QUERIES if q.rpc == rpc]
