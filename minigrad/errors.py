"""Exceptions raised by minigrad.

Every error a user can provoke names the thing at fault (cell, node, node
class, input slot, parameter, argument) and says what was expected, so that
nobody has to read a traceback from inside numpy. Every one is a
``MinigradError``, and also the built-in class it refines (``ValueError``,
``TypeError``, ...), so ``except ValueError`` keeps working.

One bad argument gets one class wherever it is passed:

* a name the cell does not have, or one it needs and was not given (``wrt``,
  ``param``, parameters, inputs, states, outputs): ``GraphError``;
* an array of the wrong shape or dtype: ``ShapeError``, ``DTypeError``;
* a plain argument outside what it can take (``steps``, ``truncate``,
  ``max_paths``, ``passes``, a mask that is not 0/1, a file extension):
  ``ArgumentError``; an argument of the wrong kind altogether:
  ``ArgumentTypeError``.

``check_count`` and ``check_names`` are the shared checks of such arguments.
"""

from __future__ import annotations

from collections.abc import Iterable


class MinigradError(Exception):
    """Base class of every error raised by minigrad."""


class GraphError(MinigradError, ValueError):
    """A cell is malformed (cycles no state breaks, bad updates), or a name given
    for it is unknown or missing."""


class ArgumentError(MinigradError, ValueError):
    """An argument has a value it cannot take (``steps=0``, an unknown pass, ...)."""


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument is of the wrong kind altogether (a string where a list of names
    is expected, something that is neither a node nor a cell, ...)."""


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


def check_count(value: object, name: str, minimum: int = 1, where: str = "") -> int:
    """``value`` if it is an int >= ``minimum`` (not a bool), else an ``ArgumentError``
    naming the argument (``where`` prefixes the message, e.g. ``"cell 'gru': "``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ArgumentError(f"{where}{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_names(value: Iterable[str], name: str, where: str = "") -> frozenset[str]:
    """The names in ``value``, an iterable of strings; a single string (whose letters
    would be taken for names) is an ``ArgumentTypeError`` naming the argument."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ArgumentTypeError(
            f"{where}{name} must be a list of names, got {value!r}"
            + (f"; write [{value!r}] for one name" if isinstance(value, str) else "")
        )
    names = frozenset(value)
    bad = sorted(repr(n) for n in names if not isinstance(n, str))
    if bad:
        raise ArgumentTypeError(f"{where}{name} must hold names (strings), got {', '.join(bad)}")
    return names


__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "DTypeError",
    "GradcheckError",
    "GraphError",
    "MinigradError",
    "NodeContractError",
    "NonFiniteError",
    "ShapeError",
    "check_count",
    "check_names",
]
