"""NgramRouter: one index made of many shard servers, merged exactly.

A router holds no index. It implements the NgramIndex query API by fanning each query out to
the shard servers of a shard map (in parallel, on a thread pool) and merging the answers:

- counts add; Find concatenates the per-shard suffix-array segments in map order;
- Prob / NextTokenDistribution add prompt, continuation and per-token counts (a distribution
  capped by max_support is approximate: the shards' estimates add, see _merge_dists);
- the infinity-gram backs off over the union: the suffix used is the longest suffix of the
  prompt with a nonzero count summed over all shards (the maximum of the shards' own suffix
  lengths); shards whose own suffix was shorter hold no occurrence of it and add nothing;
- documents: global document indexes and shard numbers are offset by the documents and shards
  of the servers earlier in the map, so results equal one NgramIndex opened on all shards.

When a shard server cannot be reached the query fails with ShardUnavailableError naming the
shard (UNAVAILABLE over gRPC), never a silently smaller count. A background thread checks every
shard's health; ``health_status()`` is False while one is down (the server then reports
NOT_SERVING). The servicer's deadline (engine.service.time_left) is forwarded to the shards.

Shard map (JSON):

    {
      "shards": [
        {"name": "shard-0", "target": "10.0.0.1:50051"},
        {"name": "shard-1", "target": "10.0.0.2:50051", "root_cert": "ca.pem"}
      ],
      "root_cert": "ca.pem",            # optional: TLS to every shard (PEM of the CA/cert)
      "auth_token_file": "token.txt",   # optional: bearer token sent to every shard
      "timeout": 30                     # optional: per-call deadline (s) without a client deadline
    }

Relative paths are relative to the map file. ``name`` defaults to "shard-<i>"; per-shard
"root_cert" / "auth_token_file" / "server_name" override the top-level ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import grpc
import numpy as np

from engine._proto.ngram.v1 import ngram_pb2 as pb
from engine.client import (
    DeadlineExceededError,
    NgramClient,
    RemoteTokenizer,
    as_ids,
    decode_dist,
    decode_document,
    decode_packed_dists,
    decode_prob_batch,
    encode_packed,
    error_from_rpc,
    pack_queries,
)
from engine.errors import (
    IndexFormatError,
    InvalidQueryError,
    NgramError,
    ShardUnavailableError,
    TokenizerMismatchError,
)
from engine.results import (
    Document,
    FindResult,
    InfgramNtdResult,
    InfgramProbResult,
    NextTokenDistribution,
    PackedQueries,
    ProbBatchResult,
    ProbResult,
    SearchResult,
)
from engine.service import time_left

__all__ = ["NgramRouter", "ShardSpec", "load_shard_map"]

log = logging.getLogger("engine.router")
_I8 = np.dtype("<i8")


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """One shard server of a shard map."""

    name: str
    target: str
    root_cert: str | None = None
    auth_token_file: str | None = None
    server_name: str | None = None


def load_shard_map(path: str | os.PathLike) -> tuple[list[ShardSpec], dict]:
    """Parse a shard-map file; return (shards, top-level options)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise IndexFormatError(f"shard map {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise IndexFormatError(f"shard map {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("shards"), list) or not data["shards"]:
        raise IndexFormatError(
            f'shard map {path} must be an object with a non-empty "shards" list, e.g. '
            '{"shards": [{"name": "shard-0", "target": "host:port"}]}'
        )
    base = path.parent

    def rel(p):
        return None if p is None else str(p if Path(p).is_absolute() else base / p)

    shards = []
    seen = set()
    for i, entry in enumerate(data["shards"]):
        if isinstance(entry, str):
            entry = {"target": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("target"), str) or not entry["target"]:
            raise IndexFormatError(f'shard map {path}: shards[{i}] needs a "target": "host:port"')
        name = str(entry.get("name") or f"shard-{i}")
        if name in seen:
            raise IndexFormatError(f"shard map {path}: shard name {name!r} appears twice")
        seen.add(name)
        shards.append(
            ShardSpec(
                name=name,
                target=entry["target"],
                root_cert=rel(entry.get("root_cert", data.get("root_cert"))),
                auth_token_file=rel(entry.get("auth_token_file", data.get("auth_token_file"))),
                server_name=entry.get("server_name", data.get("server_name")),
            )
        )
    options = {k: v for k, v in data.items() if k in ("timeout",)}
    return shards, options


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


class NgramRouter:
    """The NgramIndex query API over shard servers (see the module docstring)."""

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
        # Each routed call runs len(shards) - 1 shard calls on this pool; size it for the
        # server's worker threads all fanning out at once.
        workers = fanout_workers or min(128, max(4, 8 * (len(specs) - 1)))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ngram-fanout")
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
                    sh.info = sh.client._index_info()
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
        self._pool.shutdown(wait=False, cancel_futures=True)
        for sh in self._shards:
            sh.client.close()

    def __enter__(self) -> "NgramRouter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- fan-out -------------------------------------------------------------------------------

    def _deadline(self) -> float | None:
        left = time_left()
        if left is None:
            return self.timeout
        if left <= 0:
            raise DeadlineExceededError("deadline exceeded before the shard servers were asked")
        return left

    def _error(self, sh: _Shard, exc: grpc.RpcError) -> NgramError:
        err = error_from_rpc(exc)
        if isinstance(err, ShardUnavailableError):
            return ShardUnavailableError(f"{sh.where()} is unavailable: {exc.details()}")
        if isinstance(err, DeadlineExceededError):
            return DeadlineExceededError(f"{sh.where()} did not answer before the deadline")
        return err

    def _gather(self, calls: list[tuple[_Shard, str, Any]]) -> list:
        """Run (shard, method, request) calls in parallel; return responses in order."""
        if not self._ready:
            self._connect()
        timeout = self._deadline()
        # Blocking calls on a thread pool for all but the first shard, the first on this thread
        # meanwhile. (Measured on 2 loaded cores: grpc's own futures, which all complete through
        # the channel's polling thread, were 1.4x slower than this for a 3-shard Count.)
        futs = [(sh, self._pool.submit(sh.client._blocking, method, req, timeout)) for sh, method, req in calls[1:]]
        out, errors = [], []
        if calls:
            sh, method, req = calls[0]
            try:
                out.append(sh.client._blocking(method, req, timeout))
            except grpc.RpcError as exc:
                errors.append(self._error(sh, exc))
                out.append(None)
        for sh, fut in futs:
            try:
                out.append(fut.result())
            except grpc.RpcError as exc:
                errors.append(self._error(sh, exc))
                out.append(None)
        if errors:
            # A shard being down matters more than anything it would have said.
            for cls in (ShardUnavailableError, DeadlineExceededError):
                for e in errors:
                    if isinstance(e, cls):
                        raise e
            raise errors[0]
        return out

    def _all(self, method: str, request) -> list:
        return self._gather([(sh, method, request) for sh in self._shards])

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

    @staticmethod
    def _query(ids: np.ndarray) -> pb.Query:
        return pb.Query(token_ids=pb.TokenIds(ids=ids.tolist()))

    def _packed(self, queries, what: str) -> PackedQueries:
        if isinstance(queries, (list, tuple)) and any(isinstance(q, str) for q in queries):
            queries = [self.tokenize(q) if isinstance(q, str) else q for q in queries]
        return pack_queries(queries, what)

    # -- counting ------------------------------------------------------------------------------

    def count(self, query) -> int:
        req = pb.CountRequest(query=self._query(self._ids(query)))
        return sum(int(r.count) for r in self._all("Count", req))

    def count_batch(self, queries) -> np.ndarray:
        pq = self._packed(queries, "queries")
        req = pb.CountBatchRequest(queries=encode_packed(pq))
        total = np.zeros(len(pq), dtype=np.int64)
        for r in self._all("CountBatch", req):
            total += np.frombuffer(r.counts, dtype=_I8)
        return total

    def find(self, query) -> FindResult:
        rs = self._all("Find", pb.FindRequest(query=self._query(self._ids(query))))
        return FindResult(
            count=sum(int(r.count) for r in rs),
            segments=tuple((int(s.start), int(s.end)) for r in rs for s in r.segments),
        )

    # -- probabilities -------------------------------------------------------------------------

    @staticmethod
    def _prob(prompt_count: int, cont_count: int) -> float:
        return cont_count / prompt_count if prompt_count > 0 else -1.0

    def prob(self, prompt, cont_id: int) -> ProbResult:
        req = pb.ProbRequest(prompt=self._query(self._ids(prompt, "prompt")), cont_id=int(cont_id))
        rs = self._all("Prob", req)
        pc = sum(int(r.prompt_count) for r in rs)
        cc = sum(int(r.cont_count) for r in rs)
        return ProbResult(prompt_count=pc, cont_count=cc, prob=self._prob(pc, cc))

    def prob_batch(self, prompts, cont_ids) -> ProbBatchResult:
        pq = self._packed(prompts, "prompts")
        cont = as_ids(cont_ids, "cont_ids")
        req = pb.ProbBatchRequest(prompts=encode_packed(pq), cont_ids=cont.astype(_I8).tobytes())
        rs = [decode_prob_batch(r, False) for r in self._all("ProbBatch", req)]
        pc = np.sum([r.prompt_counts for r in rs], axis=0, dtype=np.int64)
        cc = np.sum([r.cont_counts for r in rs], axis=0, dtype=np.int64)
        return ProbBatchResult(pc, cc, _probs(pc, cc))

    # The infinity-gram over the union. A suffix has a nonzero count in the union iff it occurs in
    # some shard, so the union's longest occurring suffix has length L = max of the shards' own
    # suffix lengths. A shard whose own longest suffix is shorter than L does not contain the
    # L-suffix at all, so its contribution for that suffix is exactly zero: the merged answer is
    # the sum over the shards that reached L. No second round trip is needed.

    def infgram_prob(self, prompt, cont_id: int) -> InfgramProbResult:
        ids = self._ids(prompt, "prompt")
        req = pb.InfgramProbRequest(prompt=self._query(ids), cont_id=int(cont_id))
        rs = self._all("InfgramProb", req)
        L = max(int(r.suffix_len) for r in rs)
        pc = sum(int(r.prompt_count) for r in rs if int(r.suffix_len) == L)
        cc = sum(int(r.cont_count) for r in rs if int(r.suffix_len) == L)
        return InfgramProbResult(prompt_count=pc, cont_count=cc, prob=self._prob(pc, cc), suffix_len=L)

    def infgram_prob_batch(self, prompts, cont_ids) -> ProbBatchResult:
        pq = self._packed(prompts, "prompts")
        cont = as_ids(cont_ids, "cont_ids")
        req = pb.InfgramProbBatchRequest(prompts=encode_packed(pq), cont_ids=cont.astype(_I8).tobytes())
        rs = [decode_prob_batch(r, True) for r in self._all("InfgramProbBatch", req)]
        lens = np.stack([r.suffix_lens for r in rs])  # shards x prompts
        L = lens.max(axis=0)
        reached = lens == L
        pc = np.where(reached, np.stack([r.prompt_counts for r in rs]), 0).sum(axis=0).astype(np.int64)
        cc = np.where(reached, np.stack([r.cont_counts for r in rs]), 0).sum(axis=0).astype(np.int64)
        return ProbBatchResult(pc, cc, _probs(pc, cc), L.astype(np.int64))

    # -- next-token distributions --------------------------------------------------------------

    @staticmethod
    def _ntd_request(cls, prompts_or_query, max_support):
        req = cls(**prompts_or_query)
        if max_support is not None:
            req.max_support = int(max_support)
        return req

    def ntd(self, prompt, max_support: int | None = None) -> NextTokenDistribution:
        ids = self._ids(prompt, "prompt")
        req = self._ntd_request(pb.NextTokenDistributionRequest, {"prompt": self._query(ids)}, max_support)
        return _merge_dists([decode_dist(r.distribution) for r in self._all("NextTokenDistribution", req)],
                            max_support=max_support)

    def ntd_batch(self, prompts, max_support: int | None = None) -> list[NextTokenDistribution]:
        pq = self._packed(prompts, "prompts")
        req = self._ntd_request(pb.NextTokenDistributionBatchRequest, {"prompts": encode_packed(pq)}, max_support)
        per_shard = [decode_packed_dists(r.distributions, False) for r in self._all("NextTokenDistributionBatch", req)]
        return [_merge_dists(list(ds), max_support=max_support) for ds in zip(*per_shard)] if len(pq) else []

    def infgram_ntd(self, prompt, max_support: int | None = None) -> InfgramNtdResult:
        ids = self._ids(prompt, "prompt")
        req = self._ntd_request(pb.InfgramNextTokenDistributionRequest, {"prompt": self._query(ids)}, max_support)
        rs = self._all("InfgramNextTokenDistribution", req)
        L = max(int(r.suffix_len) for r in rs)
        return _merge_dists([decode_dist(r.distribution) for r in rs if int(r.suffix_len) == L], suffix_len=L,
                            max_support=max_support)

    def infgram_ntd_batch(self, prompts, max_support: int | None = None) -> list[InfgramNtdResult]:
        pq = self._packed(prompts, "prompts")
        req = self._ntd_request(pb.InfgramNextTokenDistributionBatchRequest, {"prompts": encode_packed(pq)}, max_support)
        per_shard = [decode_packed_dists(r.distributions, True) for r in self._all("InfgramNextTokenDistributionBatch", req)]
        out = []
        for ds in zip(*per_shard):
            L = max(d.suffix_len for d in ds)
            out.append(_merge_dists([d for d in ds if d.suffix_len == L], suffix_len=L, max_support=max_support))
        return out

    # -- documents -----------------------------------------------------------------------------

    def _global_doc(self, sh: _Shard, doc: Document) -> Document:
        return dataclasses.replace(doc, doc_ix=doc.doc_ix + sh.doc_offset, shard=doc.shard + sh.shard_offset)

    def search_docs(self, query, max_docs: int = 10, max_disp_len: int = 1000) -> SearchResult:
        ids = self._ids(query)
        req = pb.SearchDocumentsRequest(query=self._query(ids), max_docs=int(max_docs), max_disp_len=int(max_disp_len))
        if not self._ready:
            self._connect()
        timeout = self._deadline()
        count, approx, docs = 0, False, []
        results = []
        streams = [(sh, sh.client._stream("SearchDocuments", req, timeout)) for sh in self._shards]
        errors = []
        for sh, stream in streams:
            try:
                msgs = list(stream)
            except grpc.RpcError as exc:
                errors.append(self._error(sh, exc))
                continue
            results.append((sh, msgs))
        if errors:
            for e in errors:
                if isinstance(e, ShardUnavailableError):
                    raise e
            raise errors[0]
        for sh, msgs in results:
            for m in msgs:
                if m.WhichOneof("item") == "summary":
                    count += int(m.summary.count)
                    approx = approx or bool(m.summary.approx)
                else:
                    docs.append(self._global_doc(sh, decode_document(m.document)))
        return SearchResult(count=count, documents=docs[: int(max_docs)], approx=approx)

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


# ------------------------------------------------------------------------------------------------
# Merging helpers


def _probs(pc: np.ndarray, cc: np.ndarray) -> np.ndarray:
    out = np.full(len(pc), -1.0, dtype=np.float64)
    nz = pc > 0
    out[nz] = cc[nz] / pc[nz]
    return out


def _merge_dists(dists: list, suffix_len: int | None = None, max_support: int | None = None):
    """Sum distributions token by token (tokens ascending).

    Exact distributions merge exactly. With max_support, one index samples when the prompt's
    total count exceeds max_support (with a sampling unit chosen from that total); here each
    shard server sampled by its own count, so the merged counts are the sum of the shards'
    estimates: prompt_count stays exact, counts still sum to it, and approx is set exactly when
    one index would set it (total count > max_support).
    """
    pc = sum(int(d.prompt_count) for d in dists)
    ec = sum(int(d.end_count) for d in dists)
    approx = any(bool(d.approx) for d in dists) or (max_support is not None and pc > int(max_support))
    nonempty = [d for d in dists if len(d.tokens)]
    if len(nonempty) == 1:
        tokens = np.asarray(nonempty[0].tokens, dtype=np.int64)
        counts = np.asarray(nonempty[0].counts, dtype=np.int64)
    elif not nonempty:
        tokens = counts = np.zeros(0, dtype=np.int64)
    else:
        t = np.concatenate([np.asarray(d.tokens, dtype=np.int64) for d in nonempty])
        c = np.concatenate([np.asarray(d.counts, dtype=np.int64) for d in nonempty])
        order = np.argsort(t, kind="stable")
        t, c = t[order], c[order]
        starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
        tokens, counts = t[starts], np.add.reduceat(c, starts)
    if suffix_len is None:
        return NextTokenDistribution(prompt_count=pc, tokens=tokens, counts=counts, end_count=ec, approx=approx)
    return InfgramNtdResult(prompt_count=pc, tokens=tokens, counts=counts, end_count=ec, approx=approx, suffix_len=int(suffix_len))
