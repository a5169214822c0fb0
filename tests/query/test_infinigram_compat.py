"""Exact agreement with the real infini-gram 2.6.0 engine, on indexes built both ways.

Four indexes of one real corpus (the Canterbury texts, one document per paragraph, with JSON
metadata): byte-level (u8) and GPT-2 (u16), each built once by our ``build_index`` (then opened
by ``infini_gram.engine.InfiniGramEngine``) and once by infini-gram's own indexer
(``python -m infini_gram.indexing``, then opened by our ``NgramIndex.open`` without a manifest).
On every index both engines answer the same random queries drawn from the corpus (including
queries at document and shard edges and absent ones), and the answers must be identical:
count, prob, ntd (exact, and capped by max_support), infgram_prob, infgram_ntd (suffix_len
included), search_docs, get_doc_by_rank, get_doc_by_ptr and get_doc_by_ix.

How the two APIs line up:
- infini-gram reports a document's end as ``eos_token_id`` inside ``ntd``; we keep ends out of
  ``tokens`` and count them in ``end_count``. So infini-gram is opened with an eos id that never
  occurs in the corpus (the smallest absent id of the vocabulary), and its eos entry is compared
  with our end_count.
- Known infini-gram defect we do not reproduce: its ntd credits a whole range to one token when
  the first and last next tokens are equal *after* mapping ends to eos. When a prompt is a suffix
  of a shard's data, its first occurrence is followed by the end of the data (eos) and, if any
  occurrence also ends a document, its last is the separator (eos) too, so the whole range goes
  to eos. For such prompts our exact ntd is checked against infini-gram's (exact) counts of each
  one-token extension instead, and the capped ntd is not compared.
- infini-gram's ``get_doc_by_ptr`` at a separator's position returns a wrapped-around unsigned
  needle_offset; ours is 0 there. Every other field is compared.
- infini-gram 2.6.0's ntd reads the suffix array at rank -1 while prefetching when a range
  starts at rank 0 (``_prefetch_ntd`` with ``ds_prefetch_depth`` 1, the default), which
  segfaults about one run in three. It is opened with ``ds_prefetch_depth=0``, which only
  turns that prefetch off and changes no answer.
- infini-gram's search_docs samples occurrences at random; each sampled occurrence (mapped from
  its ``idxs`` to shard and rank) is compared with our get_doc_by_rank, and our search_docs (the
  first occurrences in suffix-array order) with infini-gram's get_doc_by_rank.

infini-gram's indexer imports ``transformers`` and, for GPT-2, downloads the tokenizer from the
Hugging Face hub, which these machines cannot reach. It is run in a subprocess with a small
stand-in ``transformers`` module whose ``AutoTokenizer`` is our own offline GPT-2 tokenizer (the
same BPE ranks), so its own tokenize-and-write code and its Rust suffix-array builder run
unchanged. Its builder writes a corrupt suffix array when a build part is under 100,000 bytes;
every shard here is several times that.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ig_engine = pytest.importorskip("infini_gram.engine", reason="needs the infini-gram==2.6.0 package (dev extra)")

from engine import NgramIndex, build_index  # noqa: E402
from engine.build.readers import RawDocument  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = 20240611
BIG_SUPPORT = 1 << 40  # a max_support that never caps: infini-gram's exact path
CAPS = (1, 7, 100)  # max_support values that do cap, for the sampled path
N_QUERIES = 150

# ----------------------------------------------------------------------------------------------
# Corpus and the four indexes
# ----------------------------------------------------------------------------------------------


def _corpus() -> list[dict]:
    """The Canterbury texts (1.16 MB), one document per paragraph, with metadata."""
    fetch = pytest.importorskip("engine.fetch")
    try:
        directory = fetch.fetch("canterbury")
    except Exception as exc:  # registry unreachable: nothing to compare on
        pytest.skip(f"cannot fetch the Canterbury corpus: {exc}")
    docs = []
    for path in sorted(directory.glob("*.txt")):
        text = path.read_bytes().decode("latin-1")
        for i, para in enumerate(re.split(r"\r?\n[ \t\r]*\n", text)):
            if para.strip():
                docs.append({"text": para, "file": path.name, "para": i})
    return docs


# Run infini-gram's indexer with a stand-in `transformers` (see the module docstring).
_INDEXER = r"""
import runpy, sys, types
spec = sys.argv[1]

class AutoTokenizer:
    @staticmethod
    def from_pretrained(name, **kwargs):
        from engine.tokenizers import load_tokenizer
        tok = load_tokenizer(spec)
        return types.SimpleNamespace(encode=lambda text: [int(t) for t in tok.encode(text)])

mod = types.ModuleType("transformers")
mod.AutoTokenizer = AutoTokenizer
mod.utils = types.SimpleNamespace(logging=types.SimpleNamespace(set_verbosity=lambda level: None))
sys.modules["transformers"] = mod
sys.argv = ["infini_gram.indexing"] + sys.argv[2:]
runpy.run_module("infini_gram.indexing", run_name="__main__", alter_sys=True)
"""


def build_with_infinigram(data_dir: Path, save_dir: Path, token_dtype: str, tokenizer: str | None,
                          shards: int, cpus: int = 2) -> None:
    """Build ``save_dir`` from the JSONL files in ``data_dir`` with infini-gram's own indexer."""
    args = ["--data_dir", str(data_dir), "--save_dir", str(save_dir), "--token_dtype", token_dtype,
            "--shards", str(shards), "--cpus", str(cpus), "--mem", "1", "--add_metadata",
            "--ulimit", str(min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536))]
    if tokenizer is not None:
        args += ["--tokenizer", "gpt2"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _INDEXER, tokenizer or "none", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or "went wrong" in proc.stdout:
        raise RuntimeError(f"infini-gram indexer failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


class Pair:
    """One index directory opened by both engines, with the facts the comparisons need."""

    def __init__(self, name: str, path: Path, width: int):
        self.name = name
        self.path = path
        self.width = width
        self.ours = NgramIndex.open(path)
        dtype = f"<u{width}"
        self.tokens = [np.frombuffer(bytes(s.tokenized), dtype=dtype).astype(np.int64) for s in self.ours.shards]
        self.sep = (1 << (8 * width)) - 1
        # infini-gram's eos: the smallest id of the vocabulary that never occurs in the corpus.
        vocab = min(self.ours.vocab_size, 255 if width == 1 else 50257)
        present = np.zeros(1 << (8 * width), dtype=bool)
        for t in self.tokens:
            present[t] = True
        self.eos = int(np.flatnonzero(~present[:vocab])[0])
        self.theirs = ig_engine.InfiniGramEngine(
            str(path), eos_token_id=self.eos, vocab_size=255 if width == 1 else 65535,
            token_dtype="u8" if width == 1 else "u16", max_support=BIG_SUPPORT, ds_prefetch_depth=0)

    def __repr__(self):
        return self.name


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, Pair]:
    docs = _corpus()
    root = tmp_path_factory.mktemp("compat")
    data = root / "data"
    data.mkdir()
    with open(data / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps(d) + "\n")
    raw = [RawDocument(text=d["text"], tokens=None, metadata={"file": d["file"], "para": d["para"]}) for d in docs]

    out = {}
    # u8: two shards each way (ours cut by size, infini-gram's dealt round-robin).
    build_index(root / "ours-u8", documents=raw, tokenizer="bytes", shard_bytes=640_000, workers=1)
    build_with_infinigram(data, root / "ig-u8", "u8", None, shards=2)
    # u16 (GPT-2): one shard each way, so the two builds can also be compared byte for byte.
    build_index(root / "ours-u16", documents=raw, tokenizer="gpt2", workers=1)
    build_with_infinigram(data, root / "ig-u16", "u16", "gpt2", shards=1)
    for name, width in (("ours-u8", 1), ("ig-u8", 1), ("ours-u16", 2), ("ig-u16", 2)):
        out[name] = Pair(name, root / name, width)
    assert out["ours-u8"].ours.num_shards == 2 and out["ig-u8"].ours.num_shards == 2
    return out


PAIR_NAMES = ["ours-u8", "ig-u8", "ours-u16", "ig-u16"]


@pytest.fixture(params=PAIR_NAMES)
def pair(request, pairs) -> Pair:
    return pairs[request.param]


# ----------------------------------------------------------------------------------------------
# Queries drawn from the corpus
# ----------------------------------------------------------------------------------------------


def _rng(pair: Pair, salt: int) -> np.random.Generator:
    return np.random.default_rng([SEED, PAIR_NAMES.index(pair.name), salt])


def _span(pair: Pair, rng, n: int) -> list[int]:
    """n tokens from a random corpus position, cut at a separator (so possibly ending a document)."""
    s = int(rng.integers(len(pair.tokens)))
    toks = pair.tokens[s]
    p = int(rng.integers(len(toks)))
    q = toks[p : p + n]
    cut = np.flatnonzero(q == pair.sep)
    if len(cut):
        q = q[: cut[0]] if cut[0] > 0 else q[1:][: n]  # a document's end, or its start
    cut = np.flatnonzero(q == pair.sep)
    if len(cut):
        q = q[: cut[0]]
    return [int(t) for t in q]


def _doc_edges(pair: Pair, rng, n: int) -> list[int]:
    """The first or last n tokens of a random document (possibly a shard's last document)."""
    s = int(rng.integers(len(pair.tokens)))
    toks = pair.tokens[s]
    seps = np.flatnonzero(toks == pair.sep)
    d = int(rng.integers(len(seps)))
    start, end = seps[d] + 1, (seps[d + 1] if d + 1 < len(seps) else len(toks))
    doc = toks[start:end]
    q = doc[:n] if rng.random() < 0.5 else doc[max(0, len(doc) - n):]
    return [int(t) for t in q]


def _absent(pair: Pair, rng) -> list[int]:
    """A corpus span with one token replaced: mostly absent, sometimes present elsewhere."""
    q = _span(pair, rng, int(rng.integers(2, 12)))
    if not q:
        return [int(rng.integers(0, 250))]
    vocab = 250 if pair.width == 1 else 50257
    q[int(rng.integers(len(q)))] = int(rng.integers(0, vocab))
    return q


def queries(pair: Pair, salt: int, k: int = N_QUERIES) -> list[list[int]]:
    rng = _rng(pair, salt)
    out: list[list[int]] = []
    lengths = (1, 1, 2, 3, 5, 10, 20, 100)
    while len(out) < k:
        kind = rng.random()
        if kind < 0.6:
            q = _span(pair, rng, int(rng.choice(lengths)))
        elif kind < 0.8:
            q = _doc_edges(pair, rng, int(rng.choice(lengths)))
        else:
            q = _absent(pair, rng)
        if q:
            out.append(q)
    # The last tokens of each shard: followed by the end of the data (see the docstring).
    for toks in pair.tokens:
        for n in (1, 2, 5):
            tail = toks[len(toks) - n :]
            if not np.any(tail == pair.sep):
                out.append([int(t) for t in tail])
    return out


def _ends_a_shard(pair: Pair, q: list[int]) -> bool:
    n = len(q)
    return n > 0 and any(len(t) >= n and np.array_equal(t[len(t) - n :], q) for t in pair.tokens)


# ----------------------------------------------------------------------------------------------
# Converting infini-gram's answers
# ----------------------------------------------------------------------------------------------


def _ours_dist(pair: Pair, dist) -> dict[int, int]:
    result = {int(t): int(c) for t, c in zip(dist.tokens, dist.counts)}
    assert pair.eos not in result
    if dist.end_count:
        result[pair.eos] = int(dist.end_count)
    return result


def _their_dist(res: dict) -> dict[int, int]:
    assert "error" not in res, res
    return {int(t): int(r["cont_cnt"]) for t, r in res["result_by_token_id"].items()}


def _their_metadata(raw: str):
    return json.loads(raw) if raw.strip() else None


def _same_doc(ours, theirs: dict, *, at_separator: bool = False) -> None:
    assert "error" not in theirs, theirs
    assert ours.doc_ix == theirs["doc_ix"]
    assert ours.doc_len == theirs["doc_len"]
    assert ours.disp_len == theirs["disp_len"]
    assert ours.token_ids.tolist() == list(theirs["token_ids"])
    assert ours.metadata == _their_metadata(theirs["metadata"])
    if at_separator:  # infini-gram's unsigned (ptr - window start) wraps around here
        assert ours.needle_offset == 0
    else:
        assert ours.needle_offset == theirs["needle_offset"]


# ----------------------------------------------------------------------------------------------
# The comparisons
# ----------------------------------------------------------------------------------------------


def test_index_facts_agree(pair):
    t = pair.theirs.engine
    assert pair.ours.num_shards == t.get_num_shards()
    assert pair.ours.num_docs == t.get_total_doc_cnt()
    for s, shard in enumerate(pair.ours.shards):
        assert shard.num_positions == t.get_tok_cnt(s=s)
        assert len(shard.tokenized) == t.get_ds_size(s=s)
    assert pair.ours.count([]) == pair.theirs.count([])["count"] == pair.ours.num_tokens


def test_builds_are_byte_identical(pairs):
    """Our builder and infini-gram's write the same token, offset and suffix-array files (u16, one shard)."""
    ours, theirs = pairs["ours-u16"].path, pairs["ig-u16"].path
    for kind in ("tokenized", "offset", "table"):
        assert (ours / f"{kind}.0").read_bytes() == (theirs / f"{kind}.0").read_bytes(), kind


def test_count_and_prob(pair):
    rng = _rng(pair, 1)
    for q in queries(pair, 1):
        assert pair.ours.count(q) == pair.theirs.count(q)["count"], q
        # A continuation that occurs (the corpus's own next token) or a random one.
        nxt = _span(pair, rng, len(q) + 1)
        cont = nxt[-1] if len(nxt) == len(q) + 1 else int(rng.integers(0, 250))
        for prompt in (q, q[:-1]):
            a, b = pair.ours.prob(prompt, cont), pair.theirs.prob(prompt, cont)
            assert (a.prompt_count, a.cont_count, a.prob) == (b["prompt_cnt"], b["cont_cnt"], b["prob"]), prompt


def test_ntd_exact(pair):
    checked_defect = 0
    for q in queries(pair, 2) + ([[]] if pair.width == 1 else []):  # (u16 [] is slow in infini-gram)
        ours = pair.ours.ntd(q)
        theirs = pair.theirs.ntd(q, max_support=BIG_SUPPORT)
        assert not ours.approx and not theirs["approx"]
        assert ours.prompt_count == theirs["prompt_cnt"] == pair.theirs.count(q)["count"], q
        if _ends_a_shard(pair, q):
            # infini-gram's range shortcut is wrong here; check each count against its exact count.
            checked_defect += 1
            for t, c in zip(ours.tokens.tolist(), ours.counts.tolist()):
                assert c == pair.theirs.count(q + [t])["count"]
            assert ours.end_count == ours.prompt_count - int(ours.counts.sum())
            continue
        assert _ours_dist(pair, ours) == _their_dist(theirs), q
        assert np.array_equal(ours.probs, [theirs["result_by_token_id"][t]["prob"] for t in ours.tokens.tolist()])
    assert checked_defect > 0


def test_ntd_capped(pair):
    n_approx = 0
    for q in queries(pair, 3) + [[]]:
        if _ends_a_shard(pair, q):
            continue
        for cap in CAPS:
            ours = pair.ours.ntd(q, max_support=cap)
            theirs = pair.theirs.ntd(q, max_support=cap)
            assert ours.approx == theirs["approx"], (q, cap)
            assert ours.prompt_count == theirs["prompt_cnt"], (q, cap)
            assert _ours_dist(pair, ours) == _their_dist(theirs), (q, cap)
            n_approx += ours.approx
    assert n_approx > 50


def _infgram_prompts(pair: Pair, salt: int) -> list[list[int]]:
    """Long prompts whose longest occurring suffix is shorter: corpus spans with a token changed."""
    rng = _rng(pair, salt)
    prompts = []
    for q in queries(pair, salt):
        if len(q) >= 3 and rng.random() < 0.7:
            q = list(q)
            q[int(rng.integers(len(q) - 1))] = int(rng.integers(0, 250 if pair.width == 1 else 50257))
        prompts.append(q)
    prompts += [[], [pair.eos], [pair.eos] * 3]  # nothing occurs: suffix_len 0, the empty prompt
    return prompts


def test_infgram_prob(pair):
    rng = _rng(pair, 4)
    for q in _infgram_prompts(pair, 4):
        cont = int(rng.integers(0, 250)) if rng.random() < 0.3 else (_span(pair, rng, 1) or [32])[0]
        a, b = pair.ours.infgram_prob(q, cont), pair.theirs.infgram_prob(q, cont)
        assert (a.prompt_count, a.cont_count, a.prob, a.suffix_len) == \
            (b["prompt_cnt"], b["cont_cnt"], b["prob"], b["suffix_len"]), q


def test_infgram_ntd(pair):
    for q in _infgram_prompts(pair, 5):
        # infini-gram's exact walk starts a thread per split: keep it to modest ranges (time).
        suffix = q[len(q) - pair.ours.infgram_prob(q, 0).suffix_len :]
        for cap in (BIG_SUPPORT, 1000) if pair.ours.count(suffix) <= 5000 else (1000,):
            ours = pair.ours.infgram_ntd(q, max_support=cap)
            theirs = pair.theirs.infgram_ntd(q, max_support=cap)
            assert ours.suffix_len == theirs["suffix_len"], q
            assert ours.prompt_count == theirs["prompt_cnt"], q
            assert ours.approx == theirs["approx"], q
            if not _ends_a_shard(pair, q[len(q) - ours.suffix_len :]):
                assert _ours_dist(pair, ours) == _their_dist(theirs), (q, cap)


def _rank_of_idx(find: dict, idx: int) -> tuple[int, int]:
    for s, (lo, hi) in enumerate(find["segment_by_shard"]):
        if idx < hi - lo:
            return s, lo + idx
        idx -= hi - lo
    raise AssertionError("idx beyond the count")


def test_search_docs(pair):
    rng = _rng(pair, 6)
    for q in queries(pair, 6, k=60):
        disp = int(rng.choice([1, 2, 7, 50, 1000]))
        ours = pair.ours.search_docs(q, max_docs=4, max_disp_len=disp)
        theirs = pair.theirs.search_docs(q, maxnum=3, max_disp_len=disp)
        assert ours.count == theirs["cnt"], q
        if not ours.count:
            assert not ours.documents and not theirs["documents"]
            continue
        find = pair.theirs.find(q)
        assert [tuple(x) for x in find["segment_by_shard"]] == list(pair.ours.find(q).segments)
        # infini-gram's random picks, against ours at the same (shard, rank)
        for idx, doc in zip(theirs["idxs"], theirs["documents"]):
            s, rank = _rank_of_idx(find, idx)
            _same_doc(pair.ours.get_doc_by_rank(s, rank, max_disp_len=disp), doc)
        # ours: the first occurrences in suffix-array order, against infini-gram at the same ranks
        ranks = [(s, r) for s, (lo, hi) in enumerate(find["segment_by_shard"]) for r in range(lo, hi)][:4]
        assert len(ours.documents) == len(ranks)
        for d, (s, r) in zip(ours.documents, ranks):
            assert d.shard == s
            _same_doc(d, pair.theirs.get_doc_by_rank(s, r, max_disp_len=disp))
            if d.needle_offset + len(q) <= d.disp_len:
                assert d.token_ids[d.needle_offset : d.needle_offset + len(q)].tolist() == q


def test_get_doc_by_rank_and_ptr(pair):
    rng = _rng(pair, 7)
    for s, toks in enumerate(pair.tokens):
        n = len(toks)
        seps = np.flatnonzero(toks == pair.sep)
        positions = list(rng.integers(0, n, size=120)) + [0, 1, n - 1] + list(seps[:3]) + list(seps[-3:]) \
            + list(seps[1:4] - 1) + list(seps[1:4] + 1)
        for pos in positions:
            pos = int(min(max(pos, 0), n - 1))
            disp = int(rng.choice([1, 2, 3, 10, 1000]))
            ptr = pos * pair.width
            theirs = pair.theirs.engine.get_doc_by_ptr(s=s, ptr=ptr, max_disp_len=disp)
            theirs = {k: getattr(theirs, k) for k in ("doc_ix", "doc_len", "disp_len", "needle_offset",
                                                      "metadata", "token_ids")}
            _same_doc(pair.ours.get_doc_by_ptr(s, ptr, max_disp_len=disp), theirs, at_separator=toks[pos] == pair.sep)
        for rank in list(rng.integers(0, n, size=120)) + [0, n - 1]:
            disp = int(rng.choice([1, 2, 3, 10, 1000]))
            a = pair.ours.get_doc_by_rank(s, int(rank), max_disp_len=disp)
            b = pair.theirs.get_doc_by_rank(s, int(rank), max_disp_len=disp)
            ptr = np.empty(1, dtype=np.int64)
            from engine.kernels import suffix as kernels

            kernels.pointers_at(pair.ours.shards[s].table, pair.ours.shards[s].ptr_size, int(rank), int(rank) + 1, ptr)
            _same_doc(a, b, at_separator=toks[int(ptr[0]) // pair.width] == pair.sep)


def test_get_doc_by_ix(pair):
    rng = _rng(pair, 8)
    total = pair.ours.num_docs
    for doc_ix in sorted(set(rng.integers(0, total, size=200).tolist()) | {0, total - 1}):
        for disp in (1, 5, 1000, 100_000):
            _same_doc(pair.ours.get_doc_by_ix(doc_ix, max_disp_len=disp),
                      pair.theirs.get_doc_by_ix(doc_ix, max_disp_len=disp))
