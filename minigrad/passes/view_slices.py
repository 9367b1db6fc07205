"""Program pass ``view_slices``: Slice nodes bound as views.

``Slice`` nodes cost nothing: their values and gradients are views into
the buffers of the sliced node.

``minigrad.plan.compile_plan`` records ``views(cell)`` in the plan
(``Plan.views``); the workspace binds each one as a view of its source.
"""

from __future__ import annotations

from minigrad import nodes as N
from minigrad.cell import Cell
from minigrad.passes.base import Pass

__all__ = ["PASS", "views"]


def views(cell: Cell) -> dict[str, tuple[str, int, int]]:
    """The Slice nodes of ``cell`` that are bound as views: ``{name: (source, start,
    stop)}``. A loss term or a state's update keeps its own buffer."""
    fixed = set(cell.losses) | {s.update for s in cell.states.values()}
    out: dict[str, tuple[str, int, int]] = {}
    for n in cell.order:
        op = cell.ops[n].op
        if type(op) is N.Slice and n not in fixed:
            out[n] = (cell.ops[n].inputs[0], op.start, op.stop)
    return out


PASS = Pass(
    name="view_slices",
    level="program",
    description=__doc__ or "",
    applied_by="minigrad.plan.compile_plan",
)
