"""Small corpora and the indexes built from them, shared by the test modules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine import NgramIndex, build_index

# Token alphabets per width: ids whose byte order differs from their numeric order, so a kernel
# that compares tokens numerically instead of in stored byte order fails.
ALPHABETS = {
    1: [0, 1, 2, 0x7F, 0xFE],
    2: [1, 0x100, 0x101, 0x2000, 0xFFFE],
    4: [1, 0x100, 0x10000, 0x1000001, 0xFFFFFFFE],
}
VOCAB = {1: 255, 2: 65535, 4: 0xFFFFFFFF}


def build_from_token_docs(directory, docs, token_width, shard_bytes=None):
    """Build an index of ``docs`` (lists of ids) at ``token_width``; return the opened NgramIndex."""
    arrays = [np.asarray(d, dtype=np.int64) for d in docs]
    build_index(directory, documents=arrays, tokenizer=None, vocab_size=VOCAB[token_width],
                shard_bytes=shard_bytes, metadata=True)
    return NgramIndex.open(directory)


# Phrases that occur in one partition only of the router tests' corpus, so the shards' own longest
# suffixes differ.
UNIQUE = ["the red hat sat on the big log", "a dog ran to the mat and sat", "big cat and red dog ran on"]

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "a", "log", "and", "ran", "to", "red", "hat", "big"]


def make_docs(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(1, 14)))
        docs.append({"text": " ".join(words), "id": f"{seed}-{i}", "n": int(i)})
    return docs


def build_text_index(directory: Path, docs: list[dict], shard_bytes: int | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    src = directory.with_suffix(".jsonl")
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return build_index(directory, inputs=[src], tokenizer="bytes", workers=1, shard_bytes=shard_bytes)


def sample_queries(index: NgramIndex, docs: list[dict], seed: int, n: int) -> list[np.ndarray]:
    """n-grams present in the corpus, plus absent ones."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        text = docs[int(rng.integers(len(docs)))]["text"]
        ids = index.tokenize(text)
        a = int(rng.integers(0, len(ids)))
        b = int(min(len(ids), a + rng.integers(1, 8)))
        out.append(ids[a:b])
    out += [index.tokenize(s) for s in ("zebra", "the cat sat on the mat and the dog", "x", "hat big red")]
    return out


def draw_token_corpus(draw, *, letters: int, doc_len: int, docs: int, shard_tokens: int, parts: int):
    """A hypothesis draw of (width, alphabet, docs, shard_bytes): a token width, 2..``letters`` ids of its
    alphabet, 1..``docs`` documents of up to ``doc_len`` ids, and either one shard (None) or shards of
    about 1/``parts`` of the corpus (at least ``shard_tokens`` tokens) so that it spreads over several."""
    from hypothesis import strategies as st

    width = draw(st.sampled_from([1, 2, 4]))
    alphabet = ALPHABETS[width][: draw(st.integers(2, letters))]
    drawn = draw(st.lists(st.lists(st.sampled_from(alphabet), max_size=doc_len), min_size=1, max_size=docs))
    total_bytes = sum(len(d) + 1 for d in drawn) * width
    shard_bytes = draw(st.sampled_from([None, max(width * shard_tokens, total_bytes // parts + width)]))
    return width, alphabet, drawn, shard_bytes
