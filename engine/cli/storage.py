"""`ngram index-directory` and `ngram cache`: the search directories of an index built elsewhere, and an
index loaded into the page cache as 2 MiB pages."""

from __future__ import annotations

import time

from engine.cli.args import add, command
from engine.storage.directory import DEFAULT_BUDGET, index_directories, parse_budget
from engine.storage.pagecache import cache_index


def _cmd_index_directory(args) -> int:
    """Build each shard's search directory (first-token ranges and sampled suffixes) and store it beside
    the index as directory.N (recorded in its manifest), or in the user cache when the index directory
    is read-only. `ngram build` writes them itself; this is for indexes built by infini-gram or by older
    versions. Without them every open reads every sampled suffix."""
    started = time.perf_counter()
    total = 0
    for index_dir in args.index:
        files = index_directories(index_dir, args.directory_budget, progress=not args.quiet, force=args.force,
                                  cache=True if args.cache else None)
        for f in files:
            total += f.stat().st_size
            print(f"{f}: {f.stat().st_size:,} bytes")
    print(f"search directories ready: {total:,} bytes in {time.perf_counter() - started:.1f} s")
    return 0


def _cmd_cache(args) -> int:
    """Read an index's shard files into the operating system's page cache, as 2 MiB pages where the kernel
    and file system support it (recent Linux, ext4 or XFS). Queries jump around the suffix array and
    tokens, and 2 MiB pages spare them most TLB misses: run this before serving or benchmarking. Clean
    cached pages of these files are dropped and read again; nothing is written. Every process that maps
    the files afterwards gets the large pages."""
    files = cache_index(args.index, progress=not args.quiet)
    for f in files:
        share = f"{100 * f.huge_bytes / f.bytes:.0f}%" if f.bytes else "-"
        print(f"{f.path}: {f.bytes:,} bytes, {share} in 2 MiB pages")
    total = sum(f.bytes for f in files)
    huge = sum(f.huge_bytes for f in files)
    print(f"cached {total:,} bytes; {huge:,} in 2 MiB pages")
    return 0


def add_parsers(sub) -> None:
    p = command(sub, "index-directory", _cmd_index_directory,
                "write the search directories of an index that lacks them (opens instantly after)", "indexes")
    p.add_argument("--directory-budget", type=parse_budget, default=DEFAULT_BUDGET, metavar="BYTES",
                   help="most bytes of sampled suffixes per shard, e.g. 64M (default 256 MiB; smaller: sparser "
                        "samples, one more page read per search end each time it halves)")
    p.add_argument("--cache", action="store_true", help="store in the user cache even if the index is writable")
    p.add_argument("--force", action="store_true", help="rebuild directories that exist")
    add(p, "quiet")
    command(sub, "cache", _cmd_cache, "load an index into the OS page cache as 2 MiB pages (lower query latency)",
            "indexes", "quiet")
