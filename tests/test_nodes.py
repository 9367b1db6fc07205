"""The template test every node type passes.

For each node type: forward against a plain numpy expression, gradcheck in
float64 (relative error below 1e-7), the shape and dtype rules, float32 in ->
float32 out for forward and vjp, and extreme inputs (|x| up to 1e4) without
NaN, inf or warnings.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

import minigrad as mg
from minigrad import nodes as N
from minigrad.errors import GradcheckError
from minigrad.serialize import node_types
from minigrad.types import Array, SymShape


def _sig(x: Array) -> Array:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _logsoftmax(z: Array) -> Array:
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


@dataclass
class Case:
    """One node type: how to make it, its input shapes (concrete and symbolic),
    a plain numpy reference, and how to draw valid inputs."""

    name: str
    make: Callable[[], N.Node]
    shapes: list[tuple[int, ...]]
    sym: list[SymShape]
    out_sym: SymShape
    ref: Callable[..., Array]
    draw: Callable[[np.random.Generator, tuple[int, ...], int], Array] | None = None


def _normal(rng: np.random.Generator, shape: tuple[int, ...], i: int) -> Array:
    return rng.standard_normal(shape)


def _away_from_zero(rng: np.random.Generator, shape: tuple[int, ...], i: int) -> Array:
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.05, 0.5, x)


def _probs(rng: np.random.Generator, shape: tuple[int, ...], i: int) -> Array:
    if i == 0:
        return rng.standard_normal(shape) * 2
    return rng.uniform(0, 1, size=shape)


B, D, H = 3, 4, 5
CASES = [
    Case("MatMul", N.MatMul, [(B, D), (D, H)], [("B", D), (D, H)], ("B", H), lambda a, w: a @ w),
    Case(
        "MatMulT",
        lambda: N.MatMul(transpose_b=True),
        [(B, D), (H, D)],
        [("B", D), (H, D)],
        ("B", H),
        lambda a, w: a @ w.T,
    ),
    Case(
        "Affine",
        N.Affine,
        [(B, D), (D, H), (H,)],
        [("B", D), (D, H), (H,)],
        ("B", H),
        lambda x, w, b: x @ w + b,
    ),
    Case("Add", N.Add, [(B, H), (B, H)], [("B", H), ("B", H)], ("B", H), lambda a, b: a + b),
    Case("AddBias", N.Add, [(B, H), (H,)], [("B", H), (H,)], ("B", H), lambda a, b: a + b),
    Case("Sub", N.Sub, [(B, H), (H,)], [("B", H), (H,)], ("B", H), lambda a, b: a - b),
    Case("OneMinus", N.OneMinus, [(B, H)], [("B", H)], ("B", H), lambda x: 1 - x),
    Case("Scale", lambda: N.Scale(-2.5), [(B, H)], [("B", H)], ("B", H), lambda x: -2.5 * x),
    Case("Identity", N.Identity, [(B, H)], [("B", H)], ("B", H), lambda x: x),
    Case("Mul", N.Mul, [(B, H), (B, H)], [("B", H), ("B", H)], ("B", H), lambda a, b: a * b),
    Case("MulPeephole", N.Mul, [(H,), (B, H)], [(H,), ("B", H)], ("B", H), lambda a, b: a * b),
    Case(
        "Dropout", N.Dropout, [(B, H), (B, H)], [("B", H), ("B", H)], ("B", H), lambda x, m: x * m
    ),
    Case(
        "Zoneout",
        N.Zoneout,
        [(B, H), (B, H), (B, H)],
        [("B", H)] * 3,
        ("B", H),
        lambda k, h_new, h_prev: k * h_prev + (1 - k) * h_new,
    ),
    Case(
        "GRUUpdate",
        N.GRUUpdate,
        [(B, H), (B, H), (B, H)],
        [("B", H)] * 3,
        ("B", H),
        lambda z, a, b: (1 - z) * a + z * b,
    ),
    Case("Sigmoid", N.Sigmoid, [(B, H)], [("B", H)], ("B", H), _sig),
    Case("NegSigmoid", N.NegSigmoid, [(B, H)], [("B", H)], ("B", H), lambda x: _sig(-x)),
    Case("Tanh", N.Tanh, [(B, H)], [("B", H)], ("B", H), np.tanh),
    Case(
        "ReLU", N.ReLU, [(B, H)], [("B", H)], ("B", H), lambda x: np.maximum(x, 0), _away_from_zero
    ),
    Case("Slice", lambda: N.Slice(1, 4), [(B, H)], [("B", H)], ("B", 3), lambda x: x[..., 1:4]),
    Case(
        "Concat",
        N.Concat,
        [(B, 2), (B, 3), (B, 1)],
        [("B", 2), ("B", 3), ("B", 1)],
        ("B", 6),
        lambda *xs: np.concatenate(xs, axis=-1),
    ),
    Case(
        "L2Loss",
        N.L2Loss,
        [(B, H), (B, H)],
        [("B", H), ("B", H)],
        ("B",),
        lambda h, t: 0.5 * ((h - t) ** 2).sum(axis=-1),
    ),
    Case(
        "SigmoidBCE",
        N.SigmoidBCE,
        [(B, H), (B, H)],
        [("B", H), ("B", H)],
        ("B",),
        lambda z, t: -(t * np.log(_sig(z)) + (1 - t) * np.log(1 - _sig(z))).sum(axis=-1),
        _probs,
    ),
    Case(
        "SoftmaxCrossEntropy",
        N.SoftmaxCrossEntropy,
        [(B, H), (B, H)],
        [("B", H), ("B", H)],
        ("B",),
        lambda z, t: -(t * _logsoftmax(z)).sum(axis=-1),
        _probs,
    ),
]


def _away_from_kinks(node: N.Node) -> Callable[[np.random.Generator, tuple[int, ...], int], Array]:
    def draw(rng: np.random.Generator, shape: tuple[int, ...], i: int) -> Array:
        x = rng.standard_normal(shape)
        for k in node.kinks:
            x = np.where(np.abs(x - k) < 0.05, k + 0.5, x)
        return x

    return draw


def derived_case(name: str, cls: type[N.Node]) -> Case | None:
    """The template case of a registered node type, derived from the type alone: built
    without arguments, one (B, H) input per slot (two for a variadic node), inputs
    drawn away from its ``kinks``. Its "reference" is its own forward, so only the
    checks that need no reference use it. None when it cannot be derived."""
    try:
        node = cls()
    except TypeError:
        return None
    n = 2 if node.arity is None else node.arity
    sym: list[SymShape] = [("B", H)] * n
    try:
        out = node.infer_shape(*sym)
    except mg.MinigradError:
        return None
    return Case(name, cls, [(B, H)] * n, sym, out, node.forward, _away_from_kinks(node))


COVERED = {type(c.make()) for c in CASES}
DERIVED = [
    case
    for name, cls in sorted(node_types().items())
    if cls not in COVERED and (case := derived_case(name, cls)) is not None
]
"""Registered node types without a case here (a user's, registered when this module is
imported), checked with derived cases: gradcheck, time axis, float32, extremes."""
TEMPLATE = CASES + DERIVED
IDS = [c.name for c in CASES]
TEMPLATE_IDS = [c.name for c in TEMPLATE]


def _inputs(case: Case, dtype: type, seed: int = 0) -> list[Array]:
    rng = np.random.default_rng(seed)
    draw = case.draw or _normal
    return [draw(rng, s, i).astype(dtype) for i, s in enumerate(case.shapes)]


def test_every_builtin_node_type_is_covered() -> None:
    builtin = {cls for cls in node_types().values() if cls.__module__ == N.__name__}
    missing = builtin - COVERED
    assert not missing, (
        f"node types of minigrad/nodes.py without a Case (and its numpy reference) in CASES: "
        f"{missing}; multi-input ones also need a BAD_SHAPES entry"
    )


def test_a_registered_node_type_gets_a_derived_case() -> None:
    class Cube(N.Node):
        kinks = (0.0,)  # declared only to exercise the draw

        def forward(self, *xs: Array) -> Array:
            return xs[0] ** 3

        def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
            return (3 * g * xs[0] ** 2,)

    case = derived_case("Cube", Cube)
    assert case is not None and case.shapes == [(B, H)] and case.out_sym == ("B", H)
    (x,) = _inputs(case, np.float64)
    assert np.all(np.abs(x) >= 0.05)
    assert mg.gradcheck(case.make(), x).max_rel_error < 1e-7


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_matches_numpy(case: Case) -> None:
    xs = _inputs(case, np.float64)
    node = case.make()
    y = node.forward(*xs)
    np.testing.assert_allclose(y, case.ref(*xs), rtol=1e-13, atol=1e-13)
    out = np.empty_like(y)
    node.forward_into(out, *xs)
    np.testing.assert_array_equal(out, y)


@pytest.mark.parametrize("case", TEMPLATE, ids=TEMPLATE_IDS)
def test_gradcheck_float64(case: Case) -> None:
    for seed in range(3):
        xs = _inputs(case, np.float64, seed)
        result = mg.gradcheck(case.make(), *xs, seed=seed)
        assert result.max_rel_error < 1e-7
        assert result.checks > 0


@pytest.mark.parametrize("case", TEMPLATE, ids=TEMPLATE_IDS)
def test_leading_time_dimension(case: Case) -> None:
    """Nodes act on the last axis: (T, B, ...) inputs give the stacked per-step results."""
    node = case.make()
    T = 4
    per_step = [_inputs(case, np.float64, seed) for seed in range(T)]
    stacked = [
        np.stack([p[i] for p in per_step]) if "B" in case.sym[i] else per_step[0][i]
        for i in range(len(case.shapes))
    ]
    if any("B" not in s for s in case.sym):
        per_step = [
            [p[i] if "B" in case.sym[i] else per_step[0][i] for i in range(len(case.shapes))]
            for p in per_step
        ]
    y = node.forward(*stacked)
    for t in range(T):
        np.testing.assert_allclose(y[t], node.forward(*per_step[t]), rtol=1e-13, atol=1e-14)
    g = np.random.default_rng(9).standard_normal(y.shape)
    grads = node.vjp(g, y, *stacked)
    summed = [np.zeros_like(x) for x in stacked]
    for t in range(T):
        gt = node.vjp(g[t], y[t], *per_step[t])
        for i in range(len(stacked)):
            if "B" in case.sym[i]:
                np.testing.assert_allclose(grads[i][t], gt[i], rtol=1e-12, atol=1e-13)
            else:
                summed[i] += gt[i]
    for i in range(len(stacked)):
        if "B" not in case.sym[i]:
            np.testing.assert_allclose(grads[i], summed[i], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_shape_and_dtype_rules(case: Case) -> None:
    node = case.make()
    assert node.infer_shape(*case.sym) == case.out_sym
    f64 = np.dtype(np.float64)
    assert node.infer_dtype(*[f64] * len(case.sym)) == f64
    if len(case.sym) > 1:
        mixed = [f64] * len(case.sym)
        mixed[-1] = np.dtype(np.float32)
        with pytest.raises(mg.DTypeError, match="float32"):
            node.infer_dtype(*mixed)
    # shapes that do not fit are refused at build time, not by numpy
    for bad in BAD_SHAPES.get(case.name, []):
        with pytest.raises(mg.ShapeError):
            node.infer_shape(*bad)


BAD_SHAPES: dict[str, list[list[SymShape]]] = {
    "MatMul": [[("B", D + 1), (D, H)], [("B", D), ("B", H)], [("B", D), (D,)]],
    "MatMulT": [[("B", D), (D, H)]],
    "Affine": [[("B", D), (D, H), (H + 1,)], [("B", D + 1), (D, H), (H,)]],
    "Add": [[("B", H), ("B", H + 1)]],
    "AddBias": [[("B", H), (H + 1,)]],
    "Sub": [[("B", H), (2,)]],
    "Mul": [[("B", H), (B, H)]],
    "MulPeephole": [[(H + 2,), ("B", H)]],
    "GRUUpdate": [[("B", H), ("B", H), ("B", H - 1)]],
    "Dropout": [[("B", H), ("B", H + 1)]],
    "Zoneout": [[("B", H), ("B", H - 1), ("B", H)]],
    "Slice": [[("B", 2)]],
    "Concat": [[("B", 2), (B, 3)]],
    "L2Loss": [[("B", H), ("B", H + 1)]],
    "SigmoidBCE": [[("B", H), (H,)]],
    "SoftmaxCrossEntropy": [[("B", H), ("B", 1)]],
}


def test_bad_shape_table_covers_every_multi_input_case() -> None:
    multi = {c.name for c in CASES if len(c.shapes) > 1 or c.name == "Slice"}
    assert multi <= set(BAD_SHAPES)


@pytest.mark.parametrize("case", TEMPLATE, ids=TEMPLATE_IDS)
def test_float32_stays_float32(case: Case) -> None:
    xs = _inputs(case, np.float32)
    node = case.make()
    y = node.forward(*xs)
    assert y.dtype == np.float32
    grads = node.vjp(np.ones_like(y), y, *xs)
    assert len(grads) == len(xs)
    for gr, x in zip(grads, xs, strict=True):
        assert gr.dtype == np.float32
        assert gr.shape == x.shape


@pytest.mark.parametrize("case", TEMPLATE, ids=TEMPLATE_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_inputs_stay_finite(case: Case, dtype: type) -> None:
    rng = np.random.default_rng(3)
    xs = []
    for i, s in enumerate(case.shapes):
        if case.draw is _probs and i == 1:
            xs.append(rng.uniform(0, 1, size=s).astype(dtype))
        else:
            xs.append(
                (rng.choice([-1.0, 1.0], size=s) * 10 ** rng.uniform(2, 4, size=s)).astype(dtype)
            )
    node = case.make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            y = node.forward(*xs)
            grads = node.vjp(np.ones_like(y), y, *xs)
    assert np.all(np.isfinite(y))
    for gr in grads:
        assert np.all(np.isfinite(gr))


def test_sigmoid_is_exact_in_both_tails() -> None:
    x = np.array([-745.0, -40.0, -1e4, 0.0, 40.0, 1e4])
    y = N.stable_sigmoid(x)
    assert y[3] == 0.5
    assert y[1] == pytest.approx(np.exp(-40.0), rel=1e-15)
    assert y[2] == 0.0 and y[5] == 1.0
    assert np.all((y >= 0) & (y <= 1))


def test_bce_matches_log_sigmoid_form_far_in_the_tail() -> None:
    z = np.array([[-800.0, 800.0, 30.0]])
    t = np.array([[1.0, 0.0, 1.0]])
    loss = N.SigmoidBCE().forward(z, t)
    assert loss[0] == pytest.approx(800.0 + 800.0 + np.log1p(np.exp(-30.0)), rel=1e-15)


def test_gradcheck_reports_a_wrong_vjp() -> None:
    class BadSquare(N.Node):
        formula = "y = x^2"

        def forward(self, *xs: Array) -> Array:
            return xs[0] ** 2

        def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
            return (g * xs[0],)  # missing the factor 2

    x = np.random.default_rng(0).standard_normal((2, 3))
    with pytest.raises(mg.GradcheckError) as err:
        mg.gradcheck(BadSquare(), x)
    msg = str(err.value)
    assert "BadSquare" in msg and "input 0 'x'" in msg
    assert "analytic" in msg and "numeric" in msg and "relative error" in msg


def test_gradcheck_reports_a_vjp_with_the_wrong_shape() -> None:
    class BadShape(N.Node):
        def forward(self, *xs: Array) -> Array:
            return xs[0] * 2

        def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
            return (g.sum(axis=0),)

    with pytest.raises(mg.NodeContractError, match="input 0 'x'"):
        mg.gradcheck(BadShape(), np.ones((2, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_is_finite_for_every_finite_logit(dtype: type) -> None:
    big = float(np.finfo(dtype).max) * 0.9
    z = np.array([[big, -big, 0.0], [-big, -big, big], [1.0, 2.0, 3.0]], dtype=dtype)
    t = np.array([[0, 1, 0], [0.5, 0, 0.5], [0, 0, 1]], dtype=dtype)
    node = N.SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = node.forward(z, t)
        grads = node.vjp(np.ones_like(y), y, z, t)
    assert np.all(np.isfinite(y)) and all(np.all(np.isfinite(g)) for g in grads)
    # a wrong class with probability 0 costs a huge (finite) loss; the gradient is exact
    assert y[0] > 1e37
    np.testing.assert_allclose(grads[0][:2], [[1, -1, 0], [-0.5, 0, 0.5]], atol=1e-6)
    # ordinary logits are unchanged by the stabilisation
    ref = -np.log(np.exp(3.0) / np.exp([1.0, 2.0, 3.0]).sum())
    assert y[2] == pytest.approx(ref, rel=1e-6)


def test_gradcheck_next_to_a_kink_says_so() -> None:
    x = np.array([[1e-4, -0.5, 1.0], [0.7, -0.2, 0.3]])
    with pytest.raises(GradcheckError) as info:
        mg.gradcheck_node(N.ReLU(), x)
    msg = str(info.value)
    assert "has 1 value(s) within 0.002 of the kink of ReLU at 0" in msg
    assert "straddle" in msg
    mg.gradcheck_node(N.ReLU(), np.where(np.abs(x) < 0.01, 0.5, x))  # away from it: passes


def test_gradcheck_of_a_cell_with_a_kinked_node_names_it() -> None:
    b = mg.CellBuilder("kinked")
    x = b.input("x", 2)
    W = b.param("W", (2, 2), init=mg.init.uniform(0.5))
    r = mg.relu(x @ W, name="r")
    b.loss(mg.l2_loss(r, x, name="loss"))
    cell = b.build()
    W0 = np.eye(2)
    xs = np.array([[[1e-5, 1.0]], [[0.5, -1.0]]])  # (T=2, B=1, 2): a value at the kink
    with pytest.raises(GradcheckError, match=r"hint: node\(s\) 'r' \(ReLU\) have kinks"):
        mg.gradcheck(cell, {"W": W0}, {"x": xs})
