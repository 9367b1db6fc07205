"""The options of a training run (``TrainConfig``) and their checks."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from minigrad.cell import MAX_ELEMENTS
from minigrad.errors import ShapeError
from minigrad.threads import DEFAULT_BLAS_THREADS
from models.cells.fragment import INITS, Fragment
from models.cells.registry import CELLS, is_known_cell, resolve_cell
from models.cells.stack import param_count
from models.data.dataset import EMBEDDED_DATASETS, N_PITCHES
from models.nets.limits import (
    MAX_HIDDEN,
    MAX_LAYERS,
    MAX_PARAMS,
    check_batch_units,
    lstm_param_count,
)
from models.train.schedule import LR_SCALINGS, SCHEDULES

CHECKPOINT_FILE = "checkpoint.npz"
MODEL_FILE = "model.npz"
METRICS_FILE = "metrics.json"
SVG_FILE = "curves.svg"
RUN_FILES = (CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE, SVG_FILE)
"""Every file a run writes into its folder: a folder holding any of them holds a run."""
MAX_BLAS_THREADS = 256
"""The most BLAS threads a run may ask for (``blas_threads``): the same bound on every
machine, so a run's stored configuration resumes anywhere; more threads than cores
only slow a recurrent network down."""
OUT_FIELDS = ("dataset", "cell", "hidden", "layers", "seed")
"""The fields an ``out`` template may name in braces."""

OPTIMIZERS = ("rmsprop", "adam", "sgd")
DTYPES = ("float32", "float64")

RESUMABLE_CHANGES = frozenset(
    {
        "epochs",
        "patience",
        "max_train_seconds",
        "out",
        "resume",
        "overwrite",
        "progress",
        "allow_data_change",
        "blas_threads",
    }
)
"""Options that may differ between a checkpoint's run and the run resuming it."""


OPTIONS_BEFORE: dict[str, Any] = {
    "lr_schedule": "constant",
    "lr_scaling": "none",
    "lr_reference_steps": 512,
    "batch_size": 8,
    "ema_decay": 0.0,
}
"""What a stored configuration (a checkpoint's, a run's ``metrics.json``, a sweep's
``results.json``) written before an option existed, or without an option it left
at its default, meant by its absence, for the options whose default is not what
the code of that time did, or may not stay so: such a run trained at ``lr``
itself, with a constant rate, in batches of 8, without a parameter average.
Every option added to :class:`TrainConfig` belongs here, with what the code
did before it (``tests/test_recipe.py`` checks), so that stored runs and sweep
folders written before it go on."""

MAX_REFERENCE_STEPS = 1_000_000_000
"""The largest ``lr_reference_steps``."""


SGD_MOMENTUM_BEFORE = 0.9
"""The momentum of ``optimizer = "sgd"`` before the ``momentum`` option existed; the
other optimisers had none (Adam's first moment is its own)."""


def stored_options(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A stored configuration with the options it predates filled in as
    :data:`OPTIONS_BEFORE` says (the options it holds are kept), and a missing
    ``momentum`` as the optimiser of that time had it (:data:`SGD_MOMENTUM_BEFORE`
    for SGD, 0 for the others)."""
    before = dict(OPTIONS_BEFORE)
    before["momentum"] = SGD_MOMENTUM_BEFORE if saved.get("optimizer") == "sgd" else 0.0
    return {**before, **saved}


MAX_INT_OPTION = 2**63 - 1
"""The largest size of any integer option (a run's configuration is stored as
64-bit numbers)."""

MAX_WEIGHT_NOISE = 10.0
"""The largest ``weight_noise``: a standard deviation far above any weight's size."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run, with its default.

    The defaults train Chung et al.'s GRU (46 units, 22,766 parameters with the
    88-key read-out) on the embedded chorales and finish, early stopping
    included, in well under three minutes on a quiet two-core machine.

    Args:
        dataset: an embedded dataset name (``"bach_chorales"``) or the path of
            a ``.npz`` or original ``.pickle`` dataset.
        cell: a cell name (``"gru"``, ``"gru_reset_after"``, ``"lstm"``,
            ``"tanh"``, ``"mgu"``, or one registered with
            ``models.cells.register_cell`` or an entry point), a
            ``module:function`` spec, or a fragment function itself;
            ``to_dict`` writes a function as its name or ``module:qualname``.
        hidden: H, the state size of every layer, >= 1.
        layers: L, the number of stacked layers, >= 1.
        init: ``"default"`` or ``"orthogonal"`` (``models.cells``).
        epochs: the largest number of epochs, >= 1.
        batch_size: sequences per training batch, >= 1.
        optimizer: ``"rmsprop"``, ``"adam"`` or ``"sgd"``.
        momentum: momentum of the update's velocity, in ``[0, 1)``, for
            ``"rmsprop"`` (``d <- momentum * d - lr * step``, ``w <- w + d``, as in Graves 2013)
            and ``"sgd"`` (heavy ball); 0 for none. Must be 0 with ``"adam"``,
            whose first-moment average (``beta1 = 0.9``) is its own.
        lr: learning rate, > 0: the rate of a training batch of
            ``lr_reference_steps`` real time steps, scaled to the data set's
            batches by ``lr_scaling`` (the default ``"sqrt"``; ``"none"`` trains at
            ``lr`` itself).
        clip: largest global gradient norm; 0 disables clipping.
        weight_noise: standard deviation of the Gaussian weight noise; 0 disables it.
        patience: stop when the validation NLL has not improved for this many
            epochs; 0 disables early stopping.
        seed: seed of the initial parameters, the shuffling and the noise, >= 0.
        dtype: ``"float32"`` or ``"float64"``.
        out: the run directory; ``{dataset}``, ``{cell}``, ``{hidden}``,
            ``{layers}`` and ``{seed}`` are replaced by the options' values
            (``{dataset}`` by the name or file stem).
        resume: continue the run saved in ``out/checkpoint.npz``.
        overwrite: allow starting a new run in a directory that holds one.
        progress: a live progress line when stderr is a terminal.
        max_train_seconds: stop after the epoch during which this much training
            time has passed (counted over resumed runs too); 0 for no limit.
            Runs stopped by time are not reproducible across machines.
        eval_batch_size: sequences per batch when scoring a split, >= 1.
        max_updates: stop after this many parameter updates (counted over
            resumed runs too; the epoch in which the budget runs out ends
            there, and is validated and recorded); 0 for no limit.
        lr_schedule: ``"constant"``, ``"cosine"``, ``"step"`` or ``"plateau"``
            (``models.train.schedule``).
        warmup_updates: linear learning-rate warm-up over this many updates; 0 for none.
        lr_scaling: how the rate follows the data set's batches
            (``models.train.schedule.scaled_lr``): ``"none"`` trains at ``lr``;
            ``"sqrt"`` and ``"linear"`` treat ``lr`` (and ``lr_min``) as the rate
            of a batch of ``lr_reference_steps`` real time steps and scale it by
            the square root, or the ratio, of the mean real steps per training
            batch over ``lr_reference_steps``.
        lr_reference_steps: the batch size, in real time steps, at which ``lr``
            applies under ``lr_scaling``, >= 1.
        lr_min: the floor of the decaying schedules, >= 0.
        lr_decay: the factor of ``"step"`` and ``"plateau"``, in (0, 1).
        lr_step_epochs: the period of ``"step"`` in epochs, >= 1.
        lr_plateau_patience: epochs without a better validation NLL before
            ``"plateau"`` multiplies the rate by ``lr_decay``, >= 1.
        weight_decay: decoupled weight decay (AdamW style): after each update
            every weight matrix is multiplied by ``1 - lr_t * weight_decay``
            (``lr_t`` the update's learning rate); biases and other vectors are
            not decayed; 0 disables it.
        ema_decay: decay per update, in ``[0, 1)``, of an exponential moving
            average of the parameters (``models.train.optim.Optimizer``):
            validation, early stopping, the best parameters and ``model.npz``
            use the average instead of the parameters being trained, which go
            on unchanged; it weighs about the last ``1 / (1 - ema_decay)``
            updates; 0 disables it.
        dropout: variational dropout rate on every non-recurrent connection
            (each layer's input and the read-out's input), one mask per
            sequence; 0 disables it.
        recurrent_dropout: variational dropout rate on the recurrent
            connections (each state where it enters the next step's
            computation, ``minigrad.noise.recurrent_dropout``); 0 disables it.
        zoneout: probability that a unit of a state keeps its previous value
            at a step (Krueger et al. 2017); 0 disables it.
        blas_threads: BLAS threads while training (``minigrad.threads``); 1 is
            fastest for the small products of a recurrent step; 0 leaves BLAS
            as it is.
    """

    dataset: str = "bach_chorales"
    cell: str | Fragment = "gru"
    hidden: int = 46
    layers: int = 1
    init: str = "default"
    epochs: int = 200
    batch_size: int = 2
    optimizer: str = "rmsprop"
    momentum: float = 0.0
    lr: float = 3e-3
    clip: float = 1.0
    weight_noise: float = 0.075
    patience: int = 15
    seed: int = 0
    dtype: str = "float64"
    out: str = "runs/{dataset}-{cell}-h{hidden}-s{seed}"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    max_train_seconds: float = 0.0
    eval_batch_size: int = 16
    allow_data_change: bool = False
    max_updates: int = 0
    lr_schedule: str = "cosine"
    warmup_updates: int = 0
    lr_scaling: str = "sqrt"
    lr_reference_steps: int = 512
    lr_min: float = 0.0
    lr_decay: float = 0.5
    lr_step_epochs: int = 50
    lr_plateau_patience: int = 5
    weight_decay: float = 0.0
    ema_decay: float = 0.0
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    blas_threads: int = DEFAULT_BLAS_THREADS

    def check_training_batch(self) -> TrainConfig:
        """Refuse a training batch wider than ``models.nets.limits.MAX_BATCH_UNITS``
        (``batch_size * hidden * layers``): checked before training, not when a stored
        configuration is read (a model is scored and sampled in batches of its own).

        Returns:
            ``self``.

        Raises:
            ValueError: naming the three options and the largest batch size.
        """
        try:
            check_batch_units(self.batch_size, self.hidden, self.layers, N_PITCHES)
        except ValueError as exc:
            raise ValueError(f"options 'batch_size', 'hidden' and 'layers': {exc}") from None
        return self

    def validate(self) -> TrainConfig:
        """Check every option; return the configuration itself.

        Raises:
            ValueError: one line naming the option at fault and the valid values.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            want = _FIELD_TYPES[f.name]
            if f.name != "cell" and not _type_ok(value, want):
                raise ValueError(
                    f"option {f.name!r}: expected {_TYPE_NAMES[want]}, got {_value_repr(value)}"
                )
        _check_cell(self.cell)
        choices = {
            "init": INITS,
            "optimizer": OPTIMIZERS,
            "dtype": DTYPES,
            "lr_schedule": SCHEDULES,
            "lr_scaling": tuple(LR_SCALINGS),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"option {name!r}: unknown value {getattr(self, name)!r}; valid: "
                    + ", ".join(valid)
                )
        for name in (
            "hidden",
            "layers",
            "epochs",
            "batch_size",
            "eval_batch_size",
            "lr_step_epochs",
            "lr_plateau_patience",
            "lr_reference_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"option {name!r}: must be >= 1, got {_value_repr(getattr(self, name))}"
                )
        for name, most in (
            ("hidden", MAX_HIDDEN),
            ("layers", MAX_LAYERS),
            ("lr_reference_steps", MAX_REFERENCE_STEPS),
        ):
            if getattr(self, name) > most:
                raise ValueError(
                    f"option {name!r}: must be <= {most}, got {_value_repr(getattr(self, name))}"
                )
        n_params = lstm_param_count(N_PITCHES, self.hidden, self.layers, N_PITCHES)
        if n_params > MAX_PARAMS:
            raise ValueError(self._too_large(n_params))
        for name in ("patience", "seed", "max_updates", "warmup_updates", "blas_threads"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"option {name!r}: must be >= 0, got {_value_repr(getattr(self, name))}"
                )
        if self.blas_threads > MAX_BLAS_THREADS:
            raise ValueError(
                f"option 'blas_threads': must be in 0..{MAX_BLAS_THREADS} (0 leaves BLAS as it "
                f"is; this machine has {os.cpu_count() or 'an unknown number of'} cores), "
                f"got {self.blas_threads}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"option 'lr': must be a positive number, got {self.lr!r}")
        for name in ("clip", "weight_noise", "max_train_seconds", "lr_min", "weight_decay"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"option {name!r}: must be a number >= 0, got {v!r}")
        if self.weight_noise > MAX_WEIGHT_NOISE:
            raise ValueError(
                f"option 'weight_noise': must be at most {MAX_WEIGHT_NOISE:g} (a standard "
                f"deviation added to every weight; the recipe uses 0.075), got "
                f"{self.weight_noise!r}"
            )
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(
                f"option 'momentum': must be a number in [0, 1), got {self.momentum!r}"
            )
        if not (math.isfinite(self.ema_decay) and 0 <= self.ema_decay < 1):
            raise ValueError(
                f"option 'ema_decay': must be a number in [0, 1), got {self.ema_decay!r}"
            )
        if self.momentum > 0 and self.optimizer == "adam":
            raise ValueError(
                "option 'momentum': must be 0 with optimizer 'adam', whose first-moment "
                f"average (beta1 = 0.9) is its own; got {self.momentum!r}"
            )
        for name in ("dropout", "recurrent_dropout", "zoneout"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v < 1):
                raise ValueError(f"option {name!r}: must be a number in [0, 1), got {v!r}")
        if not (math.isfinite(self.lr_decay) and 0 < self.lr_decay < 1):
            raise ValueError(
                f"option 'lr_decay': must be a number in (0, 1), got {self.lr_decay!r}"
            )
        if self.lr_min > self.lr:
            raise ValueError(
                f"option 'lr_min': must not exceed lr ({self.lr!r}), got {self.lr_min!r}"
            )
        if not self.dataset:
            raise ValueError("option 'dataset': must not be empty")
        for f in fields(self):  # the integers that no bound above has limited
            value = getattr(self, f.name)
            if _FIELD_TYPES[f.name] is int and abs(value) > MAX_INT_OPTION:
                raise ValueError(
                    f"option {f.name!r}: must be at most {MAX_INT_OPTION:,} in size, got "
                    f"{_value_repr(value)}"
                )
        self.out_dir()
        return self

    def out_dir(self) -> Path:
        """The run directory: ``out`` with its ``{field}`` names replaced.

        Only the names of :data:`OUT_FIELDS` are replaced, as plain text;
        nothing in the template is evaluated (no attribute access, no format
        specification).

        Raises:
            ValueError: for an unknown field or a stray brace.
        """
        stem = Path(self.dataset).stem if self.dataset not in ("",) else self.dataset
        values = {
            "dataset": stem,
            "cell": self.cell_label(),
            "hidden": str(self.hidden),
            "layers": str(self.layers),
            "seed": str(self.seed),
        }
        text = fill_template(self.out, values, "option 'out'")
        if not text:
            raise ValueError("option 'out': must not be empty")
        return Path(text)

    def _too_large(self, lstm_params: int) -> str:
        """The message refusing a model above ``MAX_PARAMS``: it names the cell of
        this run and its own count, and says that the limit is counted for an LSTM
        of the same size (``models.nets.limits``), so that a size is accepted or
        refused alike for every cell."""
        label = self.cell_label()
        try:
            own = f"{param_count(self.cell, N_PITCHES, self.hidden, self.layers, N_PITCHES):,}"
        except ShapeError:  # one parameter alone is beyond minigrad.cell.MAX_ELEMENTS
            own = f"more than {MAX_ELEMENTS:,}"
        return (
            f"cell {label!r} with hidden {self.hidden} and {self.layers} layer(s): {own} "
            f"parameters; the limit of {MAX_PARAMS:,} is counted for an LSTM of the same "
            f"size ({lstm_params:,} parameters), the largest built-in cell; choose a smaller "
            "--hidden or --layers"
        )

    def cell_name(self) -> str:
        """The cell's name: as given, or a function's registered name or ``module:qualname``."""
        return self.cell if isinstance(self.cell, str) else resolve_cell(self.cell)[0]

    def cell_label(self) -> str:
        """The cell's name as it goes into paths: a spec's function name (``light_gru``)."""
        return self.cell_name().rpartition(":")[2]

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON- and TOML-able dict, in declaration order."""
        out = asdict(self)
        out["cell"] = self.cell_name()
        return out

    def resolved(self) -> TrainConfig:
        """The configuration as a run stores it: ``out`` replaced by the actual
        directory, a dataset file by its absolute path (so that a run can be
        resumed from another working directory), numbers as floats where a
        float is expected."""
        dataset = self.dataset
        if dataset not in EMBEDDED_DATASETS and Path(dataset).exists():
            # absolute, but symlinks kept: the suffix tells the file type
            dataset = os.path.abspath(dataset)
        return replace(
            self,
            out=str(self.out_dir()),
            dataset=dataset,
            lr=float(self.lr),
            clip=float(self.clip),
            weight_noise=float(self.weight_noise),
            momentum=float(self.momentum),
            max_train_seconds=float(self.max_train_seconds),
            lr_min=float(self.lr_min),
            lr_decay=float(self.lr_decay),
            weight_decay=float(self.weight_decay),
            ema_decay=float(self.ema_decay),
            dropout=float(self.dropout),
            recurrent_dropout=float(self.recurrent_dropout),
            zoneout=float(self.zoneout),
        )


CONFIG_HELP: dict[str, str] = {
    "dataset": "embedded dataset name (bach_chorales) or path of a .npz / .pickle dataset",
    "cell": "recurrent cell: a name ('minigrad cells' lists them) or module:function",
    "hidden": "state size H of every layer",
    "layers": "number of stacked recurrent layers",
    "init": "parameter initialisation",
    "epochs": "largest number of epochs",
    "batch_size": "sequences per training batch",
    "optimizer": "optimiser",
    "momentum": "momentum of the rmsprop or sgd update (0: none; adam: must be 0)",
    "lr": "learning rate at lr_reference_steps real steps per batch (see --lr-scaling)",
    "clip": "largest global gradient norm (0: no clipping)",
    "weight_noise": "std of the Gaussian weight noise (0: none)",
    "patience": "early stopping: epochs without a better validation NLL (0: never stop early)",
    "seed": "seed of the initial parameters, the shuffling and the weight noise",
    "dtype": "floating-point type",
    "out": "run directory; {dataset} {cell} {hidden} {layers} {seed} are filled in",
    "resume": "continue the run saved in OUT/checkpoint.npz",
    "overwrite": "start a new run even if OUT already holds one",
    "progress": "live progress line on a terminal (--no-progress: one line per epoch)",
    "max_train_seconds": "stop after the epoch that exceeds this training time (0: no limit)",
    "eval_batch_size": "sequences per batch when scoring a split",
    "allow_data_change": "with --resume: continue even if the dataset file changed",
    "max_updates": "stop after this many parameter updates (0: no limit)",
    "lr_schedule": "learning-rate schedule",
    "warmup_updates": "linear learning-rate warm-up over this many updates (0: none)",
    "lr_scaling": "scale lr (and lr_min) with the mean real time steps per training batch: "
    "sqrt or linear in (steps / lr_reference_steps), or none",
    "lr_reference_steps": "the real time steps per batch at which lr applies under lr_scaling",
    "lr_min": "floor of the cosine, step and plateau schedules",
    "lr_decay": "factor of the step and plateau schedules",
    "lr_step_epochs": "step schedule: multiply the rate by lr_decay every this many epochs",
    "lr_plateau_patience": "plateau schedule: epochs without a better validation NLL "
    "before the rate is multiplied by lr_decay",
    "weight_decay": "decoupled weight decay of the weight matrices, AdamW style (0: none)",
    "ema_decay": "decay per update, in [0, 1), of a moving average of the parameters, which "
    "is validated and kept instead of them (0: none)",
    "dropout": "variational dropout rate on layer inputs and the read-out input (0: none)",
    "recurrent_dropout": "variational dropout rate on the recurrent connections (0: none)",
    "zoneout": "zoneout probability on the states (0: none)",
    "blas_threads": f"BLAS threads while training, at most {MAX_BLAS_THREADS} (0: leave BLAS as "
    "it is)",
}
"""One help line per option of ``TrainConfig``."""

CONFIG_CHOICES: dict[str, tuple[str, ...]] = {
    "init": INITS,
    "optimizer": OPTIMIZERS,
    "dtype": DTYPES,
    "lr_schedule": SCHEDULES,
    "lr_scaling": tuple(LR_SCALINGS),
}
"""The valid values of the options that take a name."""

_FIELD_TYPES: dict[str, type] = {
    "dataset": str,
    "cell": str,
    "hidden": int,
    "layers": int,
    "init": str,
    "epochs": int,
    "batch_size": int,
    "optimizer": str,
    "momentum": float,
    "lr": float,
    "clip": float,
    "weight_noise": float,
    "patience": int,
    "seed": int,
    "dtype": str,
    "out": str,
    "resume": bool,
    "overwrite": bool,
    "progress": bool,
    "max_train_seconds": float,
    "eval_batch_size": int,
    "allow_data_change": bool,
    "max_updates": int,
    "lr_schedule": str,
    "warmup_updates": int,
    "lr_scaling": str,
    "lr_reference_steps": int,
    "lr_min": float,
    "lr_decay": float,
    "lr_step_epochs": int,
    "lr_plateau_patience": int,
    "weight_decay": float,
    "ema_decay": float,
    "dropout": float,
    "recurrent_dropout": float,
    "zoneout": float,
    "blas_threads": int,
}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


_FIELD = re.compile(r"\{([^{}]*)\}")


def fill_template(template: str, values: Mapping[str, str], what: str) -> str:
    """Replace each ``{name}`` of ``template`` by ``values[name]``, as plain text.

    Unlike ``str.format`` nothing is evaluated: ``{dataset.__class__}`` or
    ``{hidden:>99999}`` are unknown fields, not expressions.

    Raises:
        ValueError: naming ``what``, for an unknown field or a stray brace.
    """

    def field(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise ValueError(
                f"{what}: unknown field {{{name}}} in {template!r}; the fields are "
                + ", ".join(f"{{{k}}}" for k in values)
            )
        return values[name]

    text = _FIELD.sub(field, template)
    if "{" in _FIELD.sub("", template) or "}" in _FIELD.sub("", template):
        raise ValueError(f"{what}: stray brace in {template!r}")
    return text


def _check_cell(cell: object) -> None:
    """Raise ValueError unless ``cell`` is a function, a known name or a ``module:function``
    spec (checked by its form only: nothing is imported here)."""
    if callable(cell) and not isinstance(cell, str):
        return
    if not isinstance(cell, str):
        raise ValueError(f"option 'cell': expected a name or a function, got {cell!r}")
    if not is_known_cell(cell):
        raise ValueError(
            f"option 'cell': unknown value {cell!r}; valid: {', '.join(CELLS)}, or a "
            "module:function spec such as mypkg.cells:light_gru"
        )


def _type_ok(value: object, want: type) -> bool:
    if want is bool:
        return isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if want is float:
        if isinstance(value, int) and not isinstance(value, bool):
            try:  # an integer beyond the floats (1e309 and up) is no number for an option
                float(value)
            except OverflowError:
                return False
            return True
        return isinstance(value, float)
    return isinstance(value, want)


def _value_repr(value: object) -> str:
    """``repr(value)``, shortened for an integer of more than 40 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**40:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


def config_from_mapping(
    data: Mapping[str, Any], *, where: str = "configuration", base: TrainConfig | None = None
) -> TrainConfig:
    """Build a ``TrainConfig`` from a mapping of option names (``batch_size`` or ``batch-size``).

    Args:
        data: option name -> value (TOML or JSON types).
        where: the source, named in messages (a file name); empty for none.
        base: the configuration whose values are kept for missing options
            (default: ``TrainConfig()``).

    Returns:
        The checked configuration.

    Raises:
        ValueError: one line naming ``where`` and the key at fault (unknown
            key, wrong type, invalid value).
    """
    names = {f.name for f in fields(TrainConfig)}
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in given:
            raise ValueError(
                f"{where}: option {name!r} is given twice (as {given[name]!r} and {key!r})"
            )
        given[name] = str(key)
        if name not in names:
            raise ValueError(
                f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(names))}"
            )
        want = _FIELD_TYPES[name]
        if not _type_ok(value, want):
            raise ValueError(
                f"{where}: key {key!r} must be {_TYPE_NAMES[want]}, got {_value_repr(value)}"
            )
        values[name] = float(value) if want is float else value
    cfg = replace(base or TrainConfig(), **values)
    try:
        return cfg.validate()
    except ValueError as exc:
        if not where:
            raise
        raise ValueError(f"{where}: {exc}") from None
