"""One trial of a sweep: a quiet ``train`` run in its own directory."""

from __future__ import annotations

import contextlib
import math
import os
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
    """Set ``BLAS_ENV`` to 1 in this process (the workers' initializer)."""
    for name in BLAS_ENV:
        os.environ[name] = "1"


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
        resume = (out / CHECKPOINT_FILE).is_file()
        result = train(
            replace(cfg, resume=resume, overwrite=False, progress=False), reporter=Reporter()
        )
    except TrainingInterrupted as exc:
        raise KeyboardInterrupt(str(exc)) from None
    except TrialFailed:
        raise
    except Exception as exc:
        raise TrialFailed(f"{type(exc).__name__}: {one_line(exc)}") from None
    return {**trial_record(result.metrics), "resumed": resume}


