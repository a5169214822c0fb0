"""Sizes written by people ('8G', '512MiB', '1000000') read as bytes, for options of every layer."""

from __future__ import annotations

import argparse
import re

__all__ = ["parse_size", "size_arg"]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'8G', '512MiB', '1000000' -> bytes (binary units: K = 1024); ValueError for anything else."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size; write e.g. 8G, 512M or a number of bytes")
    value, unit = match.groups()
    return int(float(value) * (1 << (10 * " kmgt".index(unit.lower() or " "))))


def size_arg(text: str) -> int:
    """:func:`parse_size` as an argparse ``type`` (its message becomes the usage error)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
