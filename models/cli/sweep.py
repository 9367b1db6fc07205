"""``minigrad sweep``: choose each cell's learning rate by validation NLL."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from models.cli.common import (
    METAVARS,
    Formatter,
    Subparsers,
    UsageError,
    flag,
    non_empty,
    write_stdout,
)
from models.cli.train import read_toml
from models.data.dataset import one_line
from models.generate.midi import MissingExtraError
from models.io import ProgressStream
from models.sweep.config import (
    DEFAULT_WORKERS,
    MAX_LR_CANDIDATES,
    MAX_SEEDS,
    SWEEP_OWNED,
    SweepConfig,
    parse_cells,
    parse_executor,
    parse_hidden,
    parse_lr_range,
    positive,
)
from models.sweep.report import format_table
from models.sweep.run import run_sweep
from models.train.config import CONFIG_CHOICES, CONFIG_HELP, TrainConfig, config_from_mapping

# --------------------------------------------------------------------------- command


def add(sub: Subparsers) -> None:
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
        formatter_class=Formatter,
    )
    S = argparse.SUPPRESS  # defaults are applied after --config (SWEEP_DEFAULTS)
    d = SWEEP_DEFAULTS
    p.add_argument(
        "--dataset", default=S, metavar="NAME_OR_PATH", help=f"{CONFIG_HELP['dataset']} (required)"
    )
    p.add_argument("--out", default=S, metavar="DIR", help="the sweep directory (required)")
    p.add_argument(
        "--cells", default=S, metavar="CELL,...", help=f"the cells swept (default: {d['cells']})"
    )
    p.add_argument(
        "--hidden",
        default=S,
        metavar="CELL=H,...",
        help="hidden sizes by cell (default: the paper's gru=46,lstm=36,tanh=100)",
    )
    p.add_argument(
        "--lr-candidates",
        type=int,
        default=S,
        metavar="N",
        help=f"learning rates tried per cell, at most {MAX_LR_CANDIDATES} "
        f"(default: {d['lr_candidates']})",
    )
    p.add_argument(
        "--lr-range",
        default=S,
        metavar="LO:HI",
        help=f"range of the learning rates (default: {d['lr_range']})",
    )
    p.add_argument(
        "--lr-grid",
        action="store_true",
        default=S,
        help="log-spaced learning rates instead of log-uniform draws",
    )
    p.add_argument(
        "--sweep-seed",
        type=int,
        default=S,
        metavar="S",
        help=f"seed of the learning-rate draws (default: {d['sweep_seed']})",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=S,
        metavar="K",
        help=f"training seeds 0..K-1 per learning rate (default: {d['seeds']})",
    )
    p.add_argument(
        "--executor",
        default=S,
        metavar="local[:N] | dask://HOST:PORT",
        help=f"where trials run (default: local, {DEFAULT_WORKERS} worker processes)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start the sweep folder again even if it holds a sweep with other options",
    )
    p.add_argument(
        "--config",
        type=non_empty,
        metavar="FILE.toml",
        default=None,
        help="TOML file of sweep and training options (same names, e.g. lr_candidates = 4, "
        "epochs = 30); flags override it",
    )
    group = p.add_argument_group("training options (as in 'minigrad train')")
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in SWEEP_OWNED:
            continue
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            group.add_argument(
                flag(f.name),
                dest=f"train_{f.name}",
                action="store_true",
                default=argparse.SUPPRESS,
                help=CONFIG_HELP[f.name],
            )
            continue
        group.add_argument(
            flag(f.name),
            dest=f"train_{f.name}",
            type=type(default),
            choices=CONFIG_CHOICES.get(f.name),
            default=argparse.SUPPRESS,
            metavar=None if f.name in CONFIG_CHOICES else METAVARS.get(f.name, "N"),
            help=f"{CONFIG_HELP[f.name]} (default: {default})",
        )
    p.set_defaults(func=run_sweep_command)


SWEEP_DEFAULTS: dict[str, Any] = {
    "cells": "gru,lstm,tanh",
    "hidden": "",
    "lr_candidates": 10,
    "lr_range": "1e-4:1e-2",
    "lr_grid": False,
    "sweep_seed": 0,
    "seeds": 1,
    "executor": "local",
}
"""The defaults of the sweep's own options (``dataset`` and ``out`` have none)."""
_SWEEP_TYPES: dict[str, type] = {
    "dataset": str,
    "out": str,
    **{k: type(v) for k, v in SWEEP_DEFAULTS.items()},
}


def _merge_config(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``args`` with those of ``--config`` where no flag was given."""
    given = dict(vars(args))
    if args.config is None:
        return given
    data = read_toml(args.config)
    where = f"--config {args.config}"
    seen: dict[str, str] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in seen:
            raise UsageError(f"{where}: option {name!r} is given twice ({seen[name]!r}, {key!r})")
        seen[name] = key
        if name in _SWEEP_TYPES:
            want = _SWEEP_TYPES[name]
            if (
                name == "cells"
                and isinstance(value, list)
                and all(isinstance(c, str) for c in value)
            ):
                value = ",".join(value)
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
            if not ok:
                raise UsageError(f"{where}: key {key!r} must be a {want.__name__}, got {value!r}")
            given.setdefault(name, value)
        elif name in SWEEP_OWNED:
            raise UsageError(f"{where}: key {key!r} is set by the sweep for each trial")
        else:
            given.setdefault(f"train_{name}", value)
    return given


def sweep_config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The ``SweepConfig`` of ``minigrad sweep``'s arguments (and its ``--config``)."""
    merged = {**SWEEP_DEFAULTS, **_merge_config(args)}
    for required in ("dataset", "out"):
        if required not in merged:
            raise UsageError(f"--{required} is required (as a flag or in --config)")
    options = {k[len("train_") :]: v for k, v in merged.items() if k.startswith("train_")}
    try:
        # unknown keys, duplicates and bad values of the training options
        where = "training options"
        if args.config is not None:  # a bad value may come from the file: name it
            where += f" (of the flags and --config {args.config})"
        config_from_mapping(options, where=where)
        return SweepConfig(
            dataset=merged["dataset"],
            out=merged["out"],
            cells=parse_cells(merged["cells"]),
            hidden=parse_hidden(merged["hidden"]),
            lr_candidates=positive("--lr-candidates", merged["lr_candidates"], MAX_LR_CANDIDATES),
            lr_range=parse_lr_range(merged["lr_range"]),
            lr_grid=merged["lr_grid"],
            sweep_seed=merged["sweep_seed"],
            seeds=positive("--seeds", merged["seeds"], MAX_SEEDS),
            train_options=options,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def run_sweep_command(args: argparse.Namespace) -> int:
    """``minigrad sweep``: run, print the table; exit code 1 when a trial failed."""
    config = sweep_config_from_args(args)
    executor = _merge_config(args).get("executor", SWEEP_DEFAULTS["executor"])
    try:
        config.trials()  # every setting checked before anything runs
        parse_executor(executor)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        result = run_sweep(config, executor=executor, overwrite=args.overwrite)
    except MissingExtraError as exc:
        sys.stderr.write(f"minigrad: error: {one_line(exc)}\n")
        return 1
    write_stdout(format_table(result.cells), essential=False)  # results.csv holds it
    files = ", ".join(str(p) for p in result.files.values())
    # a message, not a result (the files are): a closed or full stderr loses only it
    messages = ProgressStream(sys.stderr)
    messages.write(f"sweep: results in {files}\n")
    messages.flush()
    if result.failed:
        n, total = len(result.failed), len(result.trials)
        messages.write(
            f"minigrad: error: {n} of {total} trials failed (see {result.files['json']}); "
            "run the same command again to retry them\n"
        )
        return 1
    return 0
