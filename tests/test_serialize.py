"""Tests for minigrad.serialize: cells written down as JSON and built again."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_nodes import CASES, Case, _inputs

import minigrad as mg
from minigrad import CellBuilder, serialize
from minigrad import nodes as N
from minigrad.serialize import (
    CellDescriptionError,
    UnknownNodeTypeError,
    from_dict,
    from_json,
    node_types,
    register_node_type,
    to_dict,
    to_json,
)
from models.cells import CELLS
from models.nets.sequence import SequenceModel
from models.train import load_model
from models.train.checkpoint import save_checkpoint


@pytest.fixture(autouse=True)
def _fresh_node_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Node types a test registers do not leak into the next test."""
    monkeypatch.setattr(serialize, "_TYPES", dict(serialize._TYPES))


def _same_run(a: mg.Cell, b: mg.Cell, params: dict, inputs: dict) -> None:
    steps = next(iter(inputs.values())).shape[0]
    la, ga = mg.plan_of(a, steps).loss_and_grads(params, inputs)
    lb, gb = mg.plan_of(b, steps).loss_and_grads(params, inputs)
    assert la == lb
    assert ga.params.keys() == gb.params.keys()
    for k in ga.params:
        np.testing.assert_array_equal(ga.params[k], gb.params[k])


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("layers", [1, 2])
def test_every_registered_cell_round_trips(name: str, layers: int) -> None:
    model = SequenceModel(name, input_size=6, hidden_size=4, layers=layers)
    text = to_json(model.cell)
    cell = from_json(text)
    assert to_json(cell) == text
    assert list(cell.states) == model.states and list(cell.params) == list(model.params)
    # the same initial parameters from the same seed: the initialisers travel too
    p0, p1 = model.cell.init_params(3), cell.init_params(3)
    assert all(np.array_equal(p0[k], p1[k]) for k in p0)
    rng = np.random.default_rng(0)
    inputs = {
        "x": rng.standard_normal((5, 2, 6)),
        "t": (rng.uniform(size=(5, 2, 6)) > 0.5).astype(np.float64),
    }
    _same_run(model.cell, cell, model.params, inputs)


def _one_node_cell(case: Case) -> tuple[mg.Cell, dict, dict]:
    """A cell whose only operation is ``case``'s node, fed by inputs (or parameters
    for inputs without a batch dimension), with an L2 loss on its output (or the
    output itself when it is a per-row loss)."""
    b = CellBuilder(f"one_{case.name}")
    xs = _inputs(case, np.float64)
    refs, params, inputs = [], {}, {}
    for i, (sym, x) in enumerate(zip(case.sym, xs, strict=True)):
        if "B" in sym:
            refs.append(b.input(f"in{i}", tuple(sym[1:])))
            inputs[f"in{i}"] = np.stack([x, x * 0.5])  # (T=2, B, ...)
        else:
            refs.append(b.param(f"p{i}", tuple(sym), init=mg.init.uniform(0.5)))
            params[f"p{i}"] = x
    y = b.node("y", case.make(), *refs)
    if case.out_sym == ("B",):
        b.loss(y)
    else:
        t = b.input("target", tuple(case.out_sym[1:]))
        inputs["target"] = np.zeros((2, 3, *case.out_sym[1:]))
        b.loss(mg.l2_loss(y, t, name="loss"))
    return b.build(), params, inputs


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_builtin_node_type_round_trips(case: Case) -> None:
    cell, params, inputs = _one_node_cell(case)
    text = to_json(cell)
    again = from_json(text)
    assert type(again.ops["y"].op) is type(cell.ops["y"].op)
    assert vars(again.ops["y"].op) == vars(cell.ops["y"].op)
    _same_run(cell, again, params, inputs)


def test_cases_cover_every_registered_builtin() -> None:
    covered = {type(c.make()) for c in CASES}
    builtin = {cls for cls in node_types().values() if cls.__module__ == N.__name__}
    assert builtin <= covered


def test_the_description_is_plain_data() -> None:
    data = to_dict(SequenceModel("lstm", hidden_size=3).cell)
    assert json.loads(json.dumps(data)) == data
    node = next(n for n in data["nodes"] if n["type"] == "Affine")
    assert set(node) == {"name", "type", "attrs", "inputs"}
    assert {s["name"] for s in data["states"]} == {"h", "c"}


def test_nan_and_infinite_attributes_are_refused() -> None:
    b = CellBuilder("nan")
    x = b.input("x", 2)
    with pytest.raises(mg.GraphError, match="Scale: constant c must be finite"):
        mg.scale(x, float("nan"))  # refused at build time already
    op = mg.Scale(1.0)
    op.c = float("nan")  # a node changed after it was built
    b.loss(mg.l2_loss(b.node("s", op, x), x, name="loss"))
    with pytest.raises(CellDescriptionError, match=r"node 's' \(Scale\) attribute 'c' is nan"):
        to_json(b.build())
    text = to_json(SequenceModel("tanh", hidden_size=2).cell).replace(
        '"nodes": [', '"nodes": [{"name": "s", "type": "Scale", "attrs": {"c": Infinity}, '
        '"inputs": ["x"]}, ', 1
    )
    with pytest.raises(CellDescriptionError, match="Infinity is not allowed"):
        from_json(text)


def test_a_description_with_too_many_nodes_is_refused_before_building() -> None:
    # a 369 KB model file listing 20,000 unused nodes took 61 s and 1 GB to load
    data = to_dict(SequenceModel("gru", hidden_size=2, layers=64).cell)
    assert len(data["nodes"]) < serialize.MAX_ITEMS  # the largest built-in stacks load
    from_dict(data)
    extra = [
        {"name": f"t{i}", "type": "Tanh", "attrs": {}, "inputs": ["x" if i == 0 else f"t{i - 1}"]}
        for i in range(serialize.MAX_ITEMS)
    ]
    data["nodes"] = data["nodes"] + extra
    with pytest.raises(CellDescriptionError, match="nodes, more than the 5,000"):
        from_dict(data)


def test_an_unknown_node_type_names_it_and_the_cure() -> None:
    text = to_json(SequenceModel("tanh", hidden_size=2).cell).replace('"Tanh"', '"LayerNormX"')
    with pytest.raises(UnknownNodeTypeError) as info:
        from_json(text)
    msg = str(info.value)
    assert "'LayerNormX'" in msg and "--import" in msg and "minigrad.nodes" in msg
    assert "\n" not in msg


def test_a_user_node_type_registered_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    class Twice(N.Node):
        def __init__(self, k: int = 2) -> None:
            self.k = k

        def forward(self, *xs: np.ndarray) -> np.ndarray:
            return xs[0] * self.k

        def vjp(self, g: np.ndarray, y: np.ndarray, *xs: np.ndarray) -> tuple[np.ndarray, ...]:
            return (g * self.k,)

    b = CellBuilder("twice")
    x = b.input("x", 2)
    b.loss(mg.l2_loss(b.node("y", Twice(3), x), x, name="loss"))
    cell = b.build()
    text = to_json(cell)  # registers Twice under its class name
    assert json.loads(text)["nodes"][0] == {
        "name": "y", "type": "Twice", "attrs": {"k": 3}, "inputs": ["x"]
    }
    assert from_json(text).ops["y"].op.k == 3

    class Other(Twice):
        pass

    Other.__name__ = "Twice"
    with pytest.raises(CellDescriptionError, match="'Twice' is taken"):
        register_node_type(Other)


def test_a_node_that_hides_its_constructor_argument_is_refused() -> None:
    class Hidden(N.Node):
        def __init__(self, slope: float) -> None:
            self._slope = slope

        def forward(self, *xs: np.ndarray) -> np.ndarray:
            return xs[0] * self._slope

        def vjp(self, g: np.ndarray, y: np.ndarray, *xs: np.ndarray) -> tuple[np.ndarray, ...]:
            return (g * self._slope,)

    b = CellBuilder("hidden")
    x = b.input("x", 2)
    b.loss(mg.l2_loss(b.node("y", Hidden(0.5), x), x, name="loss"))
    with pytest.raises(CellDescriptionError, match=r"'slope' is not kept as attribute self\.slope"):
        to_json(b.build())


def test_a_crafted_file_naming_code_is_refused_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported.txt"
    (tmp_path / "evil_cells.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "class Boom:\n    pass\n"
        "def frag(*a, **k):\n    raise SystemExit('ran')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = SequenceModel("tanh", input_size=88, hidden_size=2)
    data = to_dict(model.cell)
    for i, kind in enumerate(("evil_cells:Boom", "evil_cells.Boom")):
        data["nodes"][0]["type"] = kind
        path = tmp_path / f"model{i}.npz"
        save_checkpoint(
            path,
            params=model.params,
            optimizer={},
            epoch=1,
            rng_state=np.random.default_rng(0).bit_generator.state,
            config={"cell": "evil_cells:frag", "hidden": 2},
            extra={"kind": "model", "model": {**model.config(), "cell": "evil_cells:frag"}},
            cell=json.dumps(data),
        )
        with pytest.raises(UnknownNodeTypeError, match=f"unknown node type '{kind}'"):
            load_model(path)
    assert not marker.exists() and "evil_cells" not in sys.modules


def test_node_types_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata
    import types

    class Halve(N.Node):
        def forward(self, *xs: np.ndarray) -> np.ndarray:
            return xs[0] * 0.5

        def vjp(self, g: np.ndarray, y: np.ndarray, *xs: np.ndarray) -> tuple[np.ndarray, ...]:
            return (g * 0.5,)

    module = types.ModuleType("plugin_nodes")

    class Double(Halve):
        def forward(self, *xs: np.ndarray) -> np.ndarray:
            return xs[0] * 2.0

    Double.__module__ = "plugin_nodes"
    module.Double = Double  # type: ignore[attr-defined]

    class EP:
        def __init__(self, name: str, obj: object) -> None:
            self.name, self.value, self.obj = name, f"plugin:{name}", obj

        def load(self) -> object:
            return self.obj

    def entry_points(*, group: str) -> list[EP]:
        return [EP("Halve", Halve), EP("more", module)] if group == "minigrad.nodes" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(serialize, "_entry_points_loaded", False)
    text = to_json(SequenceModel("tanh", hidden_size=2).cell)
    assert "Halve" not in node_types() and "Double" not in node_types()
    for name, cls in (("Halve", Halve), ("Double", Double)):
        cell = from_json(text.replace('"Tanh"', f'"{name}"', 1))  # loads the entry points
        assert any(type(op.op) is cls for op in cell.ops.values())
    assert node_types()["Halve"] is Halve and node_types()["Double"] is Double
