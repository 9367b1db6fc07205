"""``minigrad train``: train a recurrent network on polyphonic music."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from dataclasses import fields, replace
from typing import Any

from models.cli.common import (
    METAVARS,
    Formatter,
    Subparsers,
    UsageError,
    add_import_option,
    flag,
    non_empty,
    write_stdout,
)
from models.data.dataset import one_line
from models.io import FileError, read_text_capped
from models.train.checkpoint import load_checkpoint
from models.train.config import (
    CHECKPOINT_FILE,
    CONFIG_CHOICES,
    CONFIG_HELP,
    TrainConfig,
    config_from_mapping,
    stored_options,
)
from models.train.loop import train
from models.train.report import ConsoleReporter


def add(sub: Subparsers) -> None:
    """Add ``minigrad train``: one flag per ``TrainConfig`` option, plus ``--config``
    and ``--print-config``."""
    p = sub.add_parser(
        "train",
        help="train a recurrent network on polyphonic music",
        description=(
            "Train a recurrent network to predict the next frame of piano rolls.\n"
            "Writes OUT/checkpoint.npz after every epoch, then OUT/model.npz,\n"
            "OUT/metrics.json and OUT/curves.svg. Ctrl-C keeps a resumable checkpoint\n"
            "(continue with --resume, same --out)."
        ),
        formatter_class=Formatter,
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        default = getattr(defaults, f.name)
        help_text = f"{CONFIG_HELP[f.name]} (default: {default})"
        if f.name == "progress":
            p.add_argument(
                "--no-progress",
                dest="progress",
                action="store_false",
                default=argparse.SUPPRESS,
                help="no live progress line; one line per epoch",
            )
            continue
        if isinstance(default, bool):
            p.add_argument(
                flag(f.name),
                dest=f.name,
                action="store_true",
                default=argparse.SUPPRESS,
                help=CONFIG_HELP[f.name],
            )
            continue
        kind: type = type(default)
        p.add_argument(
            flag(f.name),
            dest=f.name,
            type=kind,
            choices=CONFIG_CHOICES.get(f.name),
            default=argparse.SUPPRESS,
            metavar=None if f.name in CONFIG_CHOICES else METAVARS.get(f.name, "N"),
            help=help_text,
        )
    p.add_argument(
        "--config",
        type=non_empty,
        metavar="FILE.toml",
        default=None,
        help="TOML file of options (same names, e.g. batch_size = 8); flags override it",
    )
    p.add_argument(
        "--print-config",
        nargs="?",
        const="toml",
        choices=("toml", "json"),
        default=None,
        help="print the resolved configuration (TOML, or JSON) and exit",
    )
    add_import_option(p)
    p.set_defaults(func=run_train)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def config_to_toml(config: TrainConfig) -> str:
    """The configuration as a TOML document that ``--config`` reads back unchanged."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in config.to_dict().items()]
    return "\n".join(lines) + "\n"


def read_toml(path: str) -> dict[str, Any]:
    """The top-level keys of a ``--config`` TOML file (a regular file of at most 1 MiB).

    Raises:
        UsageError: a file that is missing, not a regular file, too large, not
            UTF-8 or not TOML of plain keys: a bad ``--config`` is a bad option
            value (exit code 2), whatever is wrong with it.
    """
    try:
        text = read_text_capped(path, "TOML --config")
    except (FileError, OSError) as exc:
        raise UsageError(f"--config {one_line(exc)}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: invalid TOML: {one_line(exc)}") from None
    except (RecursionError, MemoryError):  # thousands of nested arrays or inline tables
        raise UsageError(
            f"--config {path}: arrays or tables nested too deeply to read; options are plain "
            "top-level keys"
        ) from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise UsageError(
                f"--config {path}: key {key!r} is a table; options are plain top-level keys"
            )
        if isinstance(value, list) and any(isinstance(v, list | dict) for v in value):
            raise UsageError(
                f"--config {path}: key {key!r} holds nested arrays or tables; an option is a "
                "number, a string, a boolean or an array of them"
            )
    return data


def resolve_train_config(args: argparse.Namespace) -> TrainConfig:
    """The configuration of ``minigrad train``: defaults, then ``--config``, then flags.

    With ``--resume`` the options not given explicitly are taken from the
    checkpoint being resumed.
    """
    names = {f.name for f in fields(TrainConfig)}
    explicit: dict[str, Any] = {}
    where = "command line"
    if args.config is not None:
        data = read_toml(args.config)
        where = f"--config {args.config}"
        # unknown keys, duplicates (batch-size and batch_size) and bad types are
        # reported with the file's name
        _usage(config_from_mapping, data, where=where)
        explicit.update({k.replace("-", "_"): v for k, v in data.items()})
    flags = {k: v for k, v in vars(args).items() if k in names}
    if flags:
        where = "" if args.config is None else f"{where} and options"
    explicit.update(flags)
    config = _usage(config_from_mapping, explicit, where=where)
    if config.resume:
        out = config.out_dir()
        ck = load_checkpoint(out / CHECKPOINT_FILE)
        # presentation options are not inherited from the interrupted run
        saved = {
            k: v
            for k, v in stored_options(ck.config).items()
            if k in names and k not in ("progress", "overwrite", "allow_data_change")
        }
        base = config_from_mapping(saved, where=f"{out / CHECKPOINT_FILE}: stored configuration")
        explicit["out"] = str(out)
        config = _usage(config_from_mapping, explicit, where=where, base=base)
    return _usage(config.check_training_batch)


def _usage(build: Any, *a: Any, **kw: Any) -> TrainConfig:
    """``build(*a, **kw)`` with its ValueError (a bad option value) as a UsageError."""
    try:
        config: TrainConfig = build(*a, **kw)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return config


def run_train(args: argparse.Namespace) -> int:
    """``minigrad train``: train, print a JSON summary on stdout; returns the exit code."""
    config = resolve_train_config(args)
    if args.print_config is not None:
        # the dataset as an absolute path, but ``out`` as the template: a config
        # edited and trained again goes to the folder its own options name
        config = replace(config.resolved(), out=config.out)
        if args.print_config == "json":
            write_stdout(json.dumps(config.to_dict(), indent=2) + "\n")
        else:
            write_stdout(config_to_toml(config))
        return 0
    live = config.progress and sys.stderr.isatty()
    result = train(config, reporter=ConsoleReporter(sys.stderr, live=live))
    m = result.metrics
    summary = {
        "out": str(result.out),
        "best_epoch": m["best_epoch"],
        "epochs_run": len(m["epochs"]),
        "stop_reason": m["stop_reason"],
        "train_nll": m["train_nll"],
        "valid_nll": m["valid_nll"],
        "test_nll": m["test_nll"],
        "test_frame_accuracy": m["test_frame_accuracy"],
        "wall_seconds": round(m["wall_seconds"], 2),
    }
    # the run is in its folder (metrics.json); a closed stdout loses only this summary
    write_stdout(json.dumps(summary, indent=2) + "\n", essential=False)
    return 0
