"""Bound lists of calls: ``[(fn, args), ...]``, run as ``for fn, args in calls: fn(*args)``.

Both bindings record, for each plan instruction, the span of calls it produced
(``(instr, first, stop)``), which a loop program reads to cut one step out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from minigrad.nodes import Call
from minigrad.runtime.instr import Instr

__all__ = ["Span", "closed", "packed"]

Span = tuple[Instr, int, int]
"""An instruction and the range ``[first, stop)`` of the calls bound for it."""


def closed(spans: list[Span], end: int) -> list[Span]:
    """Spans recorded by their first call: each ends where the next one starts."""
    starts = [lo for _i, lo, _hi in spans[1:]] + [end]
    if not spans:
        # nothing to bind (no gradient flows from a loss or a seeded output into
        # anything in ``wrt``): an empty list, not one span too many
        return []
    return [(ins, lo, hi) for (ins, lo, _), hi in zip(spans, starts, strict=True)]


def packed(calls: list[Call]) -> list[Call]:
    """The same calls on fresh array views and tuples, made one after the other.

    A bound list holds a few thousand small Python objects (argument tuples and
    the array views in them), made during binding between many temporaries, so
    they end up scattered over the interpreter's memory pools. Running the list
    then misses the cache on most calls: at batch size 1, where a numpy call on
    a (1, 128) array takes about a microsecond, that cost a GRU forward pass a
    third of its time. Made again in order, the objects sit in the order the
    loop reads them. The views alias the same buffers.
    """

    def fresh(a: Any) -> Any:
        if isinstance(a, np.ndarray):
            return a.view()
        if isinstance(a, tuple):
            return tuple(fresh(x) for x in a)
        return a

    return [(fn, tuple(fresh(a) for a in args)) for fn, args in calls]
