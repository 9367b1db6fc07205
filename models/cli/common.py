"""What every command shares: the help formatter, one-line errors, cell options."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from minigrad.cell import Cell
from minigrad.serialize import register_node_types
from models.data.dataset import one_line
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
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ValueError(f"--import {name}: cannot import it: {one_line(exc)}") from None
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
    """The cell named by ``--cell`` with an L2 head (``models.nets.base.RecurrentModel``)."""
    return RecurrentModel(args.cell, args.input_size, args.hidden).cell


