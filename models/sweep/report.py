"""A sweep's results: the choice per cell, tables and CSV files."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.data.dataset import one_line
from models.io import read_text_capped
from models.sweep.config import NOT_COMPARED, Trial
from models.sweep.trial import is_finished, trial_record
from models.train.config import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SVG_FILE,
    stored_options,
)


def _other_option(trial: Trial, theirs: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first compared option on which a run's recorded ``config`` and the trial
    differ, as ``(key, theirs, the trial's)``; ``None`` when they agree."""
    theirs = stored_options(theirs)
    for key, value in trial.config.to_dict().items():
        if key not in NOT_COMPARED and theirs.get(key) != value:
            return key, theirs.get(key), value
    return None


def read_finished(trial: Trial) -> tuple[dict[str, Any] | None, str | None]:
    """What a trial folder holds: ``(record, None)`` for a finished run with the
    trial's options, ``(None, error)`` for a finished run with other options (kept,
    the trial fails), ``(None, None)`` for nothing or an unfinished run of this
    trial (it runs, resuming its checkpoint).

    A trial's files are the sweep's own only when its ``metrics.json`` records the
    trial's options. An unfinished run with other options (or none), and run files
    without a ``metrics.json`` or a checkpoint, are someone else's:
    :class:`ForeignTrial`, so that the sweep does not replace them.

    Raises:
        CorruptTrial: ``metrics.json`` cannot be read (naming it).
        ForeignTrial: the folder holds files of a run that is not this trial.
    """
    path = trial.out / METRICS_FILE
    if not os.path.lexists(path):
        others = [
            name for name in (MODEL_FILE, SVG_FILE) if os.path.lexists(trial.out / name)
        ]
        if others and not (trial.out / CHECKPOINT_FILE).is_file():
            raise ForeignTrial(
                f"{trial.out / others[0]}: a run's file without its metrics.json or "
                "checkpoint.npz, not a trial of this sweep"
            )
        return None, None
    try:
        metrics = json.loads(read_text_capped(path, "metrics.json", 64 << 20))
        if not isinstance(metrics, dict):
            raise TypeError(f"a JSON {type(metrics).__name__}, not an object")
        theirs = metrics.get("config")
        finished = is_finished(metrics)
        if finished and not isinstance(theirs, dict):
            raise TypeError("'config' is not an object")
        record = trial_record(metrics) if finished else None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # a corrupt or hand-edited file: the trial runs again (see models.sweep.trial)
        raise CorruptTrial(f"{path}: unreadable ({type(exc).__name__}: {one_line(exc)})") from None
    differ = _other_option(trial, theirs) if isinstance(theirs, dict) else None
    if record is None:
        if not isinstance(theirs, dict):
            raise ForeignTrial(f"{path}: records no run options, not a trial of this sweep")
        if differ is not None:
            key, was, want = differ
            raise ForeignTrial(
                f"{path}: an unfinished run with other options ({key}: {was!r}, the sweep "
                f"wants {want!r}), not a trial of this sweep"
            )
        return None, None
    if differ is not None:
        key, was, want = differ
        return None, (
            f"{trial.out} holds a finished run with other options ({key}: "
            f"{was!r}, the sweep wants {want!r}); remove it or choose "
            "another --out"
        )
    return record, None


class CorruptTrial(ValueError):
    """A trial's ``metrics.json`` cannot be read; the message names the file."""


class ForeignTrial(ValueError):
    """A trial folder holds files of a run that is not that trial; the message names
    the file."""


def summarise(
    trials: Sequence[Trial], records: Mapping[str, Mapping[str, Any]], cells: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per cell: the learning rate chosen by validation NLL and its numbers."""
    rows: list[dict[str, Any]] = []
    for cell in cells:
        mine = [t for t in trials if t.cell == cell]
        recs = [records.get(t.name, {"status": "pending"}) for t in mine]
        ok = [r for r in recs if r["status"] == "ok"]
        by_lr: dict[float, list[Mapping[str, Any]]] = {}
        complete: dict[float, bool] = {}
        for t, r in zip(mine, recs, strict=True):
            by_lr.setdefault(t.lr, [])
            complete.setdefault(t.lr, True)
            if r["status"] == "ok":
                by_lr[t.lr].append(r)
            else:
                complete[t.lr] = False
        eligible = [lr for lr in by_lr if complete[lr] and by_lr[lr]]
        row: dict[str, Any] = {
            "cell": cell,
            "hidden": mine[0].hidden if mine else None,
            "num_params": ok[0]["num_params"] if ok else None,
            "lr": None,
            "train_nll": None,
            "valid_nll": None,
            "test_nll": None,
            "test_nll_std": None,
            "test_frame_accuracy": None,
            "seeds": 0,
            "wall_seconds": None,
            "train_seconds": None,
            "cell_wall_seconds": sum(float(r["wall_seconds"]) for r in ok),
            "trials_ok": len(ok),
            "trials_failed": sum(1 for r in recs if r["status"] == "failed"),
            "trials": len(mine),
        }
        if eligible:
            chosen = min(
                eligible, key=lambda lr: (statistics.fmean(r["valid_nll"] for r in by_lr[lr]), lr)
            )
            group = by_lr[chosen]
            tests = [float(r["test_nll"]) for r in group]
            row.update(
                lr=chosen,
                train_nll=statistics.fmean(r["train_nll"] for r in group),
                valid_nll=statistics.fmean(r["valid_nll"] for r in group),
                test_nll=statistics.fmean(tests),
                test_nll_std=statistics.stdev(tests) if len(tests) > 1 else 0.0,
                test_frame_accuracy=statistics.fmean(r["test_frame_accuracy"] for r in group),
                seeds=len(group),
                wall_seconds=statistics.fmean(r["wall_seconds"] for r in group),
                train_seconds=statistics.fmean(r["train_seconds"] for r in group),
            )
        rows.append(row)
    return rows


CELL_COLUMNS = (
    "cell",
    "hidden",
    "num_params",
    "lr",
    "train_nll",
    "valid_nll",
    "test_nll",
    "test_nll_std",
    "test_frame_accuracy",
    "seeds",
    "wall_seconds",
    "train_seconds",
    "cell_wall_seconds",
    "trials_ok",
    "trials_failed",
    "trials",
)
TRIAL_COLUMNS = (
    "name",
    "cell",
    "hidden",
    "lr",
    "seed",
    "status",
    "reused",
    "resumed",
    "num_params",
    "train_nll",
    "valid_nll",
    "test_nll",
    "test_frame_accuracy",
    "best_epoch",
    "epochs_run",
    "stop_reason",
    "train_seconds",
    "wall_seconds",
    "error",
    "run_dir",
)


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def format_table(cells: Sequence[Mapping[str, Any]]) -> str:
    """The per-cell results as an aligned text table."""
    head = ("cell", "hidden", "params", "lr", "train", "valid", "test", "wall s", "ok/failed")
    lines = [head]
    for r in cells:

        def num(key: str, fmt: str, r: Mapping[str, Any] = r) -> str:
            v = r.get(key)
            return "-" if v is None else format(v, fmt)

        lines.append(
            (
                str(r["cell"]),
                num("hidden", "d"),
                num("num_params", "d"),
                num("lr", ".3e"),
                num("train_nll", ".4f"),
                num("valid_nll", ".4f"),
                num("test_nll", ".4f"),
                num("wall_seconds", ".1f"),
                f"{r['trials_ok']}/{r['trials_failed']}",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return (
        "\n".join(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
            for line in lines
        )
        + "\n"
    )


@dataclass
class SweepResult:
    """The outcome of ``run_sweep``: the contents of ``results.json``.

    Attributes:
        data: ``{"status", "sweep", "executor", "wall_seconds", "cells", "trials"}``.
        files: ``{"json", "csv", "trials_csv"}`` -> path.
    """

    data: dict[str, Any]
    files: dict[str, Path]

    @property
    def cells(self) -> list[dict[str, Any]]:
        """One row per cell (the chosen learning rate and its numbers)."""
        rows: list[dict[str, Any]] = self.data["cells"]
        return rows

    @property
    def trials(self) -> list[dict[str, Any]]:
        """One row per trial."""
        rows: list[dict[str, Any]] = self.data["trials"]
        return rows

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The trials that failed."""
        return [t for t in self.trials if t["status"] == "failed"]
