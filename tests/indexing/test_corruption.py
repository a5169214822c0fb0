"""Damaged indexes: open, queries and verify never end in a signal, raise only NgramErrors, and
verify reports every damage that changes an answer (issue 15). The harness (tests/helpers/corruption.py)
runs each batch of damaged copies in a subprocess, so a crash is seen as a signal, not as the end
of the test run. bench/bench_corruption.py runs the same over a thousand random corruptions."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import corruption


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    return {name: corruption.build_case(root / name, name) for name in corruption.CASES}


def _check(tmp_path, sources, corruptions):
    names = list(corruption.CASES)
    jobs = [{"source": str(sources[n]), "case": n, "corruption": None} for n in names]
    jobs += [{"source": str(sources[c["case"]]), "case": c["case"], "corruption": c} for c in corruptions]
    results = corruption.run_jobs(tmp_path / "jobs", jobs)
    reference = {}
    for job, res in zip(jobs[:len(names)], results[:len(names)]):
        assert "answers" in res and res["problems"] == [] and res["structural"] == [], res
        reference[job["case"]] = res["answers"]
    summary = corruption.judge(results, reference, jobs)
    failures = [e for e in summary["examples"]]
    assert summary["signals"] == 0, failures
    assert summary["untyped"] == 0, failures
    assert summary["verify_crashed"] == 0, failures
    assert summary["silent"] == 0, failures
    return summary


corruptions = st.builds(
    lambda case, kind, file, rate, seed: {"case": case, "kind": kind,
                                          "file": _file_for(kind, file), "rate": rate, "seed": seed},
    st.sampled_from(sorted(corruption.CASES)), st.sampled_from(corruption.KINDS),
    st.sampled_from(corruption.FILE_KINDS), st.sampled_from(corruption.RATES), st.integers(0, 2**31 - 1))


def _file_for(kind, file):
    if kind.startswith("ptr_"):
        return "table"
    if kind == "offset_bad":
        return "offset" if file in ("offset", "tokenized", "table") else "metaoff"
    if kind == "token_past_vocab":
        return "tokenized"
    if kind == "manifest":
        return "manifest"
    return file


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(st.lists(corruptions, min_size=30, max_size=60))
def test_random_damage_never_crashes_and_verify_sees_it(tmp_path, sources, batch):
    _check(tmp_path, sources, batch)


def test_damage_that_crashed_the_directory_build(tmp_path, sources):
    """The issue's reports: 5-30% of table bytes flipped (more runs than keys: writes past the
    first-key table), pointers past the data or between tokens, zeroed table starts, offsets past the
    data or overflowing int64, truncated files; for each width."""
    batch = []
    for case in corruption.CASES:
        for seed in range(4):
            for rate in (0.05, 0.3):
                batch.append({"case": case, "kind": "flip", "file": "table", "rate": rate, "seed": seed})
            for kind in ("ptr_out", "ptr_misalign", "ptr_swap"):
                batch.append({"case": case, "kind": kind, "file": "table", "rate": 0.01 * (seed + 1), "seed": seed})
            batch.append({"case": case, "kind": "offset_bad", "file": "offset", "rate": 0.01, "seed": seed})
            batch.append({"case": case, "kind": "truncate", "file": ("table", "tokenized", "offset", "metaoff")[seed],
                          "rate": 0.01, "seed": seed})
        batch.append({"case": case, "kind": "zero", "file": "table", "rate": 0.01, "seed": 2})
        batch.append({"case": case, "kind": "token_past_vocab", "file": "tokenized", "rate": 0.01, "seed": 1})
    summary = _check(tmp_path, sources, batch)
    # The damage is real: most of it changes answers or is refused at open.
    assert summary["changed"] > len(batch) // 2
    assert summary["refused"] > 0
