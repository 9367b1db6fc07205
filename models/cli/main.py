"""The ``minigrad`` parser and entry point, over an explicit list of commands."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from collections.abc import Sequence
from typing import NoReturn, Protocol

import models.cli.cells as cells
import models.cli.evaluate as evaluate
import models.cli.explain as explain
import models.cli.graph as graph
import models.cli.sample as sample
import models.cli.sweep as sweep
import models.cli.train as train
from minigrad.errors import MinigradError
from models.cli.common import (
    PROG,
    Formatter,
    OutputLost,
    Subparsers,
    UsageError,
    import_modules,
)
from models.data.dataset import DataError, one_line
from models.io import EXIT_SIGINT, EXIT_SIGTERM, Terminated
from models.train.checkpoint import CheckpointError
from models.train.loop import ResumeRefused, TrainingInterrupted

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


class Command(Protocol):
    """A command module: ``add(subparsers)`` adds its parser and sets ``func``
    (``args -> exit code``) with ``set_defaults``."""

    def add(self, sub: Subparsers) -> None:
        """Add the command's parser to ``sub``."""


COMMANDS: tuple[Command, ...] = (train, evaluate, sample, explain, graph, sweep, cells)
"""The command modules, in the order of ``--help``. Adding a command: one module
in ``models/cli/`` with ``add(sub)``, and its entry here."""


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit code 2):
    ``minigrad train: error: argument --epochs: invalid int value: 'x'; see 'minigrad
    train --help'``, instead of the usage text followed by the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``minigrad`` parser with every registered subcommand."""
    parser = OneLineParser(
        prog=PROG,
        description="minigrad: recurrent networks as graphs of typed nodes, trained with BPTT.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add(sub)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("minigrad")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _usage_error(parser: argparse.ArgumentParser, args: argparse.Namespace, exc: Exception) -> int:
    """Report a bad option value as argparse reports its own errors, with where to read
    more: exit code 2."""
    command = getattr(args, "command", None)
    where = f"{PROG} {command}" if isinstance(command, str) else PROG
    sys.stderr.write(f"{PROG}: error: {one_line(exc)}; see '{where} --help'\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``minigrad`` command.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 error, 2 usage error (a bad option or
        option value), 130 after Ctrl-C, 143 after SIGTERM (a training run
        leaves a resumable checkpoint either way).
    """
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    if not given:
        parser.print_usage(sys.stderr)  # a newcomer typing 'minigrad': show the commands
        sys.stderr.write(f"{PROG}: error: give a command; see '{PROG} --help'\n")
        return 2
    try:
        args = parser.parse_args(given)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        import_modules(getattr(args, "imports", []))
        code: int = args.func(args)
        return code
    except TrainingInterrupted as exc:
        sys.stderr.write(
            f"\n{PROG}: {'terminated' if exc.terminated else 'interrupted'}; {exc.checkpoint} "
            f"holds epoch {exc.epoch}; continue with "
            f"'{PROG} train --resume --out {exc.checkpoint.parent}'\n"
        )
        return EXIT_SIGTERM if exc.terminated else EXIT_SIGINT
    except Terminated:
        sys.stderr.write(f"\n{PROG}: terminated\n")
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return EXIT_SIGINT
    except BrokenPipeError:
        return 1
    except (UsageError, ResumeRefused) as exc:  # a flag the run cannot take
        return _usage_error(parser, args, exc)
    except MemoryError:
        sys.stderr.write(
            f"{PROG}: error: out of memory; try smaller sizes (--hidden, --layers, "
            "--batch-size, --steps)\n"
        )
        return 1
    except RecursionError:
        sys.stderr.write(f"{PROG}: error: input nested too deeply to process\n")
        return 1
    except OSError as exc:
        # "x: File name too long", not "[Errno 36] File name too long: 'x'"
        where = f"{exc.filename}: " if exc.filename is not None else ""
        what = exc.strerror if exc.filename is not None and exc.strerror else exc
        sys.stderr.write(f"{PROG}: error: {where}{one_line(what)}\n")
        return 1
    except (DataError, CheckpointError, MinigradError, ValueError, OutputLost) as exc:
        sys.stderr.write(f"{PROG}: error: {one_line(exc)}\n")
        return 1
