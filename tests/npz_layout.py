"""Writing small datasets in the shared ``.npz`` layout, for the tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from models.data import N_PITCHES, PITCH_LO


def split_arrays(seqs: Sequence[np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The ``{prefix}_notes``, ``_step_offsets`` and ``_seq_offsets`` arrays of piano
    rolls ``seqs`` (each (T_i, 88) of 0/1)."""
    notes: list[int] = []
    step_offsets = [0]
    seq_offsets = [0]
    for seq in seqs:
        for frame in seq:
            notes.extend(int(k) + PITCH_LO for k in np.flatnonzero(frame))
            step_offsets.append(len(notes))
        seq_offsets.append(seq_offsets[-1] + len(seq))
    return {
        f"{prefix}_notes": np.asarray(notes, dtype=np.int16),
        f"{prefix}_step_offsets": np.asarray(step_offsets, dtype=np.int32),
        f"{prefix}_seq_offsets": np.asarray(seq_offsets, dtype=np.int32),
    }


def write_npz_dataset(path: Path, splits: Mapping[str, Sequence[np.ndarray]]) -> Path:
    """Write ``{"train": rolls, "valid": rolls, "test": rolls}`` to ``path``."""
    arrays: dict[str, np.ndarray] = {"format_version": np.array(1)}
    for name, seqs in splits.items():
        arrays.update(split_arrays(seqs, name))
    np.savez(path, **arrays)
    return path


def write_tiny_dataset(
    path: Path,
    seed: int,
    n_seqs: int = 3,
    lengths: tuple[int, int] = (4, 8),
    notes: tuple[int, int] = (60, 66),
    per_step: int = 2,
) -> Path:
    """A dataset of ``n_seqs`` sequences per split, ``lengths[0]`` to ``lengths[1] - 1``
    steps each, ``per_step`` draws of MIDI ``notes[0]..notes[1] - 1`` per step."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name in ("train", "valid", "test"):
        seqs = []
        for _ in range(n_seqs):
            roll = np.zeros((int(rng.integers(*lengths)), N_PITCHES), dtype=np.uint8)
            for frame in roll:
                frame[rng.choice(np.arange(*notes) - PITCH_LO, per_step)] = 1
            seqs.append(roll)
        splits[name] = seqs
    return write_npz_dataset(path, splits)
