"""Optimised plans agree with the plain plan for every cell in models/.

The plain plan (``passes=()``) runs one instruction per node and step, with
the straightforward accumulate-into-zeros backward. Every graph pass is a
rewrite that must not change the numbers beyond rounding: forward, loss and
every gradient agree to 1e-12 (float64), with all passes on and with each one
switched off in turn, on an L2 head, on a sigmoid read-out with a padding
mask, and with two layers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import minigrad as mg
from minigrad import CellBuilder, Ref, init
from minigrad.passes import (
    BY_NAME,
    classify,
    fuse_siblings,
    merge_matmuls,
    rewrite,
    without,
)
from minigrad.types import Array
from models.cells import CELLS, stack

CELL_NAMES = sorted({frag: name for name, frag in CELLS.items()}.values())
"""Every registered cell, one name per fragment (``gru`` is ``gru_chung``)."""
D, H, K = 3, 5, 4


def l2_cell(name: str, layers: int = 1) -> mg.Cell:
    b = CellBuilder(f"{name}_l2")
    x = b.input("x", D)
    y = b.input("y", H)
    hs = stack(b, x, name, D, H, layers)
    b.output("h", hs[-1])
    b.loss(mg.l2_loss(hs[-1], y, name="l2"))
    return b.build()


def readout_cell(name: str) -> mg.Cell:
    b = CellBuilder(f"{name}_music")
    x = b.input("x", K)
    t = b.input("t", K)
    (h,) = stack(b, x, name, K, H, 1)
    V = b.param("V_out", (H, K), init=init.uniform(0.3))
    c = b.param("c_out", K, init=init.uniform(0.3))
    b.output("logits", mg.affine(h, V, c, name="logits"))
    b.loss(mg.sigmoid_bce("logits", t, name="nll"))
    return b.build()


def _data(cell: mg.Cell, T: int, B: int, seed: int) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in cell.inputs.items():
        shape = (T, B, *(int(d) for d in spec.shape[1:]))
        out[name] = (rng.uniform(size=shape) > 0.6).astype(float) if name == "t" else rng.standard_normal(shape)
    return out


def _run(cell: mg.Cell, passes: tuple[str, ...] | None, params: dict[str, Array],
         inputs: dict[str, Array], mask: Array | None) -> tuple[float, dict[str, Array], dict[str, Array]]:
    T = next(iter(inputs.values())).shape[0]
    plan = mg.plan_of(cell, T, passes=passes)
    run = plan.forward(params, inputs, mask=mask)
    rng = np.random.default_rng(7)
    outer = {o: rng.standard_normal(a.shape) for o, a in run.outputs.items()}
    grads = plan.backward(run, grad_outputs=outer).flat()
    return run.loss, run.outputs, grads


def _assert_same(a: tuple[float, dict[str, Array], dict[str, Array]],
                 b: tuple[float, dict[str, Array], dict[str, Array]], what: str) -> None:
    assert a[0] == pytest.approx(b[0], rel=1e-12, abs=1e-12), what
    for k in a[1]:
        np.testing.assert_allclose(a[1][k], b[1][k], rtol=1e-12, atol=1e-12, err_msg=f"{what}: output {k}")
    assert set(a[2]) == set(b[2])
    for k in a[2]:
        np.testing.assert_allclose(a[2][k], b[2][k], rtol=1e-12, atol=1e-12, err_msg=f"{what}: gradient {k}")


SETTINGS = [(n, "l2", 1) for n in CELL_NAMES] + [(n, "readout", 1) for n in CELL_NAMES] + [
    (n, "l2", 2) for n in ("gru_chung", "lstm")
]


@pytest.mark.parametrize(("name", "head", "layers"), SETTINGS)
def test_optimised_plan_matches_plain_plan(name: str, head: str, layers: int) -> None:
    cell = l2_cell(name, layers) if head == "l2" else readout_cell(name)
    params = cell.init_params(3)
    T, B = 6, 3
    inputs = _data(cell, T, B, 1)
    mask = None
    if head == "readout":
        mask = np.ones((T, B))
        mask[4:, 1] = 0
        mask[2:, 2] = 0
    plain = _run(cell, (), params, inputs, mask)
    _assert_same(_run(cell, None, params, inputs, mask), plain, f"{name}: all passes")
    for left_out in mg.ALL_PASSES:
        passes = without(left_out)  # and the passes that require it
        _assert_same(_run(cell, passes, params, inputs, mask), plain, f"{name}: without {left_out}")
    for only in mg.ALL_PASSES:
        # on alone, with what it requires
        alone = (*BY_NAME[only].requires, only)
        _assert_same(_run(cell, alone, params, inputs, mask), plain, f"{name}: only {only}")


def test_truncated_plans_agree() -> None:
    cell = l2_cell("gru_chung")
    params = cell.init_params(0)
    inputs = _data(cell, 9, 2, 4)
    a = mg.plan_of(cell, 9, truncate=4).loss_and_grads(params, inputs)
    b = mg.plan_of(cell, 9, truncate=4, passes=()).loss_and_grads(params, inputs)
    for k, v in a[1].flat().items():
        np.testing.assert_allclose(v, b[1].flat()[k], rtol=1e-12, atol=1e-13)


def test_gru_rewrites_into_the_hand_fused_shape() -> None:
    """One GEMM for the three input projections with the biases folded in, one for both
    recurrent sigmoid gates, one Add and one sigmoid for z and r together (a NegSigmoid
    of negated pre-activations)."""
    cell = rewrite(l2_cell("gru_chung"), mg.DEFAULT_PASSES)
    phase = classify(cell)
    ops = {n: s for n, s in cell.ops.items() if type(s.op) is not mg.Slice}
    gemms = [n for n, s in ops.items() if type(s.op) in (mg.MatMul, mg.Affine)]
    assert sorted(phase[n] for n in gemms) == ["pre", "rec", "rec"]
    (pre,) = [n for n in gemms if phase[n] == "pre"]
    assert type(cell.ops[pre].op) is mg.Affine
    gates = [n for n in ops if type(ops[n].op) in (mg.Sigmoid, mg.NegSigmoid)]
    assert [(phase[n], type(ops[n].op).__name__) for n in gates] == [("rec", "NegSigmoid")]
    assert cell.spec_shape(gates[0]) == ("B", 2 * H)


def test_merge_matmuls_keeps_names_and_parameters() -> None:
    cell = l2_cell("gru_chung")
    merged = merge_matmuls(cell)
    assert set(merged.params) == set(cell.params)
    assert set(cell.ops) <= set(merged.ops)
    assert fuse_siblings(merged).params.keys() == cell.params.keys()


def test_unknown_pass_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown pass"):
        mg.plan_of(l2_cell("tanh"), 3, passes=("no_such_pass",))


def test_every_cell_is_covered() -> None:
    assert {c for c in CELLS if c != "gru"} == set(CELL_NAMES)


def _one_state_cell(name: str, body: Callable[[CellBuilder, Ref, Ref], Ref]) -> mg.Cell:
    """A cell with input x (D), state h (H), ``h_next = body(b, x, h)`` and an L2 loss."""
    b = CellBuilder(name)
    x = b.input("x", D)
    y = b.input("y", H)
    h = b.state("h", H)
    h_next = body(b, x, h)
    b.update("h", h_next)
    b.output("h", h_next)
    b.loss(mg.l2_loss(h_next, y, name="l2"))
    return b.build()


def _pre(b: CellBuilder, x: Ref, h: Ref, w: str, u: str) -> Ref:
    W = b.param(w, (D, H), init=init.uniform(0.5))
    U = b.param(u, (H, H), init=init.uniform(0.5))
    return mg.add(mg.matmul(x, W), mg.matmul(h, U))


def test_chained_factors_shared_by_two_readers_stay_intact() -> None:
    """A sigmoid read by two products hands its Jacobian to both: the chain products
    may overwrite a factor only where no other reader needs it."""

    def body(b: CellBuilder, x: Ref, h: Ref) -> Ref:
        s = mg.sigmoid(_pre(b, x, h, "W", "U"), name="s")
        t = mg.tanh(_pre(b, x, h, "V", "R"), name="t")
        return mg.add(mg.mul(s, t, name="a"), mg.mul(s, h, name="c"), name="h_next")

    cell = _one_state_cell("shared_gate", body)
    params = cell.init_params(0)
    inputs = _data(cell, 6, 3, 1)
    plain = _run(cell, (), params, inputs, None)
    assert min(float(np.abs(g).max()) for g in plain[2].values()) > 1e-3
    _assert_same(_run(cell, None, params, inputs, None), plain, "shared sigmoid")


def _assert_no_bit_changes_without(
    cell: mg.Cell, left_out: str, params: dict[str, Array], inputs: dict[str, Array]
) -> None:
    """Loss and every gradient are the same to the bit with and without one pass."""
    T = next(iter(inputs.values())).shape[0]
    loss_a, ga = mg.plan_of(cell, T).loss_and_grads(params, inputs)
    loss_b, gb = mg.plan_of(cell, T, passes=without(left_out)).loss_and_grads(params, inputs)
    assert loss_a == loss_b
    for k, v in ga.flat().items():
        assert np.array_equal(v, gb.flat()[k]), k


@pytest.mark.parametrize("model", ["GRU", "LSTM", "MGU"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_negated_sigmoid_inputs_change_no_bit(model: str, dtype: type) -> None:
    """Negating weight columns and a sum is exact in IEEE arithmetic, and so is
    1 / (1 + exp(-p)) computed as 1 / (1 + exp(u)) with u = -p: the pass changes
    no bit of the loss or of any gradient."""
    import models

    m = getattr(models, model)(input_size=4, hidden_size=6, dtype=dtype, seed=0)
    rewritten = rewrite(m.cell, mg.DEFAULT_PASSES)
    assert any(type(s.op) is mg.NegSigmoid for s in rewritten.ops.values())
    assert not any(type(s.op) is mg.Sigmoid for s in rewritten.ops.values())
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((9, 5, 4)).astype(dtype),
              "y": rng.standard_normal((9, 5, 6)).astype(dtype)}
    _assert_no_bit_changes_without(m.cell, "negate_sigmoid_inputs", m.params, inputs)


def test_negation_stops_where_another_reader_sees_the_value() -> None:
    """A pre-activation that a tanh reads too keeps its sign: the sigmoid stays."""

    def body(b: CellBuilder, x: Ref, h: Ref) -> Ref:
        pre = _pre(b, x, h, "W", "U")
        return mg.mul(mg.sigmoid(pre, name="s"), mg.tanh(pre, name="t"), name="h_next")

    cell = _one_state_cell("visible_gate", body)
    assert type(rewrite(cell, mg.DEFAULT_PASSES).ops["s"].op) is mg.Sigmoid


def test_bound_calls_take_typed_constants() -> None:
    """Python numbers in the bound ufunc calls become 0-d arrays of the cell's dtype
    (numpy would convert them again on every call)."""
    import models

    m = models.GRU(input_size=3, hidden_size=4, dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    m.loss_and_grads(rng.standard_normal((4, 2, 3)).astype(np.float32),
                     rng.standard_normal((4, 2, 4)).astype(np.float32))
    ws = next(iter(m._plan(4)._runners.values()))
    consts = [a for fn, args in ws.fwd if isinstance(fn, np.ufunc) for a in args
              if not isinstance(a, np.ndarray) or a.ndim == 0]
    assert consts and all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in consts)


def test_negation_of_some_columns_of_one_weight() -> None:
    """A sigmoid and a tanh read column blocks of one product x W: only W's sigmoid
    columns are negated (a parameter-only Slice / Scale / Concat), bit for bit."""

    def body(b: CellBuilder, x: Ref, h: Ref) -> Ref:
        W = b.param("W", (D, 2 * H), init=init.uniform(0.5))
        U = b.param("U", (H, H), init=init.uniform(0.5))
        both = mg.matmul(x, W, name="xW")
        gate = mg.sigmoid(mg.add(mg.slice_(both, 0, H), mg.matmul(h, U)), name="s")
        cand = mg.tanh(mg.slice_(both, H, 2 * H), name="t")
        return mg.gru_update(gate, h, cand, name="h_next")

    cell = _one_state_cell("one_weight", body)
    rewritten = rewrite(cell, mg.DEFAULT_PASSES)
    assert type(rewritten.ops["s"].op) is mg.NegSigmoid
    assert "neg[W][0:5]" in rewritten.ops
    params = cell.init_params(0)
    inputs = _data(cell, 6, 3, 2)
    _assert_no_bit_changes_without(cell, "negate_sigmoid_inputs", params, inputs)


def _sigmoid_cell(name: str, width: int, gate: Callable[[CellBuilder, Ref], Ref]) -> mg.Cell:
    """Input x (2), target y (``width``), ``s = gate(b, x)`` as output and an L2 loss."""
    b = CellBuilder(name)
    x = b.input("x", 2)
    y = b.input("y", width)
    s = gate(b, x)
    b.output("s", s)
    b.loss(mg.l2_loss(s, y, name="l2"))
    return b.build()


def _random_params(cell: mg.Cell, seed: int) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape) for k, v in cell.init_params(0).items()}


def _sigmoid(z: Array) -> Array:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _check_sigmoid_cell(cell: mg.Cell, expected: Callable[[dict[str, Array], Array], Array]) -> None:
    """The rewrite fires, and the forward values and every gradient agree with the
    plain plan, bit for bit, and the forward values with ``expected(params, x)``."""
    assert any(type(s.op) is mg.NegSigmoid for s in rewrite(cell, mg.DEFAULT_PASSES).ops.values())
    params = _random_params(cell, 0)
    rng = np.random.default_rng(1)
    T, B = 2, 3
    inputs = {"x": rng.standard_normal((T, B, 2)), "y": rng.standard_normal((T, B, cell.inputs["y"].shape[-1]))}
    plain = _run(cell, (), params, inputs, None)
    np.testing.assert_allclose(plain[1]["s"], expected(params, inputs["x"]), rtol=1e-12)
    _assert_same(_run(cell, None, params, inputs, None), plain, cell.name)
    _assert_same(_run(cell, ("negate_sigmoid_inputs",), params, inputs, None), plain, cell.name)
    _assert_no_bit_changes_without(cell, "negate_sigmoid_inputs", params, inputs)


def test_negation_of_two_column_blocks_of_one_product_in_one_sum() -> None:
    """sigmoid(m[:, 0:3] + m[:, 3:6]) with m = x W: both blocks ask for W, so W's
    two column ranges are negated together (once, not the last request only)."""

    def gate(b: CellBuilder, x: Ref) -> Ref:
        m = mg.matmul(x, b.param("W", (2, 6)), name="m")
        return mg.sigmoid(mg.add(mg.slice_(m, 0, 3), mg.slice_(m, 3, 6)), name="s")

    def expected(p: dict[str, Array], x: Array) -> Array:
        m = x @ p["W"]
        return _sigmoid(m[..., 0:3] + m[..., 3:6])

    _check_sigmoid_cell(_sigmoid_cell("two_blocks", 3, gate), expected)


def test_negation_of_one_product_added_to_itself_after_merge_matmuls() -> None:
    """sigmoid(x W + x W): merge_matmuls makes one x [W|W] read through two slices,
    so both halves of the concatenated weight must be negated."""

    def gate(b: CellBuilder, x: Ref) -> Ref:
        W = b.param("W", (2, 3))
        return mg.sigmoid(mg.add(mg.matmul(x, W), mg.matmul(x, W)), name="s")

    def expected(p: dict[str, Array], x: Array) -> Array:
        return _sigmoid(x @ p["W"] + x @ p["W"])

    _check_sigmoid_cell(_sigmoid_cell("twice", 3, gate), expected)


def test_negation_of_two_column_blocks_around_a_block_another_reader_sees() -> None:
    """sigmoid(m[:, 0:2] + m[:, 4:6]) while a tanh reads m[:, 2:4]: W's columns 0:2
    and 4:6 are negated, its middle columns are not."""

    def gate(b: CellBuilder, x: Ref) -> Ref:
        m = mg.matmul(x, b.param("W", (2, 6)), name="m")
        s = mg.sigmoid(mg.add(mg.slice_(m, 0, 2), mg.slice_(m, 4, 6)), name="sg")
        return mg.concat(s, mg.tanh(mg.slice_(m, 2, 4)), name="s")

    def expected(p: dict[str, Array], x: Array) -> Array:
        m = x @ p["W"]
        return np.concatenate([_sigmoid(m[..., 0:2] + m[..., 4:6]), np.tanh(m[..., 2:4])], axis=-1)

    cell = _sigmoid_cell("gap", 4, gate)
    assert "neg[W][0:2,4:6]" in rewrite(cell, mg.DEFAULT_PASSES).ops
    _check_sigmoid_cell(cell, expected)


def test_negation_requests_for_one_slot_compose_or_are_refused() -> None:
    """Requests for one input slot are joined when their columns are disjoint, and
    refused when two of them negate the same column (they would cancel out)."""
    from minigrad.passes.negate_sigmoid_inputs import _compose

    assert _compose([("m", 1, "W", 3, 6), ("m", 1, "W", 0, 3), ("n", 0, "W", 0, 2)]) == {
        ("m", 1): ("W", ((0, 6),)),
        ("n", 0): ("W", ((0, 2),)),
    }
    assert _compose([("m", 1, "W", 0, 2), ("m", 1, "W", 4, 6)]) == {("m", 1): ("W", ((0, 2), (4, 6)))}
    assert _compose([("m", 1, "W", 0, 3), ("m", 1, "W", 2, 6)]) is None
    assert _compose([("m", 1, "W", 0, 3), ("m", 1, "W", 0, 3)]) is None
