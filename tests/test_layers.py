"""The layers of docs/architecture.md, enforced: no module imports a higher layer, and no two modules import each other.

Imports are read from the source (module level and inside functions alike), so a
lazy import that reaches upward fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "medcoder"

# Lowest first. A module may import its own layer and the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "io", "progress", "version", "registry", "bundles"),
    ("config",),
    ("data",),
    ("evaluation",),
    ("engine",),
    ("models",),
    ("retrieval",),
    ("rerank",),
    ("inference",),
    ("training", "serve", "html_report"),
    ("demo", "cli", "__init__"),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    return RANK["__init__"] if len(parts) == 1 else RANK[parts[1]]


def imports_of(path: Path) -> set[str]:
    """The medcoder modules ``path`` imports (``from medcoder.x import y`` counts as ``medcoder.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("medcoder")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medcoder"):
            found.add(node.module)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_package_has_a_layer(graph) -> None:
    for module in graph:
        assert layer_of(module) >= 0, module


def test_no_module_imports_a_higher_layer(graph) -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles(graph) -> None:
    known = set(graph)

    def edges(module: str) -> list[str]:
        # "from medcoder.models import x" names the package: its __init__ module
        return sorted(target for target in graph[module] if target in known and target != module)

    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in edges(module):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)
