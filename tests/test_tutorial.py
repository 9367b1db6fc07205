"""The tutorial's problem: a two-step GRU (Chung et al.) with an L2 cost at every step.

minigrad's gradients of the six weights and three biases must match finite
differences for T = 2 and for T = 1 ("at step 1"), and, at step 1, the
closed-form gradients of the hand derivation.
"""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from models.examples import tutorial_two_steps as tut
from models.nets.gru import GRU

FD_TOL = 1e-8


@pytest.mark.parametrize("steps", [1, 2])
def test_tutorial_gradients_match_finite_differences(steps: int) -> None:
    res = tut.run(steps)
    assert res.steps == steps
    assert set(res.analytic) == set(res.numeric) == {*tut.WEIGHTS, *tut.BIASES}
    assert len(tut.WEIGHTS) == 6 and len(tut.BIASES) == 3
    for name in (*tut.WEIGHTS, *tut.BIASES):
        assert np.any(res.analytic[name] != 0), name
        assert res.rel_error[name] < FD_TOL, (name, res.rel_error[name])


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tutorial_gradients_check_grads(steps: int, seed: int) -> None:
    """The same gradients against minigrad's own checker, for several draws."""
    model, x, y, h0 = tut.problem(steps, seed=seed, batch=2)
    loss, grads = model.loss_and_grads(x, y, h0)
    names = (*tut.WEIGHTS, *tut.BIASES)

    def f(args: dict[str, np.ndarray]) -> float:
        saved = model.params
        model.params = {**saved, **{k: args[k] for k in names}}
        try:
            h = model.forward(x, h0)
        finally:
            model.params = saved
        return float(0.5 * np.sum((h - y) ** 2))

    result = mg.check_grads(
        f, {k: model.params[k] for k in names}, {k: grads[k] for k in names}, what="tutorial"
    )
    assert result.checks > 0
    assert f(model.params) == pytest.approx(loss, rel=1e-13)


def test_step_one_closed_form() -> None:
    """At step 1 the derivation's gradients have a closed form in h0, x1 and y1."""
    model, x, y, h0 = tut.problem(1, batch=2)
    p = model.params
    _, grads = model.loss_and_grads(x, y, h0)

    def sig(a: np.ndarray) -> np.ndarray:
        out: np.ndarray = 1 / (1 + np.exp(-a))
        return out

    x1, y1 = x[0], y[0]
    z = sig(x1 @ p["Wz"] + h0 @ p["Wrecz"] + p["bz"])
    r = sig(x1 @ p["Wr"] + h0 @ p["Wrecr"] + p["br"])
    c = np.tanh(x1 @ p["Wca"] + (r * h0) @ p["Wreca"] + p["bca"])
    h1 = (1 - z) * h0 + z * c
    delta = h1 - y1  # dC1/dh1
    d_az = delta * (c - h0) * z * (1 - z)
    d_ac = delta * z * (1 - c**2)
    d_ar = (d_ac @ p["Wreca"].T) * h0 * r * (1 - r)
    expected = {
        "Wz": x1.T @ d_az,
        "Wr": x1.T @ d_ar,
        "Wca": x1.T @ d_ac,
        "Wrecz": h0.T @ d_az,
        "Wrecr": h0.T @ d_ar,
        "Wreca": (r * h0).T @ d_ac,
        "bz": d_az.sum(0),
        "br": d_ar.sum(0),
        "bca": d_ac.sum(0),
    }
    for k, v in expected.items():
        np.testing.assert_allclose(grads[k], v, rtol=1e-12, atol=1e-15, err_msg=k)


def test_tutorial_model_is_chung_gru() -> None:
    model, x, y, h0 = tut.problem(2)
    assert isinstance(model, GRU) and model.variant == "chung"
    assert x.shape == (2, 1, 3) and y.shape == (2, 1, 4) and h0.shape == (1, 4)


def test_tutorial_script_prints_every_gradient(capsys: pytest.CaptureFixture[str]) -> None:
    assert tut.main([]) == 0
    out = capsys.readouterr().out
    for name in (*tut.WEIGHTS, *tut.BIASES):
        assert f"dC/d{name} " in out
    assert "== T = 2" in out and "== T = 1" in out
    assert "finite difference:" in out
    assert "finite-difference check: passed" in out
