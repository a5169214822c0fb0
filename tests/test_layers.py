"""The package's layering, checked on the source (ast, no import): every module of engine/ and
lm_integration/, with the imports inside functions and ``importlib.import_module("literal")`` calls.

(a) no module imports a private name (``_name``) or a private module (other than ``engine._proto``)
    from another module; a name several modules use is public within its package;
(b) imports only go down the layers of ``LAYERS`` (within one layer any import is allowed);
(c) no import cycle between modules.

ARCHITECTURE.md describes the same layers; this list is the one definition of their order.
``python tests/test_layers.py`` prints every finding.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "lm_integration")

#: (layer, module or package prefix), lowest first. A module belongs to the longest prefix that
#: names it or a package above it. Imports go to the same or a lower layer only.
LAYERS: list[tuple[int, str]] = [
    (0, "engine.errors"),
    (0, "engine.format"),
    (0, "engine.units"),
    (0, "engine._proto"),
    (1, "engine.kernels"),
    (2, "engine.storage"),
    (2, "engine.tokenizers"),
    (2, "engine.fetch"),
    (3, "engine.results"),
    (3, "engine.index"),
    (3, "engine.ngrams"),
    (3, "engine.match"),
    (3, "engine.cnf"),
    (3, "engine.backend"),  # the QueryBackend protocol (issue 17's RPC table work)
    (3, "engine.warmup"),  # compiling the query kernels, in worker processes when numba's cache is empty
    (4, "engine.build"),
    (5, "engine.serve"),
    (6, "engine.cli"),
]
#: engine/__init__.py, the facade above all (this module only, not the package's other modules).
FACADE = ("engine", 7)
#: lm_integration sits beside the serving layer: it may import layers <= 5, never the facade or the CLI.
LM_LAYER = 5
LM_PACKAGE = "lm_integration"
#: The one private module other modules may import (generated protobuf code).
PRIVATE_MODULES_ALLOWED = ("engine._proto",)

# --------------------------------------------------------------------------------------------------
# Reading the source
# --------------------------------------------------------------------------------------------------


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES (a package is its __init__.py)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str, str | None]]:
    """``(line, target module, imported name or None)`` for each import of one of our modules, and for
    each use of a private attribute of an imported module (``suffix._key`` counts as importing ``_key``).

    ``from X import y`` where ``X.y`` is a module counts as importing the module ``X.y``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str, str | None]] = []

    def ours(name: str) -> bool:
        return name.split(".")[0] in PACKAGES

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name):
                    found.append((node.lineno, alias.name, None))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            if not ours(base):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    found.append((node.lineno, sub, None))
                else:
                    found.append((node.lineno, base, alias.name))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ours(node.args[0].value)):
            found.append((node.lineno, node.args[0].value, None))
    found.extend(_private_attributes(tree, found, modules))
    return found


def _private_attributes(tree: ast.AST, imports, modules: dict[str, Path]):
    """``module._name`` where ``module`` is bound, anywhere in the file, to one of our modules."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
                    else:
                        top = alias.name.split(".")[0]
                        aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                for _line, target, name in imports:
                    if name is None and target.endswith("." + alias.name):
                        aliases[alias.asname or alias.name] = target

    def dotted(node) -> str | None:
        if isinstance(node, ast.Name):
            return aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = dotted(node.value)
            if base is not None and base in modules:
                yield node.lineno, base, node.attr


# --------------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------------


def layer_of(module: str) -> float | None:
    if module == LM_PACKAGE or module.startswith(LM_PACKAGE + "."):
        return LM_LAYER + 0.5  # above serve's imports, below what it must not import
    if module == FACADE[0]:
        return FACADE[1]
    best: tuple[int, int] | None = None
    for layer, prefix in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > best[1]:
                best = (layer, len(prefix))
    return None if best is None else best[0]


def _may_import(importer: str, target: str) -> bool:
    low, high = layer_of(target), layer_of(importer)
    if low is None or high is None:
        return False
    if high == LM_LAYER + 0.5 and low != high:  # lm_integration importing the engine
        return low <= LM_LAYER
    return low <= high


def _resolve_module(target: str, modules: dict[str, Path]) -> str | None:
    """The module of ours a dotted target names (``engine.fetch`` -> the package's __init__)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _private_part(target: str) -> str | None:
    for allowed in PRIVATE_MODULES_ALLOWED:
        if target == allowed or target.startswith(allowed + "."):
            return None
    for part in target.split("."):
        if _is_private(part):
            return part
    return None


def find_violations() -> tuple[list[str], list[str]]:
    """(findings, unknown modules). A finding is one line: ``module: what``."""
    modules = module_files()
    unknown = sorted(m for m in modules if layer_of(m) is None)
    findings: set[str] = set()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for _line, target, name in imports_of(module, path, modules):
            resolved = _resolve_module(target, modules)
            if resolved is None:
                findings.add(f"{module}: imports {target}, which does not exist")
                continue
            if resolved == module:
                continue
            if _private_part(resolved):
                findings.add(f"{module}: imports the private module {resolved}")
            if name is not None and _is_private(name):
                findings.add(f"{module}: imports the private name {resolved}.{name}")
            if not _may_import(module, resolved):
                findings.add(f"{module}: imports {resolved} from a higher layer "
                             f"({layer_of(resolved)} > {layer_of(module)})")
            graph[module].add(resolved)
    for component in _cycles(graph):
        path = _cycle_path(graph, component)
        findings.add(f"{path[0]}: import cycle {' -> '.join(path + [path[0]])}")
    return sorted(findings), unknown


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One cycle through the first module of a strongly connected component (shortest, by BFS)."""
    start, members = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return component  # pragma: no cover (a component always holds a cycle)


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


def test_every_module_has_a_layer():
    _, unknown = find_violations()
    assert not unknown, f"modules without a layer (add them to LAYERS and ARCHITECTURE.md): {unknown}"


def test_imports_go_down_without_private_names_or_cycles():
    findings, _ = find_violations()
    assert not findings, "layering violations:\n  " + "\n  ".join(findings)


def test_the_checker_sees_what_it_must(tmp_path):
    """The reader resolves relative and in-function imports and import_module calls."""
    pkg = tmp_path / "engine" / "kernels"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "def f():\n    from .b import _x, y\n    import engine.cli.main\n"
        "    importlib.import_module('engine.serve')\n"
    )
    (pkg / "b.py").write_text("")
    modules = {"engine.kernels": pkg / "__init__.py", "engine.kernels.a": pkg / "a.py",
               "engine.kernels.b": pkg / "b.py"}
    got = imports_of("engine.kernels.a", pkg / "a.py", modules)
    assert (2, "engine.kernels.b", "_x") in got and (2, "engine.kernels.b", "y") in got
    assert (3, "engine.cli.main", None) in got and (4, "engine.serve", None) in got
    assert not _may_import("engine.kernels.a", "engine.cli.main")
    assert _may_import("engine.cli.main", "engine.kernels.a")
    assert _may_import("lm_integration.prior", "engine.serve.client")
    assert not _may_import("lm_integration.prior", "engine")
    assert not _may_import("engine.index", "lm_integration.prior")
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


if __name__ == "__main__":  # pragma: no cover
    found, missing = find_violations()
    print("\n".join(found))
    if missing:
        print("without a layer:", missing)
