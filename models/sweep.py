"""Learning-rate sweeps as in Chung et al. (2014), and ``minigrad sweep``.

Chung et al. chose the learning rate of each model among 10 candidates drawn
log-uniformly, by validation NLL, for three cells of about 20k parameters
(GRU 46 units, LSTM 36, tanh-RNN 100 on 88-key inputs). A sweep here runs
one **trial** per (cell, learning rate, seed): a ``models.train.train`` run
in its own run directory ``OUT/<cell>-lr<lr>-s<seed>/`` (``metrics.json``,
``model.npz``, ``checkpoint.npz``, ``curves.svg``), and then writes
``OUT/results.json``, ``OUT/results.csv`` (one row per cell) and
``OUT/trials.csv`` (one row per trial).

**Learning rates.** ``learning_rates`` draws ``n`` candidates log-uniformly
over ``[lo, hi]`` with ``numpy.random.default_rng(sweep_seed)``, sorts them and
rounds them to 4 significant digits (the paper drew at random too; the draws
are the same for the same sweep seed, on every machine). With ``grid=True``
they are ``n`` log-spaced values from ``lo`` to ``hi`` instead. Every cell
gets the same candidates, and every trial of a cell the same hidden size.

**Choice.** For each cell the learning rate with the lowest validation NLL
(mean over the seeds) is chosen, among the learning rates whose every seed
finished; the train and test NLL are only reported, never used to choose.
Each NLL is that of the run's best epoch (early stopping on the validation
set), in nats per time step.

**Executors.** Trials are submitted to a ``concurrent.futures.Executor``:

* ``local`` or ``local:N``: a ``ProcessPoolExecutor`` of N worker processes
  (default 2), started with the ``spawn`` method;
* ``dask://HOST:PORT``: ``distributed.Client("tcp://HOST:PORT").get_executor()``,
  a Dask cluster (the optional extra ``pip install "minigrad[dask]"``). The
  workers must have minigrad installed and see the dataset file and the
  output directory at the same absolute paths (a shared file system).

BLAS is limited to one thread per worker: ``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are set to 1 in this process's
environment while the sweep runs (spawned workers inherit it before numpy
loads) and again by the worker initializer (``client.run`` on Dask workers).

**Failures.** A trial that raises (a diverging learning rate raises
``NonFiniteError``) is reported as failed and the sweep goes on. When a
worker process dies (killed, or crashed), the local pool breaks and every
trial it was running fails with ``BrokenProcessPool``: the pool is recreated,
and those trials are run again one at a time, so that the trial that kills
its worker when running alone is the one reported as failed and the others
complete (each resumes from its last epoch's checkpoint). On Dask, the
scheduler retries a task whose worker died and finally raises
``KilledWorker``, which is reported the same way.

**Re-running** the same command skips every trial whose run directory holds a
finished ``metrics.json`` with the same options, and resumes a trial that
left a checkpoint but no finished metrics (``train --resume``, which gives
exactly the numbers of an uninterrupted run); failed trials are tried again.

**Test hook.** The environment variable ``MINIGRAD_SWEEP_TEST_FAIL`` makes
chosen trials fail on purpose, for the tests of the failure handling:
``exit:GLOB`` makes the worker process running a trial whose directory name
matches the shell pattern ``GLOB`` exit at once with ``os._exit(1)`` (use it
with the process pool only: on a threaded executor it ends the whole
process), and ``raise:GLOB`` makes the trial raise ``RuntimeError``; several
rules are separated by commas. Nothing sets it outside the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import io
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np

from models.checkpoint import atomic_write_text
from models.cli import _METAVARS, Subparsers, _flag, _Formatter, _one_line, command
from models.data import load_dataset
from models.midi import MissingExtraError, import_extra
from models.train import (
    CELL_CHOICES,
    CHECKPOINT_FILE,
    CONFIG_CHOICES,
    CONFIG_HELP,
    METRICS_FILE,
    Reporter,
    TrainConfig,
    TrainingInterrupted,
    config_from_mapping,
    train,
)

__all__ = [
    "BLAS_ENV",
    "PAPER_HIDDEN",
    "RESULTS_CSV",
    "RESULTS_JSON",
    "TEST_HOOK_ENV",
    "TRIALS_CSV",
    "SweepConfig",
    "SweepResult",
    "Trial",
    "TrialFailed",
    "format_table",
    "learning_rates",
    "limit_blas_threads",
    "parse_cells",
    "parse_executor",
    "parse_hidden",
    "parse_lr_range",
    "run_sweep",
    "run_trial",
    "trial_name",
]

PAPER_HIDDEN: Final[Mapping[str, int]] = {"gru": 46, "lstm": 36, "tanh": 100}
"""Chung et al.'s hidden sizes, about 20k parameters each with 88-key inputs."""
BLAS_ENV: Final = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables set to 1 so that each worker's BLAS runs one thread."""
TEST_HOOK_ENV: Final = "MINIGRAD_SWEEP_TEST_FAIL"
"""The test hook (see the module docstring)."""
RESULTS_JSON: Final = "results.json"
RESULTS_CSV: Final = "results.csv"
TRIALS_CSV: Final = "trials.csv"
DEFAULT_WORKERS: Final = 2

SWEEP_OWNED: Final = frozenset(
    {"dataset", "cell", "hidden", "lr", "seed", "out", "resume", "overwrite", "progress"}
)
"""Options of ``TrainConfig`` that the sweep sets itself for each trial."""
_NOT_COMPARED: Final = frozenset({"out", "resume", "overwrite", "progress"})


class TrialFailed(RuntimeError):
    """A trial raised; the message is ``"ExceptionType: message"`` on one line."""


# --------------------------------------------------------------------------- configuration


def _positive(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def learning_rates(
    n: int, lo: float, hi: float, *, grid: bool = False, seed: int = 0
) -> list[float]:
    """The learning-rate candidates of a sweep.

    Args:
        n: the number of candidates, >= 1.
        lo: the lower end of the range, > 0.
        hi: the upper end, >= ``lo``.
        grid: ``n`` log-spaced values from ``lo`` to ``hi`` (``lo`` when
            ``n == 1``) instead of random draws.
        seed: the seed of the log-uniform draws (``numpy.random.default_rng``).

    Returns:
        The candidates in increasing order, each rounded to 4 significant
        digits (the value in the run directory's name is the value used);
        values that coincide after rounding appear once.
    """
    _positive("the number of learning-rate candidates", n)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"the learning-rate range must satisfy 0 < LO <= HI, got {lo}:{hi}")
    a, b = math.log10(lo), math.log10(hi)
    if grid:
        exponents = np.linspace(a, b, n) if n > 1 else np.array([a])
    else:
        exponents = np.sort(np.random.default_rng(seed).uniform(a, b, n))
    values = [float(f"{10.0 ** float(e):.3e}") for e in exponents]
    return sorted(dict.fromkeys(values))


def parse_lr_range(text: str) -> tuple[float, float]:
    """Parse ``LO:HI`` (e.g. ``1e-4:1e-2``).

    Raises:
        ValueError: naming the part at fault.
    """
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError(f"--lr-range {text!r}: expected LO:HI, e.g. 1e-4:1e-2")
    out: list[float] = []
    for what, part in zip(("LO", "HI"), parts, strict=True):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--lr-range {text!r}: {what} {part!r} is not a number") from None
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--lr-range {text!r}: {what} must be a positive number")
        out.append(value)
    if out[0] > out[1]:
        raise ValueError(f"--lr-range {text!r}: LO must not exceed HI")
    return out[0], out[1]


def parse_hidden(text: str) -> dict[str, int]:
    """Parse ``cell=H,cell=H`` (e.g. ``gru=46,lstm=36``).

    Raises:
        ValueError: naming the entry at fault.
    """
    out: dict[str, int] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        cell, sep, size = entry.partition("=")
        cell = cell.strip()
        if not sep:
            raise ValueError(f"--hidden {text!r}: entry {entry!r} is not CELL=H (e.g. gru=46)")
        if cell not in CELL_CHOICES:
            raise ValueError(
                f"--hidden {text!r}: unknown cell {cell!r}; valid: {', '.join(CELL_CHOICES)}"
            )
        try:
            h = int(size)
        except ValueError:
            raise ValueError(
                f"--hidden {text!r}: size {size!r} of {cell} is not an integer"
            ) from None
        if h < 1:
            raise ValueError(f"--hidden {text!r}: size of {cell} must be >= 1, got {h}")
        out[cell] = h
    return out


def parse_cells(text: str) -> tuple[str, ...]:
    """Parse ``gru,lstm,tanh``.

    Raises:
        ValueError: an unknown or repeated cell, or none.
    """
    cells = [c.strip() for c in text.split(",") if c.strip()]
    if not cells:
        raise ValueError("--cells: give at least one cell, e.g. gru,lstm,tanh")
    for c in cells:
        if c not in CELL_CHOICES:
            raise ValueError(
                f"--cells {text!r}: unknown cell {c!r}; valid: {', '.join(CELL_CHOICES)}"
            )
    if len(set(cells)) != len(cells):
        raise ValueError(f"--cells {text!r}: a cell is repeated")
    return tuple(cells)


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep.

    Attributes:
        cell, hidden, lr, seed: what varies between trials.
        config: the complete, resolved training configuration; ``config.out``
            is the trial's run directory.
    """

    cell: str
    hidden: int
    lr: float
    seed: int
    config: TrainConfig

    @property
    def name(self) -> str:
        """The run directory's name, ``<cell>-lr<lr>-s<seed>``."""
        return trial_name(self.cell, self.lr, self.seed)

    @property
    def out(self) -> Path:
        """The run directory."""
        return Path(self.config.out)


def trial_name(cell: str, lr: float, seed: int) -> str:
    """``<cell>-lr<lr with 4 significant digits>-s<seed>``, e.g. ``gru-lr3.162e-03-s0``."""
    return f"{cell}-lr{lr:.3e}-s{seed}"


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep runs.

    Args:
        dataset: an embedded dataset name or a dataset file.
        out: the sweep directory.
        cells: the cells swept (``models.train.CELL_CHOICES``).
        hidden: hidden size per cell, overriding ``PAPER_HIDDEN``; a cell
            that is in neither needs one.
        lr_candidates: the number of learning rates tried per cell, >= 1.
        lr_range: ``(lo, hi)``, the range of the candidates.
        lr_grid: log-spaced candidates instead of log-uniform draws.
        sweep_seed: seed of the draws.
        seeds: training seeds per (cell, learning rate): 0 .. seeds - 1.
        train_options: any other ``TrainConfig`` option (``epochs``,
            ``patience``, ``batch_size``, ...), by name; defaults as ``train``.
    """

    dataset: str
    out: str
    cells: tuple[str, ...] = ("gru", "lstm", "tanh")
    hidden: Mapping[str, int] = field(default_factory=dict)
    lr_candidates: int = 10
    lr_range: tuple[float, float] = (1e-4, 1e-2)
    lr_grid: bool = False
    sweep_seed: int = 0
    seeds: int = 1
    train_options: Mapping[str, Any] = field(default_factory=dict)

    def learning_rates(self) -> list[float]:
        """The candidates (``learning_rates``)."""
        lo, hi = self.lr_range
        return learning_rates(self.lr_candidates, lo, hi, grid=self.lr_grid, seed=self.sweep_seed)

    def hidden_sizes(self) -> dict[str, int]:
        """The hidden size of each swept cell.

        Sizes given for cells that are not swept are ignored.

        Raises:
            ValueError: a cell without a size.
        """
        sizes: dict[str, int] = {}
        for cell in self.cells:
            size = self.hidden.get(cell, PAPER_HIDDEN.get(cell))
            if size is None:
                raise ValueError(
                    f"cell {cell!r} has no default hidden size; give one with --hidden {cell}=H"
                )
            sizes[cell] = _positive(f"the hidden size of {cell}", size)
        return sizes

    def base_config(self) -> TrainConfig:
        """The training options shared by every trial.

        Raises:
            ValueError: an unknown or invalid option, or one the sweep sets itself.
        """
        owned = sorted(k for k in self.train_options if k.replace("-", "_") in SWEEP_OWNED)
        if owned:
            raise ValueError(
                f"training option(s) {', '.join(owned)} are set by the sweep for each trial"
            )
        base = config_from_mapping(self.train_options, where="sweep training options")
        return replace(base, dataset=self.dataset, progress=False)

    def trials(self) -> list[Trial]:
        """Every trial, ordered by cell (as given), learning rate and seed.

        Raises:
            ValueError: an invalid setting (naming it).
        """
        if not self.dataset:
            raise ValueError("--dataset must not be empty")
        _positive("--seeds", self.seeds)
        if isinstance(self.sweep_seed, bool) or self.sweep_seed < 0:
            raise ValueError(f"--sweep-seed must be >= 0, got {self.sweep_seed!r}")
        sizes = self.hidden_sizes()
        lrs = self.learning_rates()
        base = self.base_config()
        root = Path(self.out).resolve()
        out: list[Trial] = []
        for cell in self.cells:
            for lr in lrs:
                for seed in range(self.seeds):
                    name = trial_name(cell, lr, seed)
                    cfg = replace(
                        base, cell=cell, hidden=sizes[cell], lr=lr, seed=seed, out=str(root / name)
                    )
                    out.append(Trial(cell, sizes[cell], lr, seed, cfg.validate().resolved()))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The sweep's settings as JSON-able values."""
        return {
            "dataset": self.dataset,
            "out": str(Path(self.out).resolve()),
            "cells": list(self.cells),
            "hidden": self.hidden_sizes(),
            "lr_candidates": self.lr_candidates,
            "lr_range": list(self.lr_range),
            "lr_sampling": "log-spaced grid" if self.lr_grid else "log-uniform draws",
            "sweep_seed": self.sweep_seed,
            "learning_rates": self.learning_rates(),
            "seeds": self.seeds,
            "train_options": dict(self.train_options),
        }


def parse_executor(spec: str) -> tuple[str, int | str]:
    """Parse ``local``, ``local:N`` or ``dask://HOST:PORT``.

    Returns:
        ``("local", N)`` or ``("dask", address)``; the address gets ``tcp://``
        unless it names a protocol (``dask://tls://HOST:PORT``).

    Raises:
        ValueError: naming the spec and the forms accepted.
    """
    forms = "expected local, local:N or dask://HOST:PORT"
    if spec == "local":
        return "local", DEFAULT_WORKERS
    if spec.startswith("local:"):
        n = spec[len("local:") :]
        try:
            workers = int(n)
        except ValueError:
            raise ValueError(f"--executor {spec!r}: N {n!r} is not an integer; {forms}") from None
        if workers < 1:
            raise ValueError(f"--executor {spec!r}: N must be >= 1")
        return "local", workers
    if spec.startswith("dask://"):
        address = spec[len("dask://") :]
        if not address:
            raise ValueError(f"--executor {spec!r}: no scheduler address; {forms}")
        return "dask", address if "://" in address else f"tcp://{address}"
    raise ValueError(f"--executor {spec!r}: {forms}")


# --------------------------------------------------------------------------- one trial


def limit_blas_threads() -> None:
    """Set ``BLAS_ENV`` to 1 in this process (the workers' initializer)."""
    for name in BLAS_ENV:
        os.environ[name] = "1"


@contextlib.contextmanager
def _blas_env() -> Iterator[None]:
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


def _test_hook(name: str) -> None:
    """Fail on purpose as ``MINIGRAD_SWEEP_TEST_FAIL`` says (a test hook, see the module)."""
    rules = os.environ.get(TEST_HOOK_ENV, "")
    for rule in filter(None, (r.strip() for r in rules.split(","))):
        mode, _, pattern = rule.partition(":")
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        if mode == "exit":
            os._exit(1)
        if mode == "raise":
            raise TrialFailed(f"RuntimeError: {TEST_HOOK_ENV} made trial {name} fail")


def _finished(metrics: Mapping[str, Any]) -> bool:
    keys = ("train_nll", "valid_nll", "test_nll", "config", "model")
    return metrics.get("status") == "finished" and all(k in metrics for k in keys)


def _trial_record(metrics: Mapping[str, Any]) -> dict[str, Any]:
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
        The trial's record (``_trial_record`` of its ``metrics.json``) and
        ``"resumed"``.

    Raises:
        TrialFailed: training raised; the message names the exception.
        KeyboardInterrupt: interrupted (the checkpoint is kept for a re-run).
    """
    try:
        cfg = config_from_mapping(config, where="trial configuration")
        out = cfg.out_dir()
        _test_hook(out.name)
        resume = (out / CHECKPOINT_FILE).is_file()
        result = train(
            replace(cfg, resume=resume, overwrite=False, progress=False), reporter=Reporter()
        )
    except TrainingInterrupted as exc:
        raise KeyboardInterrupt(str(exc)) from None
    except TrialFailed:
        raise
    except Exception as exc:
        raise TrialFailed(f"{type(exc).__name__}: {_one_line(exc)}") from None
    return {**_trial_record(result.metrics), "resumed": resume}


# --------------------------------------------------------------------------- the sweep


class _Executors:
    """Creates (and re-creates) the sweep's executor from its spec."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.kind, where = parse_executor(spec)
        self.workers = int(where) if self.kind == "local" else 0
        self.address = str(where) if self.kind == "dask" else ""
        self._client: Any = None
        self._distributed: Any = None
        if self.kind == "dask":
            self._distributed = import_extra("distributed", "dask", f"--executor {spec}")
        self.executor: Executor | None = None

    @property
    def window(self) -> int:
        """How many trials are submitted at once."""
        return self.workers if self.kind == "local" else 1 << 30

    def start(self) -> Executor:
        if self.kind == "local":
            self.executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=limit_blas_threads,
            )
            return self.executor
        self.connect()
        self.executor = self._client.get_executor(pure=False)
        return self.executor

    def connect(self) -> None:
        """Connect to the Dask scheduler (once) and limit its workers' BLAS threads."""
        if self.kind != "dask" or self._client is not None:
            return
        try:
            self._client = self._distributed.Client(self.address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ValueError(
                f"--executor {self.spec}: cannot reach the Dask scheduler at "
                f"{self.address}: {_one_line(exc)}"
            ) from None
        self._client.run(limit_blas_threads)

    def stop(self, *, wait: bool = True, kill: bool = False) -> None:
        ex, self.executor = self.executor, None
        if ex is not None:
            if kill and isinstance(ex, ProcessPoolExecutor):
                # No public way before Python 3.14 to stop running workers.
                for proc in list(getattr(ex, "_processes", {}).values()):
                    with contextlib.suppress(Exception):
                        proc.terminate()
            if isinstance(ex, ProcessPoolExecutor):
                ex.shutdown(wait=wait, cancel_futures=True)
            else:  # a Dask ClientExecutor cancels its futures itself
                with contextlib.suppress(Exception):
                    ex.shutdown(wait=wait)

    def close(self, *, kill: bool = False) -> None:
        self.stop(wait=not kill, kill=kill)
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


def _read_finished(trial: Trial) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)`` for a finished run with the trial's options, ``(None, error)``
    for a finished run with other options, ``(None, None)`` otherwise."""
    path = trial.out / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(metrics, dict) or not _finished(metrics):
        return None, None
    mine = trial.config.to_dict()
    theirs = metrics["config"]
    for key, value in mine.items():
        if key in _NOT_COMPARED:
            continue
        if theirs.get(key) != value:
            return None, (
                f"{trial.out} holds a finished run with other options ({key}: "
                f"{theirs.get(key)!r}, the sweep wants {value!r}); remove it or choose "
                "another --out"
            )
    return _trial_record(metrics), None


def _summarise(
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


_CELL_COLUMNS = (
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
_TRIAL_COLUMNS = (
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


def _csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buf.getvalue()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
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


def run_sweep(
    config: SweepConfig, *, executor: str = "local", log: TextIO | None = None
) -> SweepResult:
    """Run every trial of a sweep that has not finished yet, and write the results.

    Args:
        config: the sweep.
        executor: ``local``, ``local:N`` or ``dask://HOST:PORT`` (``parse_executor``).
        log: where progress lines go (default ``sys.stderr``).

    Returns:
        The results, also written to ``OUT/results.json``, ``OUT/results.csv``
        and ``OUT/trials.csv`` (updated as trials finish, completed at the end).

    Raises:
        ValueError: an invalid setting or executor, an unreachable Dask scheduler.
        models.data.DataError: the dataset cannot be loaded.
        models.midi.MissingExtraError: ``dask://`` without ``distributed``.
        KeyboardInterrupt: Ctrl-C; the results so far are written (status
            ``"interrupted"``) and a re-run continues.
    """
    t_start = time.perf_counter()
    stream = sys.stderr if log is None else log

    def say(text: str) -> None:
        stream.write(f"sweep: {text}\n")
        stream.flush()

    trials = config.trials()
    executors = _Executors(executor)  # checks the spec before anything runs
    dataset = load_dataset(config.dataset)
    del dataset  # loaded once here only to fail early with a clear message
    root = Path(config.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    settings = config.to_dict()
    records: dict[str, dict[str, Any]] = {}

    def base(t: Trial) -> dict[str, Any]:
        return {
            "name": t.name,
            "cell": t.cell,
            "hidden": t.hidden,
            "lr": t.lr,
            "seed": t.seed,
            "run_dir": str(t.out),
            "reused": False,
            "resumed": False,
            "error": None,
        }

    def finish(t: Trial, status: str, **kw: Any) -> None:
        records[t.name] = {**base(t), "status": status, **kw}

    def document(status: str) -> dict[str, Any]:
        rows = [records.get(t.name, {**base(t), "status": "pending"}) for t in trials]
        doc: dict[str, Any] = _json_safe(
            {
                "status": status,
                "sweep": settings,
                "executor": executor,
                "wall_seconds": time.perf_counter() - t_start,
                "cells": _summarise(trials, records, config.cells),
                "trials": rows,
            }
        )
        return doc

    files = {
        "json": root / RESULTS_JSON,
        "csv": root / RESULTS_CSV,
        "trials_csv": root / TRIALS_CSV,
    }

    def write(status: str) -> dict[str, Any]:
        doc = document(status)
        atomic_write_text(files["json"], json.dumps(doc, indent=2, allow_nan=False) + "\n")
        atomic_write_text(files["csv"], _csv(doc["cells"], _CELL_COLUMNS))
        atomic_write_text(files["trials_csv"], _csv(doc["trials"], _TRIAL_COLUMNS))
        return doc

    todo: deque[Trial] = deque()
    for t in trials:
        record, error = _read_finished(t)
        if record is not None:
            finish(t, "ok", reused=True, **record)
        elif error is not None:
            finish(t, "failed", error=error)
        else:
            todo.append(t)
    n_lrs = len(config.learning_rates())
    n_resume = sum(1 for t in todo if (t.out / CHECKPOINT_FILE).is_file())
    resuming = f" ({n_resume} resuming from a checkpoint)" if n_resume else ""
    say(
        f"{len(trials)} trials ({len(config.cells)} cells x {n_lrs} learning rates x "
        f"{config.seeds} seeds) in {root}; {len(trials) - len(todo)} already done, "
        f"{len(todo)} to run{resuming} on {executor}"
    )
    done_count = len(trials) - len(todo)

    def report(t: Trial) -> None:
        nonlocal done_count
        done_count += 1
        r = records[t.name]
        if r["status"] == "ok":
            how = " (resumed)" if r.get("resumed") else ""
            say(
                f"[{done_count}/{len(trials)}] {t.name}: valid {r['valid_nll']:.4f}, test "
                f"{r['test_nll']:.4f}, {r['epochs_run']} epochs, {r['wall_seconds']:.1f} s{how}"
            )
        else:
            say(f"[{done_count}/{len(trials)}] {t.name}: FAILED: {r['error']}")
        write("running")

    def collect(t: Trial, fut: Future[dict[str, Any]]) -> None:
        exc = fut.exception()
        if exc is None:
            finish(t, "ok", **fut.result())
        elif isinstance(exc, TrialFailed):
            finish(t, "failed", error=str(exc))
        elif isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt(str(exc))
        else:
            finish(t, "failed", error=f"{type(exc).__name__}: {_one_line(exc)}")
        report(t)

    if todo:
        executors.connect()
    write("running")
    suspects: set[str] = set()
    in_flight: dict[Future[dict[str, Any]], Trial] = {}
    status = "finished"
    with _blas_env():
        try:
            ex = executors.start() if todo else None
            while todo or in_flight:
                assert ex is not None
                broken: list[Trial] = []
                pool_broken = False
                # Fill the window; a suspect of a broken pool runs alone.
                while todo and len(in_flight) < executors.window:
                    if any(t.name in suspects for t in in_flight.values()):
                        break
                    if todo[0].name in suspects and in_flight:
                        break
                    t = todo[0]
                    try:
                        fut = ex.submit(run_trial, t.config.to_dict())
                    except BrokenProcessPool:  # broken by a trial in flight; t never ran
                        pool_broken = True
                        break
                    todo.popleft()
                    in_flight[fut] = t
                    if t.name in suspects:
                        break
                if not pool_broken:
                    done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                    for fut in done:
                        t = in_flight.pop(fut)
                        if isinstance(fut.exception(), BrokenProcessPool):
                            broken.append(t)
                            pool_broken = True
                            continue
                        collect(t, fut)
                if pool_broken:
                    executors.stop(wait=True)  # every future still in flight is done now
                    for fut, t in in_flight.items():
                        if not fut.done() or isinstance(fut.exception(), BrokenProcessPool):
                            broken.append(t)
                        else:
                            collect(t, fut)
                    in_flight.clear()
                    if len(broken) == 1:
                        t = broken[0]
                        finish(
                            t,
                            "failed",
                            error="BrokenProcessPool: the worker process running this trial "
                            "died (killed, or it exited)",
                        )
                        report(t)
                    elif broken:
                        say(
                            f"a worker process died; running the {len(broken)} trials it "
                            "interrupted again, one at a time, to find the one at fault"
                        )
                        order = {t.name: i for i, t in enumerate(trials)}
                        for t in sorted(broken, key=lambda x: order[x.name], reverse=True):
                            suspects.add(t.name)
                            todo.appendleft(t)
                    if todo:
                        ex = executors.start()
        except KeyboardInterrupt:
            status = "interrupted"
            executors.close(kill=True)
            write(status)
            raise
        finally:
            if status != "interrupted":
                executors.close()
    doc = write(status)
    return SweepResult(doc, files)


# --------------------------------------------------------------------------- command


@command
def add_sweep(sub: Subparsers) -> None:
    """Add ``minigrad sweep``."""
    p = sub.add_parser(
        "sweep",
        help="choose each cell's learning rate by validation NLL (Chung et al., Table 2)",
        description=(
            "Train every (cell, learning rate, seed) in its own run directory\n"
            "OUT/<cell>-lr<lr>-s<seed>/, on a local process pool or a Dask cluster, then\n"
            "choose each cell's learning rate by validation NLL and write OUT/results.json,\n"
            "OUT/results.csv (one row per cell) and OUT/trials.csv. Running the same\n"
            "command again skips the finished trials and retries the failed ones.\n"
            "Training options not listed (--epochs, --patience, ...) default as in 'train'."
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("--dataset", required=True, metavar="NAME_OR_PATH", help=CONFIG_HELP["dataset"])
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep directory")
    p.add_argument("--cells", default="gru,lstm,tanh", metavar="CELL,...", help="the cells swept")
    p.add_argument(
        "--hidden",
        default=argparse.SUPPRESS,
        metavar="CELL=H,...",
        help="hidden sizes by cell (default: the paper's gru=46,lstm=36,tanh=100)",
    )
    p.add_argument(
        "--lr-candidates", type=int, default=10, metavar="N", help="learning rates tried per cell"
    )
    p.add_argument(
        "--lr-range", default="1e-4:1e-2", metavar="LO:HI", help="range of the learning rates"
    )
    p.add_argument(
        "--lr-grid",
        action="store_true",
        help="log-spaced learning rates instead of log-uniform draws",
    )
    p.add_argument(
        "--sweep-seed", type=int, default=0, metavar="S", help="seed of the learning-rate draws"
    )
    p.add_argument(
        "--seeds", type=int, default=1, metavar="K", help="training seeds 0..K-1 per learning rate"
    )
    p.add_argument(
        "--executor",
        default="local",
        metavar="local[:N] | dask://HOST:PORT",
        help=f"where trials run (local: {DEFAULT_WORKERS} worker processes)",
    )
    group = p.add_argument_group("training options (as in 'minigrad train')")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in SWEEP_OWNED:
            continue
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            group.add_argument(
                _flag(f.name),
                dest=f"train_{f.name}",
                action="store_true",
                default=argparse.SUPPRESS,
                help=CONFIG_HELP[f.name],
            )
            continue
        group.add_argument(
            _flag(f.name),
            dest=f"train_{f.name}",
            type=type(default),
            choices=CONFIG_CHOICES.get(f.name),
            default=argparse.SUPPRESS,
            metavar=None if f.name in CONFIG_CHOICES else _METAVARS.get(f.name, "N"),
            help=f"{CONFIG_HELP[f.name]} (default: {default})",
        )
    p.set_defaults(func=run_sweep_command)


def sweep_config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The ``SweepConfig`` of ``minigrad sweep``'s arguments."""
    options = {k[len("train_") :]: v for k, v in vars(args).items() if k.startswith("train_")}
    return SweepConfig(
        dataset=args.dataset,
        out=args.out,
        cells=parse_cells(args.cells),
        hidden=parse_hidden(getattr(args, "hidden", "")),
        lr_candidates=_positive("--lr-candidates", args.lr_candidates),
        lr_range=parse_lr_range(args.lr_range),
        lr_grid=args.lr_grid,
        sweep_seed=args.sweep_seed,
        seeds=args.seeds,
        train_options=options,
    )


def run_sweep_command(args: argparse.Namespace) -> int:
    """``minigrad sweep``: run, print the table; exit code 1 when a trial failed."""
    config = sweep_config_from_args(args)
    try:
        result = run_sweep(config, executor=args.executor)
    except MissingExtraError as exc:
        sys.stderr.write(f"minigrad: error: {_one_line(exc)}\n")
        return 1
    sys.stdout.write(format_table(result.cells))
    files = ", ".join(str(p) for p in result.files.values())
    sys.stderr.write(f"sweep: results in {files}\n")
    if result.failed:
        n, total = len(result.failed), len(result.trials)
        sys.stderr.write(
            f"minigrad: error: {n} of {total} trials failed (see {result.files['json']}); "
            "run the same command again to retry them\n"
        )
        return 1
    return 0
