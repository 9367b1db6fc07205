"""The cell registry at run time: registering, specs, functions, entry points."""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_train import tiny_config, write_tiny_npz

import minigrad as mg
from minigrad import CellBuilder, Ref
from minigrad.init import layer_inits
from models.cells import registry
from models.cells.registry import CELLS, cell_origins, register_cell, resolve_cell
from models.nets.sequence import SequenceModel
from models.train import Reporter, TrainConfig, load_model, train
from models.train.checkpoint import load_checkpoint


def light_gru(
    b: CellBuilder, x: Ref, input_size: int, hidden_size: int, *, prefix: str = "",
    init: str = "default",
) -> Ref:  # fmt: skip
    """A GRU without reset gate (Ravanelli et al.'s Light GRU, with tanh)."""
    p, ini = prefix, layer_inits(init, hidden_size)
    h = b.state(f"{p}h", hidden_size)
    Wz, Wc = (b.param(f"{p}{n}", (input_size, hidden_size), init=ini.input) for n in ("Wz", "Wc"))
    Uz, Uc = (
        b.param(f"{p}{n}", (hidden_size, hidden_size), init=ini.recurrent) for n in ("Uz", "Uc")
    )
    z = mg.sigmoid(x @ Wz + h @ Uz, name=f"{p}z")
    c = mg.tanh(x @ Wc + h @ Uc, name=f"{p}c")
    h_next = mg.gru_update(z, h, c, name=f"{p}h_next")
    b.update(h, h_next)
    return h_next


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Cells a test registers do not leak into the next test (the dicts are restored
    in place: other modules hold them by reference)."""
    cells, origins = dict(CELLS), dict(registry._ORIGINS)
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    yield
    CELLS.clear()
    CELLS.update(cells)
    registry._ORIGINS.clear()
    registry._ORIGINS.update(origins)


def test_a_cell_registered_after_import_is_accepted_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown value 'light'"):
        TrainConfig(cell="light").validate()
    register_cell("light", light_gru)
    assert TrainConfig(cell="light").validate().cell == "light"
    assert SequenceModel("light", hidden_size=3).states == ["h"]
    assert cell_origins()["light"] == "registered"
    with pytest.raises(ValueError, match="already taken"):
        register_cell("light", lambda *a, **k: None)  # type: ignore[arg-type,return-value]


def test_python_api_takes_a_fragment_function(tmp_path: Path) -> None:
    data = write_tiny_npz(tmp_path / "tiny.npz")
    config = tiny_config(data, tmp_path / "run", cell=light_gru, epochs=1)
    assert config.to_dict()["cell"] == f"{__name__}:light_gru"
    assert config.out_dir() == tmp_path / "run"
    result = train(config, reporter=Reporter())
    ck = load_checkpoint(result.out / "checkpoint.npz")
    assert ck.config["cell"] == f"{__name__}:light_gru"
    model, _ = load_model(result.out / "model.npz")  # from the stored description
    assert set(model.params) == set(result.model.params) and "Uz" in model.params
    json.loads(ck.cell or "")


def test_a_spec_is_imported_only_when_resolved() -> None:
    name, frag = resolve_cell("test_registry:light_gru")
    assert name == "test_registry:light_gru" and frag.__name__ == "light_gru"
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        resolve_cell("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="has no function 'nope'"):
        resolve_cell("test_registry:nope")
    # a spec passes the configuration check by its form, without an import
    assert TrainConfig(cell="no_such_module_xyz:f").validate().cell_label() == "f"


class _EntryPoint:
    def __init__(self, name: str, obj: Any) -> None:
        self.name, self.value, self.obj = name, f"plugin:{name}", obj
        self.dist = type("Dist", (), {"name": "plugin-pkg"})()

    def load(self) -> Any:
        return self.obj


def test_entry_points_provide_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    def entry_points(*, group: str) -> list[_EntryPoint]:
        return [_EntryPoint("light_ep", light_gru)] if group == "minigrad.cells" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert "light_ep" not in CELLS
    assert resolve_cell("light_ep")[1] is light_gru
    assert cell_origins()["light_ep"] == "entry point of plugin-pkg (plugin:light_ep)"
