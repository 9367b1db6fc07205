"""The ``minigrad`` command (also ``python -m models``).

Subcommands:

* ``minigrad train``: train a recurrent network on a polyphonic-music dataset
  (``models.train``); every option of ``TrainConfig`` is a flag, and a TOML
  file given with ``--config`` sets the same options (flags override it);
* ``minigrad evaluate``: score a run's ``model.npz`` or ``checkpoint.npz`` on
  a split of a dataset and print the metrics as JSON;
* ``minigrad explain``: print ``minigrad.explain`` (or ``explain_all``) for a
  cell of ``models.cells`` with an L2 head: how BPTT assembles a parameter's
  gradient from the nodes' local derivatives;
* ``minigrad graph``: write the DOT picture of a cell, one step or unrolled,
  as ``.dot`` (always) or ``.svg`` / ``.png`` / ``.pdf`` (with Graphviz).

Adding a subcommand is one function: decorate ``add_<name>(subparsers)`` with
``@command``; it adds its parser and sets ``func`` (``args -> exit code``)
with ``set_defaults``.

Exit codes: 0 success, 2 usage error (argparse), 1 any other error (one line
``minigrad: error: ...`` on stderr, no traceback), 130 after Ctrl-C (a
training run leaves a resumable checkpoint).
"""

from __future__ import annotations

import os

# One BLAS thread unless the user says otherwise: the GEMMs of a recurrent step are
# small, and a second OpenBLAS thread makes a JSB training epoch about 3x slower here.
# This must happen before numpy is first imported (models/__init__ imports nothing).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from minigrad.cell import Cell
from minigrad.dot import cell_to_dot, unrolled_to_dot, write_graph
from minigrad.errors import GraphError, MinigradError
from minigrad.explain import DEFAULT_MAX_PATHS, explain, explain_all
from models.base import RecurrentModel
from models.cells import CELLS
from models.checkpoint import CheckpointError, load_checkpoint
from models.data import SPLIT_NAMES, DataError, load_dataset
from models.train import (
    CHECKPOINT_FILE,
    CONFIG_CHOICES,
    CONFIG_HELP,
    ConsoleReporter,
    TrainConfig,
    TrainingInterrupted,
    config_from_mapping,
    load_model,
    train,
)

__all__ = ["COMMANDS", "build_parser", "command", "config_to_toml", "main"]

PROG = "minigrad"

Subparsers = Any
"""The object ``ArgumentParser.add_subparsers`` returns (argparse's private type)."""

COMMANDS: list[Callable[[Subparsers], None]] = []
"""The functions adding one subcommand each, in the order of ``--help``."""


def command(add: Callable[[Subparsers], None]) -> Callable[[Subparsers], None]:
    """Register ``add(subparsers)``, a function adding one subcommand, in ``COMMANDS``."""
    COMMANDS.append(add)
    return add


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every default and keeps the descriptions' line breaks."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- train


_METAVARS = {
    "dataset": "NAME_OR_PATH",
    "lr": "X",
    "clip": "X",
    "weight_noise": "X",
    "out": "DIR",
    "max_train_seconds": "SECONDS",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@command
def add_train(sub: Subparsers) -> None:
    """Add ``minigrad train``: one flag per ``TrainConfig`` option, plus ``--config``
    and ``--print-config``."""
    p = sub.add_parser(
        "train",
        help="train a recurrent network on polyphonic music",
        description=(
            "Train a recurrent network to predict the next frame of piano rolls.\n"
            "Writes OUT/checkpoint.npz after every epoch, then OUT/model.npz,\n"
            "OUT/metrics.json and OUT/curves.svg. Ctrl-C keeps a resumable checkpoint\n"
            "(continue with --resume, same --out)."
        ),
        formatter_class=_Formatter,
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        help_text = f"{CONFIG_HELP[f.name]} (default: {default})"
        if f.name == "progress":
            p.add_argument(
                "--no-progress",
                dest="progress",
                action="store_false",
                default=argparse.SUPPRESS,
                help="no live progress line; one line per epoch",
            )
            continue
        if isinstance(default, bool):
            p.add_argument(
                _flag(f.name),
                dest=f.name,
                action="store_true",
                default=argparse.SUPPRESS,
                help=CONFIG_HELP[f.name],
            )
            continue
        kind: type = type(default)
        p.add_argument(
            _flag(f.name),
            dest=f.name,
            type=kind,
            choices=CONFIG_CHOICES.get(f.name),
            default=argparse.SUPPRESS,
            metavar=None if f.name in CONFIG_CHOICES else _METAVARS.get(f.name, "N"),
            help=help_text,
        )
    p.add_argument(
        "--config",
        metavar="FILE.toml",
        default=None,
        help="TOML file of options (same names, e.g. batch_size = 8); flags override it",
    )
    p.add_argument(
        "--print-config",
        nargs="?",
        const="toml",
        choices=("toml", "json"),
        default=None,
        help="print the resolved configuration (TOML, or JSON) and exit",
    )
    p.set_defaults(func=run_train)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def config_to_toml(config: TrainConfig) -> str:
    """The configuration as a TOML document that ``--config`` reads back unchanged."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in config.to_dict().items()]
    return "\n".join(lines) + "\n"


def _read_toml(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"--config {path}: is a directory, expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"--config {path}: invalid TOML: {_one_line(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"--config {path}: not UTF-8 text ({_one_line(exc)})") from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise ValueError(
                f"--config {path}: key {key!r} is a table; options are plain top-level keys"
            )
    return data


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """The configuration of ``minigrad train``: defaults, then ``--config``, then flags.

    With ``--resume`` the options not given explicitly are taken from the
    checkpoint being resumed.
    """
    names = {f.name for f in fields(TrainConfig)}
    explicit: dict[str, Any] = {}
    where = "command line"
    if args.config is not None:
        explicit.update({k.replace("-", "_"): v for k, v in _read_toml(args.config).items()})
        where = f"--config {args.config}"
        # unknown keys and bad types are reported with the file's name
        config_from_mapping(explicit, where=where)
    flags = {k: v for k, v in vars(args).items() if k in names}
    if flags:
        where = "" if args.config is None else f"{where} and options"
    explicit.update(flags)
    config = config_from_mapping(explicit, where=where)
    if config.resume:
        out = config.out_dir()
        ck = load_checkpoint(out / CHECKPOINT_FILE)
        # presentation options are not inherited from the interrupted run
        saved = {
            k: v for k, v in ck.config.items() if k in names and k not in ("progress", "overwrite")
        }
        base = config_from_mapping(saved, where=f"{out / CHECKPOINT_FILE}: stored configuration")
        explicit["out"] = str(out)
        config = config_from_mapping(explicit, where=where, base=base)
    return config.resolved()


def run_train(args: argparse.Namespace) -> int:
    """``minigrad train``: train, print a JSON summary on stdout; returns the exit code."""
    config = resolve_train_config(args)
    if args.print_config is not None:
        if args.print_config == "json":
            sys.stdout.write(json.dumps(config.to_dict(), indent=2) + "\n")
        else:
            sys.stdout.write(config_to_toml(config))
        return 0
    live = config.progress and sys.stderr.isatty()
    result = train(config, reporter=ConsoleReporter(sys.stderr, live=live))
    m = result.metrics
    summary = {
        "out": str(result.out),
        "best_epoch": m["best_epoch"],
        "epochs_run": len(m["epochs"]),
        "stop_reason": m["stop_reason"],
        "train_nll": m["train_nll"],
        "valid_nll": m["valid_nll"],
        "test_nll": m["test_nll"],
        "test_frame_accuracy": m["test_frame_accuracy"],
        "wall_seconds": round(m["wall_seconds"], 2),
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------- evaluate


@command
def add_evaluate(sub: Subparsers) -> None:
    """Add ``minigrad evaluate``."""
    p = sub.add_parser(
        "evaluate",
        help="score a trained model on a dataset split",
        description=(
            "Score a run's model.npz (or the best parameters of its checkpoint.npz)\n"
            "and print JSON: split, nll (nats per time step), frame_accuracy, n_steps."
        ),
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--checkpoint", required=True, metavar="FILE", help="a run's model.npz or checkpoint.npz"
    )
    p.add_argument(
        "--dataset",
        default=None,
        metavar="NAME_OR_PATH",
        help="embedded name or .npz / .pickle path (default: the run's dataset)",
    )
    p.add_argument("--split", default="test", choices=SPLIT_NAMES, help="the split to score")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per batch")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """``minigrad evaluate``: print the metrics as JSON; returns the exit code."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, info = load_model(args.checkpoint)
    name = args.dataset if args.dataset is not None else info["config"].get("dataset")
    if not isinstance(name, str):
        raise CheckpointError(f"{args.checkpoint}: the stored configuration names no dataset")
    dataset = load_dataset(name)
    scores = model.evaluate(dataset.split(args.split), args.batch_size)
    out = {
        "checkpoint": str(args.checkpoint),
        "dataset": name,
        "split": args.split,
        "nll": scores["nll"],
        "frame_accuracy": scores["frame_accuracy"],
        "n_steps": scores["n_steps"],
        "n_sequences": scores["n_sequences"],
        "params": info["params"],
        "epoch": info["epoch"],
        "cell": model.cell_type,
        "hidden": model.hidden_size,
        "layers": model.layers,
    }
    sys.stdout.write(json.dumps(out, indent=2) + "\n")
    return 0


# --------------------------------------------------------------------------- explain, graph


def _add_cell_options(p: argparse.ArgumentParser) -> None:
    """``--cell``, ``--input-size`` and ``--hidden``: the cell of a ``RecurrentModel``."""
    p.add_argument(
        "--cell",
        default="gru",
        metavar="NAME",
        help=f"a cell of models.cells.CELLS: {', '.join(CELLS)}",
    )
    p.add_argument("--input-size", type=int, default=3, metavar="D", help="input size D")
    p.add_argument("--hidden", type=int, default=4, metavar="H", help="state size H")


def _model_cell(args: argparse.Namespace) -> Cell:
    """The cell named by ``--cell`` with an L2 head (``models.base.RecurrentModel``)."""
    if args.cell not in CELLS:
        raise ValueError(f"unknown cell {args.cell!r}; valid: {', '.join(CELLS)}")
    return RecurrentModel(args.cell, args.input_size, args.hidden).cell


@command
def add_explain(sub: Subparsers) -> None:
    """Add ``minigrad explain``."""
    p = sub.add_parser(
        "explain",
        help="show how BPTT assembles a parameter's gradient",
        description=(
            "Print how backpropagation through time assembles the gradient of one\n"
            "parameter (or of every parameter, with --param all) of a cell with an\n"
            "L2 loss on its state at every step: the per-step contributions, the\n"
            "paths from each step's loss back to the parameter with each node's\n"
            "local derivative, and the shared state adjoints dL/dh_t."
        ),
        formatter_class=_Formatter,
    )
    _add_cell_options(p)
    p.add_argument(
        "--param",
        required=True,
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="a parameter of the cell, or 'all'",
    )
    p.add_argument("--steps", type=int, default=2, metavar="N", help="time steps to unroll")
    p.add_argument(
        "--max-paths",
        type=int,
        default=DEFAULT_MAX_PATHS,
        metavar="K",
        help="paths printed per step (the others are counted)",
    )
    p.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    """``minigrad explain``: print the explanation; returns the exit code."""
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.max_paths < 0:
        raise ValueError(f"--max-paths must be >= 0, got {args.max_paths}")
    cell = _model_cell(args)
    if args.param == "all":
        text = explain_all(cell, args.steps, max_paths=args.max_paths)
    else:
        try:
            text = explain(cell, args.param, args.steps, max_paths=args.max_paths)
        except GraphError as exc:
            raise GraphError(f"{exc}, or 'all' for every parameter") from None
    sys.stdout.write(text)
    return 0


@command
def add_graph(sub: Subparsers) -> None:
    """Add ``minigrad graph``."""
    p = sub.add_parser(
        "graph",
        help="draw a cell (one step or unrolled) as DOT, SVG, PNG or PDF",
        description=(
            "Write the graph of one time step of a cell (with an L2 loss on its\n"
            "state), or of the cell unrolled for N steps with --unroll N. The\n"
            "extension of -o picks the format: .dot / .gv are written as text;\n"
            ".svg, .png and .pdf are rendered by the Graphviz 'dot' program."
        ),
        formatter_class=_Formatter,
    )
    _add_cell_options(p)
    p.add_argument(
        "--unroll",
        type=int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="draw the cell unrolled for N steps (default: one step)",
    )
    p.add_argument(
        "-o",
        "--out",
        required=True,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="the file to write (.dot, .svg, ...)",
    )
    p.set_defaults(func=run_graph)


def run_graph(args: argparse.Namespace) -> int:
    """``minigrad graph``: write the picture; returns the exit code."""
    unroll: int | None = getattr(args, "unroll", None)
    if unroll is not None and unroll < 1:
        raise ValueError(f"--unroll must be >= 1, got {unroll}")
    cell = _model_cell(args)
    text = cell_to_dot(cell) if unroll is None else unrolled_to_dot(cell, unroll)
    write_graph(text, args.out)
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The ``minigrad`` parser with every registered subcommand."""
    # subcommands defined in other modules register themselves with @command on import
    from models import sample, sweep  # noqa: F401

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="minigrad: recurrent networks as graphs of typed nodes, trained with BPTT.",
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``minigrad`` command.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 2 usage error, 1 other error, 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code: int = args.func(args)
        return code
    except TrainingInterrupted as exc:
        sys.stderr.write(
            f"\n{PROG}: interrupted; {exc.checkpoint} holds epoch {exc.epoch}; continue with "
            f"'{PROG} train --resume --out {exc.checkpoint.parent}'\n"
        )
        return 130
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except (DataError, CheckpointError, MinigradError, ValueError, OSError) as exc:
        sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
        return 1
