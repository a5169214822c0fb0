"""Brute-force twins of the frequent-n-gram, longest-match and CNF kernels, on plain lists of
documents (each a list of token ids). Slow and obvious on purpose."""

from __future__ import annotations

from collections import Counter


def ngram_counts(docs, n_min: int, n_max: int) -> Counter:
    """Occurrences of every n-gram (n_min <= n <= n_max) inside documents (never across them)."""
    counts: Counter = Counter()
    for doc in docs:
        doc = [int(t) for t in doc]
        for n in range(n_min, n_max + 1):
            for i in range(len(doc) - n + 1):
                counts[tuple(doc[i:i + n])] += 1
    return counts


def frequent_ngrams(docs, n_min: int, n_max: int, min_count: int | None = None, top_k: int | None = None):
    """[(ngram, count)] with count >= min_count (default 1), sorted by count desc then tokens,
    cut to top_k rows when given."""
    floor = 1 if min_count is None else min_count
    rows = [(g, c) for g, c in ngram_counts(docs, n_min, n_max).items() if c >= floor]
    rows.sort(key=lambda r: (-r[1], r[0]))
    return rows[:top_k] if top_k is not None else rows


def count(docs, pattern) -> int:
    pattern = [int(t) for t in pattern]
    n = len(pattern)
    total = 0
    for doc in docs:
        doc = [int(t) for t in doc]
        total += sum(1 for i in range(len(doc) - n + 1) if doc[i:i + n] == pattern)
    return total


def num_positions(docs) -> int:
    """Positions of the index: tokens plus one separator per document."""
    return sum(len(d) + 1 for d in docs)


def longest_matches(docs, text, max_len: int | None = None):
    """(lengths, counts): per position j, the longest span text[j-l+1..j] that occurs, and its count."""
    text = [int(t) for t in text]
    lengths, counts = [], []
    for j in range(len(text)):
        best, best_count = 0, 0
        top = j + 1 if max_len is None else min(j + 1, max_len)
        for length in range(1, top + 1):
            c = count(docs, text[j - length + 1:j + 1])
            if c == 0:
                break
            best, best_count = length, c
        lengths.append(best)
        counts.append(best_count)
    return lengths, counts


def infgram_probs(docs, text):
    """(prompt_counts, cont_counts, suffix_lens) of P(text[j] | longest occurring suffix of text[:j])."""
    text = [int(t) for t in text]
    prompts, conts, suffixes = [], [], []
    for j in range(len(text)):
        length = 0
        while length < j and count(docs, text[j - length - 1:j]) > 0:
            length += 1
        prompt = text[j - length:j]
        prompts.append(count(docs, prompt) if length else num_positions(docs))
        conts.append(count(docs, prompt + [text[j]]))
        suffixes.append(length)
    return prompts, conts, suffixes


def maximal_spans(docs, text):
    """[(start, end)] of spans that occur and are contained in no longer occurring span."""
    text = [int(t) for t in text]
    occurring = [(a, b) for a in range(len(text)) for b in range(a + 1, len(text) + 1)
                 if count(docs, text[a:b]) > 0]
    return sorted((a, b) for a, b in occurring
                  if not any((a2 <= a and b <= b2 and (a2, b2) != (a, b)) for a2, b2 in occurring))


def uniqueness(docs, text, n: int) -> float:
    """Share of tokens not inside any occurring span of >= n tokens."""
    text = [int(t) for t in text]
    covered = [False] * len(text)
    for a in range(len(text)):
        for b in range(a + n, len(text) + 1):
            if count(docs, text[a:b]) > 0:
                for k in range(a, b):
                    covered[k] = True
            else:
                break
    return 1.0 - sum(covered) / len(text) if text else 1.0


def cnf_docs(docs, cnf) -> list[int]:
    """Numbers of the documents that contain, for every clause, one of its n-grams."""
    def contains(doc, term):
        n = len(term)
        return any(doc[i:i + n] == term for i in range(len(doc) - n + 1))

    out = []
    for d, doc in enumerate(docs):
        doc = [int(t) for t in doc]
        if all(any(contains(doc, [int(t) for t in term]) for term in clause) for clause in cnf):
            out.append(d)
    return out


def clause_count(docs, clause) -> int:
    return sum(count(docs, term) for term in clause)


def fgram_longest(vocab, seq):
    """(ids, lengths): the id (row) of the longest f-gram ending at each position, -1 / 0 if none."""
    table = {tuple(int(t) for t in g): i for i, g in enumerate(vocab)}
    longest = max((len(g) for g in table), default=0)
    seq = [int(t) for t in seq]
    ids, lengths = [], []
    for t in range(len(seq)):
        best, best_len = -1, 0
        for n in range(min(longest, t + 1), 0, -1):
            g = tuple(seq[t - n + 1:t + 1])
            if g in table:
                best, best_len = table[g], n
                break
        ids.append(best)
        lengths.append(best_len)
    return ids, lengths
