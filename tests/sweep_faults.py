"""Trials that fail on purpose, for the tests of a sweep's failure handling.

``run_sweep(..., trial_runner=functools.partial(faulty_trial, exit_on=(name,)))``
makes the worker running the trial ``name`` exit at once (``os._exit(1)``: use
it with the process pool only, it would end a threaded executor's process),
and ``raise_on`` makes the trial raise ``TrialFailed``. The workers import
this module by name: pytest puts tests/ on ``sys.path``, and spawned workers
inherit it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.sweep import TrialFailed, run_trial

FAILED_ON_PURPOSE = "failed on purpose"


def faulty_trial(
    config: Mapping[str, Any], *, exit_on: tuple[str, ...] = (), raise_on: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``run_trial``, except for the trials named in ``exit_on`` and ``raise_on``."""
    name = Path(str(config["out"])).name
    if name in exit_on:
        os._exit(1)
    if name in raise_on:
        raise TrialFailed(f"RuntimeError: trial {name} {FAILED_ON_PURPOSE}")
    return run_trial(config)
