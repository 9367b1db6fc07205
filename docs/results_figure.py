"""Draw the results picture of docs/results.md from docs/results.json.

    python docs/results_figure.py [docs/results.json] [-o docs/img/results.svg]

One panel per data set, one row per model, one marker per source (minigrad's
runs and the published numbers): test NLL per time step, lower is better.
A result not measured yet is written ``"pending"`` in the JSON and shown as
such in the picture; a model a source does not report is left out of its row.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.train.svg import (
    axis_ticks,
    nice_step,
    open_svg,
    svg_attr,
    svg_num,
    svg_text,
    tick_label,
    write_svg,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "docs" / "results.json"
DEFAULT_SVG = ROOT / "docs" / "img" / "results.svg"

# One marker shape and colour per source, in the order of the JSON.
_STYLES = (
    ("circle", "#0072B2"),
    ("square", "#D55E00"),
    ("diamond", "#009E73"),
    ("triangle", "#CC79A7"),
)
_CHAR_W = 6.5  # approximate width of a character at 11 px


def _marker(shape: str, x: float, y: float, colour: str, cls: str, title: str) -> str:
    t = f"<title>{svg_text(title)}</title>"
    if shape == "circle":
        return (
            f'<circle class={svg_attr(cls)} cx="{svg_num(x)}" cy="{svg_num(y)}" r="5" '
            f'fill="{colour}">{t}</circle>'
        )
    if shape == "square":
        return (
            f'<rect class={svg_attr(cls)} x="{svg_num(x - 4.5)}" y="{svg_num(y - 4.5)}" '
            f'width="9" height="9" fill="white" stroke="{colour}" stroke-width="2">{t}</rect>'
        )
    pts = (
        [(x, y - 6), (x + 6, y), (x, y + 6), (x - 6, y)]
        if shape == "diamond"
        else [(x, y - 6), (x + 6, y + 5), (x - 6, y + 5)]
    )
    coords = " ".join(f"{svg_num(a)},{svg_num(b)}" for a, b in pts)
    return (
        f'<polygon class={svg_attr(cls)} points="{coords}" fill="white" stroke="{colour}" '
        f'stroke-width="2">{t}</polygon>'
    )


def _check(data: Any, where: str) -> None:
    """Raise ValueError naming ``where`` and the key at fault."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object at the top level")
    for key in ("datasets", "models", "sources"):
        if key not in data:
            raise ValueError(f"{where}: missing key {key!r}")
    datasets, models = data["datasets"], data["models"]
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError(f"{where}: 'datasets' must map keys to names")
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ValueError(f"{where}: 'models' must be a list of names")
    if not isinstance(data["sources"], dict) or len(data["sources"]) > len(_STYLES):
        raise ValueError(f"{where}: 'sources' must map at most {len(_STYLES)} sources")
    for s, src in data["sources"].items():
        results = src.get("results") if isinstance(src, dict) else None
        if not isinstance(results, dict) or not isinstance(src.get("label"), str):
            raise ValueError(f"{where}: source {s!r} needs a 'label' and 'results'")
        for d, row in results.items():
            if d not in datasets or not isinstance(row, dict):
                raise ValueError(f"{where}: source {s!r}: unknown data set {d!r}")
            for m, v in row.items():
                if m not in models:
                    raise ValueError(f"{where}: source {s!r}, {d!r}: unknown model {m!r}")
                ok = v == "pending" or (
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                )
                if not ok:
                    raise ValueError(
                        f"{where}: source {s!r}, {d!r}, {m!r}: expected a number or "
                        f'"pending", got {v!r}'
                    )


def results_svg(data: Mapping[str, Any], *, title: str = "Test NLL per time step") -> str:
    """The results picture (see the module docstring) as an SVG document."""
    datasets: dict[str, str] = dict(data["datasets"])
    models: Sequence[str] = list(data["models"])
    sources: dict[str, dict[str, Any]] = dict(data["sources"])

    left, gap, right = 96.0, 36.0, 20.0
    panel_w = 300.0
    row_h, sub = 54.0, 13.0
    n_src = len(sources)
    legend_top = 44.0
    plot_top = legend_top + 20.0 * n_src + 30.0
    plot_h = row_h * len(models)
    width = left + len(datasets) * panel_w + (len(datasets) - 1) * gap + right
    height = plot_top + plot_h + 64.0
    parts = open_svg(width, height, title)

    # Legend: one line per source.
    for i, (_s, src) in enumerate(sources.items()):
        shape, colour = _STYLES[i]
        y = legend_top + 20.0 * i
        parts.append(_marker(shape, left + 6, y, colour, "legend-marker", src["label"]))
        parts.append(
            f'<text class="legend" x="{svg_num(left + 18)}" y="{svg_num(y)}" '
            f'dominant-baseline="middle">{svg_text(src["label"])}</text>'
        )

    # Model labels on the left.
    for r, m in enumerate(models):
        cy = plot_top + row_h * (r + 0.5)
        parts.append(
            f'<text class="model" x="{svg_num(left - 10)}" y="{svg_num(cy)}" text-anchor="end" '
            f'dominant-baseline="middle" font-weight="bold">{svg_text(m)}</text>'
        )

    for p, (dkey, dname) in enumerate(datasets.items()):
        x0 = left + p * (panel_w + gap)
        x1 = x0 + panel_w
        values = [
            float(v)
            for src in sources.values()
            for v in src["results"].get(dkey, {}).values()
            if v != "pending"
        ]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        pad = max((hi - lo) * 0.12, 0.05)
        step = nice_step(hi - lo + 2 * pad, 5)
        lo = math.floor((lo - pad) / step) * step
        hi = math.ceil((hi + pad) / step) * step

        def sx(v: float, lo: float = lo, hi: float = hi, x0: float = x0) -> float:
            return x0 + (v - lo) / (hi - lo) * panel_w

        parts.append(
            f'<text class="dataset" x="{svg_num((x0 + x1) / 2)}" y="{svg_num(plot_top - 12)}" '
            f'text-anchor="middle" font-weight="bold">{svg_text(dname)}</text>'
        )
        for t in axis_ticks(lo, hi, step):
            xx = svg_num(sx(t))
            parts.append(
                f'<line class="grid" x1="{xx}" y1="{svg_num(plot_top)}" x2="{xx}" '
                f'y2="{svg_num(plot_top + plot_h)}" stroke="#e6e6e6" stroke-width="1"/>'
            )
            parts.append(
                f'<text class="tick-label" x="{xx}" y="{svg_num(plot_top + plot_h + 16)}" '
                f'text-anchor="middle">{svg_text(tick_label(t, step))}</text>'
            )
        parts.append(
            f'<rect class="frame" x="{svg_num(x0)}" y="{svg_num(plot_top)}" '
            f'width="{svg_num(panel_w)}" height="{svg_num(plot_h)}" fill="none" '
            'stroke="#999999" stroke-width="1"/>'
        )
        for r in range(1, len(models)):
            yy = svg_num(plot_top + row_h * r)
            parts.append(
                f'<line class="row" x1="{svg_num(x0)}" y1="{yy}" x2="{svg_num(x1)}" y2="{yy}" '
                'stroke="#cccccc" stroke-width="1"/>'
            )
        parts.append(
            f'<text class="axis-label" x="{svg_num((x0 + x1) / 2)}" '
            f'y="{svg_num(plot_top + plot_h + 36)}" text-anchor="middle">'
            "test NLL per time step (nats), lower is better</text>"
        )
        for r, m in enumerate(models):
            for i, (_s, src) in enumerate(sources.items()):
                v = src["results"].get(dkey, {}).get(m)
                if v is None:
                    continue
                shape, colour = _STYLES[i]
                y = plot_top + row_h * (r + 0.5) + (i - (n_src - 1) / 2) * sub
                what = f"{src['label']}: {m} on {dname}"
                if v == "pending":
                    parts.append(
                        f'<text class="pending" x="{svg_num(x0 + 8)}" y="{svg_num(y)}" '
                        f'dominant-baseline="middle" font-size="11" font-style="italic" '
                        f'fill="{colour}">{svg_text(src["label"].split(" (")[0])}: '
                        "pending</text>"
                    )
                    continue
                x = sx(float(v))
                parts.append(_marker(shape, x, y, colour, "result", f"{what}: {v}"))
                label = f"{float(v):.2f}" if i else f"{float(v):.3f}"
                room = x1 - x - 10
                lx, anchor = (x + 9, "start") if room > _CHAR_W * len(label) else (x - 9, "end")
                parts.append(
                    f'<text class="value" x="{svg_num(lx)}" y="{svg_num(y)}" '
                    f'text-anchor="{anchor}" dominant-baseline="middle" font-size="11" '
                    f'fill="{colour}">{label}</text>'
                )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Read the JSON, draw the picture, write it atomically; 0 on success."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default=str(DEFAULT_JSON), help="results JSON")
    ap.add_argument("-o", "--output", default=str(DEFAULT_SVG), help="SVG file to write")
    args = ap.parse_args(argv)
    path = Path(args.results)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 1
    try:
        _check(data, str(path))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_svg(args.output, results_svg(data))
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
