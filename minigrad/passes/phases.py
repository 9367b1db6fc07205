"""The phase of every operation of a cell: the classification the cell rewrites
and the time-batching schedule read."""

from __future__ import annotations

from collections import deque
from typing import Literal

from minigrad.cell import Cell

__all__ = ["Phase", "classify"]

Phase = Literal["static", "pre", "rec", "post"]


def classify(cell: Cell) -> dict[str, Phase]:
    """The phase of every operation node of ``cell``.

    ``static``: depends on parameters only. ``pre``: depends on inputs (and
    parameters) but on no state. ``rec``: depends on a state and lies on a path
    to a state's update (the recurrence itself). ``post``: depends on a state
    but feeds no update (losses, read-outs, outputs).
    """
    g = cell.graph
    from_state: set[str] = set()
    queue = deque(cell.states)
    while queue:
        n = queue.popleft()
        for m in g.succ[n]:
            if m not in from_state:
                from_state.add(m)
                queue.append(m)
    to_update: set[str] = set()
    queue = deque(s.update for s in cell.states.values())
    to_update.update(queue)
    while queue:
        n = queue.popleft()
        for m in g.pred[n]:
            if m not in to_update:
                to_update.add(m)
                queue.append(m)
    out: dict[str, Phase] = {}
    for n, spec in cell.ops.items():
        if spec.static:
            out[n] = "static"
        elif n not in from_state:
            out[n] = "pre"
        elif n in to_update:
            out[n] = "rec"
        else:
            out[n] = "post"
    return out
