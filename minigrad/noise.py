"""Noise inputs: dropout and zoneout masks, drawn outside the compiled plan.

A cell that uses dropout or zoneout declares the randomness as inputs of kind
"noise" (``CellBuilder.noise``) and multiplies them in with ordinary nodes
(``Dropout``, ``Zoneout``). The plan treats them like data, so the executor
knows nothing of training or evaluation; ``draw`` gives, for one batch, either
fresh training masks from a ``numpy.random.Generator`` or the deterministic
evaluation values:

=========  ====================================  =====================
kind       training                              evaluation
=========  ====================================  =====================
dropout    0 with probability p, else 1/(1-p)    1 (the identity)
zoneout    1 (keep h_prev) with probability p    p (the expectation)
=========  ====================================  =====================

With ``per="sequence"`` one mask per sequence is shared by all its steps
(variational dropout, Gal and Ghahramani 2016); with ``per="step"`` each step
draws its own (zoneout, Krueger et al. 2017).

Three builder rewrites add the noise to any cell made of nodes, whatever its
gates: ``dropout_value`` (a dropout on one value, e.g. a layer's input or
output), ``recurrent_dropout`` (a mask on a state wherever it enters the next
step's computation other than by being carried) and ``zoneout_states``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from minigrad.cell import Cell, CellBuilder, InputSpec, NoisePer, Ref, dropout, zoneout
from minigrad.errors import ArgumentError, GraphError
from minigrad.nodes import Node
from minigrad.types import Array

__all__ = ["draw", "dropout_value", "noise_inputs", "recurrent_dropout", "zoneout_states"]


def noise_inputs(cell: Cell) -> dict[str, InputSpec]:
    """The noise inputs of ``cell``, in declaration order (the order ``draw`` uses)."""
    return {n: spec for n, spec in cell.inputs.items() if spec.noise is not None}


def draw(
    cell: Cell, steps: int, batch: int, rng: np.random.Generator | None, training: bool
) -> dict[str, Array]:
    """The values of every noise input of ``cell`` for one batch.

    Args:
        cell: a cell with noise inputs (none is fine: the result is empty).
        steps: T, the number of time steps.
        batch: B, the number of sequences.
        rng: the generator training masks are drawn from (in declaration
            order of the noise inputs); not used when ``training`` is False or
            every rate is 0, and may then be None.
        training: True for random masks, False for the evaluation values.

    Returns:
        ``{name: array of shape (T, B, *features)}`` in the input's dtype. A
        mask drawn once per sequence (and every evaluation value) is a
        read-only broadcast view, so it costs the memory of one step.
    """
    if steps < 1 or batch < 1:
        raise ArgumentError(f"cell '{cell.name}': draw needs steps >= 1 and batch >= 1")
    out: dict[str, Array] = {}
    for name, spec in noise_inputs(cell).items():
        nz = spec.noise
        assert nz is not None
        feat = tuple(int(d) for d in spec.shape[1:])
        full = (steps, batch, *feat)
        dt = spec.dtype
        if not training or nz.rate == 0.0:
            value = 1.0 if nz.kind == "dropout" else nz.rate
            out[name] = np.broadcast_to(np.asarray(value, dtype=dt), full)
            continue
        if rng is None:
            raise ArgumentError(f"cell '{cell.name}': noise input '{name}': training needs an rng")
        shape = (batch, *feat) if nz.per == "sequence" else full
        u = rng.random(shape)
        if nz.kind == "dropout":
            m = np.where(u >= nz.rate, dt.type(1.0 / (1.0 - nz.rate)), dt.type(0.0)).astype(dt)
        else:
            m = (u < nz.rate).astype(dt)
        out[name] = np.broadcast_to(m, full) if nz.per == "sequence" else m
    return out


def dropout_value(
    b: CellBuilder, x: Ref, features: int, rate: float, *, name: str, per: NoisePer = "sequence"
) -> Ref:
    """``x`` (B, features) times a dropout mask named ``name + ".mask"``; ``x`` itself when
    ``rate`` is 0 (no input is declared, so the cell is unchanged).

    Returns the dropped value, a node named ``name``.
    """
    if rate == 0:
        return x
    m = b.noise(f"{name}.mask", features, rate, kind="dropout", per=per)
    return dropout(x, m, name=name)


def _weight_product(op: Node) -> bool:
    """Nodes that mix units through a matrix (``MatMul``, ``Affine``): their input
    gradient is ``g @ M`` (``Node.right_jacobian``)."""
    return type(op).right_jacobian is not Node.right_jacobian


def _carries(b: CellBuilder, start: str, target: str) -> bool:
    """Whether ``target`` is reachable from the node ``start`` through nodes that are
    not weight products (``start`` included): the value is carried, not mixed."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if _weight_product(b.op_of(n)[0]):
            continue
        if n == target:
            return True
        todo.extend(r for r, _slot in b.readers(n))
    return False


def recurrent_dropout(
    b: CellBuilder, states: Iterable[str], rate: float, *, per: NoisePer = "sequence"
) -> list[str]:
    """Drop each of ``states`` where it enters the next step's computation, not where it
    is carried: every reader of the state from which the state's own update cannot
    be reached without a weight product reads ``state * mask`` instead
    (one mask per state, ``"<state>.rdrop.mask"``).

    For a GRU that is ``h`` in ``h Uz``, ``h Ur`` and ``r * h`` (not in the
    interpolation ``(1 - z) h + z c``); for an LSTM ``h`` in the recurrent
    products and never ``c``; for a tanh-RNN ``h`` in ``h U``. Call it after the
    states' updates are given.

    Returns:
        The states that got a mask (none when ``rate`` is 0).
    """
    if rate == 0:
        return []
    masked: list[str] = []
    for s in states:
        upd = b.update_of(s)
        if upd is None:
            raise GraphError(f"cell '{b.name}': state '{s}' has no update yet")
        targets = [(n, i) for n, i in b.readers(s) if not _carries(b, n, upd)]
        if not targets:
            continue
        d = dropout_value(b, b.ref(s), b.feature_shape(s)[-1], rate, name=f"{s}.rdrop", per=per)
        for n, i in targets:
            b.rewire(n, i, d)
        masked.append(s)
    return masked


def zoneout_states(
    b: CellBuilder, states: Iterable[str], rate: float, *, per: NoisePer = "step"
) -> dict[str, Ref]:
    """Zoneout on each of ``states``: the update becomes
    ``keep * h_prev + (1 - keep) * h_new`` (node ``"<state>.zoneout"``, keep mask
    ``"<state>.zoneout.mask"``). Call it after the states' updates are given.

    Returns:
        ``{old update node: new update}`` for the states changed (empty when
        ``rate`` is 0), so that a caller can read the zoned value in place of
        the old one.
    """
    if rate == 0:
        return {}
    out: dict[str, Ref] = {}
    for s in states:
        upd = b.update_of(s)
        if upd is None:
            raise GraphError(f"cell '{b.name}': state '{s}' has no update yet")
        feat = b.feature_shape(s)
        keep = b.noise(f"{s}.zoneout.mask", feat, rate, kind="zoneout", per=per)
        z = zoneout(keep, upd, s, name=f"{s}.zoneout")
        b.replace_update(s, z)
        out[upd] = z
    return out
