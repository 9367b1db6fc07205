"""Exceptions raised by minigrad.

Every error a user can provoke names the thing at fault (cell, node, node
class, input slot, parameter) and says what was expected, so that nobody has
to read a traceback from inside numpy.
"""

from __future__ import annotations


class MinigradError(Exception):
    """Base class of every error raised by minigrad."""


class GraphError(MinigradError, ValueError):
    """A cell is malformed: unknown names, cycles no state breaks, bad updates."""


class ShapeError(MinigradError, ValueError):
    """Shapes do not fit a node's rule, or a runtime array has the wrong shape."""


class DTypeError(MinigradError, TypeError):
    """Dtypes disagree (for example a float32 parameter in a float64 cell)."""


class NodeContractError(MinigradError, RuntimeError):
    """A node's ``forward`` or ``vjp`` returned something of the wrong shape,
    dtype or count."""


class GradcheckError(MinigradError, AssertionError):
    """Analytic and finite-difference gradients disagree."""


class NonFiniteError(MinigradError, FloatingPointError):
    """A NaN or an infinity appeared; the message names the node and step."""

    def __init__(self, message: str, node: str | None = None, step: int | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.step = step


__all__ = [
    "DTypeError",
    "GradcheckError",
    "GraphError",
    "MinigradError",
    "NodeContractError",
    "NonFiniteError",
    "ShapeError",
]
