"""Loading polyphonic-music datasets as 88-key piano rolls: embedded, ``.npz`` or pickle.

A dataset has three splits (``train``, ``valid``, ``test``). Each split holds
its sequences concatenated in one ``(n_steps, 88)`` uint8 piano roll, built
once when the dataset is loaded, plus the offsets where each sequence starts.
:func:`batches` then only gathers and pads rows of that roll.

Three sources are read:

* the embedded dataset :data:`EMBEDDED` (``"bach_chorales"``), Bach chorales
  built from the music21 corpus and shipped in ``models/data/datasets``;
* a ``.npz`` archive in the layout below (:func:`load_npz`);
* the benchmark's original Python pickles (``JSB Chorales.pickle``,
  ``Nottingham.pickle``, ``MuseData.pickle``, ``Piano-midi.de.pickle``), read
  by a restricted unpickler that builds nothing but lists, tuples, dicts and
  numbers (:func:`load_pickle`).

The ``.npz`` layout, for each split ``s``:

* ``s_notes`` (n_notes,) integers: every sounding MIDI note of every step,
  concatenated;
* ``s_step_offsets`` (n_steps + 1,) integers: the notes of step ``k`` are
  ``s_notes[o[k]:o[k + 1]]`` (an empty slice is a rest);
* ``s_seq_offsets`` (n_seqs + 1,) integers: sequence ``i`` is steps ``q[i]``
  to ``q[i + 1] - 1``;

plus the scalar ``format_version`` (1). The scalars ``pitch_lo``, ``pitch_hi``,
``source`` and ``source_sha256`` may be present and are not needed; when
present, ``pitch_lo`` and ``pitch_hi`` must be MIDI numbers (0..127), not
inverted, and hold every note of the file.
"""

from __future__ import annotations

import math
import os
import pickle
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from models.data.dataset import (
    _NPZ_EXPECTED,
    _PICKLE_EXPECTED,
    EMBEDDED_DATASETS,
    FORMAT_VERSION,
    MIDI_MAX,
    N_PITCHES,
    PITCH_HI,
    PITCH_LO,
    SPLIT_NAMES,
    DataError,
    Dataset,
    Split,
    check_pitch_range,
    one_line,
)
from models.io import FileError, Member, NpzLimits, open_regular, read_npz, require_regular_file

MAX_STEPS = 2_000_000
"""The most time steps a dataset may hold over its three splits (a piano roll of 176 MB);
Nottingham holds about 270,000."""
MAX_NOTES = 10_000_000
"""The most notes a dataset may hold over its three splits (Nottingham holds about 260,000)."""

_ROLL_BLOCK = 65_536
"""Steps of the piano roll filled at a time while a split is built."""

# --------------------------------------------------------------------------- loading


def _split_from_events(
    notes: npt.NDArray[Any],
    step_offsets: npt.NDArray[Any],
    seq_offsets: npt.NDArray[Any],
    where: str,
) -> Split:
    """Check the three arrays of one split and build its piano roll.

    Args:
        notes: ``(n_notes,)`` MIDI numbers in ``PITCH_LO..PITCH_HI``.
        step_offsets: ``(n_steps + 1,)`` from 0 to ``n_notes``, non-decreasing.
        seq_offsets: ``(n_seqs + 1,)`` from 0 to ``n_steps``, non-decreasing.
        where: prefix for error messages, e.g. ``"data.npz: split 'train'"``.
    """
    for key, arr in (
        ("notes", notes),
        ("step_offsets", step_offsets),
        ("seq_offsets", seq_offsets),
    ):
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise DataError(
                f"{where}_{key}: expected a 1-d integer array, got {arr.dtype} {arr.shape}"
            )
    for key, offs, total, what in (
        ("step_offsets", step_offsets, notes.shape[0], "the number of notes"),
        ("seq_offsets", seq_offsets, step_offsets.shape[0] - 1, "the number of steps"),
    ):
        if offs.shape[0] == 0 or offs[0] != 0 or offs[-1] != total:
            first = int(offs[0]) if offs.shape[0] else None
            last = int(offs[-1]) if offs.shape[0] else None
            raise DataError(
                f"{where}_{key}: expected offsets from 0 to {what} ({total}), got {first}..{last}"
            )
        if np.any(np.diff(offs.astype(np.int64)) < 0):
            raise DataError(f"{where}_{key}: expected non-decreasing offsets")
    if notes.shape[0]:
        lo, hi = int(notes.min()), int(notes.max())
        if lo < PITCH_LO or hi > PITCH_HI:
            raise DataError(
                f"{where}_notes: expected MIDI notes in {PITCH_LO}..{PITCH_HI}, got {lo}..{hi}"
            )
    n_steps = step_offsets.shape[0] - 1
    empty = np.flatnonzero(np.diff(seq_offsets.astype(np.int64)) == 0)
    if empty.size:
        raise DataError(
            f"{where}: sequence {int(empty[0])} has no time steps ({empty.size} empty "
            "sequence(s)); every sequence needs at least one step"
        )
    bits = np.zeros((n_steps, (N_PITCHES + 7) // 8), dtype=np.uint8)
    # in blocks of steps: a dense roll and index arrays for every note at once
    # would take 88 bytes per step and 16 per note on top of the packed roll
    for s0 in range(0, n_steps, _ROLL_BLOCK):
        s1 = min(n_steps, s0 + _ROLL_BLOCK)
        ends = step_offsets[s0 : s1 + 1].astype(np.int64)
        step_of_note = np.repeat(np.arange(s1 - s0, dtype=np.int64), np.diff(ends))
        block = np.zeros((s1 - s0, N_PITCHES), dtype=np.uint8)
        block[step_of_note, notes[ends[0] : ends[-1]].astype(np.int64) - PITCH_LO] = 1
        bits[s0:s1] = np.packbits(block, axis=1)
    return Split.from_bits(bits, seq_offsets.astype(np.int64))


def _check_file(path: Path, kind: str) -> None:
    """Raise :class:`DataError` unless ``path`` is an existing regular file (no FIFO, device)."""
    try:
        require_regular_file(path, f"{kind} dataset")
    except FileError as exc:
        raise DataError(str(exc)) from None


_NPZ_MEMBERS = (
    Member("format_version", "biufU", required=True),
    *(
        Member(f"{s}_{k}", "biufU", required=True)  # dtype and shape: _split_from_events
        for s in SPLIT_NAMES
        for k in ("notes", "step_offsets", "seq_offsets")
    ),
    Member("pitch_lo", "iu", (0,)),
    Member("pitch_hi", "iu", (0,)),
    Member("source", "U", (0,)),
    Member("source_sha256", "U", (0,)),
)
_NPZ_LIMITS = NpzLimits(
    max_members=len(_NPZ_MEMBERS),
    max_member_bytes=MAX_NOTES * 8,
    max_total_bytes=MAX_NOTES * 16,
    # no ratio check: the sizes above bound what a data set expands to, and real music
    # (a chord repeated for minutes) compresses far beyond any fixed ratio
    max_ratio=math.inf,
)


def _read_npz_arrays(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The members of a dataset ``.npz`` (:func:`models.io.read_npz`), or a DataError."""

    def error(message: str) -> DataError:
        if "missing member(s)" in message:
            message = message.replace("missing member(s)", "missing key(s)")
        elif "corrupt or truncated archive" in message:
            message = message.replace(
                "corrupt or truncated archive", "corrupt or truncated .npz archive"
            )
        elif "not an .npz (zip) archive" in message:
            message = f"{path}: is not a .npz (zip) archive"
        elif "is a single .npy array" in message:
            message = f"{path}: is a single .npy array"
        return DataError(f"{message}; {_NPZ_EXPECTED}")

    return read_npz(path, ".npz dataset", _NPZ_MEMBERS, _NPZ_LIMITS, error=error)


def _check_sizes(where: str, n_steps: int, n_notes: int) -> None:
    """Refuse a dataset larger than :data:`MAX_STEPS` steps or :data:`MAX_NOTES` notes."""
    if n_steps > MAX_STEPS:
        raise DataError(f"{where}: more than {MAX_STEPS} time steps in all, the most accepted")
    if n_notes > MAX_NOTES:
        raise DataError(f"{where}: more than {MAX_NOTES} notes in all, the most accepted")


def load_npz(path: str | os.PathLike[str]) -> Dataset:
    """Load a dataset from a ``.npz`` archive in the layout of the module docstring.

    Args:
        path: the archive; the dataset is named after its stem.

    Returns:
        The dataset, its piano rolls built once here.

    Raises:
        DataError: missing, unreadable, corrupt or of another layout.
    """
    path = Path(path)
    arrays = _read_npz_arrays(path)
    required = ["format_version"] + [
        f"{s}_{k}" for s in SPLIT_NAMES for k in ("notes", "step_offsets", "seq_offsets")
    ]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}; {_NPZ_EXPECTED}")
    version = arrays["format_version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise DataError(
            f"{path}: key format_version: expected the integer {FORMAT_VERSION}, "
            f"got {version.dtype} {version.tolist()!r}"
        )
    _check_sizes(
        str(path),
        sum(arrays[f"{s}_step_offsets"].shape[0] - 1 for s in SPLIT_NAMES),
        sum(arrays[f"{s}_notes"].shape[0] for s in SPLIT_NAMES),
    )
    _check_declared_range(path, arrays)
    splits = {
        s: _split_from_events(
            arrays[f"{s}_notes"],
            arrays[f"{s}_step_offsets"],
            arrays[f"{s}_seq_offsets"],
            f"{path}: key {s}",
        )
        for s in SPLIT_NAMES
    }
    return Dataset(name=path.stem, **splits)


def _check_declared_range(path: Path, arrays: dict[str, npt.NDArray[Any]]) -> None:
    """The optional ``pitch_lo`` / ``pitch_hi`` of a ``.npz`` dataset: MIDI numbers,
    not inverted, and holding every note of the file."""
    if "pitch_lo" not in arrays and "pitch_hi" not in arrays:
        return
    lo_arr = arrays.get("pitch_lo", np.asarray(0))
    hi_arr = arrays.get("pitch_hi", np.asarray(MIDI_MAX))
    try:
        lo, hi = check_pitch_range(lo_arr, hi_arr, where=f"{path}: key ")
    except ValueError as exc:
        raise DataError(str(exc)) from None
    for s in SPLIT_NAMES:
        notes = arrays[f"{s}_notes"]
        if notes.ndim == 1 and notes.dtype.kind in "iu" and notes.shape[0]:
            n_lo, n_hi = int(notes.min()), int(notes.max())
            if n_lo < lo or n_hi > hi:
                raise DataError(
                    f"{path}: key {s}_notes holds notes {n_lo}..{n_hi}, outside the range "
                    f"pitch_lo..pitch_hi = {lo}..{hi} the file declares"
                )


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global, so it can only build plain containers."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        raise DataError(
            f"{self._path}: refused to load the pickle: it references {module}.{name}; "
            "only plain lists, tuples, dicts and numbers are accepted"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(
            f"{self._path}: refused to load the pickle: it uses persistent ids; "
            "only plain lists, tuples, dicts and numbers are accepted"
        )


def _short_repr(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a message about a file's value.

    A pickle may hold an int of any size (or a list of them), whose decimal text
    Python refuses to make past 4300 digits, and would take long to make anyway.
    """
    if isinstance(value, int) and abs(value) >= 10**18:
        return f"(an integer of {value.bit_length()} bits)"
    try:
        text = repr(value)
    except ValueError:  # a huge int inside a list
        return f"(a {type(value).__name__} holding a huge integer)"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _pickle_split(obj: object, path: Path, split: str, budget: list[int]) -> Split:
    """Check one split of an original pickle and build its piano roll.

    ``budget`` holds the steps and notes converted so far over every split, and
    is checked against :data:`MAX_STEPS` / :data:`MAX_NOTES` before each
    sequence and step is walked: a pickle that references one list 10^8 times
    is small on disk but would otherwise expand to gigabytes here.
    """
    where = f"{path}: split {split!r}"
    if not isinstance(obj, list | tuple):
        raise DataError(f"{where}: expected a list of sequences, got {type(obj).__name__}")
    notes: list[int] = []
    step_sizes: list[int] = []
    seq_sizes: list[int] = []
    for i, seq in enumerate(obj):
        if not isinstance(seq, list | tuple):
            raise DataError(
                f"{where}, sequence {i}: expected a list of time steps, got {type(seq).__name__}"
            )
        budget[0] += len(seq)
        _check_sizes(str(path), budget[0], budget[1])
        for k, step in enumerate(seq):
            if not isinstance(step, list | tuple):
                raise DataError(
                    f"{where}, sequence {i}, step {k}: expected a list of MIDI note numbers, "
                    f"got {type(step).__name__}"
                )
            budget[1] += len(step)
            if budget[1] > MAX_NOTES:
                _check_sizes(str(path), budget[0], budget[1])
            for note in step:
                if type(note) is int:
                    value = note
                elif type(note) is float and note.is_integer():
                    value = int(note)
                else:
                    raise DataError(
                        f"{where}, sequence {i}, step {k}: note {_short_repr(note)} is not a "
                        "MIDI note number (expected an int or an integral float)"
                    )
                if not PITCH_LO <= value <= PITCH_HI:
                    raise DataError(
                        f"{where}, sequence {i}, step {k}: note {_short_repr(value)} is "
                        f"outside {PITCH_LO}..{PITCH_HI}"
                    )
                notes.append(value)
            step_sizes.append(len(step))
        seq_sizes.append(len(seq))
    return _split_from_events(
        np.asarray(notes, dtype=np.int64),
        np.concatenate([[0], np.cumsum(step_sizes, dtype=np.int64)]).astype(np.int64),
        np.concatenate([[0], np.cumsum(seq_sizes, dtype=np.int64)]).astype(np.int64),
        where,
    )


def load_pickle(path: str | os.PathLike[str]) -> Dataset:
    """Load one of the benchmark's original pickles (Boulanger-Lewandowski et al. 2012).

    The file must hold a dict with ``"train"``, ``"valid"`` and ``"test"``, each
    a list of sequences, each a list of time steps, each a list or tuple of MIDI
    note numbers (ints, or floats with an integral value) in 21..108. Python 2
    pickles are read with ``encoding="latin1"``. No global is ever resolved, so
    a pickle that names a class or function (e.g. one crafted to run a command)
    is refused before anything in it is called.

    Args:
        path: the ``.pickle`` file; the dataset is named after its stem.

    Returns:
        The dataset, its piano rolls built once here.

    Raises:
        DataError: missing, unreadable, refused or of another structure; the
            message names the split and sequence at fault.
    """
    path = Path(path)
    try:
        fh = open_regular(path, ".pickle dataset")
    except FileError as exc:
        raise DataError(str(exc)) from None
    try:
        with fh:
            obj = _RestrictedUnpickler(fh, path).load()
    except DataError:
        raise
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({one_line(exc)})") from exc
    except Exception as exc:  # the unpickler can fail in many ways on a bad file
        raise DataError(
            f"{path}: not a readable pickle ({type(exc).__name__}: {one_line(exc)}); "
            f"{_PICKLE_EXPECTED}"
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: got a pickled {type(obj).__name__}; {_PICKLE_EXPECTED}")
    missing = [s for s in SPLIT_NAMES if s not in obj]
    if missing:
        raise DataError(f"{path}: missing split(s) {', '.join(missing)}; {_PICKLE_EXPECTED}")
    budget = [0, 0]
    splits = {s: _pickle_split(obj[s], path, s, budget) for s in SPLIT_NAMES}
    return Dataset(name=path.stem, **splits)


def _load_embedded(name: str) -> Dataset:
    """Load the embedded dataset ``name`` from the ``models.data.datasets`` package."""
    ref = resources.files("models.data.datasets").joinpath(f"{name}.npz")
    with resources.as_file(ref) as path:
        dataset = load_npz(path)
    return Dataset(name=name, train=dataset.train, valid=dataset.valid, test=dataset.test)


def load_dataset(name_or_path: str | os.PathLike[str]) -> Dataset:
    """Load a dataset by embedded name or from a file.

    Args:
        name_or_path: an embedded name (:data:`EMBEDDED_DATASETS`), or the path
            of a ``.npz`` archive (:func:`load_npz`) or of an original
            ``.pickle`` / ``.pkl`` file (:func:`load_pickle`).

    Returns:
        The dataset with its three splits.

    Raises:
        DataError: an unknown name, a missing file or a bad file.
    """
    if isinstance(name_or_path, str) and name_or_path in EMBEDDED_DATASETS:
        return _load_embedded(name_or_path)
    path = Path(name_or_path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(
            f"{str(name_or_path)!r} is neither an embedded dataset "
            f"({', '.join(EMBEDDED_DATASETS)}) nor an existing file; a path to a .npz "
            "or .pickle dataset is also accepted"
        )
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .npz or .pickle dataset file")
    if suffix == ".npz":
        return load_npz(path)
    if suffix in (".pickle", ".pkl"):
        return load_pickle(path)
    raise DataError(f"{path}: unknown file type {suffix or '(none)'!r}; expected .npz or .pickle")
