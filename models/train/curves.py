"""The learning curves of a run as SVG (``curves.svg``).

The picture is made to be read at a glance:

* the y range of the main panel follows the later epochs when the first
  ones would flatten them: ``robust_range`` spans the lowest value and the
  98th percentile of the values after the first tenth of the epochs (the
  largest of them for the extra panels), and it is used when the full range is
  more than 1.5 times as tall. The curves are
  then cut where they leave the plot, and a note under it says which epochs
  are off the scale and how high they go;
* the legend (and the best-epoch marker's label) sit in a row between the
  title and the plot, so they never cover a curve or each other; a panel's
  own legend sits at its top right, or at its top left when the best-epoch
  line would cross it there;
* an extra panel whose values are positive and span more than three orders
  of magnitude (gradient-norm spikes of a tanh-RNN) gets a log axis over
  whole decades, so the usual values are not a flat line at zero;
* extra panels (learning rate, gradient norm) are drawn under the main one,
  sharing its epoch axis, only when their values vary; a constant one is
  named in the note instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

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

__all__ = ["learning_curves_svg", "robust_range"]

_CHAR_W = 7.0  # approximate width of a character of the 12 px sans-serif font
_WIDTH = 760.0
_LEFT, _RIGHT = 80.0, 24.0


def robust_range(
    series: Sequence[Sequence[float]], *, skip_fraction: float = 0.1, upper_quantile: float = 0.98
) -> tuple[float, float, int]:
    """The y range that shows what matters in learning curves.

    Args:
        series: curves of equal length E (NaN and infinities are ignored).
        skip_fraction: the fraction of the first epochs left out of the range
            (at least one when E >= 5, none when E < 5).
        upper_quantile: the top of the range is this quantile of the kept values.

    Returns:
        ``(lo, hi, first)``: the lowest kept value, the quantile, and the index
        of the first epoch the range was computed from. ``(nan, nan, 0)`` when
        no value is finite.
    """
    length = max((len(s) for s in series), default=0)
    first = max(1, round(length * skip_fraction)) if length >= 5 else 0
    kept = np.array(
        [float(v) for s in series for v in list(s)[first:] if math.isfinite(float(v))],
        dtype=np.float64,
    )
    if kept.size == 0:
        kept = np.array(
            [float(v) for s in series for v in s if math.isfinite(float(v))], dtype=np.float64
        )
        first = 0
    if kept.size == 0:
        return math.nan, math.nan, 0
    lo = float(kept.min())
    hi = float(np.quantile(kept, upper_quantile)) if first else float(kept.max())
    return lo, hi, first


class _Panel:
    """One plot area: its pixel box and data range."""

    def __init__(
        self, top: float, height: float, y_lo: float, y_hi: float, log: bool = False
    ) -> None:
        self.top, self.bottom = top, top + height
        self.y_lo, self.y_hi = y_lo, y_hi
        self.log = log  # a log10 axis: y_lo and y_hi are powers of ten

    def sy(self, y: float) -> float:
        """Pixel y of a value, clamped to the panel's box."""
        if self.log:
            lo, hi = math.log10(self.y_lo), math.log10(self.y_hi)
            frac = (math.log10(y) - lo) / (hi - lo) if y > 0 else 0.0
        else:
            frac = (y - self.y_lo) / (self.y_hi - self.y_lo)
        return self.bottom - min(max(frac, 0.0), 1.0) * (self.bottom - self.top)

    def ticks(self, step: float) -> list[float]:
        """The values of the ticks: multiples of ``step``, or on a log axis every
        ``step``-th power of ten."""
        if not self.log:
            return list(axis_ticks(self.y_lo, self.y_hi, step))
        lo, hi = round(math.log10(self.y_lo)), round(math.log10(self.y_hi))
        return [10.0**k for k in range(lo, hi + 1, max(1, int(step)))]


def _widen(lo: float, hi: float, margin: float = 0.06) -> tuple[float, float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi == lo:
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * margin
    if not (math.isfinite(lo - pad) and math.isfinite(hi + pad)):  # no margin at the extremes
        return lo, hi
    return lo - pad, hi + pad


def _nice_range(lo: float, hi: float, target: int) -> tuple[float, float, float]:
    step = nice_step(hi - lo, target)
    nice_lo = math.floor(lo / step + 1e-9) * step
    nice_hi = math.ceil(hi / step - 1e-9) * step
    if not (math.isfinite(nice_lo) and math.isfinite(nice_hi) and nice_hi > nice_lo):
        return lo, hi, step
    return nice_lo, nice_hi, step


def _legend_row(
    entries: Sequence[tuple[str, str, str]], x0: float, x1: float, y: float
) -> tuple[list[str], float]:
    """Legend entries ``(label, colour, dash)`` laid out left to right, wrapping at
    ``x1``; returns the elements and the y below the last row."""
    parts: list[str] = []
    x = x0
    for label, colour, dash in entries:
        w = 30.0 + _CHAR_W * len(label) + 18.0
        if x > x0 and x + w > x1:
            x, y = x0, y + 18.0
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line class="legend" x1="{svg_num(x)}" y1="{svg_num(y)}" x2="{svg_num(x + 24)}" '
            f'y2="{svg_num(y)}" stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        parts.append(
            f'<text class="legend" x="{svg_num(x + 30)}" y="{svg_num(y)}" '
            f'dominant-baseline="middle">{svg_text(label)}</text>'
        )
        x += w
    return parts, y + 14.0


def _y_axis(
    parts: list[str], panel: _Panel, step: float, px0: float, px1: float, label: str
) -> None:
    for y in panel.ticks(step):
        yy = svg_num(panel.sy(y))
        parts.append(
            f'<line class="grid" x1="{svg_num(px0)}" y1="{yy}" x2="{svg_num(px1)}" y2="{yy}" '
            'stroke="#e0e0e0" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="tick-label" x="{svg_num(px0 - 6)}" y="{yy}" text-anchor="end" '
            f'dominant-baseline="middle">'
            f"{svg_text(f'{y:g}' if panel.log else tick_label(y, step))}</text>"
        )
    parts.append(
        f'<rect class="frame" x="{svg_num(px0)}" y="{svg_num(panel.top)}" '
        f'width="{svg_num(px1 - px0)}" height="{svg_num(panel.bottom - panel.top)}" '
        'fill="none" stroke="#999999" stroke-width="1"/>'
    )
    ly = (panel.top + panel.bottom) / 2
    parts.append(
        f'<text class="axis-label" x="18" y="{svg_num(ly)}" text-anchor="middle" '
        f'transform="rotate(-90 18 {svg_num(ly)})">{svg_text(label)}</text>'
    )


def _curve(
    parts: list[str],
    name: str,
    colour: str,
    xs: Sequence[float],
    values: Sequence[float],
    sx: object,
    panel: _Panel,
) -> None:
    assert callable(sx)
    data = [
        (float(x), float(v))
        for x, v in zip(xs, values, strict=True)
        if math.isfinite(x) and math.isfinite(float(v))
    ]
    top = panel.y_hi
    runs: list[list[tuple[float, float]]] = []
    run: list[tuple[float, float]] = []
    prev: tuple[float, float] | None = None
    for x, v in data:
        if v <= top:
            if not run and prev is not None:  # coming down into the plot: start on the edge
                px, pv = prev
                run.append((px + (x - px) * (pv - top) / (pv - v), top))
            run.append((x, v))
        elif run:  # leaving the plot through its top edge
            px, pv = run[-1]
            run.append((px + (x - px) * (top - pv) / (v - pv), top))
            runs.append(run)
            run = []
        prev = (x, v)
    if run:
        runs.append(run)
    for r in runs:
        coords = " ".join(f"{svg_num(sx(x))},{svg_num(panel.sy(v))}" for x, v in r)
        parts.append(
            f'<polyline class="series" data-series={svg_attr(name)} points="{coords}" '
            f'fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round">'
            f"<title>{svg_text(name)}</title></polyline>"
        )
    if len(data) == 1 and runs:
        x, v = data[0]
        parts.append(
            f'<circle class="point" cx="{svg_num(sx(x))}" cy="{svg_num(panel.sy(v))}" r="3" '
            f'fill="{colour}"/>'
        )


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


def _varies(values: Sequence[float]) -> bool:
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return len(finite) > 1 and max(finite) > min(finite)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


LOG_RATIO = 1000.0
"""An extra panel whose positive values span more than this ratio gets a log axis."""


def learning_curves_svg(
    epochs: Sequence[int],
    series: Mapping[str, Sequence[float]],
    *,
    title: str = "",
    ylabel: str = "NLL per time step (nats)",
    marker_epoch: int | None = None,
    panels: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> str:
    """Draw learning curves as an SVG line chart, with optional panels underneath.

    Each series becomes one ``<polyline class="series">`` through its finite
    points, in the order given; NaN and infinite values are skipped (a series
    with no finite value gets no polyline, one with a single finite value
    gets a polyline and a ``<circle class="point">``). The main panel's y range
    is ``robust_range`` of the series (see the module docstring); values
    above it are drawn on its top edge and listed in a ``<text class="note">``.
    The x range covers the epochs and the marker.

    Args:
        epochs: the epoch numbers, length ``E``.
        series: curve name (e.g. ``"train"``, ``"valid"``) -> values, each of
            length ``E``.
        title: chart title; empty for none.
        ylabel: label of the y axis.
        marker_epoch: if given, an epoch (e.g. the best one) marked by a
            dashed vertical ``<line class="marker">`` through every panel,
            labelled in the legend (``best epoch N``).
        panels: panel label (e.g. ``"learning rate"``) -> its series (each of
            length ``E``); a panel is drawn only when some value varies.

    Returns:
        The SVG document.

    Raises:
        ValueError: naming the series, if a series' length differs from ``E``.
    """
    xs = [float(e) for e in epochs]
    extra = dict(panels or {})
    for name, values in [*series.items(), *((n, v) for p in extra.values() for n, v in p.items())]:
        if len(values) != len(xs):
            raise ValueError(
                f"series {name!r} has {len(values)} values but there are {len(xs)} epochs"
            )
    shown = {p: s for p, s in extra.items() if any(_varies(v) for v in s.values())}
    constant = [
        f"{p} {_fmt(float(v[0]))} throughout"
        for p, s in extra.items()
        if p not in shown
        for v in list(s.values())[:1]
        if v and math.isfinite(float(v[0]))
    ]

    width = _WIDTH
    px0, px1 = _LEFT, width - _RIGHT

    # Legend row(s) under the title: the series, then the marker.
    entries = [(name, PALETTE[i % len(PALETTE)], "") for i, name in enumerate(series)]
    if marker_epoch is not None:
        entries.append((f"best epoch {marker_epoch}", "#555555", "5 4"))
    legend, top = _legend_row(entries, px0, px1, 46.0 if title else 20.0)

    # x domain: epochs and marker.
    x_candidates = [x for x in xs if math.isfinite(x)]
    if marker_epoch is not None:
        x_candidates.append(float(marker_epoch))
    x_lo, x_hi = (min(x_candidates), max(x_candidates)) if x_candidates else (0.0, 1.0)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1.0, x_hi + 1.0
    x_step = max(1.0, nice_step(x_hi - x_lo, 8))

    def sx(x: float) -> float:
        return px0 + (x - x_lo) / (x_hi - x_lo) * (px1 - px0)

    # Panel ranges: fitted to the later epochs when the first ones would flatten them.
    def fit(values: Sequence[Sequence[float]], q: float) -> tuple[float, float, int]:
        lo, hi, first = robust_range(values, upper_quantile=q)
        full_hi = max((float(v) for s in values for v in s if math.isfinite(float(v))), default=hi)
        if math.isfinite(lo) and (full_hi - lo) <= 1.5 * (hi - lo):
            hi, first = full_hi, 0
        return lo, hi, first

    def off_scale(what: str, values: Sequence[Sequence[float]], top: float, first: int) -> None:
        above = [
            (x, float(v))
            for vs in values
            for x, v in zip(xs, vs, strict=True)
            if math.isfinite(float(v)) and float(v) > top
        ]
        if not above:
            return
        ep = sorted({int(x) for x, _ in above})
        span = (
            f"epoch {ep[0]} lies"
            if len(ep) == 1
            else f"epochs {ep[0]} to {ep[-1]} lie"
            if ep[-1] - ep[0] + 1 == len(ep)
            else f"{len(ep)} epochs from {ep[0]} to {ep[-1]} lie"
        )
        notes.append(
            f"{what} axis cut at {_fmt(top)} to show the later epochs; {span} above it "
            f"(up to {_fmt(max(v for _, v in above))})."
        )

    notes: list[str] = []
    lo, hi, first = fit(list(series.values()), 0.98)
    finite = math.isfinite(lo)
    y_lo, y_hi, y_step = _nice_range(*_widen(lo, hi), 6)
    main = _Panel(top + 6.0, 300.0, y_lo, y_hi)
    off_scale(ylabel.split(" per ")[0].split(" (")[0], list(series.values()), y_hi, first)
    panel_boxes: list[tuple[str, Mapping[str, Sequence[float]], _Panel, float]] = []
    y = main.bottom
    for label, ps in shown.items():
        y += 22.0
        vals = [float(v) for s in ps.values() for v in s if math.isfinite(float(v))]
        if vals and min(vals) > 0 and max(vals) / min(vals) > LOG_RATIO:
            # spikes of many orders of magnitude (a gradient norm before clipping): a
            # log axis over whole decades, so the usual values are not a flat line
            e_lo = math.floor(math.log10(min(vals)))
            e_hi = max(math.ceil(math.log10(max(vals))), e_lo + 1)
            box = _Panel(y, 110.0, 10.0**e_lo, 10.0**e_hi, log=True)
            panel_boxes.append((f"{label} (log)", ps, box, float(-(-(e_hi - e_lo) // 5))))
            y += 110.0
            continue
        p_lo, p_hi, p_first = fit(list(ps.values()), 1.0)
        p_lo, p_hi, p_step = _nice_range(*_widen(p_lo, p_hi), 3)
        if p_lo < 0 and all(float(v) >= 0 for s in ps.values() for v in s if math.isfinite(v)):
            p_lo = 0.0  # rates and norms: never a negative tick
        off_scale(label, list(ps.values()), p_hi, p_first)
        panel_boxes.append((label, ps, _Panel(y, 110.0, p_lo, p_hi), p_step))
        y += 110.0
    axis_y = y

    if constant:
        notes.append("Not drawn, constant: " + "; ".join(constant) + ".")
    notes = [line for note in notes for line in _wrap(note, int((px1 - px0) / 6.2))]
    height = axis_y + 46.0 + 16.0 * len(notes)

    parts = open_svg(width, height, title)
    parts.extend(legend)
    _y_axis(parts, main, y_step, px0, px1, ylabel)
    for label, _ps, box, step in panel_boxes:
        _y_axis(parts, box, step, px0, px1, label)
    # x ticks and label on the bottom axis; vertical grid through every panel.
    for x in axis_ticks(x_lo, x_hi, x_step):
        xx = svg_num(sx(x))
        parts.append(
            f'<line class="tick" x1="{xx}" y1="{svg_num(axis_y)}" x2="{xx}" '
            f'y2="{svg_num(axis_y + 5)}" stroke="black" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="tick-label" x="{xx}" y="{svg_num(axis_y + 18)}" '
            f'text-anchor="middle">{svg_text(tick_label(x, x_step))}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{svg_num((px0 + px1) / 2)}" y="{svg_num(axis_y + 36)}" '
        'text-anchor="middle">epoch</text>'
    )
    if marker_epoch is not None:
        mx = svg_num(sx(float(marker_epoch)))
        for box in [main, *(b for _l, _p, b, _s in panel_boxes)]:
            parts.append(
                f'<line class="marker" x1="{mx}" y1="{svg_num(box.top)}" x2="{mx}" '
                f'y2="{svg_num(box.bottom)}" stroke="#555555" stroke-width="1.5" '
                'stroke-dasharray="5 4"/>'
            )
    for index, (name, values) in enumerate(series.items()):
        _curve(parts, name, PALETTE[index % len(PALETTE)], xs, values, sx, main)
    for _label, ps, box, _step in panel_boxes:
        for j, (name, values) in enumerate(ps.items()):
            colour = PALETTE[(j + 2) % len(PALETTE)]
            _curve(parts, name, colour, xs, values, sx, box)
        if len(ps) > 1:
            # name the curves of a panel, in their colours, at its top right, or at its
            # top left when the best-epoch line would cross them there
            names = list(enumerate(ps))
            span = sum(6.2 * len(name) + 14 for _j, name in names)
            right = marker_epoch is None or not (
                px1 - 6 - span - 4 <= sx(float(marker_epoch)) <= px1
            )
            x = px1 - 6 if right else px0 + 6
            for j, name in reversed(names) if right else names:
                parts.append(
                    f'<text class="panel-legend" x="{svg_num(x)}" y="{svg_num(box.top + 14)}" '
                    f'text-anchor="{"end" if right else "start"}" font-size="11" '
                    f'fill="{PALETTE[(j + 2) % len(PALETTE)]}" '
                    'stroke="white" stroke-width="3" paint-order="stroke">'
                    f"{svg_text(name)}</text>"
                )
                x += -(6.2 * len(name) + 14) if right else 6.2 * len(name) + 14
    for i, note in enumerate(notes):
        parts.append(
            f'<text class="note" x="{svg_num(px0)}" y="{svg_num(axis_y + 56 + 16 * i)}" '
            f'font-size="11" fill="#555555">{svg_text(note)}</text>'
        )
    if not finite:
        parts.append(
            f'<text class="no-data" x="{svg_num((px0 + px1) / 2)}" '
            f'y="{svg_num((main.top + main.bottom) / 2)}" text-anchor="middle" '
            'fill="#888888">no finite values</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
