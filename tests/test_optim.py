"""Tests for models.train.optim: update rules, state round trips, clipping, weight noise."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pytest

from minigrad.errors import NonFiniteError
from minigrad.types import Array
from models.train.optim import (
    SGD,
    Adam,
    Optimizer,
    RMSProp,
    add_weight_noise,
    clip_grad_norm,
    make_optimizer,
)

# Two steps on a single scalar parameter w0 = 1.0 with gradients 0.5 then -1.0.
W0 = 1.0
G1, G2 = 0.5, -1.0


def _two_steps(opt: Optimizer) -> float:
    params: dict[str, Array] = {"w": np.array([W0])}
    opt.step(params, {"w": np.array([G1])})
    opt.step(params, {"w": np.array([G2])})
    return float(params["w"][0])


def test_sgd_plain_two_steps() -> None:
    lr = 0.1
    expected = W0 - lr * G1 - lr * G2
    assert _two_steps(SGD(lr, momentum=0.0)) == pytest.approx(expected, abs=1e-15)


def test_sgd_momentum_two_steps() -> None:
    lr, mu = 0.1, 0.9
    b1 = G1
    w1 = W0 - lr * b1
    b2 = mu * b1 + G2
    w2 = w1 - lr * b2
    assert _two_steps(SGD(lr, momentum=mu)) == pytest.approx(w2, abs=1e-15)


def test_sgd_nesterov_two_steps() -> None:
    lr, mu = 0.1, 0.9
    b1 = G1
    w1 = W0 - lr * (G1 + mu * b1)
    b2 = mu * b1 + G2
    w2 = w1 - lr * (G2 + mu * b2)
    assert _two_steps(SGD(lr, momentum=mu, nesterov=True)) == pytest.approx(w2, abs=1e-15)


def test_rmsprop_two_steps() -> None:
    lr, rho, eps = 0.01, 0.9, 1e-6
    v1 = (1 - rho) * G1**2
    w1 = W0 - lr * G1 / math.sqrt(v1 + eps)
    v2 = rho * v1 + (1 - rho) * G2**2
    w2 = w1 - lr * G2 / math.sqrt(v2 + eps)
    got = _two_steps(RMSProp(lr=lr, decay=rho, eps=eps))
    assert got == pytest.approx(w2, abs=1e-14)


def test_rmsprop_graves_two_steps() -> None:
    lr, rho, eps, mu = 1e-2, 0.95, 1e-4, 0.9
    v1 = (1 - rho) * G1**2
    n1 = (1 - rho) * G1
    d1 = -lr * G1 / math.sqrt(v1 - n1**2 + eps)
    w1 = W0 + d1
    v2 = rho * v1 + (1 - rho) * G2**2
    n2 = rho * n1 + (1 - rho) * G2
    d2 = mu * d1 - lr * G2 / math.sqrt(v2 - n2**2 + eps)
    w2 = w1 + d2
    opt = RMSProp(lr=lr, decay=rho, eps=eps, momentum=mu, centered=True)
    assert _two_steps(opt) == pytest.approx(w2, abs=1e-14)
    assert set(opt.state_dict()) == {"t", "v/w", "n/w", "d/w"}


def test_adam_two_steps() -> None:
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    m1 = (1 - b1) * G1
    v1 = (1 - b2) * G1**2
    w1 = W0 - lr * (m1 / (1 - b1)) / (math.sqrt(v1 / (1 - b2)) + eps)
    m2 = b1 * m1 + (1 - b1) * G2
    v2 = b2 * v1 + (1 - b2) * G2**2
    w2 = w1 - lr * (m2 / (1 - b1**2)) / (math.sqrt(v2 / (1 - b2**2)) + eps)
    assert _two_steps(Adam(lr=lr)) == pytest.approx(w2, abs=1e-14)
    # The first bias-corrected Adam step has length lr whatever the gradient's scale.
    assert W0 - w1 == pytest.approx(lr, rel=1e-6)


def _quadratic_grad(w: Array, a: Array, c: Array) -> Array:
    # f(w) = 0.5 * sum(a * (w - c)**2)
    return a * (w - c)


@pytest.mark.parametrize(
    "opt",
    [
        Adam(lr=0.05),
        RMSProp(lr=0.01),
        RMSProp(lr=0.01, decay=0.95, eps=1e-4, momentum=0.9, centered=True),
        SGD(lr=0.05, momentum=0.9),
    ],
    ids=["adam", "rmsprop", "rmsprop-graves", "sgd-momentum"],
)
def test_minimises_quadratic(opt: Optimizer) -> None:
    a = np.array([1.0, 4.0, 0.5])
    c = np.array([3.0, -2.0, 1.0])
    params: dict[str, Array] = {"w": np.zeros(3)}
    start = float(np.linalg.norm(params["w"] - c))
    for _ in range(2000):
        opt.step(params, {"w": _quadratic_grad(params["w"], a, c)})
    assert float(np.linalg.norm(params["w"] - c)) < 1e-2 * start


def _problem(dtype: type[np.floating]) -> tuple[dict[str, Array], list[dict[str, Array]]]:
    rng = np.random.default_rng(7)
    params = {
        "W": rng.standard_normal((3, 4)).astype(dtype),
        "b": rng.standard_normal(4).astype(dtype),
    }
    grads = [
        {"W": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(4).astype(dtype)}
        for _ in range(8)
    ]
    return params, grads


OPTIMIZER_FACTORIES: dict[str, Callable[[], Optimizer]] = {
    "adam": lambda: Adam(lr=0.01),
    "rmsprop": lambda: RMSProp(lr=0.01),
    "rmsprop-graves": lambda: RMSProp(lr=0.01, momentum=0.9, centered=True),
    "sgd": lambda: SGD(lr=0.01),
    "sgd-nesterov": lambda: SGD(lr=0.01, nesterov=True),
    "sgd-plain": lambda: SGD(lr=0.01, momentum=0.0),
    "rmsprop-ema": lambda: RMSProp(lr=0.01, ema_decay=0.9),
    "adam-ema": lambda: Adam(lr=0.01, ema_decay=0.5),
    "sgd-plain-ema": lambda: SGD(lr=0.01, momentum=0.0, ema_decay=0.99),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", sorted(OPTIMIZER_FACTORIES))
def test_state_dict_round_trip_continues_bit_for_bit(kind: str, dtype: type[np.floating]) -> None:
    factory = OPTIMIZER_FACTORIES[kind]
    params_a, grads = _problem(dtype)
    params_b = {k: v.copy() for k, v in params_a.items()}

    uninterrupted = factory()
    for g in grads:
        uninterrupted.step(params_a, g)

    first = factory()
    for g in grads[:3]:
        first.step(params_b, g)
    # Through an npz file, as a checkpoint would store it.
    buf = io.BytesIO()
    np.savez(buf, **cast(dict[str, Any], first.state_dict()))
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        state = {k: npz[k] for k in npz.files}
    assert state["t"].shape == () and state["t"].dtype == np.int64 and int(state["t"]) == 3
    resumed = factory()
    resumed.load_state_dict(state)
    for g in grads[3:]:
        resumed.step(params_b, g)

    for name in params_a:
        assert params_b[name].dtype == dtype
        np.testing.assert_array_equal(params_a[name], params_b[name], strict=True)
    after_a, after_b = uninterrupted.state_dict(), resumed.state_dict()
    assert after_a.keys() == after_b.keys()
    for key in after_a:
        np.testing.assert_array_equal(after_a[key], after_b[key], strict=True)


@pytest.mark.parametrize("kind", sorted(OPTIMIZER_FACTORIES))
def test_float32_stays_float32(kind: str) -> None:
    opt = OPTIMIZER_FACTORIES[kind]()
    params, grads = _problem(np.float32)
    arrays_before = {k: v for k, v in params.items()}
    for g in grads:
        # float64 gradients must not promote float32 parameters.
        opt.step(params, {k: v.astype(np.float64) for k, v in g.items()})
    for name, p in params.items():
        assert p.dtype == np.float32
        assert p is arrays_before[name]  # updated in place
    for key, value in opt.state_dict().items():
        if key != "t":  # the parameter average is kept in float64
            assert value.dtype == (np.float64 if key.startswith("ema/") else np.float32), key
    if opt.ema_decay:
        assert all(a.dtype == np.float32 for a in opt.averaged(params).values())


def test_state_dict_before_first_step() -> None:
    opt = Adam()
    state = opt.state_dict()
    assert list(state) == ["t"] and int(state["t"]) == 0
    fresh = Adam()
    fresh.load_state_dict(state)
    params: dict[str, Array] = {"w": np.ones(2)}
    fresh.step(params, {"w": np.ones(2)})
    assert fresh.t == 1


def test_state_dict_is_a_copy() -> None:
    opt = SGD(0.1)
    params: dict[str, Array] = {"w": np.ones(2)}
    opt.step(params, {"w": np.ones(2)})
    state = opt.state_dict()
    state["b/w"][:] = 100.0
    assert np.all(opt.state_dict()["b/w"] == 1.0)


def test_step_errors_name_the_key() -> None:
    opt = Adam()
    params: dict[str, Array] = {"W": np.zeros((2, 3)), "b": np.zeros(3)}
    with pytest.raises(ValueError, match="'b'"):
        opt.step(params, {"W": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"'W'.*\(3, 2\)"):
        opt.step(params, {"W": np.zeros((3, 2)), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="'extra'"):
        opt.step(params, {"W": np.zeros((2, 3)), "b": np.zeros(3), "extra": np.zeros(1)})
    assert opt.t == 0 and opt.state_dict().keys() == {"t"}
    opt.step(params, {"W": np.ones((2, 3)), "b": np.ones(3)})
    with pytest.raises(ValueError, match="'c'"):
        opt.step(
            {**params, "c": np.zeros(1)}, {"W": params["W"], "b": params["b"], "c": np.ones(1)}
        )
    with pytest.raises(ValueError, match="'b'"):
        opt.step({"W": params["W"]}, {"W": params["W"]})


def test_step_shape_mismatch_with_loaded_state() -> None:
    opt = Adam()
    opt.load_state_dict({"t": np.array(1), "m/w": np.zeros(3), "v/w": np.zeros(3)})
    with pytest.raises(ValueError, match="m/w"):
        opt.step({"w": np.zeros(4)}, {"w": np.zeros(4)})


@pytest.mark.parametrize(
    ("state", "pattern"),
    [
        ({"m/w": np.zeros(2), "v/w": np.zeros(2)}, "'t'"),
        ({"t": np.array([1]), "m/w": np.zeros(2), "v/w": np.zeros(2)}, "'t'"),
        ({"t": np.array(1.0), "m/w": np.zeros(2), "v/w": np.zeros(2)}, "'t'"),
        ({"t": np.array(-1)}, "'t'"),
        ({"t": np.array(1), "m/w": np.zeros(2)}, "'v/w'"),
        ({"t": np.array(1), "m/w": np.zeros(2), "v/w": np.zeros(3)}, "'w'"),
        ({"t": np.array(1), "m/w": np.zeros(2), "v/w": np.zeros(2), "b/w": np.zeros(2)}, "'b/w'"),
        ({"t": np.array(1), "m/w": np.zeros(2, dtype=np.int64), "v/w": np.zeros(2)}, "'m/w'"),
        ({"t": np.array(1), "lr": np.array(0.1)}, "'lr'"),
    ],
)
def test_load_state_dict_validates(state: dict[str, Array], pattern: str) -> None:
    opt = Adam()
    with pytest.raises(ValueError, match=pattern):
        opt.load_state_dict(state)
    assert opt.t == 0


def test_load_state_of_another_optimizer_is_rejected() -> None:
    rms = RMSProp()
    params: dict[str, Array] = {"w": np.ones(2)}
    rms.step(params, {"w": np.ones(2)})
    with pytest.raises(ValueError, match="'m/w'"):
        Adam().load_state_dict(rms.state_dict())
    with pytest.raises(ValueError, match="'v/w'"):
        SGD(0.1).load_state_dict(rms.state_dict())


def test_make_optimizer() -> None:
    assert isinstance(make_optimizer("adam", 0.1), Adam)
    assert isinstance(make_optimizer("RMSProp", 0.1), RMSProp)
    sgd = make_optimizer("sgd", 0.1)
    assert isinstance(sgd, SGD) and sgd.lr == 0.1
    with pytest.raises(ValueError, match="'rmsprop', 'adam', 'sgd'"):
        make_optimizer("adagrad", 0.1)


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_learning_rate(lr: float) -> None:
    with pytest.raises(ValueError, match="lr"):
        Adam(lr=lr)


def test_invalid_hyperparameters() -> None:
    with pytest.raises(ValueError, match="decay"):
        RMSProp(decay=1.0)
    with pytest.raises(ValueError, match="beta2"):
        Adam(beta2=1.5)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(0.1, momentum=0.0, nesterov=True)


def test_clip_grad_norm_scales_above_threshold() -> None:
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]], dtype=np.float32)}
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0])
    np.testing.assert_allclose(grads["b"], [[0.8]], rtol=1e-6)
    assert grads["b"].dtype == np.float32
    total = math.sqrt(sum(float(np.sum(np.square(g.astype(np.float64)))) for g in grads.values()))
    assert total == pytest.approx(1.0, rel=1e-6)


def test_clip_grad_norm_leaves_small_gradients() -> None:
    grads = {"a": np.array([0.3, 0.4])}
    before = grads["a"].copy()
    assert clip_grad_norm(grads, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(grads["a"], before)


def test_clip_grad_norm_non_finite_and_invalid() -> None:
    grads = {"ok": np.ones(2), "a": np.array([np.inf, 1.0])}
    with pytest.raises(NonFiniteError, match="'a'"):
        clip_grad_norm(grads, 1.0)
    np.testing.assert_array_equal(grads["a"], [np.inf, 1.0])
    np.testing.assert_array_equal(grads["ok"], [1.0, 1.0])
    with pytest.raises(NonFiniteError, match="'b'"):
        clip_grad_norm({"b": np.array([np.nan])}, 1.0)
    assert clip_grad_norm({}, 1.0) == 0.0
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm({"a": np.ones(2)}, 0.0)


def test_weight_noise_deterministic_and_non_mutating() -> None:
    params: dict[str, Array] = {"W": np.ones((3, 2), dtype=np.float32), "b": np.zeros(2)}
    originals = {k: v.copy() for k, v in params.items()}
    a = add_weight_noise(params, 0.1, np.random.default_rng(3))
    b = add_weight_noise(params, 0.1, np.random.default_rng(3))
    c = add_weight_noise(params, 0.1, np.random.default_rng(4))
    for name in params:
        np.testing.assert_array_equal(params[name], originals[name], strict=True)
        np.testing.assert_array_equal(a[name], b[name], strict=True)
        assert a[name] is not params[name]
        assert a[name].dtype == params[name].dtype
        assert a[name].shape == params[name].shape
        assert not np.array_equal(a[name], c[name])
    assert list(a) == list(params)
    # Insertion order of the mapping does not change the draw.
    reordered = add_weight_noise(dict(reversed(params.items())), 0.1, np.random.default_rng(3))
    for name in params:
        np.testing.assert_array_equal(reordered[name], a[name], strict=True)


def test_weight_noise_statistics_and_zero_std() -> None:
    params: dict[str, Array] = {"W": np.zeros((200, 200))}
    noisy = add_weight_noise(params, 0.5, np.random.default_rng(0))
    assert float(np.std(noisy["W"])) == pytest.approx(0.5, rel=0.02)
    assert abs(float(np.mean(noisy["W"]))) < 0.01
    same = add_weight_noise(params, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(same["W"], params["W"])
    with pytest.raises(ValueError, match="std"):
        add_weight_noise(params, -0.1, np.random.default_rng(0))


@pytest.mark.parametrize("kind", ["rmsprop", "adam", "sgd"])
def test_step_refuses_non_finite_gradients_naming_the_parameter(kind: str) -> None:
    opt = make_optimizer(kind, 0.1)
    params: dict[str, Array] = {"W": np.ones((2, 2)), "b": np.zeros(2)}
    before = {k: v.copy() for k, v in params.items()}
    for bad in (np.nan, np.inf, -np.inf):
        grads: dict[str, Array] = {"W": np.ones((2, 2)), "b": np.array([0.0, bad])}
        with pytest.raises(NonFiniteError, match="'b'"):
            opt.step(params, grads)
        for k in params:
            np.testing.assert_array_equal(params[k], before[k])
        assert opt.t == 0
    # a caller that has checked the gradients already may skip the pass
    opt.step(params, {"W": np.ones((2, 2)), "b": np.ones(2)}, check_finite=False)
    assert opt.t == 1


@pytest.mark.parametrize("kind", ["rmsprop", "adam", "sgd"])
@pytest.mark.parametrize("state", [None, 3, "t", [("t", 0)]])
def test_load_state_dict_refuses_what_is_not_a_dict(kind: str, state: object) -> None:
    opt = make_optimizer(kind, 0.1)
    with pytest.raises(TypeError, match=r"expects a dict of arrays .*state_dict\(\)"):
        opt.load_state_dict(state)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- parameter average


def test_the_parameter_average_is_the_bias_corrected_moving_average() -> None:
    d = 0.75
    opt = SGD(0.1, momentum=0.0, ema_decay=d)
    params: dict[str, Array] = {"w": np.array([W0])}
    opt.step(params, {"w": np.array([G1])})
    w1 = W0 - 0.1 * G1
    assert opt.averaged()["w"][0] == pytest.approx(w1, abs=1e-15)  # one step: w1 itself
    opt.step(params, {"w": np.array([G2])})
    w2 = w1 - 0.1 * G2
    expected = (d * (1 - d) * w1 + (1 - d) * w2) / (1 - d**2)
    assert opt.averaged()["w"][0] == pytest.approx(expected, abs=1e-15)
    assert params["w"][0] == pytest.approx(w2, abs=1e-15)  # the parameters go on unchanged
    assert set(opt.state_dict()) == {"t", "ema/w"}


def test_the_average_of_parameters_that_stay_put_is_those_parameters() -> None:
    opt = SGD(1e-300, momentum=0.0, ema_decay=0.9999)  # steps far below the parameters' digits
    params: dict[str, Array] = {"W": np.full((2, 3), 0.3), "b": np.full(3, -7.0, np.float32)}
    for _ in range(5):
        opt.step(params, {"W": np.ones((2, 3)), "b": np.ones(3, np.float32)})
    avg = opt.averaged(params)
    np.testing.assert_allclose(avg["W"], params["W"], rtol=1e-12)
    assert avg["b"].dtype == np.float32
    np.testing.assert_allclose(avg["b"], params["b"], rtol=1e-6)
    avg["W"][0, 0] = 99.0  # a copy: the optimiser's own average is untouched
    assert opt.averaged()["W"][0, 0] == pytest.approx(0.3)


def test_an_average_is_refused_where_there_is_none() -> None:
    with pytest.raises(ValueError, match="keeps no parameter average"):
        Adam().averaged()
    with pytest.raises(ValueError, match="no parameter average before the first step"):
        Adam(ema_decay=0.5).averaged()
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match=r"ema_decay must lie in \[0, 1\)"):
            RMSProp(ema_decay=bad)
    for wrong in ("0.5", True, np.array([0.5])):
        with pytest.raises(TypeError, match="ema_decay: expected a number"):
            make_optimizer("rmsprop", 0.1, ema_decay=wrong)  # type: ignore[arg-type]


def test_a_state_without_its_average_is_refused() -> None:
    opt = RMSProp(ema_decay=0.9)
    params: dict[str, Array] = {"w": np.ones(2)}
    opt.step(params, {"w": np.ones(2)})
    state = opt.state_dict()
    del state["ema/w"]
    with pytest.raises(ValueError, match="missing key 'ema/w'"):
        RMSProp(ema_decay=0.9).load_state_dict(state)
    with pytest.raises(ValueError, match="unexpected key 'ema/w'"):
        RMSProp().load_state_dict(opt.state_dict())


def test_a_float32_average_of_parameters_that_stay_put_does_not_drift() -> None:
    opt = SGD(1e-3, momentum=0.0, ema_decay=0.999)
    params: dict[str, Array] = {"w": np.ones(3, np.float32)}
    for _ in range(20_000):
        opt.step(params, {"w": np.zeros(3, np.float32)})
    np.testing.assert_array_equal(opt.averaged(params)["w"], np.ones(3, np.float32))


def test_a_state_of_steps_without_its_slots_or_beyond_the_counter_is_refused() -> None:
    opt = SGD(0.1, momentum=0.0, ema_decay=0.9)
    params: dict[str, Array] = {"w": np.ones(2)}
    opt.step(params, {"w": np.ones(2)})
    with pytest.raises(ValueError, match=r"has taken 1 step\(s\) but holds none of its slots"):
        SGD(0.1, momentum=0.0, ema_decay=0.9).load_state_dict({"t": np.array(1)})
    SGD(0.1, momentum=0.0).load_state_dict({"t": np.array(1)})  # plain SGD keeps no slot
    for t in (2**63 - 1, np.uint64(2**64 - 1)):
        with pytest.raises(ValueError, match=r"key 't' must be in 0\.\.4611686018427387904"):
            SGD(0.1, momentum=0.0).load_state_dict({"t": np.array(t)})
    state = opt.state_dict()
    state["ema/w"] = np.ones(3)
    resumed = SGD(0.1, momentum=0.0, ema_decay=0.9)
    resumed.load_state_dict(state)
    with pytest.raises(ValueError, match=r"optimizer state ema/w has shape \(3,\)"):
        resumed.check_params(params)
