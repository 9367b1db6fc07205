"""Tests for models.train.svg: well-formed SVG, element counts, escaping, edge cases."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from models.generate.roll_svg import piano_roll_svg
from models.train.curves import learning_curves_svg
from models.train.svg import write_svg

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    return root


def _by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{NS}{tag}") if e.get("class") == cls]


def _points(polyline: ET.Element) -> list[tuple[float, float]]:
    pairs = (p.split(",") for p in (polyline.get("points") or "").split())
    return [(float(x), float(y)) for x, y in pairs]


def _texts(root: ET.Element) -> list[str]:
    return ["".join(e.itertext()) for e in root.iter(f"{NS}text")]


# -- learning curves -------------------------------------------------------------


def test_curves_structure() -> None:
    epochs = list(range(1, 11))
    series = {
        "train": [2.0 - 0.1 * i for i in range(10)],
        "valid": [2.1 - 0.08 * i for i in range(10)],
    }
    root = _parse(learning_curves_svg(epochs, series, title="JSB", marker_epoch=6))
    lines = _by_class(root, "polyline", "series")
    assert [pl.get("data-series") for pl in lines] == ["train", "valid"]
    assert all(len(_points(pl)) == 10 for pl in lines)
    markers = _by_class(root, "line", "marker")
    assert len(markers) == 1
    texts = _texts(root)
    assert "best epoch 6" in texts
    assert {"train", "valid", "epoch", "NLL per time step (nats)", "JSB"} <= set(texts)
    assert len(_by_class(root, "text", "tick-label")) >= 4
    # Lower loss is drawn higher up: the train curve's last point is above its first.
    train = _points(lines[0])
    assert train[-1][1] > train[0][1]
    # The marker sits at the x of epoch 6 on the curve.
    assert float(markers[0].get("x1") or "nan") == pytest.approx(train[5][0])


def test_curves_points_within_plot() -> None:
    root = _parse(learning_curves_svg([0, 5, 10], {"a": [100.0, -3.0, 42.0]}))
    width = float(root.get("width") or 0)
    height = float(root.get("height") or 0)
    for x, y in _points(_by_class(root, "polyline", "series")[0]):
        assert 0 < x < width and 0 < y < height


def test_curves_nan_and_inf_points_skipped() -> None:
    nan, inf = float("nan"), float("inf")
    series = {"train": [3.0, nan, 2.0, inf, 1.0], "valid": [nan] * 5}
    svg = learning_curves_svg([1, 2, 3, 4, 5], series)
    root = _parse(svg)
    lines = _by_class(root, "polyline", "series")
    assert len(lines) == 1  # the all-NaN series has nothing to draw
    assert len(_points(lines[0])) == 3
    for element in root.iter():
        for name, value in element.attrib.items():
            if name in {"points", "x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "width", "height"}:
                assert "nan" not in value.lower() and "inf" not in value.lower(), (name, value)
    assert "valid" in _texts(root)  # still in the legend


def test_curves_all_nan() -> None:
    root = _parse(learning_curves_svg([1, 2], {"train": [float("nan")] * 2}))
    assert _by_class(root, "polyline", "series") == []
    assert "no finite values" in _texts(root)


def test_curves_single_epoch() -> None:
    root = _parse(learning_curves_svg([1], {"train": [1.5]}, marker_epoch=1))
    lines = _by_class(root, "polyline", "series")
    assert len(lines) == 1 and len(_points(lines[0])) == 1
    assert len(_by_class(root, "circle", "point")) == 1
    assert len(_by_class(root, "line", "marker")) == 1


def test_curves_constant_series() -> None:
    root = _parse(learning_curves_svg([1, 2, 3], {"train": [0.7, 0.7, 0.7]}))
    points = _points(_by_class(root, "polyline", "series")[0])
    ys = {y for _, y in points}
    assert len(ys) == 1
    assert "0.70" in _texts(root) or "0.7" in _texts(root)


def test_curves_no_epochs() -> None:
    root = _parse(learning_curves_svg([], {"train": []}))
    assert _by_class(root, "polyline", "series") == []


def test_curves_length_mismatch() -> None:
    with pytest.raises(ValueError, match="'valid'"):
        learning_curves_svg([1, 2], {"train": [1.0, 2.0], "valid": [1.0]})


def test_curves_escaping() -> None:
    title = "Loss <&> \"quoted\" 'single'"
    svg = learning_curves_svg(
        [1, 2],
        {"a<b & c>": [1.0, 2.0]},
        title=title,
        ylabel="bits < nats & more",
    )
    root = _parse(svg)
    texts = _texts(root)
    assert title in texts
    assert "a<b & c>" in texts
    assert "bits < nats & more" in texts
    assert _by_class(root, "polyline", "series")[0].get("data-series") == "a<b & c>"
    svg_title = root.find(f"{NS}title")
    assert svg_title is not None and svg_title.text == title


def test_control_characters_do_not_break_xml() -> None:
    _parse(learning_curves_svg([1], {"x\x00\x07": [1.0]}, title="bell\x07"))


# -- piano roll ------------------------------------------------------------------


def test_piano_roll_merges_runs() -> None:
    roll = np.zeros((10, 88))
    roll[0:4, 39] = 1  # one run of 4 steps (MIDI 60 = C4)
    roll[6, 39] = 1  # a separate single step
    roll[2:10, 50] = 1  # one run to the end
    roll[0, 0] = 1
    root = _parse(piano_roll_svg(roll))
    notes = _by_class(root, "rect", "note")
    assert len(notes) == 4
    widths = sorted(float(n.get("width") or 0) for n in notes)
    cell = widths[0]
    assert widths == pytest.approx([cell, cell, 4 * cell, 8 * cell])


def test_piano_roll_pitch_goes_up() -> None:
    roll = np.zeros((2, 88))
    roll[0, 10] = 1
    roll[1, 80] = 1
    notes = _by_class(_parse(piano_roll_svg(roll)), "rect", "note")
    by_x = sorted(notes, key=lambda n: float(n.get("x") or 0))
    low, high = (float(n.get("y") or 0) for n in by_x)
    assert high < low  # higher pitch is drawn nearer the top


def test_piano_roll_octave_lines() -> None:
    root = _parse(piano_roll_svg(np.zeros((4, 88))))
    assert len(_by_class(root, "line", "octave")) == 8  # C1 .. C8 on an 88-key piano
    labels = ["".join(e.itertext()) for e in _by_class(root, "text", "octave-label")]
    assert labels == [f"C{i}" for i in range(1, 9)]


def test_piano_roll_primed_part() -> None:
    roll = np.zeros((20, 88))
    roll[5:15, 40] = 1  # crosses the primer boundary: split in two
    root = _parse(piano_roll_svg(roll, primed_steps=8, title="sample"))
    primed = _by_class(root, "rect", "primed")
    assert len(primed) == 1
    notes = sorted(_by_class(root, "rect", "note"), key=lambda n: float(n.get("x") or 0))
    assert len(notes) == 2
    assert notes[0].get("fill") != notes[1].get("fill")
    assert float(primed[0].get("width") or 0) == pytest.approx(
        float(notes[1].get("x") or 0) - float(primed[0].get("x") or 0)
    )
    texts = _texts(root)
    assert any(t.startswith("primed (8 steps)") for t in texts)
    assert "generated" in texts
    assert len(_by_class(root, "line", "primed-boundary")) == 1


def test_piano_roll_no_primer() -> None:
    root = _parse(piano_roll_svg(np.ones((3, 88))))
    assert _by_class(root, "rect", "primed") == []
    assert len(_by_class(root, "rect", "note")) == 88


def test_piano_roll_probabilities() -> None:
    roll = np.zeros((6, 88))
    roll[0:3, 20] = 0.5
    roll[3:6, 20] = 0.25
    roll[0:6, 30] = 0.001  # rounds to zero: not drawn
    notes = _by_class(_parse(piano_roll_svg(roll)), "rect", "note")
    assert len(notes) == 2
    assert sorted(float(n.get("fill-opacity") or 1) for n in notes) == [0.25, 0.5]


@pytest.mark.parametrize("shape", [(0, 88), (12, 88)])
def test_piano_roll_empty(shape: tuple[int, int]) -> None:
    root = _parse(piano_roll_svg(np.zeros(shape), title="<empty & silent>"))
    assert _by_class(root, "rect", "note") == []
    assert "<empty & silent>" in _texts(root)


def test_piano_roll_bool_and_other_ranges() -> None:
    roll = np.zeros((4, 12), dtype=bool)
    roll[1:3, 0] = True
    root = _parse(piano_roll_svg(roll, pitch_lo=60))
    assert len(_by_class(root, "rect", "note")) == 1
    labels = ["".join(e.itertext()) for e in _by_class(root, "text", "octave-label")]
    assert labels == ["C4"]


@pytest.mark.parametrize(
    ("roll", "kwargs", "pattern"),
    [
        (np.zeros(88), {}, "shape"),
        (np.full((2, 88), 2.0), {}, r"\[0, 1\]"),
        (np.full((2, 88), np.nan), {}, "non-finite"),
        (np.zeros((2, 88)), {"primed_steps": 3}, "primed_steps"),
        (np.zeros((2, 88)), {"pitch_lo": -1}, "pitch_lo"),
    ],
)
def test_piano_roll_validation(roll: np.ndarray, kwargs: dict[str, int], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        piano_roll_svg(roll, **kwargs)  # type: ignore[arg-type]


def test_write_svg(tmp_path: Path) -> None:
    svg = piano_roll_svg(np.eye(5, 88), title="é <&>")
    path = tmp_path / "roll.svg"
    write_svg(path, svg)
    assert path.read_text(encoding="utf-8") == svg
    assert ET.parse(path).getroot().tag == f"{NS}svg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roll.svg"]


def test_curves_extreme_values() -> None:
    root = _parse(learning_curves_svg([1, 2, 3], {"train": [-1e308, 1e308, 1e30]}))
    assert len(_by_class(root, "polyline", "series")) == 1


# -- readable learning curves: robust range, legend row, extra panels -------------


def _frames(root: ET.Element) -> list[ET.Element]:
    return _by_class(root, "rect", "frame")


def _long_run() -> tuple[list[int], dict[str, list[float]]]:
    epochs = list(range(1, 61))
    train = [27.0, 12.0, 10.0] + [9.0 - 0.02 * e for e in range(4, 61)]
    valid = [20.0, 11.0, 9.8] + [9.1 - 0.01 * e for e in range(4, 61)]
    return epochs, {"train": train, "valid": valid}


def test_first_epochs_do_not_flatten_the_curves() -> None:
    epochs, series = _long_run()
    root = _parse(learning_curves_svg(epochs, series, marker_epoch=50))
    ticks = [float(t) for t in _texts(root) if t.replace(".", "").isdigit()]
    y_ticks = [t for t in ticks if t < 20]  # epoch ticks are 10, 20, ...
    assert max(y_ticks) < 12  # the scale follows the later epochs, not epoch 1's 27
    notes = " ".join("".join(e.itertext()) for e in _by_class(root, "text", "note"))
    assert "epochs 1 to 3 lie above it (up to 27)" in notes
    assert "axis cut at" in notes and "after the first" not in notes
    frame = _frames(root)[0]
    top = float(frame.get("y") or 0)
    bottom = top + float(frame.get("height") or 0)
    for pl in _by_class(root, "polyline", "series"):
        for _x, y in _points(pl):
            assert top - 1e-6 <= y <= bottom + 1e-6  # cut at the edge, never outside


def test_legend_and_marker_label_sit_above_the_plot() -> None:
    epochs, series = _long_run()
    root = _parse(learning_curves_svg(epochs, series, title="t", marker_epoch=50))
    plot_top = float(_frames(root)[0].get("y") or 0)
    legend = _by_class(root, "text", "legend")
    assert [e.text for e in legend] == ["train", "valid", "best epoch 50"]
    assert all(float(e.get("y") or 0) < plot_top for e in legend)
    width = float(root.get("width") or 0)
    assert all(float(e.get("x") or 0) + 7 * len(e.text or "") < width for e in legend)


def test_panels_only_when_they_vary() -> None:
    epochs, series = _long_run()
    lr_const = {"learning rate": {"lr": [3e-3] * 60}}
    root = _parse(learning_curves_svg(epochs, series, panels=lr_const))
    assert len(_frames(root)) == 1
    assert any("learning rate 0.003 throughout" in t for t in _texts(root))
    varying = {
        "learning rate": {"lr": [3e-3 * 0.5 ** (e // 20) for e in epochs]},
        "gradient norm": {"mean": [1.0 + 1 / e for e in epochs], "max": [2.0] * 60},
    }
    root = _parse(learning_curves_svg(epochs, series, panels=varying, marker_epoch=50))
    frames = _frames(root)
    assert len(frames) == 3
    tops = [float(f.get("y") or 0) for f in frames]
    heights = [float(f.get("height") or 0) for f in frames]
    assert all(tops[i] + heights[i] < tops[i + 1] for i in range(2))  # no overlap
    assert len(_by_class(root, "line", "marker")) == 3  # the marker crosses every panel
    names = [pl.get("data-series") for pl in _by_class(root, "polyline", "series")]
    assert names == ["train", "valid", "lr", "mean", "max"]
    with pytest.raises(ValueError, match="'max'"):
        learning_curves_svg([1, 2], {"a": [1.0, 2.0]}, panels={"g": {"max": [1.0]}})


def test_a_panel_legend_moves_left_of_a_best_epoch_line_at_its_right() -> None:
    epochs, series = _long_run()
    panels = {"gradient norm": {"mean, before clipping at 1": [1.0 + 1 / e for e in epochs],
                                "max": [2.0 + 1 / e for e in epochs]}}
    for marker, anchor in ((60, "start"), (20, "end")):
        root = _parse(learning_curves_svg(epochs, series, panels=panels, marker_epoch=marker))
        (line, *_rest) = _by_class(root, "line", "marker")
        mx = float(line.get("x1") or 0)
        legend = _by_class(root, "text", "panel-legend")
        assert {e.get("text-anchor") for e in legend} == {anchor}
        for e in legend:  # the line passes clear of every name
            x = float(e.get("x") or 0)
            w = 6.2 * len(e.text or "")
            left, right = (x, x + w) if anchor == "start" else (x - w, x)
            assert not left - 2 <= mx <= right + 2, (marker, e.text)


def test_a_panel_spanning_many_decades_gets_a_log_axis() -> None:
    epochs, series = _long_run()
    spiky = [1.0 + 0.1 * (e % 3) for e in epochs]
    spiky[40], spiky[55] = 3e9, 2e11
    panels = {"gradient norm": {"mean": spiky, "max": [2 * v for v in spiky]}}
    root = _parse(learning_curves_svg(epochs, series, panels=panels, marker_epoch=50))
    assert any(t == "gradient norm (log)" for t in _texts(root))
    box = _frames(root)[1]
    top = float(box.get("y") or 0)
    bottom = top + float(box.get("height") or 0)
    labels = [e for e in _by_class(root, "text", "tick-label")
              if top - 1 <= float(e.get("y") or 0) <= bottom + 1 and e.get("text-anchor") == "end"]
    values = [float(e.text or "nan") for e in labels]
    assert values[0] == 1 and values[-1] == 1e12  # whole decades, from 1 to past the spike
    assert all(math.log10(v) == round(math.log10(v)) for v in values)
    # the usual values (about 1) sit in the lower part of the panel, not on its floor
    # for every point, and the spike reaches near the top
    (mean,) = [pl for pl in _by_class(root, "polyline", "series") if pl.get("data-series") == "mean"]
    ys = [y for _x, y in _points(mean)]
    assert min(ys) < top + 15 and max(ys) <= bottom
    # a panel within three decades keeps its linear axis
    root = _parse(learning_curves_svg(epochs, series, panels={"g": {"a": [1.0 + e for e in epochs],
                                                                   "b": [2.0] * 60}}))
    assert not any("(log)" in t for t in _texts(root))
