"""``minigrad sample``: generate music from a trained model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.cli.common import (
    MAX_SAMPLE_STEPS,
    Formatter,
    Subparsers,
    UsageError,
    add_import_option,
    check_outputs,
    check_range,
    non_empty,
    refuse_output_over_input,
    write_stdout,
)
from models.data.dataset import PITCH_LO, one_line
from models.generate.midi import MissingExtraError, check_tempo, write_midi
from models.generate.roll_svg import piano_roll_svg
from models.generate.sample import MIDI_SUFFIXES, PrimeSpec, sample, write_roll_npz
from models.train.loop import load_model
from models.train.svg import write_svg

# --------------------------------------------------------------------------- command


def add(sub: Subparsers) -> None:
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
        formatter_class=Formatter,
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        type=non_empty,
        metavar="FILE",
        help="a run's model.npz or checkpoint.npz",
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
        "-o",
        "--out",
        default=None,
        type=non_empty,
        metavar="FILE",
        help="the song: .mid / .midi or .npz",
    )
    p.add_argument(
        "--roll", default=None, type=non_empty, metavar="FILE.svg", help="the piano roll as SVG"
    )
    p.add_argument(
        "--tempo",
        type=float,
        default=100.0,
        metavar="BPM",
        help="MIDI tempo, steps per minute, from about 3.58 (the slowest a MIDI file holds) "
        "to 10000",
    )
    add_import_option(p)
    p.set_defaults(func=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    """``minigrad sample``: generate, write the files, print JSON; returns the exit code."""
    check_range("--steps", args.steps, 0, MAX_SAMPLE_STEPS)
    check_range("--seed", args.seed, 0)
    try:  # checked before any file is written: a MIDI tempo is 60e6/BPM in 24 bits
        check_tempo("--tempo", args.tempo)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.out is None and args.roll is None:
        raise UsageError("nothing to write: give -o song.mid (or song.npz) and/or --roll song.svg")
    out = Path(args.out) if args.out is not None else None
    if out is not None and out.suffix.lower() not in (*MIDI_SUFFIXES, ".npz"):
        raise UsageError(
            f"-o {out}: unknown file type {out.suffix or '(none)'!r}; use .mid or .npz"
        )
    try:
        spec = PrimeSpec.parse(args.prime) if args.prime is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    refuse_output_over_input(
        {"-o": args.out, "--roll": args.roll},
        {"--checkpoint": args.checkpoint, "--prime": spec.dataset if spec else None},
    )
    check_outputs({"-o": args.out, "--roll": args.roll})
    model, info = load_model(args.checkpoint)
    prime = None
    if spec is not None:
        dataset = info["config"].get("dataset")
        try:
            prime = spec.load(dataset if isinstance(dataset, str) else None)
        except IndexError as exc:  # INDEX or STEPS beyond the piece: a bad option value
            raise UsageError(str(exc)) from None
    primed = 0 if prime is None else int(prime.shape[0])
    roll = sample(model, args.steps, seed=args.seed, greedy=args.greedy, prime=prime)
    # again, now that the song is made: a link swapped meanwhile must not lead into a run
    check_outputs({"-o": args.out, "--roll": args.roll})
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
                sys.stderr.write(f"minigrad: error: {one_line(exc)}{note}\n")
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
    write_stdout(json.dumps(summary, indent=2) + "\n")
    return 0
