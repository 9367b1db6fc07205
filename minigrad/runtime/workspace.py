"""Binding a compiled plan to buffers, and running it.

A ``Plan`` (``minigrad.plan``) is a list of instructions (``Instr``) over
named buffers (``BufRef``). For each batch size (and masked or not) it is
bound once into a ``Workspace``: the buffers, carved out of one arena
(``minigrad.arena``), and flat lists of bound numpy calls for the forward
and the backward pass. The choices made while binding (views, shared and
reused buffers, precomputed Jacobians and their chains, flat ufunc calls, the
first write into each gradient region assigning instead of adding) are the
plan-level passes of ``minigrad.passes``. Running a batch then copies the
parameters, inputs and initial states in and calls the lists: no networkx and
no per-node Python work.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.arena import Arena
from minigrad.errors import (
    ArgumentError,
    DTypeError,
    GraphError,
    NodeContractError,
    NonFiniteError,
    ShapeError,
)
from minigrad.nodes import Add, Call, Node
from minigrad.runtime.calls import closed, packed
from minigrad.runtime.instr import BufRef, Instr, at, buffer_of
from minigrad.types import AnyArray, Array, BoolArray, Shape

if TYPE_CHECKING:
    from minigrad.plan import Plan

__all__ = ["Gradients", "Run", "Workspace"]

@dataclass
class Gradients:
    """The gradients of one backward pass, fresh arrays owned by the caller.

    ``params``: ``{name: (shape of the parameter)}``; ``inputs``:
    ``{name: (T, B, *features)}``; ``states``: ``{name: (B, *features)}``, the
    gradient with respect to each initial state.
    """

    params: dict[str, Array] = field(default_factory=dict)
    inputs: dict[str, Array] = field(default_factory=dict)
    states: dict[str, Array] = field(default_factory=dict)

    def flat(self, state_suffix: str = "0") -> dict[str, Array]:
        """All gradients in one dict; initial-state gradients are named ``state + suffix``."""
        out = dict(self.params)
        out.update(self.inputs)
        out.update({s + state_suffix: g for s, g in self.states.items()})
        return out


@dataclass
class Run:
    """The result of a forward pass.

    ``loss``: the masked sum of every loss term over batch and steps.
    ``outputs``: ``{name: (T, B, *features)}`` copies (zeros on padded steps).
    ``states``: ``{name: (B, *features)}`` the final states (after each row's
    last real step). Pass it to ``Plan.backward`` before the next forward on
    the same plan and batch size.
    """

    loss: float
    outputs: dict[str, Array]
    states: dict[str, Array]
    batch: int
    masked: bool
    _generation: int = 0


# --------------------------------------------------------------------------
# internal nodes for state carries


class _Carry(Node):
    """``y = new`` on real rows, ``old`` on padded rows (m is (B, 1, ...) bool/float)."""

    arity = 4
    slots = ("new", "old", "mask_bool", "mask")
    verified = True

    def forward(self, *xs: Array) -> Array:
        new, old, mb, _m = xs
        return np.where(mb, new, old)

    def forward_into(self, out: Array, *xs: Array) -> None:
        new, old, mb, _m = xs
        np.copyto(out, old)
        np.copyto(out, new, where=mb)

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        _new, _old, mb, m = xs
        gn = g * m
        return gn, g - gn, mb, m

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        _new, _old, _mb, m = xs
        on, oo = outs[0], outs[1]
        if on is not None:
            np.multiply(g, m, out=on)
        if oo is not None:
            if on is not None:
                np.subtract(g, on, out=oo)
            else:
                np.multiply(g, m, out=oo)
                np.subtract(g, oo, out=oo)


class _Copy(Node):
    """``y = x`` (a state carry without a mask)."""

    verified = True

    def forward(self, *xs: Array) -> Array:
        return xs[0].copy()

    def forward_into(self, out: Array, *xs: Array) -> None:
        np.copyto(out, xs[0])

    def vjp(self, g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        return (g,)

    def vjp_into(self, outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        if outs[0] is not None:
            np.copyto(outs[0], g)


_COPY = _Copy()
_CARRY = _Carry()


# --------------------------------------------------------------------------
# binding and running

_FwdFn = Callable[..., None]
_IntoFn = Callable[..., None]


class Workspace:
    """Buffers and bound instruction lists of a plan for one batch size."""

    def __init__(self, plan: Plan, batch: int, masked: bool) -> None:
        self.plan = plan
        self.batch = batch
        self.masked = masked
        self.generation = 0
        cell = plan.cell
        T = plan.steps
        self.T = T

        def feat(name: str) -> Shape:
            return tuple(int(d) for d in cell.spec_shape(name)[1:])

        # every buffer of the workspace comes from one arena; values, gradients and
        # Jacobian factors together take about three times the values' bytes
        def nbytes(name: str) -> int:
            shape = cell.spec_shape(name)
            if cell.shared(name):
                return math.prod(int(d) for d in shape) * cell.dtype.itemsize
            return (T + 1) * batch * math.prod(int(d) for d in shape[1:]) * cell.dtype.itemsize

        self.arena = Arena(3 * sum(nbytes(n) for n in cell.graph))
        arena = self.arena
        bufs: dict[str, Array] = {}
        for p, pspec in cell.params.items():
            bufs["param:" + p] = arena.empty(pspec.shape, pspec.dtype)
        for i, ispec in cell.inputs.items():
            bufs["in:" + i] = arena.empty((T, batch, *feat(i)), ispec.dtype)
        for s, sspec in cell.states.items():
            bufs["state:" + s] = arena.empty((T + 1, batch, *feat(s)), sspec.dtype)
        # unmasked, untruncated: a state's update node writes straight into the state buffer
        updaters: dict[str, list[str]] = {}
        for s, sspec in cell.states.items():
            updaters.setdefault(sspec.update, []).append(s)
        self.aliased: dict[str, str] = {}
        if not masked and plan.truncate is None:
            for u, ss in updaters.items():
                if len(ss) == 1 and cell.kind(u) == "op" and u not in cell.losses:
                    self.aliased[u] = ss[0]
        views = plan.views

        def sliced(b: Mapping[str, Array], n: str) -> Array:
            src, start, stop = views[n]
            base = b[buffer_of(cell, src)]
            if cell.kind(src) == "state":
                base = base[:T]
            out: Array = base[..., start:stop]
            return out

        # values that no backward step reads may be overwritten by their only consumer
        self.inplace: dict[str, str] = {}
        if "reuse_buffers" in plan.passes:
            for n in cell.order:
                spec = cell.ops[n]
                op = spec.op
                if spec.static or n in views or n in self.aliased or not type(op).verified:
                    continue
                for slot in op.inplace_slots:
                    r = spec.inputs[slot]
                    if (
                        cell.kind(r) == "op"
                        and not cell.ops[r].static
                        and r not in views
                        and r not in cell.pinned
                        and len(cell.readers.get(r, ())) == 1
                        and cell.spec_shape(r) == spec.shape
                        and cell.ops[r].dtype == spec.dtype
                        and not op.uses_input(slot)
                        and not type(cell.ops[r].op).backward_uses_output
                        and type(cell.ops[r].op).verified
                    ):
                        self.inplace[n] = r
                        break

        for n in cell.order:
            ospec = cell.ops[n]
            if n in self.inplace:
                bufs["op:" + n] = bufs["op:" + self.inplace[n]]
            elif n in views:
                bufs["op:" + n] = sliced(bufs, n)
            elif ospec.static:
                bufs["op:" + n] = arena.empty(tuple(int(d) for d in ospec.shape), ospec.dtype)
            elif n in self.aliased:
                bufs["op:" + n] = bufs["state:" + self.aliased[n]][1:]
            else:
                bufs["op:" + n] = arena.empty((T, batch, *feat(n)), ospec.dtype)
        self.bufs = bufs
        self.mask = np.ones((T, batch), dtype=cell.dtype)
        extra = max((len(cell.spec_shape(s)) - 1 for s in cell.states), default=1)
        self.mask_col = self.mask.reshape(T, batch, *([1] * extra))
        self.mask_bool: BoolArray = np.ones(self.mask_col.shape, dtype=bool)

        def view(b: Mapping[str, Array], ref: BufRef) -> Array:
            arr = b[ref.buffer]
            if ref.index is None:
                return arr
            v: Array
            if isinstance(ref.index, tuple):
                v = arr[ref.index[0] : ref.index[1]]
            else:
                v = arr[ref.index]
            return v

        self._view = view
        # forward list
        # a flat list of calls f(*args): numpy ufuncs where a node spells its forward
        # as ufunc calls, else the node's forward_into
        fwd: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        skip_carry = {self.aliased[u] for u in self.aliased}
        # which calls each instruction produced: (instr, first, stop) into the list
        self.fwd_spans: list[tuple[Instr, int, int]] = []
        for ins in plan.forward_instrs:
            self.fwd_spans.append((ins, len(fwd), len(fwd)))
            if ins.name in views and ins.kind != "carry":
                continue
            if ins.kind == "carry":
                if ins.name in skip_carry:
                    continue
                out = view(bufs, ins.out)
                args = tuple(view(bufs, r) for r in ins.ins)
                if masked:
                    mb, _mf = self._mask_views(ins.step - 1, out.ndim)
                    fwd.append((np.copyto, (out, args[1])))
                    fwd.append((np.copyto, (out, args[0], "same_kind", mb)))
                else:
                    fwd.append((np.copyto, (out, args[0])))
                continue
            assert ins.op is not None
            out = view(bufs, ins.out)
            args = tuple(view(bufs, r) for r in ins.ins)
            if not type(ins.op).verified:
                fwd.append((_checked_forward(cell.name, ins), (out, *args)))
                continue
            calls = ins.op.forward_calls(out, *args) if "flat_calls" in plan.passes else None
            if calls is None:
                fwd.append((ins.op.forward_into, (out, *args)))
            else:
                fwd.extend(_typed_constants(calls, out.dtype))
        self.fwd_spans = closed(self.fwd_spans, len(fwd))
        self.fwd = packed(fwd)

        self._sliced = sliced
        self._skip_carry = skip_carry
        self._bindings: dict[bool, tuple[Any, ...]] = {}
        self.gbufs: dict[str, Array] = {}
        self.bwd: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def _bind_backward(self, output_seeds: bool) -> None:
        """Gradient buffers and the backward instruction list, made at the first backward
        pass (a workspace used only for forward passes never allocates them). There are
        two bindings: with gradients given for the outputs, and without (then nothing
        needs to seed, and zero, the outputs' gradient regions)."""
        plan = self.plan
        cell = plan.cell
        T = self.T
        bufs = self.bufs
        views = plan.views
        masked = self.masked
        view = self._view
        sliced = self._sliced
        skip_carry = self._skip_carry
        # ---- gradient buffers ------------------------------------------------
        # The same layout as the values, with three kinds of sharing: Slice views
        # (a slice's gradient is a view of its source's), aliased state updates,
        # and Add groups (an Add passes its gradient unchanged to inputs that it
        # alone reads, so they can share one buffer and the Add does nothing).
        groups = dict(plan.shared_grads)
        roots: dict[str, list[str]] = {}
        for m, r in groups.items():
            roots.setdefault(r, []).append(m)
        fixed_of: dict[str, str] = {}
        for r, members in roots.items():
            fixed = [m for m in members if m in views]
            if r in self.aliased:
                fixed.insert(0, r)
            for surplus in fixed[1:]:
                del groups[surplus]
            if fixed and fixed[0] != r:
                fixed_of[r] = fixed[0]

        fixed_members = set(fixed_of.values())

        def build(
            zeros: Callable[[Shape, Any], AnyArray], lean: bool = False
        ) -> tuple[dict[str, Any], dict[str, str]]:
            g: dict[str, Any] = {}
            base: dict[str, str] = {}
            for k, v in bufs.items():
                if not k.startswith("op:"):
                    if lean and k.startswith("in:") and k[3:] not in plan.wrt:
                        # no gradient flows into an input that is not wanted: a read-only
                        # zero view instead of a buffer (a write would fail loudly)
                        g[k] = np.broadcast_to(np.zeros((), v.dtype), v.shape)
                    else:
                        g[k] = zeros(v.shape, v.dtype)
                    base[k] = k
            pending = list(cell.order)
            while pending:
                left = []
                for n in pending:
                    key = "op:" + n
                    dep: str | None = None
                    if n in fixed_members:
                        dep = buffer_of(cell, views[n][0])
                    elif n in groups:
                        dep = "op:" + groups[n]
                    elif n in fixed_of:
                        dep = "op:" + fixed_of[n]
                    elif n in views:
                        dep = buffer_of(cell, views[n][0])
                    if dep is not None:
                        if dep not in g:
                            left.append(n)
                            continue
                        shared = n not in fixed_members and (n in groups or n in fixed_of)
                        g[key] = g[dep] if shared else sliced(g, n)
                        base[key] = base[dep]
                    elif n in self.aliased:
                        skey = "state:" + self.aliased[n]
                        g[key] = g[skey][1:]
                        base[key] = skey
                    else:
                        g[key] = zeros(bufs[key].shape, bufs[key].dtype)
                        base[key] = key
                if len(left) == len(pending):
                    raise GraphError(f"cell '{cell.name}': cannot lay out gradient buffers")
                pending = left
            return g, base

        gbufs, gbase = build(self.arena.zeros, lean=True)
        shadow, _ = build(lambda shape, _dt: np.zeros(shape, dtype=bool))
        self.gbufs = gbufs

        # ---- elementwise Jacobians, for all steps at once ------------------------
        # (fn, scratch outs, y over all steps, inputs over all steps)
        self.factor_jobs: list[
            tuple[Callable[..., Any], tuple[Array, ...], Array, tuple[Array, ...]]
        ] = []
        factor_arrays: dict[str, tuple[Array, ...] | None] = {}
        # the arrays each node's factor job allocated (its own to overwrite, unlike a
        # factor that is a view of a forward value)
        owned: dict[str, tuple[Array, ...]] = {}
        use_factors = "factor_elementwise" in plan.passes

        def factors_for(ins: Instr) -> tuple[Array, ...] | None:
            if not use_factors or ins.op is None or not type(ins.op).verified:
                return None
            if ins.name in factor_arrays:
                return factor_arrays[ins.name]
            op = ins.op
            result: tuple[Array, ...] | None = None
            if type(op).factors_into is not Node.factors_into:
                every = (0, T)
                y_all = view(bufs, BufRef(ins.out.buffer, every))
                xs_all = tuple(
                    view(bufs, BufRef(r.buffer, every) if r.index is not None else r)
                    for r in ins.ins
                )
                if all(x.shape == y_all.shape for x in xs_all):
                    scratch_f = tuple(self.arena.empty(y_all.shape, y_all.dtype) for _ in xs_all)
                    with np.errstate(all="ignore"):
                        result = op.factors_into(scratch_f, y_all, *xs_all)
                    if result is not None:
                        self.factor_jobs.append((op.factors_into, scratch_f, y_all, xs_all))
                        owned[ins.name] = scratch_f
            factor_arrays[ins.name] = result
            return result

        matrices: dict[tuple[str, int], Array] = {}

        def matrix_for(ins: Instr, i: int) -> Array | None:
            """A contiguous copy of the node's right Jacobian for input i, refreshed once per
            backward pass, when it only depends on values shared by all steps."""
            if not use_factors or ins.op is None or not type(ins.op).verified:
                return None
            if (ins.name, i) in matrices:
                return matrices[ins.name, i]
            if any(r.index is not None for j, r in enumerate(ins.ins) if j != i):
                return None
            op = ins.op
            if type(op).right_jacobian is Node.right_jacobian:
                return None
            xs_any = tuple(view(bufs, r) for r in ins.ins)
            m = op.right_jacobian(i, *xs_any)
            if m is None:
                return None
            buf = self.arena.empty(m.shape, m.dtype)

            def refresh(
                _outs: tuple[Array, ...],
                _y: Array,
                *_xs: Array,
                op: Node = op,
                i: int = i,
                buf: Array = buf,
                xs_any: tuple[Array, ...] = xs_any,
            ) -> tuple[Array, ...]:
                m = op.right_jacobian(i, *xs_any)
                assert m is not None
                np.copyto(buf, m)
                return (buf,)

            self.factor_jobs.append((refresh, (), buf, ()))
            matrices[ins.name, i] = buf
            return buf

        # ---- backward instructions, with a write mode per target -----------------
        # (fn, g, y, args, [(slot, target, shadow, root)])
        pre_entries: list[
            tuple[
                _IntoFn, Array, Array, tuple[AnyArray, ...], list[tuple[int, Array, AnyArray, str]]
            ]
        ] = []
        # ---- chains: a unary elementwise node (tanh, sigmoid) whose every reader is an
        # elementwise node in the loop hands its Jacobian to them: each reader multiplies
        # by the product of both factors, computed for all steps at once, and writes the
        # unary node's input gradient directly; the unary node's own step disappears
        loop_instr: dict[str, Instr] = {}
        for ins in plan.backward_instrs:
            if ins.kind == "op" and ins.step >= 0 and ins.name not in loop_instr:
                loop_instr[ins.name] = ins
        readers = cell.readers
        pinned_names = cell.pinned
        Use = tuple[str, int, tuple[int, int] | None]
        chains: dict[str, list[Use]] = {}
        if "chain_factors" in plan.passes and use_factors:
            for w in cell.order:
                wi = loop_instr.get(w)
                if (
                    wi is None
                    or len(cell.ops[w].inputs) != 1
                    or w in pinned_names
                    or w in views
                    or w in self.aliased
                    or not wi.needs
                    or not wi.needs[0]
                    or factors_for(wi) is None
                ):
                    continue
                uses: list[Use] = []
                ok = True
                for c, j in readers.get(w, []):
                    if c in views:
                        if c in pinned_names:
                            ok = False
                        _src, a0, b0 = views[c]
                        uses.extend((u, uk, (a0, b0)) for u, uk in readers.get(c, []))
                    else:
                        uses.append((c, j, None))
                for u, uk, _rng in uses:
                    ui = loop_instr.get(u)
                    if ui is None or not ui.needs or not ui.needs[uk] or factors_for(ui) is None:
                        ok = False
                if ok and uses:
                    chains[w] = uses
            # a node that is itself folded into its readers cannot take another's factor
            for w in list(chains):
                if any(u in chains for u, _uk, _r in chains[w]):
                    del chains[w]
        composite: dict[tuple[str, int], tuple[Array, str, tuple[int, int] | None]] = {}

        def own(name: str, arr: Array) -> bool:
            return any(arr is a for a in owned.get(name, ()))

        for w, uses in chains.items():
            fw = factors_for(loop_instr[w])
            assert fw is not None
            # the product overwrites a factor that nothing else reads (the reader's factor
            # for this slot, or the part of w's factor that only this use covers), so the
            # chain costs no extra buffer; otherwise it gets its own
            spans = [(0, fw[0].shape[-1]) if rng is None else rng for _u, _uk, rng in uses]
            for n_use, (u, uk, rng) in enumerate(uses):
                fu = factors_for(loop_instr[u])
                assert fu is not None
                fw_part = fw[0] if rng is None else fw[0][..., rng[0] : rng[1]]
                lo, hi = spans[n_use]
                alone = all(b <= lo or a >= hi for j, (a, b) in enumerate(spans) if j != n_use)
                if own(u, fu[uk]):
                    comp = fu[uk]
                elif own(w, fw[0]) and alone and fw_part.shape == fu[uk].shape:
                    comp = fw_part
                else:
                    comp = self.arena.empty(fu[uk].shape, fu[uk].dtype)
                self.factor_jobs.append((_product_job, (comp,), fu[uk], (fw_part,)))
                composite[u, uk] = (comp, w, rng)
        self._chained = set(chains)

        entry_instrs: list[Instr] = []
        prev_ins = plan.backward_instrs[0] if plan.backward_instrs else None
        for ins in plan.backward_instrs:
            if ins.name in views and ins.kind != "carry":
                continue
            if ins.kind == "op" and ins.step >= 0 and ins.name in chains:
                continue
            while len(entry_instrs) < len(pre_entries):
                assert prev_ins is not None
                entry_instrs.append(prev_ins)
            prev_ins = ins
            if ins.kind == "carry":
                if ins.name in skip_carry:
                    continue
                src = (view(bufs, ins.ins[0]), view(bufs, ins.ins[1]))
                tg = [
                    (j, view(gbufs, r), view(shadow, r), gbase[r.buffer])
                    for j, (r, need) in enumerate(zip(ins.ins, ins.needs, strict=True))
                    if need
                ]
                g_ = view(gbufs, ins.out)
                y_ = view(bufs, ins.out)
                if masked:
                    mb, mf = self._mask_views(ins.step - 1, y_.ndim)
                    pre_entries.append((_CARRY.vjp_into, g_, y_, (*src, mb, mf), tg))
                else:
                    pre_entries.append(
                        (_COPY.vjp_into, g_, y_, src[:1], [t for t in tg if t[0] == 0])
                    )
                continue
            assert ins.op is not None
            needs = list(ins.needs)
            if type(ins.op) is Add:
                root = groups.get(ins.name, ins.name)
                for j, r in enumerate(cell.ops[ins.name].inputs):
                    if groups.get(r) == root:
                        needs[j] = False
            if not any(needs):
                continue
            tg = [
                (j, view(gbufs, r), view(shadow, r), gbase[r.buffer])
                for j, (r, need) in enumerate(zip(ins.ins, needs, strict=True))
                if need
            ]
            fs = factors_for(ins) if ins.step >= 0 else None
            if fs is not None:
                args_f = tuple(
                    f[ins.step] if need else None for f, need in zip(fs, needs, strict=True)
                )
                if any((ins.name, j) in composite for j in range(len(needs))):
                    fl = list(args_f)
                    for pos, (j, _t, _sh, _root) in enumerate(tg):
                        if (ins.name, j) not in composite:
                            continue
                        comp, w, rng = composite[ins.name, j]
                        src_ref = loop_instr[w].ins[0]
                        ref_t = (
                            BufRef(src_ref.buffer, ins.step)
                            if src_ref.index is not None
                            else src_ref
                        )
                        tv, sv = view(gbufs, ref_t), view(shadow, ref_t)
                        if rng is not None:
                            tv, sv = tv[..., rng[0] : rng[1]], sv[..., rng[0] : rng[1]]
                        tg[pos] = (j, tv, sv, gbase[src_ref.buffer])
                        fl[j] = comp[ins.step]
                    args_f = tuple(fl)
                pre_entries.append(
                    (_apply_factors, view(gbufs, ins.out), view(bufs, ins.out), args_f, tg)  # type: ignore[arg-type]
                )
                continue
            if ins.step >= 0:
                ms = [matrix_for(ins, j) if need else None for j, need in enumerate(needs)]
                if all(m is not None for m, need in zip(ms, needs, strict=True) if need):
                    pre_entries.append(
                        (_apply_matrices, view(gbufs, ins.out), view(bufs, ins.out), tuple(ms), tg)  # type: ignore[arg-type]
                    )
                    continue
            fn_into: _IntoFn = ins.op.vjp_into
            if not type(ins.op).verified:
                fn_into = _checked_vjp_into(cell.name, ins)
            pre_entries.append(
                (
                    fn_into,
                    view(gbufs, ins.out),
                    view(bufs, ins.out),
                    tuple(view(bufs, r) for r in ins.ins),
                    tg,
                )
            )

        # which writes assign and which add: simulate the pass on boolean shadows
        seeds = [("op:" + n) for n in cell.losses]
        if output_seeds:
            seeds += [buffer_of(cell, n) for n in cell.outputs.values()]

        def seed_view(b: Mapping[str, Any], key: str) -> Any:
            arr = b[key]
            return arr[:T] if key.startswith("state:") else arr

        results = [k for k in (buffer_of(cell, n) for n in sorted(plan.wrt))]

        def simulate(zeroed: set[str]) -> tuple[set[str], list[list[bool]], list[bool]]:
            for k, arr in shadow.items():
                if gbase[k] == k:
                    arr[...] = gbase[k] in zeroed
            must_zero: set[str] = set()
            seed_modes = []
            for k in seeds:
                sh = seed_view(shadow, k)
                if sh.all():
                    seed_modes.append(True)
                elif not sh.any():
                    seed_modes.append(False)
                else:
                    must_zero.add(gbase[k])
                    seed_modes.append(True)
                sh[...] = True
            modes: list[list[bool]] = []
            for _fn, _g, _y, _a, tg in pre_entries:
                mode = []
                for _j, _t, sh, root in tg:
                    if sh.all():
                        mode.append(True)
                    elif not sh.any():
                        mode.append(False)
                    else:
                        must_zero.add(root)
                        mode.append(True)
                    sh[...] = True
                modes.append(mode)
            return must_zero, modes, seed_modes

        if "assign_first_writes" not in plan.passes:
            everything_zeroed = {gbase[k] for k in gbufs}
            must_zero, modes, seed_modes = simulate(everything_zeroed)
            must_zero = everything_zeroed
        else:
            must_zero, modes, seed_modes = simulate(set())
        # a region that is read (or returned) but never fully written must start from zeros
        for read, root in self._reads(plan, views, skip_carry, gbase, shadow):
            if not read.all():
                must_zero.add(root)
        for k in results:
            sh = shadow[k][0] if k.startswith("state:") else shadow[k]
            if not sh.all():
                must_zero.add(gbase[k])
        if must_zero:
            again, modes, seed_modes = simulate(must_zero)
            must_zero = must_zero | again
        self._zero_roots = sorted(must_zero)
        self._zero = [gbufs[k] for k in self._zero_roots if gbufs[k].flags.writeable]
        self.seed_modes = dict(zip(seeds, seed_modes, strict=True))

        scratch: dict[tuple[tuple[int, ...], str, int], Array] = {}
        flat = "flat_calls" in plan.passes
        # a flat list of calls f(*args), as in the forward pass
        bwd: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        while len(entry_instrs) < len(pre_entries):
            assert prev_ins is not None
            entry_instrs.append(prev_ins)
        self.bwd_spans: list[tuple[Instr, int, int]] = []
        for (fn_into, g_, y_, args, tg), mode, e_ins in zip(
            pre_entries, modes, entry_instrs, strict=True
        ):
            self.bwd_spans.append((e_ins, len(bwd), len(bwd)))
            nslots = len(args)
            outs: list[Array | None] = [None] * nslots
            adds: list[tuple[Array, Array]] = []
            for (j, tgt, _sh, _root), add in zip(tg, mode, strict=True):
                if add:
                    skey = (tgt.shape, tgt.dtype.str, j)
                    scr = scratch.get(skey)
                    if scr is None:
                        scr = scratch[skey] = self.arena.empty(tgt.shape, tgt.dtype)
                    outs[j] = scr
                    adds.append((tgt, scr))
                else:
                    outs[j] = tgt
            if flat and fn_into in (_apply_factors, _apply_matrices):
                ufunc = np.multiply if fn_into is _apply_factors else np.matmul
                for o, a in zip(outs, args, strict=True):
                    if o is not None:
                        bwd.append((ufunc, (g_, a, o)))
            elif flat and fn_into is _COPY.vjp_into and outs[0] is not None:
                if adds:
                    bwd.append((np.add, (adds[0][0], g_, adds[0][0])))
                    continue
                bwd.append((np.copyto, (outs[0], g_)))
            else:
                bwd.append((fn_into, (tuple(outs), g_, y_, *args)))
            for tgt, scr in adds:
                bwd.append((np.add, (tgt, scr, tgt)))
        self.bwd_spans = closed(self.bwd_spans, len(bwd))
        self.bwd = packed(bwd)

    def _reads(
        self,
        plan: Plan,
        views: Mapping[str, tuple[str, int, int]],
        skip_carry: set[str],
        gbase: Mapping[str, str],
        shadow: Mapping[str, Any],
    ) -> list[tuple[Any, str]]:
        """The gradient regions each backward instruction reads, in order, after the
        writes before it: used to find buffers that must start from zeros."""
        out = []
        for ins in plan.backward_instrs:
            if ins.name in views and ins.kind != "carry":
                continue
            if ins.kind == "op" and ins.step >= 0 and ins.name in self._chained:
                continue
            if ins.kind == "carry" and ins.name in skip_carry:
                continue
            arr = shadow[ins.out.buffer]
            idx = ins.out.index
            if idx is None:
                v = arr
            elif isinstance(idx, tuple):
                v = arr[idx[0] : idx[1]]
            else:
                v = arr[idx]
            out.append((v, gbase[ins.out.buffer]))
        return out

    def _mask_views(self, t: int, ndim: int) -> tuple[BoolArray, Array]:
        mb = self.mask_bool[t]
        mf = self.mask_col[t]
        shape = (mb.shape[0],) + (1,) * (ndim - 1)
        return mb[(slice(None),) + (0,) * (mb.ndim - 1)].reshape(shape), mf[
            (slice(None),) + (0,) * (mf.ndim - 1)
        ].reshape(shape)

    # -- loading inputs -------------------------------------------------------

    def _load(
        self,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array],
        mask: Array | BoolArray | None,
    ) -> None:
        cell = self.plan.cell
        cname = cell.name
        T, B = self.T, self.batch
        declared: tuple[tuple[str, Mapping[str, Array], Mapping[str, Any], str], ...] = (
            ("parameter", params, cell.params, "param:"),
            ("input", inputs, cell.inputs, "in:"),
        )
        for what, given, names, prefix in declared:
            for n in names:
                if n not in given:
                    raise GraphError(
                        f"cell '{cname}': {what} '{n}' is missing; expected {list(names)}"
                    )
                _put(self.bufs[prefix + n], given[n], f"cell '{cname}': {what} '{n}'")
            extra = sorted(set(given) - set(names))
            if extra:
                raise GraphError(
                    f"cell '{cname}': unknown {what}(s) {extra}; expected {list(names)}"
                )
        for s, sspec in cell.states.items():
            buf0 = self.bufs["state:" + s][0]
            if s in states and states[s] is not None:
                _put(buf0, states[s], f"cell '{cname}': initial state '{s}'")
            else:
                np.copyto(buf0, sspec.initial(B))
        extra = sorted(set(states) - set(cell.states))
        if extra:
            raise GraphError(
                f"cell '{cname}': unknown state(s) {extra}; expected {list(cell.states)}"
            )
        # padded steps are computed, then multiplied by zero: a NaN or an infinity there
        # would still poison the loss and the gradients, so it is refused at the door
        for n in cell.inputs:
            arr = self.bufs["in:" + n]
            finite = np.isfinite(arr).reshape(T, -1).all(axis=1)
            if not finite.all():
                t = int(np.argmin(finite))
                raise NonFiniteError(
                    f"cell '{cname}': input '{n}' holds a NaN or an infinity at step {t} "
                    "(padded steps too are computed; put zeros there)",
                    node=n,
                    step=t,
                )
        for s_ in cell.states:
            if not np.all(np.isfinite(self.bufs["state:" + s_][0])):
                raise NonFiniteError(
                    f"cell '{cname}': initial state '{s_}' holds a NaN or an infinity",
                    node=s_,
                    step=0,
                )
        if mask is not None:
            m = np.asarray(mask)
            if m.shape != (T, B):
                raise ShapeError(f"cell '{cname}': mask must have shape ({T}, {B}), got {m.shape}")
            if m.dtype != np.bool_ and not np.all((m == 0) | (m == 1)):
                raise ArgumentError(f"cell '{cname}': mask must hold only 0 and 1")
            np.copyto(self.mask, m, casting="unsafe")
            np.copyto(self.mask_bool, self.mask_col != 0)

    # -- passes ------------------------------------------------------------------

    def forward(
        self,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array],
        mask: Array | BoolArray | None,
        with_outputs: bool = True,
    ) -> Run:
        self._load(params, inputs, states, mask)
        # exp() overflowing to inf inside a sigmoid is exact (1 / inf = 0): not worth a warning
        with np.errstate(over="ignore"):
            self._execute_forward()
        self.generation += 1
        cell = self.plan.cell
        loss = 0.0
        for name in cell.losses:
            vals = self.bufs["op:" + name]
            loss += float(np.sum(vals * self.mask) if self.masked else np.sum(vals))
        outputs: dict[str, Array] = {}
        for o, n in cell.outputs.items() if with_outputs else ():
            arr = self.bufs[buffer_of(cell, n)]
            if cell.kind(n) == "state":
                arr = arr[: self.T]
            if self.masked:
                outputs[o] = arr * self.mask.reshape(self.mask.shape + (1,) * (arr.ndim - 2))
            else:
                outputs[o] = arr.copy()
        final = {s: self.bufs["state:" + s][self.T].copy() for s in cell.states}
        return Run(loss, outputs, final, self.batch, self.masked, self.generation)

    def backward(self, grad_outputs: Mapping[str, Array], loss_scale: float) -> Gradients:
        cell = self.plan.cell
        cname = cell.name
        for o in grad_outputs:
            if o not in cell.outputs:
                raise GraphError(
                    f"cell '{cname}': grad_outputs names unknown output '{o}'; outputs are "
                    f"{list(cell.outputs)}"
                )
        self._use_binding(bool(grad_outputs))
        with_outputs = bool(grad_outputs)
        for arr in self._zero:
            arr.fill(0)
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
        for o, n in cell.outputs.items() if with_outputs else ():
            key = buffer_of(cell, n)
            target = self.gbufs[key]
            if cell.kind(n) == "state":
                target = target[: self.T]
            add = self.seed_modes[key]
            if o not in grad_outputs:
                if not add:
                    target.fill(0)
                continue
            go = np.asarray(grad_outputs[o])
            if go.shape != target.shape:
                raise ShapeError(
                    f"cell '{cname}': the gradient of output '{o}' has shape {go.shape}, "
                    f"expected {target.shape}"
                )
            if self.masked:
                go = go * self.mask.reshape(self.mask.shape + (1,) * (go.ndim - 2))
            if add:
                target += go
            else:
                np.copyto(target, go)
        for ffn, fouts, y_all, xs_all in self.factor_jobs:
            ffn(fouts, y_all, *xs_all)
        self._execute_backward()
        out = Gradients()
        for name in sorted(self.plan.wrt):
            kind = cell.kind(name)
            if kind == "param":
                out.params[name] = self.gbufs["param:" + name].copy()
            elif kind == "input":
                out.inputs[name] = self.gbufs["in:" + name].copy()
            else:
                out.states[name] = self.gbufs["state:" + name][0].copy()
        out.params = {p: out.params[p] for p in cell.params if p in out.params}
        return out

    def _use_binding(self, with_outputs: bool) -> None:
        """Make the backward binding (with or without output seeds) the current one."""
        binding = self._bindings.get(with_outputs)
        if binding is None:
            self._bind_backward(with_outputs)
            self._bindings[with_outputs] = (
                self.gbufs,
                self.factor_jobs,
                self._zero,
                self.seed_modes,
                self.bwd,
            )
        else:
            self.gbufs, self.factor_jobs, self._zero, self.seed_modes, self.bwd = binding

    def _execute_forward(self) -> None:
        for fn, args in self.fwd:
            fn(*args)

    def _execute_backward(self) -> None:
        for fn, args in self.bwd:
            fn(*args)

    def first_nonfinite(self) -> tuple[str, int] | None:
        """The first (node, step) of the unrolled order whose value is not finite, read
        from the buffers as they are (the plan asks this of a plain plan, whose buffers
        hold every value)."""
        plan = self.plan
        cell = plan.cell
        for name, step in plan.order:
            kind = cell.kind(name)
            if kind not in ("op", "state") or (step >= self.T and kind == "op"):
                continue
            arr = self.bufs[buffer_of(cell, name)]
            if kind == "op" and cell.ops[name].static:
                value = arr
            elif kind == "state" and step > self.T:
                continue
            else:
                value = arr[step]
            if not np.all(np.isfinite(value)):
                return name, step
        return None


def _typed_constants(calls: list[Call], dtype: np.dtype[Any]) -> list[Call]:
    """The calls with each Python number operand of a ufunc made a 0-d array of ``dtype``.

    numpy converts a Python scalar on every call (about 0.4 us, as much as the
    arithmetic on a (1, 256) array); a typed 0-d array is used as it is. The
    values do not change: a Python number takes the array's dtype either way.
    """
    out = []
    for fn, args in calls:
        base = fn.func if isinstance(fn, functools.partial) else fn
        if isinstance(base, np.ufunc):
            args = tuple(
                np.asarray(a, dtype=dtype)
                if isinstance(a, int | float) and not isinstance(a, bool)
                else a
                for a in args
            )
        out.append((fn, args))
    return out


def _put(dst: Array, src: Any, what: str) -> None:
    arr = np.asarray(src)
    if arr.shape != dst.shape:
        raise ShapeError(f"{what} has shape {arr.shape}, expected {dst.shape}")
    if arr.dtype != dst.dtype:
        raise DTypeError(
            f"{what} is {arr.dtype}, expected {dst.dtype} (convert it explicitly; minigrad "
            "never changes a dtype silently)"
        )
    np.copyto(dst, arr)


def _checked_forward(cname: str, ins: Instr) -> _FwdFn:
    assert ins.op is not None
    op = ins.op

    def fn(out: Array, *xs: Array) -> None:
        y = np.asarray(op.forward(*xs))
        if y.shape != out.shape or y.dtype != out.dtype:
            raise NodeContractError(
                f"cell '{cname}': node '{ins.name}' ({type(op).__name__}) {at(ins.step)}: "
                f"forward returned {y.shape} {y.dtype}, expected {out.shape} {out.dtype}"
            )
        np.copyto(out, y)

    return fn


def _product_job(outs: tuple[Array, ...], a: Array, b: Array) -> tuple[Array, ...]:
    np.multiply(a, b, out=outs[0])
    return outs


def _apply_factors(
    outs: tuple[Array | None, ...], g: Array, y: Array, *factors: Array | None
) -> None:
    """Backward of an elementwise node from its precomputed Jacobian: ``out_i = g * F_i``."""
    for o, f in zip(outs, factors, strict=True):
        if o is not None and f is not None:
            np.multiply(g, f, out=o)


def _apply_matrices(
    outs: tuple[Array | None, ...], g: Array, y: Array, *matrices: Array | None
) -> None:
    """Backward of a linear node from its prepared right Jacobians: ``out_i = g @ M_i``."""
    for o, m in zip(outs, matrices, strict=True):
        if o is not None and m is not None:
            np.matmul(g, m, out=o)


def _checked_vjp_into(cname: str, ins: Instr) -> _IntoFn:
    checked = _checked_vjp(cname, ins)

    def fn(outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        needs = tuple(o is not None for o in outs)
        for o, gr in zip(outs, checked(needs, g, y, *xs), strict=False):
            if o is not None:
                np.copyto(o, gr)

    return fn


def _checked_vjp(cname: str, ins: Instr) -> Callable[..., tuple[Array, ...]]:
    assert ins.op is not None
    op = ins.op

    def fn(needs: tuple[bool, ...], g: Array, y: Array, *xs: Array) -> tuple[Array, ...]:
        grads = op.vjp_some(needs, g, y, *xs)
        where = f"cell '{cname}': node '{ins.name}' ({type(op).__name__}) {at(ins.step)}"
        if not isinstance(grads, tuple) or len(grads) != len(xs):
            n = len(grads) if isinstance(grads, tuple) else type(grads).__name__
            raise NodeContractError(
                f"{where}: vjp must return a tuple of {len(xs)} gradient(s), one per input, got {n}"
            )
        for i, (gr, x, need) in enumerate(zip(grads, xs, needs, strict=True)):
            if not need:
                continue
            if gr is None:
                raise NodeContractError(
                    f"{where}: vjp returned None for input {i} '{op.slot(i)}'; return zeros instead"
                )
            if np.shape(gr) != x.shape or np.asarray(gr).dtype != x.dtype:
                raise NodeContractError(
                    f"{where}: the gradient of input {i} '{op.slot(i)}' is {np.shape(gr)} "
                    f"{np.asarray(gr).dtype}, expected {x.shape} {x.dtype}"
                )
        return grads

    return fn
