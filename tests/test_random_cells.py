"""Randomly composed cells: the graph passes agree with the plain plan, and BPTT with
finite differences.

Each seed builds a different recurrent cell from the built-in nodes (gates,
products, GEMMs that share operands, concatenations and slices, two states),
so the passes meet graph shapes that no hand-written cell has: shared Add
gradients next to views, chains of elementwise Jacobians, in-place buffers.
"""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad import CellBuilder, init
from minigrad.types import Array

D, H = 3, 4


def random_cell(seed: int) -> mg.Cell:
    rng = np.random.default_rng(seed)
    b = CellBuilder(f"random{seed}")
    x = b.input("x", D)
    y = b.input("y", H)
    states = [b.state("h", H), b.state("s", H)] if rng.random() < 0.5 else [b.state("h", H)]
    counter = iter(range(1000))

    def param(shape: tuple[int, ...]) -> mg.Ref:
        return b.param(f"p{next(counter)}", shape, init=init.uniform(0.6))

    # values of shape (B, H): projections of the input and of the states
    values: list[mg.Ref] = [x @ param((D, H)) for _ in range(2)]
    shared_w = param((D, H))
    values += [x @ shared_w]
    for st in states:
        values += [st, st @ param((H, H))]
    for _ in range(int(rng.integers(6, 12))):
        pick = [values[int(i)] for i in rng.integers(0, len(values), size=3)]
        kind = int(rng.integers(0, 11))
        if kind == 0:
            v = pick[0] + pick[1]
        elif kind == 1:
            v = pick[0] - pick[1]
        elif kind == 2:
            v = pick[0] * mg.sigmoid(pick[1])
        elif kind == 3:
            v = mg.tanh(pick[0])
        elif kind == 4:
            v = mg.sigmoid(pick[0] + param((H,)))
        elif kind == 5:
            v = mg.gru_update(mg.sigmoid(pick[0]), pick[1], mg.tanh(pick[2]))
        elif kind == 6:
            v = mg.affine(mg.tanh(pick[0]), param((H, H)), param((H,)))
        elif kind == 7:
            both = mg.concat(pick[0], pick[1])
            v = mg.slice_(both, 2, 2 + H)
        elif kind == 8:
            v = mg.one_minus(mg.sigmoid(pick[0])) * pick[1]
        elif kind == 9:
            v = mg.scale(pick[0], 0.5) + pick[0] @ param((H, H))
        else:
            v = pick[0] @ param((H, H)) + pick[0] @ param((H, H))
        values.append(v)
    # every state is updated by a squashed mix that depends on it
    for i, st in enumerate(states):
        other = values[int(rng.integers(len(values) // 2, len(values)))]
        b.update(st, mg.tanh(other + st @ param((H, H)), name=f"next{i}"))
    b.output("out", mg.tanh(values[-1], name="out"))
    b.loss(mg.l2_loss(f"next{len(states) - 1}", y, name="l2"))
    return b.build()


def _data(T: int, B: int, seed: int) -> tuple[dict[str, Array], Array]:
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal((T, B, D)), "y": rng.standard_normal((T, B, H))}
    mask = np.ones((T, B))
    mask[T - 2 :, 0] = 0
    return inputs, mask


def _all(
    plan: mg.Plan, params: dict[str, Array], inputs: dict[str, Array], mask: Array | None
) -> tuple[float, dict[str, Array], dict[str, Array]]:
    run = plan.forward(params, inputs, mask=mask)
    rng = np.random.default_rng(3)
    outer = {o: rng.standard_normal(a.shape) for o, a in run.outputs.items()}
    return run.loss, run.outputs, plan.backward(run, grad_outputs=outer).flat()


@pytest.mark.parametrize("seed", range(60))
def test_random_cell_passes_match_plain_plan(seed: int) -> None:
    cell = random_cell(seed)
    params = cell.init_params(seed)
    T, B = 5, 3
    inputs, mask = _data(T, B, seed)
    for m in (None, mask):
        plain = _all(mg.plan_of(cell, T, passes=()), params, inputs, m)
        fast = _all(mg.plan_of(cell, T), params, inputs, m)
        assert fast[0] == pytest.approx(plain[0], rel=1e-12, abs=1e-12)
        for k in plain[1]:
            np.testing.assert_allclose(fast[1][k], plain[1][k], rtol=1e-12, atol=1e-12)
        for k in plain[2]:
            np.testing.assert_allclose(
                fast[2][k],
                plain[2][k],
                rtol=1e-11,
                atol=1e-12,
                err_msg=f"seed {seed}: gradient {k}",
            )
        # the loss-only backward (a second binding) agrees too
        _, g = mg.plan_of(cell, T).loss_and_grads(params, inputs, mask=m)
        _, gp = mg.plan_of(cell, T, passes=()).loss_and_grads(params, inputs, mask=m)
        for k, v in gp.flat().items():
            np.testing.assert_allclose(g.flat()[k], v, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("seed", range(0, 24, 4))
def test_random_cell_matches_finite_differences(seed: int) -> None:
    cell = random_cell(seed)
    inputs, mask = _data(4, 2, seed)
    result = mg.gradcheck(cell, cell.init_params(seed), inputs, mask=mask)
    assert result.max_rel_error < 1e-7
