"""Declaring a recurrent cell as a graph of typed nodes.

A cell describes one time step. It has

* **inputs**: per-step arrays fed from outside, shape (B, *features) at each
  step and (T, B, *features) for a whole sequence (data, targets);
* **parameters**: arrays shared by every step (weights, biases);
* **states**: values carried from one step to the next; each has an initial
  value and an **update**, the node whose value becomes the state at the next
  step;
* **nodes**: typed operations (``minigrad.nodes``) on the above;
* **outputs**: nodes whose per-step values are returned to the caller;
* **losses**: nodes of shape (B,) whose values, summed over the batch and
  the time steps, make the loss.

Example, a tanh-RNN with an L2 loss::

    b = CellBuilder("rnn", dtype=np.float64)
    x = b.input("x", 3)
    y = b.input("y", 4)
    h = b.state("h", 4)
    W = b.param("W", (3, 4), init=uniform(0.5))
    U = b.param("U", (4, 4), init=uniform(0.5))
    bias = b.param("b", 4)
    h_new = tanh(x @ W + h @ U + bias, name="h_new")
    b.update(h, h_new)
    b.output("h", h_new)
    b.loss(l2_loss(h_new, y, name="l2"))
    cell = b.build()

``build()`` checks everything a later failure would otherwise reveal deep
inside numpy: unknown names, shape and dtype mismatches, algebraic loops
(cycles that no state breaks), missing updates. Every message names the cell,
the node, its class and the inputs at fault.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import networkx as nx
import numpy as np

from minigrad import nodes as N
from minigrad.errors import ArgumentError, DTypeError, GraphError, ShapeError
from minigrad.init import Initializer, zeros
from minigrad.types import BATCH, Array, FloatDType, Shape, SymShape
from minigrad.types import format_shape as _fmt

__all__ = [
    "MAX_ELEMENTS",
    "MAX_NAME_LENGTH",
    "Cell",
    "CellBuilder",
    "InputSpec",
    "NoiseSpec",
    "OpSpec",
    "ParamSpec",
    "Ref",
    "StateSpec",
    "add",
    "affine",
    "concat",
    "dropout",
    "gru_update",
    "l2_loss",
    "matmul",
    "mul",
    "neg_sigmoid",
    "one_minus",
    "relu",
    "scale",
    "sigmoid",
    "sigmoid_bce",
    "slice_",
    "softmax_cross_entropy",
    "sub",
    "tanh",
    "zoneout",
]

Kind = Literal["input", "param", "state", "op"]

#: The largest number of elements a declared shape may have (a parameter's
#: shape, or the per-step features of an input or a state): 10**8, 800 MB in
#: float64. Ten times ``models.nets.limits.MAX_PARAMS``, the largest whole model
#: the ``minigrad`` command builds, so no model it accepts reaches this; a shape
#: beyond it is a mistake, not a model, and is refused before anything is
#: allocated.
MAX_ELEMENTS = 100_000_000

#: The longest name of a cell or of anything declared in it.
MAX_NAME_LENGTH = 200

_NAME_RULE = (
    f"names are 1 to {MAX_NAME_LENGTH} printable characters other than '/' "
    "(no newline, tab or other control character)"
)


def _check_name(name: object, what: str) -> str:
    """``name`` if it is a usable name, else a ``GraphError`` saying why.

    Names show up in one-line error messages, in DOT pictures, and in the keys
    of saved state (``"<slot>/<name>"``, ``"params/<name>"``): a newline would
    break the first, a ``/`` the last. Quotes, backslashes, spaces and ``@``
    are fine (the DOT writer escapes them).
    """
    if not isinstance(name, str) or not name:
        raise GraphError(f"{what}: names must be non-empty strings, got {name!r}; {_NAME_RULE}")
    if len(name) > MAX_NAME_LENGTH:
        raise GraphError(f"{what}: name {name[:40]!r}... is {len(name)} characters; {_NAME_RULE}")
    if "/" in name or not name.isprintable():
        raise GraphError(f"{what}: name {name!r} is refused; {_NAME_RULE}")
    return name
_KIND_WORDS = {"input": "an input", "param": "a parameter", "state": "a state", "op": "a node"}


def _dim(d: object, what: str, shape: object) -> int:
    """One dimension: a Python or numpy integer (never a bool, float or string)."""
    if isinstance(d, bool | np.bool_) or not isinstance(d, int | np.integer):
        raise ShapeError(
            f"{what}: dimensions must be integers, got {d!r} ({type(d).__name__}) in {shape!r}"
        )
    return int(d)


def _as_shape(shape: int | Iterable[int], what: str) -> Shape:
    if isinstance(shape, str | bytes) or not isinstance(shape, int | np.integer | Iterable):
        raise ShapeError(
            f"{what}: shape must be an integer or a sequence of integers, got {shape!r}"
        )
    if isinstance(shape, int | np.integer):
        dims: tuple[int, ...] = (_dim(shape, what, shape),)
    else:
        dims = tuple(_dim(d, what, shape) for d in shape)
    for d in dims:
        if d < 1:
            raise ShapeError(f"{what}: every dimension must be >= 1, got {dims}")
    size = math.prod(dims)
    if size > MAX_ELEMENTS:
        raise ShapeError(
            f"{what}: shape {dims} has {size:,} elements, more than the limit of "
            f"{MAX_ELEMENTS:,} (minigrad.cell.MAX_ELEMENTS)"
        )
    return dims


@dataclass(frozen=True)
class ParamSpec:
    """A parameter: ``shape`` (concrete, no batch dimension), ``dtype``, ``init``."""

    name: str
    shape: Shape
    dtype: np.dtype[np.floating]
    init: Initializer


NoiseKind = Literal["dropout", "zoneout"]
NoisePer = Literal["sequence", "step"]
NOISE_KINDS: tuple[NoiseKind, ...] = ("dropout", "zoneout")
NOISE_PER: tuple[NoisePer, ...] = ("sequence", "step")


@dataclass(frozen=True)
class NoiseSpec:
    """What a noise input holds (see ``CellBuilder.noise`` and ``minigrad.noise``).

    * ``kind="dropout"``: a dropout mask, 0 with probability ``rate`` and
      ``1 / (1 - rate)`` otherwise during training, 1 at evaluation;
    * ``kind="zoneout"``: a keep mask, 1 (keep the previous value) with
      probability ``rate`` and 0 otherwise during training, ``rate`` at evaluation.

    ``per="sequence"`` draws one mask per sequence, shared by all its steps
    (variational dropout); ``per="step"`` draws a new one at every step.
    """

    rate: float
    kind: NoiseKind = "dropout"
    per: NoisePer = "sequence"


@dataclass(frozen=True)
class InputSpec:
    """A per-step input of symbolic shape ``("B", *features)``.

    ``noise`` is None for data; for a noise input (``CellBuilder.noise``) it
    says how ``minigrad.noise.draw`` fills it.
    """

    name: str
    shape: SymShape
    dtype: np.dtype[np.floating]
    noise: NoiseSpec | None = None


@dataclass(frozen=True)
class StateSpec:
    """A carried state of symbolic shape ``("B", *features)``.

    ``init`` is the default initial value (a scalar, or an array of the
    feature shape broadcast over the batch); ``update`` names the node that
    becomes the state at the next step.
    """

    name: str
    shape: SymShape
    dtype: np.dtype[np.floating]
    init: float | Array
    update: str

    def initial(self, batch: int) -> Array:
        """The default initial value for a batch of ``batch`` rows, shape (batch, *features)."""
        feat = tuple(int(d) for d in self.shape[1:])
        out = np.empty((batch, *feat), dtype=self.dtype)
        out[...] = self.init
        return out


@dataclass(frozen=True)
class OpSpec:
    """A node of the cell: its typed ``op``, the names of its ``inputs``, and
    the inferred ``shape`` and ``dtype``. ``static`` ops depend on parameters
    only and are computed once per sequence, not once per step."""

    name: str
    op: N.Node
    inputs: tuple[str, ...]
    shape: SymShape
    dtype: np.dtype[np.floating]
    static: bool


@dataclass(frozen=True)
class Ref:
    """A handle on a named value of a ``CellBuilder``; supports ``@ + - *``.

    ``a @ W`` adds a ``MatMul``, ``a + b`` an ``Add``, ``a - b`` a ``Sub``,
    ``1 - a`` a ``OneMinus``, ``a * b`` a ``Mul``, with automatic names.
    """

    name: str
    builder: CellBuilder = field(repr=False, compare=False)

    def __matmul__(self, other: Ref | str) -> Ref:
        return self.builder.node(None, N.MatMul(), self, other)

    def __add__(self, other: Ref | str) -> Ref:
        return self.builder.node(None, N.Add(), self, other)

    def __sub__(self, other: Ref | str) -> Ref:
        return self.builder.node(None, N.Sub(), self, other)

    def __rsub__(self, other: object) -> Ref:
        if isinstance(other, int | float) and other == 1:
            return self.builder.node(None, N.OneMinus(), self)
        return NotImplemented

    def __mul__(self, other: Ref | str) -> Ref:
        return self.builder.node(None, N.Mul(), self, other)


class CellBuilder:
    """Collects the declarations of a cell; ``build()`` checks them and returns a ``Cell``.

    Args:
        name: the cell's name, used in every error message.
        dtype: default dtype of parameters, inputs and states
            (``numpy.float32`` or ``numpy.float64``).
    """

    def __init__(self, name: str, dtype: FloatDType | np.dtype[np.floating] = np.float64) -> None:
        self.name = _check_name(name, "CellBuilder")
        if dtype is None:
            raise DTypeError(f"cell '{name}': dtype must be float32 or float64, got None")
        self.dtype: np.dtype[np.floating] = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise DTypeError(f"cell '{name}': dtype must be float32 or float64, got {self.dtype}")
        self._kinds: dict[str, Kind] = {}
        self._params: dict[str, tuple[Shape, np.dtype[np.floating], Initializer]] = {}
        self._inputs: dict[str, tuple[SymShape, np.dtype[np.floating]]] = {}
        self._noise: dict[str, NoiseSpec] = {}
        self._states: dict[str, tuple[SymShape, np.dtype[np.floating], float | Array]] = {}
        self._ops: dict[str, tuple[N.Node, tuple[str, ...]]] = {}
        self._updates: dict[str, str] = {}
        self._outputs: dict[str, str] = {}
        self._losses: list[str] = []
        self._counter = 0

    # -- declarations -----------------------------------------------------

    def _claim(self, name: str, kind: Kind) -> Ref:
        _check_name(name, f"cell '{self.name}'")
        if name in self._kinds:
            raise GraphError(
                f"cell '{self.name}': the name '{name}' is already used by "
                f"{_KIND_WORDS[self._kinds[name]]}"
            )
        self._kinds[name] = kind
        return Ref(name, self)

    def _dtype(self, dtype: FloatDType | np.dtype[np.floating] | None) -> np.dtype[np.floating]:
        return self.dtype if dtype is None else np.dtype(dtype)

    def input(
        self,
        name: str,
        shape: int | Iterable[int],
        dtype: FloatDType | np.dtype[np.floating] | None = None,
    ) -> Ref:
        """Declare a per-step input with feature shape ``shape`` (e.g. ``D`` or ``(D,)``).

        At run time it is given as an array of shape (T, B, *shape).
        """
        feat = _as_shape(shape, f"cell '{self.name}': input '{name}'")
        ref = self._claim(name, "input")
        self._inputs[name] = ((BATCH, *feat), self._dtype(dtype))
        return ref

    def noise(
        self,
        name: str,
        shape: int | Iterable[int],
        rate: float,
        kind: NoiseKind = "dropout",
        per: NoisePer = "sequence",
        dtype: FloatDType | np.dtype[np.floating] | None = None,
    ) -> Ref:
        """Declare a noise input with feature shape ``shape``: a per-step input
        that ``minigrad.noise.draw`` fills (training masks or their evaluation
        values) rather than the data.

        Args:
            name: the input's name.
            shape: feature shape, e.g. ``H``; at run time the input is (T, B, *shape).
            rate: the dropout probability (``kind="dropout"``) or the probability
                that a unit keeps its previous value (``kind="zoneout"``), in [0, 1).
            kind: ``"dropout"`` or ``"zoneout"`` (see ``NoiseSpec``).
            per: ``"sequence"`` (one mask per sequence, shared by its steps) or
                ``"step"`` (a new mask at every step).
        """
        where = f"cell '{self.name}': noise input '{name}'"
        if kind not in NOISE_KINDS:
            raise ArgumentError(f"{where}: kind must be one of {list(NOISE_KINDS)}, got {kind!r}")
        if per not in NOISE_PER:
            raise ArgumentError(f"{where}: per must be one of {list(NOISE_PER)}, got {per!r}")
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise ArgumentError(f"{where}: rate must be a number in [0, 1), got {rate!r}")
        ref = self.input(name, shape, dtype=dtype)
        self._noise[name] = NoiseSpec(float(rate), kind, per)
        return ref

    def param(
        self,
        name: str,
        shape: int | Iterable[int],
        init: Initializer | None = None,
        dtype: FloatDType | np.dtype[np.floating] | None = None,
    ) -> Ref:
        """Declare a parameter of concrete ``shape`` (e.g. ``(D, H)`` or ``H``).

        ``init(rng, shape, dtype)`` draws its initial value (zeros by default).
        """
        shp = _as_shape(shape, f"cell '{self.name}': parameter '{name}'")
        ref = self._claim(name, "param")
        self._params[name] = (shp, self._dtype(dtype), init if init is not None else zeros())
        return ref

    def state(
        self,
        name: str,
        shape: int | Iterable[int],
        init: float | Array = 0.0,
        dtype: FloatDType | np.dtype[np.floating] | None = None,
    ) -> Ref:
        """Declare a carried state with feature shape ``shape`` and default initial value ``init``.

        Its per-step value has shape (B, *shape). Give it an update with ``update``.
        """
        feat = _as_shape(shape, f"cell '{self.name}': state '{name}'")
        ref = self._claim(name, "state")
        given: object = init
        if isinstance(given, str | bytes):
            raise GraphError(
                f"cell '{self.name}': state '{name}': initial value must be a number or an "
                f"array, got {init!r}"
            )
        if not np.all(np.isfinite(np.asarray(init, dtype=np.float64))):
            raise GraphError(
                f"cell '{self.name}': state '{name}': initial value must be finite, got {init!r}"
            )
        if not np.isscalar(init):
            arr = np.asarray(init)
            if arr.shape != feat:
                raise ShapeError(
                    f"cell '{self.name}': state '{name}': initial value has shape {arr.shape}, "
                    f"expected {feat} (or a scalar)"
                )
        self._states[name] = ((BATCH, *feat), self._dtype(dtype), init)
        return ref

    def node(self, name: str | None, op: N.Node, *inputs: Ref | str) -> Ref:
        """Add a node ``name`` computing ``op`` of ``inputs`` (handles or names).

        Names may refer to values declared later; ``build`` resolves them. A
        ``None`` name gets an automatic one (``matmul_3``).
        """
        if not isinstance(op, N.Node):
            raise GraphError(
                f"cell '{self.name}': node '{name}': expected a minigrad Node instance, got {op!r}"
            )
        if name is None:
            self._counter += 1
            name = f"{type(op).__name__.lower()}_{self._counter}"
            while name in self._kinds:
                self._counter += 1
                name = f"{type(op).__name__.lower()}_{self._counter}"
        names = tuple(i.name if isinstance(i, Ref) else i for i in inputs)
        for i, n in enumerate(names):
            if not isinstance(n, str):
                raise GraphError(
                    f"cell '{self.name}': node '{name}' ({type(op).__name__}): input {i} must "
                    f"be a Ref or a name, got {n!r}"
                )
        ref = self._claim(name, "op")
        self._ops[name] = (op, names)
        return ref

    def update(self, state: Ref | str, value: Ref | str) -> None:
        """Make the node ``value`` become ``state`` at the next time step."""
        s = state.name if isinstance(state, Ref) else state
        v = value.name if isinstance(value, Ref) else value
        if s in self._updates:
            raise GraphError(f"cell '{self.name}': state '{s}' already has an update")
        self._updates[s] = v

    def output(self, name: str, value: Ref | str | None = None) -> None:
        """Return the per-step values of a node as output ``name`` (the node ``name`` itself
        when ``value`` is omitted). They come back with shape (T, B, *features)."""
        _check_name(name, f"cell '{self.name}': output")
        v = name if value is None else (value.name if isinstance(value, Ref) else value)
        if name in self._outputs:
            raise GraphError(f"cell '{self.name}': output '{name}' is declared twice")
        self._outputs[name] = v

    def loss(self, value: Ref | str) -> None:
        """Add the per-step values of a node of shape (B,) to the loss."""
        v = value.name if isinstance(value, Ref) else value
        if v in self._losses:
            raise GraphError(f"cell '{self.name}': '{v}' is already a loss term")
        self._losses.append(v)

    # -- reading and rewiring what is declared so far ------------------------

    def feature_shape(self, name: str) -> Shape:
        """The feature shape of a declared input or state (its shape without the batch)."""
        if name in self._inputs:
            return tuple(int(d) for d in self._inputs[name][0][1:])
        if name in self._states:
            return tuple(int(d) for d in self._states[name][0][1:])
        raise GraphError(f"cell '{self.name}': '{name}' is not a declared input or state")

    def ref(self, name: str) -> Ref:
        """A handle on the declared name ``name``."""
        if name not in self._kinds:
            raise self._unknown(name, "ref()")
        return Ref(name, self)

    def op_of(self, name: str) -> tuple[N.Node, tuple[str, ...]]:
        """The node type and input names of the node ``name``."""
        if name not in self._ops:
            raise GraphError(f"cell '{self.name}': '{name}' is not a node")
        return self._ops[name]

    def readers(self, name: str) -> list[tuple[str, int]]:
        """The ``(node, input slot)`` pairs that read ``name``, in declaration order."""
        return [
            (n, i) for n, (_op, ins) in self._ops.items() for i, r in enumerate(ins) if r == name
        ]

    def update_of(self, state: Ref | str) -> str | None:
        """The node that becomes ``state`` at the next step, or None if not given yet."""
        return self._updates.get(state.name if isinstance(state, Ref) else state)

    def rewire(self, node: str, slot: int, value: Ref | str) -> None:
        """Make input ``slot`` of the node ``node`` read ``value`` instead."""
        op, ins = self.op_of(node)
        if not 0 <= slot < len(ins):
            raise GraphError(
                f"cell '{self.name}': node '{node}' ({type(op).__name__}) has no input {slot}"
            )
        v = value.name if isinstance(value, Ref) else value
        self._ops[node] = (op, (*ins[:slot], v, *ins[slot + 1 :]))

    def replace_update(self, state: Ref | str, value: Ref | str) -> None:
        """Make ``value`` the update of ``state`` in place of the one given before."""
        s = state.name if isinstance(state, Ref) else state
        if s not in self._updates:
            raise GraphError(f"cell '{self.name}': state '{s}' has no update to replace")
        self._updates[s] = value.name if isinstance(value, Ref) else value

    def replace_output(self, name: str, value: Ref | str) -> None:
        """Make the output ``name`` return ``value`` in place of the node given before."""
        if name not in self._outputs:
            raise GraphError(f"cell '{self.name}': there is no output '{name}'")
        self._outputs[name] = value.name if isinstance(value, Ref) else value

    def state_names(self) -> list[str]:
        """The states declared so far, in declaration order."""
        return list(self._states)

    # -- checking ---------------------------------------------------------

    def _unknown(self, ref: str, where: str) -> GraphError:
        known = sorted(self._kinds)
        close = difflib.get_close_matches(ref, known, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return GraphError(
            f"cell '{self.name}': {where} refers to '{ref}', which is not declared{hint} "
            f"(declared: {', '.join(known)})"
        )

    def build(self) -> Cell:
        """Check the declarations and return the immutable ``Cell``.

        Raises:
            GraphError: unknown names, algebraic loops, missing or bad updates.
            ShapeError: shapes that do not fit a node's rule.
            DTypeError: dtypes that disagree.
        """
        cname = self.name
        # 1. every name resolves
        for name, (op, ins) in self._ops.items():
            try:
                op.check_arity(len(ins))
            except ShapeError as e:
                raise ShapeError(
                    f"cell '{cname}': node '{name}' ({type(op).__name__}): {e}"
                ) from None
            for i, ref in enumerate(ins):
                if ref not in self._kinds:
                    raise self._unknown(
                        ref, f"node '{name}' ({type(op).__name__}) input {i} '{op.slot(i)}'"
                    )
        for s in self._states:
            if s not in self._updates:
                raise GraphError(
                    f"cell '{cname}': state '{s}' has no update; call update('{s}', node) to "
                    "say which node it becomes at the next step"
                )
        for s, v in self._updates.items():
            if s not in self._states:
                what = f"a {self._kinds[s]}" if s in self._kinds else "not declared"
                raise GraphError(f"cell '{cname}': update target '{s}' is not a state ({what})")
            if v not in self._kinds:
                raise self._unknown(v, f"the update of state '{s}'")
        for o, v in self._outputs.items():
            if v not in self._kinds:
                raise self._unknown(v, f"output '{o}'")
        for v in self._losses:
            if v not in self._kinds:
                raise self._unknown(v, "a loss term")

        # 2. the step graph; a cycle here is an algebraic loop
        g: nx.DiGraph = nx.DiGraph()  # type: ignore[type-arg]
        for name, kind in self._kinds.items():
            g.add_node(name, kind=kind)
        for name, (_op, ins) in self._ops.items():
            for i, ref in enumerate(ins):
                if g.has_edge(ref, name):
                    g.edges[ref, name]["slots"].append(i)
                else:
                    g.add_edge(ref, name, slots=[i])
        # find_cycle walks the graph again from every node: ask it only when there is one
        cycle = None
        if not nx.is_directed_acyclic_graph(g):
            try:
                cycle = nx.find_cycle(g)
            except nx.NetworkXNoCycle:
                cycle = None
        if cycle is not None:
            loop = [u for u, _v in cycle] + [cycle[0][0]]
            raise GraphError(
                f"cell '{cname}': algebraic loop {' -> '.join(loop)}: these nodes depend on "
                "each other within one step and no state breaks the loop; carry one of them "
                "to the next step through a state (CellBuilder.state and update)"
            )
        order = [n for n in nx.lexicographical_topological_sort(g) if n in self._ops]

        # 3. shapes, dtypes and static-ness, in topological order
        shapes: dict[str, SymShape] = {}
        dtypes: dict[str, np.dtype[np.floating]] = {}
        static: dict[str, bool] = {}
        for pname, (pshp, pdt, _pinit) in self._params.items():
            shapes[pname], dtypes[pname], static[pname] = pshp, pdt, True
        for iname, (ishp, idt) in self._inputs.items():
            shapes[iname], dtypes[iname], static[iname] = ishp, idt, False
        for sname, (sshp, sdt, _sinit) in self._states.items():
            shapes[sname], dtypes[sname], static[sname] = sshp, sdt, False
        ops: dict[str, OpSpec] = {}
        for name in order:
            op, ins = self._ops[name]
            # the messages are made only when needed: a rebuild by the graph passes
            # checks every node again, and formatting costs more than the checks
            def where(op: N.Node = op, name: str = name) -> str:
                return f"cell '{cname}': node '{name}' ({type(op).__name__})"

            def listing(op: N.Node = op, ins: tuple[str, ...] = ins) -> str:
                return ", ".join(
                    f"{op.slot(i)}='{r}' {_fmt(shapes[r])} {dtypes[r].name}"
                    for i, r in enumerate(ins)
                )

            try:
                oshp = op.infer_shape(*(shapes[r] for r in ins))
            except ShapeError as e:
                raise ShapeError(f"{where()}: {e} [inputs: {listing()}]") from None
            try:
                dt = op.infer_dtype(*(dtypes[r] for r in ins))
            except DTypeError as e:
                raise DTypeError(f"{where()}: {e} [inputs: {listing()}]") from None
            is_static = all(static[r] for r in ins)
            if is_static:
                if BATCH in oshp:
                    raise ShapeError(
                        f"{where()}: depends on parameters only but has shape {_fmt(oshp)}"
                    )
            elif not oshp or oshp[0] != BATCH or BATCH in oshp[1:]:
                raise ShapeError(
                    f"{where()}: a per-step value must have the batch dimension first and only "
                    f"there, got {_fmt(oshp)} [inputs: {listing()}]"
                )
            shapes[name], dtypes[name], static[name] = oshp, dt, is_static
            ops[name] = OpSpec(name, op, ins, oshp, dt, is_static)
            g.nodes[name].update(op=op, shape=oshp, dtype=dt, static=is_static)

        states: dict[str, StateSpec] = {}
        for sname, (sshp, sdt, sinit) in self._states.items():
            v = self._updates[sname]
            if shapes[v] != sshp or dtypes[v] != sdt:
                raise ShapeError(
                    f"cell '{cname}': state '{sname}' {_fmt(sshp)} {sdt.name} cannot be updated "
                    f"by '{v}' {_fmt(shapes[v])} {dtypes[v].name}: shape and dtype must be equal"
                )
            states[sname] = StateSpec(sname, sshp, sdt, sinit, v)
            g.nodes[sname].update(shape=sshp, dtype=sdt, update=v)
        for v in self._losses:
            if shapes[v] != (BATCH,):
                raise ShapeError(
                    f"cell '{cname}': loss term '{v}' must have shape (B,) (one value per "
                    f"sequence), got {_fmt(shapes[v])}"
                )
        for o, v in self._outputs.items():
            if static[v]:
                raise ShapeError(
                    f"cell '{cname}': output '{o}' ('{v}') does not depend on the step"
                )
        if not self._losses and not self._outputs:
            raise GraphError(f"cell '{cname}': declare at least one loss term or output")
        params = {p: ParamSpec(p, ps, pd, pi) for p, (ps, pd, pi) in self._params.items()}
        for pname, spec in params.items():
            g.nodes[pname].update(shape=spec.shape, dtype=spec.dtype)
        inputs = {
            i: InputSpec(i, ishp, idt, self._noise.get(i))
            for i, (ishp, idt) in self._inputs.items()
        }
        for iname, ispec in inputs.items():
            g.nodes[iname].update(shape=ispec.shape, dtype=ispec.dtype)
        return Cell(
            name=cname,
            dtype=self.dtype,
            graph=g,
            params=params,
            inputs=inputs,
            states=states,
            ops=ops,
            order=tuple(order),
            outputs=dict(self._outputs),
            losses=tuple(self._losses),
        )


class Cell:
    """A checked, immutable cell: a networkx ``DiGraph`` of one time step.

    Attributes:
        name: the cell's name.
        dtype: its default dtype.
        graph: ``networkx.DiGraph`` whose nodes are the names of inputs,
            parameters, states and nodes; node attributes ``kind`` (``"input"``,
            ``"param"``, ``"state"``, ``"op"``), ``shape``, ``dtype`` and, for
            operations, ``op`` (the typed ``Node``) and ``static``; edges carry
            ``slots``, the input positions they feed.
        params, inputs, states, ops: the specs by name.
        order: the operations in a deterministic topological order.
        outputs: output name -> node name.
        losses: the nodes whose (B,) values are summed into the loss.
        readers: name -> the ``(node, input slot)`` pairs that read it.
        pinned: the outputs, loss terms and state updates (values that leave
            the step, which graph passes must keep).
    """

    def __init__(
        self,
        *,
        name: str,
        dtype: np.dtype[np.floating],
        graph: nx.DiGraph,  # type: ignore[type-arg]
        params: dict[str, ParamSpec],
        inputs: dict[str, InputSpec],
        states: dict[str, StateSpec],
        ops: dict[str, OpSpec],
        order: tuple[str, ...],
        outputs: dict[str, str],
        losses: tuple[str, ...],
    ) -> None:
        self.name = name
        self.dtype = dtype
        self.graph = graph
        self.params = params
        self.inputs = inputs
        self.states = states
        self.ops = ops
        self.order = order
        self.outputs = outputs
        self.losses = losses
        self._kinds: dict[str, Kind] = {n: d["kind"] for n, d in graph.nodes(data=True)}
        #: name -> the (node, input slot) pairs that read it, in topological order
        self.readers: dict[str, list[tuple[str, int]]] = {}
        for n in order:
            for j, r in enumerate(ops[n].inputs):
                self.readers.setdefault(r, []).append((n, j))
        #: nodes whose values leave the step: outputs, loss terms and state updates
        self.pinned: frozenset[str] = frozenset(
            {*outputs.values(), *losses, *(st.update for st in states.values())}
        )

    def __repr__(self) -> str:
        return (
            f"Cell('{self.name}', inputs={list(self.inputs)}, states={list(self.states)}, "
            f"params={list(self.params)}, nodes={len(self.ops)}, dtype={self.dtype.name})"
        )

    def init_params(self, seed: int | np.random.Generator = 0) -> dict[str, Array]:
        """Draw every parameter from its initialiser, in declaration order.

        Args:
            seed: an int seed or a ``numpy.random.Generator``.

        Returns:
            ``{name: array}`` with each parameter's shape and dtype.
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        out: dict[str, Array] = {}
        for p, spec in self.params.items():
            arr = np.asarray(spec.init(rng, spec.shape, spec.dtype))
            if arr.shape != spec.shape or arr.dtype != spec.dtype:
                raise ShapeError(
                    f"cell '{self.name}': the initialiser of parameter '{p}' returned "
                    f"{arr.shape} {arr.dtype}, expected {spec.shape} {spec.dtype}"
                )
            out[p] = arr
        return out

    def to_builder(
        self, ops: Mapping[str, tuple[N.Node, tuple[str, ...]]] | None = None
    ) -> CellBuilder:
        """A ``CellBuilder`` holding this cell's declarations, for graph rewrites.

        Args:
            ops: optional replacement for the operation nodes, ``{name: (node,
                input names)}``; parameters, inputs, states, updates, outputs and
                losses are kept.
        """
        b = CellBuilder(self.name, self.dtype)
        for p, ps in self.params.items():
            b.param(p, ps.shape, init=ps.init, dtype=ps.dtype)
        for i, ispec in self.inputs.items():
            feat = tuple(int(d) for d in ispec.shape[1:])
            if ispec.noise is None:
                b.input(i, feat, dtype=ispec.dtype)
            else:
                nz = ispec.noise
                b.noise(i, feat, nz.rate, kind=nz.kind, per=nz.per, dtype=ispec.dtype)
        for s, ss in self.states.items():
            b.state(s, tuple(int(d) for d in ss.shape[1:]), init=ss.init, dtype=ss.dtype)
        if ops is None:
            ops = {n: (self.ops[n].op, self.ops[n].inputs) for n in self.order}
        for n, (op, ins) in ops.items():
            b.node(n, op, *ins)
        for s, ss in self.states.items():
            b.update(s, ss.update)
        for o, v in self.outputs.items():
            b.output(o, v)
        for v in self.losses:
            b.loss(v)
        return b

    def kind(self, name: str) -> Kind:
        """``"input"``, ``"param"``, ``"state"`` or ``"op"`` for a declared name."""
        return self._kinds[name]

    def shared(self, name: str) -> bool:
        """True for parameters and parameter-only nodes (one value for all steps)."""
        kind = self._kinds[name]
        return kind == "param" or (kind == "op" and self.ops[name].static)

    def spec_shape(self, name: str) -> SymShape:
        """The (symbolic) shape of a declared name."""
        s: SymShape = self.graph.nodes[name]["shape"]
        return s

    def dtypes(self) -> Mapping[str, np.dtype[np.floating]]:
        """dtype of every declared name."""
        return {n: d["dtype"] for n, d in self.graph.nodes(data=True)}


# --------------------------------------------------------------------------
# lowercase functions, one per node type


def _b(*refs: Ref | str) -> CellBuilder:
    for r in refs:
        if isinstance(r, Ref):
            return r.builder
    raise GraphError("at least one argument must be a Ref from a CellBuilder")


def matmul(
    a: Ref | str, w: Ref | str, *, name: str | None = None, transpose_b: bool = False
) -> Ref:
    """``a @ w`` (``a @ w.T`` with ``transpose_b``): a (B, K), w (K, N) -> (B, N)."""
    return _b(a, w).node(name, N.MatMul(transpose_b=transpose_b), a, w)


def affine(x: Ref | str, w: Ref | str, b: Ref | str, *, name: str | None = None) -> Ref:
    """``x @ w + b``: x (B, D), w (D, N), b (N,) -> (B, N)."""
    return _b(x, w, b).node(name, N.Affine(), x, w, b)


def add(a: Ref | str, b: Ref | str, *, name: str | None = None) -> Ref:
    """``a + b`` with broadcasting (a bias (H,) over (B, H))."""
    return _b(a, b).node(name, N.Add(), a, b)


def sub(a: Ref | str, b: Ref | str, *, name: str | None = None) -> Ref:
    """``a - b`` with broadcasting."""
    return _b(a, b).node(name, N.Sub(), a, b)


def mul(a: Ref | str, b: Ref | str, *, name: str | None = None) -> Ref:
    """Elementwise ``a * b`` with broadcasting (gate times value)."""
    return _b(a, b).node(name, N.Mul(), a, b)


def one_minus(x: Ref | str, *, name: str | None = None) -> Ref:
    """``1 - x``."""
    return _b(x).node(name, N.OneMinus(), x)


def scale(x: Ref | str, c: float, *, name: str | None = None) -> Ref:
    """``c * x`` for a constant c."""
    return _b(x).node(name, N.Scale(c), x)


def sigmoid(x: Ref | str, *, name: str | None = None) -> Ref:
    """Logistic sigmoid (no overflow)."""
    return _b(x).node(name, N.Sigmoid(), x)


def neg_sigmoid(x: Ref | str, *, name: str | None = None) -> Ref:
    """``sigmoid(-x)``, i.e. ``1 - sigmoid(x)`` without cancellation."""
    return _b(x).node(name, N.NegSigmoid(), x)


def tanh(x: Ref | str, *, name: str | None = None) -> Ref:
    """Hyperbolic tangent."""
    return _b(x).node(name, N.Tanh(), x)


def relu(x: Ref | str, *, name: str | None = None) -> Ref:
    """``max(x, 0)``."""
    return _b(x).node(name, N.ReLU(), x)


def gru_update(z: Ref | str, a: Ref | str, b: Ref | str, *, name: str | None = None) -> Ref:
    """``(1 - z) * a + z * b`` as one node."""
    return _b(z, a, b).node(name, N.GRUUpdate(), z, a, b)


def slice_(x: Ref | str, start: int, stop: int, *, name: str | None = None) -> Ref:
    """``x[..., start:stop]``."""
    return _b(x).node(name, N.Slice(start, stop), x)


def dropout(x: Ref | str, mask: Ref | str, *, name: str | None = None) -> Ref:
    """``x * mask`` with ``mask`` a noise input (``CellBuilder.noise``, kind "dropout"):
    x (B, H), mask (B, H) -> (B, H)."""
    return _b(x, mask).node(name, N.Dropout(), x, mask)


def zoneout(
    keep: Ref | str, h_new: Ref | str, h_prev: Ref | str, *, name: str | None = None
) -> Ref:
    """``keep * h_prev + (1 - keep) * h_new`` with ``keep`` a noise input (kind
    "zoneout"): all three (B, H) -> (B, H)."""
    return _b(keep, h_new, h_prev).node(name, N.Zoneout(), keep, h_new, h_prev)


def concat(*xs: Ref | str, name: str | None = None) -> Ref:
    """Concatenate along the last axis."""
    return _b(*xs).node(name, N.Concat(), *xs)


def l2_loss(h: Ref | str, t: Ref | str, *, name: str | None = None) -> Ref:
    """Per-row ``0.5 * sum((h - t)^2)``: (B, H), (B, H) -> (B,)."""
    return _b(h, t).node(name, N.L2Loss(), h, t)


def sigmoid_bce(z: Ref | str, t: Ref | str, *, name: str | None = None) -> Ref:
    """Per-row binary cross-entropy on logits: (B, K), (B, K) -> (B,)."""
    return _b(z, t).node(name, N.SigmoidBCE(), z, t)


def softmax_cross_entropy(z: Ref | str, t: Ref | str, *, name: str | None = None) -> Ref:
    """Per-row softmax cross-entropy on logits: (B, K), (B, K) -> (B,)."""
    return _b(z, t).node(name, N.SoftmaxCrossEntropy(), z, t)
