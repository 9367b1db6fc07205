"""Datasets: three splits of piano rolls, 88 keys from A0."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from minigrad.types import IntArray

PITCH_LO: Final = 21
"""MIDI number of the lowest piano key (A0), column 0 of a piano roll."""
N_PITCHES: Final = 88
"""Number of piano keys, the width of a piano roll (MIDI 21..108)."""
PITCH_HI: Final = PITCH_LO + N_PITCHES - 1

EMBEDDED: Final = "bach_chorales"
"""Name of the default dataset shipped in ``models/data/datasets``."""
EMBEDDED_DATASETS: Final[tuple[str, ...]] = (EMBEDDED,)
"""Every name :func:`load_dataset` resolves to a file in ``models/data/datasets``."""
SPLIT_NAMES: Final[tuple[str, str, str]] = ("train", "valid", "test")
FORMAT_VERSION: Final = 1

_NPZ_EXPECTED = (
    "expected a .npz dataset with keys {s}_notes, {s}_step_offsets, {s}_seq_offsets "
    "for s in train/valid/test and format_version"
)
_PICKLE_EXPECTED = (
    "expected a pickled dict with 'train', 'valid' and 'test' lists of sequences, "
    "each a list of time steps, each a list of MIDI note numbers"
)


class DataError(ValueError):
    """A dataset file is missing, unreadable or not in the expected layout.

    The message is one line naming the file and what was expected.
    """


MIDI_MAX: Final = 127
"""The highest MIDI note number."""


def check_pitch_range(
    pitch_lo: object,
    pitch_hi: object,
    *,
    where: str = "",
    names: tuple[str, str] = ("pitch_lo", "pitch_hi"),
) -> tuple[int, int]:
    """Check a range of MIDI notes: integers in ``0..127``, ``pitch_lo <= pitch_hi``.

    Args:
        pitch_lo, pitch_hi: the lowest and highest note (a 0-d integer array is fine).
        where: prefix of the message (a file name and ``": "``).
        names: how the two values are called in the message.

    Returns:
        ``(pitch_lo, pitch_hi)`` as ints.

    Raises:
        ValueError: one line naming the value at fault.
    """
    out: list[int] = []
    for name, value in zip(names, (pitch_lo, pitch_hi), strict=True):
        v = value.item() if isinstance(value, np.ndarray | np.generic) else value
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MIDI_MAX:
            raise ValueError(
                f"{where}{name} must be a MIDI note number in 0..{MIDI_MAX}, got {v!r}"
            )
        out.append(v)
    if out[0] > out[1]:
        raise ValueError(
            f"{where}{names[0]} {out[0]} is above {names[1]} {out[1]}: the range is inverted"
        )
    return out[0], out[1]


def one_line(text: object) -> str:
    """Collapse whitespace so that an embedded exception message stays on one line."""
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- splits


class Split:
    """The sequences of one split, concatenated in a piano roll kept packed to bits.

    A step of the roll takes 11 bytes (``numpy.packbits`` of its 88 keys), not
    88: a corpus of two million steps holds 22 MB rather than 176 MB while it
    trains. :meth:`rows` and :meth:`sequence` unpack only what they return.

    Args:
        roll: ``(n_steps, 88)`` uint8, 1 where MIDI note ``PITCH_LO + j`` sounds at
            a step; every sequence's steps, one after the other.
        offsets: ``(n_seqs + 1,)`` integers, non-decreasing, ``offsets[0] == 0``
            and ``offsets[-1] == n_steps``; sequence ``i`` is
            ``roll[offsets[i]:offsets[i + 1]]``.

    Raises:
        DataError: a roll of another shape or type, values other than 0 and 1,
            or offsets that do not rise from 0 to ``n_steps``.
    """

    __slots__ = ("_bits", "_offsets")
    _bits: npt.NDArray[np.uint8]
    _offsets: npt.NDArray[np.int64]

    def __init__(self, roll: npt.ArrayLike, offsets: npt.ArrayLike) -> None:
        dense = np.asarray(roll)
        if dense.dtype != np.uint8 or dense.ndim != 2 or dense.shape[1] != N_PITCHES:
            raise DataError(
                f"Split.roll must be a uint8 array of shape (n_steps, {N_PITCHES}), "
                f"got {dense.dtype} {dense.shape}"
            )
        if dense.size and int(dense.max()) > 1:
            raise DataError("Split.roll must hold only 0 and 1")
        self._init(np.packbits(dense, axis=1), offsets)

    @classmethod
    def from_bits(cls, bits: npt.NDArray[np.uint8], offsets: npt.ArrayLike) -> Split:
        """A split from a roll already packed to bits.

        Args:
            bits: ``(n_steps, 11)`` uint8, ``numpy.packbits(roll, axis=1)``.
            offsets: as for the constructor.
        """
        split = cls.__new__(cls)
        width = (N_PITCHES + 7) // 8
        bits = np.asarray(bits)
        if bits.dtype != np.uint8 or bits.ndim != 2 or bits.shape[1] != width:
            raise DataError(
                f"Split bits must be a uint8 array of shape (n_steps, {width}), "
                f"got {bits.dtype} {bits.shape}"
            )
        split._init(bits, offsets)
        return split

    def _init(self, bits: npt.NDArray[np.uint8], offsets_like: npt.ArrayLike) -> None:
        offsets = np.asarray(offsets_like)
        if offsets.ndim != 1 or offsets.size == 0 or offsets.dtype.kind not in "iu":
            raise DataError(
                f"Split.offsets must be a 1-d integer array of length n_seqs + 1, "
                f"got {offsets.dtype} {offsets.shape}"
            )
        offsets = offsets.astype(np.int64, copy=False)
        decreasing = bool(np.any(np.diff(offsets) < 0))
        if offsets[0] != 0 or offsets[-1] != bits.shape[0] or decreasing:
            raise DataError(
                f"Split.offsets must rise from 0 to n_steps={bits.shape[0]}, "
                f"got {offsets[0]}..{offsets[-1]}" + (" (decreasing)" if decreasing else "")
            )
        bits = bits.view()
        bits.flags.writeable = False
        offsets = offsets.view()
        offsets.flags.writeable = False
        object.__setattr__(self, "_bits", bits)
        object.__setattr__(self, "_offsets", offsets)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Split is read-only: cannot set {name!r}")

    @property
    def offsets(self) -> npt.NDArray[np.int64]:
        """``(n_seqs + 1,)`` int64 sequence offsets. Read-only."""
        return self._offsets

    @property
    def bits(self) -> npt.NDArray[np.uint8]:
        """``(n_steps, 11)`` uint8: the roll packed to bits (``numpy.packbits``). Read-only."""
        return self._bits

    @property
    def roll(self) -> npt.NDArray[np.uint8]:
        """``(n_steps, 88)`` uint8: the whole piano roll, unpacked on each access. Read-only.

        For a large split this is 88 bytes per step; :meth:`rows` and
        :meth:`sequence` unpack only part of it.
        """
        return self.rows(slice(None))

    def rows(self, index: slice | IntArray) -> npt.NDArray[np.uint8]:
        """Steps of the roll, unpacked.

        Args:
            index: a slice, or ``(k,)`` integer indices of steps.

        Returns:
            ``(k, 88)`` uint8, read-only.
        """
        out = np.unpackbits(self._bits[index], axis=1, count=N_PITCHES)
        out.flags.writeable = False
        return out

    def __len__(self) -> int:
        """Number of sequences."""
        return int(self.offsets.shape[0]) - 1

    @property
    def n_steps(self) -> int:
        """Total number of time steps over all sequences."""
        return int(self._bits.shape[0])

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        """``(n_seqs,)`` int64: the number of steps of each sequence."""
        return np.diff(self.offsets)

    def sequence(self, i: int) -> npt.NDArray[np.uint8]:
        """Return sequence ``i`` as a read-only view.

        Args:
            i: sequence index in ``[0, len(self))``; a negative index is
                refused (it would silently pick a sequence from the end).

        Returns:
            ``(T_i, 88)`` uint8 piano roll.

        Raises:
            IndexError: naming the index and the valid range.
        """
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise IndexError(f"sequence index must be an integer in 0..{n - 1}, got {i!r}")
        if not 0 <= i < n:
            raise IndexError(
                f"sequence index {i} is out of range: the split has {n} sequence(s), "
                f"valid indices are 0..{n - 1}"
            )
        return self.rows(slice(int(self.offsets[i]), int(self.offsets[i + 1])))

    def subset(self, indices: Sequence[int] | IntArray) -> Split:
        """Return a new split holding the given sequences, in the given order.

        Args:
            indices: ``(k,)`` sequence indices, each in ``[0, len(self))``
                (repeats allowed, negative indices refused).

        Returns:
            A split of ``k`` sequences with its own compact roll.

        Raises:
            IndexError: naming the first index out of range and the valid range.
        """
        raw = np.asarray(indices)
        n = len(self)
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise IndexError(
                f"subset indices must be integers in 0..{n - 1}, got dtype {raw.dtype}"
            )
        idx = raw.astype(np.int64).reshape(-1)
        bad = idx[(idx < 0) | (idx >= n)]
        if bad.size:
            raise IndexError(
                f"subset index {int(bad[0])} is out of range: the split has {n} sequence(s), "
                f"valid indices are 0..{n - 1}"
            )
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # Row r of the new roll is row starts[j] + (r - new_offsets[j]) of this one,
        # j being the sequence that row r falls in.
        within = np.arange(int(new_offsets[-1]), dtype=np.int64) - np.repeat(
            new_offsets[:-1], lengths
        )
        rows = np.repeat(starts, lengths) + within
        return Split.from_bits(self._bits[rows], new_offsets)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset of three splits.

    Attributes:
        name: the embedded name or the file's stem, e.g. ``"bach_chorales"``.
        train: training sequences.
        valid: validation sequences.
        test: test sequences.
    """

    name: str
    train: Split
    valid: Split
    test: Split

    def split(self, name: str) -> Split:
        """Return the split called ``name``: ``"train"``, ``"valid"`` or ``"test"``.

        Raises:
            DataError: for any other name.
        """
        if name not in SPLIT_NAMES:
            raise DataError(
                f"dataset {self.name!r} has no split {name!r}; expected one of "
                + ", ".join(SPLIT_NAMES)
            )
        split: Split = getattr(self, name)
        return split
