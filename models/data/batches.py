"""Padded, time-major batches cut from a split's piano roll."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from minigrad.types import AnyArray, FloatDType, IntArray
from models.data.dataset import N_PITCHES, Split

# --------------------------------------------------------------------------- batches


@dataclass(frozen=True, eq=False)
class Batch:
    """A padded, time-major batch for next-step prediction.

    Attributes:
        inputs: ``(T, B, 88)``: ``inputs[t]`` is frame ``t - 1`` of each sequence
            and ``inputs[0]`` is zeros (the first frame is predicted from the
            initial state); zero on padding.
        targets: ``(T, B, 88)``: frame ``t`` of each sequence; zero on padding.
        mask: ``(T, B)``, 1.0 on real steps and 0.0 on padding, in the dtype of
            ``inputs`` (a float type, or uint8: see :func:`batches`).
        lengths: ``(B,)`` int64, the number of real steps of each sequence;
            ``T == lengths.max()``.
        n_steps: number of real steps, ``mask.sum()``.
    """

    inputs: AnyArray  # a float type, or uint8
    targets: AnyArray
    mask: AnyArray
    lengths: IntArray
    n_steps: int


_BLOCK = 4096
"""Steps of a batch filled at a time."""


def make_batch(
    split: Split, idx: npt.NDArray[np.int64], dtype: FloatDType | type[np.uint8]
) -> Batch:
    """Gather and pad the sequences ``idx`` (``(B,)``, indices into ``split``) into one
    batch (see :func:`batches` for ``dtype``). A batch of one sequence has no padding:
    its ``inputs`` and ``targets`` are read-only views of one array of ``T + 1`` frames."""
    starts = split.offsets[idx]
    lengths = split.offsets[idx + 1] - starts
    n_time = int(lengths.max()) if lengths.size else 0
    t = np.arange(n_time, dtype=np.int64)[:, None]
    real = t < lengths[None, :]  # (T, B)
    rows = starts[None, :] + t  # (T, B), meaningful where real
    if idx.shape[0] == 1:
        # one sequence, no padding: the inputs are the targets one step later, so both
        # are views of one array of T + 1 frames (half the memory of a long piece)
        frames = np.zeros((n_time + 1, 1, N_PITCHES), dtype=dtype)
        for t0 in range(0, n_time, _BLOCK):
            t1 = min(n_time, t0 + _BLOCK)
            frames[t0 + 1 : t1 + 1, 0] = split.rows(rows[t0:t1, 0])
        frames.flags.writeable = False
        return Batch(
            inputs=frames[:-1],
            targets=frames[1:],
            mask=real.astype(dtype),
            lengths=lengths,
            n_steps=int(lengths.sum()),
        )
    targets = np.zeros((n_time, idx.shape[0], N_PITCHES), dtype=dtype)
    inputs = np.zeros_like(targets)
    shifted = real & (t >= 1)
    # in blocks of steps: the unpacked rows of a long piece would otherwise be a
    # second copy of the batch
    for t0 in range(0, n_time, _BLOCK):
        t1 = min(n_time, t0 + _BLOCK)
        r, sh, rw = real[t0:t1], shifted[t0:t1], rows[t0:t1]
        targets[t0:t1][r] = split.rows(rw[r])
        inputs[t0:t1][sh] = split.rows(rw[sh] - 1)
    return Batch(
        inputs=inputs,
        targets=targets,
        mask=real.astype(dtype),
        lengths=lengths,
        n_steps=int(lengths.sum()),
    )


def batches(
    split: Split,
    batch_size: int,
    *,
    dtype: FloatDType | type[np.uint8] = np.float64,
    rng: np.random.Generator | None = None,
    max_padded_steps: int | None = None,
) -> Iterator[Batch]:
    """Yield one epoch of padded batches over the sequences of ``split``.

    Every sequence appears in exactly one batch. Each batch is padded to its
    longest sequence; the last batch may hold fewer than ``batch_size``.
    With ``max_padded_steps``, a batch is also closed early, in order, before
    its padded size ``T * B`` would pass that bound, so that a few very long
    sequences do not make one batch of several hundred megabytes (a sequence
    longer than the bound gets a batch of its own).

    Args:
        split: the sequences, ``len(split)`` of them.
        batch_size: maximum number of sequences ``B`` per batch, >= 1.
        dtype: type of ``inputs``, ``targets`` and ``mask``: a float type, or
            ``numpy.uint8``, the roll's own type (a model takes it as it is and its
            program casts it step window by step window: a batch of long pieces
            then takes 8 times less memory than in float64).
        rng: ``None`` for the split's order; otherwise the order is
            ``rng.permutation(len(split))``.
        max_padded_steps: ``None``, or the most padded steps ``T * B`` in one
            batch (>= 1); a batch then holds fewer than ``batch_size``
            sequences where they are long.

    Yields:
        :class:`Batch` with ``inputs``/``targets`` ``(T, B, 88)`` and ``mask``
        ``(T, B)``.
    """
    if np.dtype(dtype).kind != "f" and np.dtype(dtype) != np.uint8:
        raise TypeError(f"dtype must be a float type or numpy.uint8, got {np.dtype(dtype)}")
    for idx in batch_groups(split, batch_size, rng=rng, max_padded_steps=max_padded_steps):
        yield make_batch(split, idx, dtype)


def batch_groups(
    split: Split,
    batch_size: int,
    *,
    rng: np.random.Generator | None = None,
    max_padded_steps: int | None = None,
) -> list[npt.NDArray[np.int64]]:
    """The sequence indices of each batch of one epoch, as :func:`batches` makes them
    (same arguments; it draws the same permutation from ``rng``).

    Returns:
        One ``(B,)`` int64 array of indices into ``split`` per batch, in order.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_padded_steps is not None and (
        isinstance(max_padded_steps, bool)
        or not isinstance(max_padded_steps, int | np.integer)
        or max_padded_steps < 1
    ):
        raise ValueError(f"max_padded_steps must be None or an int >= 1, got {max_padded_steps!r}")
    n = len(split)
    order = np.arange(n, dtype=np.int64) if rng is None else rng.permutation(n).astype(np.int64)
    if max_padded_steps is None:
        return [order[b : b + int(batch_size)] for b in range(0, n, int(batch_size))]
    lengths = split.lengths[order]
    groups = []
    begin = 0
    while begin < n:
        end, longest = begin + 1, int(lengths[begin])
        while end < min(n, begin + int(batch_size)):
            longest_next = max(longest, int(lengths[end]))
            if longest_next * (end + 1 - begin) > max_padded_steps:
                break
            end, longest = end + 1, longest_next
        groups.append(order[begin:end])
        begin = end
    return groups
