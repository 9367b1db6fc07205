"""Training a ``SequenceModel``: configuration, the loop, optimisers, checkpoints, curves.

* ``config``: ``TrainConfig`` and its checks (``config_from_mapping``);
* ``loop``: ``train``, ``load_model`` and the run directory's files;
* ``report``: ``Reporter`` and ``ConsoleReporter``;
* ``optim``: optimisers, gradient clipping, weight noise;
* ``checkpoint``: reading and writing ``checkpoint.npz`` / ``model.npz`` (atomically);
* ``curves`` and ``svg``: the learning curves as SVG.
"""

from __future__ import annotations

from models.train.config import (
    CHECKPOINT_FILE,
    CONFIG_CHOICES,
    CONFIG_HELP,
    METRICS_FILE,
    MODEL_FILE,
    RESUMABLE_CHANGES,
    SVG_FILE,
    TrainConfig,
    config_from_mapping,
)
from models.train.loop import TrainingInterrupted, TrainResult, load_model, model_from_config, train
from models.train.report import ConsoleReporter, Reporter

__all__ = [
    "CHECKPOINT_FILE",
    "CONFIG_CHOICES",
    "CONFIG_HELP",
    "METRICS_FILE",
    "MODEL_FILE",
    "RESUMABLE_CHANGES",
    "SVG_FILE",
    "ConsoleReporter",
    "Reporter",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "config_from_mapping",
    "load_model",
    "model_from_config",
    "train",
]
