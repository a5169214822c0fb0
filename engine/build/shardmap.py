"""Serve one built index from several hosts: per-server views of its shards and the router's map.

A build writes shards ``0..N-1`` into one directory (on a cluster: the shared output location).
To serve it across hosts, the shards are split into contiguous groups, one per shard server:

- ``INDEX/servers/<g>/`` is a *view*: relative symlinks ``tokenized.i``/``table.i``/... to the
  group's shards, renumbered from 0, a ``tokenizer`` link, and a ``manifest.json`` listing only
  those shards (checksums copied from the index's manifest), so ``ngram serve INDEX/servers/<g>``
  and ``ngram verify`` open it like any index. Copy it with ``cp -rL`` / ``rsync -L`` to a host
  that does not mount the shared directory.
- ``INDEX/shardmap.json`` is the router's map (engine.serve.router.load_shard_map): one entry per server,
  in shard order, so the router's global document numbers equal those of the whole index. Each
  entry also records the view (``"index"``, relative to the map) and the shards it holds
  (``"index_shards"``); the router ignores these keys.

    ngram shard-map INDEX --targets host1:50051 host2:50051     # or: python -m engine.build.shardmap ...
    host1$ ngram serve INDEX/servers/0 --host 0.0.0.0 --port 50051
    host2$ ngram serve INDEX/servers/1 --host 0.0.0.0 --port 50051
    router$ ngram route INDEX/shardmap.json --host 0.0.0.0 --port 50050   # = ngram serve --shard-map ...
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from engine.errors import BuildError
from engine.format import MANIFEST_NAME, read_manifest, shard_path, write_json_atomic

__all__ = ["SERVERS_DIR", "SHARD_MAP_NAME", "plan_server_groups", "write_server_views", "write_shard_map"]

SERVERS_DIR = "servers"
SHARD_MAP_NAME = "shardmap.json"
_KINDS = ("tokenized", "table", "offset", "metadata", "metaoff", "directory")


def _manifest(index: Path) -> dict:
    manifest = read_manifest(index)
    if manifest is None:
        raise BuildError(f"{index} has no {MANIFEST_NAME}; finish the build first (rerun the same `ngram build`)")
    return manifest


def plan_server_groups(shard_tokens: Sequence[int], servers: int) -> list[list[int]]:
    """Split shards 0..N-1 into ``servers`` contiguous non-empty groups of about equal tokens."""
    n = len(shard_tokens)
    if not 1 <= servers <= n:
        raise BuildError(f"cannot spread {n} shard(s) over {servers} server(s); give between 1 and {n} targets "
                         "(or build smaller shards with a lower --max-memory)")
    total = sum(shard_tokens)
    groups: list[list[int]] = [[] for _ in range(servers)]
    done = 0
    g = 0
    for shard, tokens in enumerate(shard_tokens):
        # move on once this group has its share, keeping one shard for each group still to fill
        if groups[g] and (done >= total * (g + 1) / servers or n - shard <= servers - 1 - g) and g < servers - 1:
            g += 1
        groups[g].append(shard)
        done += tokens
    return groups


def write_server_views(index: str | os.PathLike, groups: Sequence[Sequence[int]]) -> list[Path]:
    """Write ``INDEX/servers/<g>`` for each group of shard numbers (replacing older views)."""
    index = Path(index)
    manifest = _manifest(index)
    root = index / SERVERS_DIR
    if root.exists():
        shutil.rmtree(root)
    views = []
    for g, group in enumerate(groups):
        view = root / str(g)
        view.mkdir(parents=True)
        entries = []
        for local, shard in enumerate(group):
            entry = dict(manifest["shards"][shard])
            files = {}
            for kind in _KINDS:
                if shard_path(index, kind, shard).exists():
                    os.symlink(Path("..") / ".." / f"{kind}.{shard}", shard_path(view, kind, local))
                    info = entry["files"].get(f"{kind}.{shard}")
                    if info is not None:
                        files[f"{kind}.{local}"] = info
            entry.update(shard=local, files=files)
            entries.append(entry)
        if (index / "tokenizer").exists():
            os.symlink(Path("..") / ".." / "tokenizer", view / "tokenizer")
        sub = dict(manifest, shards=entries, num_tokens=sum(e["num_tokens"] for e in entries),
                   num_docs=sum(e["num_docs"] for e in entries),
                   view_of={"index": "../..", "shards": list(group)})
        write_json_atomic(view / MANIFEST_NAME, sub)
        views.append(view)
    return views


def write_shard_map(index: str | os.PathLike, targets: Sequence[str], *, output: str | os.PathLike | None = None,
                    timeout: float | None = None) -> Path:
    """Write one view per target and the router's shard map (default ``INDEX/shardmap.json``)."""
    index = Path(index)
    targets = [t.strip() for t in targets if t.strip()]
    if not targets:
        raise BuildError("give at least one shard-server target host:port")
    manifest = _manifest(index)
    groups = plan_server_groups([s["num_tokens"] for s in manifest["shards"]], len(targets))
    views = write_server_views(index, groups)
    path = Path(output) if output is not None else index / SHARD_MAP_NAME
    base = path.resolve().parent
    shards = []
    for g, (target, view, group) in enumerate(zip(targets, views, groups)):
        shards.append({"name": f"server-{g}", "target": target,
                       "index": os.path.relpath(view.resolve(), base), "index_shards": group})
    payload: dict = {"shards": shards, "num_tokens": manifest["num_tokens"], "num_docs": manifest["num_docs"]}
    if timeout is not None:
        payload["timeout"] = timeout
    write_json_atomic(path, payload)
    return path


# ------------------------------------------------------------------------------------------- CLI
def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("index", help="a built index directory")
    p.add_argument("--targets", nargs="+", required=True, metavar="HOST:PORT",
                   help="one shard server address per server, in order; the shards are split among them")
    p.add_argument("-o", "--output", help=f"where to write the map (default INDEX/{SHARD_MAP_NAME})")
    p.add_argument("--timeout", type=float, help="per-call deadline the router uses (seconds)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    path = write_shard_map(args.index, args.targets, output=args.output, timeout=args.timeout)
    import json

    for entry in json.loads(path.read_text())["shards"]:
        print(f"{entry['target']}: ngram serve {Path(path).parent / entry['index']} (shards {entry['index_shards']})")
    print(f"router: ngram route {path}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``ngram shard-map`` (engine/cli/main.py's plugin hook)."""
    p = subparsers.add_parser("shard-map", help="split an index among shard servers and write the router's map",
                              description=__doc__.split("\n\n")[0])
    _configure(p)
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.build.shardmap", description=__doc__.split("\n\n")[0])
    _configure(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BuildError as exc:
        print(f"shard-map: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
