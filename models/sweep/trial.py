"""One trial of a sweep: a quiet ``train`` run in its own directory."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from models.data.dataset import one_line
from models.sweep.config import BLAS_ENV, TrialFailed
from models.train.config import CHECKPOINT_FILE, config_from_mapping
from models.train.loop import TrainingInterrupted, train
from models.train.report import Reporter

# --------------------------------------------------------------------------- one trial


def limit_blas_threads() -> None:
    """Set ``BLAS_ENV`` to 1 in this process."""
    for name in BLAS_ENV:
        os.environ[name] = "1"


def _die_with_parent(parent: int) -> None:
    """Make this worker exit when the process ``parent`` dies, however it dies.

    On Linux the kernel sends SIGKILL at the parent's death
    (``PR_SET_PDEATHSIG``); everywhere a daemon thread also checks every
    second that the parent is still this process's parent.
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # died before the line above ran
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def init_worker(parent: int) -> None:
    """The initializer of a local worker: one BLAS thread, and exit with ``parent``."""
    limit_blas_threads()
    _die_with_parent(parent)


@contextlib.contextmanager
def blas_env() -> Iterator[None]:
    """``BLAS_ENV`` set to 1 in this process while the sweep runs, restored after."""
    saved = {name: os.environ.get(name) for name in BLAS_ENV}
    limit_blas_threads()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def is_finished(metrics: Mapping[str, Any]) -> bool:
    keys = ("train_nll", "valid_nll", "test_nll", "config", "model")
    return metrics.get("status") == "finished" and all(k in metrics for k in keys)


def trial_record(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers a sweep keeps from a finished run's ``metrics.json``."""
    return {
        "num_params": int(metrics["model"]["num_params"]),
        "train_nll": float(metrics["train_nll"]),
        "valid_nll": float(metrics["valid_nll"]),
        "test_nll": float(metrics["test_nll"]),
        "test_frame_accuracy": float(metrics.get("test_frame_accuracy", math.nan)),
        "best_epoch": int(metrics["best_epoch"]),
        "epochs_run": len(metrics.get("epochs", [])),
        "stop_reason": metrics.get("stop_reason"),
        "train_seconds": float(metrics.get("train_seconds", 0.0)),
        "wall_seconds": float(metrics.get("wall_seconds", 0.0)),
    }


def run_trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """Run one trial in a worker: ``train`` quietly in the configured run directory.

    A directory holding a checkpoint but no finished metrics is resumed.

    Args:
        config: the trial's ``TrainConfig.to_dict()``.

    Returns:
        The trial's record (``trial_record`` of its ``metrics.json``) and
        ``"resumed"``.

    Raises:
        TrialFailed: training raised; the message names the exception.
        KeyboardInterrupt: interrupted (the checkpoint is kept for a re-run).
    """
    try:
        cfg = config_from_mapping(config, where="trial configuration")
        out = cfg.out_dir()
        # the sweep owns its trial folders: one with a checkpoint is resumed (unless
        # the sweep asks to overwrite), any other unfinished one started again
        resume = (out / CHECKPOINT_FILE).is_file() and not cfg.overwrite
        result = train(
            replace(cfg, resume=resume, overwrite=not resume, progress=False),
            reporter=Reporter(),
        )
    except TrainingInterrupted as exc:
        raise KeyboardInterrupt(str(exc)) from None
    except TrialFailed:
        raise
    except Exception as exc:
        raise TrialFailed(f"{type(exc).__name__}: {one_line(exc)}") from None
    return {**trial_record(result.metrics), "resumed": resume}
