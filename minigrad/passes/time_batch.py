"""Program pass ``time_batch``: step-independent work runs once over all steps.

Nodes are classified as *pre* (depend on inputs and parameters only),
*rec* (on the path from a state to its update) and *post* (depend on a
state but do not feed the recurrence: losses, read-outs). Pre nodes run
once over all steps before the time loop, post nodes once after it, each
as one numpy call on (T, B, ...) buffers; the backward pass mirrors this.

``minigrad.plan.compile_plan`` groups the instructions of the nodes
``batched`` names into one instruction each over all steps.
"""

from __future__ import annotations

from minigrad.cell import Cell
from minigrad.passes.base import Pass
from minigrad.passes.phases import classify

__all__ = ["PASS", "batched"]


def batched(cell: Cell) -> frozenset[str]:
    """The operations of ``cell`` that run once over all steps instead of once per
    step: the *pre* and *post* nodes (see ``minigrad.passes.phases.classify``)."""
    return frozenset(n for n, p in classify(cell).items() if p in ("pre", "post"))


PASS = Pass(
    name="time_batch",
    level="program",
    description=__doc__ or "",
    applied_by="minigrad.plan.compile_plan",
)
