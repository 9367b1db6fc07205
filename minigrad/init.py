"""Parameter initialisers.

An initialiser is any callable ``init(rng, shape, dtype) -> array`` that
returns a new array of exactly ``shape`` and ``dtype`` drawn from ``rng`` (a
``numpy.random.Generator``). The functions here build the usual ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from minigrad.errors import GraphError
from minigrad.types import Array, Shape

Initializer = Callable[[np.random.Generator, Shape, np.dtype[np.floating]], Array]

__all__ = [
    "Initializer",
    "constant",
    "glorot_uniform",
    "normal",
    "orthogonal",
    "pytorch_uniform",
    "uniform",
    "zeros",
]


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise GraphError(f"{what} must be a real number, got {value!r}")
    if not math.isfinite(float(value)):
        raise GraphError(f"{what} must be finite, got {value!r}")
    return float(value)


def constant(value: float) -> Initializer:
    """Every entry equal to ``value`` (e.g. ``constant(1.0)`` for an LSTM forget bias).

    Raises:
        GraphError: ``value`` is not a finite real number.
    """
    value = _finite(value, "constant(value)")

    def init(rng: np.random.Generator, shape: Shape, dtype: np.dtype[np.floating]) -> Array:
        return np.full(shape, value, dtype=dtype)

    init.__qualname__ = f"constant({value!r})"
    return init


def zeros() -> Initializer:
    """All zeros."""
    return constant(0.0)


def uniform(scale: float) -> Initializer:
    """Uniform on ``[-scale, scale)``.

    Raises:
        GraphError: ``scale`` is not a finite real number.
    """
    scale = _finite(scale, "uniform(scale)")

    def init(rng: np.random.Generator, shape: Shape, dtype: np.dtype[np.floating]) -> Array:
        return rng.uniform(-scale, scale, size=shape).astype(dtype)

    init.__qualname__ = f"uniform({scale!r})"
    return init


def pytorch_uniform(hidden_size: int) -> Initializer:
    """PyTorch's default for recurrent layers: uniform on ``[-1/sqrt(H), 1/sqrt(H))``."""
    return uniform(1.0 / math.sqrt(hidden_size))


def normal(std: float) -> Initializer:
    """Normal with mean 0 and standard deviation ``std``."""

    def init(rng: np.random.Generator, shape: Shape, dtype: np.dtype[np.floating]) -> Array:
        return (rng.standard_normal(size=shape) * std).astype(dtype)

    init.__qualname__ = f"normal({std!r})"
    return init


def glorot_uniform() -> Initializer:
    """Glorot / Xavier uniform for a (fan_in, fan_out) matrix.

    Draws from ``U(-a, a)`` with ``a = sqrt(6 / (fan_in + fan_out))``.
    """

    def init(rng: np.random.Generator, shape: Shape, dtype: np.dtype[np.floating]) -> Array:
        fan_in = shape[0] if shape else 1
        fan_out = shape[-1] if shape else 1
        a = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, size=shape).astype(dtype)

    init.__qualname__ = "glorot_uniform()"
    return init


def orthogonal(gain: float = 1.0) -> Initializer:
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014), for recurrent weights.

    For a stacked weight such as (3H, H) each (H, H) block is drawn orthogonal
    separately when the first dimension is a multiple of the second.
    """

    def block(rng: np.random.Generator, rows: int, cols: int) -> Array:
        a = rng.standard_normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        return q if rows >= cols else q.T

    def init(rng: np.random.Generator, shape: Shape, dtype: np.dtype[np.floating]) -> Array:
        if len(shape) != 2:
            raise ValueError(f"orthogonal() needs a 2-D shape, got {shape}")
        rows, cols = shape
        if rows != cols and rows % cols == 0:
            blocks = [block(rng, cols, cols) for _ in range(rows // cols)]
            m = np.concatenate(blocks, axis=0)
        else:
            m = block(rng, rows, cols)
        return (gain * m).astype(dtype)

    init.__qualname__ = f"orthogonal({gain!r})"
    return init
