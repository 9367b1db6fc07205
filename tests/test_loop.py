"""Loop programs against the full unroll.

``minigrad.compile(cell)`` runs one compiled step per time step; with
``mode="unrolled"`` it runs the plan of the full networkx unroll of each T,
the reference. The same arithmetic runs in both, so losses, gradients, final
states and outputs must agree bit for bit: every cell of ``models.cells``,
random cells, masks with padding at either end, truncation windows, ``wrt``
subsets, both dtypes and T in {1, 2, 3, 17, 100}.
"""

from __future__ import annotations

import numpy as np
import pytest
from random_cells import random_cell

import minigrad as mg
import minigrad.loop as mg_loop
from minigrad import CellBuilder
from minigrad.types import Array
from models.cells import CELLS, stack

D, H, B = 4, 5, 3


def l2_cell(name: str, dtype: type = np.float64, readout: bool = False) -> mg.Cell:
    b = CellBuilder(f"{name}_{'music' if readout else 'l2'}", dtype=dtype)
    x = b.input("x", D)
    y = b.input("y", D if readout else H)
    (h,) = stack(b, x, name, D, H, 1)
    b.output("h", h)
    if readout:
        V = b.param("V_out", (H, D), init=mg.init.uniform(0.3))
        c = b.param("c_out", D, init=mg.init.uniform(0.3))
        b.output("logits", mg.affine(h, V, c, name="logits"))
        b.loss(mg.sigmoid_bce("logits", y, name="nll"))
    else:
        b.loss(mg.l2_loss(h, y, name="l2"))
    return b.build()


def _inputs(cell: mg.Cell, T: int, seed: int) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    dt = cell.dtype
    out = {}
    for name, spec in cell.inputs.items():
        shape = (T, B, *(int(d) for d in spec.shape[1:]))
        if name == "y" and "music" in cell.name:
            out[name] = (rng.uniform(size=shape) > 0.6).astype(dt)
        else:
            out[name] = rng.standard_normal(shape).astype(dt)
    return out


def _mask(T: int, where: str) -> Array | None:
    if where == "none":
        return None
    m = np.ones((T, B))
    if where == "end":
        m[T // 2 :, 0] = 0
        m[max(T - 2, 1) :, 2] = 0
    else:
        m[: max(T // 3, 1), 1] = 0
        m[: T - 1, 2] = 0
    return m


def _outcome(prog: mg.Program, cell: mg.Cell, T: int, mask: Array | None, seed: int
             ) -> dict[str, Array]:
    params = cell.init_params(seed)
    rng = np.random.default_rng(seed + 1)
    states = {s: rng.standard_normal((B, *(int(d) for d in sp.shape[1:]))).astype(cell.dtype)
              for s, sp in cell.states.items()}
    run = prog.forward(params, _inputs(cell, T, seed), states, mask)
    go = {o: rng.standard_normal(a.shape).astype(cell.dtype) for o, a in run.outputs.items()}
    grads = prog.backward(run, go, loss_scale=0.5)
    got = {"loss": np.array(run.loss)}
    got.update({"out:" + k: v for k, v in run.outputs.items()})
    got.update({"final:" + k: v for k, v in run.states.items()})
    got.update({"grad:" + k: v for k, v in grads.flat().items()})
    loss, g2 = prog.loss_and_grads(params, _inputs(cell, T, seed), states, mask)
    got["loss2"] = np.array(loss)
    got.update({"grad2:" + k: v for k, v in g2.flat().items()})
    return got


def _assert_equal(cell: mg.Cell, T: int, mask: str, **kw: object) -> None:
    m = _mask(T, mask)
    loop = _outcome(mg.compile(cell, **kw), cell, T, m, 0)  # type: ignore[arg-type]
    ref = _outcome(mg.compile(cell, mode="unrolled", **kw), cell, T, m, 0)  # type: ignore[arg-type]
    assert loop.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(loop[k], ref[k], err_msg=f"{cell.name} T={T} {kw}: {k}")


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("T", [1, 2, 3, 17, 100])
def test_every_model_cell_matches_the_unroll(name: str, T: int) -> None:
    for readout in (False, True):
        cell = l2_cell(name, readout=readout)
        for mask in ("none", "end", "start"):
            _assert_equal(cell, T, mask)
        _assert_equal(cell, T, "end", passes=())


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("truncate", [1, 2, 5])
def test_truncation_windows_match_the_unroll(name: str, truncate: int) -> None:
    cell = l2_cell(name)
    for T in (3, 17):
        _assert_equal(cell, T, "none", truncate=truncate)
        _assert_equal(cell, T, "start", truncate=truncate, passes=())


@pytest.mark.parametrize("name", list(CELLS))
def test_float32_and_wrt_subsets_match_the_unroll(name: str) -> None:
    cell = l2_cell(name, np.float32, readout=True)
    _assert_equal(cell, 17, "end")
    params = list(cell.params)
    _assert_equal(cell, 17, "start", wrt=params[:2])
    _assert_equal(cell, 17, "none", wrt=[*cell.states])
    _assert_equal(cell, 17, "end", wrt=["x", *params[-1:]])


@pytest.mark.parametrize("seed", range(12))
def test_random_cells_match_the_unroll(seed: int) -> None:
    cell = random_cell(seed)
    for T in (1, 3, 17):
        _assert_equal(cell, T, "end")
        _assert_equal(cell, T, "start", passes=())
    _assert_equal(cell, 17, "start", truncate=4)


def test_one_program_runs_every_length_with_one_layout() -> None:
    cell = l2_cell("gru")
    prog = mg.compile(cell)
    ref = mg.compile(cell, mode="unrolled")
    for T in (5, 40, 3, 40, 17):  # grows, then shorter batches reuse the buffers
        a = _outcome(prog, cell, T, _mask(T, "end"), T)
        b = _outcome(ref, cell, T, _mask(T, "end"), T)
        for k in b:
            np.testing.assert_array_equal(a[k], b[k])
    (runner,) = prog._runners.values()
    assert runner._owners.capacity == 40  # the longest T seen: grown once, never per T


def test_backward_after_another_forward_is_refused() -> None:
    cell = l2_cell("gru")
    prog = mg.compile(cell)
    params = cell.init_params(0)
    run = prog.forward(params, _inputs(cell, 4, 0))
    prog.forward(params, _inputs(cell, 6, 0))
    with pytest.raises(mg.GraphError, match="overwritten"):
        prog.backward(run)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(mg.ArgumentError, match="mode"):
        mg.compile(l2_cell("gru"), mode="fast")


# -- chunked runs ------------------------------------------------------------------
# A sequence longer than the workspace's chunk length runs chunk by chunk over a
# window of steps; results agree with the one-piece run to rounding (the weight
# gradients are summed per chunk). ``minigrad.loop._CHUNK`` forces a small chunk.


def _chunked(cell: mg.Cell, T: int, mask: str, chunk: int | None, **kw: object
             ) -> dict[str, Array]:
    old = mg_loop._CHUNK
    mg_loop._CHUNK = chunk
    try:
        prog = mg.Program(cell, **kw)  # type: ignore[arg-type]
        return _outcome(prog, cell, T, _mask(T, mask), 0)
    finally:
        mg_loop._CHUNK = old


def _assert_close(cell: mg.Cell, T: int, C: int, mask: str, **kw: object) -> None:
    got = _chunked(cell, T, mask, C, **kw)
    ref = _chunked(cell, T, mask, 10_000, **kw)
    assert got.keys() == ref.keys()
    tol = 1e-12 if cell.dtype == np.float64 else 1e-5
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=tol, atol=tol,
                                   err_msg=f"{cell.name} T={T} C={C} {mask} {kw}: {k}")


# T = C (one piece), T = C + 1, a multiple of C and not (T < C: test_loop's other tests)
LENGTHS = [(5, 5), (6, 5), (10, 5), (17, 4)]


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("readout", [False, True])
def test_chunked_runs_match_one_piece(name: str, readout: bool) -> None:
    cell = l2_cell(name, readout=readout)
    for T, C in LENGTHS:
        for mask in ("none", "end", "start"):
            _assert_close(cell, T, C, mask)
        _assert_close(cell, T, C, "end", passes=())


@pytest.mark.parametrize("name", list(CELLS))
@pytest.mark.parametrize("truncate", [1, 2, 5])
def test_chunked_truncation_matches_one_piece(name: str, truncate: int) -> None:
    cell = l2_cell(name)
    for T, C in ((17, 4), (11, 5)):
        _assert_close(cell, T, C, "none", truncate=truncate)
        _assert_close(cell, T, C, "start", truncate=truncate, passes=())


@pytest.mark.parametrize("name", list(CELLS))
def test_chunked_wrt_subsets_and_float32_match_one_piece(name: str) -> None:
    cell = l2_cell(name, readout=True)
    params = list(cell.params)
    _assert_close(cell, 17, 4, "start", wrt=params[:2])
    _assert_close(cell, 17, 4, "none", wrt=[*cell.states])
    _assert_close(cell, 17, 4, "end", wrt=["x", *params[-1:]])
    _assert_close(l2_cell(name, np.float32, readout=True), 17, 4, "end")


@pytest.mark.parametrize("seed", range(12))
def test_chunked_random_cells_match_one_piece(seed: int) -> None:
    cell = random_cell(seed)
    _assert_close(cell, 17, 4, "end")
    _assert_close(cell, 9, 8, "start", passes=())
    _assert_close(cell, 17, 4, "none")
    _assert_close(cell, 17, 4, "end", truncate=4)
    _assert_close(cell, 17, 4, "start", truncate=1)


def _selections() -> list[tuple[str, ...] | None]:
    """The default passes, each pass alone (with what it requires) and all but each."""
    from minigrad.passes import ALL_PASSES, BY_NAME, without

    alone = []
    for name in ALL_PASSES:
        need = {name, *BY_NAME[name].requires}
        alone.append(tuple(n for n in ALL_PASSES if n in need))
    return [None, *alone, *(without(n) for n in ALL_PASSES)]


def _input_only_state_cell() -> mg.Cell:
    """h' = x W: the state's update reads only the input, so the whole backward pass of
    a chunk is time-batched, and the gradient carried in from the next chunk is read
    by the batched product of every step."""
    b = CellBuilder("input_only_state")
    x, y = b.input("x", 3), b.input("y", 3)
    h = b.state("h", 3)
    W = b.param("W", (3, 3))
    b.update(h, mg.matmul(x, W, name="xw"))
    b.loss(mg.l2_loss(h, y, name="loss"))
    return b.build()


def _tanh_rnn_cell() -> mg.Cell:
    b = CellBuilder("tanh_rnn")
    x, y = b.input("x", 4), b.input("y", 4)
    h = b.state("h", 4)
    W, U = b.param("W", (4, 4)), b.param("U", (4, 4))
    a = mg.add(mg.matmul(x, W, name="xw"), mg.matmul(h, U, name="hu"), name="a")
    b.update(h, mg.tanh(a, name="hn"))
    b.loss(mg.l2_loss(h, y, name="loss"))
    return b.build()


@pytest.mark.parametrize("make", [_input_only_state_cell, _tanh_rnn_cell])
def test_chunked_runs_match_the_unroll_under_every_pass_selection(make: object) -> None:
    # time-batched weight gradients summed over chunks, and the state gradient carried
    # into a chunk whose backward pass is all time-batched, were wrong for some selections
    cell = make()  # type: ignore[operator]
    T = 20
    params = cell.init_params(0)
    rng = np.random.default_rng(1)
    params = {k: rng.uniform(-0.5, 0.5, v.shape) for k, v in params.items()}
    inputs = _inputs(cell, T, 2)
    plain = mg.plan_of(cell, T, passes=())
    ref_loss, ref = plain.loss_and_grads(params, inputs)
    old = mg_loop._CHUNK
    mg_loop._CHUNK = 6
    try:
        for passes in _selections():
            prog = mg.compile(cell, passes=passes)
            loss, got = prog.loss_and_grads(params, inputs)
            assert prog._last._chunked, passes
            assert loss == pytest.approx(ref_loss, rel=1e-13)
            for kind in ("params", "inputs", "states"):
                for k, v in getattr(ref, kind).items():
                    np.testing.assert_allclose(getattr(got, kind)[k], v, rtol=1e-11, atol=1e-12,
                                               err_msg=f"{cell.name} {passes}: {kind} {k}")
    finally:
        mg_loop._CHUNK = old


@pytest.mark.parametrize("seed", range(4))
def test_chunked_random_cells_match_one_piece_under_every_pass_selection(seed: int) -> None:
    cell = random_cell(100 + seed)
    for passes in _selections():
        _assert_close(cell, 13, 4, "end", passes=passes)


def test_one_chunk_is_the_one_piece_run_bit_for_bit() -> None:
    cell = l2_cell("gru", readout=True)
    for T in (7, 8):
        got = _chunked(cell, T, "end", 8)
        ref = _outcome(mg.compile(cell, mode="unrolled"), cell, T, _mask(T, "end"), 0)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k])


def _bound_tuples(prog: mg.Program) -> int:
    (ws,) = prog._runners.values()
    return sum(len(targs) for body in ws._bodies.values() for _fn, targs in body)


def test_binding_does_not_grow_with_T() -> None:
    cell = l2_cell("gru", readout=True)
    counts = []
    old = mg_loop._CHUNK
    mg_loop._CHUNK = 16
    try:
        for T in (40, 400):
            prog = mg.Program(cell)
            params = cell.init_params(0)
            prog.loss_and_grads(params, _inputs(cell, T, 0), mask=_mask(T, "end"))
            (ws,) = prog._runners.values()
            assert ws._owners.capacity == 16  # the window, not T
            counts.append(_bound_tuples(prog))
    finally:
        mg_loop._CHUNK = old
    assert counts[0] == counts[1] > 0


def test_forward_only_keeps_no_history_and_refuses_backward() -> None:
    cell = l2_cell("gru", readout=True)
    old = mg_loop._CHUNK
    mg_loop._CHUNK = 4
    try:
        prog = mg.Program(cell)
        params = cell.init_params(0)
        x = _inputs(cell, 17, 0)
        run = prog.forward(params, x, mask=_mask(17, "end"), backward=False)
        (ws,) = prog._runners.values()
        assert ws._history == {}
        with pytest.raises(mg.GraphError, match="backward=False"):
            prog.backward(run)
        run = prog.forward(params, x, mask=_mask(17, "end"))
        kept = sum(h.nbytes for h in ws._history.values())
        # the state (T + 1 steps) and a few gate values; not the inputs or the read-out
        assert 0 < kept < 17 * B * (3 * H + 1) * 8 * 4
        assert prog.backward(run).params
    finally:
        mg_loop._CHUNK = old
    # a short sequence (one chunk) refuses the same way
    prog = mg.Program(cell)
    run = prog.forward(params, _inputs(cell, 5, 0), backward=False)
    with pytest.raises(mg.GraphError, match="backward=False"):
        prog.backward(run)


def test_first_nonfinite_finds_the_step_in_a_chunked_run() -> None:
    cell = l2_cell("tanh")
    old = mg_loop._CHUNK
    mg_loop._CHUNK = 4
    try:
        prog = mg.Program(cell)
        params = cell.init_params(0)
        params["W"] = params["W"] * 1e308
        x = _inputs(cell, 17, 0)
        x["x"][:] = 0
        x["x"][13, 1, 0] = 10.0
        run = prog.forward(params, x)
        found = prog.first_nonfinite(run)
    finally:
        mg_loop._CHUNK = old
    assert found is not None and found[1] == 13, found


# -- recomputed chunks ---------------------------------------------------------------
# A chunked pass whose history would exceed ``HISTORY_BYTES`` keeps only each chunk's
# incoming states and runs each chunk's forward pass again in the backward pass: the
# same arithmetic on the same values, so every result equals the kept-history run's bit
# for bit.


def _recomputed(cell: mg.Cell, T: int, mask: str, chunk: int, **kw: object
                ) -> tuple[dict[str, Array], bool, int]:
    old = mg_loop.HISTORY_BYTES
    mg_loop.HISTORY_BYTES = 0
    try:
        got = _chunked(cell, T, mask, chunk, **kw)
        old_c = mg_loop._CHUNK
        mg_loop._CHUNK = chunk
        try:
            prog = mg.Program(cell, **kw)  # type: ignore[arg-type]
            params = cell.init_params(0)
            prog.loss_and_grads(params, _inputs(cell, T, 0), mask=_mask(T, mask))
            (ws,) = prog._runners.values()
            return got, ws.recompute, sum(h.nbytes for h in ws._history.values())
        finally:
            mg_loop._CHUNK = old_c
    finally:
        mg_loop.HISTORY_BYTES = old


def _assert_recomputed_equal(cell: mg.Cell, T: int, C: int, mask: str, **kw: object) -> None:
    got, recompute, kept = _recomputed(cell, T, mask, C, **kw)
    assert recompute and kept == 0
    ref = _chunked(cell, T, mask, C, **kw)
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k],
                                      err_msg=f"{cell.name} T={T} C={C} {mask} {kw}: {k}")


@pytest.mark.parametrize("name", list(CELLS))
def test_recomputed_chunks_equal_kept_history(name: str) -> None:
    cell = l2_cell(name, readout=True)
    for T, C in ((6, 5), (17, 4)):
        for mask in ("none", "end", "start"):
            _assert_recomputed_equal(cell, T, C, mask)
    _assert_recomputed_equal(cell, 17, 4, "end", passes=())
    _assert_recomputed_equal(cell, 17, 4, "start", truncate=5)
    _assert_recomputed_equal(l2_cell(name, np.float32), 17, 4, "end")


@pytest.mark.parametrize("seed", range(6))
def test_recomputed_chunks_of_random_cells_equal_kept_history(seed: int) -> None:
    cell = random_cell(seed)
    _assert_recomputed_equal(cell, 17, 4, "end")
    _assert_recomputed_equal(cell, 13, 4, "start", truncate=4)
    for passes in _selections()[:: 3]:
        _assert_recomputed_equal(cell, 13, 4, "none", passes=passes)


def test_history_is_kept_below_the_limit() -> None:
    cell = l2_cell("gru", readout=True)
    old_c = mg_loop._CHUNK
    mg_loop._CHUNK = 4
    try:
        prog = mg.Program(cell)
        prog.loss_and_grads(cell.init_params(0), _inputs(cell, 17, 0))
        (ws,) = prog._runners.values()
        assert not ws.recompute
        assert sum(h.nbytes for h in ws._history.values()) == ws.history_bytes(17) > 0
    finally:
        mg_loop._CHUNK = old_c


def test_first_nonfinite_runs_the_plain_plan_window_by_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import minigrad.program as mg_program

    cell = l2_cell("tanh")
    params = cell.init_params(0)
    params["W"] = params["W"] * 1e308
    x = _inputs(cell, 17, 0)
    x["x"][:] = 0
    x["x"][13, 1, 0] = 10.0
    built: list[int] = []
    real = mg_program.compile_plan

    def counting(c: mg.Cell, steps: int, **kw: object) -> object:
        built.append(steps)
        return real(c, steps, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(mg_program, "DIAGNOSIS_STEPS", 4)
    monkeypatch.setattr(mg_program, "compile_plan", counting)
    for mask in (None, _mask(17, "start")):
        prog = mg.Program(cell)
        run = prog.forward(params, x, mask=mask)
        built.clear()
        found = prog.first_nonfinite(run)
        assert found is not None and found[1] == 13, found
        assert built and max(built) <= 4  # windows, never the whole unroll


def test_a_plan_of_more_steps_than_the_limit_is_refused() -> None:
    from minigrad.plan import MAX_PLAN_STEPS

    cell = l2_cell("tanh")
    with pytest.raises(mg.ArgumentError, match=r"minigrad\.compile"):
        mg.plan_of(cell, MAX_PLAN_STEPS + 1)
    with pytest.raises(mg.ArgumentError, match="at most 100,000 node-steps"):
        mg.compile_plan(cell, 10**12)


def test_a_plan_is_limited_in_nodes_times_steps() -> None:
    from minigrad.plan import MAX_PLAN_NODE_STEPS, plan_steps_limit

    cell = random_cell(3)
    most = plan_steps_limit(cell)
    assert most == min(10_000, MAX_PLAN_NODE_STEPS // len(cell.ops))
    with pytest.raises(mg.ArgumentError, match=f"{most:,} steps for this cell"):
        mg.compile_plan(cell, most + 1, passes=())
