"""The ``minigrad`` parser and entry point, over an explicit list of commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Protocol

from minigrad.errors import MinigradError
from models.cli import cells, evaluate, explain, graph, sample, sweep, train
from models.cli.common import PROG, Formatter, Subparsers, import_modules
from models.data.dataset import DataError, one_line
from models.train.checkpoint import CheckpointError
from models.train.loop import TrainingInterrupted

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(Protocol):
    """A command module: ``add(subparsers)`` adds its parser and sets ``func``
    (``args -> exit code``) with ``set_defaults``."""

    def add(self, sub: Subparsers) -> None:
        """Add the command's parser to ``sub``."""


COMMANDS: tuple[Command, ...] = (train, evaluate, sample, explain, graph, sweep, cells)
"""The command modules, in the order of ``--help``. Adding a command: one module
in ``models/cli/`` with ``add(sub)``, and its entry here."""


def build_parser() -> argparse.ArgumentParser:
    """The ``minigrad`` parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="minigrad: recurrent networks as graphs of typed nodes, trained with BPTT.",
        formatter_class=Formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add(sub)
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
        import_modules(getattr(args, "imports", []))
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
        sys.stderr.write(f"{PROG}: error: {one_line(exc)}\n")
        return 1
