"""``minigrad graph``: draw a cell, one step or unrolled."""

from __future__ import annotations

import argparse
from pathlib import Path

from minigrad.dot import cell_to_dot, unrolled_to_dot, write_graph
from models.cli.common import (
    MAX_STEPS,
    Formatter,
    Subparsers,
    UsageError,
    add_cell_options,
    check_outputs,
    check_range,
    model_cell,
    non_empty,
    write_stdout,
)

GRAPH_SUFFIXES = (".dot", ".gv", ".svg", ".png", ".pdf")
"""The file types ``-o`` may name (the last three need Graphviz)."""


def add(sub: Subparsers) -> None:
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
        formatter_class=Formatter,
    )
    add_cell_options(p)
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
        type=non_empty,
        required=True,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="the file to write (.dot, .svg, ...)",
    )
    p.set_defaults(func=run_graph)


def run_graph(args: argparse.Namespace) -> int:
    """``minigrad graph``: write the picture; returns the exit code."""
    unroll: int | None = getattr(args, "unroll", None)
    if unroll is not None:
        check_range("--unroll", unroll, 1, MAX_STEPS)
    suffix = Path(args.out).suffix.lower()
    if suffix not in GRAPH_SUFFIXES:
        raise UsageError(
            f"-o {args.out}: unknown file type {suffix or '(none)'!r}; use one of "
            f"{', '.join(GRAPH_SUFFIXES)}"
        )
    check_outputs({"-o": args.out})
    cell = model_cell(args)
    text = cell_to_dot(cell) if unroll is None else unrolled_to_dot(cell, unroll)
    write_graph(text, args.out)
    write_stdout(f"wrote {args.out}\n", essential=False)  # the result is the file
    return 0
