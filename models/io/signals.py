"""SIGTERM handled like Ctrl-C: it raises :class:`Terminated`, a ``KeyboardInterrupt``.

Job schedulers send SIGTERM before a kill. With :func:`install_signal_handlers`
it unwinds the program as Ctrl-C does, so a training run keeps its checkpoint,
records ``interrupted`` in ``metrics.json`` and the command exits with
:data:`EXIT_SIGTERM` (143, 128 + 15) instead of dying mid-write.
"""

from __future__ import annotations

import signal
from types import FrameType

__all__ = ["EXIT_SIGINT", "EXIT_SIGTERM", "Terminated", "install_signal_handlers"]

EXIT_SIGINT = 130
"""The exit code after Ctrl-C (128 + SIGINT)."""
EXIT_SIGTERM = 143
"""The exit code after SIGTERM (128 + SIGTERM)."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (SIGINT already raises
    ``KeyboardInterrupt``). Call it once, from the main thread, at program start."""
    signal.signal(signal.SIGTERM, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return  # started in the background with SIGINT ignored: keep it so
    signal.signal(signal.SIGINT, signal.default_int_handler)
