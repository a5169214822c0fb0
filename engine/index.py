"""NgramIndex: one or more index directories (many shards) answering exact queries.

Every public method validates its arguments here, converts token ids to kernel keys, and calls
a kernel from engine.kernels.suffix; kernels never see bad input.
"""

from __future__ import annotations

import itertools
import os
import resource
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from engine.storage import integrity
from engine.kernels import disk as disk_kernels
from engine.kernels import suffix as kernels
from engine.errors import IndexFormatError, InvalidQueryError, TokenizerError, TokenizerMismatchError
from engine.format import (
    MANIFEST_NAME,
    STATE_DIR,
    Shard,
    check_vocab_size,
    discover_shards,
    infer_token_width,
    open_shard,
    read_manifest,
    read_in_full,
    separator_id,
)
from engine.results import (Document, FindResult, InfgramNtdResult, InfgramProbResult, NextTokenDistribution,
                            PackedQueries, ProbBatchResult, ProbResult, SearchResult)

_INT64 = np.dtype(np.int64)
_BOOL_TYPES = frozenset((bool, np.bool_))
DEFAULT_MAX_DISP_LEN = 1000


# Calls on token 0 that compile every kernel of the queries (QUERY_PROBES, NgramIndex.warmup) and of
# longest matches, attribution and CNF search (NGRAM_PROBES, warmup_ngrams); engine.warmup splits them
# among worker processes. ntd with max_support=2 runs the sampling kernel where token 0 is frequent.
_P = [0]
QUERY_PROBES = (
    ("count", (_P,), {}), ("prob", (_P, 0), {}), ("infgram_prob", (_P, 0), {}), ("find", (_P,), {}),
    ("ntd", (_P,), {}), ("ntd", (_P,), {"max_support": 2}), ("infgram_ntd", (_P,), {}),
    ("count_batch", ([_P, _P],), {}), ("prob_batch", ([_P], [0]), {}), ("infgram_prob_batch", ([_P], [0]), {}),
    ("_on_disk_probe", (_P,), {}),
)
NGRAM_PROBES = (
    ("longest_matches", (_P,), {"infgram": True}), ("attribute", (_P,), {"min_len": 1, "max_docs": 1}),
    ("search_docs_cnf", ([[_P], [_P]],), {"max_docs": 1, "max_clause_freq": 1}),
)


class NgramIndex:
    """Exact n-gram, infini-gram and document queries over memory-mapped suffix-array shards.

    Open with :meth:`open`. Queries are token ids (a sequence or numpy array of ints) or text
    (a ``str``, tokenized with the index's own tokenizer). Thread-safe: kernels release the GIL.
    """

    forwards_requests = False  # it computes its answers here (engine.backend.QueryBackend)

    def __init__(self, shards: list[Shard], *, token_width: int, vocab_size: int, eos_token_id: int | None,
                 tokenizer=None, manifests: list[dict | None] | None = None, paths: list[Path] | None = None,
                 load: str = "mmap", directories: list[tuple[np.ndarray, str] | None] | None = None):
        self._shards = shards
        self.token_width = token_width
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id
        self.tokenizer = tokenizer
        self.manifests = manifests or []
        self.paths = paths or []
        self.load = load
        self.separator_id = separator_id(token_width)
        self._ds = tuple(s.tokenized for s in shards)
        self._sa = tuple(s.table for s in shards)
        self._ps = np.array([s.ptr_size for s in shards], dtype=np.int64)
        self._dirs, self.directory_sources = self._directories(shards, directories or [None] * len(shards))
        # The leading arguments of every kernel over the whole index: the shard table holds the
        # addresses of the arrays above, which this object keeps alive.
        self._search = (kernels.shard_table(list(zip(self._ds, self._sa, self._ps, self._dirs))), token_width)
        # count() and prob() take the index as one int (kernels.index_handle): numba unboxes one
        # argument instead of five on every call.
        self._handle = kernels.index_handle(self._search[0], token_width, self.vocab_size, self.separator_id,
                                            slow_ns=_DISK_NS)
        self._handle_address = self._handle.ctypes.data
        self._disk = _DiskMode()
        self._page_requests = None  # engine.storage.pagecache.PageRequests, made on first use
        doc_counts = np.array([s.num_docs for s in shards], dtype=np.int64)
        self._doc_starts = np.concatenate([[0], np.cumsum(doc_counts)])
        self._max_distinct = min(self.vocab_size, self.separator_id) + 2
        self._warm = False
        self._warm_lock = threading.Lock()

    def _directories(self, shards: list[Shard], loaded) -> tuple[tuple[np.ndarray, ...], list[str]]:
        """Each shard's search directory: ``loaded`` (array, where it came from) where given, else
        built in memory now (reading every sampled suffix), with a one-line hint to store them."""
        from engine.storage import directory

        dirs, sources, started = [], [], time.perf_counter()
        for s, found in zip(shards, loaded):
            if found is None:
                with read_in_full(s.tokenized, s.table):
                    found = (kernels.build_directory(s.tokenized, s.table, s.ptr_size, s.token_width,
                                                     str(s.directory / f"table.{s.number}")), "memory")
            dirs.append(found[0])
            sources.append(found[1])
        built = [s for s, src in zip(shards, sources) if src == "memory"]
        if built:
            directory.hint(sorted({str(s.directory) for s in built}), max(s.num_positions for s in built),
                           time.perf_counter() - started)
        return tuple(dirs), sources

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, paths: str | os.PathLike | Iterable[str | os.PathLike], load: str = "mmap", *,
             tokenizer=None, token_width: int | None = None, vocab_size: int | None = None,
             eos_token_id: int | None = None, directory_budget: int | None = None) -> "NgramIndex":
        """Open one or more index directories.

        Everything an index's manifest records is read from it. A directory built by infini-gram
        (no manifest) opens too: the token width is inferred from file sizes unless given, and
        ``vocab_size`` defaults to the largest id the width allows. ``load`` is "mmap" (default:
        pages come from the OS cache on demand) or "ram" (read everything into memory now).

        Each shard's search directory is read from its file (``directory.N``, written by ``ngram
        build`` or ``ngram index-directory``); where there is none it is built in memory, with
        samples fitting ``directory_budget`` bytes per shard (default: engine.storage.directory.DEFAULT_BUDGET).
        """
        if load not in ("mmap", "ram"):
            raise InvalidQueryError(f"load must be 'mmap' or 'ram', not {load!r}")
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        paths = [Path(p) for p in paths]
        if not paths:
            raise InvalidQueryError("give at least one index directory")
        from engine.storage import directory

        shards: list[Shard] = []
        dirs: list[tuple[np.ndarray, str] | None] = []
        manifests: list[dict | None] = []
        widths, vocabs, eoses, fingerprints = set(), set(), set(), set()
        tok = tokenizer
        for path in paths:
            if (path / STATE_DIR).exists() and not (path / MANIFEST_NAME).exists():
                raise IndexFormatError(
                    f"{path} is an unfinished build (its .build folder remains); rerun the same `ngram build` "
                    "command to finish it"
                )
            manifest = read_manifest(path) if path.is_dir() else None
            numbers = discover_shards(path)
            if manifest is not None:
                width = manifest["token_width"]
                if len(manifest["shards"]) != len(numbers):
                    raise IndexFormatError(
                        f"{path}: manifest lists {len(manifest['shards'])} shards but {len(numbers)} are on disk"
                    )
                vocabs.add(manifest["vocab_size"])
                eoses.add(manifest.get("eos_token_id"))
                fingerprints.add(manifest.get("tokenizer_fingerprint"))
                if tok is None and manifest.get("tokenizer"):
                    tok = _DeferredTokenizer(manifest["tokenizer"], path / "tokenizer")
            else:
                width = token_width or infer_token_width(path)
            if token_width is not None and token_width != width:
                raise IndexFormatError(f"{path} has token width {width}, but token_width={token_width} was given")
            widths.add(width)
            for n in numbers:
                shard = open_shard(path, n, width, load)
                integrity.check_shard(shard)
                if manifest is not None:
                    _check_against_manifest(shard, manifest["shards"][n], path)
                shards.append(shard)
            dirs.extend(directory.open_directories(path, shards[len(dirs):], load, directory_budget))
            manifests.append(manifest)
        if len(widths) != 1:
            raise IndexFormatError(f"the directories have different token widths {sorted(widths)}; open them apart")
        if len(fingerprints - {None}) > 1:
            raise TokenizerMismatchError("the directories were built with different tokenizers; open them apart")
        width = widths.pop()
        if vocab_size is None:
            known = vocabs - {None}
            if len(known) > 1:
                raise IndexFormatError(f"the directories disagree on vocab_size {sorted(known)}")
            vocab_size = known.pop() if known else separator_id(width)
        check_vocab_size(vocab_size, width, "NgramIndex.open", InvalidQueryError)
        if eos_token_id is None and len(eoses - {None}) == 1:
            eos_token_id = (eoses - {None}).pop()
        return cls(shards, token_width=width, vocab_size=vocab_size, eos_token_id=eos_token_id, tokenizer=tok,
                   manifests=manifests, paths=paths, load=load, directories=dirs)

    def first_token_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi): each shard's suffix-array range of every first token, as [shard, key] arrays
        (token widths 1 and 2 only)."""
        tables = [kernels.first_token_ranges(d) for d in self._dirs]
        return np.stack([lo for lo, _ in tables]), np.stack([hi for _, hi in tables])

    # ------------------------------------------------------------------ facts
    @property
    def tokenizer(self):
        """The index's tokenizer (loaded from the manifest's spec on first use: a tenth of a second
        for a large vocabulary, which an open that only counts token ids need not spend), or None."""
        tok = self._tokenizer
        if isinstance(tok, _DeferredTokenizer):
            tok = self._tokenizer = tok.load()
        return tok

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self._tokenizer = value

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    @property
    def num_tokens(self) -> int:
        """Positions in the suffix arrays: tokens plus one separator per document."""
        return sum(s.num_positions for s in self._shards)

    @property
    def num_docs(self) -> int:
        return int(self._doc_starts[-1])

    @property
    def shards(self) -> tuple[Shard, ...]:
        return tuple(self._shards)

    @property
    def tokenizer_fingerprint(self) -> str | None:
        return self.tokenizer.fingerprint() if self.tokenizer is not None else None

    @property
    def manifest(self) -> dict | None:
        return self.manifests[0] if len(self.manifests) == 1 else None

    def info(self) -> dict:
        return {
            "paths": [str(p) for p in self.paths],
            "num_shards": self.num_shards,
            "num_tokens": self.num_tokens,
            "num_docs": self.num_docs,
            "token_width": self.token_width,
            "vocab_size": self.vocab_size,
            "eos_token_id": self.eos_token_id,
            "separator_id": self.separator_id,
            "tokenizer": self.tokenizer.kind if self.tokenizer is not None else None,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "load": self.load,
        }

    def warmup(self) -> None:
        """Compile (or load from cache) every kernel the queries use, so the first query is fast."""
        with self._warm_lock:
            if self._warm:
                return
            self.probe(QUERY_PROBES)
            self._warm = True

    def probe(self, calls) -> None:
        """Run probe ``calls`` ((method, args, kwargs), see QUERY_PROBES): they compile kernels.

        Each runs in memory mode (compiling is slow and reads files, which would look like a cold
        index to _DiskMode and send the next probes to the on-disk searches instead of compiling the
        in-memory ones); the mode starts afresh afterwards."""
        for name, args, kwargs in calls:
            self._disk.on_disk = False
            getattr(self, name)(*args, **kwargs)
        self._disk = _DiskMode()

    def __repr__(self) -> str:
        return (f"NgramIndex({[str(p) for p in self.paths]}, shards={self.num_shards}, tokens={self.num_tokens}, "
                f"docs={self.num_docs}, u{8 * self.token_width})")

    def __reduce__(self):
        # Pickle by path: a worker process reopens the same files instead of copying them.
        return (_reopen, ([str(p) for p in self.paths], self.load, self.token_width, self.vocab_size,
                          self.eos_token_id))

    # ------------------------------------------------------------------ validation
    def tokenize(self, text: str) -> np.ndarray:
        if self.tokenizer is None:
            raise TokenizerError("this index has no tokenizer; pass token ids instead of text")
        return np.asarray(self.tokenizer.encode(text), dtype=np.int64)

    def detokenize(self, ids) -> str:
        if self.tokenizer is None:
            raise TokenizerError("this index has no tokenizer, so ids cannot be turned back into text")
        return self.tokenizer.decode([int(i) for i in self._ids(ids, allow_empty=True)])

    def _ids(self, query, *, allow_empty: bool, name: str = "query") -> np.ndarray:
        """Validated int64 token ids of a query given as ids or text."""
        # Fast path for the usual query (a list or int64 array of valid ids): a few attribute checks
        # and one compiled pass; anything else, or anything wrong, takes the general path below.
        ids = _plain_ids(query)
        if ids is not None and kernels.ids_ok(ids, self.vocab_size, self.separator_id):
            return ids
        if isinstance(query, str):
            ids = self.tokenize(query)
        elif isinstance(query, (bytes, bytearray)):
            raise InvalidQueryError(f"{name} must be token ids or str text, not bytes; decode it first")
        else:
            if isinstance(query, (list, tuple)) and any(isinstance(t, (bool, np.bool_)) for t in query):
                # numpy would turn True / False among ints into ids 1 / 0
                raise InvalidQueryError(f"{name} holds a bool; pass int token ids")
            try:
                ids = np.asarray(query)
            except (TypeError, ValueError) as exc:
                raise InvalidQueryError(f"{name} must be a sequence of int token ids or str text ({exc})") from exc
            if ids.ndim != 1:
                if ids.ndim == 0:
                    raise InvalidQueryError(f"{name} must be a sequence of token ids; wrap a single id in a list")
                raise InvalidQueryError(f"{name} must be one-dimensional, got shape {ids.shape}")
            if ids.size == 0:
                ids = ids.astype(np.int64)
            elif ids.dtype.kind not in "iu":
                if ids.dtype.kind == "f" and np.all(np.mod(ids, 1) == 0):
                    raise InvalidQueryError(f"{name} holds floats; pass integer token ids")
                raise InvalidQueryError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
            ids = ids.astype(np.int64, copy=False)
        if ids.size == 0 and not allow_empty:
            raise InvalidQueryError(f"{name} is empty; give at least one token")
        if ids.size:
            self._check_range(ids, name)
        return ids

    def _check_range(self, ids: np.ndarray, name: str) -> None:
        if ids.dtype == np.int64 and kernels.ids_ok(ids, self.vocab_size, self.separator_id):
            return  # the common case, in one compiled pass; the checks below only word the error
        low, high = ids.min(), ids.max()
        if high >= min(self.vocab_size, self.separator_id) and np.any(ids == self.separator_id):
            raise InvalidQueryError(
                f"{name} holds token id {self.separator_id}, the document separator, which never occurs in a query"
            )
        if low < 0 or high >= self.vocab_size:
            bad = int(low if low < 0 else high)
            raise InvalidQueryError(f"{name} holds token id {bad}, outside the vocabulary 0..{self.vocab_size - 1}")

    def _token(self, token, name: str) -> int:
        if isinstance(token, (bool, np.bool_)) or not isinstance(token, (int, np.integer)):
            raise InvalidQueryError(f"{name} must be one int token id, got {type(token).__name__}")
        if not (0 <= token < self.vocab_size and token != self.separator_id):
            if not -(1 << 63) <= token < (1 << 63):  # beyond int64: numpy would raise OverflowError
                raise InvalidQueryError(f"{name} holds token id {token}, outside the vocabulary "
                                        f"0..{self.vocab_size - 1}")
            self._check_range(np.array([token], dtype=np.int64), name)
        return int(token)

    def _keys(self, ids: np.ndarray) -> np.ndarray:
        if ids.dtype == np.int64:
            return kernels.ids_to_keys(ids, self.token_width)
        return kernels.tokens_to_keys(ids, self.token_width)

    def _packed(self, queries, *, allow_empty: bool, name: str = "queries") -> PackedQueries:
        if isinstance(queries, PackedQueries):
            tokens = np.asarray(queries.tokens, dtype=np.int64)
            offsets = np.asarray(queries.offsets, dtype=np.int64)
            if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(tokens) \
                    or np.any(np.diff(offsets) < 0):
                raise InvalidQueryError("PackedQueries offsets must start at 0, never decrease and end at len(tokens)")
            if not allow_empty and np.any(np.diff(offsets) == 0):
                raise InvalidQueryError(f"{name} holds an empty query; give at least one token each")
            if tokens.size:
                self._check_range(tokens, name)
            return PackedQueries(tokens, offsets)
        if isinstance(queries, (str, bytes)) or not isinstance(queries, Sequence | np.ndarray):
            raise InvalidQueryError(f"{name} must be a list of queries or PackedQueries")
        packed = _pack_id_lists(queries)
        if packed is not None and (allow_empty or np.all(np.diff(packed.offsets) > 0)) and \
                kernels.ids_ok(packed.tokens, self.vocab_size, self.separator_id):
            return packed
        # Text, mixed or invalid queries: one by one, so an error names the query at fault.
        return PackedQueries.from_list(
            [self._ids(q, allow_empty=allow_empty, name=f"{name}[{i}]") for i, q in enumerate(queries)]
        )

    # ------------------------------------------------------------------ counting
    def _ranges(self, ids: np.ndarray, on_disk: bool = False) -> tuple[int, np.ndarray, np.ndarray]:
        keys = self._keys(ids)
        lo = np.empty(self.num_shards, dtype=np.int64)
        hi = np.empty(self.num_shards, dtype=np.int64)
        find = disk_kernels.find_ranges_on_disk if on_disk else kernels.find_ranges
        total = find(*self._search, keys, 0, len(keys), lo, hi)
        return int(total), lo, hi

    def find(self, query) -> FindResult:
        """Occurrences of ``query`` as one suffix-array range per shard (empty query: everything)."""
        total, lo, hi = self._ranges(self._ids(query, allow_empty=True))
        return FindResult(count=total, segments=tuple((int(a), int(b)) for a, b in zip(lo, hi)))

    def count(self, query) -> int:
        """Number of occurrences of ``query`` in the whole index (an empty query counts every position)."""
        ids = _plain_ids(query)
        if ids is not None:  # the usual query: count_at validates it too, -1 meaning "explain the error"
            if self._disk.on_disk:
                t0 = _now_ns()
                n = self._count_on_disk(ids)
                self._disk.ended(True, t0)
            else:
                n = kernels.count_at(self._handle_address, ids)
                if n < -1:  # the search took over _DISK_NS (kernels.decode_count)
                    n = -2 - n
                    self._disk.took_long()
            if n >= 0:
                return int(n)
        ids = self._ids(query, allow_empty=True)
        return kernels.decode_count(int(kernels.count_at(self._handle_address, ids)))[0]

    def _count_on_disk(self, ids: np.ndarray) -> int:
        """count() by engine.kernels.disk's search (-1 for ids count_at would refuse). Its few
        microseconds of Python matter little next to the disk, and one kernel fewer to compile does."""
        if not kernels.ids_ok(ids, self.vocab_size, self.separator_id):
            return -1
        return self._ranges(ids, on_disk=True)[0]

    def _on_disk_probe(self, query) -> None:
        """count() and ntd() (exact and capped) by the searches they run while the index is on disk:
        the warm-up's probe that compiles them."""
        ids = self._ids(query, allow_empty=True)
        self._count_on_disk(ids)
        self._prob_counts_on_disk(ids, int(ids[0]) if len(ids) else 0, True)
        self._distribution_on_disk(ids, None, False)
        self._distribution_on_disk(ids, 2, False)

    def count_batch(self, queries) -> np.ndarray:
        """Counts of many queries (a list of queries, or PackedQueries), computed in parallel."""
        packed = self._packed(queries, allow_empty=True)
        out = np.empty(len(packed), dtype=np.int64)
        kernels.count_batch_keys(*self._search,
                                 self._keys(packed.tokens), packed.offsets, out)
        return out

    # ------------------------------------------------------------------ probabilities
    def _prob_counts(self, prompt, cont_id, use_suffix: bool) -> tuple[int, int, int]:
        """(prompt count, prompt + cont count, prompt length used) of one validated query."""
        ids = _plain_ids(prompt)
        if ids is not None and type(cont_id) is int and -1 < cont_id < 1 << 62:  # the usual query, validated there
            counts = self._prob_counts_of_ids(ids, cont_id, use_suffix)
            if counts[0] >= 0:
                return counts
        ids = self._ids(prompt, allow_empty=True, name="prompt")
        return self._prob_counts_of_ids(ids, self._token(cont_id, "cont_id"), use_suffix)

    def _prob_counts_of_ids(self, ids: np.ndarray, cont: int, use_suffix: bool) -> tuple[int, int, int]:
        """_prob_counts by the searches that suit where the pages are (see _DiskMode); all -1 for ids
        or a cont the kernels refuse."""
        if self._disk.on_disk:
            t0 = _now_ns()
            counts = self._prob_counts_on_disk(ids, cont, use_suffix)
            self._disk.ended(True, t0)
            return counts
        prompt_count, cont_count, used = kernels.prob_at(self._handle_address, ids, cont, use_suffix)
        if prompt_count < -1:  # the searches took over _DISK_NS (kernels.decode_count)
            prompt_count = -2 - prompt_count
            self._disk.took_long()
        return int(prompt_count), int(cont_count), int(used)

    def _prob_counts_on_disk(self, ids: np.ndarray, cont: int, use_suffix: bool) -> tuple[int, int, int]:
        """kernels.prob_at's counts by engine.kernels.disk's search: the longest occurring suffix
        (exponential, then binary search over its length, as kernels.longest_suffix), then the
        prompt and prompt + cont, each search over every shard at once."""
        if not (kernels.ids_ok(ids, self.vocab_size, self.separator_id)
                and kernels.ids_ok(np.array([cont], dtype=np.int64), self.vocab_size, self.separator_id)):
            return -1, -1, -1
        keys = self._keys(np.append(ids, np.int64(cont)))
        n = len(ids)
        lo = np.empty(self.num_shards, dtype=np.int64)
        hi = np.empty(self.num_shards, dtype=np.int64)

        def count(start: int, stop: int) -> int:
            return int(disk_kernels.find_ranges_on_disk(*self._search, keys, start, stop, lo, hi))

        start = 0
        if use_suffix:
            good, probe = 0, 1
            while probe <= n and count(n - probe, n) > 0:
                good, probe = probe, probe * 2
            bad = min(probe, n + 1)
            while bad - good > 1:
                mid = (good + bad) >> 1
                good, bad = (mid, bad) if count(n - mid, n) > 0 else (good, mid)
            start = n - good
        return count(start, n), count(start, n + 1), n - start

    def prob(self, prompt, cont_id) -> ProbResult:
        """P(cont_id | prompt) by counting: count(prompt + cont) / count(prompt)."""
        prompt_count, cont_count, _ = self._prob_counts(prompt, cont_id, False)
        return ProbResult(prompt_count, cont_count, cont_count / prompt_count if prompt_count else -1.0)

    def _longest_suffix_len(self, ids: np.ndarray) -> int:
        return int(kernels.longest_suffix(*self._search,
                                          self._keys(ids), len(ids)))

    def infgram_prob(self, prompt, cont_id) -> InfgramProbResult:
        """P(cont_id | longest suffix of prompt that occurs); suffix_len says how long it was."""
        prompt_count, cont_count, suffix_len = self._prob_counts(prompt, cont_id, True)
        prob = cont_count / prompt_count if prompt_count else -1.0
        return InfgramProbResult(prompt_count, cont_count, prob, suffix_len=suffix_len)

    def prob_batch(self, prompts, cont_ids) -> ProbBatchResult:
        return self._prob_batch(prompts, cont_ids, use_suffix=False)

    def infgram_prob_batch(self, prompts, cont_ids) -> ProbBatchResult:
        return self._prob_batch(prompts, cont_ids, use_suffix=True)

    def _prob_batch(self, prompts, cont_ids, *, use_suffix: bool) -> ProbBatchResult:
        packed = self._packed(prompts, allow_empty=True, name="prompts")
        conts = np.asarray(cont_ids)
        if conts.ndim != 1 or len(conts) != len(packed) or (conts.size and conts.dtype.kind not in "iu"):
            raise InvalidQueryError(f"cont_ids must be {len(packed)} integer token ids, one per prompt")
        conts = conts.astype(np.int64)
        if conts.size:
            self._check_range(conts, "cont_ids")
        out = np.empty((len(packed), 3), dtype=np.int64)
        kernels.prob_batch_keys(*self._search,
                                self._keys(packed.tokens), packed.offsets, self._keys(conts), use_suffix, out)
        prompt_counts, cont_counts = out[:, 0].copy(), out[:, 1].copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            probs = np.where(prompt_counts > 0, cont_counts / np.maximum(prompt_counts, 1), -1.0)
        return ProbBatchResult(prompt_counts, cont_counts, probs, out[:, 2].copy() if use_suffix else None)

    # ------------------------------------------------------------------ distributions
    def _check_support(self, max_support) -> int | None:
        if max_support is None:
            return None
        if isinstance(max_support, bool) or not isinstance(max_support, (int, np.integer)) or max_support < 1:
            raise InvalidQueryError("max_support must be a positive int, or None for the exact distribution")
        return int(max_support)

    def _distribution(self, ids: np.ndarray, max_support: int | None, *, use_suffix: bool = False):
        """(prompt_count, tokens, counts, end_count, approx, prompt length used) of the tokens after
        ``ids`` (after its longest occurring suffix with ``use_suffix``)."""
        on_disk, t0 = self._disk.on_disk, _now_ns()
        distribution = self._distribution_on_disk if on_disk else self._distribution_in_memory
        result = distribution(ids, max_support, use_suffix)
        self._disk.ended(on_disk, t0)
        return result

    def _distribution_on_disk(self, ids: np.ndarray, max_support: int | None, use_suffix: bool):
        """_distribution by engine.kernels.disk's searches and walk, whose reads overlap. The exact
        distribution is the capped walk with unit 1 (each piece of a range is read to its end or
        credited whole when its first and last next tokens agree), not the run-by-run scan: the
        same answer, from reads that can be asked for a level at a time."""
        if use_suffix:
            ids = ids[len(ids) - self._longest_suffix_len(ids):]
        prompt_count, lo, hi = self._ranges(ids, on_disk=True)
        depth = len(ids) * self.token_width
        if max_support is not None and prompt_count > max_support:
            return (*self._sampled_distribution(prompt_count, lo, hi, depth, max_support, on_disk=True), len(ids))
        tokens, counts, end_count = self._walk(prompt_count, lo, hi, depth, 1, disk_kernels.sample_next_keys_on_disk)
        return prompt_count, tokens, counts, end_count, False, len(ids)

    def _distribution_in_memory(self, ids: np.ndarray, max_support: int | None, use_suffix: bool):
        if max_support is not None:
            if use_suffix:
                ids = ids[len(ids) - self._longest_suffix_len(ids):]
                use_suffix = False
            prompt_count, lo, hi = self._ranges(ids)
            if prompt_count > max_support:
                sampled = self._sampled_distribution(prompt_count, lo, hi, len(ids) * self.token_width, max_support)
                return (*sampled, len(ids))
        # The exact distribution, in one kernel call (suffix search, ranges, runs, ends, sorting by id).
        prompt_count, tokens, counts, end_count, used = kernels.next_tokens_ids(
            *self._search, ids, use_suffix,
            self._max_distinct, self.separator_id)
        if prompt_count < 0:
            raise IndexFormatError(
                f"{', '.join(map(str, self.paths))}: a shard has more distinct tokens after this prompt than the "
                "vocabulary allows (unsorted table or tokens past vocab_size); run `ngram verify` and rebuild it")
        return int(prompt_count), tokens, counts, int(end_count), False, int(used)

    def _split_ends(self, keys: np.ndarray, counts: np.ndarray):
        """Tokens sorted by id with their counts, and the count of document ends (separator / end of data)."""
        is_end = (keys < 0) | (keys == self.separator_id)
        end_count = int(counts[is_end].sum())
        tokens = kernels.tokens_to_keys(keys[~is_end], self.token_width)
        counts = counts[~is_end]
        order = np.argsort(tokens, kind="stable")
        return tokens[order], counts[order], end_count

    def _sampled_distribution(self, prompt_count, lo, hi, depth, max_support, on_disk: bool = False):
        """infini-gram's capped ntd (used when the prompt occurs more than max_support times): the
        smallest power-of-two ``unit`` with prompt_count <= unit * max_support, then its
        divide-and-sample walk over each shard's range (kernels.approx_next_keys). Counts are
        estimates that still sum to the exact prompt_count."""
        unit = 1
        while prompt_count > unit * max_support:
            unit <<= 1
        walk = disk_kernels.sample_next_keys_on_disk if on_disk else kernels.approx_next_keys
        tokens, counts, end_count = self._walk(prompt_count, lo, hi, depth, unit, walk)
        return int(prompt_count), tokens, counts, end_count, True

    def _walk(self, prompt_count, lo, hi, depth, unit, walk):
        """(tokens, counts, document ends) from ``walk`` (approx_next_keys or its on-disk form) over
        the ranges, its outputs grown until they hold every (key, weight) pair."""
        capacity = int(min(2 * (prompt_count // unit) + 256, 1 << 16))
        while True:
            keys = np.empty(capacity, dtype=np.int64)
            weights = np.empty(capacity, dtype=np.int64)
            n = walk(*self._search, lo, hi, depth, unit, keys, weights)
            if n <= capacity:
                break
            capacity = int(n)
        uniq, inverse = np.unique(keys[:n], return_inverse=True)
        counts = np.bincount(inverse, weights=weights[:n], minlength=len(uniq)).astype(np.int64)
        return self._split_ends(uniq, counts)

    def ntd(self, prompt, max_support: int | None = None) -> NextTokenDistribution:
        """Every distinct next token after ``prompt`` with its exact count (``max_support`` caps the scan
        the way infini-gram does, returning approx=True)."""
        ids = self._ids(prompt, allow_empty=True, name="prompt")
        prompt_count, tokens, counts, end_count, approx, _ = self._distribution(ids, self._check_support(max_support))
        return NextTokenDistribution(prompt_count, tokens, counts, end_count, approx)

    def infgram_ntd(self, prompt, max_support: int | None = None) -> InfgramNtdResult:
        """ntd of the longest suffix of ``prompt`` that occurs; suffix_len says how long it was."""
        ids = self._ids(prompt, allow_empty=True, name="prompt")
        max_support = self._check_support(max_support)
        prompt_count, tokens, counts, end_count, approx, suffix_len = self._distribution(ids, max_support,
                                                                                        use_suffix=True)
        return InfgramNtdResult(prompt_count, tokens, counts, end_count, approx, suffix_len=suffix_len)

    def ntd_batch(self, prompts, max_support: int | None = None) -> list[NextTokenDistribution]:
        packed = self._packed(prompts, allow_empty=True, name="prompts")
        return [self.ntd(packed[i], max_support) for i in range(len(packed))]

    def infgram_ntd_batch(self, prompts, max_support: int | None = None) -> list[InfgramNtdResult]:
        packed = self._packed(prompts, allow_empty=True, name="prompts")
        return [self.infgram_ntd(packed[i], max_support) for i in range(len(packed))]

    # ------------------------------------------------------------------ documents
    def _check_disp_len(self, max_disp_len) -> int:
        if isinstance(max_disp_len, bool) or not isinstance(max_disp_len, (int, np.integer)) or max_disp_len < 1:
            raise InvalidQueryError("max_disp_len must be a positive int (tokens to return per document)")
        return int(max_disp_len)

    def _check_shard(self, shard) -> Shard:
        if isinstance(shard, bool) or not isinstance(shard, (int, np.integer)) or not 0 <= shard < self.num_shards:
            raise InvalidQueryError(f"shard must be an int in 0..{self.num_shards - 1}")
        return self._shards[int(shard)]

    def search_docs(self, query, max_docs: int = 10, max_disp_len: int = DEFAULT_MAX_DISP_LEN) -> SearchResult:
        """The documents holding the first ``max_docs`` occurrences of ``query`` (in suffix-array order),
        each as a window of at most ``max_disp_len`` tokens around the match."""
        ids = self._ids(query, allow_empty=False)
        if isinstance(max_docs, bool) or not isinstance(max_docs, (int, np.integer)) or max_docs < 0:
            raise InvalidQueryError("max_docs must be a non-negative int")
        max_disp_len = self._check_disp_len(max_disp_len)
        on_disk, t0 = self._disk.on_disk, _now_ns()
        total, lo, hi = self._ranges(ids, on_disk=on_disk)
        picks = []
        for s in range(self.num_shards):
            take = min(int(hi[s] - lo[s]), max_docs - len(picks))
            picks.extend((s, rank) for rank in range(int(lo[s]), int(lo[s]) + take))
        if on_disk and picks:
            self._ask_for_documents(picks, max_disp_len)
        documents = [self._doc_at_rank(s, rank, max_disp_len, needle_len=len(ids)) for s, rank in picks]
        self._disk.ended(on_disk, t0)
        return SearchResult(count=total, documents=documents, approx=False)

    def _ask_for_documents(self, picks: list[tuple[int, int]], max_disp_len: int) -> None:
        """On a cold index, ask the disk for the pages that reading the documents at ``picks``
        ((shard, rank) pairs) will touch, a round at a time, every document's together: their
        suffix-array entries; the offsets-file pages of a bisection per document, in lockstep; then
        their token windows and metadata offsets; then their metadata. The reads that follow (the
        usual code) find the pages in memory or on their way instead of faulting one at a time."""
        from engine.storage.pagecache import PageRequests

        if self._page_requests is None:
            self._page_requests = PageRequests()
        ask, tw = self._page_requests.ask, self.token_width
        ptrs = []
        for s in sorted({s for s, _ in picks}):
            ranks = [r for t, r in picks if t == s]
            shard = self._shards[s]
            ask(shard.table, min(ranks) * shard.ptr_size, (max(ranks) - min(ranks) + 1) * shard.ptr_size)
        out = np.empty(1, dtype=np.int64)
        for s, rank in picks:
            kernels.pointers_at(self._shards[s].table, self._shards[s].ptr_size, rank, rank + 1, out)
            ptrs.append(int(out[0]))
        # The last document start at or before each pointer: bisections in lockstep.
        low = [0] * len(picks)
        high = [self._shards[s].num_docs for s, _ in picks]
        while True:
            pending = [(i, (low[i] + high[i]) >> 1) for i in range(len(picks)) if high[i] - low[i] > 1]
            if not pending:
                break
            for i, mid in pending:
                ask(self._shards[picks[i][0]].offsets, mid * 8, 8)
            for i, mid in pending:
                if int(self._shards[picks[i][0]].offsets[mid]) <= ptrs[i]:
                    low[i] = mid
                else:
                    high[i] = mid
        half = (max_disp_len // 2) * tw
        for i, (s, _) in enumerate(picks):
            shard = self._shards[s]
            ask(shard.offsets, low[i] * 8, 16)
            ask(shard.tokenized, ptrs[i] - half, (max_disp_len + 1) * tw)
            if shard.metaoffsets is not None:
                ask(shard.metaoffsets, low[i] * 8, 16)
        for i, (s, _) in enumerate(picks):
            shard = self._shards[s]
            if shard.metadata is not None and shard.metaoffsets is not None and low[i] < len(shard.metaoffsets):
                start = int(shard.metaoffsets[low[i]])
                end = int(shard.metaoffsets[low[i] + 1]) if low[i] + 1 < len(shard.metaoffsets) else len(shard.metadata)
                ask(shard.metadata, start, end - start)

    def iter_doc_ranks(self, query):
        """(shard, rank) of every occurrence of ``query``, in suffix-array order."""
        _, lo, hi = self._ranges(self._ids(query, allow_empty=False))
        for s in range(self.num_shards):
            for rank in range(int(lo[s]), int(hi[s])):
                yield s, rank

    def get_doc_by_rank(self, shard: int, rank: int, max_disp_len: int = DEFAULT_MAX_DISP_LEN) -> Document:
        """The document holding the suffix at ``rank`` of ``shard``'s suffix array."""
        sh = self._check_shard(shard)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < sh.num_positions:
            raise InvalidQueryError(f"rank must be an int in 0..{sh.num_positions - 1}")
        return self._doc_at_rank(int(shard), int(rank), self._check_disp_len(max_disp_len), needle_len=0)

    def get_doc_by_ptr(self, shard: int, ptr: int, max_disp_len: int = DEFAULT_MAX_DISP_LEN) -> Document:
        """The document holding byte offset ``ptr`` of ``shard``'s tokenized file."""
        sh = self._check_shard(shard)
        if isinstance(ptr, bool) or not isinstance(ptr, (int, np.integer)) or not 0 <= ptr < len(sh.tokenized) \
                or ptr % self.token_width:
            raise InvalidQueryError(
                f"ptr must be a multiple of {self.token_width} in 0..{len(sh.tokenized) - 1}")
        return self._doc_at_ptr(int(shard), int(ptr), self._check_disp_len(max_disp_len), needle_len=0)

    def get_doc_by_ix(self, doc_ix: int, max_disp_len: int = DEFAULT_MAX_DISP_LEN) -> Document:
        """Document number ``doc_ix`` counted over all shards in order, from its start."""
        if isinstance(doc_ix, bool) or not isinstance(doc_ix, (int, np.integer)) or not 0 <= doc_ix < self.num_docs:
            raise InvalidQueryError(f"doc_ix must be an int in 0..{self.num_docs - 1}")
        max_disp_len = self._check_disp_len(max_disp_len)
        s = int(np.searchsorted(self._doc_starts, doc_ix, side="right") - 1)
        local = int(doc_ix - self._doc_starts[s])
        start, end = self._doc_bounds(s, local)
        tokens = self._tokens(s, start, min(end, start + max_disp_len * self.token_width))
        return Document(doc_ix=int(doc_ix), doc_len=(end - start) // self.token_width, disp_len=len(tokens),
                        needle_offset=0, token_ids=tokens, metadata=self._shards[s].doc_metadata(local), shard=s)

    def _doc_bounds(self, s: int, local_doc: int) -> tuple[int, int]:
        """Byte range of a document's tokens (after its separator)."""
        shard = self._shards[s]
        start = int(shard.offsets[local_doc]) + self.token_width
        end = int(shard.offsets[local_doc + 1]) if local_doc + 1 < shard.num_docs else len(shard.tokenized)
        if not start <= end <= len(shard.tokenized) or start % self.token_width or end % self.token_width:
            # Only a damaged offset file gets here (a built one increases, inside the data, aligned).
            raise IndexFormatError(
                f"{shard.directory / f'offset.{shard.number}'}: document {local_doc} spans bytes {start - self.token_width}"
                f"..{end}, not a run of whole tokens inside the data; run `ngram verify` and rebuild the index")
        return start, end

    def _tokens(self, s: int, start: int, end: int) -> np.ndarray:
        raw = np.asarray(self._shards[s].tokenized[start:end])
        return raw.view(f"<u{self.token_width}").astype(np.int64)

    def _doc_at_rank(self, s: int, rank: int, max_disp_len: int, needle_len: int) -> Document:
        ptr = np.empty(1, dtype=np.int64)
        kernels.pointers_at(self._shards[s].table, self._shards[s].ptr_size, rank, rank + 1, ptr)
        return self._doc_at_ptr(s, int(ptr[0]), max_disp_len, needle_len)

    def _doc_at_ptr(self, s: int, ptr: int, max_disp_len: int, needle_len: int) -> Document:
        shard = self._shards[s]
        if not 0 <= ptr < len(shard.tokenized) or ptr % self.token_width:
            # get_doc_by_ptr checks its argument, so this pointer came from a damaged table.
            raise IndexFormatError(
                f"{shard.directory / f'table.{shard.number}'} holds pointer {ptr}, outside tokenized.{shard.number} "
                f"or between tokens; run `ngram verify` and rebuild the index")
        # The key as the array's own dtype: with a Python int numpy would compare in float64 and first
        # convert the whole offsets array (20 ms for 10M documents, and every page of the file cold).
        local = int(np.searchsorted(shard.offsets, shard.offsets.dtype.type(ptr), side="right") - 1)
        start, end = self._doc_bounds(s, local)
        # infini-gram's window: up to max_disp_len // 2 tokens before the pointer and
        # (max_disp_len + 1) // 2 from it on, each side clipped to the document (not shifted).
        # A pointer at the separator belongs to the document it opens (needle_offset 0 there,
        # where infini-gram's unsigned arithmetic wraps around).
        tw = self.token_width
        win_start = max(start, ptr - (max_disp_len // 2) * tw)
        win_end = max(win_start, min(end, ptr + ((max_disp_len + 1) // 2) * tw))
        tokens = self._tokens(s, win_start, win_end)
        return Document(doc_ix=int(self._doc_starts[s] + local), doc_len=(end - start) // tw, disp_len=len(tokens),
                        needle_offset=max(0, (ptr - win_start) // tw), token_ids=tokens,
                        metadata=shard.doc_metadata(local), shard=s)

    # ------------------------------------------------------------------ frequent n-grams, matches, CNF
    # Thin delegations to engine.ngrams / engine.match / engine.cnf (issue 4); keep this block last.
    def frequent_ngrams(self, n_min: int = 1, n_max: int | None = None, *, min_count: int | None = None,
                        top_k: int | None = None, chunk_rows: int | None = None, out=None, progress: bool = False,
                        tmp_dir=None, check_alive: Callable[[], None] | None = None):
        """Every n-gram (n_min..n_max tokens) with count >= min_count, or the top_k most frequent,
        exact over all shards; an engine.storage.ngram_table.NgramTable (see engine.ngrams.frequent_ngrams:
        ``chunk_rows`` rows per step of the walk, ``check_alive`` called between steps)."""
        from engine.ngrams import DEFAULT_CHUNK_ROWS, frequent_ngrams

        return frequent_ngrams(self, n_min, n_max, min_count=min_count, top_k=top_k, out=out, progress=progress,
                               chunk_rows=DEFAULT_CHUNK_ROWS if chunk_rows is None else chunk_rows, tmp_dir=tmp_dir,
                               check_alive=check_alive)

    def fgram_vocab(self, max_len: int = 3, size: int = 1 << 20, min_count: int = 2, *, out=None,
                    progress: bool = False, **kwargs):
        """A SCONE f-gram vocabulary (engine.ngrams.build_fgram_vocab)."""
        from engine.ngrams import build_fgram_vocab

        return build_fgram_vocab(self, max_len, size, min_count, out=out, progress=progress, **kwargs)

    def longest_matches(self, text, max_len: int | None = None, infgram: bool = False):
        """Per position, the longest span ending there that occurs, and its count (engine.match);
        ``infgram`` adds the ∞-gram probabilities of every position from the same pass."""
        from engine.match import longest_matches

        return longest_matches(self, text, max_len, infgram)

    def infgram_probs(self, text, max_len: int | None = None) -> ProbBatchResult:
        """∞-gram probability of every token of ``text`` given the tokens before it, in one pass."""
        from engine.match import infgram_probs

        return infgram_probs(self, text, max_len)

    def attribute(self, text, min_len: int = 8, max_count: int | None = None, *, max_docs: int = 3,
                  max_disp_len: int = 100, creativity_n: int | None = None, max_len: int | None = None,
                  check_alive: Callable[[], None] | None = None, admit: Callable[..., None] | None = None):
        """Maximal spans of ``text`` that occur, with counts, source documents and a creativity score
        (engine.match.attribute: ``check_alive`` stops it between pieces of work, ``admit`` is told
        the documents and tokens it will fetch before it fetches them)."""
        from engine.match import attribute

        return attribute(self, text, min_len, max_count, max_docs=max_docs, max_disp_len=max_disp_len,
                         creativity_n=creativity_n, max_len=max_len, check_alive=check_alive, admit=admit)

    def creativity(self, text, n=5, max_len: int | None = None):
        """Share of ``text`` not covered by occurring spans of >= n tokens (engine.match.creativity)."""
        from engine.match import creativity

        return creativity(self, text, n, max_len)

    def count_cnf(self, cnf, max_clause_freq: int | None = None, *, check_alive: Callable[[], None] | None = None,
                  admit: Callable[..., None] | None = None):
        """Documents containing, for every clause (an OR of n-grams), one of its n-grams (engine.cnf;
        ``check_alive`` / ``admit`` callbacks as engine.cnf.count_cnf takes them)."""
        from engine.cnf import DEFAULT_MAX_CLAUSE_FREQ, count_cnf

        return count_cnf(self, cnf, DEFAULT_MAX_CLAUSE_FREQ if max_clause_freq is None else max_clause_freq,
                         check_alive=check_alive, admit=admit)

    def warmup_ngrams(self) -> None:
        """Compile (or load from numba's cache) the kernels of the block above; a server may call it
        from warmup() so that LongestMatches, Attribute and the CNF RPCs answer fast from the start."""
        self.probe(NGRAM_PROBES)

    def search_docs_cnf(self, cnf, max_docs: int = 10, max_clause_freq: int | None = None,
                        max_disp_len: int = DEFAULT_MAX_DISP_LEN, *, check_alive: Callable[[], None] | None = None,
                        admit: Callable[..., None] | None = None):
        """The first max_docs documents matching a CNF query, with the exact count (engine.cnf)."""
        from engine.cnf import DEFAULT_MAX_CLAUSE_FREQ, search_docs_cnf

        return search_docs_cnf(self, cnf, max_docs,
                               DEFAULT_MAX_CLAUSE_FREQ if max_clause_freq is None else max_clause_freq, max_disp_len,
                               check_alive=check_alive, admit=admit)


class _DiskMode:
    """Whether the index's pages are coming from disk, which decides the searches queries run.

    In memory the searches of engine.kernels.suffix take about a microsecond. From disk they wait for
    their page faults one after another, so while queries take major page faults count() and ntd run
    those of engine.kernels.disk instead: they search every shard's two ends in lockstep and ask the
    disk for each step's pages together (about half the time for one shard, a quarter for 16;
    bench_cold.py), but cost a system call per page, tens of microseconds in memory. A query that
    took longer than _DISK_NS while the process took major faults (reads from disk, not a busy CPU)
    switches to them (the callers time the in-memory search themselves: a method call here would cost
    the usual count a tenth); one that takes less with them (its pages were in memory) switches back."""

    def __init__(self):
        self._faults = _major_faults()
        self.on_disk = False

    def took_long(self) -> None:
        """An in-memory search took longer than _DISK_NS: on disk if the process took major faults."""
        faults = _major_faults()
        self.on_disk, self._faults = faults > self._faults, faults

    def ended(self, on_disk: bool, t0: int) -> None:
        """A query that started at ``t0`` (_now_ns), by the on-disk searches or not, has ended: a fast
        one on disk switches back to memory, a slow one in memory asks took_long."""
        elapsed = _now_ns() - t0
        if on_disk:
            if elapsed < _DISK_NS:
                self.on_disk = False
        elif elapsed > _DISK_NS:
            self.took_long()


_DISK_NS = 300_000
_now_ns = time.perf_counter_ns


def _major_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_majflt


class _DeferredTokenizer:
    """A manifest's tokenizer spec, loaded when NgramIndex.tokenizer is first read."""

    def __init__(self, spec: dict, base_dir: Path):
        self.spec, self.base_dir = spec, base_dir

    def load(self):
        from engine.tokenizers import load_tokenizer

        return load_tokenizer(self.spec, base_dir=self.base_dir)


def _plain_ids(query) -> np.ndarray | None:
    """A non-empty list of ints or int64 array as a 1-d int64 array, not yet range-checked; None for
    anything else (text, bools, floats, nesting, ...), which the general path handles and explains."""
    kind = type(query)
    if kind is np.ndarray:
        return query if query.dtype is _INT64 and query.ndim == 1 and query.shape[0] else None
    # numpy would turn True / False into ids 1 / 0: a list holding a bool is left to the general path
    if kind is not list or not query or _BOOL_TYPES.intersection(map(type, query)):
        return None
    try:
        ids = np.array(query)
    except (TypeError, ValueError, OverflowError):
        return None
    return ids if ids.dtype is _INT64 and ids.ndim == 1 else None


def _pack_id_lists(queries) -> PackedQueries | None:
    """The queries packed in two numpy passes when all are lists of ints or all int64 arrays (the
    bulk case of every *_batch call), else None. Validation is left to the caller."""
    if not len(queries):
        return None
    if all(type(q) is list for q in queries):
        flat = list(itertools.chain.from_iterable(queries))
        if _BOOL_TYPES.intersection(map(type, flat)):  # numpy would make True / False ids 1 / 0
            return None
        flat = np.array(flat)
        if flat.size and flat.dtype != _INT64:
            return None
        lengths = np.fromiter(map(len, queries), dtype=np.int64, count=len(queries))
        tokens = flat.astype(np.int64, copy=False)
    elif all(type(q) is np.ndarray and q.dtype == _INT64 and q.ndim == 1 for q in queries):
        lengths = np.fromiter(map(len, queries), dtype=np.int64, count=len(queries))
        tokens = np.concatenate(queries)
    else:
        return None
    offsets = np.zeros(len(queries) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return PackedQueries(tokens, offsets)


def _check_against_manifest(shard: Shard, entry: dict, path: Path) -> None:
    if shard.num_positions != entry["num_tokens"] or shard.num_docs != entry["num_docs"] \
            or shard.ptr_size != entry["ptr_size"]:
        raise IndexFormatError(
            f"{path}: shard {shard.number} files do not match the manifest (tokens {shard.num_positions} vs "
            f"{entry['num_tokens']}, docs {shard.num_docs} vs {entry['num_docs']}); run `ngram verify {path}`"
        )


def _reopen(paths, load, token_width, vocab_size, eos_token_id):
    return NgramIndex.open(paths, load=load, token_width=token_width, vocab_size=vocab_size,
                           eos_token_id=eos_token_id)
