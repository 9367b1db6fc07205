"""Array and shape aliases used across minigrad and models.

Every annotation that mentions an array goes through this module, so that the
meaning of an array type is written down once.

* ``Array``: a floating-point numpy array (float32 or float64).
* ``IntArray``: an integer numpy array (indices, offsets, note numbers).
* ``BoolArray``: a boolean numpy array (masks).
* ``Shape``: a concrete array shape, e.g. ``(64, 128)``.
* ``SymShape``: a shape known when a cell is built, in which the batch
  dimension is the string ``"B"``, e.g. ``("B", 128)``.
* ``FloatDType``: ``numpy.float32`` or ``numpy.float64``.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

Array: TypeAlias = npt.NDArray[np.floating[Any]]
IntArray: TypeAlias = npt.NDArray[np.integer[Any]]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
AnyArray: TypeAlias = npt.NDArray[Any]
Shape: TypeAlias = tuple[int, ...]
BatchDim: TypeAlias = Literal["B"]
Dim: TypeAlias = int | BatchDim
SymShape: TypeAlias = tuple[Dim, ...]
FloatDType: TypeAlias = type[np.float32] | type[np.float64]
DTypeLike: TypeAlias = npt.DTypeLike

BATCH: BatchDim = "B"

EXACT_INPUT_DTYPES: tuple[np.dtype[Any], ...] = (np.dtype(np.bool_), np.dtype(np.uint8))
"""Input dtypes a program also takes besides the cell's float dtype: every value they
hold is exact in float32 and float64, and they are cast step window by step window,
so a long sequence of 0/1 data (piano rolls) need not be held in floats."""


def format_shape(shape: tuple[object, ...]) -> str:
    """A shape as Python writes a tuple: ``(B, 4)``, ``(4,)``, ``()``."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


__all__ = [
    "BATCH",
    "EXACT_INPUT_DTYPES",
    "AnyArray",
    "Array",
    "BatchDim",
    "BoolArray",
    "DTypeLike",
    "Dim",
    "FloatDType",
    "IntArray",
    "Shape",
    "SymShape",
    "format_shape",
]
