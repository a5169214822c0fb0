"""Regenerate the checked-in gRPC Python code from proto/ngram/v1/*.proto, and copy the .proto files
next to it so an installed wheel carries its own contract (package data).

    python -m engine._proto.generate            # rewrite engine/_proto/ngram/v1/
    python -m engine._proto.generate --check    # exit 1 if the checked-in code is stale

Uses grpcio-tools (a dev dependency). protoc writes absolute imports (``from ngram.v1 import
ngram_pb2``); they are rewritten to ``engine._proto.ngram.v1`` so the code imports as part of
the engine package. tests/serve/test_proto.py regenerates into a temporary directory and compares.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = Path(__file__).resolve().parent  # engine/_proto
PACKAGE_DIR = Path("ngram") / "v1"
PY_PACKAGE = "engine._proto"

_IMPORT_RE = re.compile(r"^from ngram\.v1 import ", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Write the generated modules (and package __init__ files) under out_root; return them."""
    out_root = Path(out_root)
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    protos = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE_DIR}")
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=PROTO_ROOT)
    written = []
    for path in sorted((out_root / PACKAGE_DIR).iterdir()):
        if path.suffix not in (".py", ".pyi") or path.name == "__init__.py":
            continue
        text = path.read_text()
        fixed = _IMPORT_RE.sub(f"from {PY_PACKAGE}.ngram.v1 import ", text)
        if fixed != text:
            path.write_text(fixed)
        written.append(path)
    for proto in proto_files():
        copy = out_root / PACKAGE_DIR / proto.name
        copy.write_bytes(proto.read_bytes())
        written.append(copy)
    for pkg in (out_root / "ngram", out_root / PACKAGE_DIR):
        init = pkg / "__init__.py"
        if not init.exists():
            init.write_text("")
    return written


def compare(generated_root: Path, checked_in_root: Path = OUT_ROOT) -> list[str]:
    """Names of generated files that differ from (or are missing in) checked_in_root."""
    stale = []
    generated = Path(generated_root) / PACKAGE_DIR
    for path in sorted([*generated.glob("*_pb2*.py*"), *generated.glob("*.proto")]):
        other = Path(checked_in_root) / PACKAGE_DIR / path.name
        if not other.exists() or other.read_bytes() != path.read_bytes():
            stale.append(str(PACKAGE_DIR / path.name))
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            stale = compare(Path(tmp))
        if stale:
            print("stale generated code: " + ", ".join(stale) + "; run python -m engine._proto.generate")
            return 1
        print("generated code is up to date")
        return 0
    for path in generate(OUT_ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
