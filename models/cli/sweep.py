"""``minigrad sweep``: choose each cell's learning rate by validation NLL."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from models.cli.common import METAVARS, Formatter, Subparsers, flag
from models.data.dataset import one_line
from models.generate.midi import MissingExtraError
from models.sweep.config import (
    DEFAULT_WORKERS,
    SWEEP_OWNED,
    SweepConfig,
    parse_cells,
    parse_hidden,
    parse_lr_range,
    positive,
)
from models.sweep.report import format_table
from models.sweep.run import run_sweep
from models.train.config import CONFIG_CHOICES, CONFIG_HELP, TrainConfig

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


def sweep_config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The ``SweepConfig`` of ``minigrad sweep``'s arguments."""
    options = {k[len("train_") :]: v for k, v in vars(args).items() if k.startswith("train_")}
    return SweepConfig(
        dataset=args.dataset,
        out=args.out,
        cells=parse_cells(args.cells),
        hidden=parse_hidden(getattr(args, "hidden", "")),
        lr_candidates=positive("--lr-candidates", args.lr_candidates),
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
        sys.stderr.write(f"minigrad: error: {one_line(exc)}\n")
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
