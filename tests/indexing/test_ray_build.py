"""Builds through executors: the sliced (distributed) path and Ray write the serial build's bytes,
survive a worker killed mid-task, and resume after a crash without redoing finished work.

The Ray tests need the optional ``ray`` extra and are skipped cleanly without it; the sliced-path
test runs the same task code on local threads and needs nothing extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from engine.build import slices as build_slices
from engine.build.builder import build_index
from engine.errors import BuildError
from engine.build.executors import CRASH_HOOK_ENV, LocalExecutor
from engine.index import NgramIndex

HAVE_RAY = importlib.util.find_spec("ray") is not None

SHARD_BYTES = 24_000  # several shards, each spanning several parts


def _corpus(root: Path, files: int = 60, seed: int = 0) -> Path:
    """Text files of very different sizes, in nested folders, with repeats and non-ASCII text."""
    rng = random.Random(seed)
    words = ["static", "int", "return", "struct", "void", "the", "über", "naïve", "{", "}", ";", "\n", "\t", "0x1f"]
    for i in range(files):
        folder = root / f"d{i % 4}" / f"sub{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        n = rng.choice([0, 1, 5, 50, 400, 2000])
        (folder / f"f{i:03d}.c").write_text(" ".join(rng.choice(words) for _ in range(n)), encoding="utf-8")
    return root


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _manifest_core(directory: Path) -> dict:
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["build"] = {k: v for k, v in manifest["build"].items()
                         if k not in ("seconds", "finished", "executor", "ray_address", "ray_nodes")}
    return manifest


def assert_same_index(a: Path, b: Path) -> None:
    files_a, files_b = _files(a), _files(b)
    assert sorted(files_a) == sorted(files_b)
    for name in files_a:
        assert files_a[name] == files_b[name], f"{name} differs"
    assert _manifest_core(a) == _manifest_core(b)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def serial(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "index"
    build_index(out, [corpus], tokenizer="bytes", shard_bytes=SHARD_BYTES, workers=1)
    return out


@pytest.fixture
def small_slices(monkeypatch):
    """Slices of a few KB, so that the small test corpus makes many parts."""
    monkeypatch.setattr(build_slices, "MIN_SLICE_BYTES", 4_000)
    monkeypatch.setattr(build_slices, "MAX_SLICE_BYTES", 4_000)


def test_sliced_path_is_byte_identical_to_serial(corpus, serial, tmp_path, small_slices):
    out = tmp_path / "sliced"
    with LocalExecutor(2, distributed=True) as executor:
        build_index(out, [corpus], tokenizer="bytes", shard_bytes=SHARD_BYTES, executor=executor)
    manifest = json.loads((serial / "manifest.json").read_text())
    assert len(manifest["shards"]) >= 3
    assert_same_index(serial, out)
    assert not (out / ".build").exists()
    assert NgramIndex.open(out).count("static int") == NgramIndex.open(serial).count("static int") > 0


def test_sliced_path_matches_serial_with_gpt2_and_relative_paths(corpus, tmp_path, small_slices, monkeypatch):
    """A BPE tokenizer: the serial builder's process pool (batched encode) and the slice tasks
    (one document at a time) give the same ids; relative input paths are recorded as given."""
    pytest.importorskip("tiktoken")
    from engine.tokenizers import load_tokenizer

    try:
        load_tokenizer("gpt2")
    except Exception as exc:  # pragma: no cover - no cache and no registry
        pytest.skip(f"gpt2 preset unavailable: {exc}")
    monkeypatch.chdir(corpus.parent)
    rel = corpus.name
    serial_out, sliced_out = tmp_path / "serial", tmp_path / "sliced"
    build_index(serial_out, [rel], tokenizer="gpt2", shard_bytes=SHARD_BYTES, workers=2)
    with LocalExecutor(2, distributed=True) as executor:
        build_index(sliced_out, [rel], tokenizer="gpt2", shard_bytes=SHARD_BYTES, executor=executor)
    assert_same_index(serial_out, sliced_out)
    assert NgramIndex.open(sliced_out).search_docs("static", max_docs=1).documents[0].metadata["path"].startswith(rel)


def test_local_executor_admits_tasks_by_memory():
    import threading
    import time

    from engine.build.executors import Task

    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def work(i):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return i

    def peak(workers, max_memory, memory):
        state.update(now=0, peak=0)
        tasks = [Task(f"t-{i}", work, (i,), memory=memory) for i in range(6)]
        with LocalExecutor(workers, max_memory) as executor:
            assert sorted(r for _, r in executor.run(tasks)) == list(range(6))
        return state["peak"]

    assert peak(4, 10, 6) == 1  # two would not fit: one at a time
    assert peak(4, 12, 6) == 2
    assert peak(2, None, 6) == 2  # no budget: the worker count bounds it
    assert peak(4, 1, 6) == 1  # a task larger than the budget still runs, alone


def test_sliced_plan_matches_serial_cut():
    lens = np.array([5, 5, 10, 1, 1, 1, 8, 3], dtype=np.uint64)
    # the serial rule: start a new shard when the next document would overflow 10 bytes
    assert build_slices.plan_shards(lens, 10) == [(0, 2), (2, 3), (3, 6), (6, 7), (7, 8)]


def test_sliced_path_rejects_oversized_document(tmp_path, small_slices):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("x" * 50)
    (tmp_path / "in" / "b.txt").write_text("y" * 5000)
    with LocalExecutor(1, distributed=True) as executor, pytest.raises(BuildError, match="document 1 .* larger"):
        build_index(tmp_path / "out", [tmp_path / "in"], tokenizer="bytes", shard_bytes=1000, executor=executor)


# ------------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """An embedded Ray with 2 worker CPUs; its workers inherit the crash-hook directory."""
    if not HAVE_RAY:
        pytest.skip("needs the ray extra")
    import ray

    crash_dir = tmp_path_factory.mktemp("crash")
    old = os.environ.get(CRASH_HOOK_ENV)
    os.environ[CRASH_HOOK_ENV] = str(crash_dir)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 << 20, _memory=4 << 30,
             configure_logging=False, log_to_driver=False)
    try:
        yield crash_dir
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop(CRASH_HOOK_ENV, None)
        else:
            os.environ[CRASH_HOOK_ENV] = old


def _recording_executor(max_retries: int = 3):
    from engine.build.executors import RayExecutor

    class Recording(RayExecutor):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.started: list[str] = []

        def run(self, tasks):
            self.started.extend(t.key for t in tasks)
            return super().run(tasks)

    return Recording(max_retries=max_retries)


@pytest.mark.ray
@pytest.mark.skipif(not HAVE_RAY, reason="needs the ray extra (pip install ray)")
def test_ray_build_with_two_workers_is_byte_identical(ray_cluster, corpus, serial, tmp_path, small_slices):
    executor = _recording_executor()
    out = build_index(tmp_path / "ray", [corpus], tokenizer="bytes", shard_bytes=SHARD_BYTES, executor=executor)
    assert_same_index(serial, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["build"]["executor"] == "ray"
    shards = len(manifest["shards"])
    assert sum(k.startswith("sort-") for k in executor.started) == shards
    assert sum(k.startswith("tokenize-") for k in executor.started) > shards  # many slices


@pytest.mark.ray
@pytest.mark.skipif(not HAVE_RAY, reason="needs the ray extra (pip install ray)")
def test_ray_worker_killed_mid_task_is_retried(ray_cluster, corpus, serial, tmp_path, small_slices):
    armed = ["tokenize-1", "assemble-0", "sort-1"]
    for key in armed:
        (ray_cluster / f"{key}.arm").touch()
    out = build_index(tmp_path / "ray", [corpus], tokenizer="bytes", shard_bytes=SHARD_BYTES,
                      executor=_recording_executor(max_retries=2))
    for key in armed:  # each task's first attempt died (os._exit) and was retried
        assert (ray_cluster / f"{key}.fired").exists(), key
        assert not (ray_cluster / f"{key}.arm").exists()
    assert_same_index(serial, out)


@pytest.mark.ray
@pytest.mark.skipif(not HAVE_RAY, reason="needs the ray extra (pip install ray)")
def test_ray_rerun_after_crash_skips_finished_work(ray_cluster, corpus, serial, tmp_path, small_slices):
    out = tmp_path / "ray"
    args = dict(tokenizer="bytes", shard_bytes=SHARD_BYTES)
    # 1. a tokenize task dies with no retries left: the build fails, finished parts stay
    (ray_cluster / "tokenize-2.arm").touch()
    first = _recording_executor(max_retries=0)
    with pytest.raises(BuildError, match="tokenize-2"):
        build_index(out, [corpus], executor=first, **args)
    parts = out / ".build" / "parts"
    finished_parts = {p.name.split(".")[0] for p in parts.glob("part-*.json")}
    assert "part-000002" not in finished_parts and finished_parts
    # 2. rerun: only unfinished slices are tokenized again; then a sort task dies for good
    (ray_cluster / "sort-1.arm").touch()
    second = _recording_executor(max_retries=0)
    with pytest.raises(BuildError, match="sort-1"):
        build_index(out, [corpus], executor=second, **args)
    redone = {k for k in second.started if k.startswith("tokenize-")}
    assert "tokenize-2" in redone
    assert not any(f"tokenize-{int(p.split('-')[1])}" in redone for p in finished_parts)
    tables = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("table.*")}
    assert "table.1" not in tables and tables
    # 3. rerun: finished shards are skipped, the rest sorted, and the index equals the serial one
    third = _recording_executor()
    build_index(out, [corpus], executor=third, **args)
    assert not any(k.startswith(("tokenize-", "assemble-")) for k in third.started)
    assert "sort-1" in third.started
    assert not any(f"sort-{name.split('.')[1]}" in third.started for name in tables)
    for name, stamp in tables.items():
        p = out / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, f"{name} was rewritten"
    assert_same_index(serial, out)


def test_ray_executor_without_ray_says_how_to_install(monkeypatch):
    import builtins

    from engine.build.executors import RayExecutor

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(BuildError, match=r"ngram-engine\[ray\]"):
        RayExecutor()


def test_core_import_does_not_import_ray():
    import subprocess
    import sys

    code = "import engine, engine.build.builder, engine.build.executors, sys; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------ shard map
def test_shard_map_views_serve_the_index_across_servers(corpus, serial, tmp_path):
    """The build's shard map: per-server views open as indexes, and a router over servers on the
    views answers like the whole index (counts and global document numbers)."""
    import shutil

    from engine.serve.router import NgramRouter
    from engine.serve.shard_map import load_shard_map
    from engine.serve.server import create_server
    from engine.build.shardmap import plan_server_groups

    index = tmp_path / "index"
    shutil.copytree(serial, index)
    whole = NgramIndex.open(index)
    path = build_index(index, [corpus], tokenizer="bytes", shard_bytes=SHARD_BYTES, workers=1,
                       serve_targets=["placeholder:1", "placeholder:2"])
    assert path == index
    data = json.loads((index / "shardmap.json").read_text())
    groups = [entry["index_shards"] for entry in data["shards"]]
    assert sum(groups, []) == list(range(whole.num_shards)) and all(groups)
    views = [NgramIndex.open(index / entry["index"]) for entry in data["shards"]]
    for view in views:
        assert view.manifest["view_of"]["shards"] in groups
    assert sum(v.num_docs for v in views) == whole.num_docs
    assert sum(v.count("static") for v in views) == whole.count("static")

    servers = [create_server(view, "127.0.0.1:0")[0] for view in views]
    try:
        for entry, server in zip(data["shards"], servers):
            entry["target"] = f"127.0.0.1:{server.port}"
        (index / "shardmap.json").write_text(json.dumps(data))
        assert [s.target for s in load_shard_map(index / "shardmap.json")[0]] == [e["target"] for e in data["shards"]]
        router = NgramRouter.from_shard_map(index / "shardmap.json")
        router.warmup()
        try:
            for query in ("static int", "return", "über", "{ }"):
                assert router.count(query) == whole.count(query)
            last = whole.num_docs - 1
            assert router.get_doc_by_ix(last).token_ids.tolist() == whole.get_doc_by_ix(last).token_ids.tolist()
        finally:
            router.close()
    finally:
        for server in servers:
            server.stop(None)
    assert plan_server_groups([5, 1, 1, 1, 10], 3) == [[0, 1], [2, 3], [4]]
