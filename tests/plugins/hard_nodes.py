"""A user's own node type, outside minigrad: ``HardSigmoid``, ``clip(slope * x + 0.5, 0, 1)``."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from minigrad import Ref
from minigrad.nodes import Node
from minigrad.types import Array


class HardSigmoid(Node):
    """``y = clip(slope * x + 0.5, 0, 1)``, elementwise; kinks where ``slope * x = +-0.5``."""

    formula = "y = clip(slope * x + 0.5, 0, 1)"
    derivatives = ("dL/dx = g * slope where 0 < y < 1, else 0",)
    verified: ClassVar[bool] = False

    def __init__(self, slope: float = 0.2) -> None:
        self.slope = float(slope)

    def params_repr(self) -> str:
        return repr(self.slope)

    def forward(self, *xs: Array) -> Array:
        return np.clip(self.slope * xs[0] + 0.5, 0.0, 1.0)

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        inside = (y > 0.0) & (y < 1.0)
        return (np.where(inside, g * self.slope, 0.0).astype(g.dtype),)


def hard_sigmoid(x: Ref, *, slope: float = 0.2, name: str | None = None) -> Ref:
    """Add a ``HardSigmoid`` node reading ``x``."""
    return x.builder.node(name, HardSigmoid(slope), x)
