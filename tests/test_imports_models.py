"""The imports between the modules of models/ flow one way.

Every ``import`` and ``from ... import`` of every module under ``models/`` is
read with ``ast`` (module level and inside functions alike; only the blocks
under ``if TYPE_CHECKING:`` are skipped, since they never run). An import of a
package counts as an import of its ``__init__``; ``from pkg import mod``
counts as an import of ``pkg.mod`` when ``mod`` is a module. The tests fail
on a cycle between modules, and on an import against the order of the
layers (docs/api.md, "Layout of models/").
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"

LAYERS = ("io", "cells", "data", "nets", "train", "generate", "sweep", "cli", "examples")
"""The subpackages of models/, lowest first: each imports only from itself and lower ones."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(MODELS.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of models/ that the module ``name`` (file ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known and m != name}


def import_graph() -> nx.DiGraph:
    modules = all_modules()
    known = set(modules)
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for name, path in modules.items():
        for target in imports_of(path, name, known):
            graph.add_edge(name, target)
            # importing a.b.c runs a.b's __init__ first, unless the importer is inside a.b
            parts = target.split(".")
            for k in range(2, len(parts)):
                parent = ".".join(parts[:k])
                if parent in known and parent != name and not name.startswith(parent + "."):
                    graph.add_edge(name, parent)
    return graph


def test_the_graph_sees_the_imports() -> None:
    graph = import_graph()
    # a module-level import, a function-level one is counted too (checked below)
    assert graph.has_edge("models.nets.sequence", "models.data.batches")
    assert graph.has_edge("models.cli.main", "models.cli.train")
    assert len(graph) > 40


def test_function_level_imports_and_type_checking_blocks(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import models.cli.main\n"
        "def f():\n    from models.train import loop\n"
    )
    known = {"models.cli.main", "models.train", "models.train.loop"}
    assert imports_of(src, "models.x", known) == {"models.train.loop"}


def test_no_import_cycle_in_models() -> None:
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "import cycles in models/: " + "; ".join(
        " -> ".join([*c, c[0]]) for c in cycles[:5]
    )


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None  # models/__init__.py and models/__main__.py sit on top
    return LAYERS.index(parts[1])


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_go_down_the_layers(layer: str) -> None:
    graph = import_graph()
    here = LAYERS.index(layer)
    wrong = [
        f"{a} imports {b}"
        for a, b in graph.edges
        if layer_of(a) == here and (layer_of(b) is None or layer_of(b) > here)  # type: ignore[operator]
    ]
    assert not wrong, f"models/{layer} imports a higher layer: " + "; ".join(wrong)
