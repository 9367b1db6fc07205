"""A sweep's results: the choice per cell, tables and CSV files."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.sweep.config import NOT_COMPARED, Trial
from models.sweep.trial import is_finished, trial_record
from models.train.config import METRICS_FILE


def read_finished(trial: Trial) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` for a finished run with the trial's options, ``(None, error)``
    for a finished run with other options, ``(None, None)`` otherwise."""
    path = trial.out / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(metrics, dict) or not is_finished(metrics):
        return None, None
    mine = trial.config.to_dict()
    theirs = metrics["config"]
    for key, value in mine.items():
        if key in NOT_COMPARED:
            continue
        if theirs.get(key) != value:
            return None, (
                f"{trial.out} holds a finished run with other options ({key}: "
                f"{theirs.get(key)!r}, the sweep wants {value!r}); remove it or choose "
                "another --out"
            )
    return trial_record(metrics), None


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


