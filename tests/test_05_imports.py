"""The package's import graph has no cycle (module-level and function-level imports alike).

Every ``import``/``from ... import`` of an ``avalanche_hpc`` module anywhere in a module (at the
top or inside a function) is an edge; only imports under ``if TYPE_CHECKING:`` are left out
(they never run). A cycle fails the test with its modules in order.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "avalanche_hpc"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import node, except those under ``if TYPE_CHECKING:``."""
    out: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: {package modules it imports}}``."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for t in targets:
                while t and t not in modules:  # `import a.b.c` of a non-module attribute: its module
                    t = t.rpartition(".")[0]
                if t.startswith(PACKAGE) and t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return comps


def _cycle_path(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One concrete cycle inside a component: ``[a, b, ..., a]`` (breadth-first, so a shortest one)."""
    members, start = set(comp), comp[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return comp


def test_the_walker_sees_function_level_imports_and_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    comps = find_cycles(graph)
    assert comps == [["a", "b", "c"]]
    assert _cycle_path(graph, comps[0]) == ["a", "b", "c", "a"]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
                     "def f():\n    import y\n    from z import w\n")
    seen = {a.name for n in _import_nodes(tree) if isinstance(n, ast.Import) for a in n.names}
    seen |= {n.module for n in _import_nodes(tree) if isinstance(n, ast.ImportFrom)}
    assert seen == {"typing", "y", "z"}


def test_graph_covers_the_package() -> None:
    graph = import_graph()
    assert "avalanche_hpc.hpc.stages" in graph and "avalanche_hpc.hpc.pipeline" in graph
    # function-level imports count: the CLI imports its stages inside its commands
    assert "avalanche_hpc.learn.train" in graph["avalanche_hpc.cli.learn"]
    # the registry imports the stages it runs
    assert {"avalanche_hpc.learn.train", "avalanche_hpc.preprocess.tasks"} <= graph["avalanche_hpc.hpc.stages"]


def test_no_import_cycle() -> None:
    graph = import_graph()
    cycles = [" -> ".join(_cycle_path(graph, c)) for c in find_cycles(graph)]
    if cycles:
        pytest.fail("import cycle(s) among the package's modules (break them; an import inside a function "
                    "does not):\n  " + "\n  ".join(cycles))
