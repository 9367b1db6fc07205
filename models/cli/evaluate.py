"""``minigrad evaluate``: score a trained model on a dataset split."""

from __future__ import annotations

import argparse
import json

from models.cli.common import (
    Formatter,
    Subparsers,
    add_import_option,
    check_range,
    non_empty,
    write_stdout,
)
from models.data.dataset import SPLIT_NAMES
from models.data.load import load_dataset
from models.train.checkpoint import CheckpointError
from models.train.config import TrainConfig
from models.train.loop import load_model

# --------------------------------------------------------------------------- evaluate


def add(sub: Subparsers) -> None:
    """Add ``minigrad evaluate``."""
    p = sub.add_parser(
        "evaluate",
        help="score a trained model on a dataset split",
        description=(
            "Score a run's model.npz (or the best parameters of its checkpoint.npz)\n"
            "and print JSON: split, nll (nats per time step), frame_accuracy, n_steps."
        ),
        formatter_class=Formatter,
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        type=non_empty,
        metavar="FILE",
        help="a run's model.npz or checkpoint.npz",
    )
    p.add_argument(
        "--dataset",
        default=None,
        type=non_empty,
        metavar="NAME_OR_PATH",
        help="embedded name or .npz / .pickle path (default: the run's dataset)",
    )
    p.add_argument("--split", default="test", choices=SPLIT_NAMES, help="the split to score")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sequences per batch (default: the run's eval_batch_size, so that the figures "
        "are the ones the run reported to the last digit; else 16)",
    )
    add_import_option(p)
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """``minigrad evaluate``: print the metrics as JSON; returns the exit code."""
    if args.batch_size is not None:
        check_range("--batch-size", args.batch_size, 1)
    model, info = load_model(args.checkpoint)
    batch_size = args.batch_size
    if batch_size is None:
        stored = info["config"].get("eval_batch_size")
        valid = isinstance(stored, int) and not isinstance(stored, bool) and stored >= 1
        batch_size = stored if valid else TrainConfig().eval_batch_size
    name = args.dataset if args.dataset is not None else info["config"].get("dataset")
    if not isinstance(name, str):
        raise CheckpointError(f"{args.checkpoint}: the stored configuration names no dataset")
    dataset = load_dataset(name)
    scores = model.evaluate(dataset.split(args.split), batch_size)
    out = {
        "checkpoint": str(args.checkpoint),
        "dataset": name,
        "split": args.split,
        "nll": scores["nll"],
        "frame_accuracy": scores["frame_accuracy"],
        "n_steps": scores["n_steps"],
        "n_sequences": scores["n_sequences"],
        "params": info["params"],
        "epoch": info["epoch"],
        "cell": model.cell_type,
        "hidden": model.hidden_size,
        "layers": model.layers,
    }
    write_stdout(json.dumps(out, indent=2) + "\n")
    return 0
