"""Each part of the runtime on its own: layout, forward binding, backward binding, executor."""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad import CellBuilder
from minigrad.runtime.bind_backward import Target, bind_backward
from minigrad.runtime.bind_forward import bind_forward
from minigrad.runtime.execute import collect_run, load, run_calls
from minigrad.runtime.layout import lay_out
from minigrad.runtime.workspace import Workspace
from minigrad.types import Array
from models.cells import stack

D, H, T, B = 4, 5, 3, 2


def _gru() -> mg.Cell:
    b = CellBuilder("gru_l2")
    x, y = b.input("x", D), b.input("y", H)
    (h,) = stack(b, x, "gru", D, H, 1)
    b.loss(mg.l2_loss(h, y, name="l2"))
    return b.build()


def _target(plan: mg.Plan, masked: bool = False) -> Target:
    lay = lay_out(plan, B, masked)
    _fwd, _spans, skip = bind_forward(
        plan, lay.bufs, lay.aliased, masked, lay.mask_bool, lay.mask_col
    )
    return Target(plan, plan.steps, lay.bufs, lay.arena, lay.aliased, skip, masked,
                  lay.mask_bool, lay.mask_col)


# --------------------------------------------------------------------------
# layout


def test_gru_layout_has_one_buffer_per_value_with_its_shape() -> None:
    cell = _gru()
    lay = lay_out(mg.compile_plan(cell, T, passes=()), B, masked=False)
    want = {"param:" + p: tuple(int(d) for d in s.shape) for p, s in cell.params.items()}
    want |= {"in:x": (T, B, D), "in:y": (T, B, H), "state:h": (T + 1, B, H)}
    want |= {"op:" + n: (T, B, H) for n in cell.order if n != "l2"}
    want["op:l2"] = (T, B)
    assert {k: v.shape for k, v in lay.bufs.items()} == want
    # every buffer comes from the arena; the update writes into the state's rows 1..T
    assert lay.aliased == {"h_next": "h"}
    assert np.shares_memory(lay.bufs["op:h_next"], lay.bufs["state:h"][1:])
    assert lay.inplace == {}
    assert lay.mask.shape == (T, B) and lay.mask_bool.shape == (T, B, 1)


def test_a_mask_or_a_truncation_window_keeps_the_update_in_its_own_buffer() -> None:
    cell = _gru()
    for plan, masked in ((mg.compile_plan(cell, T, passes=()), True),
                         (mg.compile_plan(cell, T, truncate=2, passes=()), False)):
        lay = lay_out(plan, B, masked)
        assert lay.aliased == {}
        assert not np.shares_memory(lay.bufs["op:h_next"], lay.bufs["state:h"])


def test_slices_bound_as_views_share_their_source_buffer() -> None:
    plan = mg.compile_plan(_gru(), T)
    lay = lay_out(plan, B, masked=False)
    assert plan.views, "the default passes bind the GRU's gate slices as views"
    for n, (src, start, stop) in plan.views.items():
        v, s = lay.bufs["op:" + n], lay.bufs["op:" + src]
        assert np.shares_memory(v, s) and v.shape[-1] == stop - start


# --------------------------------------------------------------------------
# forward binding


@pytest.mark.parametrize("masked", [False, True])
def test_forward_binding_makes_the_same_calls_at_every_step(masked: bool) -> None:
    plan = mg.compile_plan(_gru(), T, passes=())
    lay = lay_out(plan, B, masked)
    calls, spans, skip = bind_forward(
        plan, lay.bufs, lay.aliased, masked, lay.mask_bool, lay.mask_col
    )
    assert spans[-1][2] == len(calls)
    per_step = [sum(hi - lo for ins, lo, hi in spans if ins.kind == "op" and ins.step == t)
                for t in range(T)]
    carries = [sum(hi - lo for ins, lo, hi in spans if ins.kind == "carry" and ins.step == t + 1)
               for t in range(T)]
    n_ops = len(plan.cell.order)
    # plain plan: one call per node and step; a carry is free when aliased, else a
    # copy (masked: the old row, then the update where the row is real)
    assert per_step == [n_ops] * T
    assert carries == [2 if masked else 0] * T
    assert skip == (set() if masked else {"h"})


# --------------------------------------------------------------------------
# backward binding


def _read_twice() -> mg.Cell:
    b = CellBuilder("read_twice")
    x, y = b.input("x", 2), b.input("y", 3)
    W = b.param("W", (2, 3))
    v = mg.matmul(x, W, name="v")
    b.loss(mg.l2_loss(mg.tanh(v, name="a"), y, name="la"))
    b.loss(mg.l2_loss(mg.sigmoid(v, name="s"), y, name="ls"))
    return b.build()


def _adds_into(calls: list[tuple[object, tuple[object, ...]]], target: Array) -> bool:
    return any(fn is np.add and np.shares_memory(args[0], target) for fn, args in calls)


def test_a_value_read_twice_gets_one_assigning_and_one_adding_write() -> None:
    plan = mg.compile_plan(_read_twice(), T, passes=("assign_first_writes",))
    b = bind_backward(_target(plan), output_seeds=False)
    for t in range(T):
        gv = b.gbufs["op:v"][t]
        readers = [(ins.name, b.calls[lo:hi]) for ins, lo, hi in b.spans
                   if ins.step == t and ins.name in ("a", "s")]
        assert len(readers) == 2
        adding = [name for name, calls in readers if _adds_into(calls, gv)]
        assert len(adding) == 1, readers  # the first reader assigns, the second adds
    # every region of v's gradient is written whole before it is read: nothing to zero
    assert "op:v" not in b.zero_roots


def test_without_assign_first_writes_every_write_adds_into_zeroed_buffers() -> None:
    plan = mg.compile_plan(_read_twice(), T, passes=())
    b = bind_backward(_target(plan), output_seeds=False)
    for t in range(T):
        gv = b.gbufs["op:v"][t]
        readers = [b.calls[lo:hi] for ins, lo, hi in b.spans
                   if ins.step == t and ins.name in ("a", "s")]
        assert all(_adds_into(calls, gv) for calls in readers)
    assert "op:v" in b.zero_roots
    assert b.seed_modes == {"op:la": True, "op:ls": True}


def test_seeds_of_outputs_only_in_the_binding_that_takes_them() -> None:
    b = CellBuilder("gru_out")
    x, y = b.input("x", D), b.input("y", H)
    (h,) = stack(b, x, "gru", D, H, 1)
    b.output("h", h)
    b.loss(mg.l2_loss(h, y, name="l2"))
    cell = b.build()
    plan = mg.compile_plan(cell, T)
    without = bind_backward(_target(plan), output_seeds=False)
    with_out = bind_backward(_target(plan), output_seeds=True)
    assert set(without.seed_modes) == {"op:l2"}
    assert set(with_out.seed_modes) == {"op:l2", "op:h_next"}


# --------------------------------------------------------------------------
# executor


def _tiny() -> mg.Cell:
    b = CellBuilder("tiny")
    x, y = b.input("x", 3), b.input("y", 2)
    h = b.state("h", 2)
    W, U = b.param("W", (3, 2)), b.param("U", (2, 2))
    b.update(h, mg.tanh(mg.add(mg.matmul(x, W, name="xw"), mg.matmul(h, U, name="hu"),
                               name="a"), name="h_next"))
    b.loss(mg.l2_loss("h_next", y, name="l"))
    return b.build()


def test_executor_on_a_tiny_cell_against_numpy() -> None:
    cell = _tiny()
    rng = np.random.default_rng(0)
    W, U = rng.normal(size=(3, 2)), rng.normal(size=(2, 2))
    x, y = rng.normal(size=(T, B, 3)), rng.normal(size=(T, B, 2))
    h0 = rng.normal(size=(B, 2))
    ws = Workspace(mg.compile_plan(cell, T), B, masked=False)
    run = ws.forward({"W": W, "U": U}, {"x": x, "y": y}, {"h": h0}, None)
    grads = ws.backward({}, 1.0)
    # numpy: forward, keeping every state, then BPTT by hand
    hs, loss = [h0], 0.0
    for t in range(T):
        hs.append(np.tanh(x[t] @ W + hs[-1] @ U))
        loss += 0.5 * float(np.sum((hs[-1] - y[t]) ** 2))
    gW, gU, gh = np.zeros_like(W), np.zeros_like(U), np.zeros((B, 2))
    for t in reversed(range(T)):
        ga = (gh + hs[t + 1] - y[t]) * (1 - hs[t + 1] ** 2)
        gW += x[t].T @ ga
        gU += hs[t].T @ ga
        gh = ga @ U.T
    assert run.loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(run.states["h"], hs[-1], rtol=1e-12)
    np.testing.assert_allclose(grads.params["W"], gW, rtol=1e-10)
    np.testing.assert_allclose(grads.params["U"], gU, rtol=1e-10)
    np.testing.assert_allclose(grads.states["h"], gh, rtol=1e-10)


def test_executor_loads_checks_and_runs_a_forward_list() -> None:
    cell = _tiny()
    plan = mg.compile_plan(cell, T, passes=())
    lay = lay_out(plan, B, masked=True)
    calls, _spans, _skip = bind_forward(plan, lay.bufs, lay.aliased, True, lay.mask_bool,
                                        lay.mask_col)
    params = {"W": np.zeros((3, 2)), "U": np.zeros((2, 2))}
    inputs = {"x": np.ones((T, B, 3)), "y": np.ones((T, B, 2))}
    masks = (lay.mask, lay.mask_col, lay.mask_bool)
    with pytest.raises(mg.GraphError, match="parameter 'U' is missing"):
        load(cell, lay.bufs, T, B, masks, {"W": params["W"]}, inputs, {}, None)
    with pytest.raises(mg.ShapeError, match="input 'x' has shape"):
        load(cell, lay.bufs, T, B, masks, params, {**inputs, "x": np.ones((T, B, 2))}, {}, None)
    mask = np.ones((T, B))
    mask[1:, 1] = 0
    load(cell, lay.bufs, T, B, masks, params, inputs, {}, mask)
    run_calls(calls)
    run = collect_run(cell, lay.bufs, T, lay.mask, B, True, 1)
    # h = tanh(0) = 0 at every step: each real step's loss is 0.5 * |0 - 1|^2 = 1
    assert run.loss == pytest.approx(float(mask.sum()))
    np.testing.assert_array_equal(run.states["h"], np.zeros((B, 2)))
