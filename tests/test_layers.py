"""The packages of ``tasks/`` form layers: no import cycle between them, and no package imports
one of a higher layer (docs/architecture.md draws them). Imports inside functions count too."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

TASKS = Path(__file__).resolve().parent.parent / "tasks"
# bottom to top; a package may import its own layer or a lower one
LAYERS = [
    ("foundation", {"config", "settings", "trading_settings", "paths", "io", "numbers",
                    "progress", "statefiles"}),
    ("shared state", {"alerts", "policy"}),
    ("domain", {"data", "features", "models", "risk", "health", "plan"}),
    ("services", {"reasoner", "escalation", "execution", "state", "reports", "operator",
                  "decision"}),
    ("evaluation", {"backtest"}),
    ("state-file table", {"statespecs"}),
]


def package_imports(root: Path = TASKS) -> dict[str, set[str]]:
    """``{package: packages of tasks/ it imports}``; a top-level module counts as a package."""
    graph: dict[str, set[str]] = defaultdict(set)
    for file in root.rglob("*.py"):
        pkg = file.relative_to(root).parts[0].removesuffix(".py")
        graph[pkg]
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "tasks" and len(parts) > 1 and parts[1] != pkg:
                    graph[pkg].add(parts[1])
    graph.pop("__init__", None)
    return dict(graph)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one package (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_on_a_hand_made_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_packages():
    found = cycles(package_imports())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_package_has_a_layer_and_imports_only_downwards():
    layer_of = {p: i for i, (_, pkgs) in enumerate(LAYERS) for p in pkgs}
    graph = package_imports()
    unplaced = sorted(set(graph) - set(layer_of))
    assert not unplaced, f"packages without a layer (add them to LAYERS and the docs): {unplaced}"
    upward = [f"{a} ({LAYERS[layer_of[a]][0]}) -> {b} ({LAYERS[layer_of[b]][0]})"
              for a, deps in sorted(graph.items()) for b in sorted(deps)
              if layer_of[b] > layer_of[a]]
    assert not upward, "imports of a higher layer: " + "; ".join(upward)


@pytest.mark.parametrize("name", ["io", "statefiles", "config"])
def test_the_bottom_imports_nothing_above_it(name):
    assert package_imports().get(name, set()) <= {"io"}
