"""Progress reports of a training run: silent, or lines on a console."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from models.io import ProgressStream
from models.train.config import TrainConfig

# --------------------------------------------------------------------------- reporting


def nll_text(v: float) -> str:
    """An NLL for the epoch line: four decimals, or four digits when it is huge."""
    return f"{v:.4f}" if abs(v) < 1e6 else f"{v:.4g}"


class Reporter:
    """Receives progress events from ``train``; the base class ignores them all."""

    def start(self, config: TrainConfig, n_batches: int, first_epoch: int) -> None:
        """Called once before the first epoch.

        Args:
            config: the resolved configuration.
            n_batches: batches per epoch.
            first_epoch: the number of the first epoch to run (> 1 when resuming).
        """

    def batch(
        self,
        epoch: int,
        index: int,
        n_batches: int,
        nll: float,
        steps_per_second: float,
        seconds_left: float,
    ) -> None:
        """Called after every training batch.

        Args:
            epoch: the current epoch (1-based).
            index: the batch just done (1-based).
            n_batches: batches per epoch.
            nll: the running training NLL per step of the epoch (nats).
            steps_per_second: real time steps processed per second in this epoch.
            seconds_left: estimated time left in the whole run (an upper bound
                when early stopping may end it sooner).
        """

    def epoch(self, record: Mapping[str, Any], best_epoch: int, epochs: int) -> None:
        """Called after every epoch's validation and checkpoint.

        Args:
            record: the epoch's entry of the history (``epoch``, ``train_nll``,
                ``valid_nll``, ``seconds``, ...).
            best_epoch: the best epoch so far.
            epochs: the largest number of epochs.
        """

    def message(self, text: str) -> None:
        """A one-line notice (resume, stop reason)."""


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class ConsoleReporter(Reporter):
    """Prints progress to a text stream.

    Args:
        stream: where to write (default ``sys.stderr``).
        live: rewrite one status line after every batch (epoch, batch i/n,
            loss, steps/s, time left); otherwise only one line per epoch.
            Default: whether ``stream`` is a terminal.
    """

    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        # progress is not a result: a closed or full stderr ends it, not the run
        self.stream = ProgressStream(
            stream if stream is not None else sys.stderr
        )
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty()) if callable(isatty) else False
        self.live = live
        self._epochs = 0
        self._last = 0.0
        self._dirty = False

    def _clear(self) -> None:
        if self._dirty:
            self.stream.write("\r\x1b[K")
            self._dirty = False

    def start(self, config: TrainConfig, n_batches: int, first_epoch: int) -> None:
        """Print the run's directory and model."""
        self._epochs = config.epochs
        self.stream.write(
            f"training {config.cell} (H={config.hidden}, L={config.layers}) on "
            f"{config.dataset}, {n_batches} batches per epoch, into {config.out}\n"
        )
        self.stream.flush()

    def batch(
        self,
        epoch: int,
        index: int,
        n_batches: int,
        nll: float,
        steps_per_second: float,
        seconds_left: float,
    ) -> None:
        """Rewrite the live line (at most ten times a second)."""
        if not self.live:
            return
        now = time.monotonic()
        if index != n_batches and now - self._last < 0.1:
            return
        self._last = now
        self.stream.write(
            f"\r\x1b[Kepoch {epoch}{f'/{self._epochs}' if self._epochs else ''}  "
            f"batch {index}/{n_batches}  loss {nll:.3f}  "
            f"{steps_per_second:,.0f} steps/s  left <= {_clock(seconds_left)}"
        )
        self.stream.flush()
        self._dirty = True

    def epoch(self, record: Mapping[str, Any], best_epoch: int, epochs: int) -> None:
        """Print one line per epoch."""
        self._clear()
        star = " *" if record["epoch"] == best_epoch else ""
        extra = ""
        if record.get("lr") is not None:
            extra += f"  lr {record['lr']:.3g}"
        if record.get("grad_norm") is not None:
            extra += f"  |g| {record['grad_norm']:.3g}"
        self.stream.write(
            f"epoch {record['epoch']}/{epochs}  train {nll_text(record['train_nll'])}  "
            f"valid {nll_text(record['valid_nll'])}{star}{extra}  {record['seconds']:.1f}s\n"
        )
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print a notice on its own line."""
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()
