"""``RecurrentModel``: a stack of cell fragments with an L2 head, and its array checks.

A model owns a built minigrad ``Cell`` made of

* the input ``"x"`` (B, D) and the target ``"y"`` (B, H) of every step;
* one or more recurrent layers (``models.cells.stack``);
* the loss ``l2_loss(h_top, y)`` at every step, i.e. over a sequence
  ``0.5 * sum_t ||h_t - y_t||^2`` summed over the batch;
* the output ``"h"``: the top layer's new state at every step;

and its parameters ``{name: array}``. Everything is time-major: ``x`` is
(T, B, D), ``y`` and the returned hidden states (T, B, H). The model never
casts: every array given must already have the model's dtype.

Gradients come from ``minigrad.compile(cell)``: BPTT derived by minigrad from the
nodes' local derivatives; nothing here differentiates anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from minigrad.cell import Cell, CellBuilder, l2_loss
from minigrad.errors import NonFiniteError, ShapeError
from minigrad.plan import Run
from minigrad.program import Program, compile
from minigrad.types import Array, FloatDType, format_shape
from models.cells.fragment import INITS, Fragment
from models.cells.registry import resolve_cell
from models.cells.stack import layer_prefix, stack
from models.nets.limits import check_model_size

__all__ = ["RecurrentModel", "check_array", "check_state_dict", "l2_cell"]


TIME_MAJOR_HINT = (
    "; minigrad is time-major: sequences are (T, B, D), steps first and the batch second "
    "(B is read from x.shape[1]); a batch-major (B, T, D) array needs x.transpose(1, 0, 2)"
)
"""Appended to shape errors on the step or batch axis."""


def check_array(
    what: str,
    arr: object,
    shape: tuple[int | str, ...],
    dtype: np.dtype[Any],
    *,
    dims: str = "",
) -> Array:
    """Check that ``arr`` is a numpy array of exactly ``shape`` and ``dtype``.

    Args:
        what: the argument's name, for messages (``"x"``, ``"h0"``).
        arr: the value given.
        shape: the expected shape; an entry that is a string (``"T"``) matches
            any size >= 1.
        dtype: the expected dtype.
        dims: optional description of the dimensions, e.g. ``"(T, B, D)"``.

    Returns:
        ``arr`` itself (not copied).

    Raises:
        ShapeError: wrong number of dimensions or sizes (a ``ValueError``).
        ValueError: not a numpy array, or another dtype (no silent casting).
    """
    expected = format_shape(shape) + (f" = {dims}" if dims else "")
    if not isinstance(arr, np.ndarray):
        raise ValueError(
            f"{what} must be a numpy array of shape {expected} and dtype {dtype.name}, "
            f"got {type(arr).__name__}"
        )
    if arr.ndim != len(shape):
        raise ShapeError(
            f"{what} must have {len(shape)} dimensions, shape {expected}; got shape {arr.shape}"
        )
    for axis, (got, want) in enumerate(zip(arr.shape, shape, strict=True)):
        if want in ("T", "B") and got == 0:
            what_axis = "no time steps (T = 0)" if want == "T" else "an empty batch (B = 0)"
            raise ShapeError(
                f"{what} has shape {arr.shape}: {what_axis}, expected {expected}; give at "
                f"least one {'step' if want == 'T' else 'sequence'}"
            )
        if (isinstance(want, str) and got < 1) or (isinstance(want, int) and got != want):
            hint = TIME_MAJOR_HINT if axis < 2 and ("T" in dims or "B" in dims) else ""
            raise ShapeError(f"{what} has shape {arr.shape}, expected {expected}{hint}")
    if arr.dtype != dtype:
        raise ValueError(
            f"{what} has dtype {arr.dtype}, but the model is {dtype.name}: convert it "
            f"explicitly (e.g. {what}.astype(np.{dtype.name})); arrays are never cast silently"
        )
    return arr


def _model_dtype(dtype: object) -> np.dtype[np.floating]:
    for dt in (np.dtype(np.float32), np.dtype(np.float64)):
        if dtype is None:
            break
        try:
            if dt == dtype:
                return dt
        except TypeError:
            break
    raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}")


def check_state_dict(
    current: Mapping[str, Array], d: object, *, where: str = "", what: str = "the model"
) -> dict[str, Array]:
    """Check a state dict against a model's parameters, changing nothing.

    Args:
        current: the model's parameters, ``{name: array}``.
        d: the state dict given, which must have exactly the names, shapes and
            dtypes of ``current``.
        where: optional prefix for messages (a file name).
        what: how messages name the model (``"a 'gru' model with hidden size 46"``).

    Returns:
        Copies of the arrays, in the order of ``current``.

    Raises:
        ValueError: naming the key at fault (missing, unexpected, not an array,
            wrong shape, wrong dtype, NaN or infinite values).
    """
    pre = f"{where}: " if where else ""
    if not isinstance(d, Mapping):
        raise ValueError(f"{pre}a state dict must be a mapping, got {type(d).__name__}")
    missing = [k for k in current if k not in d]
    if missing:
        raise ValueError(f"{pre}state dict: key(s) {missing} of {what} are missing; got {list(d)}")
    unexpected = [k for k in d if k not in current]
    if unexpected:
        raise ValueError(
            f"{pre}state dict: unexpected key(s) {unexpected} for {what}; expected {list(current)}"
        )
    out: dict[str, Array] = {}
    for k, cur in current.items():
        v = d[k]
        if not isinstance(v, np.ndarray):
            raise ValueError(
                f"{pre}state dict: key '{k}' must be a numpy array, got {type(v).__name__}"
            )
        if v.shape != cur.shape:
            raise ValueError(
                f"{pre}state dict: key '{k}' has shape {v.shape}, but {what} needs {cur.shape}"
            )
        if v.dtype != cur.dtype:
            raise ValueError(
                f"{pre}state dict: key '{k}' is {v.dtype}, but {what} is {cur.dtype} "
                "(convert it explicitly; arrays are never cast silently)"
            )
        if not np.all(np.isfinite(v)):
            raise ValueError(
                f"{pre}state dict: key '{k}' holds NaN or infinite values; refusing to load it"
            )
        out[k] = np.array(v, copy=True)
    return out


def l2_cell(
    name: str | None,
    cell: str | Fragment,
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    init: str = "default",
    dtype: FloatDType | np.dtype[np.floating] = np.float64,
) -> Cell:
    """The cell graph of a :class:`RecurrentModel`, without allocating its parameters.

    Inputs ``x`` (B, input_size) and ``y`` (B, hidden_size); output ``h`` (B,
    hidden_size), the top layer's state; loss ``loss``, the L2 distance of
    ``h`` to ``y``. Drawing or explaining a cell needs nothing more. ``cell``
    is anything :func:`models.cells.resolve_cell` accepts; ``name`` defaults
    to the cell's type.
    """
    cell_type, frag = resolve_cell(cell)
    b = CellBuilder(name or cell_type, dtype=dtype)
    x = b.input("x", input_size)
    y = b.input("y", hidden_size)
    tops = stack(b, x, frag, input_size, hidden_size, num_layers, init=init)
    b.output("h", tops[-1])
    b.loss(l2_loss(tops[-1], y, name="loss"))
    return b.build()



def nonfinite_error(
    plan: Program, run: Run, params: Mapping[str, Array], what: str
) -> NonFiniteError:
    """A ``NonFiniteError`` for ``run`` of ``plan``: ``what`` went wrong, the first node
    and step holding a NaN or an infinity (``Program.first_nonfinite``), or the
    parameters that hold one, or else that only a sum overflowed."""
    bad = [k for k, v in params.items() if not np.all(np.isfinite(v))]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        found = plan.first_nonfinite(run)
    parts = [what]
    node: str | None = None
    step: int | None = None
    if found is not None:
        node, step = found
        where = f"step {step}" if step >= 0 else "a parameter-only node"
        parts.append(f"first non-finite value at node '{node}', {where}")
    if bad:
        parts.append(f"parameter(s) {bad} hold non-finite values")
    elif found is None:
        parts.append("every node's value is finite: the sum of the loss terms overflowed")
    return NonFiniteError("; ".join(parts), node=node, step=step)

class RecurrentModel:
    """L recurrent layers of one cell type with an L2 loss on the top layer's states.

    Args:
        cell: a cell name (``"gru"``, ``"gru_reset_after"``, ``"lstm"``,
            ``"tanh"``, ``"mgu"``, a registered one), a ``module:function``
            spec or a fragment function (``models.cells.resolve_cell``).
        input_size: D, the size of each step's input.
        hidden_size: H, the size of every layer's state.
        dtype: ``numpy.float32`` or ``numpy.float64``.
        seed: seed (or ``numpy.random.Generator``) of the initial parameters.
        init: ``"default"`` or ``"orthogonal"`` (see ``models.cells``).
        num_layers: L >= 1.
        name: the cell's name in messages (default: ``cell``).

    Attributes:
        cell: the built minigrad ``Cell``.
        params: ``{name: array}``, the current parameters (use ``state_dict``
            for copies).
        dtype: the model's ``numpy.dtype``.
        input_size, hidden_size, num_layers, cell_type, init: as given.

    Initial states: ``h0`` is (B, H) for a single layer and (L, B, H) for a
    stack (layer 0 first); every further state a layer declares (``c`` for
    the LSTM) takes ``<name>0`` of the same shape (``c0``). A missing initial
    state is zero.
    """

    def __init__(
        self,
        cell: str | Fragment,
        input_size: int,
        hidden_size: int,
        *,
        dtype: FloatDType | np.dtype[np.floating] = np.float64,
        seed: int | np.random.Generator = 0,
        init: str = "default",
        num_layers: int = 1,
        name: str | None = None,
    ) -> None:
        cell_type, frag = resolve_cell(cell)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; valid: {', '.join(repr(i) for i in INITS)}")
        for what, v in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{what} must be an int >= 1, got {v!r}")
        check_model_size(int(input_size), int(hidden_size), int(num_layers))
        self.cell_type = cell_type
        self.fragment: Fragment = frag
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.num_layers = int(num_layers)
        self.init = init
        self.dtype: np.dtype[np.floating] = _model_dtype(dtype)
        self._reverse = False
        self.cell: Cell = self._build(name or cell_type)
        first = layer_prefix(0, self.num_layers)
        #: the states one layer declares, e.g. ("h",), or ("h", "c") for the LSTM,
        #: read from the built cell (layer 0's states without their prefix)
        self.state_kinds: tuple[str, ...] = tuple(
            s[len(first) :] for s in self.cell.states if s.startswith(first)
        )
        self.params: dict[str, Array] = self.cell.init_params(seed)

    def _build(self, name: str) -> Cell:
        return l2_cell(
            name,
            self.fragment,
            self.input_size,
            self.hidden_size,
            num_layers=self.num_layers,
            init=self.init,
            dtype=self.dtype,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(cell={self.cell_type!r}, input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, num_layers={self.num_layers}, "
            f"dtype={self.dtype.name}, params={self.num_params})"
        )

    @property
    def num_params(self) -> int:
        """The number of scalar parameters."""
        return int(sum(p.size for p in self.params.values()))

    # -- parameters -----------------------------------------------------------

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters, ``{name: array of the parameter's shape}``, in
        declaration order."""
        return {k: v.copy() for k, v in self.params.items()}

    def validate_state_dict(self, d: Mapping[str, object]) -> dict[str, Array]:
        """Check a state dict against the model without changing the model
        (``check_state_dict`` against ``self.params``)."""
        return check_state_dict(self.params, d)

    def load_state_dict(self, d: Mapping[str, object]) -> None:
        """Replace every parameter by a copy of ``d[name]``.

        Everything is checked before anything is replaced: on any error the
        model is left unchanged.

        Args:
            d: ``{name: array}`` with exactly the model's parameter names,
                shapes and dtype (see ``state_dict``).

        Raises:
            ValueError: naming the key at fault.
        """
        self.params = self.validate_state_dict(d)

    # -- argument checks --------------------------------------------------------

    @property
    def stacked_states(self) -> bool:
        """True when initial states carry a layer axis, (L, B, H); False for (B, H)."""
        return self.num_layers > 1

    def _check_x(self, x: object) -> Array:
        return check_array("x", x, ("T", "B", self.input_size), self.dtype, dims="(T, B, D)")

    def _check_y(self, y: object, x: Array) -> Array:
        T, B = x.shape[0], x.shape[1]
        return check_array("y", y, (T, B, self.hidden_size), self.dtype, dims="(T, B, H)")

    def _initial_states(self, given: Mapping[str, object | None], batch: int) -> dict[str, Array]:
        """Map ``{"h": h0, "c": c0}`` (each None, (B, H) or (L, B, H)) to cell states."""
        L, H = self.num_layers, self.hidden_size
        out: dict[str, Array] = {}
        for kind, arr in given.items():
            arg = f"{kind}0"
            if kind not in self.state_kinds:
                if arr is None:
                    continue
                raise ValueError(
                    f"{arg} is not used by a {self.cell_type!r} model (states: "
                    f"{', '.join(k + '0' for k in self.state_kinds)})"
                )
            if arr is None:
                continue
            if self.stacked_states:
                a = check_array(arg, arr, (L, batch, H), self.dtype, dims="(L, B, H)")
                for layer in range(L):
                    out[layer_prefix(layer, L) + kind] = a[layer]
            else:
                out[kind] = check_array(arg, arr, (batch, H), self.dtype, dims="(B, H)")
        return out

    def _state_grads(self, states: Mapping[str, Array]) -> dict[str, Array]:
        """Initial-state gradients of the cell as ``{"h0": ..., "c0": ...}`` shaped like h0."""
        L = self.num_layers
        out: dict[str, Array] = {}
        for kind in self.state_kinds:
            if self.stacked_states:
                out[f"{kind}0"] = np.stack(
                    [states[layer_prefix(layer, L) + kind] for layer in range(L)]
                )
            else:
                out[f"{kind}0"] = states[kind]
        return out

    def _plan(self, steps: int) -> Program:
        """The compiled program (it runs for any T; ``steps`` is not needed)."""
        wrt = [*self.cell.params, "x", *self.cell.states]
        return compile(self.cell, wrt=wrt)

    # -- running ------------------------------------------------------------------

    def _forward(self, x: object, states: Mapping[str, object | None]) -> Array:
        xa = self._check_x(x)
        st = self._initial_states(states, xa.shape[1])
        if self._reverse:
            xa = xa[::-1]
        y = np.zeros((*xa.shape[:2], self.hidden_size), dtype=self.dtype)
        run = self._plan(xa.shape[0]).forward(self.params, {"x": xa, "y": y}, st, backward=False)
        h = run.outputs["h"]
        return np.ascontiguousarray(h[::-1]) if self._reverse else h

    def _loss_and_grads(
        self, x: object, y: object, states: Mapping[str, object | None]
    ) -> tuple[float, dict[str, Array]]:
        xa = self._check_x(x)
        ya = self._check_y(y, xa)
        st = self._initial_states(states, xa.shape[1])
        if self._reverse:
            xa, ya = xa[::-1], ya[::-1]
        plan = self._plan(xa.shape[0])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            loss, g = plan.loss_and_grads(self.params, {"x": xa, "y": ya}, st)
        grads: dict[str, Array] = {k: g.params[k] for k in self.params}
        gx = g.inputs["x"]
        grads["x"] = np.ascontiguousarray(gx[::-1]) if self._reverse else gx
        grads.update(self._state_grads(g.states))
        bad = [k for k, v in grads.items() if not np.all(np.isfinite(v))]
        if not np.isfinite(loss) or bad:
            raise self._nonfinite(plan, xa, ya, st, loss, bad)
        return loss, grads

    def _nonfinite(
        self,
        plan: Program,
        x: Array,
        y: Array,
        states: Mapping[str, Array],
        loss: float,
        bad: list[str],
    ) -> NonFiniteError:
        """The error of a pass with a NaN or an infinity (a forward pass again, only on
        this path, to find where)."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            run = plan.forward(self.params, {"x": x, "y": y}, states, backward=False)
        finite = np.isfinite(loss)
        what = f"the gradient of {bad} is not finite" if finite else f"the loss is {loss}"
        return nonfinite_error(plan, run, self.params, what)

    def forward(self, x: Array, h0: Array | None = None) -> Array:
        """Run the model over a batch of sequences.

        Args:
            x: (T, B, D), time-major, the model's dtype.
            h0: optional initial state, (B, H) (or (L, B, H) for a stack); zeros if None.

        Returns:
            The top layer's hidden states h_1 .. h_T, (T, B, H).
        """
        return self._forward(x, {"h": h0})

    def loss_and_grads(
        self, x: Array, y: Array, h0: Array | None = None
    ) -> tuple[float, dict[str, Array]]:
        """The L2 loss ``0.5 * sum_t ||h_t - y_t||^2`` (summed over the batch) and its gradients.

        Args:
            x: (T, B, D), time-major, the model's dtype.
            y: (T, B, H), the target of every top-layer state.
            h0: optional initial state, (B, H) (or (L, B, H) for a stack); zeros if None.

        Returns:
            ``(loss, grads)``: ``grads`` has one entry per ``state_dict`` key
            (the parameter's shape), ``"x"`` (T, B, D) and ``"h0"`` (the shape
            of h0), all of the model's dtype.

        Raises:
            NonFiniteError: the loss or a gradient is a NaN or an infinity (e.g. targets
                of 1e300 overflow the squares); the message names the first node and
                step holding one.
        """
        return self._loss_and_grads(x, y, {"h": h0})
