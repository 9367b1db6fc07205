"""Generating piano rolls from a trained ``SequenceModel``, and ``minigrad sample``.

:func:`sample` runs the model forward one time step at a time, with the
numbers of ``SequenceModel.step`` but through a ``minigrad.plan.Stepper``: the
plan of one step, compiled, bound and loaded once and run again for every
frame, the states each step leaves carried to the next in place (so the cost
is linear in the song's length, and small per step).
At each step the read-out gives ``p = sigmoid(logits)``, one probability per
piano key; every key of the next frame is drawn independently
from its Bernoulli(``p``) (or set where ``p > 0.5`` with ``greedy``), and the
frame is fed back as the next input, exactly as the model was trained
(``models.data.Batch``: the input of step ``t`` is frame ``t - 1``, zeros at
the first step).

With a prime ``(P, 88)`` the model first reads the primed frames (teacher
forcing: the frames given, not sampled, are fed back), then generates
``steps`` frames; the returned roll is the prime followed by the generated
frames. The same seed gives the same song.

``minigrad sample --checkpoint FILE --steps N [--seed S] [--greedy] [--prime
DATASET:SPLIT:INDEX:STEPS] [-o song.mid] [--roll song.svg]`` writes the song
as MIDI (the optional ``mido`` package, ``pip install "minigrad[midi]"``) or
as ``.npz``, and the piano roll as SVG with the primed part marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from minigrad.program import plan_of
from models.data.dataset import MIDI_MAX, PITCH_LO, SPLIT_NAMES, DataError, check_pitch_range
from models.data.load import load_dataset
from models.io import atomic_write
from models.nets.sequence import SequenceModel
from models.train.loop import load_model as load_run

__all__ = ["PrimeSpec", "load_model", "sample", "write_roll_npz"]


def load_model(path: str | Path) -> SequenceModel:
    """The model saved by a training run, as ``minigrad evaluate`` loads it.

    Args:
        path: the run's ``model.npz``, or its ``checkpoint.npz`` (whose best
            parameters so far are taken).

    Raises:
        models.train.checkpoint.CheckpointError: the file is missing or not a run's file.
        ValueError: the parameters do not fit the stored configuration.
    """
    model, _ = load_run(path)
    return model


_DRAW_BLOCK = 4096
"""Uniform numbers are drawn for this many steps at a time (the same numbers as one
draw per step)."""


def _sigmoid(z: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Logistic sigmoid without overflow, as float64."""
    z64 = z.astype(np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * z64))


def _check_prime(prime: object, width: int) -> npt.NDArray[np.uint8]:
    arr = np.asarray(prime)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"prime must have shape (P, {width}), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"prime must hold 0/1 numbers, got dtype {arr.dtype}")
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        raise ValueError("prime must hold only 0 and 1 (a piano roll)")
    return arr.astype(np.uint8)


def sample(
    model: SequenceModel,
    steps: int,
    *,
    seed: int = 0,
    greedy: bool = False,
    prime: npt.ArrayLike | None = None,
) -> npt.NDArray[np.uint8]:
    """Generate a piano roll from the model, one step at a time.

    Args:
        model: a (trained) ``SequenceModel``; its parameters are not changed.
        steps: the number of frames to generate after the prime, >= 0.
        seed: seed of the ``numpy.random.Generator`` drawing the notes, >= 0;
            unused with ``greedy``.
        greedy: set a note where its probability is > 0.5 instead of drawing it.
        prime: optional ``(P, K)`` 0/1 roll (``K = model.input_size``) read by
            the model before generating (teacher forcing).

    Returns:
        ``(P + steps, K)`` uint8: the prime, then the generated frames.

    Raises:
        ValueError: a bad ``steps``, ``seed`` or prime (naming it).
    """
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    width = model.input_size
    primed = np.zeros((0, width), dtype=np.uint8) if prime is None else _check_prime(prime, width)
    n_primed = primed.shape[0]
    total = n_primed + int(steps)
    roll = np.zeros((total, width), dtype=np.uint8)
    roll[:n_primed] = primed
    if steps == 0:
        return roll
    rng = np.random.default_rng(int(seed))
    # One plan of one step, bound once and run ``total`` times, each step starting
    # from the states the previous one left (``minigrad.plan.Stepper``): the cost per
    # step is constant, so a song's cost is linear in its length, and nothing is
    # checked, copied or allocated per step but the frame itself.
    x0 = np.zeros((1, 1, width), dtype=model.dtype)  # the input of step 0: zeros
    stepper = plan_of(model.cell, 1, wrt=()).stepper(
        model.params, {"x": x0, "t": np.zeros_like(x0), **model.noise(1, 1)}
    )
    x = stepper.input("x")[0, 0]
    logits = stepper.output("logits")[0, 0]
    block = np.empty((0, width))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for t in range(total):
            # step t reads frame t - 1 and predicts frame t; on primed steps only the
            # state it leaves matters (teacher forcing: frame t is the given one)
            stepper.step()
            if t >= n_primed:
                if greedy:
                    roll[t] = logits > 0.0  # p > 0.5 exactly, without rounding the sigmoid
                else:
                    i = (t - n_primed) % _DRAW_BLOCK
                    if i == 0:  # the same stream as one draw per step, drawn in blocks
                        block = rng.random((min(_DRAW_BLOCK, total - t), width))
                    roll[t] = block[i] < _sigmoid(logits)
            x[:] = roll[t]
    return roll


# --------------------------------------------------------------------------- --prime


@dataclass(frozen=True)
class PrimeSpec:
    """A ``--prime DATASET:SPLIT:INDEX:STEPS`` specification: the first ``steps``
    frames of sequence ``index`` of a split of a dataset.

    Attributes:
        dataset: an embedded dataset name or a dataset file; empty for the
            dataset the model was trained on.
        split: ``"train"``, ``"valid"`` or ``"test"``.
        index: the sequence's index in the split, from 0 (a negative one is
            refused by :meth:`load`, not counted from the end).
        steps: the number of leading frames, >= 1.
    """

    dataset: str
    split: str
    index: int
    steps: int

    FORMAT = "DATASET:SPLIT:INDEX:STEPS"

    @classmethod
    def parse(cls, text: str) -> PrimeSpec:
        """Parse ``DATASET:SPLIT:INDEX:STEPS`` (the dataset may itself hold ``:``).

        Raises:
            ValueError: naming the part at fault.
        """
        pre = f"--prime {text!r}"
        parts = text.rsplit(":", 3)
        if len(parts) != 4:
            raise ValueError(
                f"{pre}: expected {cls.FORMAT} (4 parts separated by ':', e.g. "
                f"bach_chorales:test:0:16), got {len(parts)} part(s)"
            )
        dataset, split, index_text, steps_text = (p.strip() for p in parts)
        if split not in SPLIT_NAMES:
            raise ValueError(f"{pre}: SPLIT {split!r} is not one of {', '.join(SPLIT_NAMES)}")
        try:
            index = int(index_text)
        except ValueError:
            raise ValueError(
                f"{pre}: INDEX {index_text!r} is not an integer (the sequence's index in the split)"
            ) from None
        try:
            steps = int(steps_text)
        except ValueError:
            raise ValueError(
                f"{pre}: STEPS {steps_text!r} is not an integer (the number of primed frames)"
            ) from None
        if steps < 1:
            raise ValueError(f"{pre}: STEPS must be >= 1, got {steps}")
        return cls(dataset, split, index, steps)

    def __str__(self) -> str:
        return f"{self.dataset}:{self.split}:{self.index}:{self.steps}"

    def load(self, default_dataset: str | None = None) -> npt.NDArray[np.uint8]:
        """The primed frames, ``(steps, 88)`` uint8.

        Args:
            default_dataset: the dataset used when ``dataset`` is empty (the
                model's training dataset).

        Raises:
            IndexError: an INDEX out of range (naming the valid range), or more
                STEPS than the sequence has.
            ValueError: an unknown or unreadable dataset, naming it.
        """
        pre = f"--prime {str(self)!r}"
        name = self.dataset or default_dataset
        if not name:
            raise ValueError(f"{pre}: DATASET is empty and the model names no dataset")
        try:
            data = load_dataset(name)
        except DataError as exc:
            raise ValueError(f"{pre}: DATASET: {' '.join(str(exc).split())}") from None
        split = data.split(self.split)
        n = len(split)
        if not 0 <= self.index < n:
            raise IndexError(
                f"{pre}: INDEX {self.index} is out of range: split {self.split!r} of "
                f"{data.name!r} has {n} sequence(s) (0..{n - 1})"
                + ("; a negative INDEX does not count from the end" if self.index < 0 else "")
            )
        seq = split.sequence(self.index)
        if self.steps > seq.shape[0]:
            raise IndexError(
                f"{pre}: STEPS {self.steps} exceeds the {seq.shape[0]} steps of sequence "
                f"{self.index} of split {self.split!r}"
            )
        return np.array(seq[: self.steps], dtype=np.uint8)


# --------------------------------------------------------------------------- files


def write_roll_npz(
    path: str | Path, roll: npt.ArrayLike, *, primed_steps: int = 0, pitch_lo: int = PITCH_LO
) -> None:
    """Save a roll atomically as ``.npz``: ``roll`` (T, P) uint8, ``primed_steps``, ``pitch_lo``.

    Read it back with ``numpy.load(path, allow_pickle=False)``.
    """
    data = np.asarray(roll, dtype=np.uint8)
    check_pitch_range(pitch_lo, MIDI_MAX)
    if data.ndim != 2:
        raise ValueError(f"roll must have shape (T, P), got shape {data.shape}")
    if not 0 <= primed_steps <= data.shape[0]:
        raise ValueError(f"primed_steps must lie in [0, {data.shape[0]}], got {primed_steps}")

    def write(f: IO[bytes]) -> None:
        # straight into the temporary file: no copy of a long roll in memory
        np.savez(f, roll=data, primed_steps=np.int64(primed_steps), pitch_lo=np.int64(pitch_lo))

    atomic_write(path, write)


MIDI_SUFFIXES = (".mid", ".midi")
