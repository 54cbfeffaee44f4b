"""The package has no import circle: every ``import`` in every module (inside functions too, where a
circle hides until the function runs) forms a graph without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pursuhint"


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name → file, for every module and package ``__init__`` under ``package``."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _runtime_imports(tree: ast.AST):
    """Import nodes anywhere in the tree, except under ``if TYPE_CHECKING:`` (never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in _runtime_imports_of(child))
            continue
        yield from _runtime_imports_of(node)


def _runtime_imports_of(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _runtime_imports(node)


def imports_of_file(module: str, path: Path, files: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, imported module of the package) for every runtime import in one file."""
    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in _runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, t) for t in filter(None, (known(a.name) for a in node.names))]
            continue
        base = here
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = ".".join(p for p in (base if node.level else "", node.module or "") if p)
        for alias in node.names:
            full = f"{source}.{alias.name}"
            target = full if full in files else known(source)
            if target:
                out.append((node.lineno, target))
    return out


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module → the package's modules it imports (``from a import b`` counts ``a.b`` when b is a module,
    else ``a``; importing ``a.b.c`` also runs the packages ``a`` and ``a.b``)."""
    files = module_files(package)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = {target for _, target in imports_of_file(module, path, files)}
        parents = {t.rsplit(".", i)[0] for t in targets if t for i in range(1, t.count(".") + 1)}
        graph[module] = {t for t in targets | parents
                         if t and t in files and t != module and not module.startswith(t + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as ``[a, b, ..., a]``, or ``[]`` when there is none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_package_has_no_import_circle():
    graph = import_graph(PACKAGE)
    assert {"pursuhint.cli", "pursuhint.search.results", "pursuhint.train.student"} <= set(graph)
    assert "pursuhint.search.results" in graph["pursuhint.search.sync"]  # the graph sees real imports
    cycle = find_cycle(graph)
    assert not cycle, "import circle: " + " -> ".join(cycle)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_circle_through_an_import_inside_a_function_is_found(tmp_path):
    # The shape the package once had: export imported search.sync, whose function imported export back.
    pkg = write_package(tmp_path, {
        "__init__.py": "",
        "export.py": "from .search.sync import read_marker\n",
        "search/sync.py": "def finish():\n    from ..export import rows\n    return rows\n",
    })
    assert find_cycle(import_graph(pkg)) == ["pkg.export", "pkg.search.sync", "pkg.export"]


@pytest.mark.parametrize("files", [
    {"a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n", "b.py": "from . import a\n"},
    {"a.py": "import os\nfrom . import b\n", "b.py": "from .c import x\n", "c.py": "x = 1\n"},
])
def test_type_checking_imports_and_chains_are_not_circles(tmp_path, files):
    pkg = write_package(tmp_path, {"__init__.py": "", **files})
    assert find_cycle(import_graph(pkg)) == []


def test_a_package_init_importing_its_importer_is_a_circle(tmp_path):
    # Importing pkg.sub.m runs pkg/sub/__init__.py first: if that imports pkg.x, and pkg.x imports
    # pkg.sub.m, the circle goes through the package.
    pkg = write_package(tmp_path, {"__init__.py": "", "sub/__init__.py": "from ..x import f\n",
                                   "sub/m.py": "", "x.py": "from .sub.m import g\n"})
    assert find_cycle(import_graph(pkg)) == ["pkg.sub", "pkg.x", "pkg.sub"]


def test_every_error_class_lives_in_the_error_family():
    """Errors a user can meet are defined once, in ``pursuhint/errors.py``, and all are PursuhintErrors, so the
    CLI catches them by type."""
    from pursuhint import errors

    elsewhere = []
    for name, path in module_files(PACKAGE).items():
        if name == "pursuhint.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    "Error" in ast.unparse(b) or "Exception" in ast.unparse(b) or "Interrupted" in ast.unparse(b)
                    for b in node.bases):
                elsewhere.append(f"{name}.{node.name}")
    assert elsewhere == []
    family = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert all(issubclass(c, errors.PursuhintError) for c in family)
    assert {"TrackingError", "SweepInterrupted"} <= {c.__name__ for c in family}


# ---------------------------------------------------------------- layers between top-level rooms

# Each top-level room (a module or package directly under pursuhint/) and its layer: a room may import only
# rooms of a lower layer (or itself). docs/architecture.md draws the same table.
LAYERS = {
    "errors": 0,
    "infra": 1, "baselines": 1,
    "config": 2, "models": 2,
    "data": 3,
    "hints": 4,
    "distill": 5, "plots": 5, "tracking": 5,
    "train": 6,
    "preflight": 7,
    "search": 8,
    "export": 9,
    "cli": 10,
}


def room_of(module: str) -> str:
    """``pursuhint.search.sweep`` → ``search``; the package's own ``__init__`` is the room ``pursuhint``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(package: Path, layers: dict[str, int]) -> list[str]:
    """Every import (at any depth of a module, functions included) from a room to a room of the same or a
    higher layer, as ``file:line room → room``; a room missing from ``layers`` is reported too."""
    files = module_files(package)
    out = []
    for module, path in sorted(files.items()):
        here = room_of(module)
        one = imports_of_file(module, path, files)
        for line, target in one:
            there = room_of(target)
            if there == here or package.name in (here, there):  # the package's __init__ (its version, its errors)
                continue
            if here not in layers or there not in layers:
                out.append(f"{path.relative_to(package.parent)}:{line} {here} → {there} (a room without a layer)")
            elif layers[there] >= layers[here]:
                out.append(f"{path.relative_to(package.parent)}:{line} {here} (layer {layers[here]}) → {there} "
                           f"(layer {layers[there]})")
    return out


def test_every_import_goes_down_the_layers():
    rooms = {room_of(m) for m in module_files(PACKAGE)} - {PACKAGE.name}
    assert rooms == set(LAYERS), f"rooms without a layer: {sorted(rooms - set(LAYERS))}; gone: {sorted(set(LAYERS) - rooms)}"
    wrong = upward_imports(PACKAGE, LAYERS)
    assert not wrong, "imports that go up a layer:\n" + "\n".join(wrong)


def test_an_upward_import_is_named_with_its_file_and_line(tmp_path):
    pkg = write_package(tmp_path, {"__init__.py": "", "config.py": "import os\n\ndef f():\n    from .search import x\n",
                                   "search/__init__.py": "x = 1\n"})
    assert upward_imports(pkg, {"config": 2, "search": 7}) == ["pkg/config.py:4 config (layer 2) → search (layer 7)"]


# ---------------------------------------------------------------- imports inside functions

def deferred_imports(package: Path) -> list[tuple[str, int, str]]:
    """(file, line, source line) of every import inside a function body (``if TYPE_CHECKING:`` blocks aside)."""
    out = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        for func in ast.walk(ast.parse(text, str(path))):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in _runtime_imports(func):
                out.append((str(path.relative_to(package.parent)), node.lineno, _group_of(lines, node.lineno - 1)))
    return sorted(set(out))


def _group_of(lines: list[str], i: int) -> str:
    """The import at line ``i`` with the imports right above it (blank lines between them allowed): a reason on
    the first line of a function's deferred imports covers them all."""
    start = i
    while start > 0:
        above = [line.strip() for line in lines[:start]]
        j = start - 1
        while j > 0 and not above[j]:  # a blank line between the groups of one prelude
            j -= 1
        if not above[j].startswith(("import ", "from ")):
            break
        start = j
    return "\n".join(lines[start:i + 1])


def test_an_import_inside_a_function_says_why_it_waits():
    """An import inside a function hides the real import graph, so it stays only where it defers a heavy library
    (torch, Ray, MLflow, matplotlib, ...) or a module that loads one, and its line says so in a comment."""
    silent = [f"{file}:{line}: {source.splitlines()[-1].strip()}" for file, line, source in deferred_imports(PACKAGE)
              if "#" not in source]
    assert not silent, "imports inside functions without a reason:\n" + "\n".join(silent)


def test_a_silent_import_inside_a_function_is_found(tmp_path):
    pkg = write_package(tmp_path, {"__init__.py": "", "b.py": "",
                                   "a.py": "def f():\n    import json  # why\n    from . import b\n\n"
                                           "def g():\n    x = 1\n    from . import b\n"})
    found = deferred_imports(pkg)
    assert [(line, "#" in source) for _, line, source in found] == [(2, True), (3, True), (7, False)]
