"""The results picture of docs/results.md: docs/results_figure.py and docs/results.json."""

from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
NS = "{http://www.w3.org/2000/svg}"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "results_figure", ROOT / "docs" / "results_figure.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "docs" / "results.json").read_text())
    return data


def test_the_committed_picture_is_the_one_the_results_give() -> None:
    svg = _script().results_svg(_data())
    assert (ROOT / "docs" / "img" / "results.svg").read_text(encoding="utf-8") == svg


def test_results_match_the_documented_tables() -> None:
    data = _data()
    results = (ROOT / "docs" / "results.md").read_text()
    minigrad = data["sources"]["minigrad"]["results"]
    for data_set in ("jsb", "nottingham"):
        for model, value in minigrad[data_set].items():
            if value != "pending":  # each number is bold in a table of results.md
                assert f"**{value:.3f}**" in results, (data_set, model)
    chung = data["sources"]["chung2014"]["results"]
    assert chung["jsb"] == {"tanh-RNN": 9.10, "GRU": 8.54, "LSTM": 8.67}
    assert chung["nottingham"] == {"tanh-RNN": 3.13, "GRU": 3.23, "LSTM": 3.20}


def test_every_result_is_drawn_and_pending_ones_are_named() -> None:
    data = _data()
    root = ET.fromstring(_script().results_svg(data))
    drawn = [e for e in root.iter() if e.get("class") == "result"]
    numbers = sum(
        1
        for src in data["sources"].values()
        for row in src["results"].values()
        for v in row.values()
        if v != "pending"
    )
    assert len(drawn) == numbers
    n_pending = sum(
        1
        for src in data["sources"].values()
        for row in src["results"].values()
        for v in row.values()
        if v == "pending"
    )
    pending = [e for e in root.iter(f"{NS}text") if e.get("class") == "pending"]
    assert len(pending) == n_pending and all("pending" in "".join(e.itertext()) for e in pending)
    width = float(root.get("width") or 0)
    for e in drawn:
        points = (e.get("points") or "0,0").split()[0]
        x = float(e.get("cx") or e.get("x") or points.split(",")[0])
        assert 0 < x < width


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("models"), "missing key 'models'"),
        (
            lambda d: d["sources"]["minigrad"]["results"]["jsb"].update(GRU="8.4"),
            "source 'minigrad', 'jsb', 'GRU': expected a number or \"pending\"",
        ),
        (
            lambda d: d["sources"]["bai2018"]["results"]["jsb"].update(Transformer=8.0),
            "unknown model 'Transformer'",
        ),
    ],
)
def test_bad_results_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: Any, message: str
) -> None:
    data = _data()
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert _script().main([str(path), "-o", str(tmp_path / "out.svg")]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert not (tmp_path / "out.svg").exists()
