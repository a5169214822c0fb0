"""`ngram serve`: serve one index (or route to shard servers) over gRPC.

    ngram serve INDEX... [--host 127.0.0.1] [--port 50051] [--load mmap|ram]
    ngram serve --shard-map shards.json [--port 50051]              # a router, holds no index
    ngram route shards.json [--port 50051]                          # the same router
    limits:  --max-message-bytes --max-query-tokens --max-text-bytes --max-batch-size
             --max-results-per-stream --max-support --max-disp-len --max-distinct-tokens ...
    load:    --max-memory 8G --heavy-workers N
    secure:  --tls-cert cert.pem --tls-key key.pem   --auth-token-file token.txt
    http:    --http-port 8080   (HTTP/JSON, infini-gram's POST / and the web explorer, same process)

engine/cli/main.py registers it with ``add_parsers(subparsers)``; ``python -m engine.cli.serve`` runs
it alone. The server prints ``listening on HOST:PORT`` once it reports SERVING, logs one access
line per call on stderr, and exits 0 after SIGTERM/SIGINT (health NOT_SERVING, in-flight calls
finish within --grace seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from engine.cli.main import directory_budget_arg
from engine.errors import NgramError
from engine.serve.servicer import ServerLimits

__all__ = ["add_parsers", "run_serve", "main"]

_LIMIT_HELP = {
    "max_message_bytes": "largest request/response message in bytes",
    "max_query_tokens": "most tokens in one query",
    "max_text_bytes": "most bytes of text in one query",
    "max_batch_size": "most queries in one batch request",
    "max_results_per_stream": "most documents one SearchDocuments call may return",
    "max_support": "largest max_support a request may ask for (0 = no cap); without one a distribution is exact",
    "max_distinct_tokens": "most (token, count) entries in one response's distributions, bounded before the work by "
                           "min(prompt count, vocabulary) per prompt; over it a request must ask for max_support",
    "max_disp_len": "largest max_disp_len (tokens per returned document)",
}



def _configure(p: argparse.ArgumentParser, route: bool = False) -> None:
    if route:
        p.add_argument("shard_map_file", nargs="?", metavar="SHARDMAP",
                       help="JSON shard map (`ngram shard-map` writes one); or give it as --shard-map")
        p.add_argument("--shard-map", metavar="FILE", help="the shard map (same as SHARDMAP)")
        p.set_defaults(index=[], load="mmap", tokenizer=None)
    else:
        p.add_argument("index", nargs="*", metavar="INDEX", help="index directories to serve as one index")
        p.add_argument("--shard-map", metavar="FILE",
                       help="JSON shard map: route to shard servers instead of serving INDEX (= `ngram route FILE`)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=50051, help="port (0 picks a free one; default 50051)")
    if not route:
        p.add_argument("--load", choices=("mmap", "ram"), default="mmap", help="how to open the index (default mmap)")
        p.add_argument("--tokenizer", default=None, help="tokenizer spec for an index without a manifest")
    limits = p.add_argument_group("limits (a request over one gets RESOURCE_EXHAUSTED naming it)")
    defaults = ServerLimits()
    for f in dataclasses.fields(ServerLimits):
        limits.add_argument(
            "--" + f.name.replace("_", "-"), type=int, default=getattr(defaults, f.name),
            help=f"{_LIMIT_HELP.get(f.name, f.name.replace('_', ' '))} (default {getattr(defaults, f.name)})",
        )
    srv = p.add_argument_group("server")
    srv.add_argument("--workers", type=int, default=None, help="RPC worker threads (default: 4 per core)")
    srv.add_argument("--max-concurrent-rpcs", type=int, default=None, help="refuse calls beyond this many in flight")
    srv.add_argument("--grace", type=float, default=10.0,
                     help="seconds in-flight calls get after SIGTERM; running work then stops, and the process "
                          "exits within grace + 1 s (default 10)")
    srv.add_argument("--max-memory", metavar="BYTES", default=None,
                     help="private memory budget (e.g. 8G): calls whose estimated memory would take the server over "
                          "it get RESOURCE_EXHAUSTED (default: no budget beyond the per-call limits)")
    srv.add_argument("--directory-budget", type=directory_budget_arg, default=None, metavar="BYTES",
                     help="most bytes of sampled suffixes in each shard's search directory, e.g. 1G (default: the "
                          "directory.N files as built; another budget builds the directories in memory at start)")
    srv.add_argument("--heavy-workers", type=int, default=None,
                     help="expensive calls (attribution, CNF, frequent n-grams, big batches) running at once; "
                          "others wait or are refused, so cheap calls keep flowing (default: half the cores)")
    srv.add_argument("--http-port", type=int, default=None, metavar="PORT",
                     help="also serve the HTTP/JSON API, infini-gram's API (POST /) and the web explorer (GET /) on "
                          "this port of --host, from the same backend, with the same limits, token and TLS "
                          "(0 picks a free one; see docs/http.md)")
    srv.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate chain (needs --tls-key)")
    srv.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    srv.add_argument("--auth-token-file", metavar="FILE", help="require 'authorization: Bearer <token in FILE>'")
    srv.add_argument("--no-access-log", action="store_true", help="do not log one line per call")
    srv.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    p.set_defaults(func=run_serve, _parser=p, route=route)


def add_parsers(subparsers) -> None:
    """Register `serve` and `route` on an argparse subparsers object (engine/cli/main.py calls this)."""
    p = subparsers.add_parser(
        "serve",
        help="serve an index (or route to shard servers) over gRPC",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _configure(p)
    r = subparsers.add_parser(
        "route",
        help="route to shard servers over gRPC (= ngram serve --shard-map FILE)",
        description="Serve one index made of the shard servers of a shard map: every query fans out to them "
                    "and their answers merge exactly (see docs/multi-host.md).",
    )
    _configure(r, route=True)


def _error(args, msg: str) -> int:
    parser = getattr(args, "_parser", None)
    if parser is not None:
        parser.error(msg)  # exits 2
    print(f"ngram serve: error: {msg}", file=sys.stderr)
    return 2


def run_serve(args) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.no_access_log:
        logging.getLogger("engine.access").setLevel(logging.WARNING)
    shard_map = args.shard_map
    if getattr(args, "route", False):
        given = getattr(args, "shard_map_file", None)
        if given and shard_map and given != shard_map:
            return _error(args, f"two shard maps given ({given} and --shard-map {shard_map}): give one")
        shard_map = given or shard_map
        if not shard_map:
            return _error(args, "give the shard map: ngram route SHARDMAP (see `ngram shard-map`)")
    elif bool(args.index) == bool(shard_map):
        return _error(args, "give INDEX directories or --shard-map FILE (exactly one of them)")
    if bool(args.tls_cert) != bool(args.tls_key):
        return _error(args, "--tls-cert and --tls-key go together")
    try:
        limits = ServerLimits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServerLimits)})
    except ValueError as exc:
        return _error(args, str(exc))
    max_memory = None
    if args.max_memory is not None:
        from engine.units import parse_size

        try:
            max_memory = parse_size(args.max_memory)
        except ValueError as exc:
            return _error(args, f"--max-memory: {exc}")
        if max_memory <= 0:
            return _error(args, "--max-memory must be positive")
    if args.heavy_workers is not None and args.heavy_workers < 1:
        return _error(args, "--heavy-workers must be at least 1")
    token = None
    if args.auth_token_file:
        token = Path(args.auth_token_file).read_text().strip()
        if not token:
            return _error(args, f"--auth-token-file {args.auth_token_file} is empty")

    from engine.serve.server import serve

    try:
        if shard_map:
            from engine.serve.router import NgramRouter

            backend = NgramRouter.from_shard_map(shard_map)
        else:
            from engine.index import NgramIndex

            backend = NgramIndex.open(args.index, load=args.load, tokenizer=_tokenizer(args.tokenizer),
                                      directory_budget=args.directory_budget)
        return serve(
            backend,
            args.host,
            args.port,
            grace=args.grace,
            limits=limits,
            max_workers=args.workers,
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            auth_token=token,
            max_memory=max_memory,
            heavy_workers=args.heavy_workers,
            http_port=args.http_port,
            force_exit=True,
        )
    except (NgramError, OSError) as exc:
        print(f"ngram serve: error: {exc}", file=sys.stderr)
        return 1


def _tokenizer(spec):
    if spec is None:
        return None
    from engine.tokenizers import load_tokenizer

    return load_tokenizer(spec)


def main(argv=None) -> int:
    """`python -m engine.cli.serve [serve args]`, or `python -m engine.cli.serve route SHARDMAP ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    route = bool(argv) and argv[0] == "route"
    parser = argparse.ArgumentParser(prog="ngram route" if route else "ngram serve",
                                     description=__doc__.split("\n\n")[0])
    _configure(parser, route=route)
    args = parser.parse_args(argv[1:] if route else argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
