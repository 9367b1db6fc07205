"""Loop programs: one compiled step of the forward and of the backward loop, run for any T.

Every step of an unrolled cell does the same work, so a cell does not need
one plan per sequence length. A ``LoopWorkspace`` binds the plan of a short
unroll (``K`` steps, a handful, from networkx's unrolled graph as every plan
is) with the ordinary binding (``minigrad.workspace``, with every binding
pass), and takes from it:

* the **body**: the calls of one steady-state step ``m`` (neither the first
  nor the last), forward (the step's nodes, then the carries into step
  ``m + 1``) and backward (those carries' local derivatives, then the nodes'
  in reverse order), with the write modes (assign or add) of that step;
* the **prologue and epilogue**: the calls that are not per step (parameter-
  only nodes, time-batched GEMMs over all steps, deferred weight gradients,
  precomputed Jacobians), which run once per pass over whole buffers.

Each buffer whose leading axis is the step (values, gradients, Jacobian
factors, the mask) is laid out again with room for ``capacity`` steps, the
longest T seen so far (shorter sequences reuse it). Every view that the body's calls take of
such a buffer at step ``m + d`` becomes, for each step ``t``, the same view at
step ``t + d``: the per-step views come from ``list(buffer)`` and the per-step
argument tuples from ``zip``, both at C speed, once per capacity. Running a
pass is then ``for t in range(T): for fn, args in body: fn(*args[t])``.

Gradient buffers are zeroed before each backward pass (the last step, which
has no later step to add into its regions first, then adds to zeros), so the
steady-state write modes hold at every step.

With ``truncate=k`` the backward step that does not cross the cut state edge
(into a step that is a multiple of k) is taken from a second template step of
the same short unroll (``K >= k + 2``).
"""

from __future__ import annotations

import bisect
import gc
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.arena import ALIGN, Arena
from minigrad.errors import GraphError
from minigrad.runtime.instr import Instr
from minigrad.runtime.workspace import Workspace
from minigrad.types import AnyArray

if TYPE_CHECKING:
    from minigrad.plan import Plan

__all__ = ["LoopWorkspace", "template_steps"]

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
        self.bufs = {k: o.span(v, T) for k, v in self._k_bufs.items()}
        self.mask, self.mask_col, self.mask_bool = (o.span(a, T) for a in self._k_mask)
        self._memo.clear()
        pro, _body, epi = self._fwd_parts
        self._memo["fwd"] = (
            [(fn, o.span(args, T)) for fn, args in pro],
            [(fn, o.span(args, T)) for fn, args in epi],
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the per-step buffers laid out for the current capacity."""
        return sum(int(a.nbytes) for a in self._owners.new)

    # -- running ---------------------------------------------------------------

    def steps_of(self, T: int) -> None:
        """Prepare a pass over ``T`` steps (called before ``forward``)."""
        self._length(T)

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
        key = ("bwd", with_outputs)
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
