"""Typed nodes: a forward computation on numpy arrays and its local derivative.

A node is one operation of a cell graph. Its contract has two methods:

* ``forward(*xs) -> y`` computes the output from the input arrays;
* ``vjp(g, y, *xs) -> (gx_0, ..., gx_{n-1})`` is the local vector-Jacobian
  product: given the gradient ``g`` of the loss with respect to ``y`` (same
  shape as ``y``), it returns the gradient with respect to *every* input, in
  input order, each with exactly the shape and dtype of that input. A zero
  gradient is an array of zeros, never ``None``.

``vjp`` receives the forward output ``y`` so that a node can reuse it (a
sigmoid's derivative is ``y * (1 - y)``): forward decides what backward keeps.

A node also declares, for graph building, how many inputs it takes
(``arity``), their names (``slots``, used in error messages), and the rule for
its output shape (``infer_shape``) and dtype (``infer_dtype``). Shapes at
build time are symbolic: the batch dimension is the string ``"B"``.

Every node works on arrays with any number of leading batch dimensions
(``(B, H)`` for one time step, ``(T, B, H)`` for all steps at once), acting on
the last axis only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from minigrad.errors import DTypeError, GraphError, ShapeError
from minigrad.types import BATCH, Array, Dim, SymShape
from minigrad.types import format_shape as _fmt

Call = tuple[Callable[..., Any], tuple[Any, ...]]
"""A bound numpy call ``(f, args)``, run as ``f(*args)``."""

__all__ = [
    "Add",
    "Affine",
    "Concat",
    "Dropout",
    "GRUUpdate",
    "Identity",
    "L2Loss",
    "MatMul",
    "Mul",
    "NegSigmoid",
    "Node",
    "OneMinus",
    "ReLU",
    "Scale",
    "Sigmoid",
    "SigmoidBCE",
    "Slice",
    "SoftmaxCrossEntropy",
    "Sub",
    "Tanh",
    "Zoneout",
    "broadcast_shapes",
    "stable_sigmoid",
    "unbroadcast",
]


# --------------------------------------------------------------------------
# helpers


def broadcast_shapes(*shapes: SymShape) -> SymShape:
    """Broadcast symbolic shapes by numpy's rules (``"B"`` only matches ``"B"`` or 1).

    Args:
        shapes: symbolic shapes, e.g. ``("B", 4)`` and ``(4,)``.

    Returns:
        The broadcast shape, e.g. ``("B", 4)``.

    Raises:
        ShapeError: if two dimensions differ and neither is 1.
    """
    n = max(len(s) for s in shapes)
    padded: list[SymShape] = [(1,) * (n - len(s)) + tuple(s) for s in shapes]
    out: list[Dim] = []
    for dims in zip(*padded, strict=True):
        d: Dim = 1
        for x in dims:
            if x == 1:
                continue
            if d == 1:
                d = x
            elif d != x:
                raise ShapeError(
                    "shapes " + ", ".join(_fmt(s) for s in shapes) + " do not broadcast"
                )
        out.append(d)
    return tuple(out)


def unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``g`` over the axes that broadcasting added or stretched.

    Args:
        g: a gradient of the broadcast result, shape ``(..., *shape)``.
        shape: the shape of the input that was broadcast.

    Returns:
        An array of shape ``shape`` (a view of ``g`` when nothing was broadcast).
    """
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, d in enumerate(shape) if d == 1 and g.shape[extra + i] != 1
    )
    out: Array = g.sum(axis=axes).reshape(shape)
    return out


def as_rows(a: Array) -> Array | None:
    """``a`` (..., n) as a 2-D (rows, n) *view*, or None when that needs a copy."""
    if a.ndim == 2:
        return a
    v = a.view()
    try:
        v.shape = (-1, a.shape[-1])
    except (AttributeError, ValueError):
        return None
    return v


def gemm(a: Array, b: Array, out: Array) -> None:
    """``out = a @ b`` for ``a`` (..., k), ``b`` (k, n), ``out`` (..., n), as one GEMM
    over all leading dimensions (numpy's matmul would loop over them), with ``b``
    made contiguous when it is a transposed view (BLAS is slower on those)."""
    if b.ndim == 2 and not b.flags.c_contiguous and a.size > 4 * b.size:
        b = np.ascontiguousarray(b)
    if a.ndim > 2:
        a2, o2 = as_rows(a), as_rows(out)
        if a2 is not None and o2 is not None:
            np.matmul(a2, b, out=o2)
            return
    np.matmul(a, b, out=out)


def stable_sigmoid(x: Array, out: Array | None = None) -> Array:
    """The logistic function ``1 / (1 + exp(-x))``, accurate to rounding for every finite x.

    ``exp(-x)`` may overflow to inf for x < -709, which gives the correctly
    rounded 0 (the true value is below the smallest normal number); the
    overflow is expected and not reported. Inside a plan the engine silences
    it once per pass; here it is silenced locally.

    Args:
        x: any shape, float32 or float64.
        out: optional array of the same shape and dtype to write into.
    """
    if out is None:
        out = np.empty_like(x)
    with np.errstate(over="ignore"):
        _sigmoid_into(out, x)
    return out


def _sigmoid_into(out: Array, x: Array) -> None:
    np.negative(x, out=out)
    for fn, args in _neg_sigmoid_calls(out, out):
        fn(*args)


def _neg_sigmoid_calls(out: Array, x: Array) -> list[Call]:
    """``out = 1 / (1 + exp(x))`` as three ufunc calls (``x`` may be ``out``)."""
    return [(np.exp, (x, out)), (np.add, (out, 1, out)), (np.divide, (1, out, out))]


def _same_dtype(node: Node, dtypes: Sequence[np.dtype[np.floating]]) -> np.dtype[np.floating]:
    first = dtypes[0]
    for i, d in enumerate(dtypes):
        if d != first:
            raise DTypeError(
                f"input {i} '{node.slot(i)}' is {d.name} but input 0 '{node.slot(0)}' is "
                f"{first.name}; all inputs of {type(node).__name__} must share one dtype"
            )
    if not np.issubdtype(first, np.floating):
        raise DTypeError(f"{type(node).__name__} needs floating-point inputs, got {first.name}")
    return first


# --------------------------------------------------------------------------
# the contract


def finite_constant(c: object, what: str) -> float:
    """``c`` as a float, refusing strings, booleans and NaN or infinite values.

    Raises:
        GraphError: naming ``what`` (e.g. ``"Scale: constant c"``).
    """
    if isinstance(c, bool | np.bool_) or not isinstance(c, int | float | np.integer | np.floating):
        raise GraphError(f"{what} must be a real number, got {c!r} ({type(c).__name__})")
    value = float(c)
    if not math.isfinite(value):
        raise GraphError(f"{what} must be finite, got {value!r}")
    return value


class Node(ABC):
    """Base class of every node type.

    Subclasses set ``arity`` (number of inputs, ``None`` for one or more),
    ``slots`` (input names for messages), ``formula`` (the forward, as text)
    and ``derivatives`` (the local derivative with respect to each slot, as
    text, used by ``minigrad.explain``), and implement ``forward`` and
    ``vjp``. ``infer_shape`` defaults to numpy broadcasting of all inputs and
    ``infer_dtype`` to "all inputs share one floating dtype".
    """

    arity: ClassVar[int | None] = 1
    slots: ClassVar[tuple[str, ...]] = ("x",)
    formula: str = ""
    derivatives: tuple[str, ...] = ()
    #: True for node types whose ``vjp`` is covered by the template test; the
    #: engine re-checks the shape and dtype of every gradient of other nodes.
    verified: ClassVar[bool] = False
    #: Input values where ``forward`` is not differentiable (``ReLU``: ``(0.0,)``).
    #: ``minigrad.gradcheck`` names them when a check fails next to one, since
    #: finite differences that straddle a kink measure neither one-sided slope.
    kinks: ClassVar[tuple[float, ...]] = ()

    def slot(self, i: int) -> str:
        """Name of input ``i`` (``x0``, ``x1``, ... for variadic nodes)."""
        if i < len(self.slots):
            return self.slots[i]
        return f"x{i}"

    def check_arity(self, n: int) -> None:
        """Raise ``ShapeError`` unless the node takes ``n`` inputs."""
        if self.arity is None:
            if n < 1:
                raise ShapeError(f"{type(self).__name__} takes at least one input, got 0")
        elif n != self.arity:
            raise ShapeError(
                f"{type(self).__name__} takes {self.arity} input(s) "
                f"({', '.join(self.slots)}), got {n}"
            )

    def infer_shape(self, *shapes: SymShape) -> SymShape:
        """Output shape from input shapes (symbolic, batch dim ``"B"``)."""
        return broadcast_shapes(*shapes)

    def infer_dtype(self, *dtypes: np.dtype[np.floating]) -> np.dtype[np.floating]:
        """Output dtype from input dtypes; the default requires one shared float dtype."""
        return _same_dtype(self, dtypes)

    @abstractmethod
    def forward(self, *xs: Array) -> Array:
        """Compute the output from the inputs (shapes as given by ``infer_shape``)."""

    @abstractmethod
    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        """Local vector-Jacobian product.

        Args:
            g: gradient of the loss with respect to the output, shape of ``y``.
            y: the output that ``forward`` returned for ``xs``.
            xs: the inputs, as given to ``forward``.

        Returns:
            One gradient per input, each of that input's shape and dtype.
        """

    def forward_into(self, out: Array, *xs: Array) -> None:
        """Write ``forward(*xs)`` into ``out``; built-in nodes override it to avoid a copy."""
        np.copyto(out, self.forward(*xs))

    def vjp_some(
        self, needs: tuple[bool, ...], g: Array, y: Array, *xs: Array
    ) -> tuple[Array, ...]:
        """Like ``vjp``, but entries whose ``needs`` flag is False may be skipped.

        The engine calls this; a skipped entry may be any array (it is ignored).
        The default computes everything with ``vjp``.
        """
        return self.vjp(g, y, *xs)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        """The forward pass as a list of numpy calls ``(f, args)`` on these very arrays,
        or None. The engine binds them once and runs ``f(*args)`` at every step,
        with no Python frame of the node in between. Must compute exactly what
        ``forward_into(out, *xs)`` computes."""
        return None

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        """Write the gradient of input i into ``outs[i]`` (skip it where ``outs[i]`` is None).

        The engine calls this with preallocated arrays of each input's shape and
        dtype. The default computes ``vjp_some`` and copies; built-in nodes
        override it to write in place without temporaries.
        """
        needs = tuple(o is not None for o in outs)
        for o, gr in zip(outs, self.vjp_some(needs, g, y, *xs), strict=False):
            if o is not None:
                np.copyto(o, gr)

    #: What the backward pass reads (Chainer's habit): ``vjp`` needs the output
    #: (``backward_uses_output``) and, per input slot, that input's value
    #: (``backward_uses_inputs``, None for all). The engine may overwrite values
    #: that no backward step needs.
    backward_uses_output: ClassVar[bool] = True
    backward_uses_inputs: ClassVar[tuple[bool, ...] | None] = None
    #: Input slots whose buffer ``forward_into`` may also use as ``out``.
    inplace_slots: ClassVar[tuple[int, ...]] = ()

    def uses_input(self, i: int) -> bool:
        """Whether ``vjp`` reads the value of input ``i``."""
        u = self.backward_uses_inputs
        return True if u is None or i >= len(u) else u[i]

    #: True for nodes whose output element k depends only on element k of each
    #: input (same shapes, no broadcasting); such nodes may implement
    #: ``factors_into``.
    elementwise: ClassVar[bool] = False

    def factors_into(
        self, outs: tuple[Array, ...], y: Array, *xs: Array
    ) -> tuple[Array, ...] | None:
        """Elementwise partial derivatives ``dy/dx_i`` (each of ``y``'s shape), or None.

        For elementwise nodes the local Jacobian is diagonal and depends only on
        forward values, so the engine can compute it for all steps at once before
        the backward loop and then apply it with one multiplication per step.
        ``outs`` are scratch arrays of ``y``'s shape to write into; an entry of
        the result may also be one of the inputs themselves (``Mul`` returns
        ``(b, a)``). The default returns None: not available.
        """
        return None

    def right_jacobian(self, i: int, *xs: Array) -> Array | None:
        """If the gradient of input ``i`` is ``g @ M`` for a matrix ``M`` built only
        from the *other* inputs, return ``M`` (any memory layout), else None.

        When those other inputs are shared by all steps (weights), the engine
        stores a contiguous copy of ``M`` once per backward pass and each step's
        backward is one GEMM.
        """
        return None

    def params_repr(self) -> str:
        """Constructor arguments, for ``repr`` and drawings."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params_repr()})"


# --------------------------------------------------------------------------
# linear algebra


class MatMul(Node):
    """``y = a @ w`` (or ``a @ w.T`` with ``transpose_b=True``).

    Shapes: ``a`` (..., K); ``w`` (K, N), or (N, K) when transposed, with no
    batch dimension; ``y`` (..., N). The gradient of ``w`` is summed over all
    leading dimensions of ``a``.
    """

    arity = 2
    slots = ("a", "w")
    formula = "y = a @ w"
    derivatives = ("dL/da = g @ w^T", "dL/dw = a^T @ g")
    verified = True
    backward_uses_output = False

    def __init__(self, transpose_b: bool = False) -> None:
        self.transpose_b = transpose_b
        if transpose_b:
            self.formula = "y = a @ w^T"
            self.derivatives = ("dL/da = g @ w", "dL/dw = g^T @ a")

    def params_repr(self) -> str:
        return "transpose_b=True" if self.transpose_b else ""

    def infer_shape(self, *shapes: SymShape) -> SymShape:
        a, w = shapes
        if len(w) != 2 or BATCH in w:
            raise ShapeError(
                f"input 1 'w' must be a matrix without a batch dimension, got {_fmt(w)}"
            )
        if len(a) < 1:
            raise ShapeError("input 0 'a' must have at least one dimension, got ()")
        k, n = (w[1], w[0]) if self.transpose_b else (w[0], w[1])
        if a[-1] != k:
            wdesc = f"w^T {_fmt((w[1], w[0]))}" if self.transpose_b else f"w {_fmt(w)}"
            raise ShapeError(
                f"inner dimensions differ: a {_fmt(a)} has {a[-1]} columns but {wdesc} has {k} rows"
            )
        return (*a[:-1], n)

    def forward(self, *xs: Array) -> Array:
        a, w = xs
        return a @ (w.T if self.transpose_b else w)

    def forward_into(self, out: Array, *xs: Array) -> None:
        a, w = xs
        gemm(a, w.T if self.transpose_b else w, out)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        a, w = xs
        if a.ndim > 2:
            return None
        return [(np.matmul, (a, w.T if self.transpose_b else w, out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return self.vjp_some((True, True), g, y, *xs)

    def vjp_some(
        self, needs: tuple[bool, ...], g: Array, y: Array, *xs: Array
    ) -> tuple[Array, ...]:
        a, w = xs
        ga: Array = g @ (w if self.transpose_b else w.T) if needs[0] else a
        gw: Array
        if needs[1]:
            a2 = a.reshape(-1, a.shape[-1])
            g2 = g.reshape(-1, g.shape[-1])
            gw = g2.T @ a2 if self.transpose_b else a2.T @ g2
        else:
            gw = w
        return ga, gw

    def right_jacobian(self, i: int, *xs: Array) -> Array | None:
        if i != 0:
            return None
        w = xs[1]
        return w if self.transpose_b else w.T

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        a, w = xs
        oa, ow = outs
        if oa is not None:
            gemm(g, w if self.transpose_b else w.T, oa)
        if ow is not None:
            a2 = a.reshape(-1, a.shape[-1])
            g2 = g.reshape(-1, g.shape[-1])
            if self.transpose_b:
                np.matmul(g2.T, a2, out=ow)
            else:
                np.matmul(a2.T, g2, out=ow)


class Affine(Node):
    """Affine read-out ``y = x @ w + b``.

    Shapes: ``x`` (..., D); ``w`` (D, N); ``b`` (N,); ``y`` (..., N).
    """

    arity = 3
    slots = ("x", "w", "b")
    formula = "y = x @ w + b"
    derivatives = ("dL/dx = g @ w^T", "dL/dw = x^T @ g", "dL/db = sum of g over the batch")
    verified = True
    backward_uses_output = False
    backward_uses_inputs = (True, True, False)

    def infer_shape(self, *shapes: SymShape) -> SymShape:
        x, w, b = shapes
        y = MatMul().infer_shape(x, w)
        if len(b) != 1 or b[0] != w[1]:
            raise ShapeError(f"input 2 'b' must have shape ({w[1]},), got {_fmt(b)}")
        return y

    def forward(self, *xs: Array) -> Array:
        x, w, b = xs
        y: Array = x @ w
        y += b
        return y

    def forward_into(self, out: Array, *xs: Array) -> None:
        x, w, b = xs
        gemm(x, w, out)
        out += b

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        x, w, b = xs
        if x.ndim > 2:
            return None
        return [(np.matmul, (x, w, out)), (np.add, (out, b, out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        x, w, _b = xs
        g2 = g.reshape(-1, g.shape[-1])
        return g @ w.T, x.reshape(-1, x.shape[-1]).T @ g2, g2.sum(axis=0)

    def right_jacobian(self, i: int, *xs: Array) -> Array | None:
        return xs[1].T if i == 0 else None

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        x, w, _b = xs
        ox, ow, ob = outs
        g2 = g.reshape(-1, g.shape[-1])
        if ox is not None:
            gemm(g, w.T, ox)
        if ow is not None:
            np.matmul(x.reshape(-1, x.shape[-1]).T, g2, out=ow)
        if ob is not None:
            np.sum(g2, axis=0, out=ob)


# --------------------------------------------------------------------------
# elementwise arithmetic


class Add(Node):
    """``y = a + b`` with numpy broadcasting (a bias (H,) is added to every row of (B, H))."""

    arity = 2
    slots = ("a", "b")
    formula = "y = a + b"
    derivatives = ("dL/da = g", "dL/db = g")
    verified = True
    backward_uses_output = False
    backward_uses_inputs = (False, False)
    inplace_slots = (0, 1)

    def forward(self, *xs: Array) -> Array:
        a, b = xs
        return a + b

    def forward_into(self, out: Array, *xs: Array) -> None:
        a, b = xs
        np.add(a, b, out=out)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return [(np.add, (*xs, out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        a, b = xs
        return unbroadcast(g, a.shape), unbroadcast(g, b.shape)

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        for o in outs:
            if o is not None:
                np.copyto(o, unbroadcast(g, o.shape))


class Sub(Node):
    """``y = a - b`` with numpy broadcasting."""

    arity = 2
    slots = ("a", "b")
    formula = "y = a - b"
    derivatives = ("dL/da = g", "dL/db = -g")
    verified = True
    backward_uses_output = False
    backward_uses_inputs = (False, False)
    inplace_slots = (0, 1)

    def forward(self, *xs: Array) -> Array:
        a, b = xs
        return a - b

    def forward_into(self, out: Array, *xs: Array) -> None:
        a, b = xs
        np.subtract(a, b, out=out)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return [(np.subtract, (*xs, out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        a, b = xs
        return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)


class OneMinus(Node):
    """``y = 1 - x``."""

    formula = "y = 1 - x"
    derivatives = ("dL/dx = -g",)
    verified = True
    backward_uses_output = False
    backward_uses_inputs = (False,)
    inplace_slots = (0,)

    def forward(self, *xs: Array) -> Array:
        return 1 - xs[0]

    def forward_into(self, out: Array, *xs: Array) -> None:
        np.subtract(1, xs[0], out=out)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return [(np.subtract, (1, xs[0], out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return (-g,)


class Scale(Node):
    """``y = c * x`` for a constant ``c``."""

    formula = "y = c * x"
    derivatives = ("dL/dx = c * g",)
    verified = True
    backward_uses_output = False
    backward_uses_inputs = (False,)
    inplace_slots = (0,)

    def __init__(self, c: float) -> None:
        self.c = finite_constant(c, "Scale: constant c")

    def params_repr(self) -> str:
        return repr(self.c)

    def forward(self, *xs: Array) -> Array:
        return xs[0] * self.c

    def forward_into(self, out: Array, *xs: Array) -> None:
        np.multiply(xs[0], self.c, out=out)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return [(np.multiply, (xs[0], self.c, out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return (g * self.c,)


class Identity(Node):
    """``y = x`` (useful to give a value a second name)."""

    formula = "y = x"
    derivatives = ("dL/dx = g",)
    verified = True
    backward_uses_output = False
    backward_uses_inputs = (False,)

    def forward(self, *xs: Array) -> Array:
        return xs[0].copy()

    def forward_into(self, out: Array, *xs: Array) -> None:
        np.copyto(out, xs[0])

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return [(np.copyto, (out, xs[0]))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return (g,)


class Mul(Node):
    """Elementwise gating ``y = a * b`` with numpy broadcasting (gate times value)."""

    arity = 2
    slots = ("a", "b")
    formula = "y = a * b"
    derivatives = ("dL/da = g * b", "dL/db = g * a")
    verified = True
    backward_uses_output = False
    inplace_slots = (0, 1)

    def forward(self, *xs: Array) -> Array:
        a, b = xs
        return a * b

    def forward_into(self, out: Array, *xs: Array) -> None:
        a, b = xs
        np.multiply(a, b, out=out)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return [(np.multiply, (*xs, out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return self.vjp_some((True, True), g, y, *xs)

    def vjp_some(
        self, needs: tuple[bool, ...], g: Array, y: Array, *xs: Array
    ) -> tuple[Array, ...]:
        a, b = xs
        ga = unbroadcast(g * b, a.shape) if needs[0] else a
        gb = unbroadcast(g * a, b.shape) if needs[1] else b
        return ga, gb

    def factors_into(
        self, outs: tuple[Array, ...], y: Array, *xs: Array
    ) -> tuple[Array, ...] | None:
        a, b = xs
        if a.shape != b.shape:
            return None
        return b, a

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        a, b = xs
        oa, ob = outs
        for o, other in ((oa, b), (ob, a)):
            if o is None:
                continue
            if o.shape == g.shape:
                np.multiply(g, other, out=o)
            else:
                np.copyto(o, unbroadcast(g * other, o.shape))


class GRUUpdate(Node):
    """The gated state update ``y = (1 - z) * a + z * b`` as one node.

    Shapes: ``z``, ``a``, ``b`` broadcast together (normally all (..., H)).
    With ``a`` the previous state and ``b`` the candidate this is Chung et
    al.'s update; with the roles swapped it is PyTorch's.
    """

    arity = 3
    slots = ("z", "a", "b")
    formula = "y = (1 - z) * a + z * b"
    derivatives = ("dL/dz = g * (b - a)", "dL/da = g * (1 - z)", "dL/db = g * z")
    verified = True
    backward_uses_output = False
    inplace_slots = (2,)

    def forward(self, *xs: Array) -> Array:
        z, a, b = xs
        return a + z * (b - a)

    def forward_into(self, out: Array, *xs: Array) -> None:
        z, a, b = xs
        np.subtract(b, a, out=out)
        out *= z
        out += a

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        z, a, b = xs
        return [(np.subtract, (b, a, out)), (np.multiply, (out, z, out)), (np.add, (out, a, out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        z, a, b = xs
        gz = unbroadcast(g * (b - a), z.shape)
        gb_full = g * z
        ga = unbroadcast(g - gb_full, a.shape)
        return gz, ga, unbroadcast(gb_full, b.shape)

    def factors_into(
        self, outs: tuple[Array, ...], y: Array, *xs: Array
    ) -> tuple[Array, ...] | None:
        z, a, b = xs
        if not z.shape == a.shape == b.shape:
            return None
        fz, fa, _fb = outs
        np.subtract(b, a, out=fz)
        np.subtract(1, z, out=fa)
        return fz, fa, z

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        z, a, b = xs
        if not z.shape == a.shape == b.shape == g.shape:
            super().vjp_into(outs, g, y, *xs)
            return
        oz, oa, ob = outs
        if oz is not None:
            np.subtract(b, a, out=oz)
            oz *= g
        if ob is not None:
            np.multiply(g, z, out=ob)
        if oa is not None:
            if ob is not None:
                np.subtract(g, ob, out=oa)
            else:
                np.multiply(g, z, out=oa)
                np.subtract(g, oa, out=oa)


# --------------------------------------------------------------------------
# regularisation: noise that a cell receives as an input (see ``minigrad.noise``)


class Dropout(Mul):
    """Dropout as a product with a mask input: ``y = x * mask``.

    The mask is a cell input of kind "noise" (``CellBuilder.noise``): during
    training ``minigrad.noise.draw`` fills it with 0 or ``1 / (1 - rate)``
    (inverted dropout), drawn once per sequence (variational dropout) or once
    per step; at evaluation it is all ones, so the node is the identity.
    Shapes: ``x`` and ``mask`` broadcast together (normally both (..., H)).
    The mask is data, not a parameter, but its gradient ``g * x`` is returned
    like any input's.
    """

    slots = ("x", "mask")
    formula = "y = x * mask"
    derivatives = ("dL/dx = g * mask", "dL/dmask = g * x")


class Zoneout(GRUUpdate):
    """Zoneout of a state: ``y = keep * h_prev + (1 - keep) * h_new``.

    ``keep`` is a cell input of kind "noise": during training each unit keeps
    its previous value (``keep`` = 1) with probability ``rate``, drawn at every
    step; at evaluation ``keep`` is ``rate`` everywhere, the expectation
    (Krueger et al. 2017). Shapes: all three broadcast together (normally
    (..., H)). It is ``GRUUpdate`` with the gate ``keep`` and the roles of the
    two values named.
    """

    slots = ("keep", "h_new", "h_prev")
    formula = "y = keep * h_prev + (1 - keep) * h_new"
    derivatives = (
        "dL/dkeep = g * (h_prev - h_new)",
        "dL/dh_new = g * (1 - keep)",
        "dL/dh_prev = g * keep",
    )


# --------------------------------------------------------------------------
# activations


class Sigmoid(Node):
    """Logistic ``y = 1 / (1 + exp(-x))``, accurate to rounding for any finite x
    (see ``stable_sigmoid``)."""

    formula = "y = sigmoid(x)"
    derivatives = ("dL/dx = g * y * (1 - y)",)
    verified = True
    backward_uses_inputs = (False,)
    inplace_slots = (0,)

    def forward(self, *xs: Array) -> Array:
        return stable_sigmoid(xs[0])

    def forward_into(self, out: Array, *xs: Array) -> None:
        _sigmoid_into(out, xs[0])

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return [(np.negative, (xs[0], out)), *_neg_sigmoid_calls(out, out)]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return (g * y * (1 - y),)

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        (o,) = outs
        if o is not None:
            np.subtract(1, y, out=o)
            o *= y
            o *= g

    def factors_into(
        self, outs: tuple[Array, ...], y: Array, *xs: Array
    ) -> tuple[Array, ...] | None:
        (f,) = outs
        np.subtract(1, y, out=f)
        f *= y
        return (f,)


class NegSigmoid(Node):
    """Logistic of the negated input, ``y = sigmoid(-x) = 1 / (1 + exp(x))``.

    The same value as ``1 - sigmoid(x)`` without its cancellation (accurate to
    rounding for any finite x), in three numpy calls where ``Sigmoid`` needs
    four. The ``negate_sigmoid_inputs`` pass uses it: a sigmoid whose
    pre-activation can be produced negated for free (by negating weight
    columns once per sequence) becomes a ``NegSigmoid`` of that negation.
    """

    formula = "y = sigmoid(-x)"
    derivatives = ("dL/dx = -g * y * (1 - y)",)
    verified = True
    backward_uses_inputs = (False,)
    inplace_slots = (0,)

    def forward(self, *xs: Array) -> Array:
        out = np.empty_like(xs[0])
        with np.errstate(over="ignore"):
            self.forward_into(out, xs[0])
        return out

    def forward_into(self, out: Array, *xs: Array) -> None:
        for fn, args in _neg_sigmoid_calls(out, xs[0]):
            fn(*args)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return _neg_sigmoid_calls(out, xs[0])

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return (g * y * (y - 1),)

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        (o,) = outs
        if o is not None:
            np.subtract(y, 1, out=o)
            o *= y
            o *= g

    def factors_into(
        self, outs: tuple[Array, ...], y: Array, *xs: Array
    ) -> tuple[Array, ...] | None:
        (f,) = outs
        np.subtract(y, 1, out=f)
        f *= y
        return (f,)


class Tanh(Node):
    """Hyperbolic tangent ``y = tanh(x)``."""

    formula = "y = tanh(x)"
    derivatives = ("dL/dx = g * (1 - y^2)",)
    verified = True
    backward_uses_inputs = (False,)
    inplace_slots = (0,)

    def forward(self, *xs: Array) -> Array:
        return np.tanh(xs[0])

    def forward_into(self, out: Array, *xs: Array) -> None:
        np.tanh(xs[0], out=out)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return [(np.tanh, (xs[0], out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return (g * (1 - y * y),)

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        (o,) = outs
        if o is not None:
            np.multiply(y, y, out=o)
            np.subtract(1, o, out=o)
            o *= g

    def factors_into(
        self, outs: tuple[Array, ...], y: Array, *xs: Array
    ) -> tuple[Array, ...] | None:
        (f,) = outs
        np.multiply(y, y, out=f)
        np.subtract(1, f, out=f)
        return (f,)


def _relu_into(x: Array, out: Array) -> None:
    """``out = max(x, 0)``, with ``out`` positional so that a loop program can re-target
    it to each step (a bound ``out=`` keyword could not be)."""
    np.maximum(x, 0.0, out=out)


class ReLU(Node):
    """Rectifier ``y = max(x, 0)`` (derivative 0 at x = 0)."""

    formula = "y = max(x, 0)"
    derivatives = ("dL/dx = g * [x > 0]",)
    verified = True
    kinks = (0.0,)
    backward_uses_output = False
    inplace_slots = (0,)

    def forward(self, *xs: Array) -> Array:
        return np.maximum(xs[0], 0)

    def forward_into(self, out: Array, *xs: Array) -> None:
        np.maximum(xs[0], 0, out=out)

    def forward_calls(self, out: Array, *xs: Array) -> list[Call] | None:
        return [(_relu_into, (xs[0], out))]

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return (g * (xs[0] > 0),)

    def factors_into(
        self, outs: tuple[Array, ...], y: Array, *xs: Array
    ) -> tuple[Array, ...] | None:
        (f,) = outs
        np.greater(xs[0], 0, out=f)
        return (f,)


# --------------------------------------------------------------------------
# shape plumbing


class Slice(Node):
    """``y = x[..., start:stop]``: a block of the last axis (e.g. one gate of stacked gates)."""

    formula = "y = x[..., start:stop]"
    derivatives = ("dL/dx = g placed in columns start:stop, zeros elsewhere",)
    verified = True
    backward_uses_output = False

    def __init__(self, start: int, stop: int) -> None:
        for what, v in (("start", start), ("stop", stop)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise ShapeError(f"Slice: {what} must be an integer, got {v!r}")
        if not 0 <= start < stop:
            raise ShapeError(f"Slice needs 0 <= start < stop, got start={start}, stop={stop}")
        self.start = start
        self.stop = stop

    def params_repr(self) -> str:
        return f"{self.start}, {self.stop}"

    def infer_shape(self, *shapes: SymShape) -> SymShape:
        (x,) = shapes
        if len(x) < 1 or x[-1] == BATCH:
            raise ShapeError(f"input 0 'x' must have a feature axis, got {_fmt(x)}")
        last = x[-1]
        assert isinstance(last, int)
        if self.stop > last:
            raise ShapeError(
                f"slice {self.start}:{self.stop} is past the end of the last axis of {_fmt(x)}"
            )
        return (*x[:-1], self.stop - self.start)

    def forward(self, *xs: Array) -> Array:
        return xs[0][..., self.start : self.stop].copy()

    def forward_into(self, out: Array, *xs: Array) -> None:
        np.copyto(out, xs[0][..., self.start : self.stop])

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        gx = np.zeros_like(xs[0])
        gx[..., self.start : self.stop] = g
        return (gx,)


class Concat(Node):
    """``y = concatenate(xs, axis=-1)``; takes one or more inputs."""

    arity = None
    slots = ()
    formula = "y = [x0, x1, ...] along the last axis"
    derivatives = ("dL/dxi = the columns of g that xi filled",)
    verified = True
    backward_uses_output = False

    def infer_shape(self, *shapes: SymShape) -> SymShape:
        lead = shapes[0][:-1]
        total = 0
        for i, s in enumerate(shapes):
            if len(s) < 1 or s[:-1] != lead or s[-1] == BATCH:
                raise ShapeError(
                    f"input {i} has shape {_fmt(s)}; all inputs must be (*{_fmt(lead)}, n)"
                )
            last = s[-1]
            assert isinstance(last, int)
            total += last
        return (*lead, total)

    def forward(self, *xs: Array) -> Array:
        return np.concatenate(xs, axis=-1)

    def forward_into(self, out: Array, *xs: Array) -> None:
        np.concatenate(xs, axis=-1, out=out)

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        out = []
        start = 0
        for x in xs:
            stop = start + x.shape[-1]
            out.append(g[..., start:stop])
            start = stop
        return tuple(out)


# --------------------------------------------------------------------------
# losses: one value per row, shape (...,) = the input shape without its last axis


def _loss_shape(node: Node, shapes: Sequence[SymShape]) -> SymShape:
    a, b = shapes
    if a != b:
        raise ShapeError(
            f"input 0 '{node.slot(0)}' has shape {_fmt(a)} but input 1 '{node.slot(1)}' has "
            f"{_fmt(b)}; they must be equal"
        )
    if len(a) < 1:
        raise ShapeError(f"input 0 '{node.slot(0)}' must have a feature axis, got ()")
    return a[:-1]


class L2Loss(Node):
    """Squared error per row: ``y = 0.5 * sum((h - t) ** 2, axis=-1)``.

    Shapes: ``h``, ``t`` (..., H); ``y`` (...,). Summed over rows and steps by
    the engine, this is ``0.5 * sum((h - t) ** 2)``.
    """

    arity = 2
    slots = ("h", "t")
    formula = "y = 0.5 * sum((h - t)^2)"
    derivatives = ("dL/dh = g * (h - t)", "dL/dt = -g * (h - t)")
    verified = True
    backward_uses_output = False

    def infer_shape(self, *shapes: SymShape) -> SymShape:
        return _loss_shape(self, shapes)

    def forward(self, *xs: Array) -> Array:
        h, t = xs
        d = h - t
        out: Array = np.einsum("...i,...i->...", d, d)
        out *= 0.5
        return out

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        h, t = xs
        gh = g[..., None] * (h - t)
        return gh, -gh

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        h, t = xs
        oh, ot = outs
        first = oh if oh is not None else ot
        if first is None:
            return
        np.subtract(h, t, out=first)
        first *= g[..., None]
        if first is ot:
            np.negative(ot, out=ot)
        elif ot is not None:
            np.negative(first, out=ot)


class SigmoidBCE(Node):
    """Binary cross-entropy of sigmoid outputs, taken on logits, per row.

    ``y = sum(softplus(z) - t * z, axis=-1)`` = ``-sum(t log p + (1-t) log(1-p))``
    with ``p = sigmoid(z)``, computed as ``max(z, 0) - t z + log1p(exp(-|z|))``
    so it never overflows. Shapes: ``z``, ``t`` (..., K); ``y`` (...,).
    """

    arity = 2
    slots = ("logits", "targets")
    formula = "y = -sum(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z)))"
    derivatives = ("dL/dz = g * (sigmoid(z) - t)", "dL/dt = -g * z")
    verified = True
    backward_uses_output = False

    def infer_shape(self, *shapes: SymShape) -> SymShape:
        return _loss_shape(self, shapes)

    def forward(self, *xs: Array) -> Array:
        z, t = xs
        out = np.empty(z.shape[:-1], dtype=z.dtype)
        self.forward_into(out, z, t)
        return out

    def forward_into(self, out: Array, *xs: Array) -> None:
        z, t = xs
        e = np.abs(z)
        np.negative(e, out=e)
        np.exp(e, out=e)
        np.log1p(e, out=e)
        tmp = np.maximum(z, 0)
        e += tmp
        np.multiply(t, z, out=tmp)
        e -= tmp
        np.sum(e, axis=-1, out=out)

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        z, t = xs
        ge = g[..., None]
        return ge * (stable_sigmoid(z) - t), -ge * z

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        z, t = xs
        oz, ot = outs
        ge = g[..., None]
        if oz is not None:
            stable_sigmoid(z, out=oz)
            oz -= t
            oz *= ge
        if ot is not None:
            np.multiply(z, ge, out=ot)
            np.negative(ot, out=ot)


class SoftmaxCrossEntropy(Node):
    """Cross-entropy of a softmax over the last axis, taken on logits, per row.

    ``y = -sum(t * log_softmax(z), axis=-1)``; ``t`` holds target probabilities
    (one-hot for a class label). Shapes: ``z``, ``t`` (..., K); ``y`` (...,).
    """

    arity = 2
    slots = ("logits", "targets")
    formula = "y = -sum(t * log_softmax(z))"
    derivatives = ("dL/dz = g * (sum(t) * softmax(z) - t)", "dL/dt = -g * log_softmax(z)")
    verified = True
    backward_uses_output = False

    def infer_shape(self, *shapes: SymShape) -> SymShape:
        return _loss_shape(self, shapes)

    @staticmethod
    def _log_softmax(z: Array) -> Array:
        """``log_softmax(z)`` over the last axis, finite for every finite ``z``.

        ``z - max(z)`` overflows when the logits span more than the dtype's
        range (float32 logits of +-3e38); it is computed as twice the
        difference of the halves, which cannot overflow, and saturated at
        ``-finfo.max / 2``. Only entries whose softmax is exactly 0 anyway are
        changed by the saturation, and a target on one of them costs
        ``finfo.max / 2`` instead of an infinite (or NaN) loss.
        """
        half = np.finfo(z.dtype).max / 4
        m = z.max(axis=-1, keepdims=True)
        s: Array = z * 0.5
        s -= m * 0.5
        np.maximum(s, -half, out=s)
        s *= 2
        s -= np.log(np.exp(s).sum(axis=-1, keepdims=True))
        return s

    def forward(self, *xs: Array) -> Array:
        z, t = xs
        out: Array = -(t * self._log_softmax(z)).sum(axis=-1)
        return out

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        z, t = xs
        ls = self._log_softmax(z)
        ge = g[..., None]
        gz = ge * (t.sum(axis=-1, keepdims=True) * np.exp(ls) - t)
        return gz, -ge * ls
