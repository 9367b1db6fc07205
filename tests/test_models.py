"""The models/ cells and models against PyTorch, the hand-written references and finite
differences; their state dicts, argument checks and wrappers."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import minigrad as mg
from minigrad import CellBuilder
from minigrad.errors import ShapeError
from models import (
    CELLS,
    GRU,
    LSTM,
    MGU,
    Bidirectional,
    RecurrentModel,
    Stacked,
    TanhRNN,
    stack,
    state_names,
)
from models.cells import BUILTIN_CELLS
from models.cells.stack import layer_states

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
PYTORCH_GRU = DATA_DIR / "pytorch_gru_reset_after.npz"


def _load_reference_cells() -> ModuleType:
    """Import ``tests/reference_cells.py`` by path (tests/ is not a package)."""
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

T, B, D, H = 3, 2, 3, 4
REF_TOL = 1e-10
TORCH_TOL = 1e-12

Factory = Callable[..., RecurrentModel]
# name -> (model factory, reference function, reference initialiser, has a cell state)
MODELS: dict[str, tuple[Factory, Callable[..., Any], Callable[..., Any], bool]] = {
    "gru_chung": (
        lambda *a, **k: GRU(*a, variant="chung", **k),
        ref.gru_chung,
        ref.init_gru_chung,
        False,
    ),
    "gru_reset_after": (
        lambda *a, **k: GRU(*a, variant="reset_after", **k),
        ref.gru_reset_after,
        ref.init_gru_reset_after,
        False,
    ),
    "lstm": (LSTM, ref.lstm_peephole, ref.init_lstm_peephole, True),
    "tanh": (TanhRNN, ref.tanh_rnn, ref.init_tanh_rnn, False),
    "mgu": (MGU, ref.mgu, ref.init_mgu, False),
}
NAMES = list(MODELS)

EVERY_CELL = sorted({frag: name for name, frag in CELLS.items()}.values())
"""Every registered cell, one name per fragment (``gru`` is ``gru_chung``)."""


def initial_state_args(cell: str) -> tuple[str, ...]:
    """The initial-state arguments of a model of ``cell``: ``h0``, and ``c0`` ... for
    every further state the cell declares."""
    return tuple(f"{k}0" for k in layer_states(cell))


def test_every_registered_cell_has_a_reference_implementation() -> None:
    assert set(EVERY_CELL) <= set(MODELS), "add an independent reference for each new cell"


def rel_error(a: np.ndarray, b: np.ndarray | float) -> float:
    """``max |a - b| / max |b|`` (the error relative to the array's scale)."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b64))), 1e-300)
    return float(np.max(np.abs(a64 - b64))) / scale


def data(
    dtype: Any = np.float64,
    seed: int = 0,
    t: int = T,
    out: int = H,
    states: tuple[str, ...] = ("h0",),
    state_shape: tuple[int, ...] = (B, H),
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Random x (t, B, D), y (t, B, out) and initial states of ``state_shape``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, B, D)).astype(dtype)
    y = rng.standard_normal((t, B, out)).astype(dtype)
    st = {s: (0.5 * rng.standard_normal(state_shape)).astype(dtype) for s in states}
    return x, y, st


def state_args(has_c: bool) -> tuple[str, ...]:
    return ("h0", "c0") if has_c else ("h0",)


def reference_model(name: str, seed: int = 0) -> tuple[RecurrentModel, dict[str, np.ndarray]]:
    """A float64 model loaded with the reference initialiser's parameters."""
    factory, _fn, init, _has_c = MODELS[name]
    params = init(D, H, np.random.default_rng(seed + 100), np.float64)
    model = factory(D, H)
    model.load_state_dict(params)
    return model, params


def fd_check(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    states: Mapping[str, np.ndarray],
    *,
    per_element_max: int = 64,
) -> mg.GradcheckResult:
    """Finite differences of ``0.5 * sum((model.forward(x, **states) - y) ** 2)`` against
    ``model.loss_and_grads`` for every parameter, x and each initial state."""
    loss, grads = model.loss_and_grads(x, y, **states)
    params = model.state_dict()
    args: dict[str, np.ndarray] = {**params, "x": x, **states}
    assert set(grads) == set(args), (sorted(grads), sorted(args))

    def f(a: Mapping[str, np.ndarray]) -> float:
        saved = model.state_dict()
        model.load_state_dict({k: np.asarray(a[k]) for k in params})
        try:
            h = model.forward(a["x"], **{s: a[s] for s in states})
        finally:
            model.load_state_dict(saved)
        return float(0.5 * np.sum((h - y) ** 2))

    assert abs(f(args) - loss) <= 1e-12 * max(1.0, abs(loss))
    return mg.check_grads(
        f, args, grads, what=type(model).__name__, per_element_max=per_element_max
    )


# --------------------------------------------------------------------------
# PyTorch's GRU


def test_reset_after_reproduces_pytorch() -> None:
    if not PYTORCH_GRU.exists():
        pytest.skip(f"the PyTorch GRU test vector is absent ({PYTORCH_GRU})")
    with np.load(PYTORCH_GRU, allow_pickle=False) as f:
        d = {k: f[k] for k in f.files}
    T_, B_, D_ = d["x"].shape
    H_ = d["h0"].shape[1]
    model = GRU(D_, H_, variant="reset_after")
    model.load_state_dict({k: d[k] for k in model.state_dict()})
    hidden = model.forward(d["x"], d["h0"])
    loss, grads = model.loss_and_grads(d["x"], d["y"], d["h0"])
    assert hidden.shape == (T_, B_, H_)
    errors = {"hidden": rel_error(hidden, d["hidden"]), "loss": rel_error(loss, d["loss"])}
    assert set(grads) == {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "x", "h0"}
    for k, g in grads.items():
        assert g.shape == d[f"grad_{k}"].shape, k
        errors[k] = rel_error(g, d[f"grad_{k}"])
    bad = {k: e for k, e in errors.items() if not e <= TORCH_TOL}
    assert not bad, bad


# --------------------------------------------------------------------------
# the hand-written references


@pytest.mark.parametrize("name", NAMES)
def test_matches_reference(name: str) -> None:
    _factory, fn, _init, has_c = MODELS[name]
    model, params = reference_model(name)
    x, y, st = data(states=state_args(has_c))
    hidden_ref, loss_ref, grads_ref = fn(params, x, y, **st)
    hidden = model.forward(x, **st)
    loss, grads = model.loss_and_grads(x, y, **st)
    assert hidden.dtype == np.float64 and hidden.shape == (T, B, H)
    assert rel_error(hidden, hidden_ref) <= REF_TOL
    assert rel_error(loss, float(loss_ref)) <= REF_TOL
    assert set(grads) == set(grads_ref) == {*params, "x", *st}
    for k in grads:
        assert grads[k].shape == grads_ref[k].shape, k
        assert rel_error(grads[k], grads_ref[k]) <= REF_TOL, k


@pytest.mark.parametrize("name", NAMES)
def test_default_initial_state_is_zero(name: str) -> None:
    fn = MODELS[name][1]
    model, params = reference_model(name, seed=1)
    x, y, _ = data(seed=1)
    hidden_ref, loss_ref, grads_ref = fn(params, x, y)
    loss, grads = model.loss_and_grads(x, y)
    assert rel_error(model.forward(x), hidden_ref) <= REF_TOL
    assert rel_error(loss, float(loss_ref)) <= REF_TOL
    for k in grads:
        assert rel_error(grads[k], grads_ref[k]) <= REF_TOL, k


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_l2_of_forward(name: str) -> None:
    _factory, _fn, _init, has_c = MODELS[name]
    model, _ = reference_model(name)
    x, y, st = data(states=state_args(has_c))
    loss, _ = model.loss_and_grads(x, y, **st)
    h = model.forward(x, **st)
    assert loss == pytest.approx(0.5 * float(np.sum((h - y) ** 2)), rel=1e-13)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("init", ["default", "orthogonal"])
def test_gradcheck_cell(name: str, init: str) -> None:
    factory, _fn, _init, has_c = MODELS[name]
    model = factory(D, H, init=init, seed=3)
    x, y, st = data(seed=3, states=state_args(has_c))
    cell_states = {k[:-1]: v for k, v in st.items()}
    result = mg.gradcheck(model.cell, model.params, {"x": x, "y": y}, cell_states)
    assert result.checks > 0


@pytest.mark.parametrize("name", NAMES)
def test_model_gradients_finite_differences(name: str) -> None:
    factory, _fn, _init, has_c = MODELS[name]
    model = factory(D, H, seed=4)
    x, y, st = data(seed=4, states=state_args(has_c))
    fd_check(model, x, y, st)


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name: str) -> None:
    factory, _fn, _init, has_c = MODELS[name]
    m32 = factory(D, H, dtype=np.float32, seed=5)
    m64 = factory(D, H, dtype=np.float64, seed=5)
    assert all(v.dtype == np.float32 for v in m32.state_dict().values())
    m64.load_state_dict({k: v.astype(np.float64) for k, v in m32.state_dict().items()})
    x, y, st = data(np.float32, seed=5, states=state_args(has_c))
    st64 = {k: v.astype(np.float64) for k, v in st.items()}
    h = m32.forward(x, **st)
    assert h.dtype == np.float32
    loss, grads = m32.loss_and_grads(x, y, **st)
    assert isinstance(loss, float)
    assert {k: g.dtype for k, g in grads.items()} == {k: np.dtype(np.float32) for k in grads}
    h64 = m64.forward(x.astype(np.float64), **st64)
    loss64, grads64 = m64.loss_and_grads(x.astype(np.float64), y.astype(np.float64), **st64)
    assert rel_error(h, h64) < 1e-5
    assert loss == pytest.approx(loss64, rel=1e-5)
    for k in grads:
        assert rel_error(grads[k], grads64[k]) < 1e-4, k


# --------------------------------------------------------------------------
# construction, names and initialisation


def test_cells_registry_and_state_names() -> None:
    assert set(BUILTIN_CELLS) == {"gru", "gru_chung", "gru_reset_after", "lstm", "tanh", "mgu"}
    assert set(BUILTIN_CELLS) <= set(CELLS)
    assert CELLS["gru"] is CELLS["gru_chung"]
    assert state_names("gru", 1) == ["h"]
    assert state_names("lstm", 1) == ["h", "c"]
    assert state_names("lstm", 2) == ["l0.h", "l0.c", "l1.h", "l1.c"]
    assert state_names("tanh", 3) == ["l0.h", "l1.h", "l2.h"]
    with pytest.raises(ValueError, match="gru_reset_after"):
        state_names("elman", 1)
    with pytest.raises(ValueError, match="layers"):
        state_names("gru", 0)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("layers", [1, 2])
def test_stack_declares_its_states(cell: str, layers: int) -> None:
    b = CellBuilder("t")
    x = b.input("x", D)
    tops = stack(b, x, cell, D, H, layers)
    assert len(tops) == layers
    b.output("h", tops[-1])
    built = b.build()
    assert list(built.states) == state_names(cell, layers)
    assert tops[-1].name == ("l1." if layers == 2 else "") + "h_next"


def test_stack_unknown_cell_lists_valid_names() -> None:
    b = CellBuilder("t")
    x = b.input("x", D)
    with pytest.raises(ValueError) as e:
        stack(b, x, "elman", D, H, 1)
    for name in CELLS:
        assert repr(name) in str(e.value)


def test_node_names_are_meaningful() -> None:
    ops = set(GRU(D, H).cell.ops)
    assert {"z", "r", "c", "h_next"} <= ops
    assert {"r", "z", "n", "gi", "gh", "h_next"} <= set(GRU(D, H, variant="reset_after").cell.ops)
    assert {"i", "f", "g", "o", "c_next", "h_next"} <= set(LSTM(D, H).cell.ops)
    assert {"f", "c", "h_next"} <= set(MGU(D, H).cell.ops)
    assert {"l0.z", "l1.z", "l1.h_next"} <= set(GRU(D, H, num_layers=2).cell.ops)
    assert not [n for n in ops if re.fullmatch(r"[a-z]+_\d+", n)]  # no automatic names


def test_parameter_names_and_shapes() -> None:
    shapes = {k: v.shape for k, v in GRU(D, H).state_dict().items()}
    assert shapes == {
        **{k: (D, H) for k in ("Wz", "Wr", "Wca")},
        **{k: (H, H) for k in ("Wrecz", "Wrecr", "Wreca")},
        **{k: (H,) for k in ("bz", "br", "bca")},
    }
    torch2 = {k: v.shape for k, v in GRU(D, H, variant="reset_after", num_layers=2).params.items()}
    assert torch2 == {
        "weight_ih_l0": (3 * H, D),
        "weight_hh_l0": (3 * H, H),
        "bias_ih_l0": (3 * H,),
        "bias_hh_l0": (3 * H,),
        "weight_ih_l1": (3 * H, H),
        "weight_hh_l1": (3 * H, H),
        "bias_ih_l1": (3 * H,),
        "bias_hh_l1": (3 * H,),
    }
    lstm = LSTM(D, H).state_dict()
    assert set(lstm) == {
        *(f"W{g}" for g in "ifco"),
        *(f"U{g}" for g in "ifco"),
        "pi",
        "pf",
        "po",
        *(f"b{g}" for g in "ifco"),
    }
    assert set(TanhRNN(D, H).params) == {"W", "U", "b"}
    assert set(MGU(D, H).params) == {"Wf", "Wh", "Uf", "Uh", "bf", "bh"}
    assert "l1.Wrecz" in GRU(D, H, num_layers=2).params


def test_reset_after_prefix_mapping() -> None:
    from models.cells import gru_reset_after

    b = CellBuilder("t")
    x = b.input("x", D)
    h = gru_reset_after(b, x, D, H, prefix="enc.l2.")
    h2 = gru_reset_after(b, h, H, H, prefix="dec.")
    h3 = gru_reset_after(b, h2, H, H, prefix="cell1.")
    b.output("h", h3)
    params = set(b.build().params)
    assert {"enc.weight_ih_l2", "dec.weight_ih_l0", "cell1.weight_ih_l0"} <= params


@pytest.mark.parametrize("name", NAMES)
def test_default_init(name: str) -> None:
    factory = MODELS[name][0]
    hs = 16
    params = factory(D, hs, seed=0).state_dict()
    bound = 1 / np.sqrt(hs)
    for k, v in params.items():
        if name == "lstm" and k == "bf":
            assert np.all(v == 1.0)
        else:
            assert np.all(np.abs(v) <= bound), k
            assert np.max(np.abs(v)) > 0.5 * bound, k
    again = factory(D, hs, seed=0).state_dict()
    other = factory(D, hs, seed=1).state_dict()
    assert all(np.array_equal(params[k], again[k]) for k in params)
    assert not all(np.array_equal(params[k], other[k]) for k in params)


@pytest.mark.parametrize("name", NAMES)
def test_orthogonal_init(name: str) -> None:
    factory = MODELS[name][0]
    hs = 5
    params = factory(D, hs, init="orthogonal").state_dict()
    recurrent = {"Wrecz", "Wrecr", "Wreca", "U", "Uf", "Uh", "Ui", "Uc", "Uo", "weight_hh_l0"}
    glorot = np.sqrt(6 / (D + hs))
    for k, v in params.items():
        if k in recurrent:
            for blk in np.split(v, v.shape[0] // hs, axis=0):
                np.testing.assert_allclose(blk.T @ blk, np.eye(hs), atol=1e-12)
        elif v.ndim == 2:
            assert v.shape in ((D, hs), (3 * hs, D)), k
            bound = np.sqrt(6 / (v.shape[0] + v.shape[1]))
            assert np.all(np.abs(v) <= bound) and bound <= glorot + 1e-12, k
        elif name == "lstm" and k == "bf":
            assert np.all(v == 1.0)
        else:
            assert np.all(v == 0.0), k


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError) as e:
        GRU(D, H, variant="pytorch")
    assert "'chung'" in str(e.value) and "'reset_after'" in str(e.value)
    with pytest.raises(ValueError, match="orthogonal"):
        GRU(D, H, init="xavier")
    with pytest.raises(ValueError, match=r"float32 or numpy\.float64"):
        GRU(D, H, dtype=np.int64)
    with pytest.raises(ValueError, match="hidden_size"):
        LSTM(D, 0)
    with pytest.raises(ValueError, match="num_layers"):
        TanhRNN(D, H, num_layers=0)
    with pytest.raises(ValueError) as e:
        Stacked("elman", D, H, 2)
    assert "'mgu'" in str(e.value)


# --------------------------------------------------------------------------
# argument checks


def test_bad_arguments_name_the_argument() -> None:
    model = GRU(D, H)
    x, y, st = data()
    h0 = st["h0"]
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"x": x[0]}, ShapeError, r"x must have 3 dimensions.*\(T, B, D\)"),
        ({"x": x[..., :2]}, ShapeError, r"x has shape \(3, 2, 2\), expected \(T, B, 3\)"),
        ({"x": x[:0]}, ShapeError, r"x has shape"),
        ({"x": x.astype(np.float32)}, ValueError, r"x has dtype float32.*float64.*silently"),
        ({"x": x.tolist()}, ValueError, r"x must be a numpy array"),
        ({"y": y[:2]}, ShapeError, r"y has shape \(2, 2, 4\), expected \(3, 2, 4\)"),
        ({"y": y.astype(np.float32)}, ValueError, r"y has dtype float32"),
        ({"h0": h0[None]}, ShapeError, r"h0 must have 2 dimensions.*\(B, H\)"),
        ({"h0": h0[:1]}, ShapeError, r"h0 has shape \(1, 4\), expected \(2, 4\)"),
        ({"h0": h0.astype(np.float32)}, ValueError, r"h0 has dtype float32"),
    ]
    for change, exc, pattern in cases:
        args = {"x": x, "y": y, "h0": h0, **change}
        with pytest.raises(exc, match=pattern):
            model.loss_and_grads(args["x"], args["y"], args["h0"])
        if "y" not in change:
            with pytest.raises(exc, match=pattern):
                model.forward(args["x"], args["h0"])
    with pytest.raises(ShapeError, match=r"h0 .*\(L, B, H\)"):
        GRU(D, H, num_layers=2).forward(x, h0)
    with pytest.raises(ValueError, match="c0 has dtype"):
        LSTM(D, H).forward(x, h0, h0.astype(np.float32))


# --------------------------------------------------------------------------
# state dicts


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_is_a_copy(name: str) -> None:
    model = MODELS[name][0](D, H)
    sd = model.state_dict()
    before = {k: v.copy() for k, v in sd.items()}
    for v in sd.values():
        v += 1.0
    assert all(np.array_equal(model.state_dict()[k], before[k]) for k in before)
    # load_state_dict copies too
    model.load_state_dict(sd)
    for v in sd.values():
        v += 1.0
    assert all(np.array_equal(model.state_dict()[k], before[k] + 1.0) for k in before)


def _bad_state_dicts(
    sd: dict[str, np.ndarray],
) -> list[tuple[str, dict[str, Any], str]]:
    """(what, state dict, key at fault) with every valid entry changed (so a partial load
    would show) and one fault, in the last key."""
    keys = list(sd)
    last = keys[-1]
    changed = {k: v + 0.25 for k, v in sd.items()}
    cases: list[tuple[str, dict[str, Any], str]] = []
    cases.append(("missing", {k: v for k, v in changed.items() if k != last}, last))
    cases.append(("unexpected", {**changed, "extra.W": np.zeros(3)}, "extra.W"))
    shape = dict(changed)
    shape[last] = np.zeros((*sd[last].shape, 1), dtype=sd[last].dtype)
    cases.append(("shape", shape, last))
    dtype = dict(changed)
    dtype[last] = sd[last].astype(np.float32)
    cases.append(("dtype", dtype, last))
    notarray = dict(changed)
    notarray[last] = sd[last].tolist()
    cases.append(("not an array", notarray, last))
    return cases


@pytest.mark.parametrize("name", NAMES)
def test_load_state_dict_errors_leave_model_unchanged(name: str) -> None:
    model = MODELS[name][0](D, H)
    before = model.state_dict()
    for what, bad, key in _bad_state_dicts(before):
        with pytest.raises(ValueError, match=re.escape(f"'{key}'")):
            model.load_state_dict(bad)
        now = model.state_dict()
        assert all(np.array_equal(now[k], before[k]) for k in before), what


def test_bidirectional_load_state_dict_errors() -> None:
    model = Bidirectional("gru", D, H)
    before = model.state_dict()
    assert set(before) == {f"{d}.{k}" for d in ("fwd", "bwd") for k in GRU(D, H).params}
    for what, bad, key in _bad_state_dicts(before):
        with pytest.raises(ValueError, match=re.escape(f"'{key}'")):
            model.load_state_dict(bad)
        now = model.state_dict()
        assert all(np.array_equal(now[k], before[k]) for k in before), what
    # a fault in the backward half must not leave the forward half loaded
    bad = {k: v + 1.0 for k, v in before.items()}
    bad["bwd.Wz"] = bad["bwd.Wz"].astype(np.float32)
    with pytest.raises(ValueError, match=re.escape("'bwd.Wz'")):
        model.load_state_dict(bad)
    assert np.array_equal(model.state_dict()["fwd.Wz"], before["fwd.Wz"])
    good = {k: v + 1.0 for k, v in before.items()}
    model.load_state_dict(good)
    assert all(np.array_equal(model.state_dict()[k], good[k]) for k in good)


def test_torch_state_dict_of_a_deep_gru_loads_unchanged() -> None:
    model = GRU(D, H, variant="reset_after", num_layers=2)
    rng = np.random.default_rng(0)
    torch_like = {k: rng.standard_normal(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(torch_like)
    assert list(model.state_dict()) == [
        f"{w}_l{layer}"
        for layer in (0, 1)
        for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]


# --------------------------------------------------------------------------
# deep, reversed and bidirectional models


def _flip(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a[::-1])


@pytest.mark.parametrize("name", NAMES)
def test_stacked_forward_composes_references(name: str) -> None:
    """Two layers computed by chaining the single-layer references."""
    _factory, fn, _init, has_c = MODELS[name]
    cell = {"gru_chung": "gru"}.get(name, name)
    model = Stacked(cell, D, H, 2, seed=6)
    x, _, st = data(seed=6, states=state_args(has_c), state_shape=(2, B, H))
    h = model.forward(x, **st)
    params = model.state_dict()
    layer_in = x
    for layer in range(2):
        if name == "gru_reset_after":  # PyTorch's names: weight_ih_l1 ...
            suffix = f"_l{layer}"
            p = {k[: -len(suffix)] + "_l0": v for k, v in params.items() if k.endswith(suffix)}
        else:
            p = {k[3:]: v for k, v in params.items() if k.startswith(f"l{layer}.")}
        s = {k: v[layer] for k, v in st.items()}
        layer_in, _, _ = fn(p, layer_in, np.zeros((T, B, H)), **s)
    assert rel_error(h, layer_in) <= REF_TOL


@pytest.mark.parametrize("cell", EVERY_CELL)
@pytest.mark.parametrize("reverse", [False, True])
def test_stacked_finite_differences(cell: str, reverse: bool) -> None:
    model = Stacked(cell, D, H, 2, reverse=reverse, seed=7)
    kinds = initial_state_args(cell)
    x, y, st = data(seed=7, states=kinds, state_shape=(2, B, H))
    _, grads = model.loss_and_grads(x, y, **st)
    assert {k: g.shape for k, g in grads.items() if k in st} == {k: (2, B, H) for k in st}
    fd_check(model, x, y, st, per_element_max=24)


@pytest.mark.parametrize("name", NAMES)
def test_reverse_runs_the_flipped_sequence(name: str) -> None:
    _factory, fn, _init, has_c = MODELS[name]
    cell = {"gru_chung": "gru"}.get(name, name)
    model = Stacked(cell, D, H, 1, reverse=True)
    params = model.state_dict()
    x, y, st = data(seed=8, states=state_args(has_c), state_shape=(1, B, H))
    hidden_ref, loss_ref, grads_ref = fn(
        params, _flip(x), _flip(y), **{k: v[0] for k, v in st.items()}
    )
    h = model.forward(x, **st)
    assert rel_error(h, _flip(hidden_ref)) <= REF_TOL
    last = model.forward(x, **st, return_sequences=False)
    assert last.shape == (B, H) and np.array_equal(last, h[0])
    fwd_last = Stacked(cell, D, H, 1).forward(x, return_sequences=False)
    assert fwd_last.shape == (B, H)
    loss, grads = model.loss_and_grads(x, y, **st)
    assert rel_error(loss, float(loss_ref)) <= REF_TOL
    for k in params:
        assert rel_error(grads[k], grads_ref[k]) <= REF_TOL, k
    assert rel_error(grads["x"], _flip(grads_ref["x"])) <= REF_TOL
    for k in st:
        assert rel_error(grads[k][0], grads_ref[k]) <= REF_TOL, k


def test_single_layer_stack_equals_the_model() -> None:
    gru = GRU(D, H, seed=9)
    st = Stacked("gru", D, H, 1, seed=9)
    assert list(st.params) == list(gru.params)
    x, y, s = data(seed=9)
    h0 = s["h0"]
    np.testing.assert_array_equal(st.forward(x, h0[None]), gru.forward(x, h0))
    _, g1 = gru.loss_and_grads(x, y, h0)
    _, g2 = st.loss_and_grads(x, y, h0[None])
    assert g2["h0"].shape == (1, B, H)
    np.testing.assert_array_equal(g2["h0"][0], g1["h0"])
    np.testing.assert_array_equal(st.forward(x, return_sequences=False), gru.forward(x)[-1])
    with pytest.raises(ValueError, match="c0 is not used"):
        st.forward(x, h0[None], h0[None])


@pytest.mark.parametrize("cell", EVERY_CELL)
def test_bidirectional(cell: str) -> None:
    model = Bidirectional(cell, D, H, seed=10)
    kinds = initial_state_args(cell)
    x, y, st = data(seed=10, out=2 * H, states=kinds, state_shape=(2, B, H))
    out = model.forward(x, **st)
    assert out.shape == (T, B, 2 * H)
    f_st = {k: v[0:1] for k, v in st.items()}
    b_st = {k: v[1:2] for k, v in st.items()}
    np.testing.assert_array_equal(out[..., :H], model.fwd.forward(x, **f_st))
    np.testing.assert_array_equal(out[..., H:], model.bwd.forward(x, **b_st))
    assert not np.allclose(
        model.fwd.params[next(iter(model.fwd.params))],
        model.bwd.params[next(iter(model.bwd.params))],
    )
    loss, grads = model.loss_and_grads(x, y, **st)
    assert loss == pytest.approx(0.5 * float(np.sum((out - y) ** 2)), rel=1e-13)
    assert grads["x"].shape == (T, B, D)
    assert {k: grads[k].shape for k in st} == {k: (2, B, H) for k in st}
    fd_check(model, x, y, st, per_element_max=24)


def test_bidirectional_argument_checks() -> None:
    model = Bidirectional("gru", D, H)
    x, y, st = data(out=2 * H, state_shape=(2, B, H))
    with pytest.raises(ShapeError, match=r"y has shape .*\(T, B, 2H\)"):
        model.loss_and_grads(x, y[..., :H])
    with pytest.raises(ShapeError, match=r"h0 .*\(2, B, H\)"):
        model.forward(x, st["h0"][0])
    with pytest.raises(ValueError, match="x has dtype float32"):
        model.forward(x.astype(np.float32))
    with pytest.raises(ValueError, match="c0 is not used"):
        model.forward(x, st["h0"], st["h0"])


def test_float32_wrappers() -> None:
    x, y, st = data(np.float32, out=2 * H, state_shape=(2, B, H))
    bi = Bidirectional("lstm", D, H, dtype=np.float32)
    _, grads = bi.loss_and_grads(x, y, st["h0"], st["h0"])
    assert bi.forward(x).dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    deep = Stacked("mgu", D, H, 2, reverse=True, dtype=np.float32)
    _, grads = deep.loss_and_grads(x, y[..., :H], st["h0"])
    assert deep.forward(x).dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


# --------------------------------------------------------------------------
# models/ writes no derivative


def test_models_write_no_derivative() -> None:
    models_dir = ROOT / "models"
    for path in sorted(models_dir.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "def vjp" not in text, path
    nets = ("base", "gru", "lstm", "rnn", "mgu", "wrappers")
    paths = [*sorted((models_dir / "cells").glob("*.py")), *(models_dir / "nets" / f"{n}.py" for n in nets)]
    for path in paths:
        name = path.relative_to(models_dir).as_posix()
        text = path.read_text(encoding="utf-8")
        assert "vjp" not in text, name
        assert "minigrad.nodes" not in text and "(Node)" not in text, name
        assert not re.search(r"\bnp\.(tanh|exp|log)\b", text), name


def test_a_batch_major_input_is_told_minigrad_is_time_major() -> None:
    model = GRU(3, 4)
    x = np.zeros((2, 6, 3))  # (B, T, D) by mistake
    with pytest.raises(ShapeError, match=r"expected \(6, 4\) = \(B, H\); minigrad is time-major"):
        model.forward(x, np.zeros((2, 4)))
    with pytest.raises(ShapeError, match=r"time-major.*x\.transpose\(1, 0, 2\)"):
        model.loss_and_grads(x, np.zeros((6, 2, 4)))


def test_a_function_that_is_not_a_fragment_gets_one_line() -> None:
    from minigrad.cell import CellBuilder
    from models.cells.stack import stack

    def wrong_signature(x: object) -> None:  # like os.system
        return None

    def wrong_return(*args: object, **kw: object) -> int:
        return 42

    for frag, words in ((wrong_signature, "fragment arguments"), (wrong_return, "returned int")):
        b = CellBuilder("bad")
        x = b.input("x", 3)
        with pytest.raises(ValueError, match=words):
            stack(b, x, frag, 3, 4, 1)  # type: ignore[arg-type]


def test_model_sizes_are_checked_before_anything_is_allocated() -> None:
    from models.nets.limits import lstm_param_count
    from models.nets.sequence import SequenceModel

    # the count is exact for the LSTM: one layer of 36 units on 88 keys, with its read-out
    assert lstm_param_count(88, 36, 1, 88) == SequenceModel(cell="lstm", hidden_size=36).num_params
    assert lstm_param_count(88, 5, 2, 88) == SequenceModel(
        cell="lstm", hidden_size=5, layers=2
    ).num_params
    with pytest.raises(ValueError, match="hidden size must be <= 8192"):
        GRU(3, 10**9)
    with pytest.raises(ValueError, match="parameters for an LSTM"):
        SequenceModel(hidden_size=2000)
    # the largest accepted size, and the next one refused (MAX_PARAMS: under 500 MB a run)
    assert lstm_param_count(88, 559, 1, 88) <= 1_500_000 < lstm_param_count(88, 560, 1, 88)
    assert SequenceModel(cell="lstm", hidden_size=559).num_params <= 1_500_000
    with pytest.raises(ValueError, match=r"1,5.*more than the 1,500,000"):
        SequenceModel(cell="gru", hidden_size=560)
    with pytest.raises(ValueError, match="layers must be <= 64"):
        SequenceModel(hidden_size=4, layers=65)


def test_a_training_batch_wider_than_the_limit_is_refused() -> None:
    from models.nets.limits import MAX_BATCH_UNITS
    from models.train import TrainConfig

    TrainConfig(cell="lstm", hidden=559, batch_size=56).validate().check_training_batch()
    wide = TrainConfig(cell="lstm", hidden=559, batch_size=57)
    wide.validate()  # a stored configuration still loads: a model is scored in its own batches
    with pytest.raises(ValueError, match="at most 56") as err:
        wide.check_training_batch()
    assert f"{MAX_BATCH_UNITS:,}" in str(err.value)
    with pytest.raises(ValueError, match="2 layer"):
        TrainConfig(hidden=46, layers=2, batch_size=400).check_training_batch()
    # the inputs count too: a one-unit model is not a licence for any batch
    TrainConfig(cell="lstm", hidden=1, batch_size=414).check_training_batch()
    with pytest.raises(ValueError, match="at most 414"):
        TrainConfig(cell="lstm", hidden=1, batch_size=32_768).check_training_batch()


def test_a_wide_model_scores_smaller_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from models.data import load_dataset
    from models.nets.sequence import EVAL_PADDED_STEPS, EVAL_UNITS, SequenceModel

    seq = importlib.import_module("models.nets.sequence")
    seen: list[int | None] = []
    real = seq.batches

    def spy(*a: object, **kw: object) -> object:
        seen.append(kw.get("max_padded_steps"))  # type: ignore[arg-type]
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(seq, "batches", spy)
    valid = load_dataset("bach_chorales").valid.subset([0, 1])
    for hidden, layers in ((46, 1), (256, 1), (128, 2)):
        SequenceModel(cell="gru", hidden_size=hidden, layers=layers).evaluate(valid, 1000)
    assert seen == [EVAL_PADDED_STEPS, EVAL_PADDED_STEPS * EVAL_UNITS // 256,
                    EVAL_PADDED_STEPS * EVAL_UNITS // 256]
