"""Checks of the hand-written reference cells: finite differences, PyTorch, dtypes."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest


def _load_reference_cells() -> ModuleType:
    """Import ``tests/reference_cells.py`` by path (works whether or not tests is a package)."""
    name = "reference_cells"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ref = _load_reference_cells()

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PYTORCH_GRU = DATA_DIR / "pytorch_gru_reset_after.npz"

T, B, D, H = 3, 2, 3, 4
FD_RTOL = 1e-7
FD_EPS = 1e-3
# Finite differences are taken of the same cell evaluated in extended precision where the
# platform has it (80-bit long double on x86), which leaves the 4th-order stencil's rounding
# noise (about eps_dtype * |loss| / FD_EPS) far below the float64 gradients' own accuracy.
FD_DTYPE = np.longdouble


def _relative_error(analytic: np.ndarray, numeric: np.ndarray, noise: float) -> np.ndarray:
    """Per-element |a - n| / max(|a|, |n|).

    Elements smaller than ``noise / FD_RTOL`` (``noise``: the rounding noise of the finite
    difference) are measured against that floor instead, because no finite difference
    resolves them to FD_RTOL.  In extended precision the floor is about 1e-8 * |loss|.
    """
    analytic = analytic.astype(np.float64)
    numeric = numeric.astype(np.float64)
    floor = noise / FD_RTOL
    scale = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    err: np.ndarray = np.abs(analytic - numeric) / scale
    return err


# name -> (cell, init, has_cell_state)
CELLS: dict[str, tuple[Callable[..., Any], Callable[..., Any], bool]] = {
    "gru_chung": (ref.gru_chung, ref.init_gru_chung, False),
    "gru_reset_after": (ref.gru_reset_after, ref.init_gru_reset_after, False),
    "lstm_peephole": (ref.lstm_peephole, ref.init_lstm_peephole, True),
    "tanh_rnn": (ref.tanh_rnn, ref.init_tanh_rnn, False),
    "mgu": (ref.mgu, ref.init_mgu, False),
}


def _make_inputs(
    name: str, rng: np.random.Generator, dtype: type[np.floating]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    _, init, has_c = CELLS[name]
    params = init(D, H, rng, dtype)
    inputs = {
        "x": rng.standard_normal((T, B, D)).astype(dtype),
        "y": rng.standard_normal((T, B, H)).astype(dtype),
        "h0": rng.uniform(-0.8, 0.8, (B, H)).astype(dtype),
    }
    if has_c:
        inputs["c0"] = rng.uniform(-0.8, 0.8, (B, H)).astype(dtype)
    return params, inputs


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradients_match_central_differences(name: str) -> None:
    cell = CELLS[name][0]
    rng = np.random.default_rng(20140101 + len(name))
    params, inputs = _make_inputs(name, rng, np.float64)
    _, _, grads = cell(params, **inputs)

    params_fd = {k: v.astype(FD_DTYPE) for k, v in params.items()}
    inputs_fd = {k: v.astype(FD_DTYPE) for k, v in inputs.items()}

    def loss() -> np.floating:
        value: np.floating = cell(params_fd, **inputs_fd)[1]
        return value

    loss_value = float(loss())
    noise = 10 * float(np.finfo(FD_DTYPE).eps) * abs(loss_value) / FD_EPS
    targets = {**params_fd, **{k: v for k, v in inputs_fd.items() if k != "y"}}
    assert set(grads) == set(targets)
    for key, array in targets.items():
        assert grads[key].shape == array.shape, key
        assert grads[key].dtype == np.float64, key
        numeric = ref.central_difference_gradient(loss, array, FD_EPS)
        err = _relative_error(grads[key], numeric, noise)
        assert err.max() < FD_RTOL, f"{name}: d/d{key} max relative error {err.max():.3e}"


@pytest.mark.parametrize("name", sorted(CELLS))
def test_forward_shapes_and_default_zero_state(name: str) -> None:
    cell, _, has_c = CELLS[name]
    rng = np.random.default_rng(7)
    params, inputs = _make_inputs(name, rng, np.float64)
    zeros = {k: np.zeros_like(v) for k, v in inputs.items() if k in ("h0", "c0")}
    hidden, loss, grads = cell(params, inputs["x"], inputs["y"])
    hidden_z, loss_z, _ = cell(params, inputs["x"], inputs["y"], **zeros)
    assert hidden.shape == (T, B, H)
    np.testing.assert_array_equal(hidden, hidden_z)
    assert loss == loss_z
    assert loss == pytest.approx(0.5 * np.sum((hidden - inputs["y"]) ** 2), rel=1e-14)
    assert grads["h0"].shape == (B, H)
    assert ("c0" in grads) == has_c


@pytest.mark.parametrize("name", sorted(CELLS))
def test_float32_in_float32_out(name: str) -> None:
    cell = CELLS[name][0]
    rng = np.random.default_rng(3)
    params, inputs = _make_inputs(name, rng, np.float32)
    hidden, loss, grads = cell(params, **inputs)
    assert hidden.dtype == np.float32
    assert np.asarray(loss).dtype == np.float32
    for key, grad in grads.items():
        assert grad.dtype == np.float32, key
    # and agrees with the float64 computation to float32 accuracy
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    inputs64 = {k: v.astype(np.float64) for k, v in inputs.items()}
    hidden64, loss64, grads64 = cell(params64, **inputs64)
    np.testing.assert_allclose(hidden, hidden64, rtol=1e-5, atol=1e-6)
    assert float(loss) == pytest.approx(float(loss64), rel=1e-5)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, grads64[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_gru_reset_after_reproduces_pytorch() -> None:
    if not PYTORCH_GRU.is_file():
        pytest.skip(f"PyTorch GRU test vector not found at {PYTORCH_GRU}")
    with np.load(PYTORCH_GRU, allow_pickle=False) as data:
        ref_data = {key: data[key] for key in data.files}
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    params = {name: ref_data[name] for name in names}
    hidden, loss, grads = ref.gru_reset_after(
        params, ref_data["x"], ref_data["y"], h0=ref_data["h0"]
    )
    np.testing.assert_allclose(hidden, ref_data["hidden"], rtol=1e-12, atol=0)
    assert float(loss) == pytest.approx(float(ref_data["loss"]), rel=1e-12, abs=0)
    for key in (*names, "x", "h0"):
        np.testing.assert_allclose(
            grads[key], ref_data[f"grad_{key}"], rtol=1e-12, atol=1e-15, err_msg=key
        )
