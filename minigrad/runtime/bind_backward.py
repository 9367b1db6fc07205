"""Backward binding: gradient buffers, write modes, and the backward pass as calls.

The backward pass of a plan becomes one flat list of calls, made in steps that
each have a function here:

1. ``add_groups`` and ``gradient_buffers``: the gradient buffers, laid out like
   the values, with three kinds of sharing: a Slice's gradient is a view of
   its source's, an aliased update's is rows 1..T of its state's, and an
   Add's inputs that only it reads share the Add's gradient (the Add then
   needs no call: the ``share_add_grads`` pass). Inputs not in ``wrt`` get a
   read-only zero view instead of a buffer.
2. ``Factors``: elementwise Jacobians precomputed for all steps at once
   (``factor_elementwise``), and right Jacobians of linear nodes that depend on
   shared values only, each refreshed by a *factor job* once per pass.
3. ``chained_nodes`` and ``chain_products``: a unary elementwise node whose
   readers are all elementwise hands them its factor (``chain_factors``): each
   reader multiplies by the product of both and writes the unary node's input
   gradient directly.
4. ``backward_entries``: one entry per backward instruction: the function, the
   upstream gradient, the value, the arguments, and the targets (slot,
   gradient view, its boolean shadow, the buffer it belongs to).
5. ``write_modes``: which writes assign and which add, found by running the
   entries on boolean shadows of the gradient buffers (``assign_first_writes``),
   and which buffers must start from zeros; the same for the seeds (loss and
   output gradients).
6. ``backward_calls``: the entries as calls (flat ufunc calls where possible),
   a write that adds going through a scratch buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.arena import Arena
from minigrad.errors import GraphError, NodeContractError
from minigrad.nodes import Add, Call, Node
from minigrad.pass_names import ASSIGN_FIRST_WRITES, CHAIN_FACTORS, FACTOR_ELEMENTWISE, FLAT_CALLS
from minigrad.runtime.calls import Span, closed, packed
from minigrad.runtime.instr import BufRef, Instr, at, buffer_of
from minigrad.runtime.layout import mask_views, sliced, view
from minigrad.types import AnyArray, Array, BoolArray, Shape

if TYPE_CHECKING:
    from minigrad.plan import Plan

__all__ = [
    "BackwardBinding",
    "Factors",
    "Target",
    "add_groups",
    "backward_calls",
    "backward_entries",
    "bind_backward",
    "chain_products",
    "chained_nodes",
    "gradient_buffers",
    "gradient_reads",
    "loop_instructions",
    "seed_buffers",
    "seeded_inputs",
    "write_modes",
]

_IntoFn = Callable[..., None]
FactorJob = tuple[Callable[..., Any], tuple[Array, ...], Array, tuple[Array, ...]]
"""``(fn, scratch outs, y over all steps, inputs over all steps)``: ``fn(outs, y, *xs)``."""
WriteTarget = tuple[int, Array, AnyArray, str]
"""``(input slot, gradient view, its boolean shadow, the buffer it belongs to)``."""
Entry = tuple[_IntoFn, Array, Array, tuple[AnyArray, ...], list[WriteTarget]]
"""``(fn, upstream gradient, value, arguments, targets)`` of one backward instruction."""
Use = tuple[str, int, tuple[int, int] | None]
"""A reader of a chained node: ``(reader, input slot, column range or None)``."""


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
# the binding


@dataclass
class Target:
    """What a backward pass is bound onto: a plan, its step count ``T`` and the value
    buffers of one layout (``minigrad.runtime.layout``), the arena new buffers come
    from, the aliased updates and the states whose carry needs no call, and whether
    passes take a mask (then the mask columns the carries read)."""

    plan: Plan
    T: int
    bufs: Mapping[str, Array]
    arena: Arena
    aliased: Mapping[str, str]
    skip_carry: set[str]
    masked: bool
    mask_bool: BoolArray
    mask_col: Array


@dataclass
class BackwardBinding:
    """A bound backward pass.

    ``gbufs``: ``{buffer name: gradient array}``, laid out like the values;
    ``factor_jobs``: run once per pass before the calls; ``zero_roots``: the
    gradient buffers to zero before each pass, and ``zero`` the writable arrays
    among them; ``seed_modes``: ``{buffer: add}`` for each seed (a loss, or an
    output given a gradient): add into the buffer, or assign; ``calls`` and
    ``spans``: the calls and the span each backward instruction produced;
    ``chained``: the nodes whose Jacobian their readers took over.
    """

    gbufs: dict[str, Array]
    factor_jobs: list[FactorJob]
    zero_roots: list[str]
    zero: list[Array]
    seed_modes: dict[str, bool]
    calls: list[Call]
    spans: list[Span]
    chained: set[str]


def bind_backward(t: Target, output_seeds: bool) -> BackwardBinding:
    """The backward pass of ``t.plan``, seeded by the losses and, if ``output_seeds``,
    by gradients given for the outputs."""
    plan = t.plan
    groups, fixed_of = add_groups(plan, t.aliased)
    gbufs, gbase = gradient_buffers(t, groups, fixed_of, t.arena.zeros, lean=True)
    shadow, _ = gradient_buffers(
        t, groups, fixed_of, lambda shape, _dt: np.zeros(shape, dtype=bool)
    )
    factors = Factors(t)
    loop_instr = loop_instructions(plan)
    chains = chained_nodes(t, factors, loop_instr)
    composite = chain_products(chains, factors, loop_instr, t.arena)
    entries, entry_instrs = backward_entries(
        t, groups, chains, composite, factors, loop_instr, gbufs, shadow, gbase
    )
    seeds = seed_buffers(t, output_seeds)
    zero_roots, modes, seed_modes = write_modes(t, entries, seeds, gbufs, gbase, shadow, chains)
    calls, spans = backward_calls(plan, entries, modes, entry_instrs, t.arena)
    return BackwardBinding(
        gbufs=gbufs,
        factor_jobs=factors.jobs,
        zero_roots=zero_roots,
        zero=[gbufs[k] for k in zero_roots if gbufs[k].flags.writeable],
        seed_modes=dict(zip(seeds, seed_modes, strict=True)),
        calls=calls,
        spans=spans,
        chained=set(chains),
    )


# --------------------------------------------------------------------------
# 1. gradient buffers


def add_groups(plan: Plan, aliased: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The Add groups whose members share one gradient buffer (``share_add_grads``):
    ``{member: root}``, and ``{root: member}`` for a root whose buffer is fixed by a
    member (a Slice view or an aliased update: at most one such member stays)."""
    views = plan.views
    groups = dict(plan.shared_grads)
    roots: dict[str, list[str]] = {}
    for m, r in groups.items():
        roots.setdefault(r, []).append(m)
    fixed_of: dict[str, str] = {}
    for r, members in roots.items():
        fixed = [m for m in members if m in views]
        if r in aliased:
            fixed.insert(0, r)
        for surplus in fixed[1:]:
            del groups[surplus]
        if fixed and fixed[0] != r:
            fixed_of[r] = fixed[0]
    return groups, fixed_of


def gradient_buffers(
    t: Target,
    groups: Mapping[str, str],
    fixed_of: Mapping[str, str],
    zeros: Callable[[Shape, Any], AnyArray],
    lean: bool = False,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The gradient buffers (made by ``zeros``) and ``{buffer: the buffer it is a view
    of}``; with ``lean``, inputs not in ``wrt`` get a read-only zero view."""
    plan = t.plan
    cell = plan.cell
    views = plan.views
    fixed_members = set(fixed_of.values())
    seeded = seeded_inputs(plan)
    g: dict[str, Any] = {}
    base: dict[str, str] = {}
    for k, v in t.bufs.items():
        if not k.startswith("op:"):
            if lean and k.startswith("in:") and k[3:] not in plan.wrt and k[3:] not in seeded:
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
                g[key] = g[dep] if shared else sliced(plan, t.T, g, n)
                base[key] = base[dep]
            elif n in t.aliased:
                skey = "state:" + t.aliased[n]
                g[key] = g[skey][1:]
                base[key] = skey
            else:
                g[key] = zeros(t.bufs[key].shape, t.bufs[key].dtype)
                base[key] = key
        if len(left) == len(pending):
            raise GraphError(f"cell '{cell.name}': cannot lay out gradient buffers")
        pending = left
    return g, base


def seeded_inputs(plan: Plan) -> set[str]:
    """The inputs whose gradient buffer an output's seed writes into: an output that is
    the input, or a Slice of it bound as a view."""
    cell = plan.cell
    out: set[str] = set()
    for n in cell.outputs.values():
        while n in plan.views:
            n = plan.views[n][0]
        if cell.kind(n) == "input":
            out.add(n)
    return out


# --------------------------------------------------------------------------
# 2. precomputed Jacobians


class Factors:
    """Precomputed Jacobians of the plan's nodes, each made at most once, and the jobs
    that refresh them once per backward pass (``factor_elementwise``)."""

    def __init__(self, t: Target) -> None:
        self.t = t
        self.enabled = FACTOR_ELEMENTWISE in t.plan.passes
        self.jobs: list[FactorJob] = []
        self._arrays: dict[str, tuple[Array, ...] | None] = {}
        # the arrays each node's factor job allocated (its own to overwrite, unlike a
        # factor that is a view of a forward value)
        self._owned: dict[str, tuple[Array, ...]] = {}
        self._matrices: dict[tuple[str, int], Array] = {}

    def elementwise(self, ins: Instr) -> tuple[Array, ...] | None:
        """The node's elementwise Jacobian for each input, over all steps, or None."""
        if not self.enabled or ins.op is None or not type(ins.op).verified:
            return None
        if ins.name in self._arrays:
            return self._arrays[ins.name]
        op = ins.op
        bufs = self.t.bufs
        result: tuple[Array, ...] | None = None
        if type(op).factors_into is not Node.factors_into:
            every = (0, self.t.T)
            y_all = view(bufs, BufRef(ins.out.buffer, every))
            xs_all = tuple(
                view(bufs, BufRef(r.buffer, every) if r.index is not None else r) for r in ins.ins
            )
            if all(x.shape == y_all.shape for x in xs_all):
                scratch_f = tuple(self.t.arena.empty(y_all.shape, y_all.dtype) for _ in xs_all)
                with np.errstate(all="ignore"):
                    result = op.factors_into(scratch_f, y_all, *xs_all)
                if result is not None:
                    self.jobs.append((op.factors_into, scratch_f, y_all, xs_all))
                    self._owned[ins.name] = scratch_f
        self._arrays[ins.name] = result
        return result

    def owns(self, name: str, arr: Array) -> bool:
        """Whether ``arr`` is a factor that ``name``'s job allocated (free to overwrite)."""
        return any(arr is a for a in self._owned.get(name, ()))

    def matrix(self, ins: Instr, i: int) -> Array | None:
        """A contiguous copy of the node's right Jacobian for input i, refreshed once per
        backward pass, when it only depends on values shared by all steps."""
        if not self.enabled or ins.op is None or not type(ins.op).verified:
            return None
        if (ins.name, i) in self._matrices:
            return self._matrices[ins.name, i]
        if any(r.index is not None for j, r in enumerate(ins.ins) if j != i):
            return None
        op = ins.op
        if type(op).right_jacobian is Node.right_jacobian:
            return None
        xs_any = tuple(view(self.t.bufs, r) for r in ins.ins)
        m = op.right_jacobian(i, *xs_any)
        if m is None:
            return None
        buf = self.t.arena.empty(m.shape, m.dtype)

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

        self.jobs.append((refresh, (), buf, ()))
        self._matrices[ins.name, i] = buf
        return buf


# --------------------------------------------------------------------------
# 3. chains of factors


def loop_instructions(plan: Plan) -> dict[str, Instr]:
    """Each node's first backward instruction at a step (not over all steps)."""
    out: dict[str, Instr] = {}
    for ins in plan.backward_instrs:
        if ins.kind == "op" and ins.step >= 0 and ins.name not in out:
            out[ins.name] = ins
    return out


def chained_nodes(
    t: Target, factors: Factors, loop_instr: Mapping[str, Instr]
) -> dict[str, list[Use]]:
    """The unary elementwise nodes (tanh, sigmoid) whose every reader is an elementwise
    node in the loop (through Slice views too), with those uses (``chain_factors``):
    the node's own backward step disappears."""
    plan = t.plan
    cell = plan.cell
    views = plan.views
    chains: dict[str, list[Use]] = {}
    if CHAIN_FACTORS not in plan.passes or not factors.enabled:
        return chains
    readers = cell.readers
    pinned_names = cell.pinned
    for w in cell.order:
        wi = loop_instr.get(w)
        if (
            wi is None
            or len(cell.ops[w].inputs) != 1
            or w in pinned_names
            or w in views
            or w in t.aliased
            or not wi.needs
            or not wi.needs[0]
            or factors.elementwise(wi) is None
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
            if ui is None or not ui.needs or not ui.needs[uk] or factors.elementwise(ui) is None:
                ok = False
        if ok and uses:
            chains[w] = uses
    # a node that is itself folded into its readers cannot take another's factor
    for w in list(chains):
        if any(u in chains for u, _uk, _r in chains[w]):
            del chains[w]
    return chains


def chain_products(
    chains: Mapping[str, list[Use]],
    factors: Factors,
    loop_instr: Mapping[str, Instr],
    arena: Arena,
) -> dict[tuple[str, int], tuple[Array, str, tuple[int, int] | None]]:
    """For each use of a chained node: ``{(reader, slot): (product of both factors,
    chained node, column range)}``, with a job that computes the product."""
    composite: dict[tuple[str, int], tuple[Array, str, tuple[int, int] | None]] = {}
    for w, uses in chains.items():
        fw = factors.elementwise(loop_instr[w])
        assert fw is not None
        # the product overwrites a factor that nothing else reads (the reader's factor
        # for this slot, or the part of w's factor that only this use covers), so the
        # chain costs no extra buffer; otherwise it gets its own
        spans = [(0, fw[0].shape[-1]) if rng is None else rng for _u, _uk, rng in uses]
        for n_use, (u, uk, rng) in enumerate(uses):
            fu = factors.elementwise(loop_instr[u])
            assert fu is not None
            fw_part = fw[0] if rng is None else fw[0][..., rng[0] : rng[1]]
            lo, hi = spans[n_use]
            alone = all(b <= lo or a >= hi for j, (a, b) in enumerate(spans) if j != n_use)
            if factors.owns(u, fu[uk]):
                comp = fu[uk]
            elif factors.owns(w, fw[0]) and alone and fw_part.shape == fu[uk].shape:
                comp = fw_part
            else:
                comp = arena.empty(fu[uk].shape, fu[uk].dtype)
            factors.jobs.append((_product_job, (comp,), fu[uk], (fw_part,)))
            composite[u, uk] = (comp, w, rng)
    return composite


# --------------------------------------------------------------------------
# 4. one entry per backward instruction


def backward_entries(
    t: Target,
    groups: Mapping[str, str],
    chains: Mapping[str, list[Use]],
    composite: Mapping[tuple[str, int], tuple[Array, str, tuple[int, int] | None]],
    factors: Factors,
    loop_instr: Mapping[str, Instr],
    gbufs: Mapping[str, Array],
    shadow: Mapping[str, Any],
    gbase: Mapping[str, str],
) -> tuple[list[Entry], list[Instr]]:
    """The entries of the backward pass, and the instruction each belongs to."""
    plan = t.plan
    cell = plan.cell
    views = plan.views
    bufs = t.bufs
    entries: list[Entry] = []
    entry_instrs: list[Instr] = []
    prev_ins = plan.backward_instrs[0] if plan.backward_instrs else None
    for ins in plan.backward_instrs:
        if ins.name in views and ins.kind != "carry":
            continue
        if ins.kind == "op" and ins.step >= 0 and ins.name in chains:
            continue
        while len(entry_instrs) < len(entries):
            assert prev_ins is not None
            entry_instrs.append(prev_ins)
        prev_ins = ins
        if ins.kind == "carry":
            if ins.name in t.skip_carry:
                continue
            entries.append(_carry_entry(t, ins, gbufs, shadow, gbase))
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
        tg: list[WriteTarget] = [
            (j, view(gbufs, r), view(shadow, r), gbase[r.buffer])
            for j, (r, need) in enumerate(zip(ins.ins, needs, strict=True))
            if need
        ]
        fs = factors.elementwise(ins) if ins.step >= 0 else None
        if fs is not None:
            args_f = tuple(f[ins.step] if need else None for f, need in zip(fs, needs, strict=True))
            if any((ins.name, j) in composite for j in range(len(needs))):
                args_f = _chained_args(ins, args_f, tg, composite, loop_instr, gbufs, shadow, gbase)
            entries.append(
                (_apply_factors, view(gbufs, ins.out), view(bufs, ins.out), args_f, tg)  # type: ignore[arg-type]
            )
            continue
        if ins.step >= 0:
            ms = [factors.matrix(ins, j) if need else None for j, need in enumerate(needs)]
            if all(m is not None for m, need in zip(ms, needs, strict=True) if need):
                entries.append(
                    (_apply_matrices, view(gbufs, ins.out), view(bufs, ins.out), tuple(ms), tg)  # type: ignore[arg-type]
                )
                continue
        fn_into: _IntoFn = ins.op.vjp_into
        if not type(ins.op).verified:
            fn_into = checked_vjp_into(cell.name, ins)
        entries.append(
            (
                fn_into,
                view(gbufs, ins.out),
                view(bufs, ins.out),
                tuple(view(bufs, r) for r in ins.ins),
                tg,
            )
        )
    while len(entry_instrs) < len(entries):
        assert prev_ins is not None
        entry_instrs.append(prev_ins)
    return entries, entry_instrs


def _carry_entry(
    t: Target,
    ins: Instr,
    gbufs: Mapping[str, Array],
    shadow: Mapping[str, Any],
    gbase: Mapping[str, str],
) -> Entry:
    """A state carry's entry: the update's (and, with a mask, the old state's) gradient."""
    bufs = t.bufs
    src = (view(bufs, ins.ins[0]), view(bufs, ins.ins[1]))
    tg: list[WriteTarget] = [
        (j, view(gbufs, r), view(shadow, r), gbase[r.buffer])
        for j, (r, need) in enumerate(zip(ins.ins, ins.needs, strict=True))
        if need
    ]
    g_ = view(gbufs, ins.out)
    y_ = view(bufs, ins.out)
    if t.masked:
        mb, mf = mask_views(t.mask_bool, t.mask_col, ins.step - 1, y_.ndim)
        return (_CARRY.vjp_into, g_, y_, (*src, mb, mf), tg)
    return (_COPY.vjp_into, g_, y_, src[:1], [x for x in tg if x[0] == 0])


def _chained_args(
    ins: Instr,
    args_f: tuple[Array | None, ...],
    tg: list[WriteTarget],
    composite: Mapping[tuple[str, int], tuple[Array, str, tuple[int, int] | None]],
    loop_instr: Mapping[str, Instr],
    gbufs: Mapping[str, Array],
    shadow: Mapping[str, Any],
    gbase: Mapping[str, str],
) -> tuple[Array | None, ...]:
    """A reader of a chained node multiplies by the product of both factors and writes
    the chained node's input gradient: its factors and targets (``tg``, in place)."""
    fl = list(args_f)
    for pos, (j, _t, _sh, _root) in enumerate(tg):
        if (ins.name, j) not in composite:
            continue
        comp, w, rng = composite[ins.name, j]
        src_ref = loop_instr[w].ins[0]
        ref_t = BufRef(src_ref.buffer, ins.step) if src_ref.index is not None else src_ref
        tv, sv = view(gbufs, ref_t), view(shadow, ref_t)
        if rng is not None:
            tv, sv = tv[..., rng[0] : rng[1]], sv[..., rng[0] : rng[1]]
        tg[pos] = (j, tv, sv, gbase[src_ref.buffer])
        fl[j] = comp[ins.step]
    return tuple(fl)


# --------------------------------------------------------------------------
# 5. write modes


def seed_buffers(t: Target, output_seeds: bool) -> list[str]:
    """The gradient buffers a pass seeds: each loss's, and each output's if given."""
    cell = t.plan.cell
    seeds = [("op:" + n) for n in cell.losses]
    if output_seeds:
        seeds += [buffer_of(cell, n) for n in cell.outputs.values()]
    return seeds


def write_modes(
    t: Target,
    entries: list[Entry],
    seeds: list[str],
    gbufs: Mapping[str, Array],
    gbase: Mapping[str, str],
    shadow: Mapping[str, Any],
    chains: Mapping[str, list[Use]],
) -> tuple[list[str], list[list[bool]], list[bool]]:
    """Which writes add (True) and which assign, per entry and target and per seed, and
    the gradient buffers that must be zeroed before each pass (sorted).

    The pass is simulated on the boolean shadows of the gradient buffers: a write into
    a region nothing wrote yet assigns, one into a region fully written adds, and one
    into a region partly written adds into a buffer that is zeroed first.
    """
    plan = t.plan
    T = t.T

    def seed_view(b: Mapping[str, Any], key: str) -> Any:
        arr = b[key]
        return arr[:T] if key.startswith("state:") else arr

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
        for _fn, _g, _y, _a, tg in entries:
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

    if ASSIGN_FIRST_WRITES not in plan.passes:
        everything_zeroed = {gbase[k] for k in gbufs}
        must_zero, modes, seed_modes = simulate(everything_zeroed)
        must_zero = everything_zeroed
    else:
        must_zero, modes, seed_modes = simulate(set())
    # a region that is read (or returned) but never fully written must start from zeros
    for read, root in gradient_reads(t, gbase, shadow, chains):
        if not read.all():
            must_zero.add(root)
    for k in (buffer_of(plan.cell, n) for n in sorted(plan.wrt)):
        sh = shadow[k][0] if k.startswith("state:") else shadow[k]
        if not sh.all():
            must_zero.add(gbase[k])
    if must_zero:
        again, modes, seed_modes = simulate(must_zero)
        must_zero = must_zero | again
    return sorted(must_zero), modes, seed_modes


def gradient_reads(
    t: Target,
    gbase: Mapping[str, str],
    shadow: Mapping[str, Any],
    chains: Mapping[str, list[Use]],
) -> list[tuple[Any, str]]:
    """The gradient regions each backward instruction reads, in order, after the
    writes before it: used to find buffers that must start from zeros."""
    plan = t.plan
    out = []
    for ins in plan.backward_instrs:
        if ins.name in plan.views and ins.kind != "carry":
            continue
        if ins.kind == "op" and ins.step >= 0 and ins.name in chains:
            continue
        if ins.kind == "carry" and ins.name in t.skip_carry:
            continue
        out.append((view(shadow, ins.out), gbase[ins.out.buffer]))
    return out


# --------------------------------------------------------------------------
# 6. the calls


def backward_calls(
    plan: Plan,
    entries: list[Entry],
    modes: list[list[bool]],
    entry_instrs: list[Instr],
    arena: Arena,
) -> tuple[list[Call], list[Span]]:
    """The entries as a flat list of calls, and the span of calls of each instruction.
    A write that adds goes into a scratch buffer (one per shape, dtype and slot), then
    is added to its target."""
    scratch: dict[tuple[tuple[int, ...], str, int], Array] = {}
    flat = FLAT_CALLS in plan.passes
    bwd: list[Call] = []
    spans: list[Span] = []
    for (fn_into, g_, y_, args, tg), mode, e_ins in zip(
        entries, modes, entry_instrs, strict=True
    ):
        spans.append((e_ins, len(bwd), len(bwd)))
        nslots = len(args)
        outs: list[Array | None] = [None] * nslots
        adds: list[tuple[Array, Array]] = []
        for (j, tgt, _sh, _root), add in zip(tg, mode, strict=True):
            if add:
                skey = (tgt.shape, tgt.dtype.str, j)
                scr = scratch.get(skey)
                if scr is None:
                    scr = scratch[skey] = arena.empty(tgt.shape, tgt.dtype)
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
    return packed(bwd), closed(spans, len(bwd))


# --------------------------------------------------------------------------
# the functions the calls run


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


def checked_vjp_into(cname: str, ins: Instr) -> _IntoFn:
    checked = checked_vjp(cname, ins)

    def fn(outs: tuple[Array | None, ...], g: Array, y: Array, *xs: Array) -> None:
        needs = tuple(o is not None for o in outs)
        for o, gr in zip(outs, checked(needs, g, y, *xs), strict=False):
            if o is not None:
                np.copyto(o, gr)

    return fn


def checked_vjp(cname: str, ins: Instr) -> Callable[..., tuple[Array, ...]]:
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
