"""``minigrad explain``: how BPTT assembles a parameter's gradient."""

from __future__ import annotations

import argparse

from minigrad.errors import GraphError
from minigrad.explain import DEFAULT_MAX_PATHS, explain, explain_all
from models.cli.common import (
    MAX_EXPLAIN_PATHS,
    MAX_EXPLAIN_STEPS,
    Formatter,
    Subparsers,
    UsageError,
    add_cell_options,
    check_range,
    model_cell,
    write_stdout,
)


def add(sub: Subparsers) -> None:
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
        formatter_class=Formatter,
    )
    add_cell_options(p)
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
    check_range("--steps", args.steps, 1, MAX_EXPLAIN_STEPS)
    check_range("--max-paths", args.max_paths, 0)
    if args.steps * args.max_paths > MAX_EXPLAIN_PATHS:
        raise UsageError(
            f"--steps {args.steps} times --max-paths {args.max_paths} is more than the "
            f"{MAX_EXPLAIN_PATHS} paths explain prints (the others are counted): lower either"
        )
    cell = model_cell(args)
    if args.param == "all":
        text = explain_all(cell, args.steps, max_paths=args.max_paths)
    else:
        try:
            text = explain(cell, args.param, args.steps, max_paths=args.max_paths)
        except GraphError as exc:
            raise GraphError(f"{exc}, or 'all' for every parameter") from None
    write_stdout(text)
    return 0
