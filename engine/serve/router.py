"""NgramRouter: one index made of many shard servers, merged exactly.

A router holds no index. It implements the NgramIndex query API by fanning each query out to
the shard servers of a shard map (in parallel) and merging the answers:

- counts add; Find concatenates the per-shard suffix-array segments in map order;
- Prob / NextTokenDistribution add prompt, continuation and per-token counts (a distribution
  capped by max_support is approximate: the shards' estimates add, see merge_dists);
- the infinity-gram backs off over the union: the suffix used is the longest suffix of the
  prompt with a nonzero count summed over all shards (the maximum of the shards' own suffix
  lengths); shards whose own suffix was shorter hold no occurrence of it and add nothing;
- documents: global document indexes and shard numbers are offset by the documents and shards
  of the servers earlier in the map, so results equal one NgramIndex opened on all shards;
- longest matches (and the ∞-gram probability of every position) merge like the ∞-gram: per
  position the longest match over the union is the longest of the shards' own, and its count is
  the sum over the shards that reached that length; attribution recomputes the maximal spans,
  counts and creativity from the merged matches and fetches each span's documents in global
  suffix-array order;
- frequent n-grams: exact, by a threshold algorithm (see ``frequent_ngrams``): an n-gram whose
  total count reaches T occurs at least ceil(T / servers) times on some server, so the union of
  the servers' lists above that threshold holds every answer, and the counts the lists lack are
  filled in by CountBatch;
- AND/OR (CNF) search: a document lives on one server, so matching documents and their count
  add; clause counts add, and which clauses one index would have scanned follows from the summed
  clause counts. When every clause is over max_clause_freq, one index answers from a sample that
  cannot be reproduced across servers: the router answers UNIMPLEMENTED and says which
  max_clause_freq gives the exact answer (docs/multi-host.md).

When a shard server cannot be reached the query fails with ShardUnavailableError naming the
shard (UNAVAILABLE over gRPC), never a silently smaller count. A background thread checks every
shard's health; ``health_status()`` is False while one is down (the server then reports
NOT_SERVING). The servicer's deadline (engine.serve.servicer.time_left) is forwarded to the shards.

Served over gRPC (``create_server(router)``), the servicer checks each request against the
router's limits and hands it to the router's merge method for its RPC (engine.serve.rpcs names
it), which forwards it to the shard servers as it came: text is tokenized once, on the shard
servers, in the same round trip, and nothing is decoded and re-encoded on the way.

The shard map's format is in engine/serve/shard_map.py.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import os
import threading
import time
from typing import Any, Callable, Sequence

import grpc
import numpy as np

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine.errors import (
    IndexFormatError,
    InvalidQueryError,
    LimitExceededError,
    NgramError,
    ShardUnavailableError,
    TokenizerMismatchError,
    DeadlineExceededError,
    NotSupportedError,
)
from engine.ngrams import check_n, positive_int
from engine.results import (Document, FindResult, InfgramNtdResult, InfgramProbResult, NextTokenDistribution,
                            ProbBatchResult, ProbResult, SearchResult)
from engine.serve.client import NgramClient, RemoteTokenizer
from engine.serve.status import error_from_rpc
from engine.serve.codec import (
    I8,
    as_ids,
    decode_dist,
    decode_document,
    decode_packed_dists,
    decode_prob_batch,
    fill_query,
    int_arg,
    le_array,
    summary_and_documents,
    tokenize_mixed,
)
from engine.serve.fanout import Fanout
from engine.serve.merge import (first_occurrence, local_anchor, merge_dists, packed_rows, padded_rows, probs,
                                take_documents, union_backoff, union_rows)
from engine.serve.rpcs import QUERIES, Query
from engine.serve.shard_map import ShardSpec, load_shard_map
from engine.serve.servicer import time_left

__all__ = ["NgramRouter"]

log = logging.getLogger("engine.serve.router")
_F8 = np.dtype("<f8")
DEFAULT_MAX_CLAUSE_FREQ = 1_000_000  # engine.cnf.DEFAULT_MAX_CLAUSE_FREQ


# ------------------------------------------------------------------------------------------------
# The router


class _Shard:
    def __init__(self, spec: ShardSpec, client: NgramClient):
        self.spec = spec
        self.name = spec.name
        self.client = client
        self.info: pb.GetIndexInfoResponse | None = None
        self.doc_offset = 0
        self.shard_offset = 0
        self.healthy = True

    def where(self) -> str:
        return f"shard {self.name!r} ({self.spec.target})"

    def limit(self, name: str) -> int | None:
        """One of the shard server's limits (ServerLimits field), None when it reports none."""
        v = int(getattr(self.info.limits, name, 0)) if self.info is not None else 0
        return v or None


class NgramRouter:
    """The NgramIndex query API over shard servers (see the module docstring)."""

    # A backend that forwards requests to servers (engine.backend.QueryBackend.forwards_requests): the
    # servicer hands it requests as they came, does not wrap its long calls in stop checks (the shard
    # servers get the call's deadline and stop themselves), and mirrors its health_status().
    forwards_requests = True

    def __init__(
        self,
        shards: Sequence[ShardSpec | dict | str],
        *,
        timeout: float | None = 30.0,
        connect_timeout: float = 30.0,
        health_interval: float = 1.0,
        retry_attempts: int = 3,
        fanout_workers: int | None = None,
    ):
        specs = []
        for i, s in enumerate(shards):
            if isinstance(s, str):
                s = ShardSpec(name=f"shard-{i}", target=s)
            elif isinstance(s, dict):
                s = ShardSpec(**{"name": f"shard-{i}", **s})
            specs.append(s)
        if not specs:
            raise ValueError("a router needs at least one shard server")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.health_interval = health_interval
        self._shards = [
            _Shard(
                spec,
                NgramClient(
                    spec.target,
                    timeout=timeout,
                    root_certificates=spec.root_cert,
                    token_file=spec.auth_token_file,
                    server_name=spec.server_name,
                    max_attempts=retry_attempts,
                ),
            )
            for spec in specs
        ]
        self.target = "router(" + ", ".join(s.target for s in specs) + ")"
        # Each routed call runs len(shards) - 1 shard calls on these threads (the first on the
        # caller's thread); size them for the server's worker threads all fanning out at once.
        workers = fanout_workers or min(128, max(4, 8 * (len(specs) - 1)))
        self._pool = Fanout(workers, "ngram-fanout")
        self._ready = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._health_thread: threading.Thread | None = None

    @classmethod
    def from_shard_map(cls, path: str | os.PathLike, **kwargs) -> "NgramRouter":
        shards, options = load_shard_map(path)
        if "timeout" in options and "timeout" not in kwargs:
            kwargs["timeout"] = float(options["timeout"])
        return cls(shards, **kwargs)

    # -- lifecycle -----------------------------------------------------------------------------

    def warmup(self) -> None:
        """Wait for every shard server to report SERVING, check that they agree (vocabulary,
        token width, tokenizer), and start the health checks."""
        self._connect()
        if self._health_thread is None:
            self._health_thread = threading.Thread(target=self._health_loop, name="ngram-router-health", daemon=True)
            self._health_thread.start()

    def _connect(self) -> None:
        with self._lock:
            if self._ready:
                return
            for sh in self._shards:
                try:
                    sh.client.wait_until_serving(self.connect_timeout)
                    sh.info = sh.client.index_info()
                except NgramError as exc:
                    raise ShardUnavailableError(f"{sh.where()} is unavailable: {exc}") from exc
            first = self._shards[0].info
            for sh in self._shards[1:]:
                for field in ("vocab_size", "token_width"):
                    if getattr(sh.info, field) != getattr(first, field):
                        raise IndexFormatError(
                            f"{sh.where()} has {field}={getattr(sh.info, field)} but "
                            f"{self._shards[0].where()} has {getattr(first, field)}: every shard of a "
                            f"shard map must come from the same tokenizer"
                        )
                if sh.info.tokenizer_fingerprint != first.tokenizer_fingerprint:
                    raise TokenizerMismatchError(
                        f"{sh.where()} has tokenizer fingerprint {sh.info.tokenizer_fingerprint!r} but "
                        f"{self._shards[0].where()} has {first.tokenizer_fingerprint!r}"
                    )
            docs = shards = 0
            for sh in self._shards:
                sh.doc_offset, sh.shard_offset = docs, shards
                docs += int(sh.info.num_docs)
                shards += int(sh.info.num_shards)
            self._cum_docs = np.array([sh.doc_offset for sh in self._shards] + [docs], dtype=np.int64)
            self._cum_shards = np.array([sh.shard_offset for sh in self._shards] + [shards], dtype=np.int64)
            self._ready = True

    def _health_loop(self) -> None:
        while not self._stop.wait(self.health_interval):
            for sh in self._shards:
                if self._stop.is_set():
                    return
                try:
                    ok = sh.client.health(timeout=min(5.0, max(2.0, 5 * self.health_interval))) == "SERVING"
                except NgramError:
                    ok = False
                except ValueError:  # the channel was closed by close()
                    return
                if ok != sh.healthy:
                    log.warning("%s is %s", sh.where(), "serving again" if ok else "DOWN")
                sh.healthy = ok

    def health_status(self) -> bool:
        """True while every shard server reported SERVING at its last health check."""
        return all(sh.healthy for sh in self._shards)

    def shard_status(self) -> dict[str, bool]:
        return {sh.name: sh.healthy for sh in self._shards}

    def close(self) -> None:
        self._stop.set()
        self._pool.close()
        for sh in self._shards:
            sh.client.close()

    def __enter__(self) -> "NgramRouter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- fan-out -------------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        """Seconds the shard calls get: what is left of the served call, else the router's timeout."""
        left = time_left()
        if left is None:
            return self.timeout
        if left <= 0:
            raise DeadlineExceededError("deadline exceeded before the shard servers were asked")
        return left

    def _shard_error(self, sh: _Shard, exc: BaseException) -> BaseException:
        """A shard call's failure as the error the router raises (naming the shard where it matters)."""
        if isinstance(exc, grpc.RpcError):
            err, details = error_from_rpc(exc), exc.details()
        elif isinstance(exc, NgramError):
            err, details = exc, str(exc)
        else:
            return exc
        if isinstance(err, ShardUnavailableError):
            return ShardUnavailableError(f"{sh.where()} is unavailable: {details}")
        if isinstance(err, DeadlineExceededError):
            return DeadlineExceededError(f"{sh.where()} did not answer before the deadline")
        if isinstance(err, LimitExceededError):
            return LimitExceededError(f"{sh.where()}: {details}")
        return err

    @staticmethod
    def _raise_first(errors: list) -> None:
        # A shard being down matters more than anything it would have said.
        for cls in (ShardUnavailableError, DeadlineExceededError):
            for e in errors:
                if isinstance(e, cls):
                    raise e
        raise errors[0]

    def _run(self, jobs: list[tuple[_Shard, Callable, tuple]]) -> list:
        """Run (shard, fn, args) jobs in parallel (the first on this thread); results in order."""
        if not self._ready:
            self._connect()
        tasks = [self._pool.submit(fn, *args) for _, fn, args in jobs[1:]]
        out, errors = [], []
        if jobs:
            sh, fn, args = jobs[0]
            try:
                out.append(fn(*args))
            except Exception as exc:
                errors.append(self._shard_error(sh, exc))
                out.append(None)
        for (sh, _, _), task in zip(jobs[1:], tasks):
            try:
                out.append(task.result())
            except Exception as exc:
                errors.append(self._shard_error(sh, exc))
                out.append(None)
        if errors:
            self._raise_first(errors)
        return out

    def _gather(self, calls: list[tuple[_Shard, str, Any]]) -> list:
        """Run (shard, method, request) unary calls in parallel; return the responses in order."""
        if not self._ready:
            self._connect()
        timeout = self._deadline()
        return self._run([(sh, sh.client.call_raw, (method, req, timeout)) for sh, method, req in calls])

    def _all(self, method: str, request) -> list:
        return self._gather([(sh, method, request) for sh in self._shards])

    def _all_streams(self, method: str, request, shards=None) -> list[tuple[_Shard, list]]:
        """A server-streaming call on every shard (all in flight at once); (shard, messages) in order."""
        if not self._ready:
            self._connect()
        timeout = self._deadline()
        shards = self._shards if shards is None else shards
        return list(zip(shards, self._read_streams([(sh, method, request) for sh in shards], timeout)))

    def _read_streams(self, calls: list[tuple[_Shard, str, Any]], timeout) -> list[list]:
        """Start every (shard, method, request) stream, then read them in order: lists of messages."""
        streams = [(sh, sh.client.stream_raw(method, req, timeout)) for sh, method, req in calls]
        out, errors = [], []
        for sh, stream in streams:
            try:
                out.append(list(stream))
            except grpc.RpcError as exc:
                errors.append(self._shard_error(sh, exc))
                out.append(None)
        if errors:
            for _, stream in streams:
                stream.cancel()
            self._raise_first(errors)
        return out

    def _any(self, method: str, request):
        """Ask the first shard that answers (tokenization: every shard has the same tokenizer)."""
        last = None
        for sh in sorted(self._shards, key=lambda s: not s.healthy):
            try:
                return self._gather([(sh, method, request)])[0]
            except ShardUnavailableError as exc:
                last = exc
        raise last

    # -- properties ----------------------------------------------------------------------------

    def _infos(self) -> list[pb.GetIndexInfoResponse]:
        if not self._ready:
            self._connect()
        return [sh.info for sh in self._shards]

    @property
    def shards(self) -> list[ShardSpec]:
        return [sh.spec for sh in self._shards]

    @property
    def vocab_size(self) -> int:
        return int(self._infos()[0].vocab_size)

    @property
    def token_width(self) -> int:
        return int(self._infos()[0].token_width)

    @property
    def num_tokens(self) -> int:
        return sum(int(i.num_tokens) for i in self._infos())

    @property
    def num_docs(self) -> int:
        return sum(int(i.num_docs) for i in self._infos())

    @property
    def num_shards(self) -> int:
        return sum(int(i.num_shards) for i in self._infos())

    @property
    def eos_token_id(self) -> int | None:
        info = self._infos()[0]
        return int(info.eos_token_id) if info.HasField("eos_token_id") else None

    @property
    def tokenizer_fingerprint(self) -> str | None:
        return self._infos()[0].tokenizer_fingerprint or None

    @property
    def tokenizer(self) -> RemoteTokenizer | None:
        info = self._infos()[0]
        if not info.has_tokenizer:
            return None
        return RemoteTokenizer(self, info.tokenizer_kind, info.tokenizer_fingerprint, int(info.vocab_size))

    @property
    def manifest(self) -> dict:
        self._infos()
        return {
            "router": True,
            "shards": [
                {"name": sh.name, "target": sh.spec.target, "manifest": json.loads(sh.info.manifest_json or "{}")}
                for sh in self._shards
            ],
        }

    def info(self) -> dict:
        infos = self._infos()
        return {
            "router": True,
            "num_tokens": self.num_tokens,
            "num_docs": self.num_docs,
            "num_shards": self.num_shards,
            "vocab_size": self.vocab_size,
            "token_width": self.token_width,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "shard_servers": [
                {
                    "name": sh.name,
                    "target": sh.spec.target,
                    "num_tokens": int(i.num_tokens),
                    "num_docs": int(i.num_docs),
                    "num_shards": int(i.num_shards),
                    "healthy": sh.healthy,
                }
                for sh, i in zip(self._shards, infos)
            ],
        }

    # -- tokenization --------------------------------------------------------------------------

    def tokenize(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise InvalidQueryError(f"text must be a str, not {type(text).__name__}")
        return np.array(self._any("Tokenize", pb.TokenizeRequest(text=text)).token_ids, dtype=np.int64)

    def detokenize(self, ids) -> str:
        return self._any("Detokenize", pb.DetokenizeRequest(token_ids=as_ids(ids, "ids").tolist())).text

    def _ids(self, query, what: str = "query") -> np.ndarray:
        return self.tokenize(query) if isinstance(query, str) else as_ids(query, what)

    # ------------------------------------------------------------------------------------------
    # Request-level merges. Each takes the request message the shard servers get (as a client
    # sent it to the router, or as the Python methods below build it) and returns engine results.

    def count_request(self, req: pb.CountRequest) -> int:
        return sum(int(r.count) for r in self._all("Count", req))

    def count_batch_request(self, req: pb.CountBatchRequest) -> np.ndarray:
        rs = self._all("CountBatch", req)
        total = np.frombuffer(rs[0].counts, dtype=I8).astype(np.int64)
        for r in rs[1:]:
            total += np.frombuffer(r.counts, dtype=I8)
        return total

    def find_request(self, req: pb.FindRequest) -> FindResult:
        rs = self._all("Find", req)
        return FindResult(
            count=sum(int(r.count) for r in rs),
            segments=tuple((int(s.start), int(s.end)) for r in rs for s in r.segments),
        )

    @staticmethod
    def _prob(prompt_count: int, cont_count: int) -> float:
        return cont_count / prompt_count if prompt_count > 0 else -1.0

    def prob_request(self, req: pb.ProbRequest) -> ProbResult:
        rs = self._all("Prob", req)
        pc = sum(int(r.prompt_count) for r in rs)
        cc = sum(int(r.cont_count) for r in rs)
        return ProbResult(prompt_count=pc, cont_count=cc, prob=self._prob(pc, cc))

    def prob_batch_request(self, req: pb.ProbBatchRequest) -> ProbBatchResult:
        rs = [decode_prob_batch(r, False) for r in self._all("ProbBatch", req)]
        pc = np.sum([r.prompt_counts for r in rs], axis=0, dtype=np.int64)
        cc = np.sum([r.cont_counts for r in rs], axis=0, dtype=np.int64)
        return ProbBatchResult(pc, cc, probs(pc, cc))

    # The infinity-gram over the union. A suffix has a nonzero count in the union iff it occurs in
    # some shard, so the union's longest occurring suffix has length L = max of the shards' own
    # suffix lengths. A shard whose own longest suffix is shorter than L does not contain the
    # L-suffix at all, so its contribution for that suffix is exactly zero: the merged answer is
    # the sum over the shards that reached L. No second round trip is needed.

    def infgram_prob_request(self, req: pb.InfgramProbRequest) -> InfgramProbResult:
        rs = self._all("InfgramProb", req)
        L = max(int(r.suffix_len) for r in rs)
        pc = sum(int(r.prompt_count) for r in rs if int(r.suffix_len) == L)
        cc = sum(int(r.cont_count) for r in rs if int(r.suffix_len) == L)
        return InfgramProbResult(prompt_count=pc, cont_count=cc, prob=self._prob(pc, cc), suffix_len=L)

    def infgram_prob_batch_request(self, req: pb.InfgramProbBatchRequest) -> ProbBatchResult:
        rs = [decode_prob_batch(r, True) for r in self._all("InfgramProbBatch", req)]
        pc, cc, L = union_backoff(np.stack([r.suffix_lens for r in rs]), np.stack([r.prompt_counts for r in rs]),
                                   np.stack([r.cont_counts for r in rs]))
        return ProbBatchResult(pc, cc, probs(pc, cc), L)

    @staticmethod
    def _support(req) -> int | None:
        return int(req.max_support) if req.HasField("max_support") else None

    def ntd_request(self, req: pb.NextTokenDistributionRequest) -> NextTokenDistribution:
        return merge_dists([decode_dist(r.distribution) for r in self._all("NextTokenDistribution", req)],
                            max_support=self._support(req))

    def ntd_batch_request(self, req: pb.NextTokenDistributionBatchRequest) -> list[NextTokenDistribution]:
        per_shard = [decode_packed_dists(r.distributions, False) for r in self._all("NextTokenDistributionBatch", req)]
        ms = self._support(req)
        return [merge_dists(list(ds), max_support=ms) for ds in zip(*per_shard)]

    def infgram_ntd_request(self, req: pb.InfgramNextTokenDistributionRequest) -> InfgramNtdResult:
        rs = self._all("InfgramNextTokenDistribution", req)
        L = max(int(r.suffix_len) for r in rs)
        return merge_dists([decode_dist(r.distribution) for r in rs if int(r.suffix_len) == L], suffix_len=L,
                            max_support=self._support(req))

    def infgram_ntd_batch_request(self, req: pb.InfgramNextTokenDistributionBatchRequest) -> list[InfgramNtdResult]:
        per_shard = [decode_packed_dists(r.distributions, True)
                     for r in self._all("InfgramNextTokenDistributionBatch", req)]
        ms = self._support(req)
        out = []
        for ds in zip(*per_shard):
            L = max(d.suffix_len for d in ds)
            out.append(merge_dists([d for d in ds if d.suffix_len == L], suffix_len=L, max_support=ms))
        return out

    def _global_doc(self, sh: _Shard, doc: Document) -> Document:
        return dataclasses.replace(doc, doc_ix=doc.doc_ix + sh.doc_offset, shard=doc.shard + sh.shard_offset)

    def search_docs_request(self, req: pb.SearchDocumentsRequest) -> SearchResult:
        count, approx, docs = 0, False, []
        for sh, msgs in self._all_streams("SearchDocuments", req):
            summary, found = summary_and_documents(msgs, f"{sh.where()}'s SearchDocuments stream")
            count += int(summary.count)
            approx = approx or bool(summary.approx)
            docs += [self._global_doc(sh, d) for d in found]
        max_docs = int(req.max_docs) if req.HasField("max_docs") else 10
        return SearchResult(count=count, documents=docs[:max_docs], approx=approx)

    # -- documents by number, rank or pointer --------------------------------------------------

    def _locate_shard(self, shard: int) -> tuple[_Shard, int]:
        self._infos()
        total = int(self._cum_shards[-1])
        if not isinstance(shard, (int, np.integer)) or not 0 <= int(shard) < total:
            raise InvalidQueryError(f"shard {shard} is out of range: the index has shards 0..{total - 1}")
        b = int(np.searchsorted(self._cum_shards, int(shard), side="right")) - 1
        return self._shards[b], int(shard) - int(self._cum_shards[b])

    def _get_doc(self, sh: _Shard, req) -> Document:
        r = self._gather([(sh, "GetDocument", req)])[0]
        return self._global_doc(sh, decode_document(r.document))

    def get_doc_by_ix(self, doc_ix: int, max_disp_len: int = 1000) -> Document:
        self._infos()
        total = int(self._cum_docs[-1])
        if not isinstance(doc_ix, (int, np.integer)) or not 0 <= int(doc_ix) < total:
            raise InvalidQueryError(f"doc_ix {doc_ix} is out of range: the index has documents 0..{total - 1}")
        b = int(np.searchsorted(self._cum_docs, int(doc_ix), side="right")) - 1
        sh = self._shards[b]
        req = pb.GetDocumentRequest(doc_ix=int(doc_ix) - sh.doc_offset, max_disp_len=int(max_disp_len))
        return self._get_doc(sh, req)

    def get_doc_by_rank(self, shard: int, rank: int, max_disp_len: int = 1000) -> Document:
        sh, local = self._locate_shard(shard)
        req = pb.GetDocumentRequest(rank=pb.ShardRank(shard=local, rank=int(rank)), max_disp_len=int(max_disp_len))
        return self._get_doc(sh, req)

    def get_doc_by_ptr(self, shard: int, ptr: int, max_disp_len: int = 1000) -> Document:
        sh, local = self._locate_shard(shard)
        req = pb.GetDocumentRequest(pointer=pb.ShardPointer(shard=local, ptr=int(ptr)), max_disp_len=int(max_disp_len))
        return self._get_doc(sh, req)

    # ------------------------------------------------------------------------------------------
    # Frequent n-grams (exact over the union)

    def _shard_ngrams(self, sh: _Shard, n_min: int, n_max: int, kwargs: dict, timeout) -> tuple[np.ndarray, np.ndarray]:
        """One shard server's FrequentNgrams rows, (rows x n_max ids padded with -1, counts)."""
        table = sh.client.frequent_ngrams(n_min, n_max, timeout=timeout, **kwargs)
        return padded_rows(table, n_max), np.asarray(table.counts, dtype=np.int64)

    def frequent_ngrams(self, n_min: int = 1, n_max: int | None = None, *, min_count: int | None = None,
                        top_k: int | None = None, chunk_rows: int | None = None):
        """NgramIndex.frequent_ngrams over the shard servers, exact (an in-memory NgramTable);
        ``chunk_rows`` is how many rows each shard server sends per message.

        With S servers, an n-gram whose total count reaches T occurs at least ceil(T / S) times
        on one of them (pigeonhole). So:

        1. every server lists its n-grams with count >= ceil(min_count / S) (its top_k of them
           when top_k is given); with top_k, the k-th largest sum of the listed counts is a
           lower bound T on the k-th largest total (the listed counts are exact, the unlisted
           ones >= 0), and the answer needs only n-grams with total >= max(T, min_count);
        2. a server whose list may stop above ceil(T / S) lists again down to that threshold;
        3. an n-gram missing from a server's list occurs there fewer times than that server's
           list threshold: where that bound could still lift the total to the threshold, the
           server counts it exactly (CountBatch). Totals, order (count descending, then token
           ids) and the top_k cut are then exactly one index's.

        Each step asks the servers for at most their max_ngram_rows rows; a server whose list
        would be longer answers RESOURCE_EXHAUSTED, which the router passes on, naming it.
        """
        started = time.time()
        n_min, n_max = check_n(n_min, n_min if n_max is None else n_max)
        if min_count is None and top_k is None:
            raise InvalidQueryError("give min_count=C (every n-gram occurring at least C times) or top_k=K")
        floor = 1 if min_count is None else positive_int(min_count, "min_count")
        k = None if top_k is None else positive_int(top_k, "top_k")
        self._infos()
        shards = self._shards
        S = len(shards)
        t1 = -(-floor // S)
        passes = []

        # 1. each server's list above ceil(min_count / S) (its top k_s with top_k)
        asks = []
        for sh in shards:
            kw = {"min_count": t1}
            if k is not None:
                kw["top_k"] = min(k, sh.limit("max_ngram_rows") or k)
            asks.append(kw)
        timeout = self._deadline()
        lists = self._run([(sh, self._shard_ngrams, (sh, n_min, n_max, kw, timeout)) for sh, kw in zip(shards, asks)])
        complete = []  # a server's list holds every n-gram of its with count >= complete[s]
        for (rows, counts), kw in zip(lists, asks):
            if "top_k" in kw and len(counts) >= kw["top_k"]:
                complete.append(int(counts[-1]) + 1 if len(counts) else t1)
            else:
                complete.append(t1)
        passes.append({"step": 1, "min_count": t1, "top_k": k, "rows": [len(c) for _, c in lists]})
        threshold = floor
        if k is not None:
            uniq, inverse = union_rows([r for r, _ in lists], n_max)
            partial = np.zeros(len(uniq), dtype=np.int64)
            np.add.at(partial, inverse, np.concatenate([c for _, c in lists]) if lists else np.zeros(0, np.int64))
            if len(partial) >= k:
                threshold = max(floor, int(np.partition(partial, len(partial) - k)[len(partial) - k]))

        # 2. lists down to ceil(threshold / S) where a list may stop above it
        t2 = -(-threshold // S)
        again = [s for s in range(S) if complete[s] > t2]
        if again:
            timeout = self._deadline()
            more = self._run([(shards[s], self._shard_ngrams, (shards[s], n_min, n_max, {"min_count": t2}, timeout))
                              for s in again])
            for s, lst in zip(again, more):
                lists[s] = lst
                complete[s] = t2
            passes.append({"step": 2, "min_count": t2, "servers": [shards[s].name for s in again],
                           "rows": [len(c) for _, c in more]})

        # 3. exact totals of every n-gram that can reach the threshold
        uniq, inverse = union_rows([r for r, _ in lists], n_max)
        known = np.full((S, len(uniq)), -1, dtype=np.int64)
        at = 0
        for s, (rows, counts) in enumerate(lists):
            known[s, inverse[at:at + len(counts)]] = counts
            at += len(counts)
        bound = np.where(known >= 0, known, np.array(complete, dtype=np.int64)[:, None] - 1).sum(axis=0)
        cand = np.flatnonzero(bound >= threshold)
        jobs, where = [], []
        timeout = self._deadline()
        for s, sh in enumerate(shards):
            need = cand[known[s, cand] < 0]
            if len(need):
                jobs.append((sh, functools.partial(sh.client.count_batch, timeout=timeout), (packed_rows(uniq[need]),)))
                where.append((s, need))
        if jobs:
            for (s, need), got in zip(where, self._run(jobs)):
                known[s, need] = got
            passes.append({"step": 3, "counted": [int(len(need)) for _, need in where]})
        rows = uniq[cand]
        totals = known[:, cand].sum(axis=0)
        keep = totals >= threshold
        rows, totals = rows[keep], totals[keep]
        order = np.lexsort([rows[:, c] for c in range(n_max - 1, -1, -1)] + [-totals])
        rows, totals = rows[order], totals[order]
        if k is not None:
            if len(totals) >= k:
                threshold = int(totals[k - 1])
            else:
                threshold = floor
            rows, totals = rows[:k], totals[:k]
        else:
            threshold = floor
        lengths = (rows >= 0).sum(axis=1)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        meta = {
            "kind": "frequent_ngrams", "n_min": n_min, "n_max": n_max, "min_count": floor, "threshold": threshold,
            "top_k": k, "num_tokens": self.num_tokens, "num_docs": self.num_docs, "token_width": self.token_width,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "index_paths": [sh.spec.target for sh in shards], "order": "count desc, then token ids",
            "router": True, "passes": passes, "seconds": round(time.time() - started, 3),
        }
        from engine.storage.ngram_table import NgramTable

        return NgramTable(rows[rows >= 0].astype(np.uint32), offsets, totals.astype(np.int64), meta)

    # ------------------------------------------------------------------------------------------
    # Longest matches and attribution

    def longest_matches_request(self, req: pb.LongestMatchesRequest):
        """Merged LongestMatches (with the ∞-gram terms of every position) of one request."""
        from engine.match import LongestMatches

        rs = self._all("LongestMatches", req)
        tokens = le_array(rs[0].token_ids)
        lengths = np.stack([le_array(r.lengths) for r in rs])
        L = lengths.max(axis=0)
        counts = np.where(lengths == L, np.stack([le_array(r.counts) for r in rs]), 0).sum(axis=0).astype(np.int64)
        pc, cc, suffix = union_backoff(np.stack([le_array(r.suffix_lens) for r in rs]),
                                        np.stack([le_array(r.prompt_counts) for r in rs]),
                                        np.stack([le_array(r.cont_counts) for r in rs]))
        if req.HasField("infgram") and not req.infgram:
            return LongestMatches(tokens, L.astype(np.int64), counts)
        return LongestMatches(tokens, L.astype(np.int64), counts, ProbBatchResult(pc, cc, probs(pc, cc), suffix))

    def creativity(self, text, n=5, max_len: int | None = None):
        """NgramIndex.creativity over the shard servers."""
        from engine.match import uniqueness

        m = self.longest_matches(text, max_len)
        if len(m.tokens) == 0:
            raise InvalidQueryError("text is empty: give at least one token")
        if isinstance(n, (int, np.integer)) and not isinstance(n, bool):
            return uniqueness(m.lengths, positive_int(n, "n"))
        values = list(n)
        if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values):
            raise InvalidQueryError("n must be a positive int or a non-empty list of them")
        return {int(v): uniqueness(m.lengths, int(v)) for v in values}

    def attribute(self, text, min_len: int = 8, max_count: int | None = None, *, max_docs: int = 3,
                  max_disp_len: int = 100, creativity_n: int | None = None, max_len: int | None = None):
        """NgramIndex.attribute over the shard servers (engine.match.Attribution), exact."""
        q = pb.Query()
        fill_query(q, text, "text")
        return self.attribute_query(q, min_len, max_count, max_docs=max_docs, max_disp_len=max_disp_len,
                                    creativity_n=creativity_n, max_len=max_len)

    def attribute_query(self, text: pb.Query, min_len: int = 8, max_count: int | None = None, *, max_docs: int = 3,
                        max_disp_len: int = 100, creativity_n: int | None = None, max_len: int | None = None):
        """Attribution of a text given as a Query message: maximal spans from the merged longest
        matches, their documents in global suffix-array order (as engine.match.attribute)."""
        from engine.match import AttributedSpan, Attribution, LongestMatches, maximal_spans, uniqueness

        min_len = positive_int(min_len, "min_len")
        if max_count is not None:
            max_count = positive_int(max_count, "max_count")
        if isinstance(max_docs, bool) or not isinstance(max_docs, (int, np.integer)) or max_docs < 0:
            raise InvalidQueryError("max_docs must be a non-negative int")
        if isinstance(max_disp_len, bool) or not isinstance(max_disp_len, (int, np.integer)) or max_disp_len < 1:
            raise InvalidQueryError("max_disp_len must be a positive int (tokens to return per document)")
        creativity_n = min_len if creativity_n is None else positive_int(creativity_n, "creativity_n")
        req = pb.LongestMatchesRequest(text=text)
        if max_len is not None:
            req.max_len = int_arg(max_len, "max_len")
        m = self.longest_matches_request(req)
        ids, lengths, counts = m.tokens, m.lengths, m.counts
        if len(ids) == 0:
            raise InvalidQueryError("text is empty: give at least one token")
        found = []
        for j in maximal_spans(lengths):
            length, count = int(lengths[j]), int(counts[j])
            if length < min_len or (max_count is not None and count > max_count):
                continue
            start = int(j) - length + 1
            found.append((start, int(j) + 1, count, ids[start:int(j) + 1].copy()))
        docs = self._span_documents([f[3] for f in found], int(max_docs), int(max_disp_len))
        spans = [AttributedSpan(a, b, c, t, d) for (a, b, c, t), d in zip(found, docs)]
        return Attribution(len(ids), spans, uniqueness(lengths, creativity_n), creativity_n, min_len, max_count,
                           LongestMatches(ids, lengths, counts))

    def _span_documents(self, spans: list[np.ndarray], max_docs: int, max_disp_len: int,
                        wave: int = 64) -> list[list[Document]]:
        """For each span, up to max_docs distinct documents holding its occurrences in global
        suffix-array order, looking at no more than 8 * max_docs occurrences (engine.match)."""
        out: list[list[Document]] = []
        if max_docs == 0:
            return [[] for _ in spans]
        budget0 = 8 * max_docs
        S = len(self._shards)
        for w in range(0, len(spans), wave):
            part = spans[w:w + wave]
            calls = []
            for toks in part:
                for sh in self._shards:
                    req = pb.SearchDocumentsRequest(max_docs=min(budget0, sh.limit("max_results_per_stream") or budget0),
                                                    max_disp_len=max_disp_len)
                    fill_query(req.query, toks)
                    calls.append((sh, "SearchDocuments", req))
            results = self._read_streams(calls, self._deadline())
            for i, toks in enumerate(part):
                docs, seen, budget = [], set(), budget0
                for b, sh in enumerate(self._shards):
                    msgs = results[i * S + b]
                    occurrences = int(msgs[0].summary.count) if msgs and msgs[0].WhichOneof("item") == "summary" else 0
                    got = [self._global_doc(sh, decode_document(m.document)) for m in msgs
                           if m.WhichOneof("item") == "document"]
                    budget = take_documents(got, docs, seen, max_docs, budget)
                    if len(docs) < max_docs and budget > 0 and len(got) < occurrences:
                        # the server capped the stream (its max_results_per_stream): the rest by rank
                        more = self._occurrences(sh, toks, len(got), min(budget, occurrences - len(got)), max_disp_len)
                        budget = take_documents(more, docs, seen, max_docs, budget)
                    if len(docs) >= max_docs or budget <= 0:
                        break
                out.append(docs)
        return out

    def _occurrences(self, sh: _Shard, toks: np.ndarray, skip: int, n: int, max_disp_len: int) -> list[Document]:
        """Documents of occurrences skip .. skip + n - 1 (suffix-array order) of toks on one server."""
        req = pb.FindRequest()
        fill_query(req.query, toks)
        found = self._gather([(sh, "Find", req)])[0]
        ranks = [(local, r) for local, seg in enumerate(found.segments) for r in range(int(seg.start), int(seg.end))]
        calls = [(sh, "GetDocument", pb.GetDocumentRequest(rank=pb.ShardRank(shard=local, rank=r),
                                                           max_disp_len=max_disp_len))
                 for local, r in ranks[skip:skip + n]]
        return [self._global_doc(sh, decode_document(r.document)) for r in self._gather(calls)] if calls else []

    # ------------------------------------------------------------------------------------------
    # AND/OR (CNF) document search

    def _default_clause_freq(self, req) -> int:
        """The request's max_clause_freq, or (unset) the lowest of the shard servers' limits."""
        if req.HasField("max_clause_freq"):
            return int(req.max_clause_freq)
        self._infos()
        return min([DEFAULT_MAX_CLAUSE_FREQ] + [sh.limit("max_clause_freq") or DEFAULT_MAX_CLAUSE_FREQ
                                                for sh in self._shards])

    @staticmethod
    def _cnf_merge(summaries, cap: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """(clause counts, scanned clauses, count) of one index from the servers' summaries.

        A document lives on one server, so the matching documents add up. One index enumerates
        the clauses whose total count is <= max_clause_freq and scans the others; a server
        decides by its own counts, which changes how it works but not what it finds, as long as
        one clause is under the cap in the union (then no server is left with every clause over
        the cap: its counts are at most the totals). With every clause over the cap, one index
        answers from a sample of the rarest clause that no server can reproduce: UNIMPLEMENTED.
        """
        counts = tuple(int(sum(int(s.clause_counts[i]) for s in summaries)) for i in range(len(summaries[0].clause_counts)))
        if not counts or min(counts) == 0:
            return counts, (), 0
        if all(c > cap for c in counts):
            rarest = min(counts)
            raise NotSupportedError(
                f"every clause occurs more than max_clause_freq={cap} times across the shard servers (the rarest "
                f"{rarest} times), so one index would answer from a sample of the rarest clause, which the router "
                f"cannot reproduce across servers; ask with max_clause_freq >= {rarest} for the exact answer "
                f"(see docs/multi-host.md)")
        scanned = tuple(i for i, c in enumerate(counts) if c > cap)
        return counts, scanned, sum(int(s.count) for s in summaries)

    def count_cnf_request(self, req: pb.CountCnfRequest):
        from engine.cnf import CnfResult

        req.max_clause_freq = self._default_clause_freq(req)
        rs = self._all("CountCnf", req)
        counts, scanned, count = self._cnf_merge(rs, int(req.max_clause_freq))
        return CnfResult(count, False, counts, scanned, np.zeros(0, dtype=np.int64))

    def search_docs_cnf_request(self, req: pb.SearchDocumentsCnfRequest):
        from engine.cnf import CnfResult

        cap = req.max_clause_freq = self._default_clause_freq(req)
        max_docs = int(req.max_docs) if req.HasField("max_docs") else 10
        disp = int(req.max_disp_len) if req.HasField("max_disp_len") else 1000
        summaries, docs = [], []
        for sh, msgs in self._all_streams("SearchDocumentsCnf", req):
            summary, found = summary_and_documents(msgs, f"{sh.where()}'s SearchDocumentsCnf stream")
            summaries.append(summary)
            docs += [(sh, summary, self._global_doc(sh, d)) for d in found]
        counts, scanned, count = self._cnf_merge(summaries, cap)
        docs = docs[:max_docs]
        if docs:
            # Each document is a window around the first occurrence of the anchor clause (the
            # rarest clause one index enumerates). A server whose own counts pick another anchor
            # centred its windows elsewhere: those windows are cut again from the whole document.
            anchor = min((i for i, c in enumerate(counts) if c <= cap), key=lambda i: (counts[i], i))
            redo = [i for i, (sh, summary, _) in enumerate(docs) if local_anchor(summary) != anchor]
            if redo:
                terms = [self._term_ids(t) for t in req.clauses[anchor].terms]
                fixed = self._rewindow([docs[i][0] for i in redo], [docs[i][2] for i in redo], terms, disp)
                for i, doc in zip(redo, fixed):
                    docs[i] = (docs[i][0], docs[i][1], doc)
        documents = [d for _, _, d in docs]
        return CnfResult(count, False, counts, scanned, np.array([d.doc_ix for d in documents], dtype=np.int64),
                         documents)

    def _term_ids(self, q: pb.Query) -> np.ndarray:
        if q.WhichOneof("kind") == "text":
            return self.tokenize(q.text)
        return np.array(q.token_ids.ids, dtype=np.int64)

    def _rewindow(self, shards: list[_Shard], docs: list[Document], terms: list[np.ndarray], disp: int) -> list[Document]:
        """Each document's window around the first occurrence of any of ``terms`` (as
        NgramIndex._doc_at_ptr cuts it), from the whole document."""
        calls = []
        for sh, doc in zip(shards, docs):
            limit = sh.limit("max_disp_len")
            if limit is not None and doc.doc_len > limit:
                raise NotSupportedError(
                    f"document {doc.doc_ix} ({doc.doc_len} tokens) is longer than the max_disp_len={limit} of "
                    f"{sh.where()}, so the router cannot cut its window around the query's rarest clause; "
                    f"ask that server directly or raise its --max-disp-len")
            calls.append((sh, "GetDocument", pb.GetDocumentRequest(doc_ix=doc.doc_ix - sh.doc_offset,
                                                                    max_disp_len=max(1, doc.doc_len))))
        out = []
        for doc, r in zip(docs, self._gather(calls)):
            full = np.array(r.document.token_ids, dtype=np.int64)
            pos = first_occurrence(full, terms)
            start = max(0, pos - disp // 2)
            end = max(start, min(len(full), pos + (disp + 1) // 2))
            out.append(dataclasses.replace(doc, disp_len=end - start, needle_offset=pos - start,
                                           token_ids=full[start:end].copy()))
        return out


def _router_method(q: Query):
    """NgramRouter's method for one entry of the RPC table: the request its shard servers get, then
    the router's merge of their answers."""
    build, pick, merge = q.build, q.pick, q.forward

    def method(self, *args, **kwargs):
        if q.batch is not None and args:
            args = (tokenize_mixed(args[0], self.tokenize),) + args[1:]
        return pick(getattr(self, merge)(build(*args, **kwargs)))

    method.__signature__ = inspect.signature(build).replace(parameters=[
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *inspect.signature(build).parameters.values()])
    method.__name__ = q.method
    method.__qualname__ = f"NgramRouter.{q.method}"
    method.__doc__ = f"NgramIndex.{q.method} over the shard servers (merged by NgramRouter.{merge})."
    return method


for _q in QUERIES:
    if _q.forward is not None:
        setattr(NgramRouter, _q.method, _router_method(_q))
del _q
