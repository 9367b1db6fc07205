"""Loop programs: one compiled step of the forward and of the backward loop, run for any T.

Every step of an unrolled cell does the same work, so a cell does not need
one plan per sequence length. A ``LoopWorkspace`` binds the plan of a short
unroll (``K`` steps, a handful, from networkx's unrolled graph as every plan
is) with the ordinary binding (``minigrad.runtime``, with every binding
pass), and takes from it:

* the **body**: the calls of one steady-state step ``m`` (neither the first
  nor the last), forward (the step's nodes, then the carries into step
  ``m + 1``) and backward (those carries' local derivatives, then the nodes'
  in reverse order), with the write modes (assign or add) of that step;
* the **prologue and epilogue**: the calls that are not per step (parameter-
  only nodes, time-batched GEMMs over all steps, deferred weight gradients,
  precomputed Jacobians), which run once per pass over whole buffers.

Each buffer whose leading axis is the step (values, gradients, Jacobian
factors, the mask) is laid out again as a **window** of ``capacity`` steps,
plus one halo slot for buffers with a step after the last (the states): the
longest T run in one piece so far (at most ``piece_steps``, the steps whose
values, gradients and factors fit in ``PIECE_BYTES``), or the chunk length C
(``chunk_steps``: the steps that fit in ``CHUNK_BYTES``, 4 to 512). Every view
that the body's calls take of such a buffer at step ``m + d`` becomes, for
each step ``t`` of the window, the same view at step ``t + d``: the per-step
views come from ``list(buffer)`` and the per-step argument tuples from
``zip``, both at C speed, once per window, so binding does not grow with T.

A pass over at most ``piece_steps`` steps runs in one piece: ``for t in range(T): for fn, args
in body: fn(*args[t])``, with the prologue and epilogue over whole buffers.
Gradient buffers are zeroed before each backward pass (the last step, which
has no later step to add into its regions first, then adds to zeros), so the
steady-state write modes hold at every step.

A longer pass runs **chunk by chunk**, C steps at a time, over the same window
(so its memory does not grow with T beyond what the backward pass must keep):

* forward: the calls that touch no per-step buffer (parameter-only nodes) run
  once; then per chunk, the chunk's inputs and mask are copied in, the
  per-step prologue, the body and the per-step epilogue run over its steps,
  the losses and outputs are taken, the values the backward pass reads are
  copied into a **history** of T steps (``_keep_plan``), and the states' halo
  slot moves to the front for the next chunk. ``keep=False`` (a forward pass
  no backward follows) keeps no history.
* backward, chunks in reverse: the kept values come back from the history and
  the inputs and mask from the caller's arrays (the inputs are never kept); a
  few body calls recompute values otherwise kept (``_replayable``: GRU's
  ``r * h`` and its state update) and, when cheaper to recompute than to keep,
  the per-step forward epilogue (the read-out and the loss) runs again; the
  gradient window is zeroed, the chunk's seeds written, its Jacobian factors
  computed, and after the per-step backward prologue the gradient of the state
  after the chunk (from the chunk after it) is added into the halo slot; then
  the body in reverse and the per-step epilogue. The gradients of values that
  are not per step (weights) are summed over chunks; the trailing epilogue
  calls that touch no per-step buffer (gradients of parameter-only nodes) run
  once, after the last chunk. The result equals the one-piece pass up to the
  rounding of those sums.

When the history of a pass would take more than ``HISTORY_BYTES`` (128 MiB: a
GRU-46 sequence model past 11,400 steps at B = 8, or 91,000 at B = 1), the forward
pass keeps only each chunk's halo slots (the states entering it) and the backward
pass runs each chunk's forward calls again from them before its backward calls
(``recompute``): the same calls on the same values, so the results are those of the
kept-history pass bit for bit, for one more forward pass, and the memory no longer
grows with T beyond one state per chunk.

With ``truncate=k`` the backward step that does not cross the cut state edge
(into a step that is a multiple of k) is taken from a second template step of
the same short unroll (``K >= k + 2``); a chunked pass cuts at the same global
steps.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.arena import ALIGN, Arena
from minigrad.errors import (
    DTypeError,
    GraphError,
    NonFiniteError,
    ShapeError,
)
from minigrad.nodes import Node
from minigrad.runtime.execute import check_mask, dtype_accepted
from minigrad.runtime.instr import Instr
from minigrad.runtime.workspace import Gradients, Run, Workspace
from minigrad.types import AnyArray

if TYPE_CHECKING:
    from minigrad.cell import Cell
    from minigrad.plan import Plan

__all__ = [
    "CHUNK_BYTES",
    "HISTORY_BYTES",
    "PIECE_BYTES",
    "LoopWorkspace",
    "chunk_steps",
    "piece_steps",
    "template_steps",
]

_Call = tuple[Callable[..., Any], tuple[Any, ...]]
_Body = list[tuple[Callable[..., Any], list[tuple[Any, ...]]]]


def template_steps(plan_shapes: list[tuple[int, ...]], batch: int, truncate: int | None) -> int:
    """The number of steps K of the short unroll a loop program is cut from.

    At least 3 (a first, a steady and a last step), ``truncate + 2`` with a
    truncation window, and such that no buffer that is not per step (parameters,
    parameter-only values, per-step scratch of shape (B, ...)) has K or K + 1
    as its leading size: buffers are told apart by that size.
    """
    avoid = {batch, batch - 1}
    for shape in plan_shapes:
        for d in shape:
            avoid.update((int(d), int(d) - 1))
    k = max(3, truncate + 2 if truncate is not None else 0)
    while k in avoid:
        k += 1
    return k


def _iteration(ins: Instr) -> int | None:
    """The loop iteration an instruction belongs to: a node at step t to t, the carry
    into state t to t - 1; None for instructions that are not per step."""
    if ins.step < 0:
        return None
    return ins.step - 1 if ins.kind == "carry" else ins.step


def _address(a: AnyArray) -> int:
    return int(a.__array_interface__["data"][0])


class _Owners:
    """The per-step buffers of a K-step workspace and their copies of ``capacity`` steps."""

    def __init__(self, K: int, batch: int) -> None:
        self.K = K
        self.batch = batch
        self.arrays: list[AnyArray] = []
        self.new: list[AnyArray] = []
        self.ones: set[int] = set()
        self.capacity = K
        self._starts: list[int] = []
        self._index: list[int] = []

    def add(self, arrays: list[AnyArray], ones: tuple[AnyArray, ...] = ()) -> None:
        """Take in the per-step buffers among ``arrays`` (mask buffers in ``ones`` start
        as ones) and give each a copy of ``capacity`` steps."""
        known = set(self._starts)
        K = self.K
        for a in arrays:
            if not (a.ndim >= 2 and a.shape[0] in (K, K + 1) and a.shape[1] == self.batch):
                continue
            if a.size == 0 or _address(a) in known:
                continue
            known.add(_address(a))
            i = len(self.arrays)
            self.arrays.append(a)
            if any(a is o for o in ones):
                self.ones.add(i)
            self.new.append(self._fresh(i, self.capacity))
        order = sorted(range(len(self.arrays)), key=lambda j: _address(self.arrays[j]))
        self._index = order
        self._starts = [_address(self.arrays[j]) for j in order]

    def _fresh(self, i: int, capacity: int, arena: Arena | None = None) -> AnyArray:
        a = self.arrays[i]
        shape = (capacity + a.shape[0] - self.K, *a.shape[1:])
        arr = (
            arena.empty(shape, a.dtype)
            if arena is not None
            else np.empty(shape, a.dtype)
        )
        if i in self.ones:
            arr.fill(1)
        return arr

    def find(self, a: Any) -> tuple[int, int] | None:
        """(owner index, byte offset) of the per-step buffer holding ``a``, or None."""
        if not isinstance(a, np.ndarray) or a.size == 0:
            return None
        addr = _address(a)
        j = bisect.bisect_right(self._starts, addr) - 1
        if j < 0:
            return None
        i = self._index[j]
        if addr >= self._starts[j] + self.arrays[i].nbytes:
            return None
        return i, addr - self._starts[j]

    def grow(self, capacity: int) -> None:
        """Lay the per-step buffers out again for ``capacity`` steps (their contents are
        not kept: every pass writes its values before reading them)."""
        self.new = []  # let the old layout go before the new one is allocated
        total = sum(
            (capacity + a.shape[0] - self.K) * (a.nbytes // a.shape[0]) for a in self.arrays
        )
        # every array starts on a cache line: room for the alignment of each
        arena = Arena(total + ALIGN * (len(self.arrays) + 1))
        self.capacity = capacity
        self.new = [self._fresh(i, capacity, arena) for i in range(len(self.arrays))]

    def span(self, a: Any, T: int) -> Any:
        """The view of ``a`` (a view of a K-step workspace) in the layout for T steps:
        views over all steps get T steps; a view of one step keeps early steps and
        moves the last ones (the final state) to the end."""
        if isinstance(a, tuple):
            return tuple(self.span(x, T) for x in a)
        found = self.find(a)
        if found is None:
            return a
        i, off = found
        owner = self.arrays[i]
        new = self.new[i]
        stride = owner.strides[0]
        if a.ndim >= 1 and a.shape[0] in (self.K, self.K + 1) and a.strides[0] == stride:
            shape = (a.shape[0] - self.K + T, *a.shape[1:])
        else:
            step, rem = divmod(off, stride)
            if step >= self.K - 1:
                step += T - self.K
            off = step * stride + rem
            shape = a.shape
        return np.ndarray(shape, a.dtype, buffer=new, offset=off, strides=a.strides)

    def per_step(self, a: Any, m: int, cache: dict[tuple[Any, ...], list[Any]]) -> list[Any] | None:
        """For a view ``a`` used by the template step ``m``: the same view at every step
        t of the capacity layout (a list indexed by t), or None if ``a`` is not per step."""
        found = self.find(a)
        if found is None:
            return None
        i, off = found
        stride = self.arrays[i].strides[0]
        step, rem = divmod(off, stride)
        d = step - m
        new = self.new[i]
        C = self.capacity
        if d < 0 or d + C > new.shape[0]:
            raise GraphError(f"loop program: a step reads step t{d:+d}, outside the loop window")
        key = (i, rem, a.shape, a.strides, a.dtype.str, d)
        got = cache.get(key)
        if got is None:
            sub = np.ndarray(
                (new.shape[0], *a.shape),
                a.dtype,
                buffer=new,
                offset=rem,
                strides=(stride, *a.strides),
            )
            got = cache[key] = list(sub)[d : d + C]
        return got


CHUNK_BYTES = 16 << 20
"""The bytes a loop workspace's window of steps takes, about: values, gradients and Jacobian
factors of ``chunk`` steps (``chunk_steps``)."""

PIECE_BYTES = 128 << 20
"""A sequence whose per-step buffers fit in about this many bytes runs in one piece
(``piece_steps``); a longer one runs in chunks."""

HISTORY_BYTES = 128 << 20
"""A chunked forward pass keeps the values its backward pass reads (the history) when
they take at most this many bytes for the whole sequence (as much as a one-piece run's
``PIECE_BYTES``); a longer sequence keeps only each chunk's incoming states, and its
backward pass runs each chunk's forward again (``recompute``): memory stops growing with
T, for one more forward pass. A GRU-46 at B = 8 keeps 11.8 KB a step: 11,400 steps."""

_CHUNK: int | None = None
"""Forces the chunk length and the longest one-piece run (tests only: chunked runs on
short sequences)."""


def chunk_steps(step_bytes: int) -> int:
    """The chunk length C of a workspace whose per-step buffers (values, gradients,
    Jacobian factors) take ``step_bytes`` per step: the steps that fit in
    ``CHUNK_BYTES``, between 4 and 512 (the lower bound is reached only by steps of
    megabytes, a wide model on a large batch, whose window must stay small)."""
    if _CHUNK is not None:
        return _CHUNK
    return max(4, min(512, CHUNK_BYTES // max(step_bytes, 1)))


def piece_steps(step_bytes: int) -> int:
    """The longest T that runs in one piece (no chunks) for per-step buffers of
    ``step_bytes``: the steps that fit in ``PIECE_BYTES``, and at least ``chunk_steps``.
    Short sequences (the benchmark sizes, JSB chorales) run exactly as a one-piece
    loop; the window then follows the longest such T."""
    if _CHUNK is not None:
        return _CHUNK
    return max(chunk_steps(step_bytes), PIECE_BYTES // max(step_bytes, 1))


def _weakly(arrays: Mapping[str, Any]) -> dict[str, Any]:
    """Weak references to arrays (an array made by ``np.asarray`` from a list, which only
    this module held, is then gone)."""
    return {k: v if isinstance(v, weakref.ref) else weakref.ref(v) for k, v in arrays.items()}


def _owner(o: _Owners, a: Any) -> int | None:
    found = o.find(a)
    return None if found is None else found[0]


def _arrays(x: Any) -> list[AnyArray]:
    if isinstance(x, np.ndarray):
        return [x]
    if isinstance(x, tuple | list):
        return [a for y in x for a in _arrays(y)]
    return []


def _reads(fn: Any, args: tuple[Any, ...]) -> list[AnyArray]:
    """The arrays a bound call reads (all its array arguments when unsure)."""
    import functools

    if isinstance(fn, np.ufunc):
        return _arrays(args[: fn.nin])
    if isinstance(fn, functools.partial) and isinstance(fn.func, np.ufunc):
        return _arrays(args)
    if fn is np.copyto:
        return _arrays(args[1:])
    op = getattr(fn, "__self__", None)
    name = getattr(fn, "__name__", "")
    if isinstance(op, Node) and type(op).verified:
        if name == "forward_into":
            return _arrays(args[1:])
        if name == "vjp_into":
            _outs, g, y, *xs = args
            read = [g]
            if type(op).backward_uses_output:
                read.append(y)
            read.extend(x for i, x in enumerate(xs) if op.uses_input(i))
            return _arrays(tuple(read))
    return _arrays(args)


def _writes(fn: Any, args: tuple[Any, ...]) -> list[AnyArray]:
    """The arrays a bound forward or backward call writes (all its array arguments when
    unsure)."""
    import functools

    if isinstance(fn, np.ufunc):
        return _arrays(args[fn.nin :])
    if isinstance(fn, functools.partial) and isinstance(fn.func, np.ufunc):
        return _arrays(fn.keywords.get("out"))
    if fn is np.copyto:
        return _arrays(args[:1])
    op = getattr(fn, "__self__", None)
    if isinstance(op, Node) and getattr(fn, "__name__", "") in ("forward_into", "vjp_into"):
        return _arrays(args[:1])
    return _arrays(args)


def _spans(arrays: list[AnyArray]) -> list[tuple[int, int]]:
    """The byte ranges ``[start, end)`` of non-empty arrays."""
    return [(_address(a), _address(a) + a.nbytes) for a in arrays if a.size]


def _overlap(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> bool:
    """Whether a byte range of ``a`` overlaps one of ``b``."""
    return any(lo < hi2 and lo2 < hi for lo, hi in a for lo2, hi2 in b)


def _per_chunk_calls(
    pro: list[_Call],
    epi: list[_Call],
    roots: list[AnyArray],
    per_step: Callable[[Any], bool],
) -> int:
    """How many leading calls of a backward epilogue must run after every chunk.

    A call runs per chunk when it touches a per-step buffer, or when it reads a
    buffer that per-chunk work writes and that is not one of ``roots`` (the
    gradients summed over chunks): a scratch product such as a time-batched
    weight gradient holds one chunk's share only, so whatever reads it must run
    while it does. Every call before the last such one runs per chunk too. The
    rest run once, after the last chunk, on the summed roots.
    """

    kept = _spans(roots)

    def scratch(a: tuple[int, int]) -> bool:
        return not any(lo <= a[0] and a[1] <= hi for lo, hi in kept)

    split = 0
    while True:
        dirty = [
            sp for fn, args in [*pro, *epi[:split]] for sp in _spans(_writes(fn, args))
            if scratch(sp)
        ]
        later = split
        for j in range(split, len(epi)):
            fn, args = epi[j]
            if per_step(args) or _overlap(_spans(_reads(fn, args)), dirty):
                later = j + 1
        if later == split:
            return split
        split = later


def _halo_point(pro: list[_Call], slots: list[AnyArray]) -> int:
    """Where, among the calls of a backward prologue, the state gradients carried from
    the next chunk go into ``slots``: after the last call that writes a slot before any
    call reads one (a call that reads a slot, an accumulation included, must see them)."""
    spans = _spans(slots)
    point = 0
    for j, (fn, args) in enumerate(pro):
        if _overlap(_spans(_reads(fn, args)), spans):
            break
        if _overlap(_spans(_writes(fn, args)), spans):
            point = j + 1
    return point


def _normalised(call: _Call) -> _Call:
    """A ``partial(ufunc, out=array)`` call spelled as ``ufunc(*args, array)``, so that
    every array of a call is in its positional arguments."""
    fn, args = call
    import functools

    if isinstance(fn, functools.partial) and isinstance(fn.func, np.ufunc) and not fn.args:
        kw = dict(fn.keywords)
        out = kw.pop("out", None)
        if not kw and out is not None and len(args) == fn.func.nin:
            return fn.func, (*args, out)
    return call


class LoopWorkspace(Workspace):
    """A workspace that runs the body of a K-step plan for any number of steps.

    Args:
        plan: the plan of the cell for ``K`` steps (``template_steps``).
        batch: the batch size B.
        masked: whether passes take a mask.
    """

    def __init__(self, plan: Plan, batch: int, masked: bool) -> None:
        super().__init__(plan, batch, masked)
        K = plan.steps
        self._k_bufs = self.bufs
        self._k_mask = (self.mask, self.mask_col, self.mask_bool)
        self._owners = _Owners(K, batch)
        self._owners.add(
            [*self.arena.arrays, self.mask, self.mask_bool], ones=(self.mask, self.mask_bool)
        )
        self._arrays_seen = len(self.arena.arrays)
        self._m = 1
        t = plan.truncate
        self._cut = t - 1 if t is not None and t > 1 else None
        if t is not None and t > 1:
            self._m = t
        self._fwd_parts = self._split(self.fwd, self.fwd_spans, self._m)
        # the backward binding with and without output gradients, each made when first used
        self._bwd_parts: dict[bool, tuple[list[_Call], list[_Call], list[_Call], list[_Call]]] = {}
        self._bodies: dict[str, _Body] = {}
        self._cache: dict[tuple[Any, ...], list[Any]] = {}
        self._memo: dict[Any, Any] = {}
        self._with_outputs = False
        self._parts: tuple[list[_Call], list[_Call]] = ([], [])
        self._cur_T: int | None = None
        self._grow(K)
        # chunked execution of sequences longer than ``chunk`` (see the module docstring)
        o = self._owners
        self._values = len(o.arrays)  # owners [0, _values): forward values, inputs, mask
        # the bytes of every step: values, and about as much again for gradients and
        # Jacobian factors (not bound yet: a workspace that only runs forward never binds
        # them)
        per_step = 3 * sum(a.nbytes // a.shape[0] for a in o.arrays)
        self.chunk = chunk_steps(per_step)
        self.piece = piece_steps(per_step)
        self._total = K
        self._fixed = {
            i
            for a in (*(self._k_bufs["in:" + n] for n in plan.cell.inputs), *self._k_mask)
            if (i := _owner(o, a)) is not None
        }
        pro, _body, epi = self._fwd_parts
        self._fwd_once = [c for c in (*pro, *epi) if not self._per_step(c[1])]
        self._history: dict[int, AnyArray] = {}
        # with ``recompute``: the halo slots (incoming states) of every chunk, by owner
        self._marks: list[list[tuple[int, AnyArray]]] = []
        self.recompute = False
        self._keep: tuple[list[int], bool, list[int]] | None = None
        self._chunked = False
        # the inputs, initial states and mask of a chunked forward pass, and whether it kept
        # the values of the backward pass
        self._held: tuple[dict[str, Any], dict[str, AnyArray], AnyArray | None, bool] | None = (
            None
        )

    def _bind_flavour(self, with_outputs: bool) -> None:
        """Bind the backward pass (with or without output gradients) on the K-step buffers
        and cut its body out."""
        current = (self.T, self.bufs, self.mask, self.mask_col, self.mask_bool)
        self.T, self.bufs = self.plan.steps, self._k_bufs
        self.mask, self.mask_col, self.mask_bool = self._k_mask
        try:
            Workspace._use_binding(self, with_outputs)
        finally:
            self.T, self.bufs, self.mask, self.mask_col, self.mask_bool = current
        bwd, spans = self.bwd, self.bwd_spans
        self._owners.add(self.arena.arrays[self._arrays_seen :])
        self._arrays_seen = len(self.arena.arrays)
        pro, body, epi = self._split(bwd, spans, self._m)
        cut_body: list[_Call] = []
        if self._cut is not None:
            _p, cut_body, _e = self._split(bwd, spans, self._cut)
        self._bwd_parts[with_outputs] = (pro, body, epi, cut_body)
        self._bind_bodies()

    # -- cutting the K-step lists ----------------------------------------------

    def _split(
        self,
        calls: list[_Call],
        spans: list[tuple[Instr, int, int]],
        m: int,
    ) -> tuple[list[_Call], list[_Call], list[_Call]]:
        pro: list[_Call] = []
        body: list[_Call] = []
        epi: list[_Call] = []
        seen_loop = False
        for ins, lo, hi in spans:
            it = _iteration(ins)
            part = calls[lo:hi]
            if it is None:
                (epi if seen_loop else pro).extend(part)
                continue
            if epi and part:
                raise GraphError(
                    f"cell '{self.plan.cell.name}': loop program: the step instruction "
                    f"'{ins.name}' comes after a whole-sequence one"
                )
            seen_loop = True
            # the natural order may start step t + 1's nodes before step t's last carries;
            # a step's calls (its nodes, then the carries into the next step) run together
            if it == m:
                body.extend(_normalised(c) for c in part)
        return pro, body, epi

    # -- capacity --------------------------------------------------------------

    def _grow(self, capacity: int) -> None:
        self._bodies = {}
        self._cache = {}
        old = sum(int(a.nbytes) for a in self._owners.new)
        self._owners.new = []
        if old > 8 << 20:
            # views of the old layout sit in reference cycles: free a large one now, not
            # at the interpreter's next collection, before the new one is made
            gc.collect()
        self._owners.grow(capacity)
        self._memo.clear()
        self._bind_bodies()

    def _bind_bodies(self) -> None:
        if "fwd" not in self._bodies:
            self._bodies["fwd"] = self._bind_body(self._fwd_parts[1])
        for with_outputs, (_pro, body, _epi, cut) in self._bwd_parts.items():
            if f"bwd{with_outputs}" in self._bodies:
                continue
            self._bodies[f"bwd{with_outputs}"] = self._bind_body(body)
            if self._cut is not None:
                self._bodies[f"cut{with_outputs}"] = self._bind_body(cut, self._cut)

    def _bind_body(self, calls: list[_Call], m: int | None = None) -> _Body:
        step = self._m if m is None else m
        C = self._owners.capacity
        cache = self._cache

        def column(a: Any) -> Any:
            """A per-step list for ``a``, or ``a`` itself when it is the same at every step."""
            if isinstance(a, tuple):
                cols = [column(x) for x in a]
                if not any(isinstance(c, list) for c in cols):
                    return a
                seqs = (c if isinstance(c, list) else itertools.repeat(c, C) for c in cols)
                return list(zip(*seqs, strict=False))
            got = self._owners.per_step(a, step, cache)
            return a if got is None else got

        body: _Body = []
        for fn, args in calls:
            cols = [column(a) for a in args]
            seqs = [c if isinstance(c, list) else itertools.repeat(c, C) for c in cols]
            body.append((fn, list(zip(*seqs, strict=False)) if seqs else [()] * C))
        return body

    def _length(self, T: int) -> None:
        """Point the buffers at a layout of ``T`` steps, growing the capacity if needed."""
        if T > self._owners.capacity:
            # let go of every view of the old layout before the new one is allocated
            self.bufs, self.gbufs, self._memo, self._parts = self._k_bufs, {}, {}, ([], [])
            self.mask, self.mask_col, self.mask_bool = self._k_mask
            self.factor_jobs, self._zero = [], []
            self._grow(T)
            self._cur_T = None
        if self._cur_T == T:
            return
        o = self._owners
        self.T = T
        self._cur_T = T
        got = self._memo.get(("fwd", T))
        if got is None:
            pro, _body, epi = self._fwd_parts
            got = self._memo["fwd", T] = (
                {k: o.span(v, T) for k, v in self._k_bufs.items()},
                tuple(o.span(a, T) for a in self._k_mask),
                [(fn, o.span(args, T)) for fn, args in pro],
                [(fn, o.span(args, T)) for fn, args in epi],
            )
        self.bufs, masks, _pro, _epi = got
        self.mask, self.mask_col, self.mask_bool = masks
        self._memo["fwd"] = (_pro, _epi)

    @property
    def nbytes(self) -> int:
        """Bytes of the buffers bound (parameters, their gradients and the K-step
        template's), of the per-step buffers laid out for the current capacity, and of
        the values kept for the backward pass of a chunked run."""
        return (
            sum(int(a.nbytes) for a in self.arena.arrays)
            + sum(int(a.nbytes) for a in self._owners.new)
            + sum(int(a.nbytes) for a in self._history.values())
            + sum(int(a.nbytes) for m in self._marks for _i, a in m)
        )

    def history_bytes(self, T: int) -> int:
        """The bytes of the values a chunked forward pass over ``T`` steps would keep for
        its backward pass (compared with ``HISTORY_BYTES``)."""
        o, K = self._owners, self.plan.steps
        return sum(
            (T + a.shape[0] - K) * (a.nbytes // a.shape[0])
            for a in (o.arrays[i] for i in self._keep_plan()[0])
        )

    # -- running ---------------------------------------------------------------

    def steps_of(self, T: int) -> None:
        """Prepare a pass over ``T`` steps (called before ``forward``)."""
        self._total = T
        self._length(T if T <= self.piece else self.chunk)

    @property
    def total(self) -> int:
        """T of the current pass (``steps_of``); ``T`` is the steps of the window in use."""
        return self._total

    def _per_step(self, args: Any) -> bool:
        return any(self._owners.find(a) is not None for a in _arrays(args))

    def _execute_forward(self) -> None:
        pro, epi = self._memo["fwd"]
        for fn, args in pro:
            fn(*args)
        body = self._bodies["fwd"]
        for t in range(self.T):
            for fn, targs in body:
                fn(*targs[t])
        for fn, args in epi:
            fn(*args)

    def _use_binding(self, with_outputs: bool) -> None:
        if with_outputs not in self._bwd_parts:
            self._bind_flavour(with_outputs)
        super()._use_binding(with_outputs)
        self._with_outputs = with_outputs
        T = self.T
        key = ("bwd", with_outputs, T)
        got = self._memo.get(key)
        if got is None:
            o = self._owners
            gbufs = {k: o.span(v, T) for k, v in self.gbufs.items()}
            jobs = [
                (fn, o.span(outs, T), o.span(y, T), o.span(xs, T))
                for fn, outs, y, xs in self.factor_jobs
            ]
            # every gradient buffer starts from zeros (see the module docstring)
            zero: list[AnyArray] = []
            done: set[int] = set()
            for v in self.gbufs.values():
                found = o.find(v)
                if found is None:
                    if v.flags.writeable and not any(v is z for z in zero):
                        zero.append(v)
                elif found[0] not in done:
                    done.add(found[0])
                    new = o.new[found[0]]
                    zero.append(new[: T + new.shape[0] - o.capacity])
            pro, _body, epi, _cut = self._bwd_parts[with_outputs]
            parts = (
                [(fn, o.span(a, T)) for fn, a in pro],
                [(fn, o.span(a, T)) for fn, a in epi],
            )
            got = self._memo[key] = (gbufs, jobs, zero, parts)
        self.gbufs, self.factor_jobs, self._zero, self._parts = got

    def _execute_backward(self) -> None:
        pro, epi = self._parts
        for fn, args in pro:
            fn(*args)
        w = self._with_outputs
        body = self._bodies[f"bwd{w}"]
        T = self.T
        k = self.plan.truncate
        if self._cut is None or k is None:
            for t in range(T - 1, -1, -1):
                for fn, targs in body:
                    fn(*targs[t])
        else:
            cut = self._bodies[f"cut{w}"]
            for t in range(T - 1, -1, -1):
                b = cut if (t + 1) % k == 0 and t + 1 < T else body
                for fn, targs in b:
                    fn(*targs[t])
        for fn, args in epi:
            fn(*args)

    # -- chunked runs ------------------------------------------------------------

    def forward(
        self,
        params: Mapping[str, AnyArray],
        inputs: Mapping[str, AnyArray],
        states: Mapping[str, AnyArray],
        mask: AnyArray | None,
        with_outputs: bool = True,
        keep: bool = True,
    ) -> Run:
        """The forward pass over the ``T`` of ``steps_of``: in one piece when T is at most
        ``chunk``, else chunk by chunk, keeping the values the backward pass reads (in
        ``_history``) only when ``keep``."""
        self._held = None
        self._chunked = self._total > self.piece
        if not self._chunked:
            return super().forward(params, inputs, states, mask, with_outputs)
        return self._forward_chunks(params, inputs, states, mask, with_outputs, keep)

    def backward(self, grad_outputs: Mapping[str, AnyArray], loss_scale: float) -> Gradients:
        if not self._chunked:
            return super().backward(grad_outputs, loss_scale)
        if self._held is None or not self._held[3]:
            raise GraphError(
                f"cell '{self.plan.cell.name}': the last forward pass kept no values for a "
                "backward pass (it ran with backward=False)"
            )
        return self._backward_chunks(grad_outputs, loss_scale)

    def arguments(
        self,
    ) -> tuple[dict[str, AnyArray], dict[str, AnyArray], dict[str, AnyArray], AnyArray | None]:
        """The parameters, inputs, initial states and mask of the last forward pass."""
        cell = self.plan.cell
        params = {p: self._k_bufs["param:" + p] for p in cell.params}
        if self._held is not None:
            _ins, st, m, _keep = self._held
            return params, self._held_inputs(), dict(st), m
        inputs = {i: self.bufs["in:" + i] for i in cell.inputs}
        states = {s: self.bufs["state:" + s][0] for s in cell.states}
        return params, inputs, states, self.mask if self.masked else None

    def _held_inputs(self) -> dict[str, AnyArray]:
        """The inputs of the last chunked forward pass (held strongly until its backward
        pass, weakly after it or without one)."""
        assert self._held is not None
        out: dict[str, AnyArray] = {}
        for name, ref in self._held[0].items():
            arr = ref() if isinstance(ref, weakref.ref) else ref
            if arr is None:
                raise GraphError(
                    f"cell '{self.plan.cell.name}': input '{name}' of the last forward pass "
                    "is no longer held by the caller"
                )
            out[name] = arr
        return out

    def _hold(
        self,
        params: Mapping[str, AnyArray],
        inputs: Mapping[str, AnyArray],
        states: Mapping[str, AnyArray],
        mask: AnyArray | None,
    ) -> tuple[dict[str, AnyArray], dict[str, AnyArray], AnyArray | None]:
        """Check the arguments of a chunked pass (as ``Workspace._load`` does), copy the
        parameters in, and return the inputs (the caller's arrays, read again chunk by
        chunk), the initial states and the mask (T, B) in the cell's dtype."""
        cell = self.plan.cell
        cname = cell.name
        T, B = self._total, self.batch

        def checked(
            given: Any, shape: tuple[int, ...], dtype: Any, what: str, exact: bool = False
        ) -> AnyArray:
            arr = np.asarray(given)
            if arr.shape != shape:
                raise ShapeError(f"cell '{cname}': {what} has shape {arr.shape}, expected {shape}")
            if not dtype_accepted(arr.dtype, dtype, exact):
                raise DTypeError(
                    f"cell '{cname}': {what} is {arr.dtype}, expected {dtype} (convert it "
                    "explicitly; minigrad never changes a dtype silently)"
                )
            return arr

        declared = (("parameter", params, cell.params), ("input", inputs, cell.inputs))
        for what, given, names in declared:
            missing = [n for n in names if n not in given]
            if missing:
                raise GraphError(
                    f"cell '{cname}': {what} '{missing[0]}' is missing; expected {list(names)}"
                )
            extra = sorted(set(given) - set(names))
            if extra:
                raise GraphError(
                    f"cell '{cname}': unknown {what}(s) {extra}; expected {list(names)}"
                )
        for p in cell.params:
            dst = self._k_bufs["param:" + p]
            np.copyto(dst, checked(params[p], dst.shape, dst.dtype, f"parameter '{p}'"))
        held_in: dict[str, AnyArray] = {}
        for n in cell.inputs:
            k = self._k_bufs["in:" + n]
            held_in[n] = checked(inputs[n], (T, *k.shape[1:]), k.dtype, f"input '{n}'", True)
        extra = sorted(set(states) - set(cell.states))
        if extra:
            raise GraphError(
                f"cell '{cname}': unknown state(s) {extra}; expected {list(cell.states)}"
            )
        held_st: dict[str, AnyArray] = {}
        for s, sspec in cell.states.items():
            k = self._k_bufs["state:" + s]
            if s in states and states[s] is not None:
                st = checked(states[s], k.shape[1:], k.dtype, f"initial state '{s}'").copy()
            else:
                st = np.asarray(sspec.initial(B), dtype=k.dtype).reshape(k.shape[1:])
            if not np.all(np.isfinite(st)):
                raise NonFiniteError(
                    f"cell '{cname}': initial state '{s}' holds a NaN or an infinity",
                    node=s,
                    step=0,
                )
            held_st[s] = st
        full: AnyArray | None = None
        if mask is not None:
            m = check_mask(mask, T, B, cname)
            full = np.empty((T, B), self.mask.dtype)
            np.copyto(full, m, casting="unsafe")
        return held_in, held_st, full

    def _load_chunk(self, t0: int, n: int, check: bool) -> None:
        """Copy steps [t0, t0 + n) of the inputs and the mask into the window."""
        assert self._held is not None
        full = self._held[2]
        inputs = self._held_inputs()
        for name, arr in inputs.items():
            dst = self.bufs["in:" + name]
            np.copyto(dst, arr[t0 : t0 + n])
            if check:
                finite = np.isfinite(dst).reshape(n, -1).all(axis=1)
                if not finite.all():
                    t = t0 + int(np.argmin(finite))
                    raise NonFiniteError(
                        f"cell '{self.plan.cell.name}': input '{name}' holds a NaN or an "
                        f"infinity at step {t} (padded steps too are computed; put zeros there)",
                        node=name,
                        step=t,
                    )
        if full is not None:
            np.copyto(self.mask, full[t0 : t0 + n])
            np.copyto(self.mask_bool, self.mask_col != 0)

    def _fwd_steps(self, T: int) -> tuple[list[_Call], list[_Call]]:
        """The per-step calls of the forward prologue and epilogue, over ``T`` steps."""
        key = ("fwdsteps", T)
        got = self._memo.get(key)
        if got is None:
            kpro, _body, kepi = self._fwd_parts
            pro, epi = self._memo["fwd"]
            got = self._memo[key] = (
                [c for c, k in zip(pro, kpro, strict=True) if self._per_step(k[1])],
                [c for c, k in zip(epi, kepi, strict=True) if self._per_step(k[1])],
            )
        return got

    def _keep_plan(self) -> tuple[list[int], bool, list[int]]:
        """Which per-step value buffers a chunked forward pass keeps for the backward
        pass (owner indices), and whether the backward pass recomputes the per-step
        forward epilogue (the read-out and the losses) instead of keeping its values.

        Kept: the values any backward call or Jacobian factor job reads, except the
        inputs and the mask (read again from the caller's arrays). When the values the
        forward epilogue writes and the backward reads take more bytes than the values
        the epilogue reads, the epilogue runs again per chunk in the backward pass; and
        body values that a few body calls recompute from kept values (``_replayable``)
        are recomputed too. Returns (kept owners, rerun the epilogue, body calls to
        rerun)."""
        if self._keep is not None:
            return self._keep
        for w in (False, True):
            if w not in self._bwd_parts:
                self._bind_flavour(w)
        o = self._owners
        values = set(range(self._values)) - self._fixed

        def owners(arrays: list[AnyArray]) -> set[int]:
            return {i for a in arrays if (i := _owner(o, a)) is not None} & values

        read: set[int] = set()
        for w in (False, True):
            _g, jobs, _z, _modes, bwd = self._bindings[w]
            for fn, args in bwd:
                read |= owners(_reads(fn, args))
            for _fn, _outs, y, xs in jobs:
                read |= owners(_arrays((y, xs)))
        _pro, _body, kepi = self._fwd_parts
        written: set[int] = set()
        needs: set[int] = set()
        for fn, args in kepi:
            if not self._per_step(args):
                continue
            needs |= owners(_reads(fn, args)) - written
            written |= owners(_writes(fn, args))

        def size(ids: set[int]) -> int:
            return sum(o.arrays[i].nbytes // o.arrays[i].shape[0] for i in ids)

        again = (read - written) | needs
        recompute = bool(read & written) and not (needs & written) and size(again) < size(read)
        keep = again if recompute else read
        replay = self._replayable(keep, written)
        chosen = {i for p in replay for i, _d in self._slots(_writes(*self._fwd_parts[1][p]))}
        self._keep = (sorted(keep - chosen), recompute, replay)
        return self._keep

    def _slots(self, arrays: list[AnyArray]) -> set[tuple[int, int]]:
        """The (owner, step offset from the template step) of each per-step array."""
        o = self._owners
        out = set()
        for a in arrays:
            found = o.find(a)
            if found is not None:
                i, off = found
                out.add((i, off // o.arrays[i].strides[0] - self._m))
        return out

    def _replayable(self, keep: set[int], epi_writes: set[int]) -> list[int]:
        """The forward body calls (indices) that recompute, in the backward pass, values
        otherwise kept: a value (one step, no slot after the window) whose writers write
        nothing else, the first of them not reading it, and which read only kept values
        that nothing overwrites after them (and inputs, the mask, parameters)."""
        o = self._owners
        K = self.plan.steps
        body = self._fwd_parts[1]
        rw = [(self._slots(_reads(fn, a)), self._slots(_writes(fn, a))) for fn, a in body]
        pro_writes = {
            i
            for fn, a in self._fwd_parts[0]
            for i, _d in self._slots(_writes(fn, a))
        }
        replay: list[int] = []
        chosen: set[int] = set()
        for i in sorted(keep):
            if o.arrays[i].shape[0] != K or i in pro_writes or i in epi_writes:
                continue
            writers = [p for p, (_r, w) in enumerate(rw) if any(j == i for j, _d in w)]
            if not writers or any((i, d) in rw[p][0] for p in replay for d in (0, 1)):
                continue
            ok = not any(j == i for j, _d in rw[writers[0]][0])
            for p in writers if ok else ():
                reads, writes = rw[p]
                if any(j != i or d != 0 for j, d in writes):
                    ok = False
                    break
                for j, d in reads:
                    if j == i:
                        ok = ok and d == 0
                        continue
                    if j in self._fixed:
                        continue
                    if j not in keep or j in chosen or j in epi_writes:
                        ok = False
                        break
                    later = any(
                        (j, d2) in rw[q][1] and (d2 < d or (d2 == d and q > p))
                        for q in range(len(body))
                        for d2 in (0, 1)
                    )
                    if later:
                        ok = False
                        break
                if not ok:
                    break
            if ok:
                chosen.add(i)
                replay.extend(writers)
        return sorted(set(replay))

    def _reserve(self, T: int) -> None:
        """History buffers of the kept values for ``T`` steps (grown, never shrunk)."""
        keep = self._keep_plan()[0]
        o = self._owners
        for i in keep:
            a = o.arrays[i]
            rows = T + a.shape[0] - self.plan.steps
            h = self._history.get(i)
            if h is None or h.shape[0] < rows:
                self._history.pop(i, None)
                self._history[i] = np.empty((rows, *a.shape[1:]), a.dtype)

    def _forward_chunks(
        self,
        params: Mapping[str, AnyArray],
        inputs: Mapping[str, AnyArray],
        states: Mapping[str, AnyArray],
        mask: AnyArray | None,
        with_outputs: bool,
        keep: bool,
    ) -> Run:
        cell = self.plan.cell
        T, C = self._total, self.chunk
        held_in, held_st, full = self._hold(params, inputs, states, mask)
        self._held = (held_in, held_st, full, False)
        o = self._owners
        kept: list[int] = []
        self.recompute = keep and self.history_bytes(T) > HISTORY_BYTES
        self._marks = []
        if self.recompute:
            self._history.clear()
        elif keep:
            self._reserve(T)
            kept = self._keep_plan()[0]
        halo = [i for i in range(self._values) if o.new[i].shape[0] > o.capacity]
        losses = dict.fromkeys(cell.losses, 0.0)
        outputs: dict[str, AnyArray] = {}
        for name, ref in cell.outputs.items() if with_outputs else ():
            kb = self._k_bufs[_key(cell, ref)]
            outputs[name] = np.empty((T, *kb.shape[1:]), kb.dtype)
        with np.errstate(over="ignore"):
            for fn, args in self._fwd_once:
                fn(*args)
        t0 = 0
        while True:
            n = min(C, T - t0)
            self._length(n)
            if t0 == 0:
                for s, st in held_st.items():
                    np.copyto(self.bufs["state:" + s][0], st)
            self._load_chunk(t0, n, check=True)
            if self.recompute:
                self._marks.append([(i, o.new[i][0].copy()) for i in halo])
            with np.errstate(over="ignore"):
                self._chunk_forward(n)
            for name in cell.losses:
                vals = self.bufs["op:" + name]
                losses[name] += float(np.sum(vals * self.mask) if self.masked else np.sum(vals))
            for name, ref in cell.outputs.items() if with_outputs else ():
                arr = self.bufs[_key(cell, ref)][:n]
                dst = outputs[name][t0 : t0 + n]
                if self.masked:
                    col = self.mask.reshape(self.mask.shape + (1,) * (arr.ndim - 2))
                    np.multiply(arr, col, dst)
                else:
                    np.copyto(dst, arr)
            for i in kept:
                new = o.new[i]
                e = new.shape[0] - o.capacity
                self._history[i][t0 : t0 + n + e] = new[: n + e]
            t0 += n
            if t0 >= T:
                break
            for i in halo:
                new = o.new[i]
                new[0] = new[n]
        final = {s: self.bufs["state:" + s][n].copy() for s in cell.states}
        # a backward pass reads the inputs again; without one, only the non-finite
        # diagnosis may, while the caller still holds them: not kept alive here
        held: dict[str, Any] = dict(held_in) if keep else _weakly(held_in)
        self._held = (held, held_st, full, keep)
        self.generation += 1
        loss = 0.0
        for v in losses.values():
            loss += v
        return Run(loss, outputs, final, self.batch, self.masked, self.generation)

    def _chunk_forward(self, n: int) -> None:
        """The forward calls of a chunk of ``n`` steps laid out in the window: the
        per-step prologue, the body at every step, the per-step epilogue."""
        pro, epi = self._fwd_steps(n)
        body = self._bodies["fwd"]
        for fn, args in pro:
            fn(*args)
        for t in range(n):
            for fn, targs in body:
                fn(*targs[t])
        for fn, args in epi:
            fn(*args)

    def _bwd_plan(
        self, with_outputs: bool
    ) -> tuple[list[bool], int, list[AnyArray], list[int]]:
        """For the K-step backward binding: which factor jobs are per step, where the
        trailing calls of the epilogue that touch no per-step buffer start (they run once,
        after the last chunk), the gradient buffers of values that are not per step
        (summed over chunks), and the gradient buffers with a slot after the window (the
        state gradients carried from one chunk to the one before)."""
        key = ("bwdplan", with_outputs)
        got = self._memo.get(key)
        if got is not None:
            return got  # type: ignore[no-any-return]
        gbufs, jobs, _zero, _modes, _bwd = self._bindings[with_outputs]
        o = self._owners
        step_jobs = [self._per_step((outs, y, xs)) for _fn, outs, y, xs in jobs]
        pro, _body, epi, _cut = self._bwd_parts[with_outputs]
        cands = [
            v
            for v in gbufs.values()
            if o.find(v) is None and v.flags.writeable and v.size and v.flags.c_contiguous
        ]

        def inside(a: AnyArray, b: AnyArray) -> bool:
            return _address(b) <= _address(a) and _address(a) + a.nbytes <= _address(b) + b.nbytes

        roots: list[AnyArray] = []
        for v in sorted(cands, key=lambda a: -a.nbytes):
            if not any(inside(v, r) for r in roots):
                roots.append(v)
        split = _per_chunk_calls(pro, epi, roots, self._per_step)
        carried: set[int] = set()
        for v in gbufs.values():
            i = _owner(o, v)
            if i is not None and o.new[i].shape[0] > o.capacity:
                carried.add(i)
        got = (step_jobs, split, roots, sorted(carried))
        self._memo[key] = got
        return got

    def _backward_chunks(
        self, grad_outputs: Mapping[str, AnyArray], loss_scale: float
    ) -> Gradients:
        cell = self.plan.cell
        cname = cell.name
        for name in grad_outputs:
            if name not in cell.outputs:
                raise GraphError(
                    f"cell '{cname}': grad_outputs names unknown output '{name}'; outputs are "
                    f"{list(cell.outputs)}"
                )
        assert self._held is not None
        T, C = self._total, self.chunk
        w = bool(grad_outputs)
        gos: dict[str, AnyArray] = {}
        for name, go in grad_outputs.items():
            kb = self._k_bufs[_key(cell, cell.outputs[name])]
            expected = (T, *kb.shape[1:])
            arr = np.asarray(go)
            if arr.shape != expected:
                raise ShapeError(
                    f"cell '{cname}': the gradient of output '{name}' has shape {arr.shape}, "
                    f"expected {expected}"
                )
            gos[name] = arr
        if w not in self._bwd_parts:
            self._bind_flavour(w)
        kept, again, replay = self._keep_plan()
        fbody = self._bodies["fwd"]
        step_jobs, split, roots, carried = self._bwd_plan(w)
        o = self._owners
        k = self.plan.truncate
        cutting = self._cut is not None and k is not None
        wanted = [i for i in cell.inputs if i in self.plan.wrt]
        grads_in = {
            i: np.empty((T, *self._k_bufs["in:" + i].shape[1:]), self._k_bufs["in:" + i].dtype)
            for i in wanted
        }
        starts = list(range(0, T, C))
        acc: list[AnyArray] = []
        halo: dict[int, AnyArray] = {}
        first = True
        for t0 in reversed(starts):
            n = min(C, T - t0)
            self._length(n)
            self._use_binding(w)
            self._load_chunk(t0, n, check=False)
            if self.recompute:
                # the chunk's forward pass again, from its incoming states
                for i, v in self._marks[t0 // C]:
                    np.copyto(o.new[i][0], v)
                with np.errstate(all="ignore"):
                    self._chunk_forward(n)
            else:
                for i in kept:
                    new = o.new[i]
                    e = new.shape[0] - o.capacity
                    new[: n + e] = self._history[i][t0 : t0 + n + e]
                with np.errstate(all="ignore"):
                    for t in range(n) if replay else ():
                        for p in replay:
                            fn, targs = fbody[p]
                            fn(*targs[t])
                    for fn, args in self._fwd_steps(n)[1] if again else ():
                        fn(*args)
            for arr in self._zero:
                arr.fill(0)
            self._seed(gos, loss_scale, t0, n)
            for (ffn, fouts, y_all, xs_all), per in zip(self.factor_jobs, step_jobs, strict=True):
                if per or first:
                    ffn(fouts, y_all, *xs_all)
            pro, epi = self._parts
            # the gradient of the state after the chunk, from the chunk after it: added
            # after the prologue's calls that assign its slot and before the first that
            # reads it (a time-batched product reads every step's state gradient at once)
            at: int = 0
            if halo:
                memo = self._memo.get(("halo", w, n))
                if memo is None:
                    memo = self._memo["halo", w, n] = _halo_point(pro, [o.new[i][n] for i in halo])
                at = memo
            for fn, args in pro[:at]:
                fn(*args)
            for i, g in halo.items():
                slot = o.new[i][n]
                np.add(slot, g, out=slot)
            for fn, args in pro[at:]:
                fn(*args)
            body = self._bodies[f"bwd{w}"]
            if cutting:
                assert k is not None
                cut = self._bodies[f"cut{w}"]
                for t in range(n - 1, -1, -1):
                    g_t = t0 + t
                    b = cut if (g_t + 1) % k == 0 and g_t + 1 < T else body
                    for fn, targs in b:
                        fn(*targs[t])
            else:
                for t in range(n - 1, -1, -1):
                    for fn, targs in body:
                        fn(*targs[t])
            for fn, args in epi[:split]:
                fn(*args)
            for name in wanted:
                np.copyto(grads_in[name][t0 : t0 + n], self.gbufs["in:" + name])
            halo = {i: o.new[i][0].copy() for i in carried}
            if len(starts) > 1:
                if first:
                    acc = [r.copy() for r in roots]
                else:
                    for a, r in zip(acc, roots, strict=True):
                        np.add(a, r, out=a)
            first = False
        for a, r in zip(acc, roots, strict=True):
            np.copyto(r, a)
        for fn, args in self._parts[1][split:]:
            fn(*args)
        held = self._held
        self._held = (_weakly(held[0]), held[1], held[2], held[3])
        out = Gradients()
        for name in sorted(self.plan.wrt):
            kind = cell.kind(name)
            if kind == "param":
                out.params[name] = self.gbufs["param:" + name].copy()
            elif kind == "input":
                out.inputs[name] = grads_in[name]
            else:
                out.states[name] = self.gbufs["state:" + name][0].copy()
        out.params = {p: out.params[p] for p in cell.params if p in out.params}
        return out

    def _seed(self, gos: Mapping[str, AnyArray], loss_scale: float, t0: int, n: int) -> None:
        """Write the loss and output gradients of steps [t0, t0 + n) into the window (as
        ``Workspace.backward`` does for a whole pass)."""
        cell = self.plan.cell
        for name in cell.losses:
            gl = self.gbufs["op:" + name]
            add = self.seed_modes["op:" + name]
            if self.masked:
                if add:
                    gl += self.mask * loss_scale
                else:
                    np.multiply(self.mask, loss_scale, out=gl)
            elif add:
                gl += loss_scale
            else:
                gl.fill(loss_scale)
        for o, ref in cell.outputs.items() if gos else ():
            key = _key(cell, ref)
            target = self.gbufs[key]
            if cell.kind(ref) == "state":
                target = target[:n]
            add = self.seed_modes[key]
            if o not in gos:
                if not add:
                    target.fill(0)
                continue
            go = gos[o][t0 : t0 + n]
            if self.masked:
                go = go * self.mask.reshape(self.mask.shape + (1,) * (go.ndim - 2))
            if add:
                target += go
            else:
                np.copyto(target, go)


_PREFIX = {"param": "param:", "input": "in:", "state": "state:", "op": "op:"}


def _key(cell: Cell, name: str) -> str:
    """The buffer key of a cell value (``"op:z"``, ``"state:h"``, ...)."""
    return _PREFIX[cell.kind(name)] + name
