"""What a pass unit is: the ``Pass`` record every module of ``minigrad.passes``
declares, and the helpers the cell rewrites share.

A pass acts at one of three levels, in the order a compilation meets them:

``cell``
    a rewrite of the ``Cell`` (a cell in, an equivalent cell out) before it is
    unrolled; the unit's ``rewrite`` is the whole pass.
``program``
    a schedule of the symbolic instruction list (``Instr`` over ``BufRef``)
    that ``minigrad.plan.compile_plan`` writes; the unit holds the decision
    (which nodes, which gradients, which views), the plan applies it.
``layout``
    a choice made while a plan is bound to buffers (the runtime, ``Workspace``);
    the unit declares the pass and its name, the runtime checks that name in
    ``Plan.passes`` (through the constants of ``minigrad.pass_names``, so the
    runtime never imports the compiler).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from minigrad import nodes as N
from minigrad.cell import Cell

__all__ = ["LEVELS", "Level", "Ops", "Pass", "ops_of", "rebuild"]

Level = Literal["cell", "program", "layout"]
LEVELS: tuple[Level, ...] = ("cell", "program", "layout")
"""The levels, in the order a compilation applies them."""


@dataclass(frozen=True)
class Pass:
    """One graph pass.

    Attributes:
        name: the name given in ``passes=`` (also the name of its module).
        level: ``"cell"``, ``"program"`` or ``"layout"`` (see the module docstring).
        description: one paragraph: what it does and why it is exact (or rounds).
        requires: passes without which this one cannot act; asking for it
            without them is an ``ArgumentError`` naming the missing one.
        applied_by: where its logic runs (``"minigrad.passes.driver.rewrite"``,
            ``"minigrad.plan.compile_plan"``, ``"the runtime, while binding (Workspace)"``).
        rewrite: for a cell pass, the rewrite itself (``Cell`` -> ``Cell``).
    """

    name: str
    level: Level
    description: str
    requires: tuple[str, ...] = ()
    applied_by: str = ""
    rewrite: Callable[[Cell], Cell] | None = None


Ops = dict[str, tuple[N.Node, tuple[str, ...]]]
"""A cell's operations as a builder takes them: ``{name: (node, input names)}``."""


def ops_of(cell: Cell) -> Ops:
    """The operations of ``cell`` in its topological order, ready to be edited."""
    return {n: (cell.ops[n].op, cell.ops[n].inputs) for n in cell.order}


def rebuild(cell: Cell, ops: Ops) -> Cell:
    """``cell`` with its operations replaced by ``ops``, built and checked again."""
    return cell.to_builder(ops).build()
