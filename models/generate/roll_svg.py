"""A piano roll as SVG, the primed part marked."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

from models.train.svg import axis_ticks, nice_step, open_svg, svg_num, svg_text


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
    levels = np.rint(values * 100.0).astype(np.int64)
    for column in range(n_pitches):
        track = levels[:, column]
        if not track.any():
            continue
        starts = np.flatnonzero(np.diff(track)) + 1
        bounds = sorted({0, n_steps, *starts.tolist(), *([primed_steps] if primed_steps else [])})
        y = svg_num(py0 + (n_pitches - 1 - column) * row_h)
        for t0, t1 in itertools.pairwise(bounds):
            level = int(track[t0])
            if level == 0 or t1 <= t0:
                continue
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

