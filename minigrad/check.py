"""Gradient checking against finite differences, for nodes, cells and any function.

Numeric derivatives use the fourth-order central stencil
``((f(x-2hv) - f(x+2hv)) + 8 (f(x+hv) - f(x-hv))) / (12 h)`` along a direction
``v``: random unit directions for every array (one number per check, whatever
the shape, as HIPS autograd does), and every coordinate direction for small
arrays. A check fails when ``|analytic - numeric| > atol + rtol * max(|analytic|,
|numeric|)``; the error names the node or parameter, gives both gradients and
the relative error.

The step ``h`` is 1e-3 and, where that disagrees, 1e-4 for float64 (3e-2 and
3e-3 for float32); the stencil reads ``f`` up to ``2 h`` either side of the
point. Next to a kink (``Node.kinks``, e.g. ``ReLU`` at 0) the stencil
straddles it and measures neither one-sided slope: a failed check says so when
an input of a node declaring kinks lies within ``2 h`` of one. Draw test
inputs away from kinks.

Use float64 inputs: float32 cannot resolve the differences that a tight
tolerance needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from minigrad.cell import Cell
from minigrad.errors import (
    ArgumentError,
    ArgumentTypeError,
    GradcheckError,
    GraphError,
    NodeContractError,
    check_count,
)
from minigrad.nodes import Node
from minigrad.plan import compile_plan
from minigrad.types import Array

__all__ = ["GradcheckResult", "check_grads", "gradcheck", "gradcheck_cell", "gradcheck_node"]


@dataclass(frozen=True)
class GradcheckResult:
    """Summary of a passed check: number of comparisons and the worst relative error
    (with where it occurred)."""

    checks: int
    max_rel_error: float
    worst: str


def _fmt_array(a: Array) -> str:
    return np.array2string(np.asarray(a), precision=10, threshold=40, max_line_width=100)


def check_grads(
    f: Callable[[Mapping[str, Array]], float],
    args: Mapping[str, Array],
    grads: Mapping[str, Array],
    *,
    what: str = "function",
    labels: Mapping[str, str] | None = None,
    h: float | None = None,
    rtol: float = 1e-7,
    atol: float | None = None,
    directions: int = 3,
    per_element_max: int = 64,
    seed: int = 0,
) -> GradcheckResult:
    """Compare ``grads`` with finite differences of the scalar function ``f``.

    Args:
        f: maps ``{name: array}`` (same keys, shapes and dtypes as ``args``) to a float.
        args: the point, ``{name: array}``.
        grads: the analytic gradient of ``f`` at ``args``, ``{name: array of args[name].shape}``;
            names missing from ``grads`` are not checked.
        what: the thing checked, for messages (``"node 'z' (Sigmoid)"``).
        labels: optional display names, e.g. ``{"Wz": "parameter 'Wz'"}``.
        h: step size. By default 1e-3 (near the optimum ``eps ** (1/5)`` of the
            fourth-order stencil for smooth functions) and, where that disagrees,
            1e-4 (better next to kinks such as |x|); 3e-2 and 3e-3 for float32.
        rtol, atol: tolerances; ``atol`` defaults to the rounding-noise floor of
            the stencil, ``10 * eps * max(1, |f(args)|) / h``.
        directions: random directions per array.
        per_element_max: arrays with at most this many entries are also
            checked entry by entry.
        seed: seed of the random directions.

    Returns:
        A ``GradcheckResult``.

    Raises:
        GradcheckError: on the first disagreement.
    """
    check_count(directions, "directions", 0, f"{what}: ")
    check_count(per_element_max, "per_element_max", 0, f"{what}: ")
    for arg, value, strict in (("h", h, True), ("rtol", rtol, False), ("atol", atol, False)):
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and (value > 0 if strict else value >= 0)):
            bound = "> 0" if strict else ">= 0"
            raise ArgumentError(f"{what}: {arg} must be a number {bound}, got {value!r}")
    rng = np.random.default_rng(seed)
    base = {k: np.array(v, copy=True) for k, v in args.items()}
    f0 = float(f(base))
    labels = labels or {}
    checks = 0
    worst = (0.0, "")
    for name, g in grads.items():
        x = base[name]
        label = labels.get(name, f"'{name}'")
        if np.shape(g) != x.shape:
            raise NodeContractError(
                f"{what}: the gradient of {label} has shape {np.shape(g)}, expected {x.shape}"
            )
        eps = float(np.finfo(x.dtype).eps)
        if h is not None:
            step_sizes: tuple[float, ...] = (h,)
        elif x.dtype == np.float64:
            step_sizes = (1e-3, 1e-4)
        else:
            step_sizes = (3e-2, 3e-3)

        def numeric(v: Array, step: float, x: Array = x, name: str = name) -> float:
            def at(c: float) -> float:
                pt = dict(base)
                pt[name] = (x + c * step * v).astype(x.dtype)
                return float(f(pt))

            return ((at(-2) - at(2)) + 8 * (at(1) - at(-1))) / (12 * step)

        probes: list[tuple[str, Array]] = []
        for k in range(directions):
            d = rng.standard_normal(x.shape)
            d /= max(float(np.linalg.norm(d)), 1e-300)
            probes.append((f"random direction {k}", d.astype(x.dtype)))
        if x.size <= per_element_max:
            for idx in np.ndindex(x.shape):
                e = np.zeros_like(x)
                e[idx] = 1
                probes.append((f"index {idx}", e))
        for where, v in probes:
            a = float(np.sum(np.asarray(g, dtype=np.float64) * v))
            # the larger step is best for smooth functions, the smaller one near kinks
            for step in step_sizes:
                tol_abs = atol if atol is not None else 10 * eps * max(1.0, abs(f0)) / step
                n = numeric(v, step)
                diff = abs(a - n)
                scale = max(abs(a), abs(n))
                rel = diff / scale if scale > 0 else 0.0
                ok = diff <= tol_abs + rtol * scale
                if ok and (rel <= rtol or scale <= 100 * tol_abs):
                    break
            checks += 1
            if not ok:
                num_grad = ""
                if x.size <= per_element_max:
                    ng = np.zeros(x.shape)
                    for idx in np.ndindex(x.shape):
                        e = np.zeros_like(x)
                        e[idx] = 1
                        ng[idx] = numeric(e, step)
                    num_grad = (
                        f"\n  analytic gradient:\n{_fmt_array(np.asarray(g))}"
                        f"\n  numeric gradient:\n{_fmt_array(ng)}"
                    )
                raise GradcheckError(
                    f"gradcheck failed for {label} of {what} along {where}: analytic "
                    f"{a:.12e}, numeric {n:.12e}, relative error {rel:.3e} (rtol {rtol:g}, "
                    f"atol {tol_abs:.1e}){num_grad}"
                )
            if scale > 100 * tol_abs and rel > worst[0]:
                worst = (rel, f"{label} along {where}")
    return GradcheckResult(checks, worst[0], worst[1])


def gradcheck_node(
    node: Node,
    *xs: Array,
    seed: int = 0,
    rtol: float = 1e-7,
    atol: float | None = None,
    per_element_max: int = 64,
) -> GradcheckResult:
    """Check a node's ``vjp`` against finite differences of its ``forward``.

    The scalar checked is ``sum(w * forward(*xs))`` for a random ``w`` of the
    output's shape; its analytic gradient is ``vjp(w, y, *xs)``.

    Args:
        node: the node.
        xs: its inputs (float64 for a tight check), shapes as the node expects.
    """
    rng = np.random.default_rng(seed + 1)
    what = f"node {type(node).__name__}"
    y = node.forward(*xs)
    w = rng.standard_normal(np.shape(y)).astype(np.asarray(y).dtype)
    grads = node.vjp(w, y, *xs)
    if not isinstance(grads, tuple) or len(grads) != len(xs):
        raise NodeContractError(
            f"{what}: vjp must return a tuple with one gradient per input ({len(xs)})"
        )
    names = [f"{i}:{node.slot(i)}" for i in range(len(xs))]
    for i, (gr, x) in enumerate(zip(grads, xs, strict=True)):
        if gr is None or np.shape(gr) != np.shape(x) or np.asarray(gr).dtype != np.asarray(x).dtype:
            raise NodeContractError(
                f"{what}: the gradient of input {i} '{node.slot(i)}' is "
                f"{None if gr is None else (np.shape(gr), np.asarray(gr).dtype)}, expected "
                f"{np.shape(x)} {np.asarray(x).dtype}"
            )

    def f(args: Mapping[str, Array]) -> float:
        return float(np.sum(w * node.forward(*(args[n] for n in names))))

    try:
        return check_grads(
            f,
            dict(zip(names, xs, strict=True)),
            dict(zip(names, grads, strict=True)),
            what=what,
            labels={n: f"input {n.split(':')[0]} '{n.split(':')[1]}'" for n in names},
            rtol=rtol,
            atol=atol,
            per_element_max=per_element_max,
            seed=seed,
        )
    except GradcheckError as exc:
        hint = kink_hint(node, xs)
        if not hint:
            raise
        raise GradcheckError(f"{exc}\n  {hint}") from None


def max_reach(dtype: np.dtype[np.floating]) -> float:
    """How far from the point the default stencil reads ``f``: two of the larger step."""
    return 2 * (1e-3 if dtype == np.float64 else 3e-2)


def kink_hint(node: Node, xs: tuple[Array, ...] | list[Array]) -> str:
    """A sentence naming the inputs of ``node`` that lie within the stencil's reach
    of one of its ``kinks``, or "" when none does (or the node declares none)."""
    if not node.kinks:
        return ""
    notes = []
    for i, x in enumerate(xs):
        arr = np.asarray(x)
        reach = max_reach(arr.dtype)
        for k in node.kinks:
            near = int(np.count_nonzero(np.abs(arr - k) < reach))
            if near:
                notes.append(
                    f"input {i} '{node.slot(i)}' has {near} value(s) within {reach:g} of "
                    f"the kink of {type(node).__name__} at {k:g}"
                )
    if not notes:
        return ""
    return (
        "hint: " + "; ".join(notes) + ": finite differences there straddle the kink and "
        "measure neither slope; draw the inputs away from it"
    )


def gradcheck_cell(
    cell: Cell,
    params: Mapping[str, Array],
    inputs: Mapping[str, Array],
    states: Mapping[str, Array] | None = None,
    mask: Array | None = None,
    *,
    seed: int = 0,
    rtol: float = 1e-7,
    atol: float | None = None,
    per_element_max: int = 64,
) -> GradcheckResult:
    """Check BPTT through an unrolled cell: every parameter, input and initial state.

    The scalar checked is the cell's loss plus ``sum(w_o * output_o)`` for
    random weights ``w_o`` on each output, so both the loss path and the
    outputs' path are covered.

    Args:
        cell: a built cell.
        params: ``{name: array}`` for every parameter.
        inputs: ``{name: (T, B, *features)}``.
        states: optional initial states ``{name: (B, *features)}``.
        mask: optional (T, B) mask.
    """
    rng = np.random.default_rng(seed + 2)
    missing = [n for n in cell.inputs if n not in inputs]
    if missing or not inputs:
        raise GraphError(
            f"cell '{cell.name}': inputs is missing input(s) {missing}; expected "
            f"{list(cell.inputs)} as (T, B, ...) arrays"
        )
    first = next(iter(inputs.values()))
    T, B = first.shape[0], first.shape[1]
    plan = compile_plan(cell, T)
    st = {
        s: (np.asarray(states[s]) if states and s in states else spec.initial(B))
        for s, spec in cell.states.items()
    }
    run = plan.forward(params, inputs, st, mask)
    weights = {
        o: rng.standard_normal(arr.shape).astype(arr.dtype) for o, arr in run.outputs.items()
    }
    grads = plan.backward(run, grad_outputs=weights)
    args: dict[str, Array] = {}
    analytic: dict[str, Array] = {}
    labels: dict[str, str] = {}
    for p in cell.params:
        args["p:" + p], analytic["p:" + p], labels["p:" + p] = (
            params[p],
            grads.params[p],
            f"parameter '{p}'",
        )
    for i in cell.inputs:
        args["i:" + i], analytic["i:" + i], labels["i:" + i] = (
            inputs[i],
            grads.inputs[i],
            f"input '{i}'",
        )
    for s in cell.states:
        args["s:" + s], analytic["s:" + s], labels["s:" + s] = (
            st[s],
            grads.states[s],
            f"initial state '{s}'",
        )

    def f(a: Mapping[str, Array]) -> float:
        r = plan.forward(
            {p: a["p:" + p] for p in cell.params},
            {i: a["i:" + i] for i in cell.inputs},
            {s: a["s:" + s] for s in cell.states},
            mask,
        )
        return r.loss + sum(float(np.sum(weights[o] * r.outputs[o])) for o in weights)

    try:
        return check_grads(
            f,
            args,
            analytic,
            what=f"cell '{cell.name}' unrolled for {T} steps",
            labels=labels,
            rtol=rtol,
            atol=atol,
            per_element_max=per_element_max,
            seed=seed,
        )
    except GradcheckError as exc:
        kinked = [
            f"'{n}' ({type(cell.ops[n].op).__name__})" for n in cell.order if cell.ops[n].op.kinks
        ]
        if not kinked:
            raise
        raise GradcheckError(
            f"{exc}\n  hint: node(s) {', '.join(kinked)} have kinks; if a value reaching one "
            f"lies within {max_reach(first.dtype):g} of a kink, finite differences straddle it "
            "and measure neither slope (check the node alone with gradcheck_node)"
        ) from None


def gradcheck(target: Node | Cell, *args: object, **kwargs: object) -> GradcheckResult:
    """Check a node (``gradcheck(node, *inputs)``) or a cell
    (``gradcheck(cell, params, inputs, states=None, mask=None)``)."""
    if isinstance(target, Node):
        return gradcheck_node(target, *args, **kwargs)  # type: ignore[arg-type]
    if isinstance(target, Cell):
        return gradcheck_cell(target, *args, **kwargs)  # type: ignore[arg-type]
    raise ArgumentTypeError(
        f"gradcheck: target must be a Node or a Cell, got {type(target).__name__}"
    )
