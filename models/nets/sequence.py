"""``SequenceModel``: a recurrent network predicting the next frame of a piano roll.

The model is one minigrad ``Cell`` built with ``models.cells.stack``:

* the input ``"x"`` (B, 88): the previous frame (zeros at the first step,
  see ``models.data.Batch``) and the target ``"t"`` (B, 88): the frame to
  predict;
* ``layers`` recurrent layers of one cell type;
* an affine read-out ``logits = h_top V + c_out`` with ``V`` (H, 88) and
  ``c_out`` (88,), one sigmoid unit per piano key;
* the loss ``nll = sigmoid_bce(logits, t)``: at each step and for each row of
  the batch, the negative log-likelihood of the frame in nats,
  ``-sum_k [t_k log p_k + (1 - t_k) log(1 - p_k)]`` with ``p = sigmoid(logits)``;
* the output ``"logits"`` (B, 88);
* optionally dropout, recurrent dropout and zoneout (``dropout``,
  ``recurrent_dropout``, ``zoneout``): noise inputs of the cell
  (``minigrad.noise``) that ``loss_and_grads`` fills with training masks when
  given a generator, and every other method with their evaluation values
  (dropout off, zoneout's expectation), so scoring and sampling are
  deterministic. The dropout of the top layer's output sits before the read-out.

The metric (``evaluate``) is the benchmark's: the sum of that NLL over every
real step of every sequence (each step predicted, the first from the initial
state), divided by the number of real steps; and the frame-level accuracy
``TP / (TP + FP + FN)`` summed over every real frame, a note being predicted
when ``p > 0.5``.

**No padding for the compiler.** The cell is compiled once
(``minigrad.compile``) into a program that runs for any number of steps, so
batches keep their own length; the batch mask marks the steps after each
sequence's end, through which the engine carries the states unchanged.
``pad_batch`` remains as a utility (padding changes no number).

Gradients come from ``minigrad.compile(cell, wrt=params)``: BPTT derived by minigrad from
the nodes' local derivatives, with respect to the parameters only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from minigrad.cell import Cell, CellBuilder, affine, sigmoid_bce
from minigrad.errors import NonFiniteError, ShapeError
from minigrad.init import pytorch_uniform
from minigrad.noise import draw, dropout_value
from minigrad.plan import Run
from minigrad.program import Program, compile, plan_of
from minigrad.serialize import from_json, to_json
from minigrad.types import Array, FloatDType
from models.cells.fragment import INITS, Fragment
from models.cells.registry import resolve_cell
from models.cells.stack import stack
from models.data.batches import Batch, batches
from models.data.dataset import N_PITCHES, Split
from models.nets.base import TIME_MAJOR_HINT, check_state_dict, nonfinite_error
from models.nets.limits import check_model_size

__all__ = [
    "EVAL_PADDED_STEPS",
    "EVAL_SEGMENT",
    "EVAL_UNITS",
    "PAD_MULTIPLE",
    "READOUT",
    "SequenceModel",
    "frame_counts",
    "pad_batch",
]

PAD_MULTIPLE = 16
"""Batches are padded with empty steps up to a multiple of this many steps."""

EVAL_PADDED_STEPS = 32_768
"""The most padded steps ``T * B`` in one batch of :meth:`SequenceModel.evaluate`:
16 sequences of 2,048 steps (the inputs, targets and logits of such a batch take
23 MB each in float64). Longer pieces are scored in smaller batches."""

EVAL_UNITS = 128
"""A model wider than this many units in all (``hidden_size * layers``) scores batches of
fewer padded steps: at most ``EVAL_PADDED_STEPS * EVAL_UNITS / (hidden_size * layers)``,
so that a batch's states take no more memory than a 128-unit model's."""

EVAL_SEGMENT = 8_192
"""The most steps :meth:`SequenceModel.evaluate` runs at once: a longer piece is scored
in segments of this many steps, each starting from the final states of the one before
(which gives the same numbers, up to summation order)."""

READOUT = ("V", "c_out")
"""Names of the read-out weight (H, K) and bias (K,). The bias is not called
``c``: the GRU and MGU fragments name their candidate node ``c`` and a one-layer
LSTM its cell state ``c``."""


def _int_arg(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return int(value)


def _rate_arg(what: str, value: object) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not 0 <= float(value) < 1:  # type: ignore[arg-type]
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _model_dtype(dtype: object) -> np.dtype[np.floating]:
    dt: np.dtype[np.floating] | None
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    assert dt is not None
    return dt


def pad_batch(batch: Batch, multiple: int = PAD_MULTIPLE) -> Batch:
    """Pad a batch with empty steps so that its number of steps is a multiple of ``multiple``.

    Args:
        batch: ``inputs``/``targets`` (T, B, K), ``mask`` (T, B).
        multiple: the step multiple, >= 1.

    Returns:
        A batch with ``inputs``/``targets`` (T', B, K) and ``mask`` (T', B),
        ``T'`` the smallest multiple of ``multiple`` >= T (at least
        ``multiple``), zeros on the added steps; ``lengths`` and ``n_steps``
        unchanged. The batch itself when no step needs to be added.
    """
    T = int(batch.inputs.shape[0])
    target = max(multiple, -(-T // multiple) * multiple)
    if target == T:
        return batch
    extra = target - T

    def grow(a: Array) -> Array:
        pad = np.zeros((extra, *a.shape[1:]), dtype=a.dtype)
        return np.concatenate([a, pad], axis=0)

    return Batch(
        inputs=grow(batch.inputs),
        targets=grow(batch.targets),
        mask=grow(batch.mask),
        lengths=batch.lengths,
        n_steps=batch.n_steps,
    )


def frame_counts(proba: Array, targets: Array, mask: Array) -> tuple[int, int, int]:
    """Count true positives, false positives and false negatives of note predictions.

    A note is predicted when its probability is > 0.5; only real steps count.

    Args:
        proba: (T, B, K) note probabilities.
        targets: (T, B, K) 0/1 frames.
        mask: (T, B), 1 on real steps and 0 on padding.

    Returns:
        ``(TP, FP, FN)`` summed over every real step, row and note.
    """
    real = (np.asarray(mask) != 0)[..., None]
    pred = (proba > 0.5) & real
    truth = (targets != 0) & real
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return tp, fp, fn


def _sigmoid(z: Array) -> Array:
    """Logistic sigmoid without overflow, any shape, dtype kept."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


class SequenceModel:
    """Next-frame prediction on 88-key piano rolls with a stack of recurrent layers.

    Any cell works the same way: a cell fragment (with any number of
    states) under a read-out head. ``SequenceModel.from_description`` builds
    a model from a saved cell description instead (no fragment needed).

    Args:
        cell: a cell name (``"gru"``, ``"gru_reset_after"``, ``"lstm"``,
            ``"tanh"``, ``"mgu"`` or a registered one), a ``module:function``
            spec or a fragment function (``models.cells.resolve_cell``).
        input_size: K, the width of a frame (88 piano keys).
        hidden_size: H, the state size of every layer.
        layers: L >= 1, the number of stacked layers.
        dtype: ``numpy.float32`` or ``numpy.float64`` (parameters and batches).
        seed: int seed (or ``numpy.random.Generator``) of the initial parameters.
        init: ``"default"`` or ``"orthogonal"`` (see ``models.cells``).
        dropout: variational dropout rate on each layer's input and on the
            read-out's input, in [0, 1); 0 for none.
        recurrent_dropout: variational dropout rate on the recurrent
            connections, in [0, 1); 0 for none.
        zoneout: zoneout probability of every state, in [0, 1); 0 for none.

    Attributes:
        cell: the built minigrad ``Cell``.
        params: ``{name: array}``, the current parameters, updated in place
            by optimisers; the read-out ``V`` (H, K) and ``c_out`` (K,) come last.
        readout: the names of the read-out weight and bias, ``("V", "c_out")``.
        states: the names of the carried states, as the cell declares them
            (``"h"``, ``"l0.h"``, ``"l0.c"``, ...), each (B, H).
        cell_type: the cell's name (a registered name or ``module:function``).
        dtype, input_size, hidden_size, layers, init, dropout,
        recurrent_dropout, zoneout: as given.
    """

    def __init__(
        self,
        cell: str | Fragment = "gru",
        input_size: int = N_PITCHES,
        hidden_size: int = 46,
        layers: int = 1,
        dtype: FloatDType | np.dtype[np.floating] | str = np.float64,
        seed: int | np.random.Generator = 0,
        init: str = "default",
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        cell_type, frag = resolve_cell(cell)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(repr(i) for i in INITS)}")
        self.cell_type = cell_type
        self.input_size = _int_arg("input_size", input_size)
        self.hidden_size = _int_arg("hidden_size", hidden_size)
        self.layers = _int_arg("layers", layers)
        check_model_size(self.input_size, self.hidden_size, self.layers, self.input_size)
        self.init = init
        self.dropout = _rate_arg("dropout", dropout)
        self.recurrent_dropout = _rate_arg("recurrent_dropout", recurrent_dropout)
        self.zoneout = _rate_arg("zoneout", zoneout)
        self.dtype: np.dtype[np.floating] = _model_dtype(dtype)
        self.readout: tuple[str, str] = READOUT
        self.cell: Cell = self._build(frag)
        self.states: list[str] = list(self.cell.states)
        self.params: dict[str, Array] = self.cell.init_params(seed)

    @classmethod
    def from_description(
        cls, description: str, config: Mapping[str, Any], *, where: str = "cell description"
    ) -> SequenceModel:
        """The model whose cell a JSON description holds (``minigrad.serialize``), with
        zero parameters (load them with ``load_state_dict``). Imports nothing.

        Args:
            description: ``to_json`` of a ``SequenceModel``'s cell (``describe()``).
            config: ``config()`` of that model: ``cell``, ``hidden_size``,
                ``layers``, ``init`` (``input_size`` and ``dtype`` come from the cell).
            where: the source, named in messages (a file name).

        Raises:
            minigrad.serialize.CellDescriptionError: a malformed description or
                an unknown node type (naming it and how to make it known).
            ValueError: a cell that is not a sequence model's (no input ``x``
                or ``t``, no output ``logits``, no read-out), naming ``where``.
        """
        cell = from_json(description)
        model = cls.__new__(cls)
        need = {"inputs": ("x", "t"), "outputs": ("logits",), "params": READOUT}
        for what, names in need.items():
            missing = [n for n in names if n not in getattr(cell, what)]
            if missing:
                raise ValueError(f"{where}: not a sequence model's cell (no {what} {missing})")
        model.cell_type = str(config.get("cell", cell.name))
        model.input_size = int(cell.inputs["x"].shape[1])
        model.hidden_size = _int_arg("hidden_size", config.get("hidden_size"))
        model.layers = _int_arg("layers", config.get("layers", 1))
        model.init = str(config.get("init", "default"))
        model.dropout = _rate_arg("dropout", config.get("dropout", 0.0))
        model.recurrent_dropout = _rate_arg(
            "recurrent_dropout", config.get("recurrent_dropout", 0.0)
        )
        model.zoneout = _rate_arg("zoneout", config.get("zoneout", 0.0))
        model.dtype = cell.dtype
        model.readout = READOUT
        model.cell = cell
        model.states = list(cell.states)
        model.params = {n: np.zeros(p.shape, dtype=p.dtype) for n, p in cell.params.items()}
        return model

    def describe(self) -> str:
        """The model's cell as a JSON description (``minigrad.serialize.to_json``)."""
        return to_json(self.cell)

    def _build(self, frag: Fragment) -> Cell:
        K, H = self.input_size, self.hidden_size
        b = CellBuilder(f"{self.cell_type}_music", dtype=self.dtype)
        x = b.input("x", K)
        t = b.input("t", K)
        tops = stack(
            b,
            x,
            frag,
            K,
            H,
            self.layers,
            init=self.init,
            dropout=self.dropout,
            recurrent=self.recurrent_dropout,
            zoneout=self.zoneout,
        )
        top = dropout_value(b, tops[-1], H, self.dropout, name="out.drop")
        names = self.readout
        V = b.param(names[0], (H, K), init=pytorch_uniform(H))
        c = b.param(names[1], K, init=pytorch_uniform(H))
        logits = affine(top, V, c, name="logits")
        b.output("logits", logits)
        b.loss(sigmoid_bce(logits, t, name="nll"))
        return b.build()

    def __repr__(self) -> str:
        return (
            f"SequenceModel(cell={self.cell_type!r}, hidden_size={self.hidden_size}, "
            f"layers={self.layers}, dtype={self.dtype.name}, params={self.num_params})"
        )

    @property
    def num_params(self) -> int:
        """The number of scalar parameters."""
        return int(sum(p.size for p in self.params.values()))

    def config(self) -> dict[str, Any]:
        """The constructor arguments that fix the parameter layout, as JSON-able values."""
        return {
            "cell": self.cell_type,
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "layers": self.layers,
            "dtype": self.dtype.name,
            "init": self.init,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "zoneout": self.zoneout,
        }

    # -- parameters -------------------------------------------------------------

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters, ``{name: array of the parameter's shape}``."""
        return {k: v.copy() for k, v in self.params.items()}

    def validate_state_dict(self, d: Mapping[str, object], *, where: str = "") -> dict[str, Array]:
        """Check a state dict against the model without changing the model.

        Args:
            d: ``{name: array}`` with exactly the model's parameter names,
                shapes and dtype.
            where: optional prefix for messages (a file name).

        Returns:
            Copies of the arrays, in the model's parameter order.

        Raises:
            ValueError: naming the key at fault (missing, unexpected, not an
                array, wrong shape or dtype).
        """
        what = f"a {self.cell_type!r} model with hidden size {self.hidden_size}"
        return check_state_dict(self.params, d, where=where, what=what)

    def load_state_dict(self, d: Mapping[str, object], *, where: str = "") -> None:
        """Replace every parameter by a copy of ``d[name]``; on any error the model is unchanged.

        Args:
            d: ``{name: array}`` with exactly the model's parameter names, shapes
                ((H, K) for ``V``, ...) and dtype.
            where: optional prefix for messages (a file name).

        Raises:
            ValueError: naming the key at fault.
        """
        self.params = self.validate_state_dict(d, where=where)

    # -- running ------------------------------------------------------------------

    def plan(self, steps: int = 1) -> Program:
        """The compiled program, differentiating with respect to the parameters; it runs
        for any number of steps (``steps`` is accepted for older callers and ignored)."""
        return compile(self.cell, wrt=self.params)

    def step(
        self, frame: Array, states: Mapping[str, Array] | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Run one time step forward, for generation.

        Args:
            frame: (B, K), the previous frame (zeros before the first).
            states: the states the previous step left (``{name: (B, H)}``,
                names as ``self.states``), or None for the initial ones.

        Returns:
            ``(logits, states)``: the logits (B, K) of the next frame and the
            states this step leaves.
        """
        if np.ndim(frame) != 2 or np.shape(frame)[0] < 1:
            raise ShapeError(
                f"frame must have shape (B, {self.input_size}) with B >= 1, got "
                f"{np.shape(frame)}" + (" (an empty batch)" if np.ndim(frame) == 2 else "")
            )
        x = frame[None]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            inputs = {"x": x, "t": np.zeros_like(x), **self.noise(1, x.shape[1])}
            # the plan of one step, bound once: a step's cost is then the step's numpy
            # calls, not the bookkeeping of a program that runs any T (generation is
            # one step at a time, a million times for a long song)
            run = plan_of(self.cell, 1, wrt=()).forward(self.params, inputs, states)
        return run.outputs["logits"][0], dict(run.states)

    def noise(
        self, steps: int, batch: int, rng: np.random.Generator | None = None
    ) -> dict[str, Array]:
        """The values of the cell's noise inputs (none without dropout or zoneout).

        Args:
            steps: T; batch: B.
            rng: a generator for training masks; None for the evaluation values.

        Returns:
            ``{name: (T, B, H)}`` (``minigrad.noise.draw``).
        """
        return draw(self.cell, steps, batch, rng, training=rng is not None)

    def _inputs(
        self, batch: Batch, rng: np.random.Generator | None = None
    ) -> tuple[Batch, dict[str, Array]]:
        if not isinstance(batch, Batch):
            raise ValueError(f"expected a models.data.Batch, got {type(batch).__name__}")
        K = self.input_size
        for what, arr in (("inputs", batch.inputs), ("targets", batch.targets)):
            if arr.ndim == 3 and 0 in arr.shape[:2]:
                empty = "an empty batch (B = 0)" if arr.shape[1] == 0 else "no time steps (T = 0)"
                raise ShapeError(
                    f"batch.{what} has {empty}: shape {arr.shape}, expected (T, B, {K}); "
                    "give at least one sequence of at least one step"
                )
            if arr.ndim != 3 or arr.shape[2] != K or arr.shape[0] < 1 or arr.shape[1] < 1:
                raise ValueError(f"batch.{what} must have shape (T, B, {K}), got {arr.shape}")
            if arr.dtype != self.dtype and arr.dtype != np.uint8:
                raise ValueError(
                    f"batch.{what} is {arr.dtype}, but the model is {self.dtype.name}: build "
                    f"the batches with dtype=np.{self.dtype.name} (or np.uint8)"
                )
        if batch.targets.shape != batch.inputs.shape or batch.mask.shape != batch.inputs.shape[:2]:
            raise ValueError(
                f"batch: inputs {batch.inputs.shape}, targets {batch.targets.shape} and mask "
                f"{batch.mask.shape} do not agree; expected (T, B, {K}), (T, B, {K}), (T, B)"
                + TIME_MAJOR_HINT
            )
        padded = batch
        mask = padded.mask.astype(self.dtype, copy=False)
        T, B = int(padded.inputs.shape[0]), int(padded.inputs.shape[1])
        return Batch(padded.inputs, padded.targets, mask, padded.lengths, padded.n_steps), {
            "x": padded.inputs,
            "t": padded.targets,
            **self.noise(T, B, rng),
        }

    def _run(
        self,
        batch: Batch,
        params: Mapping[str, Array] | None,
        rng: np.random.Generator | None = None,
        *,
        backward: bool = False,
        states: Mapping[str, Array] | None = None,
    ) -> tuple[Program, Run, Batch]:
        """The forward pass of a batch; ``backward``: whether a backward pass follows
        (scoring passes keep nothing for one); ``states``: initial states (default: the
        cell's)."""
        padded, inputs = self._inputs(batch, rng)
        plan = self.plan(int(padded.inputs.shape[0]))
        p = self.params if params is None else params
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            # a training step needs no outputs: the logits of a long piece would take
            # T * B * 88 * 8 bytes for nothing
            run = plan.forward(
                p, inputs, states, mask=padded.mask, with_outputs=not backward, backward=backward
            )
        return plan, run, padded

    def _nonfinite(
        self, plan: Program, run: Run, params: Mapping[str, Array], what: str
    ) -> NonFiniteError:
        return nonfinite_error(plan, run, params, what)

    def loss_and_grads(
        self,
        batch: Batch,
        params: Mapping[str, Array] | None = None,
        loss_scale: float = 1.0,
        *,
        check_finite: bool = True,
        noise_rng: np.random.Generator | None = None,
    ) -> tuple[float, dict[str, Array]]:
        """The summed NLL of a batch and the gradient of ``loss_scale`` times it.

        Args:
            batch: ``inputs``/``targets`` (T, B, K) and ``mask`` (T, B) of the
                model's dtype (``models.data.batches``), any number of steps
                (one compiled program runs every T).
            params: parameters to use instead of ``self.params`` (e.g. a
                weight-noise copy), ``{name: array of the parameter's shape}``.
            loss_scale: multiplies the loss before differentiation, e.g.
                ``1 / batch.n_steps`` for the mean NLL per step.
            check_finite: raise ``NonFiniteError`` when the loss or a gradient
                is NaN or infinite. numpy's floating-point warnings are silenced
                during the passes either way: non-finite values are found by
                this check instead.
            noise_rng: the generator of the dropout and zoneout masks (training);
                None for their evaluation values. Not used by a model without them.

        Returns:
            ``(nll_sum, grads)``: the NLL in nats summed over every real step
            and row (not scaled), and ``{name: gradient of the parameter's
            shape}`` of ``loss_scale * nll_sum``.

        Raises:
            NonFiniteError: naming the first node and step holding a NaN or an
                infinity (its ``node`` and ``step`` attributes are set).
        """
        p = self.params if params is None else params
        plan, run, _ = self._run(batch, p, noise_rng, backward=True)
        finite = bool(np.isfinite(run.loss))
        if check_finite and not finite:
            raise self._nonfinite(plan, run, p, f"the loss is {run.loss}")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            g = plan.backward(run, loss_scale=loss_scale)
        grads = {k: g.params[k] for k in self.params}
        if check_finite:
            bad = [k for k, v in grads.items() if not np.all(np.isfinite(v))]
            if bad:
                raise self._nonfinite(plan, run, p, f"the gradient of {bad} is not finite")
        return float(run.loss), grads

    def logits(self, batch: Batch, params: Mapping[str, Array] | None = None) -> Array:
        """The read-out logits of every step.

        Args:
            batch: ``inputs``/``targets`` (T, B, K), ``mask`` (T, B).
            params: optional parameters instead of ``self.params``.

        Returns:
            (T, B, K) logits, zeros on padded steps.
        """
        _, run, _ = self._run(batch, params)
        T = int(batch.inputs.shape[0])
        return run.outputs["logits"][:T]

    def predict_proba(self, batch: Batch, params: Mapping[str, Array] | None = None) -> Array:
        """The predicted probability of every note at every step (from the previous frames).

        Args:
            batch: ``inputs``/``targets`` (T, B, K), ``mask`` (T, B); the
                targets do not change the probabilities.
            params: optional parameters instead of ``self.params``.

        Returns:
            (T, B, K) probabilities ``sigmoid(logits)``; 0.5 on padded steps.
        """
        return _sigmoid(self.logits(batch, params))

    def evaluate(
        self,
        split: Split,
        batch_size: int = 64,
        params: Mapping[str, Array] | None = None,
    ) -> dict[str, Any]:
        """The benchmark metrics of a split.

        Args:
            split: the sequences to score (``models.data.Split``).
            batch_size: sequences per forward pass (does not change the numbers
                beyond floating-point summation order); fewer where they are
                long, so that a batch holds at most :data:`EVAL_PADDED_STEPS`
                padded steps.
            params: optional parameters instead of ``self.params``.

        Returns:
            ``{"nll": float, "frame_accuracy": float, "n_steps": int,
            "n_sequences": int}``: ``nll`` is the summed NLL (nats) of every
            real step divided by the number of real steps; ``frame_accuracy``
            is ``TP / (TP + FP + FN)`` over every real frame, a note counting
            as predicted when ``p > 0.5`` (1.0 when there is no note to
            predict and none is predicted).

        Raises:
            ValueError: for an empty split or a bad batch size.
            NonFiniteError: when the loss is not finite.
        """
        if not isinstance(split, Split):
            raise ValueError(f"expected a models.data.Split, got {type(split).__name__}")
        bs = _int_arg("batch_size", batch_size)
        if len(split) == 0 or split.n_steps == 0:
            raise ValueError("cannot evaluate an empty split (no time steps)")
        p = self.params if params is None else params
        total = 0.0
        tp = fp = fn = 0
        n = 0
        # uint8 batches: the program casts them window by window (8 times less
        # memory than float64 inputs and targets for a long piece)
        width = self.hidden_size * self.layers
        most = max(1, EVAL_PADDED_STEPS * EVAL_UNITS // max(width, EVAL_UNITS))
        for batch in batches(split, bs, dtype=np.uint8, max_padded_steps=most):
            n += batch.n_steps
            T = int(batch.inputs.shape[0])
            states: dict[str, Array] | None = None
            # a piece longer than EVAL_SEGMENT steps is scored segment by segment, each
            # starting from the states the one before ended in: the same numbers, with
            # memory that does not grow with the piece
            for s0 in range(0, T, EVAL_SEGMENT):
                s1 = min(T, s0 + EVAL_SEGMENT)
                lengths = np.clip(batch.lengths - s0, 0, s1 - s0)
                part = Batch(
                    batch.inputs[s0:s1],
                    batch.targets[s0:s1],
                    batch.mask[s0:s1],
                    lengths,
                    int(lengths.sum()),
                )
                plan, run, padded = self._run(part, p, states=states)
                if not np.isfinite(run.loss):
                    raise self._nonfinite(plan, run, p, f"the loss is {run.loss}")
                total += run.loss
                states = run.states
                logits = run.outputs["logits"]
                # in slices of steps: a long piece's probabilities and their temporaries
                # would otherwise take several times the logits' memory
                for s in range(0, logits.shape[0], 256):
                    a, b, c = frame_counts(
                        _sigmoid(logits[s : s + 256]),
                        padded.targets[s : s + 256],
                        padded.mask[s : s + 256],
                    )
                    tp, fp, fn = tp + a, fp + b, fn + c
                # let this part and its outputs go before the next one is made
                del part, padded, run, logits
            del batch
        denom = tp + fp + fn
        return {
            "nll": total / n,
            "frame_accuracy": 1.0 if denom == 0 else tp / denom,
            "n_steps": n,
            "n_sequences": len(split),
        }
