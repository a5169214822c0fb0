"""`ngram demo` and `ngram build-recipe`: build a named index from the recipes shipped in the package
(engine/recipes.json), then use it."""

from __future__ import annotations

import json
import os
import sys
from importlib import resources
from pathlib import Path

from engine.errors import BuildError

EXAMPLE_QUERIES = ["To be, or not to be", " the Lord", "And God said"]


def load_recipes() -> dict:
    return json.loads(resources.files("engine").joinpath("recipes.json").read_text(encoding="utf-8"))


def default_indexes_dir() -> Path:
    """Where named indexes are built by default: the checkout's indexes/ folder when the package runs
    from a source checkout, else ``$NGRAM_INDEXES`` or ``$XDG_DATA_HOME/ngram-engine/indexes``
    (``~/.local/share/ngram-engine/indexes``), never inside site-packages."""
    env = os.environ.get("NGRAM_INDEXES")
    if env:
        return Path(env).expanduser()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "indexes").is_dir():
        return checkout / "indexes"
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home).expanduser() / "ngram-engine" / "indexes"


def build_recipe(name: str, output: Path | None = None, *, progress: bool = True) -> Path:
    """Fetch a recipe's corpora and tokenizer (once, cached) and build its index (once)."""
    from engine.build.builder import build_index
    from engine.fetch import fetch

    recipes = load_recipes()
    if name not in recipes:
        raise BuildError(f"no recipe {name!r}; choose one of {', '.join(sorted(recipes))}")
    recipe = recipes[name]
    output = Path(output) if output else default_indexes_dir() / name
    if (output / "manifest.json").exists():
        return output
    inputs = [fetch(corpus) for corpus in recipe["corpora"]]
    print(f"building {output} from {', '.join(recipe['corpora'])} with the {recipe['tokenizer']} tokenizer",
          file=sys.stderr)
    return build_index(output, inputs, tokenizer=recipe["tokenizer"], progress=progress)


def show_examples(index) -> None:
    """A few queries that show what the engine answers."""
    for text in EXAMPLE_QUERIES:
        ids = index.tokenize(text)
        dist = index.infgram_ntd(ids)
        top = sorted(zip(dist.counts.tolist(), dist.tokens.tolist()), reverse=True)[:5]
        shown = ", ".join(f"{index.tokenizer.token_str(t)!r} {c / dist.prompt_count:.1%}" for c, t in top)
        print(f"count({text!r}) = {index.count(ids):,}; next tokens: {shown}")


def _cmd_build_recipe(args) -> int:
    path = build_recipe(args.name, args.output)
    print(f"index ready at {path}")
    return 0


def _cmd_demo(args) -> int:
    from engine.index import NgramIndex

    path = build_recipe(args.recipe, args.output)
    index = NgramIndex.open(path)
    print(f"opened {index}")
    show_examples(index)
    if args.no_serve:
        return 0
    return serve_with_example(index, args.host, args.port, None if args.no_http else args.http_port)


def serve_with_example(index, host: str, port: int, http_port: int | None = None) -> int:
    """Serve ``index`` over gRPC (and HTTP with the web explorer on ``http_port``) until SIGTERM /
    Ctrl-C, showing one query made through the server."""
    import threading

    from engine.serve.client import NgramClient
    from engine.serve.server import serve

    def query_through_grpc():
        text = EXAMPLE_QUERIES[0]
        with NgramClient(f"{host}:{port}", wait_for_ready=True, timeout=120) as client:
            dist = client.infgram_ntd(text)
            best = int(dist.tokens[dist.counts.argmax()]) if len(dist.tokens) else None
            shown = repr(client.detokenize([best])) if best is not None else "nothing"
            print(f"over gRPC at {host}:{port}: count({text!r}) = {client.count(text):,}; most likely next "
                  f"token {shown}. Try `ngram query` locally, or any gRPC client (reflection is on)"
                  + (f"; open http://{host}:{http_port}/ in a browser for the explorer, or curl its JSON API"
                     if http_port is not None else "") + ". Ctrl-C stops the server.", flush=True)

    threading.Thread(target=query_through_grpc, daemon=True).start()
    return serve(index, host, port, http_port=http_port)


def add_parsers(sub) -> None:
    where = ("indexes/ in a source checkout, else $NGRAM_INDEXES or ~/.local/share/ngram-engine/indexes")
    names = ", ".join(sorted(load_recipes()))
    p = sub.add_parser("build-recipe", help="fetch and build a named index from the shipped recipes",
                       description="Fetch a recipe's corpora and tokenizer into the cache and build its index "
                                   f"under NAME in {where} (skipped when already built). Recipes: {names}.")
    p.add_argument("name", help=f"recipe name ({names})")
    p.add_argument("-o", "--output", type=Path, help="index directory (default NAME under the folder above)")
    p.set_defaults(func=_cmd_build_recipe)
    p = sub.add_parser("demo", help="build the default index, show example queries and serve it (gRPC, HTTP)",
                       description="The main job out of the box: build the demo index (Shakespeare + KJV, GPT-2 "
                                   f"tokens; under {where}) if missing, answer example queries, then serve it "
                                   "over gRPC and over HTTP with the web explorer.")
    p.add_argument("--recipe", default="demo", help=f"which recipe to build and serve (default: demo; {names})")
    p.add_argument("-o", "--output", type=Path, help="index directory (default RECIPE under the folder above)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=50051, help="port to listen on (default 50051)")
    p.add_argument("--http-port", type=int, default=50052,
                   help="HTTP/JSON API and web explorer port (default 50052)")
    p.add_argument("--no-http", action="store_true", help="serve gRPC only")
    p.add_argument("--no-serve", action="store_true", help="stop after the example queries")
    p.set_defaults(func=_cmd_demo)
