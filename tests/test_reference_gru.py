"""The hand-fused benchmark GRU against the plain reference cell and finite differences."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path) -> ModuleType:
    """Import a module by file path (neither tests/ nor benchmarks/ need to be packages)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ref = _load("reference_cells", ROOT / "tests" / "reference_cells.py")
fused = _load("reference_gru", ROOT / "benchmarks" / "reference_gru.py")

GRU_KEYS = (*fused.GRU_PARAM_NAMES, "x", "h0")


def _gru_problem(
    T: int, B: int, D: int, H: int, seed: int, dtype: type[np.floating] = np.float64
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = ref.init_gru_chung(D, H, rng, dtype)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    y = rng.standard_normal((T, B, H)).astype(dtype)
    h0 = rng.uniform(-0.9, 0.9, (B, H)).astype(dtype)
    return params, x, y, h0


@pytest.mark.parametrize(
    ("T", "B", "D", "H"),
    [(1, 1, 1, 1), (3, 2, 3, 4), (7, 1, 5, 6), (12, 5, 3, 8), (20, 16, 17, 32)],
)
@pytest.mark.parametrize("with_h0", [True, False])
def test_fused_gru_equals_reference_cell(T: int, B: int, D: int, H: int, with_h0: bool) -> None:
    params, x, y, h0 = _gru_problem(T, B, D, H, seed=T * 1000 + B * 100 + D * 10 + H)
    h0_arg = h0 if with_h0 else None
    hidden_ref, loss_ref, grads_ref = ref.gru_chung(params, x, y, h0_arg)

    hidden = fused.forward(params, x, h0_arg)
    loss, grads = fused.loss_and_grads(params, x, y, h0_arg)

    np.testing.assert_allclose(hidden, hidden_ref, rtol=1e-12, atol=1e-14)
    assert isinstance(loss, float)
    assert loss == pytest.approx(float(loss_ref), rel=1e-12, abs=0)
    assert set(grads) == set(GRU_KEYS)
    for key in GRU_KEYS:
        assert grads[key].shape == grads_ref[key].shape, key
        np.testing.assert_allclose(grads[key], grads_ref[key], rtol=1e-12, atol=1e-14, err_msg=key)


def test_fused_gru_keeps_float32() -> None:
    params, x, y, h0 = _gru_problem(6, 4, 5, 8, seed=11, dtype=np.float32)
    hidden = fused.forward(params, x, h0)
    loss, grads = fused.loss_and_grads(params, x, y, h0)
    assert hidden.dtype == np.float32
    for key in GRU_KEYS:
        assert grads[key].dtype == np.float32, key
    _, loss_ref, grads_ref = ref.gru_chung(params, x, y, h0)
    assert loss == pytest.approx(float(loss_ref), rel=1e-5)
    for key in GRU_KEYS:
        np.testing.assert_allclose(grads[key], grads_ref[key], rtol=1e-4, atol=1e-5, err_msg=key)


def test_fused_gru_does_not_modify_inputs() -> None:
    params, x, y, h0 = _gru_problem(4, 3, 2, 5, seed=5)
    copies = [a.copy() for a in (*params.values(), x, y, h0)]
    fused.loss_and_grads(params, x, y, h0)
    for before, after in zip(copies, (*params.values(), x, y, h0), strict=True):
        np.testing.assert_array_equal(before, after)


def test_reused_workspace_never_leaks_into_results() -> None:
    """Results stay valid after later calls of other shapes reuse the scratch buffers."""
    problems = [
        _gru_problem(*shape, seed=i) for i, shape in enumerate([(9, 4, 3, 5), (3, 2, 3, 5)])
    ]
    first = [fused.loss_and_grads(p, x, y, h0) for p, x, y, h0 in problems]
    hidden_first = fused.forward(*problems[0][:2])
    kept = [(loss, {k: g.copy() for k, g in grads.items()}) for loss, grads in first]
    hidden_kept = hidden_first.copy()
    for p, x, y, h0 in reversed(problems):
        fused.loss_and_grads(p, x, y, h0)
        fused.forward(p, x)
    for (loss, grads), (loss_kept, grads_kept), (p, x, y, h0) in zip(
        first, kept, problems, strict=True
    ):
        _, loss_ref, grads_ref = ref.gru_chung(p, x, y, h0)
        assert loss == loss_kept == pytest.approx(float(loss_ref), rel=1e-12)
        for key in GRU_KEYS:
            np.testing.assert_array_equal(grads[key], grads_kept[key])
            np.testing.assert_allclose(grads[key], grads_ref[key], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(hidden_first, hidden_kept)


# ----------------------------------------------------------------------------- read-out model


def _readout_problem(
    dtype: type[np.floating] = np.float64,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    T, B, K, H = 5, 3, 4, 3
    rng = np.random.default_rng(2014)
    params = fused.init_params(K, H, K, rng, dtype, scale=0.6)
    for name in ("bz", "br", "bca", "c"):
        params[name] = rng.uniform(-0.5, 0.5, params[name].shape).astype(dtype)
    x = (rng.random((T, B, K)) < 0.4).astype(dtype)
    targets = (rng.random((T, B, K)) < 0.4).astype(dtype)
    # sequence lengths 5, 3, 1: trailing padding in two of the three sequences
    mask = (np.arange(T)[:, None] < np.array([5, 3, 1])[None, :]).astype(dtype)
    h0 = rng.uniform(-0.5, 0.5, (B, H)).astype(dtype)
    return params, x, targets, mask, h0


def test_readout_gradients_match_central_differences() -> None:
    params, x, targets, mask, h0 = _readout_problem()
    loss, grads = fused.readout_loss_and_grads(params, x, targets, mask, h0)
    assert set(grads) == {*fused.READOUT_PARAM_NAMES, "x", "h0"}

    # finite differences of the same model evaluated in extended precision where available
    fd = np.longdouble
    params_fd = {k: v.astype(fd) for k, v in params.items()}
    x_fd, targets_fd, mask_fd, h0_fd = (a.astype(fd) for a in (x, targets, mask, h0))

    def f() -> np.floating:
        value: np.floating = fused.readout_loss_and_grads(
            params_fd, x_fd, targets_fd, mask_fd, h0_fd
        )[0]
        return value

    eps = 1e-3
    noise = 10 * float(np.finfo(fd).eps) * abs(float(loss)) / eps
    for key, array in (*params_fd.items(), ("x", x_fd), ("h0", h0_fd)):
        numeric = ref.central_difference_gradient(f, array, eps).astype(np.float64)
        # per-element relative error; elements below the difference's noise floor / 1e-7
        # are measured against that floor
        scale = np.maximum(np.maximum(np.abs(grads[key]), np.abs(numeric)), noise / 1e-7)
        err = np.abs(grads[key] - numeric) / scale
        assert err.max() < 1e-7, f"d/d{key}: max relative error {err.max():.3e}"


def test_readout_padding_carries_state_and_counts_zero() -> None:
    params, x, targets, mask, h0 = _readout_problem()
    loss, grads = fused.readout_loss_and_grads(params, x, targets, mask, h0)
    # inputs at padded steps have no influence
    x_changed = x.copy()
    x_changed[mask == 0] = 1.0 - x_changed[mask == 0]
    targets_changed = targets.copy()
    targets_changed[mask == 0] = 1.0 - targets_changed[mask == 0]
    loss2, _ = fused.readout_loss_and_grads(params, x_changed, targets_changed, mask, h0)
    assert loss2 == loss
    np.testing.assert_array_equal(grads["x"][mask == 0], 0.0)

    # the loss equals the masked BCE of the unpadded sequences, each run on its own
    gru_keys = fused.GRU_PARAM_NAMES
    total = 0.0
    for b, length in enumerate(mask.sum(axis=0).astype(int)):
        hidden = ref.gru_chung(
            {k: params[k] for k in gru_keys},
            x[:length, b : b + 1],
            np.zeros((length, 1, params["Wrecz"].shape[0])),
            h0[b : b + 1],
        )[0]
        p = 1.0 / (1.0 + np.exp(-(hidden[:, 0] @ params["V"] + params["c"])))
        y = targets[:length, b]
        total += float(-np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert loss == pytest.approx(total, rel=1e-12)


def test_readout_without_mask_equals_all_ones_mask() -> None:
    params, x, targets, mask, h0 = _readout_problem()
    loss_none, grads_none = fused.readout_loss_and_grads(params, x, targets, None, h0)
    loss_ones, grads_ones = fused.readout_loss_and_grads(params, x, targets, np.ones_like(mask), h0)
    assert loss_none == pytest.approx(loss_ones, rel=1e-14)
    for key, grad in grads_none.items():
        np.testing.assert_allclose(grad, grads_ones[key], rtol=1e-13, atol=1e-15, err_msg=key)


def test_readout_float32_and_training_epoch() -> None:
    params, x, targets, mask, _ = _readout_problem(np.float32)
    model = fused.SigmoidReadoutGRU(params)
    loss, grads = model.loss_and_grads(x, targets, mask)
    assert np.asarray(loss).dtype == np.float32
    for key, grad in grads.items():
        assert grad.dtype == np.float32, key
    batches = [(x, targets, mask)] * 20
    model.train_epoch(batches, learning_rate=0.05, clip_norm=5.0)
    for name, value in model.params.items():
        assert value.dtype == np.float32, name
    loss_after, _ = model.loss_and_grads(x, targets, mask)
    assert loss_after < loss
