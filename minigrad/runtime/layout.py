"""Buffer layout: which buffers a plan needs for one batch size, their shapes, and views.

Every value of a plan lives in a buffer named after it (``minigrad.runtime.
instr``): parameters keep their shape, inputs are (T, B, ...), states
(T + 1, B, ...) with the initial state at row 0, and each node's value is
(T, B, ...) (or its own shape when it depends on parameters only). All of them
are carved from one arena (``minigrad.arena``). Three kinds of buffer are not
buffers of their own:

* a Slice bound as a view (the ``view_slices`` pass) is a column range of its
  source's buffer;
* without a mask or a truncation window, a state's update node writes straight
  into rows 1..T of the state's buffer (*aliased*);
* with the ``reuse_buffers`` pass, a node whose only reader may overwrite it
  shares that reader's buffer (*in place*).

The mask is laid out here too: (T, B), and as a float and a bool column that
broadcast against a state's rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from minigrad.arena import Arena
from minigrad.cell import Cell
from minigrad.pass_names import REUSE_BUFFERS
from minigrad.runtime.instr import BufRef, buffer_of
from minigrad.types import Array, BoolArray, Shape

if TYPE_CHECKING:
    from minigrad.plan import Plan

__all__ = ["Layout", "aliased_updates", "in_place", "lay_out", "mask_views", "sliced", "view"]


@dataclass
class Layout:
    """The buffers of a plan for one batch size.

    ``bufs``: ``{buffer name: array}`` (see the module docstring for shapes);
    ``aliased``: ``{update node: state}`` for updates written into their state's
    buffer; ``inplace``: ``{node: input node}`` for nodes that overwrite their
    input's buffer; ``mask``: (T, B); ``mask_col`` and ``mask_bool``: the mask as
    (T, B, 1, ...) float and bool columns, all ones until a masked pass loads one.
    """

    arena: Arena
    bufs: dict[str, Array]
    aliased: dict[str, str]
    inplace: dict[str, str]
    mask: Array
    mask_col: Array
    mask_bool: BoolArray


def features(cell: Cell, name: str) -> Shape:
    """The shape of one row of the value ``name`` (its shape without the batch axis)."""
    return tuple(int(d) for d in cell.spec_shape(name)[1:])


def arena_bytes(cell: Cell, T: int, batch: int) -> int:
    """The bytes the arena of a layout expects: values, gradients and Jacobian factors
    together take about three times the values' bytes."""

    def nbytes(name: str) -> int:
        shape = cell.spec_shape(name)
        if cell.shared(name):
            return math.prod(int(d) for d in shape) * cell.dtype.itemsize
        return (T + 1) * batch * math.prod(int(d) for d in shape[1:]) * cell.dtype.itemsize

    return 3 * sum(nbytes(n) for n in cell.graph)


def aliased_updates(plan: Plan, masked: bool) -> dict[str, str]:
    """``{update node: state}``: unmasked and untruncated, a state's update node writes
    straight into the state's buffer (when it updates one state and is not a loss)."""
    cell = plan.cell
    updaters: dict[str, list[str]] = {}
    for s, sspec in cell.states.items():
        updaters.setdefault(sspec.update, []).append(s)
    out: dict[str, str] = {}
    if not masked and plan.truncate is None:
        for u, ss in updaters.items():
            if len(ss) == 1 and cell.kind(u) == "op" and u not in cell.losses:
                out[u] = ss[0]
    return out


def in_place(plan: Plan, aliased: Mapping[str, str]) -> dict[str, str]:
    """``{node: input node}`` (the ``reuse_buffers`` pass): values that no backward step
    reads may be overwritten by their only consumer."""
    cell = plan.cell
    views = plan.views
    out: dict[str, str] = {}
    if REUSE_BUFFERS not in plan.passes:
        return out
    for n in cell.order:
        spec = cell.ops[n]
        op = spec.op
        if spec.static or n in views or n in aliased or not type(op).verified:
            continue
        for slot in op.inplace_slots:
            r = spec.inputs[slot]
            if (
                cell.kind(r) == "op"
                and not cell.ops[r].static
                and r not in views
                and r not in cell.pinned
                and len(cell.readers.get(r, ())) == 1
                and cell.spec_shape(r) == spec.shape
                and cell.ops[r].dtype == spec.dtype
                and not op.uses_input(slot)
                and not type(cell.ops[r].op).backward_uses_output
                and type(cell.ops[r].op).verified
            ):
                out[n] = r
                break
    return out


def sliced(plan: Plan, T: int, b: Mapping[str, Array], n: str) -> Array:
    """The view that the Slice node ``n`` (bound as a view) takes of its source's buffer
    in ``b`` (values or gradients: the same layout)."""
    cell = plan.cell
    src, start, stop = plan.views[n]
    base = b[buffer_of(cell, src)]
    if cell.kind(src) == "state":
        base = base[:T]
    out: Array = base[..., start:stop]
    return out


def view(b: Mapping[str, Array], ref: BufRef) -> Array:
    """The array ``ref`` names in ``b``: a whole buffer, one step, or a range of steps."""
    arr = b[ref.buffer]
    if ref.index is None:
        return arr
    v: Array
    if isinstance(ref.index, tuple):
        v = arr[ref.index[0] : ref.index[1]]
    else:
        v = arr[ref.index]
    return v


def mask_views(
    mask_bool: BoolArray, mask_col: Array, t: int, ndim: int
) -> tuple[BoolArray, Array]:
    """Step ``t``'s mask as a bool and a float column (B, 1, ...) of ``ndim`` axes."""
    mb = mask_bool[t]
    mf = mask_col[t]
    shape = (mb.shape[0],) + (1,) * (ndim - 1)
    return mb[(slice(None),) + (0,) * (mb.ndim - 1)].reshape(shape), mf[
        (slice(None),) + (0,) * (mf.ndim - 1)
    ].reshape(shape)


def lay_out(plan: Plan, batch: int, masked: bool) -> Layout:
    """The buffers of ``plan`` for batch size ``batch`` (with a mask or not)."""
    cell = plan.cell
    T = plan.steps
    arena = Arena(arena_bytes(cell, T, batch))
    bufs: dict[str, Array] = {}
    for p, pspec in cell.params.items():
        bufs["param:" + p] = arena.empty(pspec.shape, pspec.dtype)
    for i, ispec in cell.inputs.items():
        bufs["in:" + i] = arena.empty((T, batch, *features(cell, i)), ispec.dtype)
    for s, sspec in cell.states.items():
        bufs["state:" + s] = arena.empty((T + 1, batch, *features(cell, s)), sspec.dtype)
    aliased = aliased_updates(plan, masked)
    inplace = in_place(plan, aliased)
    for n in cell.order:
        ospec = cell.ops[n]
        if n in inplace:
            bufs["op:" + n] = bufs["op:" + inplace[n]]
        elif n in plan.views:
            bufs["op:" + n] = sliced(plan, T, bufs, n)
        elif ospec.static:
            bufs["op:" + n] = arena.empty(tuple(int(d) for d in ospec.shape), ospec.dtype)
        elif n in aliased:
            bufs["op:" + n] = bufs["state:" + aliased[n]][1:]
        else:
            bufs["op:" + n] = arena.empty((T, batch, *features(cell, n)), ospec.dtype)
    mask = np.ones((T, batch), dtype=cell.dtype)
    extra = max((len(cell.spec_shape(s)) - 1 for s in cell.states), default=1)
    mask_col = mask.reshape(T, batch, *([1] * extra))
    mask_bool: BoolArray = np.ones(mask_col.shape, dtype=bool)
    return Layout(arena, bufs, aliased, inplace, mask, mask_col, mask_bool)
