"""What `ngram` commands share: one way to declare a command (its --help description is its handler's
docstring) and the options several commands take, each declared once."""

from __future__ import annotations

import argparse
import inspect

_SHARED: dict[str, tuple[tuple[str, ...], dict]] = {
    "index": (("index",), {"help": "index directory"}),
    "indexes": (("index",), {"nargs": "+", "help": "index directory (several allowed)"}),
    "load": (("--load",), {"choices": ["mmap", "ram"], "default": "mmap",
                           "help": "map the files (default) or read them into memory first"}),
    "json": (("--json",), {"action": "store_true", "help": "machine-readable output"}),
    "quiet": (("-q", "--quiet"), {"action": "store_true", "help": "no progress bars"}),
    "tmp-dir": (("--tmp-dir",), {"help": "where the temporary files go (default: next to --out)"}),
}


def command(sub, name: str, func, summary: str, *shared: str) -> argparse.ArgumentParser:
    """Register `ngram NAME`: ``summary`` in the command list, ``func``'s docstring as its description,
    and the ``shared`` options named (see _SHARED), in that order."""
    p = sub.add_parser(name, help=summary, description=inspect.cleandoc(func.__doc__ or summary))
    p.set_defaults(func=func)
    add(p, *shared)
    return p


def add(p: argparse.ArgumentParser, *names: str) -> None:
    """Add the shared options ``names`` to ``p``."""
    for name in names:
        flags, kwargs = _SHARED[name]
        p.add_argument(*flags, **kwargs)
