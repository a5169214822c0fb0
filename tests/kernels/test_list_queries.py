"""count() and prob() given a query as a Python list (converted with numpy, bools refused first).

Whatever a list holds, the answer must be the one the array path gives, or the same typed error:
small and large ints (on both sides of 2**30 and 2**31), int subclasses, numpy scalars, bools, and
ints beyond int64.
"""

import threading

import numpy as np
import pytest

from engine import InvalidQueryError
from tests.helpers.corpora import build_from_token_docs

# u32 ids on both sides of 2**30 (one 30-bit digit) and of 2**31, and zero (no digits at all)
DOCS = [[0, 1, 2**30 - 1, 2**30, 2**31 + 7, 1], [2**30, 2**31 + 7, 1, 0], [5, 0, 1, 2**30 - 1]]


class Id(int):
    """An int subclass: not read in place, but still a valid id."""


@pytest.fixture(scope="module")
def u32(tmp_path_factory):
    return build_from_token_docs(tmp_path_factory.mktemp("u32") / "idx", DOCS, 4)


QUERIES = [
    [0], [1], [2**30 - 1], [2**30], [2**31 + 7], [0, 1], [2**30, 2**31 + 7, 1], [1, 2**30 - 1, 2**30],
    [5, 0, 1, 2**30 - 1], [3], [2**31 + 7, 0], [1, 0],
    [np.int64(1), 2**30], [Id(2**30), 2**31 + 7], [np.uint32(0), np.int32(1)],
]


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_list_answers_are_the_array_answers(u32, query):
    ids = np.array([int(t) for t in query], dtype=np.int64)
    assert u32.count(query) == u32.count(ids) == u32.find(ids).count
    for cont in (0, 1, 2**30, 2**31 + 7):
        assert u32.prob(query, cont) == u32.prob(ids, cont)
        assert u32.infgram_prob(query, cont) == u32.infgram_prob(ids, cont)


def test_counts_of_known_lists(u32):
    assert u32.count([2**30, 2**31 + 7, 1]) == 2
    assert u32.count([0, 1]) == 2
    assert u32.count([1, 0]) == 1
    assert u32.count([3]) == 0
    assert u32.prob([2**30 - 1], 2**30).cont_count == 1


@pytest.mark.parametrize("query, match", [
    ([1, 2**64], "outside the vocabulary|integer token ids"),
    ([1, -2**70], "outside the vocabulary|integer token ids"),
    ([1, -1], "outside the vocabulary"),
    ([1, 0xFFFFFFFF], "separator"),
    ([1, 2.0], "floats"),
    ([1, "a"], "integer token ids"),
    ([1, None], "integer token ids"),
    ([True, 2**30 - 1], "bool"),  # numpy would make it id 1 (issue 15); [True] alone was already refused
    ([1, np.False_], "bool"),
])
def test_bad_items_anywhere_in_a_list_raise(u32, query, match):
    with pytest.raises(InvalidQueryError, match=match):
        u32.count(query)
    with pytest.raises(InvalidQueryError, match=match):
        u32.prob(query, 1)


def test_a_list_changed_by_another_thread_still_gets_a_valid_answer(u32):
    """The kernel reads the list holding the GIL, so it sees one state of it or another, never a
    half-changed one."""
    query = [0, 1]
    valid = {u32.count([0, 1]), u32.count([0, 1, 2**30 - 1]), u32.count([0])}
    stop = threading.Event()

    def mutate():
        while not stop.is_set():
            query.append(2**30 - 1)
            query.pop()
            query.pop()
            query.append(1)

    thread = threading.Thread(target=mutate)
    thread.start()
    try:
        seen = {u32.count(query) for _ in range(20000)}
    finally:
        stop.set()
        thread.join()
    assert seen <= valid
