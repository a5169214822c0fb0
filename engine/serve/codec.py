"""The wire encoding of queries and results: one function per message shape, shared by the client,
the servicer, the router and the HTTP API (engine.serve.rpcs says which RPC uses which).

Packed arrays travel as little-endian int64 / float64 bytes; requests are filled in place
(a request's own sub-message is about 3x faster to fill than to copy in).
"""

from __future__ import annotations

import json
from typing import Iterator

import numpy as np

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine.errors import InvalidQueryError, ShardUnavailableError
from engine.results import (
    Document,
    InfgramNtdResult,
    NextTokenDistribution,
    PackedQueries,
    ProbBatchResult,
)

I8 = np.dtype("<i8")
F8 = np.dtype("<f8")


# ------------------------------------------------------------------------------------------------
# Requests: Python arguments to messages (client and router)


def as_ids(query, what: str = "query") -> np.ndarray:
    """A token-id query as a 1-D int64 array (InvalidQueryError when it is not one)."""
    if isinstance(query, (bytes, bytearray, memoryview)):
        raise InvalidQueryError(f"{what} must be token ids (ints) or text (str), not {type(query).__name__}")
    arr = np.asarray(query)
    if arr.ndim != 1:
        raise InvalidQueryError(f"{what} must be a 1-D sequence of token ids, got an array of shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise InvalidQueryError(f"{what} must hold integer token ids, got dtype {arr.dtype}")
    if isinstance(query, (list, tuple)) and any(isinstance(t, (bool, np.bool_)) for t in query):
        raise InvalidQueryError(f"{what} holds a bool; pass int token ids")  # numpy made it 0 / 1
    if arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidQueryError(f"{what} holds a token id above 2**63-1")
    return arr.astype(np.int64, copy=False)


def fill_query(msg: pb.Query, query, what: str = "query") -> pb.Query:
    """Set a Query message in place (text, or token ids) and return it.

    Filling the request's own sub-message is about 3x faster than building a Query and copying it
    into the request (protobuf copies sub-messages passed to a constructor), which is a visible
    part of a unary call's client-side cost.
    """
    if isinstance(query, str):
        try:
            msg.text = query
        except UnicodeEncodeError:  # lone surrogates, which proto strings refuse
            msg.text = wire_text(query)
        return msg
    if type(query) is np.ndarray and query.dtype == np.int64 and query.ndim == 1:
        ids = msg.token_ids  # fast path: already int64 ids
        ids.SetInParent()  # an empty query is still a token-id query
        ids.ids.extend(query.tolist())
        return msg
    if type(query) is list:  # fast path: protobuf checks the ints itself
        try:
            ids = msg.token_ids
            ids.SetInParent()
            ids.ids.extend(query)
            return msg
        except (TypeError, ValueError):
            msg.Clear()  # as_ids below says what is wrong
    ids = as_ids(query, what).tolist()
    msg.token_ids.SetInParent()  # an empty query is still a token-id query
    msg.token_ids.ids.extend(ids)
    return msg


def wire_text(text: str) -> str:
    """``text`` with lone surrogates replaced as the index's tokenizers replace them in process
    (U+FFFD), so that over gRPC (whose strings must be valid UTF-8) the answer is the same."""
    from engine.tokenizers import clean_text

    return clean_text(text)


def encode_query(query, what: str = "query") -> pb.Query:
    return fill_query(pb.Query(), query, what)


def pack_queries(queries, what: str = "queries") -> PackedQueries:
    """Token-id queries (PackedQueries, 2-D int array or list of sequences) as PackedQueries."""
    if isinstance(queries, PackedQueries):
        return queries
    if isinstance(queries, np.ndarray) and queries.ndim == 2:
        n, w = queries.shape
        if queries.size and (queries.dtype.kind not in "iu" or queries.dtype == np.bool_):
            raise InvalidQueryError(f"{what} must hold integer token ids, got dtype {queries.dtype}")
        return PackedQueries(queries.astype(np.int64).reshape(-1), np.arange(n + 1, dtype=np.int64) * w)
    if isinstance(queries, (str, bytes)):
        raise InvalidQueryError(f"{what} must be a list of queries, not a single {type(queries).__name__}")
    return PackedQueries.from_list([as_ids(q, f"{what}[{i}]") for i, q in enumerate(queries)])


def encode_packed(pq: PackedQueries) -> pb.QueryBatch:
    return pb.QueryBatch(
        packed=pb.PackedTokenIds(
            token_ids=np.ascontiguousarray(pq.tokens, dtype=I8).tobytes(),
            offsets=np.ascontiguousarray(pq.offsets, dtype=I8).tobytes(),
        )
    )


def fill_batch(msg: pb.QueryBatch, queries, what: str = "queries") -> pb.QueryBatch:
    """Set a QueryBatch in place: a list of texts travels as texts (the server tokenizes them),
    anything else as packed token ids."""
    if isinstance(queries, (list, tuple)) and queries and all(isinstance(q, str) for q in queries):
        try:
            msg.texts.texts.extend(queries)
        except UnicodeEncodeError:
            msg.ClearField("texts")
            msg.texts.texts.extend(wire_text(q) for q in queries)
        return msg
    msg.CopyFrom(encode_packed(pack_queries(queries, what)))
    return msg


def tokenize_mixed(queries, tokenize):
    """A batch that mixes texts and token ids, with its texts tokenized (a batch travels either as
    texts or as ids); any other batch as it is."""
    if isinstance(queries, (list, tuple)) and any(isinstance(q, str) for q in queries) and \
            not all(isinstance(q, str) for q in queries):
        return [tokenize(q) if isinstance(q, str) else q for q in queries]
    return queries


def concat_results(parts: list):
    """The answers of a batch sent in pieces, as one: arrays and lists concatenate, and so does
    each array of a ProbBatchResult."""
    first = parts[0]
    if isinstance(first, ProbBatchResult):
        cat = lambda name: None if getattr(first, name) is None else np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        return ProbBatchResult(cat("prompt_counts"), cat("cont_counts"), cat("probs"), cat("suffix_lens"))
    if isinstance(first, list):
        return [x for p in parts for x in p]
    return np.concatenate(parts)


def encode_cnf(cnf) -> list:
    """A CNF query (list of clauses, each a list of n-grams as ids or text; a str stands for a
    one-term clause or a one-clause query) as CnfClause messages."""
    if isinstance(cnf, str):
        cnf = [[cnf]]
    if not isinstance(cnf, (list, tuple)) or not cnf:
        raise InvalidQueryError("cnf must be a non-empty list of clauses, each a list of n-grams (ids or text)")
    clauses = []
    for i, clause in enumerate(cnf):
        if isinstance(clause, str):
            clause = [clause]
        if not isinstance(clause, (list, tuple)) or not clause:
            raise InvalidQueryError(f"clause {i} must be a non-empty list of n-grams (each a list of ids or text)")
        if all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in clause):
            raise InvalidQueryError(f"clause {i} is a flat list of ids; wrap it: a clause is a list of n-grams")
        clauses.append(pb.CnfClause(terms=[encode_query(t, f"cnf[{i}][{k}]") for k, t in enumerate(clause)]))
    return clauses


def int_arg(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InvalidQueryError(f"{what} must be an int, got {type(value).__name__}")
    v = int(value)
    if not -(1 << 63) <= v < (1 << 63):
        raise InvalidQueryError(f"{what}={v} does not fit in int64")
    return v


# ------------------------------------------------------------------------------------------------
# Results: messages to Python (client and router)


def le_array(data: bytes, dtype=I8) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)


def decode_dist(d: pb.TokenDistribution, suffix_len: int | None = None) -> NextTokenDistribution:
    common = dict(
        prompt_count=int(d.prompt_count),
        tokens=np.array(d.token_ids, dtype=np.int64),
        counts=np.array(d.counts, dtype=np.int64),
        end_count=int(d.end_count),
        approx=bool(d.approx),
    )
    if suffix_len is None:
        return NextTokenDistribution(**common)
    return InfgramNtdResult(**common, suffix_len=int(suffix_len))


def decode_packed_dists(p: pb.PackedTokenDistributions, infgram: bool) -> list:
    prompt_counts = le_array(p.prompt_counts)
    end_counts = le_array(p.end_counts)
    approx = np.frombuffer(p.approx, dtype=np.uint8)
    offsets = le_array(p.offsets)
    tokens = le_array(p.token_ids)
    counts = le_array(p.counts)
    suffix = le_array(p.suffix_lens) if infgram else None
    out = []
    for i in range(len(prompt_counts)):
        lo, hi = offsets[i], offsets[i + 1]
        common = dict(
            prompt_count=int(prompt_counts[i]),
            tokens=tokens[lo:hi],
            counts=counts[lo:hi],
            end_count=int(end_counts[i]),
            approx=bool(approx[i]),
        )
        out.append(InfgramNtdResult(**common, suffix_len=int(suffix[i])) if infgram else NextTokenDistribution(**common))
    return out


def decode_document(d: pb.Document) -> Document:
    return Document(
        doc_ix=int(d.doc_ix),
        doc_len=int(d.doc_len),
        disp_len=int(d.disp_len),
        needle_offset=int(d.needle_offset),
        token_ids=np.array(d.token_ids, dtype=np.int64),
        metadata=json.loads(d.metadata_json) if d.HasField("metadata_json") else None,
        shard=int(d.shard),
    )


def decode_prob_batch(r, infgram: bool) -> ProbBatchResult:
    return ProbBatchResult(
        prompt_counts=le_array(r.prompt_counts),
        cont_counts=le_array(r.cont_counts),
        probs=le_array(r.probs, F8),
        suffix_lens=le_array(r.suffix_lens) if infgram else None,
    )


def summary_and_documents(msgs: list, stream: str):
    """(summary, documents) of a finished SearchDocuments / SearchDocumentsCnf stream; a stream without
    its summary message is a ShardUnavailableError naming ``stream``."""
    summary = next((m.summary for m in msgs if m.WhichOneof("item") == "summary"), None)
    if summary is None:
        raise ShardUnavailableError(f"{stream} ended without its summary message")
    return summary, [decode_document(m.document) for m in msgs if m.WhichOneof("item") == "document"]



# ------------------------------------------------------------------------------------------------
# Requests and results: Python to messages (servicer)


def checked_le_array(data: bytes, dtype: np.dtype, field: str) -> np.ndarray:
    if len(data) % dtype.itemsize:
        raise InvalidQueryError(
            f"{field} holds {len(data)} bytes, not a multiple of {dtype.itemsize}: it must be "
            f"packed little-endian {dtype.name} values"
        )
    # A writable copy: numba compiles separate specializations for read-only arrays, and the
    # warmed-up kernels are the writable ones. The copy costs microseconds per batch.
    return np.frombuffer(data, dtype=dtype).copy()


def i8(a) -> bytes:
    return np.ascontiguousarray(a, dtype=I8).tobytes()


def f8(a) -> bytes:
    return np.ascontiguousarray(a, dtype=F8).tobytes()


def to_json(obj) -> str:
    def default(o):
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)

    return json.dumps(obj, default=default, sort_keys=True)


def encode_dist(d: NextTokenDistribution) -> pb.TokenDistribution:
    return pb.TokenDistribution(
        prompt_count=int(d.prompt_count),
        token_ids=np.asarray(d.tokens, dtype=np.int64).tolist(),
        counts=np.asarray(d.counts, dtype=np.int64).tolist(),
        end_count=int(d.end_count),
        approx=bool(d.approx),
    )


class DistPacker:
    """Distributions packed as they come, chunk by chunk: each chunk's result objects become a few
    arrays at once, so a big batch never holds all of them."""

    def __init__(self, with_suffix: bool):
        self.with_suffix = with_suffix
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in ("lens", "tokens", "counts", "prompt", "end",
                                                                    "approx", "suffix")}

    def add(self, dists: list) -> None:
        if not dists:
            return
        p = self.parts
        p["lens"].append(np.fromiter((len(d.tokens) for d in dists), dtype=np.int64, count=len(dists)))
        p["tokens"].append(np.concatenate([np.asarray(d.tokens, dtype=np.int64) for d in dists]))
        p["counts"].append(np.concatenate([np.asarray(d.counts, dtype=np.int64) for d in dists]))
        p["prompt"].append(np.fromiter((d.prompt_count for d in dists), dtype=np.int64, count=len(dists)))
        p["end"].append(np.fromiter((d.end_count for d in dists), dtype=np.int64, count=len(dists)))
        p["approx"].append(np.fromiter((bool(d.approx) for d in dists), dtype=np.uint8, count=len(dists)))
        if self.with_suffix:
            p["suffix"].append(np.fromiter((d.suffix_len for d in dists), dtype=np.int64, count=len(dists)))

    def message(self) -> pb.PackedTokenDistributions:
        def cat(name, dtype=np.int64):
            parts = self.parts.pop(name)
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        lens = cat("lens")
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        msg = pb.PackedTokenDistributions(
            prompt_counts=i8(cat("prompt")), end_counts=i8(cat("end")), approx=cat("approx", np.uint8).tobytes(),
            offsets=i8(offsets), token_ids=i8(cat("tokens")), counts=i8(cat("counts")))
        if self.with_suffix:
            msg.suffix_lens = i8(cat("suffix"))
        return msg


def pack_dists(dists: list, with_suffix: bool) -> pb.PackedTokenDistributions:
    packer = DistPacker(with_suffix)
    packer.add(list(dists))
    return packer.message()


def encode_document(doc: Document) -> pb.Document:
    msg = pb.Document(
        doc_ix=int(doc.doc_ix),
        doc_len=int(doc.doc_len),
        disp_len=int(doc.disp_len),
        needle_offset=int(doc.needle_offset),
        token_ids=np.asarray(doc.token_ids, dtype=np.int64).tolist(),
        shard=int(doc.shard),
    )
    if doc.metadata is not None:
        msg.metadata_json = json.dumps(doc.metadata, ensure_ascii=False)
    return msg


def search_messages(r) -> Iterator[pb.SearchDocumentsResponse]:
    yield pb.SearchDocumentsResponse(
        summary=pb.SearchSummary(count=int(r.count), num_documents=len(r.documents), approx=bool(r.approx)))
    for doc in r.documents:
        yield pb.SearchDocumentsResponse(document=encode_document(doc))


def encode_longest_matches(m) -> pb.LongestMatchesResponse:
    msg = pb.LongestMatchesResponse(token_ids=i8(m.tokens), lengths=i8(m.lengths), counts=i8(m.counts))
    p = m.infgram
    if p is not None:
        msg.prompt_counts, msg.cont_counts, msg.probs = i8(p.prompt_counts), i8(p.cont_counts), f8(p.probs)
        msg.suffix_lens = i8(p.suffix_lens)
    return msg


def encode_attribution(a) -> pb.AttributeResponse:
    return pb.AttributeResponse(
        token_ids=i8(a.matches.tokens), creativity=float(a.creativity), creativity_n=int(a.creativity_n),
        lengths=i8(a.matches.lengths), counts=i8(a.matches.counts),
        spans=[pb.AttributedSpan(start=sp.start, end=sp.end, count=sp.count,
                                 token_ids=np.asarray(sp.token_ids, dtype=np.int64).tolist(),
                                 documents=[encode_document(d) for d in sp.documents]) for sp in a.spans])


def encode_count_cnf(r) -> pb.CountCnfResponse:
    return pb.CountCnfResponse(count=int(r.count), approx=bool(r.approx), clause_counts=list(r.clause_counts),
                               scanned_clauses=list(r.scanned_clauses))


def search_cnf_messages(r) -> Iterator[pb.SearchDocumentsCnfResponse]:
    yield pb.SearchDocumentsCnfResponse(summary=pb.SearchDocumentsCnfSummary(
        count=int(r.count), approx=bool(r.approx), clause_counts=list(r.clause_counts),
        scanned_clauses=list(r.scanned_clauses), num_documents=len(r.documents)))
    for doc in r.documents:
        yield pb.SearchDocumentsCnfResponse(document=encode_document(doc))


def slice_packed(pq: PackedQueries, start: int, stop: int) -> PackedQueries:
    lo, hi = int(pq.offsets[start]), int(pq.offsets[stop])
    return PackedQueries(pq.tokens[lo:hi], pq.offsets[start : stop + 1] - lo)
