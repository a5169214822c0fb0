"""Brute-force twins of the engine's kernels: slow, obvious, and the reference for hypothesis tests.

A corpus is a list of documents, each a list of token ids; an index of it holds each document
after a separator, so no match may cross a document boundary.
"""

from __future__ import annotations

from collections import Counter

END = None  # stands for "the document ends here" in a brute-force next-token table


def occurrences(docs: list[list[int]], query: list[int]) -> list[tuple[int, int]]:
    """(doc, position) of every occurrence of ``query`` (empty query: every token and separator slot)."""
    hits = []
    n = len(query)
    for d, doc in enumerate(docs):
        if n == 0:
            hits.extend((d, i) for i in range(len(doc) + 1))  # +1: the separator position
            continue
        for i in range(len(doc) - n + 1):
            if doc[i : i + n] == query:
                hits.append((d, i))
    return hits


def count(docs, query) -> int:
    return len(occurrences(docs, list(query)))


def next_tokens(docs, prompt) -> Counter:
    """Counter of the token after each occurrence of ``prompt`` (END when the document ends)."""
    prompt = list(prompt)
    result: Counter = Counter()
    if not prompt:
        for doc in docs:
            result.update(doc)
            result[END] += 1  # the separator slot: what follows it is a document start, not a token
        return result
    for d, i in occurrences(docs, prompt):
        j = i + len(prompt)
        result[docs[d][j] if j < len(docs[d]) else END] += 1
    return result


def prob(docs, prompt, cont) -> tuple[int, int, float]:
    prompt_count = count(docs, prompt)
    if prompt_count == 0:
        return 0, 0, -1.0
    cont_count = count(docs, list(prompt) + [cont])
    return prompt_count, cont_count, cont_count / prompt_count


def longest_suffix_len(docs, prompt) -> int:
    prompt = list(prompt)
    best = 0
    for length in range(1, len(prompt) + 1):
        if count(docs, prompt[len(prompt) - length :]) > 0:
            best = length
        else:
            break
    return best


def infgram_prob(docs, prompt, cont) -> tuple[int, int, float, int]:
    prompt = list(prompt)
    k = longest_suffix_len(docs, prompt)
    return (*prob(docs, prompt[len(prompt) - k :], cont), k)


def infgram_next_tokens(docs, prompt) -> tuple[Counter, int]:
    prompt = list(prompt)
    k = longest_suffix_len(docs, prompt)
    return next_tokens(docs, prompt[len(prompt) - k :]), k


def suffix_order_ok(data: bytes, pointers: list[int]) -> bool:
    """True when ``pointers`` lists suffixes of ``data`` in memcmp order."""
    suffixes = [data[p:] for p in pointers]
    return all(a <= b for a, b in zip(suffixes, suffixes[1:]))
