"""The ``minigrad`` console script (``[project.scripts]``) and ``python -m models``.

Loading this module holds back Ctrl-C and SIGTERM at once: it imports only
``signal``, and its first statements make both signals be noted instead of
raising ``KeyboardInterrupt``. A Ctrl-C while numpy, networkx and the models
load (the first tenths of a second of every command) then ends the command
quietly, with one line and exit code 130 (143 for SIGTERM), instead of a
``KeyboardInterrupt`` traceback from inside an import. ``models.cli.main``
takes over the noted signals and installs the real handlers
(``models.io.signals``) once everything is loaded.

Only the console script and ``python -m models`` import this module; ``import
models`` and a call of ``models.cli.main`` from Python leave the signal
handlers alone until ``main`` runs.
"""

from __future__ import annotations

import signal

_held: list[int] = []


def _note(signum: int, frame: object) -> None:
    _held.append(signum)


if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job keeps it ignored
    signal.signal(signal.SIGINT, _note)
signal.signal(signal.SIGTERM, _note)


def main() -> int:
    """Run the ``minigrad`` command (``models.cli.main``) with the signals noted so far."""
    from models.cli import main as run

    return run(held=_held)


__all__ = ["main"]
