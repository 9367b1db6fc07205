"""Regression tests for wrong results found by a differential test of random cells.

Each case is the smallest cell that showed the defect; each is compared with
the plain plan (``passes=()``) and with central finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad.types import Array


def _slice_add_cell() -> mg.Cell:
    """An Add reads a slice of a product that a loss also reads whole."""
    b = mg.CellBuilder("slice_add")
    x, y1, y2 = b.input("x", 2), b.input("y1", 3), b.input("y2", 2)
    W, U = b.param("W", (2, 3)), b.param("U", (2, 2))
    v = mg.matmul(x, W, name="v")
    s = mg.add(mg.slice_(v, 0, 2, name="a"), mg.matmul(x, U, name="u"), name="s")
    b.loss(mg.l2_loss(s, y2, name="l_s"))
    b.loss(mg.l2_loss(v, y1, name="l_v"))
    return b.build()


def _held_state_cell() -> mg.Cell:
    """A state whose update does not read the state; a padded step carries it."""
    b = mg.CellBuilder("held_state")
    x, y = b.input("x", 2), b.input("y", 2)
    s = b.state("s", 2)
    W = b.param("W", (2, 2))
    b.update(s, mg.tanh(mg.matmul(x, W, name="xw"), name="nxt"))
    b.loss(mg.l2_loss(mg.matmul(s, W, name="sw"), y, name="l"))
    return b.build()


def _loss(cell: mg.Cell, params: dict[str, Array], inputs: dict[str, Array],
          states: dict[str, Array], mask: Array | None) -> float:
    return mg.plan_of(cell, next(iter(inputs.values())).shape[0], passes=()).forward(
        params, inputs, states, mask
    ).loss


def _numeric(f: object, arr: Array, eps: float = 1e-6) -> Array:
    out = np.zeros_like(arr)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + eps
        hi = f()  # type: ignore[operator]
        arr[i] = old - eps
        lo = f()  # type: ignore[operator]
        arr[i] = old
        out[i] = (hi - lo) / (2 * eps)
    return out


@pytest.mark.parametrize("T", [1, 2])
def test_add_of_a_shared_slice_gets_only_its_own_gradient(T: int) -> None:
    cell = _slice_add_cell()
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(2, 3)), "U": rng.normal(size=(2, 2))}
    inputs = {
        "x": rng.normal(size=(T, 1, 2)),
        "y1": rng.normal(size=(T, 1, 3)),
        "y2": rng.normal(size=(T, 1, 2)),
    }
    plans = {p: mg.plan_of(cell, T, passes=p) for p in (None, ())}
    grads = {p: plan.backward(plan.forward(params, inputs)) for p, plan in plans.items()}
    for name in ("W", "U"):
        num = _numeric(lambda: _loss(cell, params, inputs, {}, None), params[name])
        np.testing.assert_allclose(grads[()].params[name], num, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(grads[None].params[name], grads[()].params[name],
                                   rtol=1e-12, atol=1e-14)
    assert mg.gradcheck(cell, params, inputs).checks > 0  # raises GradcheckError if wrong


@pytest.mark.parametrize("wrt", [None, ["s"], ["s", "W"]])
@pytest.mark.parametrize("passes", [None, ()])
@pytest.mark.parametrize("mask", [[[0], [1]], [[1], [0]], [[0], [0]]])
def test_initial_state_carried_over_padding_gets_its_gradient(
    wrt: list[str] | None, passes: tuple[str, ...] | None, mask: list[list[int]]
) -> None:
    cell = _held_state_cell()
    rng = np.random.default_rng(1)
    params = {"W": rng.normal(size=(2, 2))}
    inputs = {"x": rng.normal(size=(2, 1, 2)), "y": rng.normal(size=(2, 1, 2))}
    s0 = rng.normal(size=(1, 2))
    m = np.array(mask, dtype=np.float64)
    plan = mg.plan_of(cell, 2, wrt=wrt, passes=passes)
    got = plan.backward(plan.forward(params, inputs, {"s": s0}, m)).states["s"]
    num = _numeric(lambda: _loss(cell, params, inputs, {"s": s0}, m), s0)
    np.testing.assert_allclose(got, num, rtol=1e-6, atol=1e-9)
    if m[0, 0] == 0 and m[1, 0] == 1:
        assert np.abs(got).max() > 1e-3  # the padded first step carries s0 to the loss


@pytest.mark.parametrize("mode", ["loop", "unrolled"])
def test_non_finite_inputs_and_states_are_refused_by_name_and_step(mode: str) -> None:
    cell = _held_state_cell()
    prog = mg.compile(cell, mode=mode)
    params = cell.init_params(0)
    x = np.zeros((4, 1, 2))
    x[2, 0, 1] = np.nan  # on a padded step: it would still poison the result
    mask = np.array([[1], [1], [0], [0]])
    with pytest.raises(mg.NonFiniteError, match=r"input 'x' .* at step 2"):
        prog.forward(params, {"x": x, "y": np.zeros((4, 1, 2))}, mask=mask)
    with pytest.raises(mg.NonFiniteError, match="initial state 's'"):
        prog.forward(params, {"x": np.zeros((4, 1, 2)), "y": np.zeros((4, 1, 2))},
                     {"s": np.full((1, 2), np.inf)})


def _unread_state_cell() -> mg.Cell:
    """A state that nothing reads, and a parameter that only an output reads."""
    b = mg.CellBuilder("unread_state")
    x, y = b.input("x", 2), b.input("y", 2)
    s = b.state("s", 2)
    W, V = b.param("W", (2, 2)), b.param("V", (2, 2))
    b.update(s, mg.tanh(mg.matmul(x, W, name="xw"), name="nxt"))
    b.output("o", mg.matmul(x, V, name="xv"))
    b.loss(mg.l2_loss(mg.matmul(x, W, name="xw2"), y, name="l"))
    return b.build()


@pytest.mark.parametrize("mode", ["loop", "unrolled"])
@pytest.mark.parametrize("passes", [None, ()])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("wrt", [["s"], ["V"], ["s", "V"]])
def test_a_wrt_that_no_gradient_reaches_gets_zeros(
    mode: str, passes: tuple[str, ...] | None, masked: bool, wrt: list[str]
) -> None:
    # no backward instruction at all: binding once failed on its empty list of calls
    cell = _unread_state_cell()
    rng = np.random.default_rng(2)
    T = 3
    params = {"W": rng.normal(size=(2, 2)), "V": rng.normal(size=(2, 2))}
    inputs = {"x": rng.normal(size=(T, 2, 2)), "y": rng.normal(size=(T, 2, 2))}
    s0 = {"s": rng.normal(size=(2, 2))}
    mask = np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float64) if masked else None
    prog = mg.compile(cell, wrt=wrt, passes=passes, mode=mode)
    run = prog.forward(params, inputs, s0, mask)
    grads = prog.backward(run)
    flat = grads.flat()
    assert sorted(flat) == sorted(n + "0" if n == "s" else n for n in wrt)
    for g in flat.values():
        assert not g.any()
    # with a gradient for the output, V's gradient is x^T go summed over steps and rows
    go = rng.normal(size=(T, 2, 2))
    got = prog.backward(prog.forward(params, inputs, s0, mask), grad_outputs={"o": go})
    if "V" in wrt:
        m = np.ones((T, 2)) if mask is None else mask
        want = np.einsum("tbi,tbj->ij", inputs["x"], go * m[..., None])
        np.testing.assert_allclose(got.params["V"], want, rtol=1e-12, atol=1e-14)
    if "s" in wrt:
        assert not got.states["s"].any()


def _chain_cell() -> mg.Cell:
    """s1 reaches the loss only through s0: two steps from s1's update to a loss."""
    b = mg.CellBuilder("state_chain")
    x, y = b.input("x", 2), b.input("y", 2)
    s0, s1 = b.state("s0", 2), b.state("s1", 3)
    W, U, V = b.param("W", (2, 2)), b.param("U", (3, 2)), b.param("V", (5, 3))
    b.update(s1, mg.tanh(mg.matmul(mg.concat(x, s1, name="xs"), V, name="xv"), name="n1"))
    a0 = mg.add(mg.matmul(s1, U, name="su"), mg.matmul(x, W, name="xw"), name="a0")
    b.update(s0, mg.tanh(a0, name="n0"))
    b.loss(mg.l2_loss(s0, y, name="l"))
    return b.build()


def _swap_cell() -> mg.Cell:
    """Two states that feed each other and not themselves: a gradient from one initial
    state runs through every other step of each."""
    b = mg.CellBuilder("state_swap")
    x, y = b.input("x", 2), b.input("y", 2)
    s0, s1 = b.state("s0", 2), b.state("s1", 2)
    W = b.param("W", (2, 2))
    b.update(s0, mg.tanh(mg.matmul(s1, W, name="a"), name="n0"))
    b.update(s1, mg.tanh(mg.add(s0, x, name="b"), name="n1"))
    b.loss(mg.l2_loss(s0, y, name="l"))
    return b.build()


@pytest.mark.parametrize(
    ("make", "wrt", "truncate", "T"),
    [
        (_chain_cell, None, 5, 5),  # the template step is the second last of its unroll
        (_chain_cell, None, 3, 8),
        (_chain_cell, ["s1"], None, 6),
        (_swap_cell, ["s0"], None, 6),
        (_swap_cell, ["s1"], None, 5),  # relevant at no single step of a 3-step unroll
        (_swap_cell, ["s1", "W"], 4, 9),
    ],
)
@pytest.mark.parametrize("passes", [None, ()])
def test_loop_program_differentiates_every_step_a_longer_unroll_needs(
    make: object, wrt: list[str] | None, truncate: int | None, T: int,
    passes: tuple[str, ...] | None,
) -> None:
    cell = make()  # type: ignore[operator]
    rng = np.random.default_rng(3)
    params = {n: rng.normal(size=p.shape) for n, p in cell.params.items()}
    inputs = {"x": rng.normal(size=(T, 2, 2)), "y": rng.normal(size=(T, 2, 2))}
    states = {n: rng.normal(size=(2, s.shape[-1])) for n, s in cell.states.items()}
    res = {}
    for mode in ("loop", "unrolled"):
        prog = mg.compile(cell, wrt=wrt, truncate=truncate, passes=passes, mode=mode)
        res[mode] = prog.backward(prog.forward(params, inputs, states)).flat()
    assert sorted(res["loop"]) == sorted(res["unrolled"])
    for name, want in res["unrolled"].items():
        np.testing.assert_allclose(res["loop"][name], want, rtol=1e-12, atol=1e-14)
    if truncate is None:
        for name in wrt or ():
            if name in cell.states:
                num = _numeric(lambda: _loss(cell, params, inputs, states, None), states[name])
                np.testing.assert_allclose(res["loop"][name + "0"], num, rtol=1e-6, atol=1e-8)
                assert np.abs(num).max() > 1e-3



def _output_of_input_cell(whole: bool) -> mg.Cell:
    """An output that is an input, or a slice of one (bound as a view of the input)."""
    b = mg.CellBuilder("output_of_input")
    x, y = b.input("x", 3), b.input("y", 2)
    W = b.param("W", (3, 2))
    b.output("o", x if whole else mg.slice_(x, 1, 3, name="xs"))
    b.loss(mg.l2_loss(mg.matmul(x, W, name="xw"), y, name="l"))
    return b.build()


@pytest.mark.parametrize("whole", [False, True])
@pytest.mark.parametrize("mode", ["loop", "unrolled"])
@pytest.mark.parametrize("passes", [None, ()])
def test_output_gradient_given_for_an_input_not_in_wrt(
    whole: bool, mode: str, passes: tuple[str, ...] | None
) -> None:
    # the input's gradient was a read-only zero view, and the output's seed wrote into it
    cell = _output_of_input_cell(whole)
    rng = np.random.default_rng(4)
    T = 5
    params = {"W": rng.normal(size=(3, 2))}
    inputs = {"x": rng.normal(size=(T, 2, 3)), "y": rng.normal(size=(T, 2, 2))}
    go = {"o": rng.normal(size=(T, 2, 3 if whole else 2))}
    prog = mg.compile(cell, wrt=["W"], passes=passes, mode=mode)
    got = prog.backward(prog.forward(params, inputs), grad_outputs=go)
    full = mg.compile(cell, passes=(), mode="unrolled")
    want = full.backward(full.forward(params, inputs), grad_outputs=go)
    assert set(got.flat()) == {"W"}
    np.testing.assert_allclose(got.params["W"], want.params["W"], rtol=1e-12, atol=1e-14)


def test_loop_program_with_merged_weights_shaped_like_a_step_buffer() -> None:
    # merge_matmuls makes [W1, W2] (3, 6); its right Jacobian (6, 3) has the leading
    # sizes (K, B) of a per-step buffer when K = 6 (4 and 5 are taken by V's shape) and
    # B = 3: the template length was chosen from the cell before the passes
    b = mg.CellBuilder("merged_weight")
    x, y = b.input("x", 3), b.input("y", 5)
    h = b.state("h", 3)
    W1, W2, V = b.param("W1", (3, 3)), b.param("W2", (3, 3)), b.param("V", (3, 5))
    ac = mg.add(mg.matmul(h, W1, name="a"), mg.matmul(h, W2, name="c"), name="ac")
    b.update(h, mg.tanh(mg.add(ac, x, name="p"), name="h_next"))
    b.loss(mg.l2_loss(mg.matmul(x, V, name="xv"), y, name="l1"))
    b.loss(mg.l2_loss("h_next", x, name="l2"))
    cell = b.build()
    rng = np.random.default_rng(5)
    T, B = 9, 3
    params = {k: 0.5 * rng.normal(size=v.shape) for k, v in cell.params.items()}
    inputs = {"x": rng.normal(size=(T, B, 3)), "y": rng.normal(size=(T, B, 5))}
    loss, grads = mg.compile(cell).loss_and_grads(params, inputs)
    ref_loss, ref = mg.compile(cell, mode="unrolled").loss_and_grads(params, inputs)
    assert loss == ref_loss
    for name, g in ref.flat().items():
        np.testing.assert_array_equal(grads.flat()[name], g)
