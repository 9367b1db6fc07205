"""A sweep's configuration: cells, learning-rate candidates, seeds, trials, executor."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from models.cells.registry import CELLS, is_known_cell
from models.train.config import TrainConfig, config_from_mapping

PAPER_HIDDEN: Final[Mapping[str, int]] = {"gru": 46, "lstm": 36, "tanh": 100}
"""Chung et al.'s hidden sizes, about 20k parameters each with 88-key inputs."""
BLAS_ENV: Final = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables set to 1 so that each worker's BLAS runs one thread."""
RESULTS_JSON: Final = "results.json"
RESULTS_CSV: Final = "results.csv"
TRIALS_CSV: Final = "trials.csv"
SWEEP_FILES: Final = (RESULTS_JSON, RESULTS_CSV, TRIALS_CSV)
"""The files a sweep writes into its folder; ``results.json`` records its options."""
DEFAULT_WORKERS: Final = 2

SWEEP_OWNED: Final = frozenset(
    {"dataset", "cell", "hidden", "lr", "seed", "out", "resume", "overwrite", "progress"}
)
"""Options of ``TrainConfig`` that the sweep sets itself for each trial."""
NOT_COMPARED: Final = frozenset({"out", "resume", "overwrite", "progress"})


class TrialFailed(RuntimeError):
    """A trial raised; the message is ``"ExceptionType: message"`` on one line."""


# --------------------------------------------------------------------------- configuration


MAX_LR_CANDIDATES: Final = 1000
"""The most learning rates a sweep tries per cell."""
MAX_SEEDS: Final = 1000
"""The most training seeds per (cell, learning rate)."""


def positive(what: str, value: object, most: int | None = None) -> int:
    """``value`` if it is an integer >= 1 (and <= ``most``), else a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    if most is not None and value > most:
        raise ValueError(f"{what} must be at most {most}, got {value}")
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
    positive("the number of learning-rate candidates", n, MAX_LR_CANDIDATES)
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
        if not is_known_cell(cell):
            raise ValueError(
                f"--hidden {text!r}: unknown cell {cell!r}; valid: "
                f"{', '.join(CELLS)} or module:function"
            )
        try:
            h = int(size)
        except ValueError:
            raise ValueError(
                f"--hidden {text!r}: size {size!r} of {cell} is not an integer"
            ) from None
        if h < 1:
            raise ValueError(f"--hidden {text!r}: size of {cell} must be >= 1, got {h}")
        if cell in out:  # which one was meant?
            raise ValueError(f"--hidden {text!r}: the size of {cell} is given twice")
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
        if not is_known_cell(c):
            raise ValueError(
                f"--cells {text!r}: unknown cell {c!r}; valid: "
                f"{', '.join(CELLS)} or module:function"
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
    """``<cell>-lr<lr with 4 significant digits>-s<seed>``, e.g. ``gru-lr3.162e-03-s0``
    (a ``module:function`` cell is named by its function)."""
    return f"{cell.rpartition(':')[2]}-lr{lr:.3e}-s{seed}"


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep runs.

    Args:
        dataset: an embedded dataset name or a dataset file.
        out: the sweep directory.
        cells: the cells swept (names of ``models.cells.CELLS`` or ``module:function`` specs).
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

        Raises:
            ValueError: a cell without a size, or a size for a cell that is not
                swept (a typo in ``--cells`` or ``--hidden`` would go unnoticed).
        """
        unswept = [cell for cell in self.hidden if cell not in self.cells]
        if unswept:
            raise ValueError(
                f"--hidden gives a size for {', '.join(unswept)}, which is not swept (--cells "
                f"{','.join(self.cells)}); add it to --cells or drop its size"
            )
        sizes: dict[str, int] = {}
        for cell in self.cells:
            size = self.hidden.get(cell, PAPER_HIDDEN.get(cell))
            if size is None:
                raise ValueError(
                    f"cell {cell!r} has no default hidden size; give one with --hidden {cell}=H"
                )
            sizes[cell] = positive(f"the hidden size of {cell}", size)
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
        if not self.out:  # '' would be the current folder
            raise ValueError("--out must not be empty")
        positive("--seeds", self.seeds, MAX_SEEDS)
        positive("--lr-candidates", self.lr_candidates, MAX_LR_CANDIDATES)
        if isinstance(self.sweep_seed, bool) or self.sweep_seed < 0:
            raise ValueError(f"--sweep-seed must be >= 0, got {self.sweep_seed!r}")
        sizes = self.hidden_sizes()
        lrs = self.learning_rates()
        base = self.base_config()
        folder = Path(self.out)
        if os.path.lexists(folder) and not folder.is_dir():  # a file, FIFO, symlink loop
            raise ValueError(
                f"--out {folder}: exists and is not a folder; a sweep writes into a folder"
            )
        root = folder.resolve()
        # every swept cell's size is checked before any trial, and all the refusals
        # are told at once, each naming its cell (a model too large for one cell is
        # often too large for the others too)
        refused: list[str] = []
        for cell in self.cells:
            try:
                replace(
                    base, cell=cell, hidden=sizes[cell], lr=lrs[0], out=str(root)
                ).validate().check_training_batch()
            except ValueError as exc:
                if str(exc) not in refused:
                    refused.append(str(exc))
        if refused:
            raise ValueError("; ".join(refused))
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
            "training": training_options(self.train_options),
        }


def training_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """Every training option of a sweep's trials but those the sweep sets itself:
    ``given`` (a sweep's ``train_options``) completed by the defaults, so that two
    sweeps compare by the recipe their trials train with, whether an option was
    given or left at a default that gives the same.

    Raises:
        ValueError: an unknown or invalid option.
    """
    full = config_from_mapping(given, where="sweep training options").to_dict()
    return {k: v for k, v in full.items() if k not in SWEEP_OWNED}


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
