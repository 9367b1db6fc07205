"""What every command shares: the help formatter, one-line errors, cell options."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minigrad.cell import Cell
from minigrad.serialize import register_node_types
from models.cells.registry import resolve_cell
from models.data.dataset import one_line
from models.io import LOCK_FILE, FileError, check_output_file
from models.nets.base import l2_cell
from models.sweep.config import SWEEP_FILES
from models.train.config import RUN_FILES

PROG = "minigrad"

MAX_HIDDEN = 10_000
"""The largest ``--hidden`` of ``explain`` and ``graph``: a cell's recurrent weights then
have 10**8 elements, ``minigrad.cell.MAX_ELEMENTS`` (declared, never allocated)."""
MAX_INPUT_SIZE = 10_000
"""The largest ``--input-size`` of ``explain`` and ``graph``."""
MAX_STEPS = 1000
"""The most time steps ``graph --unroll`` unrolls: the picture grows with every step,
and nobody reads more."""
MAX_EXPLAIN_STEPS = 200
"""The most time steps ``explain --steps`` unrolls: its text lists paths for every step,
each as long as the steps before it, so its size grows with the square of the steps."""
MAX_EXPLAIN_PATHS = 2000
"""The most paths ``explain`` may print in all, ``--steps`` times ``--max-paths`` (the
others are counted): 200 steps of an LSTM with the default 8 paths take 13 s."""
MAX_SAMPLE_STEPS = 1_000_000
"""The most frames ``sample --steps`` generates (an 88 MB piano roll)."""


class UsageError(ValueError):
    """A bad option value: reported like argparse's own errors, exit code 2."""


class OutputLost(Exception):
    """A command's output could not be written to standard output (exit code 1)."""


def write_stdout(text: str, *, essential: bool = True) -> None:
    """Write ``text`` to standard output and flush it.

    Args:
        text: the command's output.
        essential: the text is the command's result (``evaluate``'s metrics,
            ``explain``'s text): losing it is an error. A command whose
            results are in files (``train``, ``sweep``) passes False, and goes
            on quietly when standard output is closed or full.

    Raises:
        OutputLost: naming standard output and why (``No space left on
            device``, closed), when ``essential``.
        BrokenPipeError: the reader went away (``minigrad explain | head``), when
            ``essential``.
    """
    try:
        # in pieces: a reader that went away is noticed at the next piece, where one
        # write of megabytes may end without an error on some systems
        for i in range(0, len(text), 1 << 16):
            sys.stdout.write(text[i : i + (1 << 16)])
            sys.stdout.flush()
        if not text:
            sys.stdout.flush()
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")
        if essential:
            raise
    except (OSError, ValueError) as exc:
        sys.stdout = open(os.devnull, "w")
        if essential:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise OutputLost(f"cannot write to standard output ({one_line(reason)})") from None


def non_empty(text: str) -> str:
    """The ``type`` of a path option: an empty path would mean the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def check_range(flag_name: str, value: int, lo: int, hi: int | None = None) -> int:
    """``value`` if ``lo <= value <= hi``, else a :class:`UsageError` naming ``flag_name``."""
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise UsageError(f"{flag_name} must be {bound}, got {value}")
    return value


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def refuse_output_over_input(outputs: Mapping[str, object], inputs: Mapping[str, object]) -> None:
    """Refuse an output path that names one of the inputs, or another output.

    Args:
        outputs: flag -> path (None for an output not asked for).
        inputs: flag -> path (None for an input not given); names that are not
            existing files (an embedded dataset name) are ignored.

    Raises:
        UsageError: naming both flags.
    """
    outs = [(k, Path(str(v))) for k, v in outputs.items() if v is not None]
    ins = [(k, Path(str(v))) for k, v in inputs.items() if v is not None]
    for i, (flag_out, path_out) in enumerate(outs):
        for flag_in, path_in in ins:
            if path_in.exists() and _same_file(path_out, path_in):
                raise UsageError(
                    f"{flag_out} {path_out} is the {flag_in} file; refusing to overwrite an input"
                )
        for flag_other, path_other in outs[i + 1 :]:
            if _same_file(path_out, path_other):
                raise UsageError(f"{flag_out} and {flag_other} name the same file {path_out}")


def check_outputs(outputs: Mapping[str, object]) -> None:
    """Refuse an output path that exists and is not a regular file (a FIFO, a device, a
    folder), whose folder is missing, or that would replace a file of a run or a sweep
    (``model.npz`` in a run's folder), before any work is done.

    Args:
        outputs: flag -> path (None for an output not asked for).

    Raises:
        UsageError: naming the flag and the path.
    """
    kept = {*RUN_FILES, *SWEEP_FILES}
    for flag_name, path in outputs.items():
        if path is None:
            continue
        try:
            check_output_file(str(path), flag_name)
        except FileError as exc:
            raise UsageError(str(exc)) from None
        given = Path(str(path))
        # the writers follow a symbolic link: the file it points at is the one replaced
        for p in dict.fromkeys((given, Path(os.path.realpath(given)))):
            held = [n for n in (*RUN_FILES, *SWEEP_FILES, LOCK_FILE) if (p.parent / n).exists()]
            if p.name in kept and held:
                via = f" (through the link {given})" if p != given else ""
                raise UsageError(
                    f"{flag_name} {p}{via}: {p.parent} holds a run or a sweep "
                    f"({', '.join(held)}) and {p.name} is one of its files; refusing to "
                    "replace it (choose another name)"
                )


Subparsers = Any
"""The object ``ArgumentParser.add_subparsers`` returns (argparse's private type)."""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every default and keeps the descriptions' line breaks."""


METAVARS = {  # the metavariables of the train options that are not counts "N"
    "dataset": "NAME_OR_PATH",
    "lr": "X",
    "momentum": "X",
    "clip": "X",
    "weight_noise": "X",
    "out": "DIR",
    "max_train_seconds": "SECONDS",
    "lr_min": "X",
    "lr_decay": "X",
    "weight_decay": "X",
    "ema_decay": "X",
    "dropout": "P",
    "recurrent_dropout": "P",
    "zoneout": "P",
}


def flag(name: str) -> str:
    """The command-line flag of an option: ``max_train_seconds`` -> ``--max-train-seconds``."""
    return "--" + name.replace("_", "-")


CELL_HELP = "a cell name ('minigrad cells' lists them) or a module:function spec"


def add_import_option(p: argparse.ArgumentParser) -> None:
    """``--import MODULE`` (repeatable): modules whose node types become known."""
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE and register the node types it defines (repeatable), so that a "
        "cell using them can be built or loaded",
    )


def import_modules(names: list[str]) -> list[str]:
    """Import each module named with ``--import`` and register its node types.

    Returns:
        The node type names registered.

    Raises:
        ValueError: a module that cannot be imported (naming it).
    """
    registered: list[str] = []
    for name in names:
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise UsageError(f"--import {name!r}: not a module name (a.b.c)")
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"--import {name}: cannot import it: {one_line(exc)}") from None
        except Exception as exc:  # the module's own code failed while it was imported
            raise ValueError(
                f"--import {name}: importing it failed: {type(exc).__name__}: {one_line(exc)}"
            ) from None
        registered += register_node_types(module)
    return registered


def add_cell_options(p: argparse.ArgumentParser) -> None:
    """``--cell``, ``--input-size``, ``--hidden`` and ``--import``: the cell of a
    ``RecurrentModel``."""
    p.add_argument("--cell", default="gru", metavar="NAME", help=CELL_HELP)
    p.add_argument("--input-size", type=int, default=3, metavar="D", help="input size D")
    p.add_argument("--hidden", type=int, default=4, metavar="H", help="state size H")
    add_import_option(p)


def model_cell(args: argparse.Namespace) -> Cell:
    """The cell named by ``--cell`` with an L2 head (``models.nets.base.l2_cell``).

    No parameters are allocated: a picture or an explanation needs none.
    """
    check_range("--input-size", args.input_size, 1, MAX_INPUT_SIZE)
    check_range("--hidden", args.hidden, 1, MAX_HIDDEN)
    try:
        resolve_cell(args.cell)
    except ValueError as exc:  # an unknown --cell is a bad option value
        raise UsageError(str(exc)) from None
    return l2_cell(None, args.cell, args.input_size, args.hidden)
