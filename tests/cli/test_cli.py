"""`ngram` round trips: build from text files, then info, verify and every query kind, as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import NgramIndex

TEXTS = {
    "a.txt": "the cat sat on the mat\nthe dog sat on the log\n",
    "b.txt": "a cat and a dog\n",
}


def ngram(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "engine.cli.main", *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"ngram {args} exited {proc.returncode}: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus"
    corpus.mkdir()
    for name, text in TEXTS.items():
        (corpus / name).write_text(text)
    out = root / "idx"
    proc = ngram("build", corpus, "-o", out, "--line-per-doc", "--tokenizer", "bytes", "-q")
    assert "index ready" in proc.stdout
    return out


def test_build_then_info_and_verify(built):
    info = json.loads(ngram("info", built, "--json").stdout)
    assert info["num_docs"] == 3 and info["token_width"] == 1
    assert info["manifest"]["tokenizer"]["kind"] == "bytes"
    verify = ngram("verify", built, "--full")
    assert verify.stdout.strip().endswith("OK")


def test_query_kinds_agree_with_the_library(built):
    index = NgramIndex.open(built)
    count = json.loads(ngram("query", built, "count", "sat on the", "--json").stdout)
    assert count["count"] == index.count("sat on the") == 2
    assert "2 occurrences" in ngram("query", built, "count", "sat on the").stdout

    ntd = json.loads(ngram("query", built, "ntd", "the ", "--json").stdout)
    expected = index.ntd("the ")
    assert ntd["prompt_count"] == expected.prompt_count == 4
    assert {row["text"]: row["count"] for row in ntd["top"]} == {"c": 1, "m": 1, "d": 1, "l": 1}

    prob = json.loads(ngram("query", built, "prob", "the ", "--cont-text", "c", "--json").stdout)
    assert prob["prob"] == pytest.approx(0.25)
    # "zzz" never occurs; the longest occurring suffix is " the " (5 bytes), seen twice, once before "m".
    inf = json.loads(ngram("query", built, "infgram-prob", "zzz the ", "--cont-text", "m", "--json").stdout)
    assert inf["suffix_len"] == 5 and inf["prob"] == pytest.approx(0.5)
    infntd = json.loads(ngram("query", built, "infgram-ntd", "zzz the ", "--json").stdout)
    assert infntd["suffix_len"] == 5 and infntd["prompt_count"] == 2

    search = json.loads(ngram("query", built, "search", "dog", "--json").stdout)
    assert search["count"] == 2
    assert all("dog" in d["text"] for d in search["documents"])
    doc = json.loads(ngram("query", built, "doc", "2", "--json").stdout)
    assert doc["documents"][0]["text"] == "a cat and a dog"
    ids = json.loads(ngram("query", built, "count", "--ids", "99 97 116", "--json").stdout)  # "cat"
    assert ids["count"] == 2


def test_user_errors_exit_2_with_a_message(built, tmp_path):
    bad = ngram("query", built, "count", "--ids", "999", check=False)
    assert bad.returncode == 2 and "outside the vocabulary" in bad.stderr
    missing = ngram("info", tmp_path / "nothing", check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    usage = ngram("query", built, "nonsense", check=False)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def test_help_explains_every_command():
    top = ngram("--help").stdout
    for command in ("build", "info", "verify", "query", "serve", "fetch", "demo", "cache"):
        assert command in top
        assert ngram(command, "--help").stdout.startswith("usage: ngram " + command)


def test_version_and_empty_query(built):
    from importlib.metadata import version

    assert ngram("--version").stdout.strip() == f"ngram {version('ngram-engine')}"
    missing = ngram("query", built, "count", check=False)
    assert missing.returncode == 2 and "give the query as TEXT" in missing.stderr and "--ids" in missing.stderr
    assert "occurrences of ''" not in missing.stdout
    index = NgramIndex.open(built)
    everything = ngram("query", built, "count", "--ids", "")
    assert f"{index.num_tokens:,} positions in the index" in everything.stdout
    bad = ngram("query", built, "count", "--ids", "1 x", check=False)
    assert bad.returncode == 2 and "integer token ids" in bad.stderr


def test_closed_pipe_is_not_a_traceback(built):
    # `ngram info IDX | head`, with a reader that has gone before the first line is written
    proc = subprocess.run(f"{sys.executable} -m engine.cli.main info {built} | true; echo \"${{PIPESTATUS[0]}}\"",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "141"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_missing_inputs_fail_before_any_output_or_progress(tmp_path):
    out = tmp_path / "idx"
    proc = ngram("build", tmp_path / "no-such-corpus", "-o", out, check=False)
    assert proc.returncode == 2 and "no input files match" in proc.stderr
    assert "tokenizing" not in proc.stderr
    assert not out.exists()


def test_serve_takes_a_directory_budget(built):
    from engine.cli.main import build_parser

    args = build_parser().parse_args(["serve", str(built), "--directory-budget", "1M"])
    assert args.directory_budget == 1 << 20
    assert build_parser().parse_args(["serve", str(built)]).directory_budget is None  # the files as built
    bad = ngram("serve", built, "--directory-budget", "lots", check=False)
    assert bad.returncode == 2 and "--directory-budget" in bad.stderr
