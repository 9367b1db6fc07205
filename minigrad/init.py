"""Parameter initialisers.

An initialiser is any callable ``init(rng, shape, dtype) -> array`` that
returns a new array of exactly ``shape`` and ``dtype`` drawn from ``rng`` (a
``numpy.random.Generator``). The functions here build the usual ones; each
returns a small frozen object that can also be written down as data
(``describe`` / ``from_description``), so that a cell saved with
``minigrad.serialize`` keeps its initialisers.

``LayerInits`` and ``layer_inits(scheme, hidden_size)`` give the initialisers
of one recurrent layer as the built-in cells use them (``models.cells``), for
a user's own cell to share:

* ``"default"``: PyTorch's ``uniform(-1/sqrt(H), 1/sqrt(H))`` for every
  weight and bias (H the hidden size), except the LSTM forget-gate bias, 1;
* ``"orthogonal"``: recurrent weights (H, H) orthogonal (block by block for
  stacked (kH, H) weights), input weights (D, H) Glorot-uniform, biases (H,)
  zero, LSTM forget-gate bias 1, LSTM peepholes (H,) zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from minigrad.types import Array, Shape

DType = np.dtype[np.floating]

Initializer = Callable[[np.random.Generator, Shape, np.dtype[np.floating]], Array]

__all__ = [
    "SCHEMES",
    "Constant",
    "GlorotUniform",
    "Initializer",
    "LayerInits",
    "Normal",
    "Orthogonal",
    "Uniform",
    "constant",
    "describe",
    "from_description",
    "glorot_uniform",
    "layer_inits",
    "normal",
    "orthogonal",
    "pytorch_uniform",
    "uniform",
    "zeros",
]


@dataclass(frozen=True)
class Constant:
    """Every entry equal to ``value``."""

    value: float

    def __call__(self, rng: np.random.Generator, shape: Shape, dtype: DType) -> Array:
        return np.full(shape, self.value, dtype=dtype)


@dataclass(frozen=True)
class Uniform:
    """Uniform on ``[-scale, scale)``."""

    scale: float

    def __call__(self, rng: np.random.Generator, shape: Shape, dtype: DType) -> Array:
        return rng.uniform(-self.scale, self.scale, size=shape).astype(dtype)


@dataclass(frozen=True)
class Normal:
    """Normal with mean 0 and standard deviation ``std``."""

    std: float

    def __call__(self, rng: np.random.Generator, shape: Shape, dtype: DType) -> Array:
        return (rng.standard_normal(size=shape) * self.std).astype(dtype)


@dataclass(frozen=True)
class GlorotUniform:
    """Glorot / Xavier uniform for a (fan_in, fan_out) matrix: ``U(-a, a)`` with
    ``a = sqrt(6 / (fan_in + fan_out))``."""

    def __call__(self, rng: np.random.Generator, shape: Shape, dtype: DType) -> Array:
        fan_in = shape[0] if shape else 1
        fan_out = shape[-1] if shape else 1
        a = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, size=shape).astype(dtype)


@dataclass(frozen=True)
class Orthogonal:
    """A (semi-)orthogonal (rows, cols) matrix times ``gain`` (Saxe et al. 2014).

    For a stacked weight such as (3H, H) each (H, H) block is drawn orthogonal
    separately when the first dimension is a multiple of the second.
    """

    gain: float = 1.0

    @staticmethod
    def _block(rng: np.random.Generator, rows: int, cols: int) -> Array:
        a = rng.standard_normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        return q if rows >= cols else q.T

    def __call__(self, rng: np.random.Generator, shape: Shape, dtype: DType) -> Array:
        if len(shape) != 2:
            raise ValueError(f"orthogonal() needs a 2-D shape, got {shape}")
        rows, cols = shape
        if rows != cols and rows % cols == 0:
            m = np.concatenate([self._block(rng, cols, cols) for _ in range(rows // cols)], axis=0)
        else:
            m = self._block(rng, rows, cols)
        return (self.gain * m).astype(dtype)


_KINDS: dict[str, type] = {
    "constant": Constant,
    "uniform": Uniform,
    "normal": Normal,
    "glorot_uniform": GlorotUniform,
    "orthogonal": Orthogonal,
}


def constant(value: float) -> Initializer:
    """Every entry equal to ``value`` (e.g. ``constant(1.0)`` for an LSTM forget bias)."""
    return Constant(float(value))


def zeros() -> Initializer:
    """All zeros."""
    return Constant(0.0)


def uniform(scale: float) -> Initializer:
    """Uniform on ``[-scale, scale)``."""
    return Uniform(float(scale))


def pytorch_uniform(hidden_size: int) -> Initializer:
    """PyTorch's default for recurrent layers: uniform on ``[-1/sqrt(H), 1/sqrt(H))``."""
    return Uniform(1.0 / math.sqrt(hidden_size))


def normal(std: float) -> Initializer:
    """Normal with mean 0 and standard deviation ``std``."""
    return Normal(float(std))


def glorot_uniform() -> Initializer:
    """Glorot / Xavier uniform for a (fan_in, fan_out) matrix."""
    return GlorotUniform()


def orthogonal(gain: float = 1.0) -> Initializer:
    """A (semi-)orthogonal matrix times ``gain``, for recurrent weights (H, H) or (kH, H)."""
    return Orthogonal(float(gain))


def describe(init: object) -> dict[str, Any] | None:
    """The initialiser as plain data, ``{"kind": "uniform", "scale": 0.5}``, or None
    for an initialiser that is not one of this module's (any other callable)."""
    for kind, cls in _KINDS.items():
        if type(init) is cls:
            return {"kind": kind, **asdict(init)}  # type: ignore[call-overload]
    return None


def from_description(data: Mapping[str, Any]) -> Initializer:
    """The initialiser that ``describe`` wrote down.

    Raises:
        ValueError: an unknown ``kind``, or fields that do not fit it.
    """
    kind = data.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown initialiser kind {kind!r}; valid: {', '.join(_KINDS)}")
    names = {f.name for f in fields(cls)}
    args = {k: v for k, v in data.items() if k != "kind"}
    if set(args) - names or any(
        isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
        for v in args.values()
    ):
        raise ValueError(
            f"initialiser {kind!r}: expected finite numbers {sorted(names)}, got {args}"
        )
    init: Initializer = cls(**{k: float(v) for k, v in args.items()})
    return init


SCHEMES: tuple[str, ...] = ("default", "orthogonal")
"""The names ``layer_inits`` accepts."""


@dataclass(frozen=True)
class LayerInits:
    """The initialisers of one recurrent layer of H units reading D inputs.

    Attributes:
        input: input weights, (D, H) (or stacked (D, kH)).
        recurrent: recurrent weights, (H, H) (or stacked (H, kH)).
        bias: biases, (H,).
        forget_bias: an LSTM forget-gate bias, (H,).
        peephole: LSTM peephole weights, (H,).
    """

    input: Initializer
    recurrent: Initializer
    bias: Initializer
    forget_bias: Initializer
    peephole: Initializer


def layer_inits(scheme: str, hidden_size: int) -> LayerInits:
    """The initialisers named ``scheme`` (one of ``SCHEMES``) for a layer of ``hidden_size`` units.

    Raises:
        ValueError: an unknown scheme (listing the valid ones).
    """
    if scheme == "default":
        u = pytorch_uniform(hidden_size)
        return LayerInits(u, u, u, constant(1.0), u)
    if scheme == "orthogonal":
        return LayerInits(glorot_uniform(), orthogonal(), zeros(), constant(1.0), zeros())
    raise ValueError(f"unknown init {scheme!r}; valid: {', '.join(repr(i) for i in SCHEMES)}")
