"""SVG documents without dependencies: escaping, numbers, axis ticks, atomic writes."""

from __future__ import annotations

import math
import re
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from models.train.checkpoint import atomic_write_text

SVG_NS = "http://www.w3.org/2000/svg"

# Colour-blind-safe palette (Okabe & Ito), cycled over the series.
PALETTE = (
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
XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def svg_text(value: str) -> str:
    """Escape ``value`` for use as XML character data."""
    return escape(XML_INVALID.sub("", value))


def svg_attr(value: str) -> str:
    """Escape and quote ``value`` for use as an XML attribute value."""
    return quoteattr(XML_INVALID.sub("", value))


def svg_num(x: float) -> str:
    """Format a coordinate with at most two decimals and no trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def open_svg(width: float, height: float, title: str) -> list[str]:
    parts = [
        f'<svg xmlns="{SVG_NS}" width="{svg_num(width)}" height="{svg_num(height)}" '
        f'viewBox="0 0 {svg_num(width)} {svg_num(height)}" '
        'font-family="sans-serif" font-size="12">',
    ]
    if title:
        parts.append(f"<title>{svg_text(title)}</title>")
    parts.append(
        f'<rect class="background" x="0" y="0" width="{svg_num(width)}" '
        f'height="{svg_num(height)}" fill="white"/>'
    )
    if title:
        parts.append(
            f'<text class="title" x="{svg_num(width / 2)}" y="22" text-anchor="middle" '
            f'font-size="15" font-weight="bold">{svg_text(title)}</text>'
        )
    return parts


def nice_step(span: float, target: int) -> float:
    """A step of the form 1, 2 or 5 times a power of ten giving about ``target`` intervals."""
    raw = span / max(target, 1)
    if not (raw > 0.0 and math.isfinite(raw)):
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if mult * magnitude >= raw * (1.0 - 1e-9):
            return mult * magnitude
    return 10.0 * magnitude


def axis_ticks(lo: float, hi: float, step: float) -> list[float]:
    span = (hi - lo) / step
    if not math.isfinite(span) or span > 1000:  # overflowing ranges get no ticks
        return []
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def tick_label(value: float, step: float) -> str:
    if value == 0.0:
        return "0"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if abs(value) >= 1e6 or decimals > 6:
        return f"{value:.4g}"
    return f"{value:.{decimals}f}"



def write_svg(path: str | Path, svg: str) -> None:
    """Write an SVG document atomically (temporary file, fsync, ``os.replace``), as UTF-8.

    Args:
        path: the target file; its directory must exist.
        svg: the document, e.g. from :func:`learning_curves_svg`.
    """
    atomic_write_text(path, svg)
