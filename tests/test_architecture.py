"""The import graph of the package: no cycles, and the one-way layering the README describes.

Every ``import`` / ``from … import`` in ``embedforge/`` counts, wherever it stands: at module
level, inside functions (lazy imports), under ``if TYPE_CHECKING:``, relative forms included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "embedforge"
ROOT = PACKAGE.name  # "embedforge"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(node: ast.AST, current: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """The package modules one import statement refers to (``from pkg import sub`` -> ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:  # `import a.b.c` of a non-module attribute path
                name = name.rpartition(".")[0]
            if name:
                yield name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = current if is_package else current.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            source = f"{base}.{node.module}" if node.module else base
        else:
            source = node.module or ""
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            if sub in known:
                yield sub
            elif source in known:
                yield source


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in imported(node, name, path.name == "__init__.py", known):
                if target != name:
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [shortest_cycle(graph, set(c), c[0]) for c in components]


def shortest_cycle(graph: dict[str, set[str]], within: set[str], start: str) -> list[str]:
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & within):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def test_the_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "embedforge.collection" in graph["embedforge.ingest"]  # module level
    assert "embedforge.query" in graph["embedforge.collection"]
    assert "embedforge.evaluate.sts" in graph["embedforge"]  # inside a function
    assert graph["embedforge.index"] >= {"embedforge.index.base", "embedforge.index.exact"}
    # relative forms, resolved against a made-up package
    tree = ast.parse("from . import b\nfrom .b import x\nfrom ..c import y\nimport p.q.r\n")
    known = {"p", "p.b", "p.c", "p.q", "p.q.a"}
    found = [t for node in ast.walk(tree) for t in imported(node, "p.q.a", False, known)]
    assert sorted(found) == ["p.c", "p.q", "p.q"]  # `from . import b` -> p.q (b is no module), `.b` -> p.q, `..c` -> p.c, p.q.r -> p.q
    found_pkg = [t for node in ast.walk(ast.parse("from . import b\n")) for t in imported(node, "p", True, known)]
    assert found_pkg == ["p.b"]


def test_find_cycles_reports_the_path() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles between embedforge modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_layering() -> None:
    """ingest is imported only by the apps and the public API; the query pipeline never imports the
    collection it is handed; nothing below the apps imports cli/serve/demo."""
    graph = import_graph()
    apps = ("embedforge.cli", "embedforge.serve", "embedforge.adapt", "embedforge.demo")
    for name, targets in graph.items():
        is_app = name == ROOT or name.startswith(apps)
        if "embedforge.ingest" in targets:
            assert is_app, f"{name} imports embedforge.ingest (only the apps may)"
        if not is_app and name != "embedforge.__main__":
            assert not any(t.startswith(apps[:2]) or t == "embedforge.demo" for t in targets), f"{name} imports an app: {sorted(targets)}"
    assert "embedforge.collection" not in graph["embedforge.query"]
    assert not any(t.startswith("embedforge.rerank") and t != "embedforge.rerank.model" for t in graph["embedforge.query"])
