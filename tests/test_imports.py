"""minigrad's modules import one another in one direction: no cycle.

Every import counts, at module level or inside a function, except those under
``if TYPE_CHECKING:`` (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "minigrad"


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST, modules: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """The modules ``tree`` imports; ``from package import module`` counts as importing
    the module (``modules``: the known module names)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for stmt in node.orelse:
                    visit(stmt)
                return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found.update(subs & set(modules))
            if not subs <= set(modules):
                found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> nx.DiGraph:  # type: ignore[type-arg]
    """minigrad's modules and an edge from each to every module it imports."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    g: nx.DiGraph = nx.DiGraph()  # type: ignore[type-arg]
    g.add_nodes_from(modules)
    for name, path in modules.items():
        for target in _imports(ast.parse(path.read_text(), str(path)), set(modules)):
            if target in modules and target != name:
                g.add_edge(name, target)
            # importing a.b.c runs a.b's __init__ first, unless the importer is inside a.b
            parts = target.split(".")
            for k in range(2, len(parts)):
                parent = ".".join(parts[:k])
                if parent in modules and parent != name and not name.startswith(parent + "."):
                    g.add_edge(name, parent)
    return g


def test_minigrad_imports_have_no_cycle() -> None:
    g = import_graph()
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles: {[' -> '.join([*c, c[0]]) for c in cycles]}"


def test_importing_a_submodule_counts_as_importing_its_package() -> None:
    g = import_graph()
    checked = 0
    for a, b in g.edges:
        package = b.rsplit(".", 1)[0]
        if package in g and package != "minigrad" and package != a:
            if not a.startswith(package + "."):
                assert g.has_edge(a, package), (a, b)
                checked += 1
    assert checked > 0  # e.g. minigrad.loop imports minigrad.runtime.execute


def test_the_walk_sees_function_level_imports_and_skips_type_checking() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import minigrad.plan\n"
        "def f():\n    from minigrad.cell import Cell\n"
    )
    found = _imports(tree)
    assert "minigrad.cell" in found and "minigrad.plan" not in found


#: the runtime's modules in import order: each imports only from those before it
RUNTIME_ORDER = (
    "minigrad.arena",
    "minigrad.runtime.instr",
    "minigrad.runtime.calls",
    "minigrad.runtime.layout",
    "minigrad.runtime.bind_forward",
    "minigrad.runtime.bind_backward",
    "minigrad.runtime.execute",
    "minigrad.runtime.workspace",
    "minigrad.loop",
)


def _runtime_modules(g: nx.DiGraph) -> list[str]:  # type: ignore[type-arg]
    found = [m for m in g if m.startswith("minigrad.runtime.")]
    return [m for m in RUNTIME_ORDER if m in g] + sorted(set(found) - set(RUNTIME_ORDER))


def test_the_runtime_never_imports_the_compiler() -> None:
    g = import_graph()
    runtime = _runtime_modules(g)
    assert "minigrad.runtime.workspace" in runtime and "minigrad.loop" in runtime
    for module in runtime:
        assert "minigrad.plan" not in nx.descendants(g, module), module
        assert "minigrad.passes" not in nx.descendants(g, module), module


def test_each_runtime_part_imports_only_the_parts_before_it() -> None:
    g = import_graph()
    listed = set(RUNTIME_ORDER)
    assert {m for m in g if m.startswith("minigrad.runtime.")} <= listed, "unlisted module"
    for i, module in enumerate(RUNTIME_ORDER):
        if module not in g:
            continue
        later = set(RUNTIME_ORDER[i + 1 :])
        reached = nx.descendants(g, module) & later
        assert not reached, f"{module} imports {sorted(reached)}, which come after it"
