"""The import graph of the package: one direction, no cycles, no hidden imports in functions.

The layers are docs/architecture.md's. A module may import its own layer and the layers below;
the CLI alone may defer its imports of the package into functions (``hypernoise --help`` stays
fast). The graph is read from the source (AST), so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hypernoise"

#: module prefix -> layer (longest prefix wins); docs/architecture.md draws the same table
LAYERS = {
    "hypernoise": 0, "hypernoise.errors": 0, "hypernoise.registry": 0, "hypernoise.faults": 0, "hypernoise.io": 0,
    "hypernoise.devices": 0, "hypernoise.allocator": 0, "hypernoise.metrics": 0, "hypernoise.images": 0,
    "hypernoise.hub": 0, "hypernoise.tracking": 0,
    "hypernoise.generators": 1, "hypernoise.rewards": 1, "hypernoise.geneval": 1, "hypernoise.objective": 1, "hypernoise.lipschitz": 1,
    "hypernoise.training.config": 1, "hypernoise.training.data": 1, "hypernoise.training.checkpoint": 1,
    "hypernoise.lora": 2, "hypernoise.hypernet": 2,
    "hypernoise.training": 3, "hypernoise.adapter": 3, "hypernoise.card": 3,
    "hypernoise.methods": 4,
    "hypernoise.evaluation": 5, "hypernoise.presets": 5, "hypernoise.pipeline": 5, "hypernoise.publish": 5,
    "hypernoise.bench": 6, "hypernoise.demo": 6,
    "hypernoise.world": 7, "hypernoise.toy2d": 7,
    "hypernoise.cli": 8, "hypernoise.__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _targets(node: ast.AST, module: str, path: Path) -> list[str]:
    """The package modules an import statement loads (``from a import b`` loads a.b when b is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "hypernoise"]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        anchor = _package(module, path).split(".")
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    if base.split(".")[0] != "hypernoise":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports(module: str, path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """(modules imported at module level, [(line, module) imported inside a function])."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top, nested = set(), []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for target in _targets(child, module, path):
                (nested.append((child.lineno, target)) if inside else top.add(target))
            visit(child, inside)

    visit(tree, False)
    return top, nested


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    assert MODULES and all(_layer(m) is not None for m in MODULES)


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m, (top, nested) in GRAPH.items() for t in top | {t for _, t in nested} if _layer(t) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_of_the_package_inside_a_function_outside_the_cli():
    hidden = [f"{MODULES[m].relative_to(ROOT.parent)}:{line} imports {t}"
              for m, (_, nested) in GRAPH.items() if _layer(m) < LAYERS["hypernoise.cli"] for line, t in nested]
    assert not hidden, "\n".join(hidden)


def test_the_module_level_import_graph_has_no_cycle():
    edges = {m: {t for t in top if t in MODULES and t != m} for m, (top, _) in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                walk(t, path + [t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            walk(m, [m])
