"""The learning curves of a run as SVG (``curves.svg``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from models.train.svg import (
    PALETTE,
    axis_ticks,
    nice_step,
    open_svg,
    svg_attr,
    svg_num,
    svg_text,
    tick_label,
)


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
    x_step = max(1.0, nice_step(x_hi - x_lo, 8))

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
    y_step = nice_step(y_hi - y_lo, 5)
    y_lo = math.floor(y_lo / y_step + 1e-9) * y_step
    y_hi = math.ceil(y_hi / y_step - 1e-9) * y_step

    def sx(x: float) -> float:
        return px0 + (x - x_lo) / (x_hi - x_lo) * (px1 - px0)

    def sy(y: float) -> float:
        return py1 - (y - y_lo) / (y_hi - y_lo) * (py1 - py0)

    parts = open_svg(width, height, title)

    # Grid and y ticks.
    for y in axis_ticks(y_lo, y_hi, y_step):
        yy = svg_num(sy(y))
        parts.append(
            f'<line class="grid" x1="{svg_num(px0)}" y1="{yy}" x2="{svg_num(px1)}" y2="{yy}" '
            'stroke="#e0e0e0" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="tick-label" x="{svg_num(px0 - 6)}" y="{yy}" text-anchor="end" '
            f'dominant-baseline="middle">{svg_text(tick_label(y, y_step))}</text>'
        )
    # x ticks.
    for x in axis_ticks(x_lo, x_hi, x_step):
        xx = svg_num(sx(x))
        parts.append(
            f'<line class="tick" x1="{xx}" y1="{svg_num(py1)}" x2="{xx}" y2="{svg_num(py1 + 5)}" '
            'stroke="black" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="tick-label" x="{xx}" y="{svg_num(py1 + 18)}" '
            f'text-anchor="middle">{svg_text(tick_label(x, x_step))}</text>'
        )
    # Axes and their labels.
    parts.append(
        f'<line class="axis" x1="{svg_num(px0)}" y1="{svg_num(py1)}" x2="{svg_num(px1)}" '
        f'y2="{svg_num(py1)}" stroke="black" stroke-width="1"/>'
    )
    parts.append(
        f'<line class="axis" x1="{svg_num(px0)}" y1="{svg_num(py0)}" x2="{svg_num(px0)}" '
        f'y2="{svg_num(py1)}" stroke="black" stroke-width="1"/>'
    )
    parts.append(
        f'<text class="axis-label" x="{svg_num((px0 + px1) / 2)}" y="{svg_num(height - 14)}" '
        'text-anchor="middle">epoch</text>'
    )
    ly = (py0 + py1) / 2
    parts.append(
        f'<text class="axis-label" x="18" y="{svg_num(ly)}" text-anchor="middle" '
        f'transform="rotate(-90 18 {svg_num(ly)})">{svg_text(ylabel)}</text>'
    )

    # Marker below the curves.
    if marker_epoch is not None:
        mx = svg_num(sx(float(marker_epoch)))
        parts.append(
            f'<line class="marker" x1="{mx}" y1="{svg_num(py0)}" x2="{mx}" y2="{svg_num(py1)}" '
            'stroke="#555555" stroke-width="1.5" stroke-dasharray="5 4"/>'
        )
        parts.append(
            f'<text class="marker-label" x="{svg_num(sx(float(marker_epoch)) + 4)}" '
            f'y="{svg_num(py0 + 12)}" fill="#555555">'
            f"{svg_text(f'best epoch {marker_epoch}')}</text>"
        )

    # Curves.
    for index, (name, values) in enumerate(series.items()):
        colour = PALETTE[index % len(PALETTE)]
        points = [
            (sx(x), sy(float(v)))
            for x, v in zip(xs, values, strict=True)
            if math.isfinite(x) and math.isfinite(float(v))
        ]
        if points:
            coords = " ".join(f"{svg_num(x)},{svg_num(y)}" for x, y in points)
            parts.append(
                f'<polyline class="series" data-series={svg_attr(name)} points="{coords}" '
                f'fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round">'
                f"<title>{svg_text(name)}</title></polyline>"
            )
        if len(points) == 1:
            (x, y) = points[0]
            parts.append(
                f'<circle class="point" cx="{svg_num(x)}" cy="{svg_num(y)}" r="3" fill="{colour}"/>'
            )
        # Legend entry.
        ey = py0 + 10 + 20 * index
        parts.append(
            f'<line class="legend" x1="{svg_num(px1 + 14)}" y1="{svg_num(ey)}" '
            f'x2="{svg_num(px1 + 38)}" y2="{svg_num(ey)}" stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(
            f'<text class="legend" x="{svg_num(px1 + 44)}" y="{svg_num(ey)}" '
            f'dominant-baseline="middle">{svg_text(name)}</text>'
        )

    if not finite:
        parts.append(
            f'<text class="no-data" x="{svg_num((px0 + px1) / 2)}" y="{svg_num((py0 + py1) / 2)}" '
            'text-anchor="middle" fill="#888888">no finite values</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


