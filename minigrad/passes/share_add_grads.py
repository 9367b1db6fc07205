"""Program pass ``share_add_grads``: an Add's inputs share its gradient buffer.

An ``Add`` hands its gradient unchanged to its inputs: inputs that only
this Add reads share its gradient buffer, and the Add's backward step
disappears.

``minigrad.plan.compile_plan`` records ``shared_grads(cell, views)`` in the
plan (``Plan.shared_grads``); the workspace lays the gradient buffers out by it.
"""

from __future__ import annotations

from collections.abc import Mapping

from minigrad import nodes as N
from minigrad.cell import Cell
from minigrad.passes.base import Pass

__all__ = ["PASS", "shared_grads"]


def shared_grads(cell: Cell, views: Mapping[str, tuple[str, int, int]]) -> dict[str, str]:
    """``{input: Add}``: the per-step inputs that share the gradient buffer of the
    last Add of the chain of Adds they feed (``views``: the Slice nodes bound as
    views, ``minigrad.passes.view_slices.views``, or empty)."""
    out: dict[str, str] = {}
    for n in cell.order:
        spec = cell.ops[n]
        if type(spec.op) is not N.Add or spec.static:
            continue
        for r in spec.inputs:
            if (
                spec.inputs.count(r) == 1
                and cell.kind(r) == "op"
                and not cell.ops[r].static
                and cell.spec_shape(r) == spec.shape
                and len(cell.readers.get(r, ())) == 1
                and r not in cell.pinned
                and (r not in views or _view_owns_region(cell, views, r))
            ):
                out[r] = n
    # follow chains of Adds to the last one
    for m in list(out):
        r = out[m]
        while r in out:
            r = out[r]
        out[m] = r
    return out


def _view_owns_region(cell: Cell, views: Mapping[str, tuple[str, int, int]], name: str) -> bool:
    """Whether the gradient region of the view ``name`` (a column range of its source's
    gradient) receives nothing but ``name``'s own gradient: the source is a per-step
    operation that leaves the step nowhere (no output, loss or state update, so no seed
    and no carry adds into it) and every other reader of the source is a view of a
    disjoint column range. Only then can an Add share that region with its other inputs;
    otherwise they would pick up the other readers' gradients."""
    src, start, stop = views[name]
    if cell.kind(src) != "op" or cell.ops[src].static or src in cell.pinned or src in views:
        return False
    for reader, _slot in cell.readers.get(src, ()):
        if reader == name:
            continue
        if reader not in views:
            return False
        _s, a, b = views[reader]
        if a < stop and start < b:
            return False
    return True


PASS = Pass(
    name="share_add_grads",
    level="program",
    description=__doc__ or "",
    applied_by="minigrad.plan.compile_plan",
)
