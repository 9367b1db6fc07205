"""An independent reverse-mode evaluator of a cell, for the differential tests.

It shares nothing with minigrad's engine but the cell's description (node
types, their constants, inputs, states, losses, outputs): the forward pass runs
node by node and step by step in the unrolled order, keeping every value, and
the backward pass walks the steps in reverse with its own vector-Jacobian
products, written from the formulas below and not from ``minigrad.nodes``. It
is slow and plain on purpose.

Semantics (as documented for plans):

* with a mask (T, B), a state keeps its value on a padded step,
  ``s[t+1] = m[t] * update[t] + (1 - m[t]) * s[t]``; loss terms count
  ``m[t] * loss[t]``; outputs are ``m[t] * value[t]``, and output gradients
  are multiplied by ``m[t]``;
* with ``truncate=k``, the state at step t is detached for t = k, 2k, ... < T
  (counted from step 0 of the padded axis): no gradient flows from it to step t - 1.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

import minigrad as mg
from minigrad.types import Array

Fwd = Callable[[object, list[Array]], Array]
Vjp = Callable[[object, list[Array], Array, Array], list[Array]]


def _sig(z: Array) -> Array:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``g`` down to ``shape`` (the inverse of numpy broadcasting)."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and g.shape[i] != 1:
            g = g.sum(axis=i, keepdims=True)
    return g


def _matmul_f(op: object, x: list[Array]) -> Array:
    w = x[1].T if getattr(op, "transpose_b", False) else x[1]
    return x[0] @ w


def _matmul_b(op: object, x: list[Array], y: Array, g: Array) -> list[Array]:
    a, w = x
    if getattr(op, "transpose_b", False):
        return [g @ w, (g.reshape(-1, g.shape[-1]).T @ a.reshape(-1, a.shape[-1]))]
    return [g @ w.T, a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, g.shape[-1])]


def _affine_b(op: object, x: list[Array], y: Array, g: Array) -> list[Array]:
    a, w, b = x
    return [g @ w.T, a.reshape(-1, a.shape[-1]).T @ g.reshape(-1, g.shape[-1]),
            _unbroadcast(g, b.shape)]


def _slice_b(op: object, x: list[Array], y: Array, g: Array) -> list[Array]:
    out = np.zeros_like(x[0])
    out[..., op.start : op.stop] = g  # type: ignore[attr-defined]
    return [out]


def _concat_b(op: object, x: list[Array], y: Array, g: Array) -> list[Array]:
    out, start = [], 0
    for a in x:
        out.append(g[..., start : start + a.shape[-1]])
        start += a.shape[-1]
    return out


def _log_softmax(z: Array) -> Array:
    s = z - z.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


#: node class name -> (forward, vjp); every vjp returns one gradient per input
RULES: dict[str, tuple[Fwd, Vjp]] = {
    "MatMul": (_matmul_f, _matmul_b),
    "Affine": (lambda op, x: x[0] @ x[1] + x[2], _affine_b),
    "Add": (lambda op, x: x[0] + x[1],
            lambda op, x, y, g: [_unbroadcast(g, x[0].shape), _unbroadcast(g, x[1].shape)]),
    "Sub": (lambda op, x: x[0] - x[1],
            lambda op, x, y, g: [_unbroadcast(g, x[0].shape), _unbroadcast(-g, x[1].shape)]),
    "Mul": (lambda op, x: x[0] * x[1],
            lambda op, x, y, g: [_unbroadcast(g * x[1], x[0].shape),
                                 _unbroadcast(g * x[0], x[1].shape)]),
    "OneMinus": (lambda op, x: 1.0 - x[0], lambda op, x, y, g: [-g]),
    "Scale": (lambda op, x: op.c * x[0], lambda op, x, y, g: [op.c * g]),  # type: ignore[attr-defined]
    "Identity": (lambda op, x: x[0], lambda op, x, y, g: [g]),
    "Sigmoid": (lambda op, x: _sig(x[0]), lambda op, x, y, g: [g * y * (1.0 - y)]),
    "NegSigmoid": (lambda op, x: _sig(-x[0]), lambda op, x, y, g: [-g * y * (1.0 - y)]),
    "Tanh": (lambda op, x: np.tanh(x[0]), lambda op, x, y, g: [g * (1.0 - y * y)]),
    "ReLU": (lambda op, x: np.maximum(x[0], 0.0), lambda op, x, y, g: [g * (x[0] > 0)]),
    "GRUUpdate": (
        lambda op, x: (1.0 - x[0]) * x[1] + x[0] * x[2],
        lambda op, x, y, g: [g * (x[2] - x[1]), g * (1.0 - x[0]), g * x[0]],
    ),
    "Slice": (lambda op, x: x[0][..., op.start : op.stop], _slice_b),  # type: ignore[attr-defined]
    "Concat": (lambda op, x: np.concatenate(x, axis=-1), _concat_b),
    "L2Loss": (
        lambda op, x: 0.5 * ((x[0] - x[1]) ** 2).sum(axis=-1),
        lambda op, x, y, g: [g[..., None] * (x[0] - x[1]), -g[..., None] * (x[0] - x[1])],
    ),
    "SigmoidBCE": (
        lambda op, x: (np.logaddexp(0.0, x[0]) - x[1] * x[0]).sum(axis=-1),
        lambda op, x, y, g: [g[..., None] * (_sig(x[0]) - x[1]), -g[..., None] * x[0]],
    ),
    "SoftmaxCrossEntropy": (
        lambda op, x: -(x[1] * _log_softmax(x[0])).sum(axis=-1),
        lambda op, x, y, g: [
            g[..., None] * (x[1].sum(axis=-1, keepdims=True) * np.exp(_log_softmax(x[0])) - x[1]),
            -g[..., None] * _log_softmax(x[0]),
        ],
    ),
}


def evaluate(
    cell: mg.Cell,
    params: Mapping[str, Array],
    inputs: Mapping[str, Array],
    states: Mapping[str, Array],
    mask: Array | None = None,
    truncate: int | None = None,
    grad_outputs: Mapping[str, Array] | None = None,
) -> tuple[float, dict[str, Array], dict[str, Array], dict[str, Array]]:
    """Loss, outputs, final states and every gradient (keys ``p:``, ``i:``, ``s:``), in float64."""
    f64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    xs = {k: np.asarray(v, dtype=np.float64) for k, v in inputs.items()}
    T, B = next(iter(xs.values())).shape[:2]
    m = np.ones((T, B)) if mask is None else np.asarray(mask, dtype=np.float64)

    def col(t: int, a: Array) -> Array:
        return m[t].reshape((B,) + (1,) * (a.ndim - 1))

    # parameter-only nodes, once
    shared: dict[str, Array] = dict(f64)
    static = [n for n in cell.order if cell.shared(n)]
    for n in static:
        spec = cell.ops[n]
        shared[n] = RULES[type(spec.op).__name__][0](spec.op, [shared[r] for r in spec.inputs])
    dynamic = [n for n in cell.order if not cell.shared(n)]

    # forward, step by step, keeping everything
    tape: list[dict[str, Array]] = []
    st = {k: np.asarray(v, dtype=np.float64) for k, v in states.items()}
    loss = 0.0
    outputs: dict[str, Array] = {}
    for t in range(T):
        env: dict[str, Array] = dict(shared)
        env.update({k: v[t] for k, v in xs.items()})
        env.update(st)
        for n in dynamic:
            spec = cell.ops[n]
            env[n] = RULES[type(spec.op).__name__][0](spec.op, [env[r] for r in spec.inputs])
        tape.append(env)
        for lname in cell.losses:
            loss += float(np.sum(m[t] * env[lname]))
        for o, n in cell.outputs.items():
            outputs.setdefault(o, np.zeros((T, *env[n].shape)))[t] = col(t, env[n]) * env[n]
        st = {
            s: col(t, env[s]) * env[spec.update] + (1.0 - col(t, env[s])) * env[s]
            for s, spec in cell.states.items()
        }

    # backward, in reverse step order
    grads: dict[str, Array] = {p: np.zeros_like(v) for p, v in f64.items()}
    gshared: dict[str, Array] = {n: np.zeros_like(shared[n]) for n in static}
    gin = {k: np.zeros_like(v) for k, v in xs.items()}
    gstate = {s: np.zeros_like(v) for s, v in st.items()}  # adjoint of the state at step t + 1
    for t in reversed(range(T)):
        env = tape[t]
        adj: dict[str, Array] = {}

        def add(name: str, g: Array, adj: dict[str, Array] = adj) -> None:
            if name in gshared:
                gshared[name] += g
            elif name in grads:
                grads[name] += g
            else:
                adj[name] = adj[name] + g if name in adj else g

        cut = truncate is not None and (t + 1) % truncate == 0 and t + 1 < T
        for s, spec in cell.states.items():
            if not cut:
                c = col(t, env[s])
                add(spec.update, c * gstate[s])
                add(s, (1.0 - c) * gstate[s])
        for lname in cell.losses:
            add(lname, m[t].copy())
        for o, n in cell.outputs.items():
            if grad_outputs is not None and o in grad_outputs:
                go = np.asarray(grad_outputs[o][t], dtype=np.float64)
                add(n, col(t, go) * go)
        for n in reversed(dynamic):
            if n not in adj:
                continue
            spec = cell.ops[n]
            ins = [env[r] for r in spec.inputs]
            for r, g in zip(spec.inputs, RULES[type(spec.op).__name__][1](spec.op, ins, env[n], adj[n]),
                            strict=True):
                add(r, g)
        for k in gin:
            if k in adj:
                gin[k][t] += adj[k]
        gstate = {s: adj.get(s, np.zeros_like(v)) for s, v in gstate.items()}
    for n in reversed(static):
        spec = cell.ops[n]
        ins = [shared[r] for r in spec.inputs]
        for r, g in zip(spec.inputs, RULES[type(spec.op).__name__][1](spec.op, ins, shared[n], gshared[n]),
                        strict=True):
            if r in gshared:
                gshared[r] += g
            else:
                grads[r] += g
    out = {"p:" + k: v for k, v in grads.items()}
    out.update({"i:" + k: v for k, v in gin.items()})
    out.update({"s:" + k: v for k, v in gstate.items()})
    return loss, outputs, st, out
