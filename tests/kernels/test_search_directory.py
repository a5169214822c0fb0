"""The search directory (engine.kernels.suffix.build_directory) on corpora big enough for several blocks
of its top level, against brute-force counts; and the packed-list fast path against arrays.

tests/kernels/test_kernels.py covers every query kernel with hypothesis, but on corpora of a few hundred
tokens, where the sample table has one top-level block and every search starts and ends in it.
"""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from engine.kernels import suffix as kernels
from engine.errors import InvalidQueryError
from tests.helpers.corpora import ALPHABETS, build_from_token_docs

N_DOCS = 60
DOC_LEN = 1500


def _docs(width: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    alphabet = np.asarray(ALPHABETS[width][:4], dtype=np.int64)
    # Skewed draws: long runs of the commonest token make wide ranges, rare tokens narrow ones.
    return [alphabet[rng.choice(4, size=DOC_LEN, p=[0.55, 0.25, 0.15, 0.05])] for _ in range(N_DOCS)]


def _brute_count(docs: list[np.ndarray], query: list[int]) -> int:
    n = len(query)
    return sum(int((sliding_window_view(d, n) == query).all(axis=1).sum()) for d in docs if len(d) >= n)


def _queries(docs: list[np.ndarray], seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(150):
        doc = docs[int(rng.integers(len(docs)))]
        n = int(rng.integers(1, 25))  # beyond SAMPLE_BYTES at every width: the non-exact path too
        i = int(rng.integers(0, len(doc) - n))
        query = doc[i : i + n].tolist()
        if rng.random() < 0.2:  # perturb one token: often absent
            query[int(rng.integers(n))] = int(docs[0][int(rng.integers(DOC_LEN))])
        out.append(query)
    return out


@pytest.fixture(scope="module", params=[1, 2, 4], ids=["u8", "u16", "u32"])
def case(request, tmp_path_factory):
    width = request.param
    docs = _docs(width, seed=width)
    index = build_from_token_docs(tmp_path_factory.mktemp(f"dir{width}") / "idx", [d.tolist() for d in docs], width)
    return docs, index


def test_directory_has_several_top_blocks(case):
    _, index = case
    directory = index._dirs[0]
    assert directory[kernels.D_NSAMPLES] > 8 * kernels.TOP_STRIDE
    top = directory[directory[kernels.D_TOP] :].reshape(-1, kernels.SAMPLE_WORDS)
    samples = directory[directory[kernels.D_SAMPLES] : directory[kernels.D_TOP]].reshape(-1, kernels.SAMPLE_WORDS)
    assert len(samples) == directory[kernels.D_NSAMPLES]
    assert np.array_equal(top, samples[:: kernels.TOP_STRIDE])
    # Sample keys (word pairs) never decrease along the suffix array, and spell each suffix's start.
    assert all(tuple(a) <= tuple(b) for a, b in zip(samples[:-1], samples[1:]))
    stride = 1 << int(directory[kernels.D_SHIFT])
    ds, sa, ps = index._ds[0], index._sa[0], index._ps[0]
    for i in range(0, len(samples), 97):
        pos = int.from_bytes(bytes(sa[i * stride * ps : (i * stride + 1) * ps]), "little")
        head = bytes(ds[pos : pos + kernels.SAMPLE_BYTES])
        spelled = b"".join((int(w) >> 3).to_bytes(kernels.WORD_BYTES, "big")[: int(w) & 7] for w in samples[i])
        assert spelled == head


def test_counts_match_brute_force(case):
    docs, index = case
    queries = _queries(docs, seed=7)
    expected = [_brute_count(docs, q) for q in queries]
    assert [index.count(q) for q in queries] == expected
    assert [index.count(np.asarray(q, dtype=np.int64)) for q in queries] == expected
    assert index.count_batch(queries).tolist() == expected
    assert sum(expected) > 0 and expected.count(0) > 0  # both present and absent queries ran


def test_sparse_samples_give_the_same_counts(case):
    """A shard too big for every 16th sample gets sparser ones (wider windows, searched in wide
    steps); reopened with a tiny sample budget the same index must count the same."""
    docs, index = case
    sparse = type(index).open(index.paths, directory_budget=32 * 8 * kernels.SAMPLE_WORDS)  # 32 samples
    assert sparse.directory_sources == ["memory"]
    assert sparse._dirs[0][kernels.D_SHIFT] > 10  # windows of over a thousand ranks
    queries = _queries(docs, seed=5)
    assert [sparse.count(q) for q in queries] == [_brute_count(docs, q) for q in queries]
    assert sparse.count_batch(queries).tolist() == index.count_batch(queries).tolist()


def _on_disk_counts(index, queries) -> list[int]:
    return [index._count_on_disk(np.asarray(q, dtype=np.int64)) for q in queries]


def test_the_on_disk_search_counts_the_same(case):
    """engine.kernels.disk's lockstep search (count() while the index is on disk) against brute force,
    with dense samples and with sparse ones (wide steps), and refusing what count_at refuses."""
    docs, index = case
    queries = _queries(docs, seed=13)
    expected = [_brute_count(docs, q) for q in queries]
    assert _on_disk_counts(index, queries) == expected
    sparse = type(index).open(index.paths, directory_budget=32 * 8 * kernels.SAMPLE_WORDS)
    assert _on_disk_counts(sparse, queries) == expected
    assert index._count_on_disk(np.array([index.separator_id], dtype=np.int64)) == -1
    assert index._count_on_disk(np.array([-1], dtype=np.int64)) == -1


def test_the_on_disk_walk_gives_the_exact_and_capped_distributions(case):
    """ntd while the index is on disk: the level-by-level walk (exact with unit 1) against the
    run-by-run scan and the in-memory capped walk, over wide ranges of skewed tokens."""
    docs, index = case
    for q in _queries(docs, seed=17)[:40]:
        prompt = np.asarray(q[: len(q) // 3], dtype=np.int64)
        for max_support in (None, 50):
            a = index._distribution_in_memory(prompt, max_support, False)
            b = index._distribution_on_disk(prompt, max_support, False)
            assert (a[0], a[3], a[4], a[5]) == (b[0], b[3], b[4], b[5])
            assert a[1].tolist() == b[1].tolist() and a[2].tolist() == b[2].tolist()


def test_prob_by_the_on_disk_searches(case):
    docs, index = case
    for q in _queries(docs, seed=19)[:60]:
        prompt, cont = np.asarray(q[:-1], dtype=np.int64), q[-1]
        for use_suffix in (False, True):
            expected = tuple(int(x) for x in kernels.prob_at(index._handle_address, prompt, cont, use_suffix))
            assert index._prob_counts_on_disk(prompt, cont, use_suffix) == expected


def test_the_on_disk_search_over_many_shards(tmp_path):
    """Every shard's two ends searched together: the same counts as one shard, including shards where
    the query is absent or only its first token occurs."""
    docs = _docs(2, seed=21)
    lists = [d.tolist() for d in docs]
    one = build_from_token_docs(tmp_path / "one", lists, 2)
    many = build_from_token_docs(tmp_path / "many", lists, 2, shard_bytes=20_000)
    assert many.num_shards >= 5
    queries = _queries(docs, seed=23) + [[int(docs[0][0])], []]
    expected = [one.count(q) for q in queries]
    assert _on_disk_counts(many, queries) == expected
    assert [_brute_count(docs, q) for q in queries[:-1]] == expected[:-1]


def test_prob_packed_list_equals_array(case):
    docs, index = case
    for q in _queries(docs, seed=11)[:60]:
        prompt, cont = q[:-1] or q, q[-1]
        as_list = index.prob(prompt, cont)
        as_array = index.prob(np.asarray(prompt, dtype=np.int64), cont)
        assert as_list == as_array
        assert as_list.prompt_count == _brute_count(docs, prompt)
        assert as_list.cont_count == _brute_count(docs, prompt + [cont])
        assert index.infgram_prob(prompt, cont) == index.infgram_prob(np.asarray(prompt, dtype=np.int64), cont)


@pytest.mark.parametrize("query", [[True, False], [1.0, 2.0], [2**70], [-1], ["a"]])
def test_lists_the_packer_refuses_get_the_general_errors(case, query):
    _, index = case
    with pytest.raises(InvalidQueryError):
        index.count(query)
