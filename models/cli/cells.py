"""``minigrad cells``: the cells and node types this process knows, and where they come from."""

from __future__ import annotations

import argparse
import json

from minigrad.serialize import NODE_ENTRY_POINTS, node_types
from models.cells.registry import CELL_ENTRY_POINTS, cell_origins
from models.cli.common import Formatter, Subparsers, add_import_option, write_stdout


def add(sub: Subparsers) -> None:
    """Add ``minigrad cells``."""
    p = sub.add_parser(
        "cells",
        help="list the cells and node types (built-in, entry points, --import)",
        description=(
            "List every cell --cell accepts by name (built-in, or provided by an installed\n"
            f"package through the entry point group {CELL_ENTRY_POINTS!r}) and every node\n"
            f"type a saved cell may use (built-in, entry point group {NODE_ENTRY_POINTS!r},\n"
            "or --import MODULE). Any other cell is given as --cell module:function."
        ),
        formatter_class=Formatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_import_option(p)
    p.set_defaults(func=run_cells)


def run_cells(args: argparse.Namespace) -> int:
    """``minigrad cells``: print the lists; returns the exit code."""
    cells = cell_origins()
    nodes = {
        name: f"{cls.__module__}.{cls.__qualname__}" for name, cls in sorted(node_types().items())
    }
    if args.json:
        write_stdout(json.dumps({"cells": cells, "node_types": nodes}, indent=2) + "\n")
        return 0
    width = max(map(len, [*cells, *nodes]))
    lines = ["cells (--cell NAME, or --cell module:function):"]
    lines += [f"  {name:<{width}}  {origin}" for name, origin in cells.items()]
    lines += ["node types:"]
    lines += [f"  {name:<{width}}  {where}" for name, where in nodes.items()]
    write_stdout("\n".join(lines) + "\n")
    return 0
