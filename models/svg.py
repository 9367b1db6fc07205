"""Dependency-free SVG pictures: learning curves and piano rolls.

The functions return the SVG document as a string (well-formed XML in the
SVG namespace, all text escaped), which :func:`write_svg` stores atomically.
Elements carry ``class`` attributes (``series``, ``marker``, ``note``,
``primed``, ``octave``, ...) so that pictures can be restyled with CSS or
inspected by tests.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import numpy.typing as npt

from models.checkpoint import atomic_write_text

__all__ = ["learning_curves_svg", "piano_roll_svg", "write_svg"]

SVG_NS = "http://www.w3.org/2000/svg"

# Colour-blind-safe palette (Okabe & Ito), cycled over the series.
_PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)

# Characters that XML 1.0 does not allow anywhere in a document.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _text(value: str) -> str:
    """Escape ``value`` for use as XML character data."""
    return escape(_XML_INVALID.sub("", value))


def _attr(value: str) -> str:
    """Escape and quote ``value`` for use as an XML attribute value."""
    return quoteattr(_XML_INVALID.sub("", value))


def _num(x: float) -> str:
    """Format a coordinate with at most two decimals and no trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _open_svg(width: float, height: float, title: str) -> list[str]:
    parts = [
        f'<svg xmlns="{SVG_NS}" width="{_num(width)}" height="{_num(height)}" '
        f'viewBox="0 0 {_num(width)} {_num(height)}" font-family="sans-serif" font-size="12">',
    ]
    if title:
        parts.append(f"<title>{_text(title)}</title>")
    parts.append(
        f'<rect class="background" x="0" y="0" width="{_num(width)}" '
        f'height="{_num(height)}" fill="white"/>'
    )
    if title:
        parts.append(
            f'<text class="title" x="{_num(width / 2)}" y="22" text-anchor="middle" '
            f'font-size="15" font-weight="bold">{_text(title)}</text>'
        )
    return parts


def _nice_step(span: float, target: int) -> float:
    """A step of the form 1, 2 or 5 times a power of ten giving about ``target`` intervals."""
    raw = span / max(target, 1)
    if not (raw > 0.0 and math.isfinite(raw)):
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if mult * magnitude >= raw * (1.0 - 1e-9):
            return mult * magnitude
    return 10.0 * magnitude


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    span = (hi - lo) / step
    if not math.isfinite(span) or span > 1000:  # overflowing ranges get no ticks
        return []
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _tick_label(value: float, step: float) -> str:
    if value == 0.0:
        return "0"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(value) >= 1e6 or decimals > 6:
        return f"{value:.4g}"
    return f"{value:.{decimals}f}"


def learning_curves_svg(
    epochs: Sequence[int],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    ylabel: str = "NLL per time step (nats)",
    marker_epoch: int | None = None,
) -> str:
    """Draw learning curves as an SVG line chart.

    Each series becomes one ``<polyline class="series">`` through its finite
    points, in the order given; NaN and infinite values are skipped (a series
    with no finite value gets no polyline, one with a single finite value
    gets a polyline and a ``<circle class="point">``). The y range covers
    the finite values (a constant series gets a small band around its
    value); the x range covers the epochs and the marker.

    Args:
        epochs: the epoch numbers, length ``E``.
        series: curve name (e.g. ``"train"``, ``"valid"``) -> values, each of
            length ``E``.
        title: chart title; empty for none.
        ylabel: label of the y axis.
        marker_epoch: if given, an epoch (e.g. the best one) marked by a
            dashed vertical ``<line class="marker">`` with a label.

    Returns:
        The SVG document.

    Raises:
        ValueError: naming the series, if a series' length differs from ``E``.
    """
    xs = [float(e) for e in epochs]
    for name, values in series.items():
        if len(values) != len(xs):
            raise ValueError(
                f"series {name!r} has {len(values)} values but there are {len(xs)} epochs"
            )

    width, height = 720.0, 420.0
    left, right, top, bottom = 76.0, 150.0, 44.0, 56.0
    px0, px1 = left, width - right
    py0, py1 = top, height - bottom

    # x domain: epochs and marker.
    x_candidates = [x for x in xs if math.isfinite(x)]
    if marker_epoch is not None:
        x_candidates.append(float(marker_epoch))
    if x_candidates:
        x_lo, x_hi = min(x_candidates), max(x_candidates)
    else:
        x_lo, x_hi = 0.0, 1.0
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1.0, x_hi + 1.0
    x_step = max(1.0, _nice_step(x_hi - x_lo, 8))

    # y domain: finite values, widened to whole ticks.
    finite = [
        float(v)
        for values in series.values()
        for v, x in zip(values, xs, strict=True)
        if math.isfinite(float(v)) and math.isfinite(x)
    ]
    if finite:
        y_lo, y_hi = min(finite), max(finite)
    else:
        y_lo, y_hi = 0.0, 1.0
    if y_hi == y_lo:
        pad = abs(y_lo) * 0.05 or 0.5
        y_lo, y_hi = y_lo - pad, y_hi + pad
    y_step = _nice_step(y_hi - y_lo, 5)
    y_lo = math.floor(y_lo / y_step + 1e-9) * y_step
    y_hi = math.ceil(y_hi / y_step - 1e-9) * y_step

    def sx(x: float) -> float:
        return px0 + (x - x_lo) / (x_hi - x_lo) * (px1 - px0)

    def sy(y: float) -> float:
        return py1 - (y - y_lo) / (y_hi - y_lo) * (py1 - py0)

    parts = _open_svg(width, height, title)

    # Grid and y ticks.
    for y in _ticks(y_lo, y_hi, y_step):
        yy = _num(sy(y))
        parts.append(
            f'<line class="grid" x1="{_num(px0)}" y1="{yy}" x2="{_num(px1)}" y2="{yy}" '
            'stroke="#e0e0e0" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="tick-label" x="{_num(px0 - 6)}" y="{yy}" text-anchor="end" '
            f'dominant-baseline="middle">{_text(_tick_label(y, y_step))}</text>'
        )
    # x ticks.
    for x in _ticks(x_lo, x_hi, x_step):
        xx = _num(sx(x))
        parts.append(
            f'<line class="tick" x1="{xx}" y1="{_num(py1)}" x2="{xx}" y2="{_num(py1 + 5)}" '
            'stroke="black" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="tick-label" x="{xx}" y="{_num(py1 + 18)}" '
            f'text-anchor="middle">{_text(_tick_label(x, x_step))}</text>'
        )
    # Axes and their labels.
    parts.append(
        f'<line class="axis" x1="{_num(px0)}" y1="{_num(py1)}" x2="{_num(px1)}" '
        f'y2="{_num(py1)}" stroke="black" stroke-width="1"/>'
    )
    parts.append(
        f'<line class="axis" x1="{_num(px0)}" y1="{_num(py0)}" x2="{_num(px0)}" '
        f'y2="{_num(py1)}" stroke="black" stroke-width="1"/>'
    )
    parts.append(
        f'<text class="axis-label" x="{_num((px0 + px1) / 2)}" y="{_num(height - 14)}" '
        'text-anchor="middle">epoch</text>'
    )
    ly = (py0 + py1) / 2
    parts.append(
        f'<text class="axis-label" x="18" y="{_num(ly)}" text-anchor="middle" '
        f'transform="rotate(-90 18 {_num(ly)})">{_text(ylabel)}</text>'
    )

    # Marker below the curves.
    if marker_epoch is not None:
        mx = _num(sx(float(marker_epoch)))
        parts.append(
            f'<line class="marker" x1="{mx}" y1="{_num(py0)}" x2="{mx}" y2="{_num(py1)}" '
            'stroke="#555555" stroke-width="1.5" stroke-dasharray="5 4"/>'
        )
        parts.append(
            f'<text class="marker-label" x="{_num(sx(float(marker_epoch)) + 4)}" '
            f'y="{_num(py0 + 12)}" fill="#555555">'
            f"{_text(f'best epoch {marker_epoch}')}</text>"
        )

    # Curves.
    for index, (name, values) in enumerate(series.items()):
        colour = _PALETTE[index % len(_PALETTE)]
        points = [
            (sx(x), sy(float(v)))
            for x, v in zip(xs, values, strict=True)
            if math.isfinite(x) and math.isfinite(float(v))
        ]
        if points:
            coords = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
            parts.append(
                f'<polyline class="series" data-series={_attr(name)} points="{coords}" '
                f'fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round">'
                f"<title>{_text(name)}</title></polyline>"
            )
        if len(points) == 1:
            (x, y) = points[0]
            parts.append(
                f'<circle class="point" cx="{_num(x)}" cy="{_num(y)}" r="3" fill="{colour}"/>'
            )
        # Legend entry.
        ey = py0 + 10 + 20 * index
        parts.append(
            f'<line class="legend" x1="{_num(px1 + 14)}" y1="{_num(ey)}" '
            f'x2="{_num(px1 + 38)}" y2="{_num(ey)}" stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(
            f'<text class="legend" x="{_num(px1 + 44)}" y="{_num(ey)}" '
            f'dominant-baseline="middle">{_text(name)}</text>'
        )

    if not finite:
        parts.append(
            f'<text class="no-data" x="{_num((px0 + px1) / 2)}" y="{_num((py0 + py1) / 2)}" '
            'text-anchor="middle" fill="#888888">no finite values</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _note_name(pitch: int) -> str:
    """Name of a MIDI C, e.g. 60 -> ``"C4"``."""
    return f"C{pitch // 12 - 1}"


def piano_roll_svg(
    roll: npt.NDArray[Any],
    *,
    pitch_lo: int = 21,
    primed_steps: int = 0,
    title: str = "",
) -> str:
    """Draw a piano roll as SVG: time runs left to right, pitch bottom to top.

    Each maximal run of consecutive time steps in which a pitch has the same
    value becomes one ``<rect class="note">``; runs are split at the end of
    the primed part, so primed and generated notes are separate rectangles
    (drawn grey and blue). Probabilities are shown as opacity, rounded to
    hundredths (values below 0.005 are not drawn). The primed steps are
    shaded (``<rect class="primed">``) and labelled, and every C gets a
    horizontal ``<line class="octave">`` at its lower edge with a label
    (MIDI 60 is ``C4``).

    Args:
        roll: array of shape ``(T, P)`` (``P = 88`` for a piano) of 0/1
            values or probabilities in ``[0, 1]``; bool arrays are accepted.
        pitch_lo: MIDI number of column 0 (21 = A0 for an 88-key roll).
        primed_steps: number of leading steps that were given as a primer
            rather than generated, in ``[0, T]``.
        title: picture title; empty for none.

    Returns:
        The SVG document.

    Raises:
        ValueError: if ``roll`` is not 2-d, has non-finite values or values
            outside ``[0, 1]``, or ``primed_steps`` / ``pitch_lo`` is out of range.
    """
    values = np.asarray(roll, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"roll must have shape (T, P), got shape {values.shape}")
    n_steps, n_pitches = values.shape
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError("roll contains non-finite values")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise ValueError(
            f"roll values must lie in [0, 1], got range [{values.min()}, {values.max()}]"
        )
    if not 0 <= primed_steps <= n_steps:
        raise ValueError(f"primed_steps must lie in [0, {n_steps}], got {primed_steps}")
    if pitch_lo < 0:
        raise ValueError(f"pitch_lo must be a non-negative MIDI number, got {pitch_lo}")

    row_h = 5.0
    cell_w = min(10.0, 800.0 / n_steps) if n_steps else 0.0
    plot_w = n_steps * cell_w if n_steps else 400.0
    plot_h = max(n_pitches, 1) * row_h
    left, right, bottom = 44.0, 16.0, 44.0
    top = 58.0 if title else 36.0
    width = left + plot_w + right
    height = top + plot_h + bottom
    px0, py0 = left, top
    py1 = top + plot_h

    parts = _open_svg(width, height, title)
    parts.append(
        f'<rect class="frame" x="{_num(px0)}" y="{_num(py0)}" width="{_num(plot_w)}" '
        f'height="{_num(plot_h)}" fill="#fcfcfc" stroke="#999999" stroke-width="1"/>'
    )

    # Primed part: shading, boundary and labels.
    label_y = _num(py0 - 8)
    if primed_steps > 0:
        primed_w = primed_steps * cell_w
        parts.append(
            f'<rect class="primed" x="{_num(px0)}" y="{_num(py0)}" width="{_num(primed_w)}" '
            f'height="{_num(plot_h)}" fill="#e6e6e6"/>'
        )
        bx = _num(px0 + primed_w)
        parts.append(
            f'<line class="primed-boundary" x1="{bx}" y1="{_num(py0 - 4)}" x2="{bx}" '
            f'y2="{_num(py1)}" stroke="#555555" stroke-width="1" stroke-dasharray="4 3"/>'
        )
        label = f"primed ({primed_steps} steps)"
        if len(label) * 6.5 + 6 <= primed_w:  # fits inside the shaded part
            label_x, anchor = px0 + primed_w - 3, "end"
        else:  # left-aligned with the plot, running over the boundary
            label, label_x, anchor = f"{label} |", px0, "start"
        parts.append(
            f'<text class="primed-label" x="{_num(label_x)}" y="{label_y}" '
            f'text-anchor="{anchor}" fill="#555555">{_text(label)}</text>'
        )
        if primed_steps < n_steps:
            gen_x = px0 + primed_w + 3 if anchor == "end" else px0 + len(label) * 6.5 + 6
            parts.append(
                f'<text class="generated-label" x="{_num(gen_x)}" y="{label_y}" '
                'fill="#0072B2">generated</text>'
            )

    # Octave lines at every C.
    for column in range(n_pitches):
        pitch = pitch_lo + column
        if pitch % 12:
            continue
        y = _num(py0 + (n_pitches - column) * row_h)
        parts.append(
            f'<line class="octave" x1="{_num(px0)}" y1="{y}" x2="{_num(px0 + plot_w)}" '
            f'y2="{y}" stroke="#cccccc" stroke-width="0.75"/>'
        )
        parts.append(
            f'<text class="octave-label" x="{_num(px0 - 5)}" y="{y}" text-anchor="end" '
            f'dominant-baseline="middle" font-size="10">{_note_name(pitch)}</text>'
        )

    # Notes: runs of equal non-zero level, split at the primed boundary.
    levels = np.rint(values * 100.0).astype(np.int64)
    for column in range(n_pitches):
        track = levels[:, column]
        if not track.any():
            continue
        starts = np.flatnonzero(np.diff(track)) + 1
        bounds = sorted({0, n_steps, *starts.tolist(), *([primed_steps] if primed_steps else [])})
        y = _num(py0 + (n_pitches - 1 - column) * row_h)
        for t0, t1 in itertools.pairwise(bounds):
            level = int(track[t0])
            if level == 0 or t1 <= t0:
                continue
            colour = "#777777" if t0 < primed_steps else "#0072B2"
            opacity = "" if level >= 100 else f' fill-opacity="{level / 100:g}"'
            parts.append(
                f'<rect class="note" x="{_num(px0 + t0 * cell_w)}" y="{y}" '
                f'width="{_num((t1 - t0) * cell_w)}" height="{_num(row_h)}" '
                f'fill="{colour}"{opacity}/>'
            )

    # Time axis.
    if n_steps:
        t_step = max(1.0, _nice_step(float(n_steps), 8))
        for t in _ticks(0.0, float(n_steps), t_step):
            tx = _num(px0 + t * cell_w)
            parts.append(
                f'<line class="tick" x1="{tx}" y1="{_num(py1)}" x2="{tx}" '
                f'y2="{_num(py1 + 4)}" stroke="black" stroke-width="1"/>'
            )
            parts.append(
                f'<text class="tick-label" x="{tx}" y="{_num(py1 + 16)}" text-anchor="middle" '
                f'font-size="10">{int(t)}</text>'
            )
    else:
        parts.append(
            f'<text class="no-data" x="{_num(px0 + plot_w / 2)}" y="{_num((py0 + py1) / 2)}" '
            'text-anchor="middle" fill="#888888">empty roll</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{_num(px0 + plot_w / 2)}" y="{_num(height - 8)}" '
        'text-anchor="middle">time step</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_svg(path: str | Path, svg: str) -> None:
    """Write an SVG document atomically (temporary file, fsync, ``os.replace``), as UTF-8.

    Args:
        path: the target file; its directory must exist.
        svg: the document, e.g. from :func:`learning_curves_svg`.
    """
    atomic_write_text(path, svg)
