"""engine.warmup: the probe groups compile every entry kernel; the worker entry point runs a group on a
pickled index; with the kernels already compiled (or one core, or a router) nothing is spawned."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from engine import warmup
from tests.helpers.corpora import build_from_token_docs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def zeros_index(tmp_path):
    """Token 0 (the probes' token) occurs more often than the probes' max_support, so the sampled
    distribution's kernel runs too."""
    return build_from_token_docs(tmp_path / "zeros", [[0, 1, 0, 2, 0, 3, 0, 0], [2, 0, 1]], 2), None


def test_the_groups_compile_every_entry_kernel(zeros_index):
    """In a fresh process (nothing compiled or loaded yet), the groups alone bring in every entry kernel."""
    index, _ = zeros_index
    code = ("import pickle, sys\n"
            "from engine import warmup\n"
            "from engine.kernels.suffix import query_kernels\n"
            "index = pickle.loads(sys.stdin.buffer.read())\n"
            "assert not any(k.overloads for k in query_kernels())\n"
            "for g in range(len(warmup.GROUPS)): warmup.run_group(index, g)\n"
            "print(sorted(k.py_func.__name__ for k in query_kernels() if not k.overloads))\n")
    r = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(index), cwd=ROOT, capture_output=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().strip() == "[]"


def test_nothing_is_spawned_when_the_kernels_are_there(tiny_index):
    index, _ = tiny_index
    warmup.run_group(index, 0)
    assert warmup.compile_in_workers(index, workers=2) is False  # compiled in this process already
    assert warmup.compile_in_workers(object(), workers=2) is False  # a router, a client: nothing to compile


def test_the_worker_runs_a_group_on_a_pickled_index(tiny_index):
    index, _ = tiny_index
    r = subprocess.run([sys.executable, "-m", "engine.warmup", "0", "1"], input=pickle.dumps(index), cwd=ROOT,
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
