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

* ``minigrad sample``: generate a piano roll from a trained model;
* ``minigrad sweep``: choose each cell's learning rate by validation NLL.

One module per command (``models/cli/train.py``, ...), each with
``add(subparsers)``, which adds its parser and sets ``func`` (``args -> exit
code``) with ``set_defaults``. ``models.cli.main.COMMANDS`` lists them
explicitly; nothing registers itself on import. ``models.cli.common`` holds
what they share.

Exit codes: 0 success, 2 usage error (argparse, or a bad option value), 1 any
other error (one line ``minigrad: error: ...`` on stderr, no traceback), 130
after Ctrl-C and 143 after SIGTERM (a training run leaves a resumable
checkpoint and records ``interrupted`` in its ``metrics.json``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal

# One BLAS thread unless the user says otherwise: the GEMMs of a recurrent step are
# small, and a second OpenBLAS thread makes a JSB training epoch about 3x slower here.
# Training sets it itself (minigrad.threads, TrainConfig.blas_threads), from Python
# too; the variables below also cover evaluate and sample. They must be set before
# numpy is first imported (models/__init__ imports nothing).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys
from collections.abc import Sequence


class _ClosedStdout(io.TextIOBase):
    """``sys.stdout`` when file descriptor 1 is closed: every write fails (EBADF)."""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        raise OSError(errno.EBADF, "it is closed")


def main(argv: Sequence[str] | None = None, *, held: list[int] | None = None) -> int:
    """The ``minigrad`` entry point: ``models.cli.main.main``, with the process set up.

    A Ctrl-C or SIGTERM while numpy and the models load is held back and then
    ends the command quietly (130, or 143 for SIGTERM); ``held`` lists the
    signals noted before this call (``models.console``, the console script,
    notes them from its first line); afterwards SIGTERM
    unwinds like Ctrl-C (``models.io.signals``); and
    a closed stderr (``>&-``) is replaced by the null device, and a closed
    stdout by a stream that refuses writes: the work is still done, no traceback
    is shown, and a command whose result is its output (``evaluate``,
    ``explain``, ...) then fails with one line (``models.cli.common.write_stdout``)
    while ``train``, whose results are files, succeeds.
    """
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    # Until the handlers are installed, a signal is only noted: raised inside
    # numpy's import it would surface as an ImportError with a traceback. The
    # console script notes them from its first line on (models.console: ``held``).
    pending: list[int] = [] if held is None else held

    def note(signum: int, frame: object) -> None:
        pending.append(signum)

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)
    from models.cli.main import main as run
    from models.io.signals import EXIT_SIGINT, EXIT_SIGTERM, Terminated, install_signal_handlers

    install_signal_handlers()
    if pending:
        sys.stderr.write("\nminigrad: interrupted\n")
        return EXIT_SIGTERM if signal.SIGTERM in pending else EXIT_SIGINT
    try:
        return run(argv)
    except Terminated:  # a second signal while the first was being reported
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        return EXIT_SIGINT
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            # stdout went away (a closed pipe): nothing more can be said there
            with contextlib.suppress(OSError, ValueError):
                sys.stdout = open(os.devnull, "w")


__all__ = ["main"]
