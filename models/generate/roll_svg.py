"""A piano roll as SVG, the primed part marked."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

from models.data.dataset import MIDI_MAX, check_pitch_range
from models.train.svg import axis_ticks, nice_step, open_svg, svg_num, svg_text


def _note_name(pitch: int) -> str:
    """Name of a MIDI C, e.g. 60 -> ``"C4"``."""
    return f"C{pitch // 12 - 1}"


MAX_COLUMNS = 1600
"""The most columns of notes drawn (the plot is 800 px wide): a longer roll is drawn in
bins of consecutive steps, each showing how often a note sounds in it, so the picture's
size and the memory it takes stay bounded for any length."""

_CHUNK = 1 << 13
"""Steps of a long roll read at a time."""


def _check_values(values: npt.NDArray[Any]) -> None:
    """Refuse non-finite values or values outside [0, 1], a block of steps at a time."""
    for a in range(0, values.shape[0], _CHUNK):
        block = values[a : a + _CHUNK]
        if not block.size:
            continue
        if block.dtype.kind == "f" and not np.all(np.isfinite(block)):
            raise ValueError("roll contains non-finite values")
        lo, hi = block.min(), block.max()
        if lo < 0 or hi > 1:
            raise ValueError(f"roll values must lie in [0, 1], got range [{lo}, {hi}]")


def _column_edges(n_steps: int, primed_steps: int) -> npt.NDArray[np.int64]:
    """The first step of each drawn column, then ``n_steps``: every step up to
    :data:`MAX_COLUMNS` steps, else bins of equal width, the primed part and the
    generated part binned separately."""
    if n_steps <= MAX_COLUMNS:
        return np.arange(n_steps + 1, dtype=np.int64)
    width = -(-n_steps // (MAX_COLUMNS - 2))  # leaves room for the primed boundary's bins
    starts = [*range(0, primed_steps, width), *range(primed_steps, n_steps, width)]
    return np.array([*starts, n_steps], dtype=np.int64)


def _column_levels(values: npt.NDArray[Any], edges: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """Each column's mean value per pitch in hundredths, ``(columns, P)`` int64."""
    n_cols = len(edges) - 1
    out = np.zeros((n_cols, values.shape[1]), dtype=np.int64)
    if n_cols == 0:
        return out
    widths = np.diff(edges)
    per_chunk = max(1, _CHUNK // int(widths.max()))
    for i in range(0, n_cols, per_chunk):
        j = min(n_cols, i + per_chunk)
        a, b = int(edges[i]), int(edges[j])
        sums = np.add.reduceat(values[a:b], edges[i:j] - a, axis=0, dtype=np.float64)
        out[i:j] = np.rint(sums / widths[i:j, None] * 100.0)
    return out


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
    hundredths (values below 0.005 are not drawn). A roll longer than
    :data:`MAX_COLUMNS` steps is drawn in bins of consecutive steps (the primed
    and generated parts binned apart), each bin showing a note's mean value in
    it as opacity: the picture stays the same size for any length. The primed steps are
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
    values = np.asarray(roll)
    if values.ndim != 2:
        raise ValueError(f"roll must have shape (T, P), got shape {values.shape}")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"roll must hold numbers in [0, 1], got dtype {values.dtype}")
    n_steps, n_pitches = values.shape
    _check_values(values)
    if not 0 <= primed_steps <= n_steps:
        raise ValueError(f"primed_steps must lie in [0, {n_steps}], got {primed_steps}")
    check_pitch_range(pitch_lo, MIDI_MAX)
    # edges[i] is the first step of drawn column i: every step, or bins of steps
    edges = _column_edges(n_steps, primed_steps)
    levels = _column_levels(values, edges)

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

    parts = open_svg(width, height, title)
    parts.append(
        f'<rect class="frame" x="{svg_num(px0)}" y="{svg_num(py0)}" width="{svg_num(plot_w)}" '
        f'height="{svg_num(plot_h)}" fill="#fcfcfc" stroke="#999999" stroke-width="1"/>'
    )

    # Primed part: shading, boundary and labels.
    label_y = svg_num(py0 - 8)
    if primed_steps > 0:
        primed_w = primed_steps * cell_w
        parts.append(
            f'<rect class="primed" x="{svg_num(px0)}" y="{svg_num(py0)}" '
            f'width="{svg_num(primed_w)}" height="{svg_num(plot_h)}" fill="#e6e6e6"/>'
        )
        bx = svg_num(px0 + primed_w)
        parts.append(
            f'<line class="primed-boundary" x1="{bx}" y1="{svg_num(py0 - 4)}" x2="{bx}" '
            f'y2="{svg_num(py1)}" stroke="#555555" stroke-width="1" stroke-dasharray="4 3"/>'
        )
        label = f"primed ({primed_steps} steps)"
        if len(label) * 6.5 + 6 <= primed_w:  # fits inside the shaded part
            label_x, anchor = px0 + primed_w - 3, "end"
        else:  # left-aligned with the plot, running over the boundary
            label, label_x, anchor = f"{label} |", px0, "start"
        parts.append(
            f'<text class="primed-label" x="{svg_num(label_x)}" y="{label_y}" '
            f'text-anchor="{anchor}" fill="#555555">{svg_text(label)}</text>'
        )
        if primed_steps < n_steps:
            gen_x = px0 + primed_w + 3 if anchor == "end" else px0 + len(label) * 6.5 + 6
            parts.append(
                f'<text class="generated-label" x="{svg_num(gen_x)}" y="{label_y}" '
                'fill="#0072B2">generated</text>'
            )

    # Octave lines at every C.
    for column in range(n_pitches):
        pitch = pitch_lo + column
        if pitch % 12:
            continue
        y = svg_num(py0 + (n_pitches - column) * row_h)
        parts.append(
            f'<line class="octave" x1="{svg_num(px0)}" y1="{y}" x2="{svg_num(px0 + plot_w)}" '
            f'y2="{y}" stroke="#cccccc" stroke-width="0.75"/>'
        )
        parts.append(
            f'<text class="octave-label" x="{svg_num(px0 - 5)}" y="{y}" text-anchor="end" '
            f'dominant-baseline="middle" font-size="10">{_note_name(pitch)}</text>'
        )

    # Notes: runs of equal non-zero level, split at the primed boundary.
    primed_col = int(np.searchsorted(edges, primed_steps))
    n_cols = len(edges) - 1
    for column in range(n_pitches):
        track = levels[:, column]
        if not track.any():
            continue
        starts = np.flatnonzero(np.diff(track)) + 1
        bounds = sorted({0, n_cols, *starts.tolist(), *([primed_col] if primed_steps else [])})
        y = svg_num(py0 + (n_pitches - 1 - column) * row_h)
        for c0, c1 in itertools.pairwise(bounds):
            level = int(track[c0])
            if level == 0 or c1 <= c0:
                continue
            t0, t1 = int(edges[c0]), int(edges[c1])
            colour = "#777777" if t0 < primed_steps else "#0072B2"
            opacity = "" if level >= 100 else f' fill-opacity="{level / 100:g}"'
            parts.append(
                f'<rect class="note" x="{svg_num(px0 + t0 * cell_w)}" y="{y}" '
                f'width="{svg_num((t1 - t0) * cell_w)}" height="{svg_num(row_h)}" '
                f'fill="{colour}"{opacity}/>'
            )

    # Time axis.
    if n_steps:
        t_step = max(1.0, nice_step(float(n_steps), 8))
        for t in axis_ticks(0.0, float(n_steps), t_step):
            tx = svg_num(px0 + t * cell_w)
            parts.append(
                f'<line class="tick" x1="{tx}" y1="{svg_num(py1)}" x2="{tx}" '
                f'y2="{svg_num(py1 + 4)}" stroke="black" stroke-width="1"/>'
            )
            parts.append(
                f'<text class="tick-label" x="{tx}" y="{svg_num(py1 + 16)}" text-anchor="middle" '
                f'font-size="10">{int(t)}</text>'
            )
    else:
        parts.append(
            f'<text class="no-data" x="{svg_num(px0 + plot_w / 2)}" y="{svg_num((py0 + py1) / 2)}" '
            'text-anchor="middle" fill="#888888">empty roll</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{svg_num(px0 + plot_w / 2)}" y="{svg_num(height - 8)}" '
        'text-anchor="middle">time step</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
