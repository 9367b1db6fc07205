"""What every command shares: the help formatter, one-line errors, cell options."""

from __future__ import annotations

import argparse
from typing import Any

from minigrad.cell import Cell
from models.cells.registry import CELLS
from models.nets.base import RecurrentModel

PROG = "minigrad"

Subparsers = Any
"""The object ``ArgumentParser.add_subparsers`` returns (argparse's private type)."""


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every default and keeps the descriptions' line breaks."""


METAVARS = {  # the metavariables of the train options that are not counts "N"
    "dataset": "NAME_OR_PATH",
    "lr": "X",
    "clip": "X",
    "weight_noise": "X",
    "out": "DIR",
    "max_train_seconds": "SECONDS",
    "lr_min": "X",
    "lr_decay": "X",
    "weight_decay": "X",
    "dropout": "P",
    "recurrent_dropout": "P",
    "zoneout": "P",
}


def flag(name: str) -> str:
    """The command-line flag of an option: ``max_train_seconds`` -> ``--max-train-seconds``."""
    return "--" + name.replace("_", "-")


def add_cell_options(p: argparse.ArgumentParser) -> None:
    """``--cell``, ``--input-size`` and ``--hidden``: the cell of a ``RecurrentModel``."""
    p.add_argument(
        "--cell",
        default="gru",
        metavar="NAME",
        help=f"a cell of models.cells.CELLS: {', '.join(CELLS)}",
    )
    p.add_argument("--input-size", type=int, default=3, metavar="D", help="input size D")
    p.add_argument("--hidden", type=int, default=4, metavar="H", help="state size H")


def model_cell(args: argparse.Namespace) -> Cell:
    """The cell named by ``--cell`` with an L2 head (``models.nets.base.RecurrentModel``)."""
    if args.cell not in CELLS:
        raise ValueError(f"unknown cell {args.cell!r}; valid: {', '.join(CELLS)}")
    return RecurrentModel(args.cell, args.input_size, args.hidden).cell


