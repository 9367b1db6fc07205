"""Forward binding: a plan's forward instructions as one flat list of numpy calls.

Each instruction becomes one or more calls ``fn(*args)`` on views of the
layout's buffers (``minigrad.runtime.layout``): the numpy ufunc calls a node
spells its forward as (the ``flat_calls`` pass), else the node's
``forward_into``; a node type not marked ``verified`` gets a wrapper that
checks what its ``forward`` returns. A state carry copies the update into the
next row of the state (with a mask, the old row first, then the update where
the row is real). Slices bound as views and aliased updates need no call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.errors import NodeContractError
from minigrad.nodes import Call
from minigrad.pass_names import FLAT_CALLS
from minigrad.runtime.calls import Span, closed, packed
from minigrad.runtime.instr import Instr, at
from minigrad.runtime.layout import mask_views, view
from minigrad.types import Array, BoolArray

if TYPE_CHECKING:
    from minigrad.plan import Plan

__all__ = ["bind_forward"]

_FwdFn = Callable[..., None]


def bind_forward(
    plan: Plan,
    bufs: Mapping[str, Array],
    aliased: Mapping[str, str],
    masked: bool,
    mask_bool: BoolArray,
    mask_col: Array,
) -> tuple[list[Call], list[Span], set[str]]:
    """The forward pass of ``plan`` on the buffers ``bufs``.

    Returns the calls, the span of calls each forward instruction produced, and the
    states whose carry needs no call (their update writes into the state's buffer).
    """
    cell = plan.cell
    views = plan.views
    fwd: list[Call] = []
    skip_carry = set(aliased.values())
    spans: list[Span] = []
    for ins in plan.forward_instrs:
        spans.append((ins, len(fwd), len(fwd)))
        if ins.name in views and ins.kind != "carry":
            continue
        if ins.kind == "carry":
            if ins.name in skip_carry:
                continue
            out = view(bufs, ins.out)
            args = tuple(view(bufs, r) for r in ins.ins)
            if masked:
                mb, _mf = mask_views(mask_bool, mask_col, ins.step - 1, out.ndim)
                fwd.append((np.copyto, (out, args[1])))
                fwd.append((np.copyto, (out, args[0], "same_kind", mb)))
            else:
                fwd.append((np.copyto, (out, args[0])))
            continue
        assert ins.op is not None
        out = view(bufs, ins.out)
        args = tuple(view(bufs, r) for r in ins.ins)
        if not type(ins.op).verified:
            fwd.append((checked_forward(cell.name, ins), (out, *args)))
            continue
        calls = ins.op.forward_calls(out, *args) if FLAT_CALLS in plan.passes else None
        if calls is None:
            fwd.append((ins.op.forward_into, (out, *args)))
        else:
            fwd.extend(typed_constants(calls, out.dtype))
    return packed(fwd), closed(spans, len(fwd)), skip_carry


def typed_constants(calls: list[Call], dtype: np.dtype[Any]) -> list[Call]:
    """The calls with each Python number operand of a ufunc made a 0-d array of ``dtype``.

    numpy converts a Python scalar on every call (about 0.4 us, as much as the
    arithmetic on a (1, 256) array); a typed 0-d array is used as it is. The
    values do not change: a Python number takes the array's dtype either way.
    """
    out = []
    for fn, args in calls:
        base = fn.func if isinstance(fn, functools.partial) else fn
        if isinstance(base, np.ufunc):
            args = tuple(
                np.asarray(a, dtype=dtype)
                if isinstance(a, int | float) and not isinstance(a, bool)
                else a
                for a in args
            )
        out.append((fn, args))
    return out


def checked_forward(cname: str, ins: Instr) -> _FwdFn:
    """A node's ``forward`` (of a type not marked ``verified``) with its result checked."""
    assert ins.op is not None
    op = ins.op

    def fn(out: Array, *xs: Array) -> None:
        y = np.asarray(op.forward(*xs))
        if y.shape != out.shape or y.dtype != out.dtype:
            raise NodeContractError(
                f"cell '{cname}': node '{ins.name}' ({type(op).__name__}) {at(ins.step)}: "
                f"forward returned {y.shape} {y.dtype}, expected {out.shape} {out.dtype}"
            )
        np.copyto(out, y)

    return fn
