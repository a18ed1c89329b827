"""The package's import graph has no circles: every module of src/vigsm sits below the modules that import
it (imports inside functions count too, since they run as soon as the function does)."""

from __future__ import annotations

import ast

from conftest import ROOT

SRC = ROOT / "src" / "vigsm"


def import_graph() -> dict[str, set[str]]:
    """Module name -> the vigsm modules it imports, anywhere in the file."""
    graph = {}
    for path in sorted(SRC.glob("*.py")):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            deps.update(n.split(".")[1] for n in names if n.startswith("vigsm."))
        deps.discard(path.stem)
        graph[path.stem] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_imports_no_circle():
    graph = import_graph()
    assert {"answers", "notation", "scoring", "training", "decoding"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
