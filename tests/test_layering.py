"""The package is layered: no module of src/jobq imports, directly or through others, a module
that imports it back. Every import counts — at module level, under ``if TYPE_CHECKING:``, inside
a function — because a cycle hidden behind one of those is still a cycle for a reader (who owns
what stops being obvious) and usually a real one waiting for the next refactor."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "jobq"


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its ``__init__``)."""
    found: dict[str, Path] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute name a (possibly relative) ``from ... import`` refers to."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base.pop()  # a module's relative imports start from its package
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules `name` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_package, node.level, node.module)
            for alias in node.names:  # `from . import x`: x is a submodule, or a name of base
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
    own: set[str] = set()
    for t in targets:
        # `import jobq.a.b` names jobq.a.b; keep the deepest name that is one of our modules
        while t and t not in modules:
            t = t.rpartition(".")[0]
        if t.startswith(PACKAGE) and t != name:
            own.add(t)
    return own


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete loop through the component, for the failure message."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}

    def walk(v: str) -> bool:
        for w in sorted(graph[v] & members):
            if w == start:
                return True
            if w not in seen:
                seen.add(w)
                path.append(w)
                if walk(w):
                    return True
                path.pop()
        return False

    walk(start)
    return [*path, start]


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checker itself can fail: a cycle hidden in TYPE_CHECKING and a function body."""
    graph = {
        "jobq.a": {"jobq.b"},
        "jobq.b": {"jobq.c"},
        "jobq.c": {"jobq.a"},
        "jobq.d": {"jobq.a"},
    }
    assert cycles(graph) == [["jobq.a", "jobq.b", "jobq.c"]]
    loop = a_cycle(graph, ["jobq.a", "jobq.b", "jobq.c"])
    assert loop == ["jobq.a", "jobq.b", "jobq.c", "jobq.a"]
    pkg = tmp_path / "x.py"
    pkg.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .client import App\n"
        "def f():\n    from . import canvas\n    import jobq.master.events\n"
        "from .master.context import Context\n"
    )
    modules = {
        "jobq": pkg,
        "jobq.client": pkg,
        "jobq.canvas": pkg,
        "jobq.master": pkg,
        "jobq.master.events": pkg,
        "jobq.master.context": pkg,
        "jobq.x": pkg,
    }
    assert imports_of("jobq.x", pkg, modules) == {
        "jobq.client",
        "jobq.canvas",
        "jobq.master.events",
        "jobq.master.context",
    }


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 40, "the scanner found too few modules"
    found = cycles(graph)
    loops = "\n".join(
        f"  {' -> '.join(a_cycle(graph, c))}   (all of: {', '.join(c)})" for c in found
    )
    assert not found, f"import cycles in src/{PACKAGE} (every import counts):\n{loops}"
