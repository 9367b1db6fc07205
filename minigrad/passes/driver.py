"""The one driver of the graph passes: the registry of pass units, and the
resolution of a ``passes=`` argument.

``PASSES`` lists every unit in the order a compilation applies them (cell
rewrites, then program schedules, then layout choices). ``resolve`` turns a
``passes=`` argument into that order after checking it: every name known,
every requirement present. ``rewrite`` applies the cell-level units.
"""

from __future__ import annotations

from collections.abc import Iterable

import minigrad.passes.assign_first_writes as assign_first_writes
import minigrad.passes.chain_factors as chain_factors
import minigrad.passes.defer_shared_grads as defer_shared_grads
import minigrad.passes.factor_elementwise as factor_elementwise
import minigrad.passes.flat_calls as flat_calls
import minigrad.passes.fold_bias as fold_bias
import minigrad.passes.fuse_siblings as fuse_siblings
import minigrad.passes.merge_matmuls as merge_matmuls
import minigrad.passes.negate_sigmoid_inputs as negate_sigmoid_inputs
import minigrad.passes.reassociate_adds as reassociate_adds
import minigrad.passes.reuse_buffers as reuse_buffers
import minigrad.passes.share_add_grads as share_add_grads
import minigrad.passes.time_batch as time_batch
import minigrad.passes.view_slices as view_slices
from minigrad.cell import Cell
from minigrad.errors import ArgumentError, check_names
from minigrad.passes.base import Pass

__all__ = ["ALL_PASSES", "BY_NAME", "DEFAULT_PASSES", "PASSES", "resolve", "rewrite", "without"]

PASSES: tuple[Pass, ...] = (
    # cell rewrites, in the order they run
    merge_matmuls.PASS,
    reassociate_adds.PASS,
    fold_bias.PASS,
    fuse_siblings.PASS,
    negate_sigmoid_inputs.PASS,
    # program schedules (minigrad.plan.compile_plan)
    time_batch.PASS,
    defer_shared_grads.PASS,
    view_slices.PASS,
    share_add_grads.PASS,
    # layout choices (the runtime, while binding)
    reuse_buffers.PASS,
    flat_calls.PASS,
    factor_elementwise.PASS,
    chain_factors.PASS,
    assign_first_writes.PASS,
)
"""Every pass unit, in the order they are applied."""

BY_NAME: dict[str, Pass] = {p.name: p for p in PASSES}

ALL_PASSES: tuple[str, ...] = tuple(p.name for p in PASSES)
"""Every pass by name, in the order they are applied."""

DEFAULT_PASSES: tuple[str, ...] = ALL_PASSES
"""The passes a plan uses unless told otherwise: all of them."""


def resolve(passes: Iterable[str] | None, where: str = "") -> tuple[str, ...]:
    """The passes named in ``passes``, checked, in the order they are applied.

    Args:
        passes: pass names, in any order; None for ``DEFAULT_PASSES``, ``()`` for none.
        where: prefix of error messages (``"cell 'gru': "``).

    Raises:
        ArgumentTypeError: ``passes`` is a single string or holds a non-string.
        ArgumentError: an unknown name (the message lists the known ones), or a pass
            whose requirement is missing (the message names both).
    """
    if passes is None:
        return DEFAULT_PASSES
    names = check_names(passes, "passes", where)
    unknown = sorted(names - BY_NAME.keys())
    if unknown:
        raise ArgumentError(
            f"{where}passes: unknown pass(es) {unknown}; known: {list(ALL_PASSES)}"
        )
    for name in ALL_PASSES:
        if name not in names:
            continue
        missing = [r for r in BY_NAME[name].requires if r not in names]
        if missing:
            raise ArgumentError(
                f"{where}passes: '{name}' requires {', '.join(repr(m) for m in missing)}, "
                f"which is not among the passes given; add it or leave '{name}' out"
            )
    return tuple(n for n in ALL_PASSES if n in names)


def without(name: str, passes: Iterable[str] | None = None) -> tuple[str, ...]:
    """``passes`` (default: ``DEFAULT_PASSES``) with ``name`` switched off, and with it
    every pass that requires it (``chain_factors`` goes with ``factor_elementwise``),
    in the order they are applied."""
    names = set(resolve(passes))
    if name not in BY_NAME:
        raise ArgumentError(f"without: unknown pass {name!r}; known: {list(ALL_PASSES)}")
    off = {name}
    while True:
        more = {p for p in names - off if off & set(BY_NAME[p].requires)}
        if not more:
            break
        off |= more
    return tuple(n for n in ALL_PASSES if n in names - off)


def rewrite(cell: Cell, passes: Iterable[str] | None) -> Cell:
    """``cell`` after the cell-level passes among ``passes`` (checked by ``resolve``),
    applied in registry order. The cell as built is left unchanged."""
    for name in resolve(passes, f"cell '{cell.name}': "):
        unit = BY_NAME[name]
        if unit.rewrite is not None:
            cell = unit.rewrite(cell)
    return cell
