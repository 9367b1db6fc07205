"""The executor: loading a batch, running bound call lists, and what a pass returns.

A pass copies the parameters, inputs and initial states into the layout's
buffers (checking names, shapes, dtypes and finiteness), runs a bound list as
``for fn, args in calls: fn(*args)``, and copies out what the caller keeps:
a ``Run`` (loss, outputs, final states) or ``Gradients``. Before the backward
calls it zeroes the gradient buffers that need it, seeds the losses' (and the
outputs') gradients, and runs the factor jobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.cell import Cell
from minigrad.errors import ArgumentError, DTypeError, GraphError, NonFiniteError, ShapeError
from minigrad.nodes import Call
from minigrad.runtime.instr import buffer_of
from minigrad.types import EXACT_INPUT_DTYPES, Array, BoolArray

if TYPE_CHECKING:
    from minigrad.plan import Plan
    from minigrad.runtime.bind_backward import FactorJob

__all__ = [
    "Gradients",
    "Run",
    "check_grad_outputs",
    "collect_gradients",
    "collect_run",
    "first_nonfinite",
    "load",
    "run_calls",
    "seed",
]


@dataclass
class Gradients:
    """The gradients of one backward pass, fresh arrays owned by the caller.

    ``params``: ``{name: (shape of the parameter)}``; ``inputs``:
    ``{name: (T, B, *features)}``; ``states``: ``{name: (B, *features)}``, the
    gradient with respect to each initial state.
    """

    params: dict[str, Array] = field(default_factory=dict)
    inputs: dict[str, Array] = field(default_factory=dict)
    states: dict[str, Array] = field(default_factory=dict)

    def flat(self, state_suffix: str = "0") -> dict[str, Array]:
        """All gradients in one dict; initial-state gradients are named ``state + suffix``."""
        out = dict(self.params)
        out.update(self.inputs)
        out.update({s + state_suffix: g for s, g in self.states.items()})
        return out


@dataclass
class Run:
    """The result of a forward pass.

    ``loss``: the masked sum of every loss term over batch and steps.
    ``outputs``: ``{name: (T, B, *features)}`` copies (zeros on padded steps).
    ``states``: ``{name: (B, *features)}`` the final states (after each row's
    last real step). Pass it to ``Plan.backward`` before the next forward on
    the same plan and batch size.
    """

    loss: float
    outputs: dict[str, Array]
    states: dict[str, Array]
    batch: int
    masked: bool
    _generation: int = 0


def run_calls(calls: Sequence[Call]) -> None:
    """Run a bound list of calls, in order."""
    for fn, args in calls:
        fn(*args)


# -- loading a batch -------------------------------------------------------------


def dtype_accepted(got: np.dtype[Any], expected: np.dtype[Any], exact: bool) -> bool:
    """Whether an argument of dtype ``got`` may fill a buffer of ``expected``: the same
    dtype, or for an input (``exact``) one of :data:`~minigrad.types.EXACT_INPUT_DTYPES`."""
    return got == expected or (exact and got in EXACT_INPUT_DTYPES)


def put(dst: Array, src: Any, what: str, exact: bool = False) -> None:
    """Copy ``src`` into ``dst`` if it has the same shape and dtype (or, with ``exact``, a
    dtype of :data:`~minigrad.types.EXACT_INPUT_DTYPES`), else name ``what``."""
    arr = np.asarray(src)
    if arr.shape != dst.shape:
        raise ShapeError(f"{what} has shape {arr.shape}, expected {dst.shape}")
    if not dtype_accepted(arr.dtype, dst.dtype, exact):
        raise DTypeError(
            f"{what} is {arr.dtype}, expected {dst.dtype} (convert it explicitly; minigrad "
            "never changes a dtype silently)"
        )
    np.copyto(dst, arr)


def load(
    cell: Cell,
    bufs: Mapping[str, Array],
    T: int,
    B: int,
    mask_arrays: tuple[Array, Array, BoolArray],
    params: Mapping[str, Array],
    inputs: Mapping[str, Array],
    states: Mapping[str, Array],
    mask: Array | BoolArray | None,
) -> None:
    """Copy a batch into the buffers: parameters, inputs (T, B, ...), initial states
    (B, ...; a missing one takes its declared initial value) and the mask (T, B) into
    ``mask_arrays`` (the mask, its float and its bool columns)."""
    cname = cell.name
    declared: tuple[tuple[str, Mapping[str, Array], Mapping[str, Any], str], ...] = (
        ("parameter", params, cell.params, "param:"),
        ("input", inputs, cell.inputs, "in:"),
    )
    for what, given, names, prefix in declared:
        for n in names:
            if n not in given:
                raise GraphError(f"cell '{cname}': {what} '{n}' is missing; expected {list(names)}")
            put(bufs[prefix + n], given[n], f"cell '{cname}': {what} '{n}'", prefix == "in:")
        extra = sorted(set(given) - set(names))
        if extra:
            raise GraphError(f"cell '{cname}': unknown {what}(s) {extra}; expected {list(names)}")
    for s, sspec in cell.states.items():
        buf0 = bufs["state:" + s][0]
        if s in states and states[s] is not None:
            put(buf0, states[s], f"cell '{cname}': initial state '{s}'")
        else:
            np.copyto(buf0, sspec.initial(B))
    extra = sorted(set(states) - set(cell.states))
    if extra:
        raise GraphError(f"cell '{cname}': unknown state(s) {extra}; expected {list(cell.states)}")
    # padded steps are computed, then multiplied by zero: a NaN or an infinity there
    # would still poison the loss and the gradients, so it is refused at the door
    for n in cell.inputs:
        arr = bufs["in:" + n]
        finite = np.isfinite(arr).reshape(T, -1).all(axis=1)
        if not finite.all():
            t = int(np.argmin(finite))
            raise NonFiniteError(
                f"cell '{cname}': input '{n}' holds a NaN or an infinity at step {t} "
                "(padded steps too are computed; put zeros there)",
                node=n,
                step=t,
            )
    for s_ in cell.states:
        if not np.all(np.isfinite(bufs["state:" + s_][0])):
            raise NonFiniteError(
                f"cell '{cname}': initial state '{s_}' holds a NaN or an infinity",
                node=s_,
                step=0,
            )
    if mask is not None:
        m = check_mask(mask, T, B, cname)
        mask_f, mask_col, mask_bool = mask_arrays
        np.copyto(mask_f, m, casting="unsafe")
        np.copyto(mask_bool, mask_col != 0)


def check_mask(mask: Any, T: int, B: int, cname: str) -> Any:
    """The mask a caller gave, as an array, once it is ``(T, B)`` and holds only 0 and 1.

    Raises:
        ShapeError: another shape.
        ArgumentError: a value other than 0 and 1.
    """
    m = np.asarray(mask)
    if m.shape != (T, B):
        raise ShapeError(f"cell '{cname}': mask must have shape ({T}, {B}), got {m.shape}")
    if m.dtype != np.bool_ and not np.all((m == 0) | (m == 1)):
        raise ArgumentError(f"cell '{cname}': mask must hold only 0 and 1")
    return m


# -- results ---------------------------------------------------------------------


def collect_run(
    cell: Cell,
    bufs: Mapping[str, Array],
    T: int,
    mask: Array,
    batch: int,
    masked: bool,
    generation: int,
    with_outputs: bool = True,
) -> Run:
    """The ``Run`` of a forward pass just made: the masked loss, copies of the outputs
    (zeros on padded steps) and of the final states."""
    loss = 0.0
    for name in cell.losses:
        vals = bufs["op:" + name]
        loss += float(np.sum(vals * mask) if masked else np.sum(vals))
    outputs: dict[str, Array] = {}
    for o, n in cell.outputs.items() if with_outputs else ():
        arr = bufs[buffer_of(cell, n)]
        if cell.kind(n) == "state":
            arr = arr[:T]
        if masked:
            outputs[o] = arr * mask.reshape(mask.shape + (1,) * (arr.ndim - 2))
        else:
            outputs[o] = arr.copy()
    final = {s: bufs["state:" + s][T].copy() for s in cell.states}
    return Run(loss, outputs, final, batch, masked, generation)


def check_grad_outputs(cell: Cell, grad_outputs: Mapping[str, Array]) -> None:
    """Refuse gradients given for outputs the cell does not have."""
    for o in grad_outputs:
        if o not in cell.outputs:
            raise GraphError(
                f"cell '{cell.name}': grad_outputs names unknown output '{o}'; outputs are "
                f"{list(cell.outputs)}"
            )


def seed(
    cell: Cell,
    gbufs: Mapping[str, Array],
    T: int,
    mask: Array,
    masked: bool,
    seed_modes: Mapping[str, bool],
    zero: Sequence[Array],
    factor_jobs: Sequence[FactorJob],
    grad_outputs: Mapping[str, Array],
    loss_scale: float,
) -> None:
    """Prepare the gradient buffers for the backward calls: zero those in ``zero``, seed
    each loss's gradient with ``loss_scale`` (times the mask) and each output's with
    its given gradient (assigning or adding as ``seed_modes`` says), and run the
    factor jobs."""
    cname = cell.name
    for arr in zero:
        arr.fill(0)
    for name in cell.losses:
        gl = gbufs["op:" + name]
        add = seed_modes["op:" + name]
        if masked:
            if add:
                gl += mask * loss_scale
            else:
                np.multiply(mask, loss_scale, out=gl)
        elif add:
            gl += loss_scale
        else:
            gl.fill(loss_scale)
    for o, n in cell.outputs.items() if grad_outputs else ():
        key = buffer_of(cell, n)
        target = gbufs[key]
        if cell.kind(n) == "state":
            target = target[:T]
        add = seed_modes[key]
        if o not in grad_outputs:
            if not add:
                target.fill(0)
            continue
        go = np.asarray(grad_outputs[o])
        if go.shape != target.shape:
            raise ShapeError(
                f"cell '{cname}': the gradient of output '{o}' has shape {go.shape}, "
                f"expected {target.shape}"
            )
        if masked:
            go = go * mask.reshape(mask.shape + (1,) * (go.ndim - 2))
        if add:
            target += go
        else:
            np.copyto(target, go)
    for ffn, fouts, y_all, xs_all in factor_jobs:
        ffn(fouts, y_all, *xs_all)


def collect_gradients(cell: Cell, gbufs: Mapping[str, Array], wrt: frozenset[str]) -> Gradients:
    """Copies of the gradients with respect to ``wrt`` after a backward pass."""
    out = Gradients()
    for name in sorted(wrt):
        kind = cell.kind(name)
        if kind == "param":
            out.params[name] = gbufs["param:" + name].copy()
        elif kind == "input":
            out.inputs[name] = gbufs["in:" + name].copy()
        else:
            out.states[name] = gbufs["state:" + name][0].copy()
    out.params = {p: out.params[p] for p in cell.params if p in out.params}
    return out


def first_nonfinite(plan: Plan, bufs: Mapping[str, Array], T: int) -> tuple[str, int] | None:
    """The first (node, step) of the unrolled order whose value is not finite, read
    from the buffers as they are (the plan asks this of a plain plan, whose buffers
    hold every value)."""
    cell = plan.cell
    for name, step in plan.order:
        kind = cell.kind(name)
        if kind not in ("op", "state") or (step >= T and kind == "op"):
            continue
        arr = bufs[buffer_of(cell, name)]
        if kind == "op" and cell.ops[name].static:
            value = arr
        elif kind == "state" and step > T:
            continue
        else:
            value = arr[step]
        if not np.all(np.isfinite(value)):
            return name, step
    return None
