"""Generating piano rolls from a trained ``SequenceModel``, and ``minigrad sample``.

:func:`sample` runs the model forward one time step at a time: a plan of one
step (``SequenceModel.plan(1)``) whose final states (``Run.states``) are
passed back as the initial states (``Plan.forward(..., states=...)``) of the
next step. At each step the read-out gives ``p = sigmoid(logits)``, one
probability per piano key; every key of the next frame is drawn independently
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

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.checkpoint import atomic_write_bytes
from models.cli import Subparsers, _Formatter, _one_line, command
from models.data import PITCH_LO, SPLIT_NAMES, DataError, load_dataset
from models.midi import MissingExtraError, write_midi
from models.sequence import SequenceModel
from models.svg import piano_roll_svg, write_svg
from models.train import load_model as _load_run_model

__all__ = ["PrimeSpec", "load_model", "sample", "write_roll_npz"]


def load_model(path: str | Path) -> SequenceModel:
    """The model saved by a training run, as ``minigrad evaluate`` loads it.

    Args:
        path: the run's ``model.npz``, or its ``checkpoint.npz`` (whose best
            parameters so far are taken).

    Raises:
        models.checkpoint.CheckpointError: the file is missing or not a run's file.
        ValueError: the parameters do not fit the stored configuration.
    """
    model, _ = _load_run_model(path)
    return model


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
    plan = model.plan(1)
    frame = np.zeros((1, 1, width), dtype=model.dtype)  # the input of step 0: zeros
    target = np.zeros_like(frame)  # the loss is not used
    states: dict[str, Any] | None = None
    for t in range(total):
        # step t reads frame t - 1 and predicts frame t; on primed steps only the
        # state it leaves matters (teacher forcing: frame t is the given one)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            run = plan.forward(model.params, {"x": frame, "t": target}, states)
        states = run.states
        if t >= n_primed:
            logits = run.outputs["logits"][0, 0]
            if greedy:
                roll[t] = logits > 0.0  # p > 0.5 exactly, without rounding the sigmoid
            else:
                roll[t] = rng.random(width) < _sigmoid(logits)
        frame[0, 0] = roll[t]
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
        index: the sequence's index in the split (negative counts from the end).
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
            ValueError: naming the part at fault (an unknown dataset, an index
                out of range, more steps than the sequence has).
        """
        pre = f"--prime {str(self)!r}"
        name = self.dataset or default_dataset
        if not name:
            raise ValueError(f"{pre}: DATASET is empty and the model names no dataset")
        try:
            data = load_dataset(name)
        except DataError as exc:
            raise ValueError(f"{pre}: DATASET: {_one_line(exc)}") from None
        split = data.split(self.split)
        n = len(split)
        if not -n <= self.index < n:
            raise ValueError(
                f"{pre}: INDEX {self.index} is out of range: split {self.split!r} of "
                f"{data.name!r} has {n} sequence(s) (0..{n - 1})"
            )
        seq = split.sequence(self.index)
        if self.steps > seq.shape[0]:
            raise ValueError(
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
    buffer = io.BytesIO()
    np.savez(
        buffer,
        roll=np.asarray(roll, dtype=np.uint8),
        primed_steps=np.int64(primed_steps),
        pitch_lo=np.int64(pitch_lo),
    )
    atomic_write_bytes(path, buffer.getvalue())


_MIDI_SUFFIXES = (".mid", ".midi")


# --------------------------------------------------------------------------- command


@command
def add_sample(sub: Subparsers) -> None:
    """Add ``minigrad sample``."""
    p = sub.add_parser(
        "sample",
        help="generate music from a trained model",
        description=(
            "Generate a piano roll from a run's model.npz (or checkpoint.npz), one step\n"
            "at a time, each note drawn from its predicted probability (or p > 0.5 with\n"
            '--greedy). Writes a MIDI file (needs: pip install "minigrad[midi]") or an\n'
            ".npz roll with -o, and the piano roll as SVG with --roll; prints a JSON summary."
        ),
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--checkpoint", required=True, metavar="FILE", help="a run's model.npz or checkpoint.npz"
    )
    p.add_argument(
        "--steps", required=True, type=int, metavar="N", help="frames to generate after the prime"
    )
    p.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the note draws")
    p.add_argument("--greedy", action="store_true", help="set the notes with p > 0.5, no draws")
    p.add_argument(
        "--prime",
        default=None,
        metavar=PrimeSpec.FORMAT,
        help="read the first STEPS frames of a dataset's sequence first "
        "(e.g. bach_chorales:test:0:16; an empty DATASET is the model's own)",
    )
    p.add_argument(
        "-o", "--out", default=None, metavar="FILE", help="the song: .mid / .midi or .npz"
    )
    p.add_argument("--roll", default=None, metavar="FILE.svg", help="the piano roll as SVG")
    p.add_argument(
        "--tempo", type=float, default=100.0, metavar="BPM", help="MIDI tempo, steps per minute"
    )
    p.set_defaults(func=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    """``minigrad sample``: generate, write the files, print JSON; returns the exit code."""
    if args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.out is None and args.roll is None:
        raise ValueError("nothing to write: give -o song.mid (or song.npz) and/or --roll song.svg")
    out = Path(args.out) if args.out is not None else None
    if out is not None and out.suffix.lower() not in (*_MIDI_SUFFIXES, ".npz"):
        raise ValueError(
            f"-o {out}: unknown file type {out.suffix or '(none)'!r}; use .mid or .npz"
        )
    spec = PrimeSpec.parse(args.prime) if args.prime is not None else None
    model, info = _load_run_model(args.checkpoint)
    prime = None
    if spec is not None:
        dataset = info["config"].get("dataset")
        prime = spec.load(dataset if isinstance(dataset, str) else None)
    primed = 0 if prime is None else int(prime.shape[0])
    roll = sample(model, args.steps, seed=args.seed, greedy=args.greedy, prime=prime)
    written: list[str] = []
    if args.roll is not None:
        how = "greedy" if args.greedy else f"seed {args.seed}"
        title = f"{model.cell_type} H={model.hidden_size}: {args.steps} steps generated, {how}"
        if spec is not None:
            title += f", primed with {spec}"
        write_svg(
            args.roll, piano_roll_svg(roll, pitch_lo=PITCH_LO, primed_steps=primed, title=title)
        )
        written.append(str(args.roll))
    if out is not None:
        if out.suffix.lower() == ".npz":
            write_roll_npz(out, roll, primed_steps=primed)
        else:
            try:
                write_midi(roll, out, tempo_bpm=args.tempo)
            except MissingExtraError as exc:
                note = f" ({', '.join(written)} written)" if written else ""
                sys.stderr.write(f"minigrad: error: {_one_line(exc)}{note}\n")
                return 1
        written.append(str(out))
    generated = roll[primed:]
    summary = {
        "checkpoint": str(args.checkpoint),
        "cell": model.cell_type,
        "hidden": model.hidden_size,
        "steps": int(roll.shape[0]),
        "primed_steps": primed,
        "generated_steps": int(generated.shape[0]),
        "seed": args.seed,
        "greedy": bool(args.greedy),
        "prime": None if spec is None else str(spec),
        "notes_per_generated_step": (
            float(generated.sum()) / generated.shape[0] if generated.shape[0] else 0.0
        ),
        "files": written,
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0
