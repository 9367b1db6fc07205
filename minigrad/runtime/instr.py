"""The instructions a compiled plan hands to the runtime, and the names of buffers.

A ``Plan`` (``minigrad.plan``) is a list of ``Instr`` over named buffers
(``BufRef``): this module is the seam between the compiler, which makes them,
and the runtime, which binds them to arrays and calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from minigrad.cell import Cell
from minigrad.nodes import Node

__all__ = ["ALL_STEPS", "PREFIX", "BufRef", "Index", "Instr", "at", "buffer_of"]

Index = int | tuple[int, int] | None


ALL_STEPS = -2
"""The ``step`` of an instruction that runs over all steps at once."""


class BufRef(NamedTuple):
    """A view of a buffer: ``buffer`` (``"param:W"``, ``"in:x"``, ``"op:z"``,
    ``"state:h"``), ``index`` an int step, a ``(start, stop)`` range of steps,
    or ``None`` for the whole buffer."""

    buffer: str
    index: Index = None  # type: ignore[assignment]


@dataclass(slots=True)
class Instr:
    """One instruction of a plan.

    ``kind`` is ``"op"`` (apply ``op`` to ``ins`` into ``out``) or ``"carry"``
    (``out = ins[0]`` on real steps, ``ins[1]`` on padded ones; ``ins[2]`` is
    the mask row). ``backward`` says whether the backward pass applies its
    local derivative; ``needs`` which inputs want a gradient; ``name`` and
    ``step`` identify it for messages.
    """

    kind: str
    name: str
    step: int
    op: Node | None
    ins: tuple[BufRef, ...]
    out: BufRef
    backward: bool = False
    needs: tuple[bool, ...] = ()


PREFIX = {"param": "param:", "input": "in:", "state": "state:", "op": "op:"}
"""The prefix of a buffer's name, by the kind of the cell's value it holds."""


def buffer_of(cell: Cell, name: str) -> str:
    """The buffer holding the value ``name`` of ``cell`` (``"op:z"``, ``"state:h"``, ...)."""
    return PREFIX[cell.kind(name)] + name


def at(step: int) -> str:
    """An instruction's step, for messages."""
    return "over all steps" if step == ALL_STEPS else f"at step {step}"
