"""The wheel as a new user gets it: built from this checkout, installed into a fresh virtual environment
(core dependencies at the locked versions), and run from a folder outside the checkout."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(cmd, *, cwd, env=None, timeout=900):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", out, ROOT], cwd=out)
    (path,) = out.glob("ngram_engine-*.whl")
    return path


def test_wheel_carries_its_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "engine/recipes.json" in names
    assert "engine/_proto/ngram/v1/ngram.proto" in names
    assert (ROOT / "proto/ngram/v1/ngram.proto").read_bytes() == \
        zipfile.ZipFile(wheel).read("engine/_proto/ngram/v1/ngram.proto")
    assert not any(n.startswith(("tests/", "bench/", "indexes/")) for n in names)


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    # the core dependencies, at the versions CI tests (extras such as torch are not needed here)
    run([py, "-m", "pip", "install", "--quiet", "-c", ROOT / "requirements.lock", wheel], cwd=tmp_path)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("NGRAM_INDEXES", "PYTHONPATH")}
    env["XDG_DATA_HOME"] = str(home / "data")
    ngram = venv / "bin" / "ngram"
    work = tmp_path / "elsewhere"
    work.mkdir()

    version = run([ngram, "--version"], cwd=work, env=env).stdout
    assert version.startswith("ngram ") and "unknown" not in version
    demo = run([ngram, "demo", "--no-serve"], cwd=work, env=env, timeout=1800)
    index = home / "data" / "ngram-engine" / "indexes" / "demo"
    assert (index / "manifest.json").exists(), demo.stderr[-2000:]
    assert "count('To be, or not to be')" in demo.stdout
    site = run([py, "-c", "import engine, pathlib; print(pathlib.Path(engine.__file__).parent)"], cwd=work,
               env=env).stdout.strip()
    assert not site.startswith(str(ROOT)), "the test must run the installed copy, not the checkout"
    assert not any(Path(site).parent.glob("indexes")), "nothing is written into site-packages"
    count = json.loads(run([ngram, "query", index, "count", " the Lord", "--json"], cwd=work, env=env).stdout)
    from engine import NgramIndex  # the checkout's engine, opening the index the installed one built

    assert count["count"] == NgramIndex.open(index).count(" the Lord") > 100
