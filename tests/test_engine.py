"""The cell builder, unrolling, plans and BPTT of the core engine."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

import minigrad as mg
from minigrad import CellBuilder, init
from minigrad.types import Array

D, H = 3, 4
GRU_PARAMS = [
    ("Wz", (D, H)),
    ("Wr", (D, H)),
    ("Wca", (D, H)),
    ("Wrecz", (H, H)),
    ("Wrecr", (H, H)),
    ("Wreca", (H, H)),
    ("bz", (H,)),
    ("br", (H,)),
    ("bca", (H,)),
]


def gru_cell(dtype: type = np.float64, d: int = D, h: int = H) -> mg.Cell:
    """A GRU (Chung et al. 2014) composed in the test from the built-in nodes."""
    b = CellBuilder("gru", dtype=dtype)
    x = b.input("x", d)
    y = b.input("y", h)
    hs = b.state("h", h)
    shapes = {
        "Wz": (d, h),
        "Wr": (d, h),
        "Wca": (d, h),
        "Wrecz": (h, h),
        "Wrecr": (h, h),
        "Wreca": (h, h),
        "bz": (h,),
        "br": (h,),
        "bca": (h,),
    }
    P = {n: b.param(n, s, init=init.uniform(0.5)) for n, s in shapes.items()}
    z = mg.sigmoid(x @ P["Wz"] + hs @ P["Wrecz"] + P["bz"], name="z")
    r = mg.sigmoid(x @ P["Wr"] + hs @ P["Wrecr"] + P["br"], name="r")
    c = mg.tanh(x @ P["Wca"] + (r * hs) @ P["Wreca"] + P["bca"], name="c")
    h_next = mg.gru_update(z, hs, c, name="h_next")
    b.update(hs, h_next)
    b.output("h", h_next)
    b.loss(mg.l2_loss(h_next, y, name="l2"))
    return b.build()


def numpy_gru(params: dict[str, Array], x: Array, h0: Array) -> list[Array]:
    """Plain numpy forward, for comparison."""

    def sig(a: Array) -> Array:
        return 1 / (1 + np.exp(-a))

    h = h0
    out = []
    for t in range(x.shape[0]):
        z = sig(x[t] @ params["Wz"] + h @ params["Wrecz"] + params["bz"])
        r = sig(x[t] @ params["Wr"] + h @ params["Wrecr"] + params["br"])
        c = np.tanh(x[t] @ params["Wca"] + (r * h) @ params["Wreca"] + params["bca"])
        h = (1 - z) * h + z * c
        out.append(h)
    return out


def data(T: int, B: int, seed: int = 1, dtype: type = np.float64) -> tuple[Array, Array, Array]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((T, B, D)).astype(dtype),
        rng.standard_normal((T, B, H)).astype(dtype),
        rng.standard_normal((B, H)).astype(dtype),
    )


# ---------------------------------------------------------------------------
# building


def test_cell_is_a_networkx_graph_with_typed_nodes() -> None:
    cell = gru_cell()
    assert isinstance(cell.graph, nx.DiGraph)
    assert isinstance(cell.graph.nodes["z"]["op"], mg.Sigmoid)
    assert cell.graph.nodes["Wz"]["kind"] == "param"
    assert cell.graph.nodes["h"]["kind"] == "state"
    assert cell.states["h"].update == "h_next"
    assert nx.is_directed_acyclic_graph(cell.graph)


def test_unknown_input_is_rejected_with_its_name() -> None:
    b = CellBuilder("bad")
    x = b.input("x", 3)
    b.param("W", (3, 4))
    b.node("y", mg.MatMul(), x, "Wx")
    b.output("y")
    with pytest.raises(
        mg.GraphError, match=r"node 'y' \(MatMul\) input 1 'w' refers to 'Wx'.*did you mean.*'W'"
    ):
        b.build()


def test_shape_mismatch_is_rejected_naming_node_and_shapes() -> None:
    b = CellBuilder("bad")
    x = b.input("x", 3)
    w = b.param("W", (5, 4))
    b.node("proj", mg.MatMul(), x, w)
    b.output("proj")
    with pytest.raises(mg.ShapeError) as err:
        b.build()
    msg = str(err.value)
    assert "cell 'bad'" in msg and "node 'proj' (MatMul)" in msg
    assert "a='x' (B, 3)" in msg and "w='W' (5, 4)" in msg


def test_algebraic_loop_is_rejected_naming_the_nodes_on_it() -> None:
    b = CellBuilder("loop")
    x = b.input("x", 2)
    b.node("a", mg.Add(), x, "c")
    b.node("b", mg.Tanh(), "a")
    b.node("c", mg.Sigmoid(), "b")
    b.output("c")
    with pytest.raises(mg.GraphError, match="algebraic loop") as err:
        b.build()
    msg = str(err.value)
    for n in ("a", "b", "c"):
        assert f"{n} ->" in msg or f"-> {n}" in msg


def test_a_state_breaks_a_loop() -> None:
    b = CellBuilder("ok")
    x = b.input("x", 2)
    h = b.state("h", 2)
    b.node("a", mg.Add(), x, h)
    b.node("b", mg.Tanh(), "a")
    b.update(h, "b")
    b.output("b")
    b.build()


def test_parameter_of_the_wrong_dtype_is_rejected() -> None:
    b = CellBuilder("mixed", dtype=np.float64)
    x = b.input("x", 3)
    w = b.param("W", (3, 4), dtype=np.float32)
    b.node("proj", mg.MatMul(), x, w)
    b.output("proj")
    with pytest.raises(mg.DTypeError, match=r"node 'proj'.*float32.*w='W'"):
        b.build()


def test_state_update_of_the_wrong_shape_is_rejected() -> None:
    b = CellBuilder("bad")
    x = b.input("x", 3)
    h = b.state("h", 4)
    b.update(h, x)
    b.output("x2", x)
    with pytest.raises(mg.ShapeError, match=r"state 'h'.*'x'"):
        b.build()


def test_missing_update_and_duplicate_names_are_rejected() -> None:
    b = CellBuilder("bad")
    b.input("x", 3)
    b.state("h", 3)
    b.output("x")
    with pytest.raises(mg.GraphError, match="state 'h' has no update"):
        b.build()
    with pytest.raises(mg.GraphError, match="'x' is already used"):
        b.param("x", 3)


def test_loss_must_be_one_value_per_row() -> None:
    b = CellBuilder("bad")
    x = b.input("x", 3)
    b.loss(mg.tanh(x, name="t"))
    with pytest.raises(mg.ShapeError, match="loss term 't' must have shape"):
        b.build()


# ---------------------------------------------------------------------------
# unrolling


def test_unroll_shares_parameters_and_links_states() -> None:
    cell = gru_cell()
    T = 3
    g = mg.unroll(cell, T)
    per_step = (
        len([n for n in cell.ops if not cell.ops[n].static]) + len(cell.inputs) + len(cell.states)
    )
    assert g.number_of_nodes() == len(cell.params) + T * per_step + len(cell.states)
    # a parameter is one node used by every step
    users = {v[1] for v in g.successors(("Wz", mg.SHARED))}
    assert users == {0, 1, 2}
    # state edges go from step t-1's update to step t's state
    for t in range(1, T + 1):
        assert g.has_edge(("h_next", t - 1), ("h", t))
        assert g.edges[("h_next", t - 1), ("h", t)]["carry"]
    assert nx.is_directed_acyclic_graph(g)


# ---------------------------------------------------------------------------
# forward and backward


@pytest.mark.parametrize("T", [1, 2, 20])
def test_composed_gru_matches_finite_differences(T: int) -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    x, y, h0 = data(T, 2)
    result = mg.gradcheck(cell, params, {"x": x, "y": y}, {"h": h0})
    assert result.max_rel_error < 1e-7


def test_forward_matches_plain_numpy() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    x, y, h0 = data(6, 3)
    run = mg.plan_of(cell, 6).forward(params, {"x": x, "y": y}, {"h": h0})
    ref = np.stack(numpy_gru(params, x, h0))
    np.testing.assert_allclose(run.outputs["h"], ref, rtol=1e-13, atol=1e-14)
    assert run.loss == pytest.approx(0.5 * float(np.sum((ref - y) ** 2)), rel=1e-13)
    np.testing.assert_array_equal(run.states["h"], run.outputs["h"][-1])


def test_second_backward_returns_identical_fresh_gradients() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    x, y, h0 = data(5, 2)
    plan = mg.plan_of(cell, 5)
    run = plan.forward(params, {"x": x, "y": y}, {"h": h0})
    g1 = plan.backward(run)
    g2 = plan.backward(run)
    for k, v in g1.flat().items():
        np.testing.assert_array_equal(v, g2.flat()[k])
    g1.params["Wz"][...] = 0  # gradients are the caller's arrays
    g3 = plan.backward(run)
    np.testing.assert_array_equal(g3.params["Wz"], g2.params["Wz"])
    # and a fresh forward + backward gives the same numbers again
    _, g4 = plan.loss_and_grads(params, {"x": x, "y": y}, {"h": h0})
    np.testing.assert_array_equal(g4.params["Wrecz"], g2.params["Wrecz"])


def test_ten_thousand_steps_forward_and_backward() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    T = 10_000
    x, y, h0 = data(T, 2)
    plan = mg.compile(cell)  # one compiled step, run 10,000 times
    loss, g = plan.loss_and_grads(params, {"x": x, "y": y}, {"h": h0})
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(v)) for v in g.flat().values())
    _, g2 = plan.loss_and_grads(params, {"x": x, "y": y}, {"h": h0})
    for k, v in g.flat().items():
        np.testing.assert_array_equal(v, g2.flat()[k])
    # the last 30 steps agree with a plain forward
    ref = numpy_gru(
        params, x[-30:], plan.forward(params, {"x": x, "y": y}, {"h": h0}).outputs["h"][-31]
    )
    np.testing.assert_allclose(
        ref[-1], plan.forward(params, {"x": x, "y": y}, {"h": h0}).states["h"], rtol=1e-12
    )


def test_float32_in_gives_float32_out() -> None:
    cell = gru_cell(np.float32)
    params = cell.init_params(0)
    x, y, h0 = data(4, 2, dtype=np.float32)
    plan = mg.plan_of(cell, 4)
    run = plan.forward(params, {"x": x, "y": y}, {"h": h0})
    assert run.outputs["h"].dtype == np.float32
    assert run.states["h"].dtype == np.float32
    for k, v in plan.backward(run).flat().items():
        assert v.dtype == np.float32, k
    # and it agrees with float64 to float32 accuracy
    cell64 = gru_cell(np.float64)
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    run64 = mg.plan_of(cell64, 4).forward(
        p64, {"x": x.astype(np.float64), "y": y.astype(np.float64)}, {"h": h0.astype(np.float64)}
    )
    np.testing.assert_allclose(run.outputs["h"], run64.outputs["h"], rtol=1e-5, atol=1e-6)


def test_runtime_arrays_of_the_wrong_dtype_or_shape_are_refused() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    x, y, _h0 = data(3, 2)
    plan = mg.plan_of(cell, 3)
    with pytest.raises(mg.DTypeError, match="input 'x' is float32, expected float64"):
        plan.forward(params, {"x": x.astype(np.float32), "y": y})
    with pytest.raises(
        mg.ShapeError, match=r"input 'y' has shape \(3, 2, 5\), expected \(3, 2, 4\)"
    ):
        plan.forward(params, {"x": x, "y": np.zeros((3, 2, 5))})
    bad = dict(params)
    del bad["Wz"]
    with pytest.raises(ValueError, match="parameter 'Wz' is missing"):
        plan.forward(bad, {"x": x, "y": y})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['Wq'\]"):
        plan.forward({**params, "Wq": params["Wz"]}, {"x": x, "y": y})
    with pytest.raises(ValueError, match="input 'y' is missing"):
        plan.forward(params, {"x": x})
    with pytest.raises(ValueError, match=r"unknown input\(s\) \['z'\]"):
        plan.forward(params, {"x": x, "y": y, "z": y})
    with pytest.raises(mg.ShapeError, match="initial state 'h'"):
        plan.forward(params, {"x": x, "y": y}, {"h": np.zeros((3, H))})


def test_a_stale_forward_result_is_refused() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    x, y, _ = data(3, 2)
    plan = mg.plan_of(cell, 3)
    first = plan.forward(params, {"x": x, "y": y})
    plan.forward(params, {"x": x * 2, "y": y})
    with pytest.raises(mg.GraphError, match="overwritten"):
        plan.backward(first)


# ---------------------------------------------------------------------------
# masks, truncation, partial gradients, outer gradients


def test_padding_changes_neither_loss_gradients_nor_state() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    lengths = [5, 3, 1]
    T, B = 5, 3
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, D))
    y = rng.standard_normal((T, B, H))
    mask = np.zeros((T, B))
    for b, n in enumerate(lengths):
        mask[:n, b] = 1
    padded = mg.plan_of(cell, T).forward(params, {"x": x, "y": y}, mask=mask)
    gp = mg.plan_of(cell, T).backward(padded)
    # padding with 4 more (garbage) steps changes nothing
    x2 = np.concatenate([x, rng.standard_normal((4, B, D))])
    y2 = np.concatenate([y, rng.standard_normal((4, B, H))])
    mask2 = np.concatenate([mask, np.zeros((4, B))])
    more = mg.plan_of(cell, T + 4).forward(params, {"x": x2, "y": y2}, mask=mask2)
    gm = mg.plan_of(cell, T + 4).backward(more)
    assert more.loss == pytest.approx(padded.loss, rel=1e-14)
    for k in gp.params:
        np.testing.assert_allclose(gm.params[k], gp.params[k], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(gm.inputs["x"][:T], gp.inputs["x"], rtol=1e-13, atol=1e-15)
    assert np.all(gm.inputs["x"][T:] == 0)
    np.testing.assert_allclose(more.states["h"], padded.states["h"], rtol=1e-14)
    # each row equals that sequence run alone
    total = 0.0
    for b, n in enumerate(lengths):
        run = mg.plan_of(cell, n).forward(params, {"x": x[:n, b : b + 1], "y": y[:n, b : b + 1]})
        total += run.loss
        np.testing.assert_allclose(padded.states["h"][b], run.states["h"][0], rtol=1e-13)
        np.testing.assert_allclose(padded.outputs["h"][:n, b], run.outputs["h"][:, 0], rtol=1e-13)
        assert np.all(padded.outputs["h"][n:, b] == 0)
    assert padded.loss == pytest.approx(total, rel=1e-13)


def test_masked_gradients_match_finite_differences() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    x, y, h0 = data(6, 3)
    mask = np.ones((6, 3))
    mask[4:, 0] = 0
    mask[2:, 2] = 0
    assert mg.gradcheck(cell, params, {"x": x, "y": y}, {"h": h0}, mask).max_rel_error < 1e-7


def test_truncation_window_cuts_the_state_adjoint() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    T = 6
    x, y, h0 = data(T, 2)
    k = 3
    loss, gt = mg.plan_of(cell, T, truncate=k).loss_and_grads(params, {"x": x, "y": y}, {"h": h0})
    # the same as two independent windows, the second starting from the first's final state
    p1 = mg.plan_of(cell, k)
    r1 = p1.forward(params, {"x": x[:k], "y": y[:k]}, {"h": h0})
    g1 = p1.backward(r1)
    r2 = p1.forward(params, {"x": x[k:], "y": y[k:]}, {"h": r1.states["h"]})
    g2 = p1.backward(r2)
    assert loss == pytest.approx(r1.loss + r2.loss, rel=1e-14)
    for name in gt.params:
        np.testing.assert_allclose(gt.params[name], g1.params[name] + g2.params[name], rtol=1e-12)
    np.testing.assert_allclose(gt.states["h"], g1.states["h"], rtol=1e-12)
    # and the untruncated gradient differs
    _, full = mg.plan_of(cell, T).loss_and_grads(params, {"x": x, "y": y}, {"h": h0})
    assert not np.allclose(full.states["h"], gt.states["h"])
    g = mg.unroll(cell, T, truncate=k)
    assert g.edges[("h_next", 2), ("h", 3)]["truncated"]


def test_gradients_with_respect_to_a_subset() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    x, y, h0 = data(4, 2)
    plan = mg.plan_of(cell, 4, wrt=["Wz", "bca"])
    _, g = plan.loss_and_grads(params, {"x": x, "y": y}, {"h": h0})
    assert set(g.params) == {"Wz", "bca"} and not g.inputs and not g.states
    _, full = mg.plan_of(cell, 4).loss_and_grads(params, {"x": x, "y": y}, {"h": h0})
    np.testing.assert_allclose(g.params["Wz"], full.params["Wz"], rtol=1e-14)
    with pytest.raises(mg.GraphError, match="cannot differentiate with respect to"):
        mg.plan_of(cell, 4, wrt=["nope"])


def test_outer_gradient_on_outputs() -> None:
    cell = gru_cell()
    params = cell.init_params(0)
    x, y, h0 = data(4, 2)
    plan = mg.plan_of(cell, 4)
    run = plan.forward(params, {"x": x, "y": y}, {"h": h0})
    zero_loss = plan.backward(run, grad_outputs={"h": run.outputs["h"] - y}, loss_scale=0.0)
    from_loss = plan.backward(run)
    for k in from_loss.params:
        np.testing.assert_allclose(zero_loss.params[k], from_loss.params[k], rtol=1e-13)


def test_plan_is_cached_per_steps() -> None:
    cell = gru_cell()
    assert mg.plan_of(cell, 7) is mg.plan_of(cell, 7)
    assert mg.plan_of(cell, 7) is not mg.plan_of(cell, 8)


# ---------------------------------------------------------------------------
# user-defined nodes


class Softsign(mg.Node):
    """y = x / (1 + |x|), a user node added without touching the engine."""

    formula = "y = x / (1 + |x|)"
    derivatives = ("dL/dx = g / (1 + |x|)^2",)

    def forward(self, *xs: Array) -> Array:
        return xs[0] / (1 + np.abs(xs[0]))

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return (g / (1 + np.abs(xs[0])) ** 2,)


def test_a_user_node_works_in_a_cell() -> None:
    assert mg.gradcheck(Softsign(), np.random.default_rng(0).standard_normal((3, 4))).checks
    b = CellBuilder("softsign_rnn")
    x = b.input("x", D)
    y = b.input("y", H)
    h = b.state("h", H)
    W = b.param("W", (D, H), init=init.uniform(0.5))
    U = b.param("U", (H, H), init=init.uniform(0.5))
    hn = b.node("h_next", Softsign(), x @ W + h @ U)
    b.update(h, hn)
    b.loss(mg.l2_loss(hn, y))
    cell = b.build()
    xx, yy, h0 = data(5, 2)
    assert (
        mg.gradcheck(cell, cell.init_params(0), {"x": xx, "y": yy}, {"h": h0}).max_rel_error < 1e-7
    )


def test_a_user_node_with_a_wrong_vjp_shape_is_named() -> None:
    class Bad(mg.Node):
        def forward(self, *xs: Array) -> Array:
            return np.tanh(xs[0])

        def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
            return (g[:, :1],)

    b = CellBuilder("bad")
    x = b.input("x", H)
    y = b.input("y", H)
    b.loss(mg.l2_loss(b.node("squash", Bad(), x), y))
    cell = b.build()
    xx = np.ones((2, 3, H))
    with pytest.raises(mg.NodeContractError, match=r"node 'squash' \(Bad\) over all steps.*input 0 'x'"):
        mg.plan_of(cell, 2).loss_and_grads({}, {"x": xx, "y": xx})
    with pytest.raises(mg.NodeContractError, match=r"node 'squash' \(Bad\) at step 1.*input 0 'x'"):
        mg.plan_of(cell, 2, passes=()).loss_and_grads({}, {"x": xx, "y": xx})


def test_parameter_only_nodes_are_computed_once() -> None:
    """A tied weight (W used as W and as W^T via a parameter-only node) is shared, not per step."""
    b = CellBuilder("tied")
    x = b.input("x", H)
    y = b.input("y", H)
    h = b.state("h", H)
    W = b.param("W", (H, H), init=init.uniform(0.5))
    W2 = mg.scale(W, 0.5, name="half_W")
    hn = mg.tanh(x @ W + h @ W2, name="h_next")
    b.update(h, hn)
    b.loss(mg.l2_loss(hn, y))
    cell = b.build()
    assert cell.ops["half_W"].static
    g = mg.unroll(cell, 3)
    assert ("half_W", mg.SHARED) in g and ("half_W", 0) not in g
    rng = np.random.default_rng(0)
    xx, yy = rng.standard_normal((3, 2, H)), rng.standard_normal((3, 2, H))
    assert mg.gradcheck(cell, cell.init_params(0), {"x": xx, "y": yy}).max_rel_error < 1e-7


def test_softmax_and_bce_heads_in_a_cell() -> None:
    b = CellBuilder("heads")
    x = b.input("x", D)
    t1 = b.input("t1", 5)
    t2 = b.input("t2", 5)
    h = b.state("h", H)
    W = b.param("W", (D, H), init=init.uniform(0.5))
    U = b.param("U", (H, H), init=init.orthogonal())
    V = b.param("V", (H, 5), init=init.glorot_uniform())
    c = b.param("c", 5, init=init.normal(0.1))
    hn = mg.relu(x @ W + h @ U, name="h_next")
    b.update(h, hn)
    logits = mg.affine(hn, V, c, name="logits")
    b.loss(mg.sigmoid_bce(logits, t1, name="bce"))
    b.loss(mg.softmax_cross_entropy(logits, t2, name="xent"))
    cell = b.build()
    rng = np.random.default_rng(2)
    T, B = 4, 3
    tt1 = (rng.uniform(size=(T, B, 5)) > 0.5).astype(float)
    tt2 = np.eye(5)[rng.integers(0, 5, size=(T, B))]
    assert (
        mg.gradcheck(
            cell, cell.init_params(1), {"x": rng.standard_normal((T, B, D)), "t1": tt1, "t2": tt2}
        ).max_rel_error
        < 1e-7
    )


@pytest.mark.parametrize("shape", ["34", (4.9, 4), (3, "4"), 2.0, (True, 3), b"\x03", None])
def test_non_integer_shapes_are_refused(shape: object) -> None:
    b = CellBuilder("bad")
    with pytest.raises(mg.ShapeError, match=r"parameter 'W'.*integer"):
        b.param("W", shape)  # type: ignore[arg-type]
    with pytest.raises(mg.ShapeError, match=r"input 'x'.*integer"):
        b.input("x", shape)  # type: ignore[arg-type]
    assert b.param("V", (np.int64(3), 4)) is not None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "2", True])
def test_non_finite_or_non_numeric_constants_are_refused_at_build_time(bad: object) -> None:
    b = CellBuilder("bad")
    x = b.input("x", 3)
    with pytest.raises(mg.GraphError, match=r"Scale: constant c must be"):
        mg.scale(x, bad)  # type: ignore[arg-type]
    with pytest.raises(mg.GraphError, match=r"constant\(value\) must be"):
        init.constant(bad)  # type: ignore[arg-type]
    with pytest.raises(mg.GraphError, match=r"uniform\(scale\) must be"):
        init.uniform(bad)  # type: ignore[arg-type]
    if not isinstance(bad, bool):
        with pytest.raises(mg.GraphError, match=r"state 'h': initial value must be"):
            b.state("h", 3, init=bad)  # type: ignore[arg-type]
