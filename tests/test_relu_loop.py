"""A ReLU in a loop program: its bound call must write the step's own output.

ReLU's flat call once fixed its output buffer as a keyword, which the loop
program could not re-target to step t: T = 1 gave wrong numbers and T >= 2 a
broadcasting error. Compared here with the full-unroll reference.
"""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg


@pytest.mark.parametrize("T", [1, 2, 5])
def test_relu_cell_loop_equals_unrolled(T: int) -> None:
    b = mg.CellBuilder("relu_loop")
    x, y = b.input("x", 2), b.input("y", 1)
    s = b.state("s", 1)
    W, U = b.param("W", (2, 1)), b.param("U", (1, 1))
    b.loss(mg.l2_loss(mg.relu(mg.matmul(x, W)), y))
    b.update(s, mg.tanh(mg.matmul(s, U)))
    cell = b.build()
    params = {"W": np.array([[0.5], [-0.3]]), "U": np.array([[0.7]])}
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((T, 3, 2)), "y": rng.standard_normal((T, 3, 1))}
    la, ga = mg.compile(cell).loss_and_grads(params, inputs)
    lb, gb = mg.compile(cell, mode="unrolled", passes=()).loss_and_grads(params, inputs)
    assert la == pytest.approx(lb, rel=1e-12)
    for k in gb.params:
        np.testing.assert_allclose(ga.params[k], gb.params[k], rtol=1e-12, atol=1e-15)
    for k in gb.inputs:
        np.testing.assert_allclose(ga.inputs[k], gb.inputs[k], rtol=1e-12, atol=1e-15)
