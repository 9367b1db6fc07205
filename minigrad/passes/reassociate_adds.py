"""Cell pass ``reassociate_adds``: step-independent terms summed apart.

A tree of ``Add`` nodes that mixes step-independent terms (input
projections, biases) with terms that depend on a state is regrouped as
``(sum of step-independent terms) + (sum of the others)``, so the first
sum is computed for all steps at once and the bias addition is folded out
of the time loop. Floating-point addition is not associative: results
differ from the plain plan by rounding only.
"""

from __future__ import annotations

from minigrad import nodes as N
from minigrad.cell import Cell
from minigrad.passes.base import Pass, ops_of, rebuild
from minigrad.passes.phases import classify

__all__ = ["PASS", "reassociate_adds"]


def reassociate_adds(cell: Cell) -> Cell:
    """Group the step-independent terms of Add trees (see the module docstring)."""
    phase = classify(cell)
    pinned = cell.pinned

    def is_add(n: str) -> bool:
        return n in cell.ops and type(cell.ops[n].op) is N.Add

    def independent(n: str) -> bool:
        kind = cell.kind(n)
        return kind in ("param", "input") or (kind == "op" and phase[n] in ("static", "pre"))

    ops = ops_of(cell)
    absorbed: set[str] = set()
    changed = False
    for root in reversed(cell.order):
        if root in absorbed or not is_add(root) or phase[root] not in ("rec", "post"):
            continue
        leaves: list[str] = []
        inner: list[str] = []
        stack = list(reversed(cell.ops[root].inputs))
        while stack:
            r = stack.pop()
            if (
                is_add(r)
                and len(cell.readers.get(r, ())) == 1
                and r not in pinned
                and phase[r] == phase[root]
            ):
                inner.append(r)
                stack.extend(reversed(cell.ops[r].inputs))
            else:
                leaves.append(r)
        fixed = [r for r in leaves if independent(r)]
        moving = [r for r in leaves if not independent(r)]
        root_shape = cell.spec_shape(root)
        if len(fixed) < 2 or not moving:
            continue
        if any(cell.spec_shape(r) != root_shape for r in moving):
            continue
        # dynamic step-independent terms first, so the partial sums keep the batch dimension
        fixed.sort(key=lambda r: cell.shared(r))
        acc = fixed[0]
        for k, r in enumerate(fixed[1:], 1):
            name = f"{root}.fixed{k}"
            ops[name] = (N.Add(), (acc, r))
            acc = name
        racc = moving[0]
        for k, r in enumerate(moving[1:], 1):
            name = f"{root}.moving{k}"
            ops[name] = (N.Add(), (racc, r))
            racc = name
        ops[root] = (N.Add(), (acc, racc))
        for r in inner:
            del ops[r]
        absorbed.update(inner)
        changed = True
    return rebuild(cell, ops) if changed else cell


PASS = Pass(
    name="reassociate_adds",
    level="cell",
    description=__doc__ or "",
    applied_by="minigrad.passes.driver.rewrite",
    rewrite=reassociate_adds,
)
