"""Noise inputs: dropout and zoneout masks (``minigrad.noise``) and the builder rewrites
that add them to any cell."""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad import CellBuilder, init
from minigrad.noise import draw, dropout_value, noise_inputs, recurrent_dropout, zoneout_states
from minigrad.types import Array

D, H = 3, 4


def _gru(b: CellBuilder) -> tuple[mg.Ref, mg.Ref]:
    """A GRU in Chung et al.'s convention, written with nodes (input x, state h)."""
    x = b.input("x", D)
    h = b.state("h", H)
    W = {n: b.param(n, (D, H), init=init.uniform(0.5)) for n in ("Wz", "Wr", "Wc")}
    U = {n: b.param(n, (H, H), init=init.uniform(0.5)) for n in ("Uz", "Ur", "Uc")}
    z = mg.sigmoid(x @ W["Wz"] + h @ U["Uz"], name="z")
    r = mg.sigmoid(x @ W["Wr"] + h @ U["Ur"], name="r")
    c = mg.tanh(x @ W["Wc"] + mg.mul(r, h, name="rh") @ U["Uc"], name="c")
    h_next = mg.gru_update(z, h, c, name="h_next")
    b.update(h, h_next)
    return x, h_next


def _regularised_gru(p_in: float, p_rec: float, p_zone: float) -> mg.Cell:
    b = CellBuilder("gru")
    x, h_next = _gru(b)
    recurrent_dropout(b, ["h"], p_rec)
    zoned = zoneout_states(b, ["h"], p_zone)
    top = zoned.get("h_next", h_next)
    dropped = dropout_value(b, top, H, p_in, name="out.drop")
    y = b.input("y", H)
    b.output("out", dropped)
    b.loss(mg.l2_loss(dropped, y, name="loss"))
    del x
    return b.build()


def test_noise_inputs_are_declared_with_their_spec() -> None:
    cell = _regularised_gru(0.3, 0.2, 0.1)
    specs = {n: s.noise for n, s in noise_inputs(cell).items()}
    assert specs == {
        "h.rdrop.mask": mg.NoiseSpec(0.2, "dropout", "sequence"),
        "h.zoneout.mask": mg.NoiseSpec(0.1, "zoneout", "step"),
        "out.drop.mask": mg.NoiseSpec(0.3, "dropout", "sequence"),
    }
    assert cell.inputs["x"].noise is None
    # a rewrite of the graph keeps them
    again = cell.to_builder().build()
    assert {n: s.noise for n, s in noise_inputs(again).items()} == specs


def test_rate_zero_declares_nothing() -> None:
    plain = _regularised_gru(0.0, 0.0, 0.0)
    assert noise_inputs(plain) == {}
    assert set(plain.inputs) == {"x", "y"}


def test_recurrent_dropout_masks_what_enters_the_next_step_not_what_is_carried() -> None:
    cell = _regularised_gru(0.0, 0.25, 0.0)
    readers = {(n, i) for n, i in cell.readers["h"]}
    # the interpolation (1 - z) h + z c carries h; everything else reads the dropped h
    assert readers == {("h_next", 1), ("h.rdrop", 0)}
    dropped = {n for n, _ in cell.readers["h.rdrop"]}
    assert dropped == {"rh", *(n for n, op in cell.ops.items() if op.inputs[0] == "h.rdrop")}
    assert "rh" in dropped and len(dropped) == 3


def test_recurrent_dropout_never_masks_an_lstm_memory() -> None:
    from models.cells import lstm

    b = CellBuilder("lstm")
    x = b.input("x", D)
    lstm(b, x, D, H)
    masked = recurrent_dropout(b, b.state_names(), 0.5)
    assert masked == ["h"]


def test_noise_arguments_are_checked() -> None:
    b = CellBuilder("c")
    with pytest.raises(ValueError, match="noise input 'm': rate must be a number in"):
        b.noise("m", 3, 1.0)
    with pytest.raises(ValueError, match="noise input 'm': kind must be one of"):
        b.noise("m", 3, 0.5, kind="gaussian")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise input 'm': per must be one of"):
        b.noise("m", 3, 0.5, per="batch")  # type: ignore[arg-type]


def test_evaluation_values_are_deterministic_and_use_no_randomness() -> None:
    cell = _regularised_gru(0.3, 0.2, 0.1)
    values = draw(cell, 5, 2, None, training=False)
    assert values["out.drop.mask"].shape == (5, 2, H)
    assert np.all(values["out.drop.mask"] == 1.0)
    assert np.all(values["h.rdrop.mask"] == 1.0)
    assert np.all(values["h.zoneout.mask"] == 0.1)
    with pytest.raises(ValueError, match="training needs an rng"):
        draw(cell, 5, 2, None, training=True)


def test_same_seed_same_masks_and_different_seeds_differ() -> None:
    cell = _regularised_gru(0.3, 0.2, 0.1)
    a = draw(cell, 6, 3, np.random.default_rng(7), training=True)
    b = draw(cell, 6, 3, np.random.default_rng(7), training=True)
    c = draw(cell, 6, 3, np.random.default_rng(8), training=True)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])
    assert any(not np.array_equal(a[n], c[n]) for n in a)


def test_variational_masks_are_shared_by_steps_and_differ_across_sequences() -> None:
    cell = _regularised_gru(0.5, 0.0, 0.0)
    m = draw(cell, 8, 16, np.random.default_rng(0), training=True)["out.drop.mask"]
    assert m.shape == (8, 16, H)
    assert np.all(m == m[0])  # one mask per sequence
    assert len({m[0, i].tobytes() for i in range(16)}) > 1
    assert set(np.unique(m)) == {0.0, 2.0}  # inverted dropout: kept units scaled by 1/(1-p)


def test_zoneout_masks_change_at_every_step_and_keep_with_probability_p() -> None:
    cell = _regularised_gru(0.0, 0.0, 0.25)
    m = draw(cell, 50, 40, np.random.default_rng(0), training=True)["h.zoneout.mask"]
    assert set(np.unique(m)) == {0.0, 1.0}
    assert any(not np.array_equal(m[t], m[t + 1]) for t in range(49))
    assert abs(m.mean() - 0.25) < 0.02


def test_dropout_masks_keep_the_expected_value() -> None:
    cell = _regularised_gru(0.3, 0.0, 0.0)
    m = draw(cell, 1, 20000, np.random.default_rng(1), training=True)["out.drop.mask"]
    assert abs(m.mean() - 1.0) < 0.02
    assert abs((m == 0).mean() - 0.3) < 0.01


def test_float32_cells_get_float32_masks() -> None:
    b = CellBuilder("c", dtype=np.float32)
    x = b.input("x", 3)
    d = dropout_value(b, x, 3, 0.5, name="x.drop")
    b.output("y", d)
    cell = b.build()
    for training in (True, False):
        m = draw(cell, 2, 2, np.random.default_rng(0), training=training)["x.drop.mask"]
        assert m.dtype == np.float32


def _inputs(cell: mg.Cell, T: int, B: int, rng: np.random.Generator) -> dict[str, Array]:
    return {
        "x": rng.standard_normal((T, B, D)),
        "y": rng.standard_normal((T, B, H)),
    }


def test_a_cell_with_dropout_and_zoneout_passes_gradcheck_with_masks_fixed() -> None:
    cell = _regularised_gru(0.3, 0.2, 0.4)
    rng = np.random.default_rng(3)
    T, B = 5, 3
    inputs = _inputs(cell, T, B, rng)
    masks = draw(cell, T, B, np.random.default_rng(4), training=True)
    inputs.update({n: np.array(m) for n, m in masks.items()})
    assert any(np.any(m == 0) for m in masks.values())
    result = mg.gradcheck(cell, cell.init_params(0), inputs)
    assert result.max_rel_error < 1e-6
    assert result.checks > 0


def test_zoneout_at_evaluation_is_the_expectation() -> None:
    """Against a plain numpy tanh-RNN: h_t = p h_{t-1} + (1 - p) tanh(x W + h_{t-1} U)."""
    p, T, B = 0.3, 6, 2
    b = CellBuilder("rnn")
    x = b.input("x", D)
    h = b.state("h", H)
    W = b.param("W", (D, H), init=init.uniform(0.5))
    U = b.param("U", (H, H), init=init.uniform(0.5))
    h_next = mg.tanh(x @ W + h @ U, name="h_next")
    b.update(h, h_next)
    zoned = zoneout_states(b, ["h"], p)["h_next"]
    b.output("h", zoned)
    cell = b.build()
    params = cell.init_params(0)
    xs = np.random.default_rng(0).standard_normal((T, B, D))
    inputs = {"x": xs, **draw(cell, T, B, None, training=False)}
    out = mg.compile(cell).forward(params, inputs).outputs["h"]
    ref = np.zeros((B, H))
    for t in range(T):
        ref = p * ref + (1 - p) * np.tanh(xs[t] @ params["W"] + ref @ params["U"])
        np.testing.assert_allclose(out[t], ref, rtol=1e-13, atol=1e-14)


def test_evaluation_dropout_is_the_identity() -> None:
    with_drop = _regularised_gru(0.5, 0.5, 0.0)
    plain = _regularised_gru(0.0, 0.0, 0.0)
    T, B = 4, 2
    inputs = _inputs(plain, T, B, np.random.default_rng(0))
    params = plain.init_params(0)
    assert set(with_drop.init_params(0)) == set(params)
    ref = mg.compile(plain).forward(params, inputs)
    run = mg.compile(with_drop).forward(params, {**inputs, **draw(with_drop, T, B, None, False)})
    np.testing.assert_array_equal(run.outputs["out"], ref.outputs["out"])
    assert run.loss == ref.loss


def test_noise_inputs_travel_in_cell_descriptions() -> None:
    from minigrad.serialize import CellDescriptionError, from_dict, from_json, to_dict, to_json

    cell = _regularised_gru(0.3, 0.2, 0.1)
    again = from_json(to_json(cell))
    assert {n: s.noise for n, s in again.inputs.items()} == {
        n: s.noise for n, s in cell.inputs.items()
    }
    assert [type(again.ops[n].op) for n in again.order] == [
        type(cell.ops[n].op) for n in cell.order
    ]
    data = to_dict(cell)
    noisy = [item for item in data["inputs"] if "noise" in item]
    assert len(noisy) == 3
    noisy[0]["noise"]["rate"] = 1.5
    with pytest.raises(CellDescriptionError, match=r"inputs\[\d+\]: .*rate must be a number"):
        from_dict(data)
