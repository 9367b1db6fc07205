"""Training a ``SequenceModel`` on a polyphonic-music dataset, with checkpoints and resume.

One epoch:

1. shuffle the training sequences with the run's ``numpy.random.Generator``
   and cut them into padded batches (``models.data.batches``);
2. for each batch: set the learning rate of this update from the schedule
   (``models.train.schedule``), draw weight noise (if ``weight_noise > 0``)
   on a copy of the parameters and dropout and zoneout masks (if the model
   has them), run forward and backward on that copy for the **mean NLL per
   real time step of the batch** (``loss_scale = 1 / n_steps``), measure and
   clip the global gradient norm, step the optimiser on the clean parameters,
   and apply decoupled weight decay (if ``weight_decay > 0``);
3. score the validation split (NLL per time step) with the clean parameters
   (dropout off, zoneout's expectation), or, with ``ema_decay > 0``, with the
   optimiser's moving average of the parameters; keep a copy of the scored
   parameters of the best epoch so far; let a reduce-on-plateau schedule see
   the result;
4. write ``DIR/checkpoint.npz`` (parameters, best parameters, optimiser
   state, epoch, update count, schedule state, generator state,
   configuration, history), then
   ``DIR/metrics.json`` and ``DIR/curves.svg``.

Training stops after ``epochs`` epochs, or earlier when the validation NLL
has not improved for ``patience`` epochs (early stopping), when
``max_train_seconds`` is exceeded, or when ``max_updates`` updates are made
(in the middle of an epoch, which is then validated and recorded). The best
parameters are then restored, the three splits are scored, and
``DIR/model.npz`` (best parameters and configuration), ``DIR/metrics.json``
and ``DIR/curves.svg`` are written.
Every file is written atomically.

``DIR/metrics.json`` holds ``status`` (``"running"`` while training,
``"finished"`` at the end), ``config`` (the resolved options), ``model``
(cell, sizes, number of parameters), ``dataset`` (name, sequences and steps
per split), ``epochs`` (one record per epoch: ``epoch``, ``train_nll`` -- the
mean NLL per step of the epoch's batches, with weight noise and moving
parameters --, ``valid_nll``, ``valid_frame_accuracy``, ``seconds``, ``lr``
-- the learning rate of the epoch's last update --, ``grad_norm`` and
``grad_norm_max`` -- the mean and largest global gradient norm of the epoch's
updates, before clipping --, and ``updates``, the number of updates so far),
``best_epoch``, ``stop_reason`` (``"max_epochs"``, ``"early_stopping"``,
``"time_limit"`` or ``"max_updates"``), ``train_seconds``, ``wall_seconds`` and, when finished,
``train_nll``, ``valid_nll``, ``test_nll``, ``*_frame_accuracy`` and
``*_steps`` of the best parameters on each split (clean, no weight noise).
Every NLL is in nats per time step (``SequenceModel.evaluate``).

Determinism: the initial parameters and the run's generator both come from
``seed`` (two independent streams of one ``SeedSequence``), and the generator
state is saved with every checkpoint, so the same configuration gives the same
numbers, and a run stopped after any epoch and resumed with ``resume=True``
ends with exactly the numbers of an uninterrupted run.

Interruptions: a checkpoint of epoch 0 is written before the first epoch, so
a Ctrl-C (``KeyboardInterrupt``) at any point leaves the checkpoint of the
last completed epoch on disk; ``train`` then raises ``TrainingInterrupted``
(a ``KeyboardInterrupt``) naming it. A NaN or an infinity in the loss or a
gradient raises ``minigrad.errors.NonFiniteError`` naming the epoch, the batch
and the first node and time step where it appeared; the last good checkpoint
is left untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from minigrad.errors import NonFiniteError
from minigrad.threads import blas_threads
from minigrad.types import Array
from models.cells.registry import CELLS
from models.data.batches import batch_groups, make_batch
from models.data.dataset import EMBEDDED_DATASETS, DataError, Dataset, Split
from models.data.load import load_dataset
from models.io import (
    LOCK_FILE,
    FileError,
    FolderBusyError,
    RunLock,
    Terminated,
    clean_stale_temporaries,
    content_hash,
)
from models.nets.sequence import SequenceModel
from models.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from models.train.config import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    MODEL_FILE,
    RESUMABLE_CHANGES,
    RUN_FILES,
    SVG_FILE,
    TrainConfig,
    config_from_mapping,
    stored_options,
)
from models.train.curves import learning_curves_svg
from models.train.optim import (
    Optimizer,
    add_weight_noise,
    clip_grad_norm,
    decay_weights,
    global_norm,
    make_optimizer,
)
from models.train.report import ConsoleReporter, Reporter, nll_text
from models.train.schedule import LRSchedule, scaled_lr
from models.train.svg import write_svg

# --------------------------------------------------------------------------- results


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C or SIGTERM); a resumable checkpoint is on disk.

    Attributes:
        checkpoint: the checkpoint file.
        epoch: the last completed epoch it holds.
        terminated: True for SIGTERM, False for Ctrl-C (SIGINT).
    """

    def __init__(self, checkpoint: Path, epoch: int, *, terminated: bool = False) -> None:
        super().__init__(f"interrupted; {checkpoint} holds epoch {epoch}")
        self.checkpoint = checkpoint
        self.epoch = epoch
        self.terminated = terminated


@dataclass
class TrainResult:
    """The outcome of ``train``.

    Attributes:
        out: the run directory.
        metrics: the contents of ``metrics.json``.
        model: the model holding the best parameters.
        files: ``{"checkpoint", "model", "metrics", "curves"}`` -> path.
    """

    out: Path
    metrics: dict[str, Any]
    model: SequenceModel
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def test_nll(self) -> float:
        """The test NLL per time step of the best parameters (nats)."""
        return float(self.metrics["test_nll"])

    @property
    def valid_nll(self) -> float:
        """The validation NLL per time step of the best parameters (nats)."""
        return float(self.metrics["valid_nll"])


# --------------------------------------------------------------------------- helpers


def _dtype_type(name: str) -> Any:
    return np.float32 if name == "float32" else np.float64


def _make_model(config: TrainConfig) -> SequenceModel:
    init_seq, _ = np.random.SeedSequence(config.seed).spawn(2)
    return SequenceModel(
        cell=config.cell,
        hidden_size=config.hidden,
        layers=config.layers,
        dtype=_dtype_type(config.dtype),
        seed=np.random.default_rng(init_seq),
        init=config.init,
        dropout=config.dropout,
        recurrent_dropout=config.recurrent_dropout,
        zoneout=config.zoneout,
    )


def _schedule(config: TrainConfig, updates_per_epoch: int, mean_batch_steps: float) -> LRSchedule:
    """The learning-rate schedule of a run: ``lr`` and ``lr_min`` scaled to the data
    set's batches by ``config.lr_scaling``; the cosine decays over the whole budget."""
    budget = config.max_updates or config.epochs * updates_per_epoch

    def scaled(rate: float) -> float:
        return scaled_lr(rate, config.lr_scaling, mean_batch_steps, config.lr_reference_steps)

    return LRSchedule(
        lr=scaled(config.lr),
        kind=config.lr_schedule,
        total_updates=budget,
        warmup_updates=config.warmup_updates,
        lr_min=scaled(config.lr_min),
        lr_decay=config.lr_decay,
        step_epochs=config.lr_step_epochs,
        plateau_patience=config.lr_plateau_patience,
    )


def _run_rng(seed: int) -> np.random.Generator:
    _, run_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(run_seq)


def model_from_checkpoint(ck: Checkpoint, *, where: str) -> SequenceModel:
    """The model a checkpoint or ``model.npz`` holds, built from its cell description
    (``minigrad.serialize``): nothing the file names is imported. Its parameters
    are zeros; load them with ``load_state_dict``.

    A file written without a description (older runs) is rebuilt from its
    configuration, which must name a registered cell.

    Raises:
        CheckpointError: no description and a cell that is not registered.
        minigrad.serialize.CellDescriptionError: a bad description or an
            unknown node type (naming it and how to make it known).
    """
    extra = ck.extra or {}
    # the stored options are checked (types, ranges, sizes) even when the cell
    # description is what builds the model: a hand-edited file is refused whole
    known = {f.name for f in fields(TrainConfig)}
    try:
        config_from_mapping(
            {k: v for k, v in ck.config.items() if k in known},
            where=f"{where}: stored configuration",
        )
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    if ck.cell is not None:
        shape = extra.get("model")
        return SequenceModel.from_description(
            ck.cell, shape if isinstance(shape, dict) else {}, where=where
        )
    cell = ck.config.get("cell")
    if not isinstance(cell, str) or cell not in CELLS:
        raise CheckpointError(
            f"{where}: holds no cell description and its cell {cell!r} is not a registered one"
        )
    return model_from_config(ck.config, where=f"{where}: stored configuration")


def model_from_config(config: Mapping[str, Any], *, where: str) -> SequenceModel:
    """Build the (untrained) model a run configuration describes (resolving its cell).

    Args:
        config: a run configuration (``TrainConfig.to_dict()``, as stored in
            checkpoints and ``model.npz``).
        where: the source, named in messages.

    Raises:
        ValueError: naming ``where`` and the key at fault.
    """
    known = {f.name for f in fields(TrainConfig)}
    cfg = config_from_mapping({k: v for k, v in config.items() if k in known}, where=where)
    return _make_model(cfg)


def load_model(path: str | Path) -> tuple[SequenceModel, dict[str, Any]]:
    """Load the model saved by a run: ``DIR/model.npz`` or ``DIR/checkpoint.npz``.

    From a checkpoint the best parameters so far are taken (the current ones
    when it holds none).

    Args:
        path: the file.

    Returns:
        ``(model, info)``: the model with the saved parameters, and
        ``{"config": dict, "epoch": int, "params": "best" | "current"}``.

    Raises:
        CheckpointError: the file is missing, unreadable or not a run's file.
        ValueError: the parameters do not fit the model the configuration
            describes (naming the key and both shapes).
    """
    ck = load_checkpoint(path)
    model = model_from_checkpoint(ck, where=str(path))
    extra = ck.extra or {}
    is_model = extra.get("kind") == "model"
    which = "best" if ck.best_params is not None or is_model else "current"
    params = ck.best_params if ck.best_params is not None else ck.params
    model.load_state_dict(params, where=str(path))
    epoch = ck.epoch
    if ck.best_params is not None and isinstance(extra.get("best_epoch"), int):
        epoch = int(extra["best_epoch"])
    return model, {"config": ck.config, "epoch": epoch, "params": which}


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


class ResumeRefused(ValueError):
    """A resume with an option the checkpoint's run cannot change; the message names
    the option (the command line reports it as a usage error, exit code 2)."""


def check_resume_config(config: TrainConfig, saved: Mapping[str, Any], path: Path) -> None:
    """Raise :class:`ResumeRefused` naming the first option that differs from the
    checkpoint's run (``CheckpointError`` where the stored configuration is broken)."""
    saved = stored_options(saved)
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in RESUMABLE_CHANGES:
            continue
        if f.name not in saved and getattr(config, f.name) == getattr(defaults, f.name):
            continue  # an option added since the checkpoint was written, at its default
        if f.name not in saved:
            raise CheckpointError(f"{path}: the stored configuration lacks option {f.name!r}")
        mine, theirs = config.to_dict()[f.name], saved[f.name]
        if mine != theirs:
            raise ResumeRefused(
                f"option {f.name!r} is {mine!r}, but {path} was trained with {theirs!r}; "
                f"only {', '.join(sorted(RESUMABLE_CHANGES))} may change when resuming"
            )
    if config.lr_schedule == "cosine" and not config.max_updates:
        if config.epochs != saved.get("epochs"):
            raise ResumeRefused(
                f"option 'epochs' is {config.epochs!r}, but {path} was trained with "
                f"{saved.get('epochs')!r}, and the cosine schedule decays over the epochs; "
                "keep the number of epochs when resuming (a run started with "
                "max_updates decays over those updates instead)"
            )


def _split_info(split: Split) -> dict[str, int]:
    return {"sequences": len(split), "steps": split.n_steps}


# --------------------------------------------------------------------------- training


@dataclass
class _State:
    """Everything that evolves during a run and is saved in the checkpoint."""

    epoch: int
    best_epoch: int
    best_valid: float
    best_params: dict[str, Array]
    history: list[dict[str, Any]]
    train_seconds: float
    stop_reason: str | None = None
    updates: int = 0


def _save_checkpoint(
    path: Path,
    config: TrainConfig,
    model: SequenceModel,
    opt: Optimizer,
    rng: np.random.Generator,
    st: _State,
    fingerprint: Mapping[str, Any],
    sched: LRSchedule,
) -> None:
    save_checkpoint(
        path,
        params=model.params,
        optimizer=opt.state_dict(),
        epoch=st.epoch,
        rng_state=rng.bit_generator.state,
        config=config.to_dict(),
        extra={
            "kind": "checkpoint",
            "history": st.history,
            "best_epoch": st.best_epoch,
            "best_valid_nll": st.best_valid if math.isfinite(st.best_valid) else None,
            "train_seconds": st.train_seconds,
            "updates": st.updates,
            "lr_schedule_state": sched.state_dict(),
            "model": model.config(),
            "dataset_file": dict(fingerprint),
        },
        best_params=st.best_params,
        cell=model.describe(),
    )


def _restore(
    path: Path,
    ck: Checkpoint,
    config: TrainConfig,
    model: SequenceModel,
    opt: Optimizer,
    fingerprint: Mapping[str, Any],
    sched: LRSchedule,
) -> tuple[np.random.Generator, _State]:
    extra = ck.extra or {}
    if extra.get("kind") != "checkpoint" or ck.best_params is None:  # a model.npz, say
        raise CheckpointError(f"{path}: not a training checkpoint (no history or best parameters)")
    check_resume_config(config, ck.config, path)
    stored = extra.get("dataset_file")
    if stored != dict(fingerprint) and not config.allow_data_change:
        if isinstance(stored, dict):
            was = f"size {stored.get('size')}, sha256 {str(stored.get('sha256'))[:12]}"
        else:
            was = "no record of it"
        raise CheckpointError(
            f"dataset {config.dataset} changed since {path} was written (it holds {was}; the "
            f"file now has size {fingerprint['size']}, sha256 {fingerprint['sha256'][:12]}); "
            "resume with --allow-data-change to continue on the new data anyway"
        )
    model.validate_state_dict(ck.best_params, where=f"{path} (best parameters)")
    model.load_state_dict(ck.params, where=str(path))
    try:
        opt.load_state_dict(ck.optimizer)
        opt.check_params(model.params)
    except ValueError as exc:
        raise CheckpointError(f"{path}: optimizer state: {exc}") from None
    history = extra.get("history")
    if not isinstance(history, list) or len(history) != ck.epoch:
        raise CheckpointError(f"{path}: the history does not hold {ck.epoch} epoch(s)")
    best_valid = extra.get("best_valid_nll")
    best_epoch = extra.get("best_epoch", 0)
    seconds = extra.get("train_seconds", 0.0)
    if isinstance(best_epoch, bool) or not isinstance(best_epoch, int):
        raise CheckpointError(f"{path}: 'best_epoch' must be an integer, got {best_epoch!r}")
    if not 0 <= best_epoch <= ck.epoch:
        raise CheckpointError(f"{path}: 'best_epoch' {best_epoch} is outside 0..{ck.epoch}")
    for key, value in (("best_valid_nll", best_valid), ("train_seconds", seconds)):
        if value is None and key == "best_valid_nll":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise CheckpointError(f"{path}: {key!r} must be a number >= 0, got {value!r}")
    for record in history:
        if not isinstance(record, dict) or not all(
            isinstance(record.get(k), int | float) and not isinstance(record.get(k), bool)
            for k in ("epoch", "train_nll", "valid_nll")
        ):
            raise CheckpointError(f"{path}: a history record is malformed: {str(record)[:80]}")
    st = _State(
        epoch=ck.epoch,
        best_epoch=int(extra.get("best_epoch", 0)),
        best_valid=math.inf if best_valid is None else float(best_valid),
        best_params={k: np.array(v) for k, v in ck.best_params.items()},
        history=history,
        train_seconds=float(extra.get("train_seconds", 0.0)),
    )
    updates = extra.get("updates")
    if updates is None:  # written before update counts were kept: the optimiser's count
        updates = opt.t
    if not isinstance(updates, int) or isinstance(updates, bool) or updates < 0:
        raise CheckpointError(f"{path}: bad update count {updates!r}")
    if updates != opt.t:  # each update is one step of the optimiser
        raise CheckpointError(
            f"{path}: the optimizer state has taken {opt.t} step(s), but the run made "
            f"{updates} update(s)"
        )
    st.updates = updates
    state = extra.get("lr_schedule_state")
    if state is not None:
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: bad learning-rate schedule state {state!r}")
        try:
            sched.load_state_dict(state, where=str(path))
        except ValueError as exc:
            raise CheckpointError(str(exc)) from None
    return ck.make_rng(), st


def _metrics(
    config: TrainConfig,
    model: SequenceModel,
    dataset: Dataset,
    st: _State,
    wall: float,
    final: Mapping[str, Mapping[str, Any]] | None,
    status: str | None = None,
) -> dict[str, Any]:
    m: dict[str, Any] = {
        "status": status or ("finished" if final is not None else "running"),
        "config": config.to_dict(),
        "model": {**model.config(), "num_params": model.num_params},
        "dataset": {
            "name": dataset.name,
            **{s: _split_info(dataset.split(s)) for s in ("train", "valid", "test")},
        },
        "epochs": st.history,
        "best_epoch": st.best_epoch,
        "stop_reason": st.stop_reason,
        "train_seconds": st.train_seconds,
        "wall_seconds": wall,
    }
    if final is not None:
        for s in ("train", "valid", "test"):
            m[f"{s}_nll"] = final[s]["nll"]
            m[f"{s}_frame_accuracy"] = final[s]["frame_accuracy"]
            m[f"{s}_steps"] = final[s]["n_steps"]
    return m


def _column(history: list[dict[str, Any]], key: str) -> list[float]:
    return [math.nan if r.get(key) is None else float(r[key]) for r in history]


def _write_outputs(out: Path, metrics: Mapping[str, Any]) -> None:
    atomic_write_text(out / METRICS_FILE, _json(metrics))
    history = metrics["epochs"]
    epochs = [int(r["epoch"]) for r in history]
    clip = metrics["config"].get("clip", 0.0)
    mean_label = "mean, before clipping" + (f" at {clip:g}" if clip else "")
    svg = learning_curves_svg(
        epochs,
        {
            "train (running, noisy)": [float(r["train_nll"]) for r in history],
            "valid": [float(r["valid_nll"]) for r in history],
        },
        title=f"{metrics['model']['cell']} H={metrics['model']['hidden_size']} on "
        f"{metrics['dataset']['name']}",
        marker_epoch=int(metrics["best_epoch"]) if metrics["best_epoch"] > 0 else None,
        panels={
            "learning rate": {"lr (last update)": _column(history, "lr")},
            "gradient norm": {
                mean_label: _column(history, "grad_norm"),
                "max": _column(history, "grad_norm_max"),
            },
        },
    )
    write_svg(out / SVG_FILE, svg)


DEFAULT_OUT = TrainConfig().out
"""The default ``out`` template: a run that keeps it gets a ``-2``, ``-3``, ... folder
when the default one already holds a run."""
MAX_SUFFIX = 1000

TRAIN_PADDED_STEPS = 1 << 18
"""The most padded steps ``T * B`` of one training batch: a batch is closed early
(``models.data.batches``) rather than pad short pieces to a very long one. 262,144
steps: a batch of 8 pieces up to 32,768 steps each; far above every benchmark here."""


def dataset_fingerprint(name: str) -> dict[str, Any]:
    """``{"sha256": hex, "size": bytes}`` of the file a dataset name or path refers to.

    Raises:
        DataError: the file cannot be read (``models.io.FileError`` is one).
    """
    if name in EMBEDDED_DATASETS:
        ref = resources.files("models.data.datasets").joinpath(f"{name}.npz")
        with resources.as_file(ref) as path:
            digest, size = content_hash(path, "dataset")
    else:
        try:
            digest, size = content_hash(name, "dataset")
        except FileError as exc:
            raise DataError(str(exc)) from None
    return {"sha256": digest, "size": size}


def _holds_run(folder: Path) -> list[str]:
    return [f for f in RUN_FILES if (folder / f).exists()]


def _run_files_state(folder: Path) -> dict[str, tuple[int, int, int]]:
    """``{name: (inode, size, mtime_ns)}`` of the run's files in ``folder``: whether a
    run wrote (or removed) any of them shows as a change."""
    state: dict[str, tuple[int, int, int]] = {}
    for name in RUN_FILES:
        with contextlib.suppress(OSError):
            st = os.stat(folder / name)
            state[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return state


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those created, deepest last."""
    missing: list[Path] = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def remove_unused_folders(created: list[Path]) -> None:
    """Remove the folders a failed run created, if it wrote nothing in them.

    Call it holding the run folder's lock (``created[-1]`` is the run folder).
    Only the lock file may be there; a folder that holds anything else, and
    every folder that existed before the run, is left alone.
    """
    if not created:
        return
    run = created[-1]
    with contextlib.suppress(OSError):
        if {e.name for e in os.scandir(run)} <= {LOCK_FILE}:
            (run / LOCK_FILE).unlink(missing_ok=True)
    for folder in reversed(created):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            return


def claim_run_folder(
    out: Path, *, resume: bool, overwrite: bool, auto_suffix: bool
) -> tuple[Path, RunLock, list[Path]]:
    """Lock the run folder (creating it) and check that this run may write there.

    A new run refuses a folder holding any file of :data:`RUN_FILES` unless
    ``overwrite``; with ``auto_suffix`` it moves on to ``OUT-2``, ``OUT-3``, ...
    instead. Stale temporaries of a killed writer are removed once the lock is
    held.

    Returns:
        ``(folder, lock, created)``: ``created`` lists the folders this call
        made (the run folder last; empty when it existed), for
        :func:`remove_unused_folders` should the run fail before writing
        anything. The caller releases the lock.

    Raises:
        CheckpointError: the folder holds a run (new run), or no checkpoint
            (``resume``).
        FolderBusyError: another process holds the folder's lock.
        OSError: the folder cannot be created.
    """
    candidates = [out]
    if auto_suffix:
        candidates += [out.with_name(f"{out.name}-{k}") for k in range(2, MAX_SUFFIX)]
    for folder in candidates:
        if os.path.lexists(folder) and not folder.is_dir():
            raise CheckpointError(
                f"--out {folder}: exists and is not a folder; a run writes its files into a "
                "folder (a new name, or an existing folder)"
            )
        if resume and not (folder / CHECKPOINT_FILE).is_file():
            raise CheckpointError(f"{folder / CHECKPOINT_FILE}: no such checkpoint file")
        if auto_suffix and _holds_run(folder):
            continue
        created = _make_folders(folder)
        lock = RunLock(folder)
        try:
            lock.acquire()
        except FolderBusyError:
            if auto_suffix:
                continue
            raise
        except BaseException:
            remove_unused_folders(created)
            raise
        held = _holds_run(folder)
        if resume or overwrite or not held:
            clean_stale_temporaries(folder)
            return folder, lock, created
        lock.release(discard=True)  # refused: no lock file of ours left behind
        if not auto_suffix:
            raise CheckpointError(
                f"{folder} already holds a run ({', '.join(held)}); continue it with --resume "
                "(resume=True), or pass --overwrite (overwrite=True), or choose another --out"
            )
    raise CheckpointError(f"{out} and {MAX_SUFFIX - 2} suffixed folders all hold runs")


def _epoch_held(ckpt: Path, saved_epoch: int) -> int:
    """The epoch the checkpoint on disk holds: a signal between its rename and the
    loop's record of it would otherwise name the epoch before."""
    try:
        return load_checkpoint(ckpt).epoch
    except (CheckpointError, OSError):
        return saved_epoch


def _final_status(
    out: Path,
    config: TrainConfig,
    model: SequenceModel,
    dataset: Dataset,
    st: _State,
    wall0: float,
    status: str,
    error: BaseException | None = None,
) -> None:
    """Record how a run ended in ``metrics.json`` (best effort: the exception that
    ended the run is what the caller reports)."""
    metrics = _metrics(config, model, dataset, st, time.perf_counter() - wall0, None, status)
    if error is not None:
        metrics["error"] = " ".join(f"{type(error).__name__}: {error}".split())
    with contextlib.suppress(Exception):
        _write_outputs(out, metrics)


def train(config: TrainConfig, *, reporter: Reporter | None = None) -> TrainResult:
    """Train a ``SequenceModel`` as ``config`` says (see the module docstring).

    Args:
        config: the options; ``out`` may hold ``{...}`` fields.
        reporter: receives progress events; default a ``ConsoleReporter`` on
            stderr (live line when it is a terminal and ``config.progress``).

    BLAS runs with ``config.blas_threads`` threads meanwhile
    (``minigrad.threads.blas_threads``; one by default, the fastest for the
    small products of a recurrent step), from Python as from the command line.

    Returns:
        The ``TrainResult`` (metrics also written to ``DIR/metrics.json``).

    Raises:
        ValueError: an invalid option, or an option that differs from the
            checkpoint being resumed (naming it).
        DataError: the dataset cannot be loaded.
        CheckpointError: resuming from a missing or bad checkpoint, or
            starting a new run in a directory that holds one (without
            ``overwrite``).
        NonFiniteError: a NaN or infinity appeared (naming epoch, batch,
            node and time step); the last good checkpoint is kept.
        TrainingInterrupted: Ctrl-C; the checkpoint of the last completed
            epoch is on disk.
        OSError: a file cannot be written.
    """
    config = config.validate().check_training_batch()
    with blas_threads(config.blas_threads):
        return _train(config, reporter)


def _train(config: TrainConfig, reporter: Reporter | None) -> TrainResult:
    wall0 = time.perf_counter()
    config = config.validate()
    auto_suffix = config.out == DEFAULT_OUT and not config.resume and not config.overwrite
    config = config.resolved()
    if reporter is None:
        reporter = ConsoleReporter(live=None if config.progress else False)
    dataset = load_dataset(config.dataset)
    fingerprint = dataset_fingerprint(config.dataset)
    for s in ("train", "valid", "test"):
        if len(dataset.split(s)) == 0 or dataset.split(s).n_steps == 0:
            raise ValueError(f"dataset {config.dataset!r}: the {s} split has no time steps")
    opt = make_optimizer(
        config.optimizer, config.lr, momentum=config.momentum, ema_decay=config.ema_decay
    )
    wanted = Path(config.out)
    out, lock, created = claim_run_folder(
        wanted, resume=config.resume, overwrite=config.overwrite, auto_suffix=auto_suffix
    )
    before = _run_files_state(out)
    changed = True
    try:
        if out != wanted:
            config = replace(config, out=str(out))
            reporter.message(f"{wanted} already holds a run; this run goes to {out}")
        return _train_locked(config, dataset, fingerprint, opt, reporter, wall0)
    except BaseException:
        # a run that failed before writing anything leaves no empty folder behind,
        # and a run refused in a folder (--resume with other options, ...) no lock
        # file of its own
        remove_unused_folders(created)
        changed = _run_files_state(out) != before
        raise
    finally:
        lock.release(discard=not changed)


def _train_locked(
    config: TrainConfig,
    dataset: Dataset,
    fingerprint: Mapping[str, Any],
    opt: Optimizer,
    reporter: Reporter,
    wall0: float,
) -> TrainResult:
    """The run itself, with the run folder ``config.out`` locked by the caller."""
    out = Path(config.out)
    ckpt = out / CHECKPOINT_FILE
    train_split = dataset.train
    # in the split's order; an epoch's shuffled order may close more batches early
    # where a piece is very long (TRAIN_PADDED_STEPS)
    n_batches = len(
        batch_groups(train_split, config.batch_size, max_padded_steps=TRAIN_PADDED_STEPS)
    )
    mean_batch_steps = train_split.n_steps / max(n_batches, 1)
    sched = _schedule(config, n_batches, mean_batch_steps)
    if not (math.isfinite(sched.lr) and sched.lr > 0):
        raise ValueError(
            f"options 'lr' and 'lr_scaling': {config.lr!r} at {config.lr_reference_steps} "
            f"steps per batch, {config.lr_scaling} scaling to {mean_batch_steps:.6g} real "
            f"steps per batch, gives the rate {sched.lr!r}; a rate must be a positive "
            "finite number"
        )
    if config.resume:
        # the model comes from the checkpoint's cell description: nothing is imported
        ck = load_checkpoint(ckpt)
        model = model_from_checkpoint(ck, where=str(ckpt))
        rng, st = _restore(ckpt, ck, config, model, opt, fingerprint, sched)
        reporter.message(f"resuming {ckpt} after epoch {st.epoch}")
    else:
        for name in RUN_FILES:  # an overwritten run's files are stale
            (out / name).unlink(missing_ok=True)
        model = _make_model(config)
        rng = _run_rng(config.seed)
        st = _State(0, 0, math.inf, model.state_dict(), [], 0.0)

    saved_epoch = st.epoch
    # From the first checkpoint on, however the run ends, metrics.json says how: the
    # first checkpoint is written inside this block, so no signal can land between
    # it and the handlers below (a checkpoint without a metrics.json status).
    try:
        if not config.resume:
            _save_checkpoint(ckpt, config, model, opt, rng, st, fingerprint, sched)
            # status "running" at once: even a kill -9 before the first epoch ends
            # leaves a checkpoint with its metrics.json
            _write_outputs(
                out, _metrics(config, model, dataset, st, time.perf_counter() - wall0, None)
            )
        reporter.start(config, n_batches, st.epoch + 1)
        scaling = (
            f"{config.lr:g} at {config.lr_reference_steps} steps per batch, "
            f"{config.lr_scaling} scaling to {mean_batch_steps:,.0f} real steps per batch"
            if config.lr_scaling != "none"
            else "no scaling"
        )
        if config.momentum > 0:
            momentum = f", momentum {config.momentum!r}"
        elif config.optimizer == "sgd":
            momentum = ", plain SGD (no momentum; --momentum 0.9 for the heavy ball)"
        else:
            momentum = ""
        average = (
            f"; validating a moving average of the parameters (decay {config.ema_decay!r})"
            if config.ema_decay > 0
            else ""
        )
        reporter.message(
            f"learning rate {sched.lr:.4g} ({scaling}), {config.lr_schedule} schedule"
            f"{momentum}{average}"
        )
        st.stop_reason = None
        while True:
            if st.epoch >= config.epochs:
                st.stop_reason = "max_epochs"
                break
            if config.patience and st.epoch - st.best_epoch >= config.patience:
                st.stop_reason = "early_stopping"
                break
            if config.max_train_seconds and st.train_seconds >= config.max_train_seconds:
                st.stop_reason = "time_limit"
                break
            if config.max_updates and st.updates >= config.max_updates:
                st.stop_reason = "max_updates"
                break
            epoch = st.epoch + 1
            t0 = time.perf_counter()
            total, steps = 0.0, 0
            norms: list[float] = []
            lr_t = opt.lr
            groups = batch_groups(
                train_split, config.batch_size, rng=rng, max_padded_steps=TRAIN_PADDED_STEPS
            )
            n_batches = len(groups)
            for i, idx in enumerate(groups, 1):
                batch = make_batch(train_split, idx, np.uint8)
                lr_t = sched.rate(st.updates, epoch)
                opt.lr = lr_t
                params = (
                    add_weight_noise(model.params, config.weight_noise, rng)
                    if config.weight_noise > 0
                    else model.params
                )
                try:
                    nll, grads = model.loss_and_grads(
                        batch, params, 1.0 / batch.n_steps, noise_rng=rng
                    )
                except NonFiniteError as exc:
                    raise NonFiniteError(
                        f"epoch {epoch}, batch {i}/{n_batches}: {exc}; the last good "
                        f"checkpoint is {ckpt} (epoch {saved_epoch})",
                        node=exc.node,
                        step=exc.step,
                    ) from None
                with np.errstate(over="ignore", invalid="ignore"):
                    if config.clip > 0:
                        norms.append(clip_grad_norm(grads, config.clip))
                    else:
                        norms.append(global_norm(grads))
                    # loss_and_grads has checked the gradients already
                    opt.step(model.params, grads, check_finite=False)
                    if config.weight_decay > 0:
                        decay_weights(model.params, 1.0 - lr_t * config.weight_decay)
                st.updates += 1
                total += nll
                steps += batch.n_steps
                elapsed = time.perf_counter() - t0
                frac = i / n_batches
                per_epoch = st.train_seconds / st.epoch if st.epoch else elapsed / frac
                left = (1.0 - frac) * per_epoch + (config.epochs - epoch) * per_epoch
                reporter.batch(epoch, i, n_batches, total / steps, steps / max(elapsed, 1e-9), left)
                # a long batch goes before the next one is made, not after
                del batch, grads
                if config.max_updates and st.updates >= config.max_updates:
                    break
            if not math.isfinite(total):  # each batch was finite, their sum overflowed
                raise NonFiniteError(
                    f"epoch {epoch}: the training NLL overflowed (its sum over the epoch's "
                    f"batches is {total}); the last good checkpoint is {ckpt} (epoch "
                    f"{saved_epoch})"
                )
            bad = [k for k, v in model.params.items() if not np.all(np.isfinite(v))]
            if bad:
                raise NonFiniteError(
                    f"epoch {epoch}, after the last batch: parameter(s) {bad} are not finite; "
                    f"the last good checkpoint is {ckpt} (epoch {saved_epoch})"
                )
            # with a parameter average, the average is what is scored and kept
            scored = opt.averaged(model.params) if config.ema_decay > 0 else None
            try:
                valid = model.evaluate(dataset.valid, config.eval_batch_size, params=scored)
            except NonFiniteError as exc:
                raise NonFiniteError(
                    f"epoch {epoch}, validation: {exc}; the last good checkpoint is {ckpt} "
                    f"(epoch {saved_epoch})",
                    node=exc.node,
                    step=exc.step,
                ) from None
            seconds = time.perf_counter() - t0
            st.epoch = epoch
            st.train_seconds += seconds
            record = {
                "epoch": epoch,
                "train_nll": total / steps,
                "valid_nll": valid["nll"],
                "valid_frame_accuracy": valid["frame_accuracy"],
                "seconds": seconds,
                "lr": lr_t,
                "grad_norm": _finite_or_none(sum(norms) / len(norms)),
                "grad_norm_max": _finite_or_none(max(norms)),
                "updates": st.updates,
            }
            st.history.append(record)
            if valid["nll"] < st.best_valid:
                st.best_valid = float(valid["nll"])
                st.best_epoch = epoch
                st.best_params = model.state_dict() if scored is None else scored
            if sched.end_epoch(epoch, st.best_epoch):
                reporter.message(
                    f"epoch {epoch}: no better validation NLL for "
                    f"{config.lr_plateau_patience} epochs; learning rate now "
                    f"{sched.rate(st.updates, epoch + 1):.3g}"
                )
            _save_checkpoint(ckpt, config, model, opt, rng, st, fingerprint, sched)
            saved_epoch = epoch
            _write_outputs(
                out, _metrics(config, model, dataset, st, time.perf_counter() - wall0, None)
            )
            reporter.epoch(record, st.best_epoch, config.epochs)

        reasons = {
            "max_epochs": f"reached {config.epochs} epoch{'s' if config.epochs != 1 else ''}",
            "early_stopping": f"no improvement for {config.patience} epochs",
            "time_limit": f"training time limit of {config.max_train_seconds:g}s reached",
            "max_updates": f"reached {config.max_updates} updates",
        }
        reporter.message(
            f"stopped: {reasons[st.stop_reason]}; best epoch {st.best_epoch} "
            f"(valid {nll_text(st.best_valid)})"
        )
        if st.best_epoch > 0:
            model.load_state_dict(st.best_params)
        final = {
            s: model.evaluate(dataset.split(s), config.eval_batch_size)
            for s in ("train", "valid", "test")
        }
        save_checkpoint(
            out / MODEL_FILE,
            params=model.params,
            optimizer={},
            epoch=st.best_epoch,
            rng_state=rng.bit_generator.state,
            config=config.to_dict(),
            extra={
                "kind": "model",
                "best_epoch": st.best_epoch,
                "model": model.config(),
                "test_nll": final["test"]["nll"],
                "valid_nll": final["valid"]["nll"],
            },
            cell=model.describe(),
        )
        metrics = _metrics(config, model, dataset, st, time.perf_counter() - wall0, final)
        _write_outputs(out, metrics)
    except KeyboardInterrupt as exc:
        if not ckpt.is_file():
            # stopped inside the first checkpoint's write: no run to resume, no
            # file of a run left (the caller removes a folder the run created)
            raise
        _final_status(out, config, model, dataset, st, wall0, "interrupted")
        raise TrainingInterrupted(
            ckpt, _epoch_held(ckpt, saved_epoch), terminated=isinstance(exc, Terminated)
        ) from None
    except BaseException as exc:
        if ckpt.is_file():
            _final_status(out, config, model, dataset, st, wall0, "failed", exc)
        raise
    return TrainResult(
        out=out,
        metrics=metrics,
        model=model,
        files={
            "checkpoint": ckpt,
            "model": out / MODEL_FILE,
            "metrics": out / METRICS_FILE,
            "curves": out / SVG_FILE,
        },
    )
