"""The package's modules import one another in layers that run one way: no import cycle.

Every ``import`` and ``from ... import`` statement of every module counts, wherever it
is: at the top, inside a function (a lazy import), or under ``if TYPE_CHECKING:`` (a
type-only import).  A cycle through a lazy or type-only import still ties the modules
together: none of them can be read, tested or moved without the others.  Strings handed
to ``importlib`` (the built-in plugin list, the facade's lazy table) are not imports.

The facade: the top-level ``__init__`` re-exports the public API lazily, and its
``if TYPE_CHECKING:`` imports name every module it re-exports, so it counts as a module
that imports them all.  It sits on top of the package, as ``pytest/__init__`` sits on
top of ``_pytest`` (and pluggy's ``__init__`` on top of ``_manager``): a module below
imports what it needs from the module that defines it, never from the facade.  Modules
for users of the facade (``cli``, ``demo``, ``testing``) sit above it.

Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first; those implicit edges
are not counted.  That is sound because the top-level ``__init__`` imports nothing of the
package at run time, and a package ``__init__`` that imports its own submodules (a plugin
package) is never imported back by them without this test seeing the cycle.

``python tests/test_layering.py`` prints the layers: a module's layer is one more than
the highest layer of what it imports (0: it imports nothing of the package).  Run the
test with ``-s`` to see the same.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs

PACKAGE = "torchstitch"
#: the repository root is the package (pyproject maps ``torchstitch`` to ``.``)
ROOT = Path(__file__).resolve().parents[1]
#: folders of the repository that are not part of the package
NOT_PACKAGE = frozenset({"tests", "benchmarks", "examples"})


@attrs.frozen
class Edge:
    """``importer`` imports ``imported`` (both dotted module names) at ``line``."""

    importer: str
    imported: str
    line: int


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name: the root's ``*.py`` files and those
    of every folder below it that is a package (has an ``__init__.py``)."""
    modules: dict[str, Path] = {}
    todo = [(root, (PACKAGE,))]
    while todo:
        folder, prefix = todo.pop()
        for path in sorted(folder.iterdir()):
            if path.is_dir():
                if (path / "__init__.py").is_file() and not (folder == root and path.name in NOT_PACKAGE):
                    todo.append((path, (*prefix, path.name)))
            elif path.suffix == ".py":
                name = prefix if path.stem == "__init__" else (*prefix, path.stem)
                modules[".".join(name)] = path
    return modules


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> Iterator[Edge]:
    """The package's modules that module ``name`` (the file ``path``) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for statement in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(statement, ast.Import):
            targets = [alias.name for alias in statement.names]
        elif isinstance(statement, ast.ImportFrom):
            base = _absolute(statement.module, statement.level, package)
            # "from pkg import mod" imports the module pkg.mod; "from mod import name" imports mod
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in statement.names
            ]
        else:
            continue
        for target in targets:
            if target in modules and target != name:
                yield Edge(name, target, statement.lineno)


def _absolute(module: str | None, level: int, package: str) -> str:
    """The absolute name of ``from <level dots><module> import ...`` inside ``package``."""
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


def import_graph(root: Path = ROOT) -> dict[str, dict[str, Edge]]:
    """module -> {imported module -> the first statement that imports it}."""
    modules = package_modules(root)
    graph: dict[str, dict[str, Edge]] = {name: {} for name in modules}
    for name, path in modules.items():
        for edge in imports_of(name, path, modules):
            graph[name].setdefault(edge.imported, edge)
    return graph


def cycles(graph: Mapping[str, Mapping[str, Edge]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def shortest_cycle(graph: Mapping[str, Mapping[str, Edge]], start: str) -> list[Edge]:
    """A shortest import cycle through module ``start``, as its edges (``[]``: none)."""
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for imported, edge in sorted(graph[module].items()):
                if imported == start:
                    return [*paths[module], edge]
                if imported not in paths:
                    paths[imported] = [*paths[module], edge]
                    following.append(imported)
        frontier = following
    return []


def describe_cycles(graph: Mapping[str, Mapping[str, Edge]], component: list[str]) -> str:
    """The shortest cycle through each module of ``component``, each cycle once."""
    seen: set[frozenset[tuple[str, str]]] = set()
    texts = [f"import cycle among {', '.join(map(_short, component))}:"]
    for module in component:
        edges = shortest_cycle(graph, module)
        key = frozenset((e.importer, e.imported) for e in edges)
        if key not in seen:
            seen.add(key)
            texts.append(describe_cycle(edges))
    return "\n".join(texts)


def describe_cycle(edges: list[Edge]) -> str:
    steps = [f"{_short(e.importer)} imports {_short(e.imported)} (line {e.line})" for e in edges]
    return "  " + ",\n    ".join(steps)


def layers(graph: Mapping[str, Mapping[str, Edge]]) -> dict[str, int]:
    """module -> 1 + the highest layer of what it imports (0 for none); acyclic graphs only."""
    layer: dict[str, int] = {}

    def of(module: str) -> int:
        if module not in layer:
            layer[module] = 1 + max((of(m) for m in graph[module]), default=-1)
        return layer[module]

    for module in graph:
        of(module)
    return layer


def _short(module: str) -> str:
    """A module's name inside the package; the facade is ``torchstitch``."""
    return module.removeprefix(f"{PACKAGE}.")


def drawing(graph: Mapping[str, Mapping[str, Edge]]) -> str:
    """The layers, the top first: one line per layer, each module with what it imports."""
    layer = layers(graph)
    lines = []
    for level in range(max(layer.values()), -1, -1):
        lines.append(f"layer {level}:")
        for module in sorted(m for m in layer if layer[m] == level):
            imported = ", ".join(sorted(_short(m) for m in graph[module]))
            lines.append(f"  {_short(module)}" + (f" <- {imported}" if imported else ""))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "\n\n".join(describe_cycles(graph, c) for c in found)
    print(f"\n{drawing(graph)}")


def test_lazy_and_type_only_imports_count(tmp_path):
    """The graph sees imports inside functions and under TYPE_CHECKING, relative ones resolved."""
    (tmp_path / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .core.b import B\n"
    )
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "core" / "a.py").write_text("def f():\n    from . import b\n    return b\n")
    (tmp_path / "core" / "b.py").write_text("import importlib\nimportlib.import_module('.a', __package__)\n")
    (tmp_path / "core" / "c.py").write_text(
        "from .. import core\nfrom ..core.a import f\nimport torchstitch.core.b\n"
    )
    for skipped in NOT_PACKAGE:
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "__init__.py").write_text("from torchstitch.core import a\n")

    graph = import_graph(tmp_path)

    core = f"{PACKAGE}.core"
    assert {m: sorted(graph[m]) for m in graph} == {
        PACKAGE: [f"{core}.b"],
        core: [],
        f"{core}.a": [f"{core}.b"],
        f"{core}.b": [],
        f"{core}.c": [core, f"{core}.a", f"{core}.b"],
    }
    assert cycles(graph) == []
    assert layers(graph) == {PACKAGE: 1, core: 0, f"{core}.a": 1, f"{core}.b": 0, f"{core}.c": 2}


def test_a_cycle_is_found_and_named(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text("def g():\n    from .c import C\n")
    (tmp_path / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"
    )
    (tmp_path / "d.py").write_text("from . import a\n")

    graph = import_graph(tmp_path)

    (cycle,) = cycles(graph)
    assert cycle == [f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.c"]
    assert describe_cycles(graph, cycle) == (
        "import cycle among a, b, c:\n"
        "  a imports b (line 1),\n    b imports c (line 2),\n    c imports a (line 3)"
    )


def main() -> int:
    """Print the layers of the package (or its import cycles) and return an exit status."""
    graph = import_graph()
    found = cycles(graph)
    for component in found:
        print(describe_cycles(graph, component))
    if found:
        return 1
    print(drawing(graph))
    return 0


if __name__ == "__main__":
    sys.exit(main())
