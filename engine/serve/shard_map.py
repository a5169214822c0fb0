"""The router's shard map: which servers hold the shards of one index, and how to reach them.

Shard map (JSON):

    {
      "shards": [
        {"name": "shard-0", "target": "10.0.0.1:50051"},
        {"name": "shard-1", "target": "10.0.0.2:50051", "root_cert": "ca.pem"}
      ],
      "root_cert": "ca.pem",            # optional: TLS to every shard (PEM of the CA/cert)
      "auth_token_file": "token.txt",   # optional: bearer token sent to every shard
      "timeout": 30                     # optional: per-call deadline (s) without a client deadline
    }

Relative paths are relative to the map file. ``name`` defaults to "shard-<i>"; per-shard
"root_cert" / "auth_token_file" / "server_name" override the top-level ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from engine.errors import IndexFormatError

__all__ = ["ShardSpec", "load_shard_map"]


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """One shard server of a shard map."""

    name: str
    target: str
    root_cert: str | None = None
    auth_token_file: str | None = None
    server_name: str | None = None


def load_shard_map(path: str | os.PathLike) -> tuple[list[ShardSpec], dict]:
    """Parse a shard-map file; return (shards, top-level options)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise IndexFormatError(f"shard map {path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise IndexFormatError(f"shard map {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("shards"), list) or not data["shards"]:
        raise IndexFormatError(
            f'shard map {path} must be an object with a non-empty "shards" list, e.g. '
            '{"shards": [{"name": "shard-0", "target": "host:port"}]}'
        )
    base = path.parent

    def rel(p):
        return None if p is None else str(p if Path(p).is_absolute() else base / p)

    shards = []
    seen = set()
    for i, entry in enumerate(data["shards"]):
        if isinstance(entry, str):
            entry = {"target": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("target"), str) or not entry["target"]:
            raise IndexFormatError(f'shard map {path}: shards[{i}] needs a "target": "host:port"')
        name = str(entry.get("name") or f"shard-{i}")
        if name in seen:
            raise IndexFormatError(f"shard map {path}: shard name {name!r} appears twice")
        seen.add(name)
        shards.append(
            ShardSpec(
                name=name,
                target=entry["target"],
                root_cert=rel(entry.get("root_cert", data.get("root_cert"))),
                auth_token_file=rel(entry.get("auth_token_file", data.get("auth_token_file"))),
                server_name=entry.get("server_name", data.get("server_name")),
            )
        )
    options = {k: v for k, v in data.items() if k in ("timeout",)}
    return shards, options
