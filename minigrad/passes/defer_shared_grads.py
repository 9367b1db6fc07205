"""Program pass ``defer_shared_grads``: weight gradients once after the loop.

Inside the time loop, a node's gradient with respect to a parameter (or
parameter-only node) is not accumulated step by step: it is computed once
after the loop from the whole (T, B, ...) buffers, for example
``dW = A^T G`` as one GEMM over all T * B rows.

``minigrad.plan.compile_plan`` hands its time-loop instructions to ``defer``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from minigrad.passes.base import Pass

if TYPE_CHECKING:
    from minigrad.plan import Instr

__all__ = ["PASS", "defer"]


def defer(
    loop: list[Instr],
    order: Sequence[str],
    over_all_steps: Callable[[list[Instr], str], Instr],
) -> list[Instr]:
    """Take the gradients with respect to shared values (parameters, parameter-only
    nodes) out of the time-loop instructions ``loop``.

    Each instruction of ``loop`` that wants such a gradient stops wanting it (its
    ``needs`` and ``backward`` are updated in place); the gradients come back as one
    ``"grad"`` instruction per node over all steps (``over_all_steps`` of the node's
    per-step ones), in the reverse of ``order`` (the cell's topological order), to
    run after the backward loop.
    """
    per_name: dict[str, list[Instr]] = {}
    for instr in loop:
        if instr.kind != "op" or not instr.backward:
            continue
        shared = [j for j, r in enumerate(instr.ins) if r.index is None and instr.needs[j]]
        if not shared:
            continue
        per_name.setdefault(instr.name, []).append(
            dataclasses.replace(
                instr,
                kind="grad",
                backward=True,
                needs=tuple(j in shared for j in range(len(instr.ins))),
            )
        )
        instr.needs = tuple(nd and j not in shared for j, nd in enumerate(instr.needs))
        instr.backward = any(instr.needs)
    return [over_all_steps(per_name[n], "grad") for n in reversed(order) if n in per_name]


PASS = Pass(
    name="defer_shared_grads",
    level="program",
    description=__doc__ or "",
    applied_by="minigrad.plan.compile_plan",
)
