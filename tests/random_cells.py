"""Random recurrent cells and random ways of running them, for the differential tests.

``random_case(seed)`` builds one cell from minigrad's public nodes and draws how
it is run (dtype, T, B, mask, truncation window, ``wrt``, output gradients).
The generator aims at the graph shapes that hand-written cells rarely have:

* overlapping and adjacent column slices of shared products (``m = x W`` read
  as ``m[:, 1:5]`` and ``m[:, 3:7]``), sums of column blocks of one product
  (``m[:, 0:H] + m[:, H:2H]``, also under a sigmoid) and ``sigmoid(v P + v P)``
  (one product twice once ``merge_matmuls`` runs);
* values read both whole and sliced, where the slice feeds an ``Add``, and
  the whole value is a loss or an output given ``grad_outputs``;
* a second state whose update does not read it (the state is read by a loss);
* a relay state (drawn from its own random stream, so that the cells of
  seeds without one stay as they were): one that nothing reads, one that
  reaches the loss only through another state's update two steps later, or
  one that swaps values with the second state (each updated from the other,
  neither from itself), so that a gradient from an initial state reaches the
  loss at every other step;
* L2, sigmoid and softmax cross-entropy losses, a transposed MatMul;
* an output that is the input x, or a slice of it (its gradient seeded while x
  itself may be left out of ``wrt``);
* ``wrt`` subsets (including the initial states only), masks with padding at
  either end of a row and rows padded inside a batch, truncation windows,
  float32 and float64.

Everything runs through ``run_engine``, the one place that calls minigrad's
public API for compiling and running a cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import minigrad as mg
from minigrad import CellBuilder, init
from minigrad.types import Array

D, H = 3, 4


@dataclass
class Result:
    """What one run gives: the loss, the outputs ``{name: (T, B, ...)}``, the final
    states ``{name: (B, ...)}`` and the gradients ``{"p:W" | "i:x" | "s:h": array}``."""

    loss: float
    outputs: dict[str, Array]
    states: dict[str, Array]
    grads: dict[str, Array] = field(default_factory=dict)


def run_engine(
    cell: mg.Cell,
    T: int,
    params: dict[str, Array],
    inputs: dict[str, Array],
    states: dict[str, Array] | None = None,
    mask: Array | None = None,
    wrt: tuple[str, ...] | None = None,
    truncate: int | None = None,
    passes: tuple[str, ...] | None = None,
    grad_outputs: dict[str, Array] | None = None,
    backward: bool = True,
) -> Result:
    """Compile ``cell`` for ``T`` steps and run it forward (and backward)."""
    plan = mg.plan_of(cell, T, wrt=wrt, truncate=truncate, passes=passes)
    run = plan.forward(params, inputs, states, mask=mask)
    out = Result(run.loss, run.outputs, run.states)
    if backward:
        g = plan.backward(run, grad_outputs=grad_outputs)
        out.grads = {"p:" + k: v for k, v in g.params.items()}
        out.grads.update({"i:" + k: v for k, v in g.inputs.items()})
        out.grads.update({"s:" + k: v for k, v in g.states.items()})
    return out


def random_cell(seed: int, dtype: type = np.float64) -> mg.Cell:
    """One random cell; the same seed gives the same graph in every dtype."""
    rng = np.random.default_rng(seed)
    b = CellBuilder(f"random{seed}", dtype=dtype)
    x = b.input("x", D)
    y = b.input("y", H)
    y2 = b.input("y2", 2 * H)
    h = b.state("h", H)
    counter = iter(range(1000))

    def param(shape: tuple[int, ...]) -> mg.Ref:
        return b.param(f"p{next(counter)}", shape, init=init.uniform(0.6))

    def pick() -> mg.Ref:
        return values[int(rng.integers(0, len(values)))]

    # a relay state r (see the module docstring), from a stream of its own, so that
    # the draws of cells without one do not change
    relay = _relay_kind(seed)
    # per-step values of width H, and wide products (B, 2H) read through slices
    shared_w = param((D, H))
    values: list[mg.Ref] = [x @ param((D, H)), h, h @ param((H, H)), x @ shared_w]
    wides: list[mg.Ref] = [x @ param((D, 2 * H)), h @ param((H, 2 * H))]
    # a state whose update does not read it (nor anything computed from it)
    free = rng.random() < 0.5
    if free:
        s = b.state("s", H)
        feed = x @ param((D, H)) if rng.random() < 0.5 else pick() + x @ param((D, H))
        if relay in (None, "unread"):
            b.update(s, mg.tanh(feed, name="next_s"))
        values += [s, s @ param((H, H))]
    whole: list[mg.Ref] = []
    for _ in range(int(rng.integers(6, 13))):
        kind = int(rng.integers(0, 16))
        a, c = pick(), pick()
        if kind == 0:
            v = a + c
        elif kind == 1:
            v = a - c
        elif kind == 2:
            v = a * mg.sigmoid(c)
        elif kind == 3:
            v = mg.tanh(a)
        elif kind == 4:
            v = mg.sigmoid(a + param((H,)))
        elif kind == 5:
            v = mg.gru_update(mg.sigmoid(a), c, mg.tanh(pick()))
        elif kind == 6:
            v = mg.affine(mg.tanh(a), param((H, H)), param((H,)))
        elif kind == 7:
            v = mg.slice_(mg.concat(a, c), 2, 2 + H)
        elif kind == 8:
            v = mg.one_minus(mg.neg_sigmoid(a)) * c
        elif kind == 9:
            v = mg.scale(a, 0.5) + a @ param((H, H))
        elif kind == 10:
            # overlapping or adjacent column blocks of a shared product
            w = wides[int(rng.integers(0, len(wides)))]
            lo = int(rng.integers(0, H + 1))
            v = mg.slice_(w, lo, lo + H) * mg.sigmoid(mg.slice_(w, H - lo, 2 * H - lo))
        elif kind == 11:
            # the sum of two column blocks of one product, often under a sigmoid
            w = wides[int(rng.integers(0, len(wides)))]
            v = mg.slice_(w, 0, H) + mg.slice_(w, H, 2 * H)
            v = mg.sigmoid(v) if rng.random() < 0.7 else v
        elif kind == 12:
            P = param((H, H))
            v = mg.sigmoid(a @ P + a @ P)
        elif kind == 13:
            # a slice that feeds an Add, of a value also read whole (a loss or an output)
            w = a @ param((H, 2 * H))
            lo = int(rng.integers(0, H + 1))
            v = mg.slice_(w, lo, lo + H) + c @ param((H, H))
            whole.append(w)
        elif kind == 14:
            wides.append(mg.tanh(a @ param((H, 2 * H))))
            continue
        else:
            v = mg.neg_sigmoid(a) + mg.scale(c, -1.5)
        values.append(v)
    other = values[int(rng.integers(len(values) // 2, len(values)))]
    into_h: mg.Ref | None = None
    if relay is not None:
        r = b.state("r", H)
        if relay == "unread":
            b.update(r, mg.tanh(x @ param((D, H)), name="next_r"))
        elif relay == "swap" and free:
            b.update(r, mg.tanh(s @ param((H, H)), name="next_r"))
        else:  # "chain": r is made from h and feeds s (or h) one step later
            b.update(r, mg.sigmoid(h @ param((H, H)) + x @ param((D, H)), name="next_r"))
        if relay != "unread":
            if free:
                feed = mg.add(feed, r @ param((H, H)), name="feed_r")
            else:
                into_h = r @ param((H, H))
    if into_h is not None:
        other = other + into_h
    b.update(h, mg.tanh(other + h @ param((H, H)), name="next_h"))
    b.loss(mg.l2_loss("next_h", y, name="l_h"))
    if free:
        if relay not in (None, "unread"):
            b.update(s, mg.tanh(feed, name="next_s"))
        b.loss(mg.l2_loss(s @ param((H, H)), y, name="l_s"))
    n_out = 0
    for w in whole:
        if rng.random() < 0.5:
            b.loss(mg.l2_loss(w, y2))
        else:
            b.output(f"o{n_out}", w)
            n_out += 1
    b.output("out", mg.tanh(values[-1], name="out"))
    if rng.random() < 0.5:
        b.output("mid", values[int(rng.integers(3, len(values)))])
    # sometimes a second kind of loss, on a transposed product
    head = int(rng.integers(0, 3))
    if head:
        logits = mg.matmul(values[int(rng.integers(0, len(values)))], param((H, H)), transpose_b=True)
        b.loss(mg.sigmoid_bce(logits, y) if head == 1 else mg.softmax_cross_entropy(logits, y))
    # sometimes an output that is the input x, or a slice of it (from the relay stream)
    echo = _echo_kind(seed)
    if echo == "whole":
        b.output("x_echo", x)
    elif echo == "slice":
        b.output("x_echo", mg.slice_(x, 1, D, name="x_part"))
    return b.build()


def _echo_kind(seed: int) -> str | None:
    """Whether the cell of ``seed`` outputs its input x (whole or a slice): last of its
    outputs, so that the output gradients drawn for the others do not change."""
    extra = np.random.default_rng([seed, 3])
    if extra.random() >= 0.3:
        return None
    return ("whole", "slice")[int(extra.integers(0, 2))]


def _relay_kind(seed: int) -> str | None:
    """Whether the cell of ``seed`` has a relay state, and which kind."""
    extra = np.random.default_rng([seed, 2])
    if extra.random() >= 0.4:
        return None
    return ("unread", "chain", "swap")[int(extra.integers(0, 3))]


@dataclass
class Case:
    """One random cell and how it is run."""

    seed: int
    cell: mg.Cell
    dtype: type
    T: int
    B: int
    params: dict[str, Array]
    inputs: dict[str, Array]
    states: dict[str, Array]
    mask: Array | None
    truncate: int | None
    wrt: tuple[str, ...] | None
    grad_outputs: dict[str, Array] | None

    def describe(self) -> str:
        mask = None if self.mask is None else self.mask.T.astype(int).tolist()
        return (
            f"seed {self.seed}: {np.dtype(self.dtype).name}, T={self.T}, B={self.B}, "
            f"mask (rows)={mask}, truncate={self.truncate}, wrt={self.wrt}, "
            f"grad_outputs={self.grad_outputs is not None}, states={list(self.cell.states)}"
        )

    def in_dtype(self, dtype: type) -> Case:
        """The same case with its cell and every array in ``dtype``."""
        cast = {k: np.asarray(v, dtype=dtype) for k, v in self.params.items()}
        return Case(
            self.seed,
            random_cell(self.seed, dtype),
            dtype,
            self.T,
            self.B,
            cast,
            {k: v.astype(dtype) for k, v in self.inputs.items()},
            {k: v.astype(dtype) for k, v in self.states.items()},
            self.mask,
            self.truncate,
            self.wrt,
            None
            if self.grad_outputs is None
            else {k: v.astype(dtype) for k, v in self.grad_outputs.items()},
        )

    def run(self, passes: tuple[str, ...] | None, backward: bool = True) -> Result:
        return run_engine(
            self.cell,
            self.T,
            self.params,
            self.inputs,
            self.states,
            self.mask,
            self.wrt,
            self.truncate,
            passes,
            self.grad_outputs,
            backward,
        )


def _mask(rng: np.random.Generator, T: int, B: int) -> Array:
    """Rows padded at the start, at the end, at both ends, entirely, or not at all."""
    mask = np.ones((T, B))
    for row in range(B):
        shape = int(rng.integers(0, 5))
        lead = int(rng.integers(1, T + 1)) if shape in (1, 3) else 0
        trail = int(rng.integers(1, T + 1)) if shape in (2, 3) else 0
        mask[:lead, row] = 0
        if trail:
            mask[T - trail :, row] = 0
        if shape == 4:
            mask[:, row] = 0
    if mask.all():  # at least one padded step somewhere
        mask[int(rng.integers(0, 2)) * (T - 1), int(rng.integers(0, B))] = 0
    return mask


def random_case(seed: int) -> Case:
    """The cell of ``seed`` and a random way of running it (deterministic)."""
    rng = np.random.default_rng([seed, 1])
    dtype: type = np.float32 if rng.random() < 0.25 else np.float64
    cell = random_cell(seed, dtype)
    T = int(rng.integers(1, 6))
    B = int(rng.integers(1, 4))
    params = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(dtype)
              for k, v in cell.init_params(seed).items()}
    inputs = {
        name: rng.standard_normal((T, B, *(int(d) for d in spec.shape[1:]))).astype(dtype)
        for name, spec in cell.inputs.items()
    }
    states = {
        name: (0.5 * rng.standard_normal((B, *(int(d) for d in spec.shape[1:])))).astype(dtype)
        for name, spec in cell.states.items()
    }
    mask = _mask(rng, T, B) if rng.random() < 0.6 else None
    truncate = int(rng.integers(1, T + 1)) if rng.random() < 0.35 else None
    sources = [*cell.params, *cell.inputs, *cell.states]
    wrt: tuple[str, ...] | None = None
    choice = rng.random()
    if choice < 0.2:
        wrt = tuple(cell.states)
    elif choice < 0.35:
        wrt = (list(cell.states)[-1],)
    elif choice < 0.5:
        k = int(rng.integers(1, len(sources) + 1))
        wrt = tuple(str(n) for n in rng.choice(sources, size=k, replace=False))
    grad_outputs = None
    if rng.random() < 0.6:
        grad_outputs = {
            name: rng.standard_normal((T, B, *(int(d) for d in cell.spec_shape(node)[1:]))).astype(dtype)
            for name, node in cell.outputs.items()
        }
    return Case(seed, cell, dtype, T, B, params, inputs, states, mask, truncate, wrt, grad_outputs)
