"""Graph passes: documented rewrites that make a compiled plan fast, each one optional.

A plan is compiled with the passes named in ``passes`` (default:
``DEFAULT_PASSES``, all of them); ``passes=()`` compiles the plain per-node,
per-step plan, which is the reference the optimised plans are tested against.

Cell rewrites (a ``Cell`` in, an equivalent ``Cell`` out; parameter, input,
state, output and loss names are unchanged, so are the names of the original
nodes wherever they survive):

``merge_matmuls``
    MatMul nodes that share their left operand and multiply it by parameters
    (or parameter-only nodes) become one MatMul by the concatenated weights,
    followed by one ``Slice`` per original node (keeping its name). The
    concatenation is a parameter-only node, computed once per sequence. In a
    GRU this turns ``x Wz``, ``x Wr``, ``x Wca`` into one GEMM and
    ``h Wrecz``, ``h Wrecr`` into another.

``reassociate_adds``
    A tree of ``Add`` nodes that mixes step-independent terms (input
    projections, biases) with terms that depend on a state is regrouped as
    ``(sum of step-independent terms) + (sum of the others)``, so the first
    sum is computed for all steps at once and the bias addition is folded out
    of the time loop. Floating-point addition is not associative: results
    differ from the plain plan by rounding only.

Plan schedules (applied while compiling):

``time_batch``
    Nodes are classified as *pre* (depend on inputs and parameters only),
    *rec* (on the path from a state to its update) and *post* (depend on a
    state but do not feed the recurrence: losses, read-outs). Pre nodes run
    once over all steps before the time loop, post nodes once after it, each
    as one numpy call on (T, B, ...) buffers; the backward pass mirrors this.

``defer_shared_grads``
    Inside the time loop, a node's gradient with respect to a parameter (or
    parameter-only node) is not accumulated step by step: it is computed once
    after the loop from the whole (T, B, ...) buffers, for example
    ``dW = A^T G`` as one GEMM over all T * B rows.

``view_slices``
    ``Slice`` nodes cost nothing: their values and gradients are views into
    the buffers of the sliced node.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Literal

from minigrad import nodes as N
from minigrad.cell import Cell, CellBuilder

__all__ = [
    "ALL_PASSES",
    "DEFAULT_PASSES",
    "Phase",
    "classify",
    "merge_matmuls",
    "reassociate_adds",
    "rewrite",
]

ALL_PASSES = (
    "merge_matmuls",
    "reassociate_adds",
    "time_batch",
    "defer_shared_grads",
    "view_slices",
)
DEFAULT_PASSES = ALL_PASSES
CELL_PASSES = ("merge_matmuls", "reassociate_adds")

Phase = Literal["static", "pre", "rec", "post"]


def classify(cell: Cell) -> dict[str, Phase]:
    """The phase of every operation node of ``cell``.

    ``static``: depends on parameters only. ``pre``: depends on inputs (and
    parameters) but on no state. ``rec``: depends on a state and lies on a path
    to a state's update (the recurrence itself). ``post``: depends on a state
    but feeds no update (losses, read-outs, outputs).
    """
    g = cell.graph
    from_state: set[str] = set()
    queue = deque(cell.states)
    while queue:
        n = queue.popleft()
        for m in g.succ[n]:
            if m not in from_state:
                from_state.add(m)
                queue.append(m)
    to_update: set[str] = set()
    queue = deque(s.update for s in cell.states.values())
    to_update.update(queue)
    while queue:
        n = queue.popleft()
        for m in g.pred[n]:
            if m not in to_update:
                to_update.add(m)
                queue.append(m)
    out: dict[str, Phase] = {}
    for n, spec in cell.ops.items():
        if spec.static:
            out[n] = "static"
        elif n not in from_state:
            out[n] = "pre"
        elif n in to_update:
            out[n] = "rec"
        else:
            out[n] = "post"
    return out


def _rebuild(cell: Cell, ops: dict[str, tuple[N.Node, tuple[str, ...]]]) -> Cell:
    b = CellBuilder(cell.name, cell.dtype)
    for p, ps in cell.params.items():
        b.param(p, ps.shape, init=ps.init, dtype=ps.dtype)
    for i, ispec in cell.inputs.items():
        b.input(i, tuple(int(d) for d in ispec.shape[1:]), dtype=ispec.dtype)
    for s, ss in cell.states.items():
        b.state(s, tuple(int(d) for d in ss.shape[1:]), init=ss.init, dtype=ss.dtype)
    for n, (op, ins) in ops.items():
        b.node(n, op, *ins)
    for s, ss in cell.states.items():
        b.update(s, ss.update)
    for o, v in cell.outputs.items():
        b.output(o, v)
    for v in cell.losses:
        b.loss(v)
    return b.build()


def _ops(cell: Cell) -> dict[str, tuple[N.Node, tuple[str, ...]]]:
    return {n: (cell.ops[n].op, cell.ops[n].inputs) for n in cell.order}


def merge_matmuls(cell: Cell) -> Cell:
    """Merge MatMul nodes that share a left operand into one GEMM (see the module docstring)."""
    groups: dict[str, list[str]] = {}
    for n in cell.order:
        spec = cell.ops[n]
        op = spec.op
        if type(op) is not N.MatMul or op.transpose_b or spec.static:
            continue
        a, w = spec.inputs
        if not cell.shared(w) or len(cell.spec_shape(w)) != 2:
            continue
        groups.setdefault(a, []).append(n)
    ops = _ops(cell)
    changed = False
    for a, members in groups.items():
        weights = [cell.ops[m].inputs[1] for m in members]
        if len(members) < 2 or len({cell.dtypes()[w] for w in weights}) != 1:
            continue
        cat = "concat[" + ",".join(weights) + "]"
        merged = f"{a}@[" + ",".join(weights) + "]"
        if cat in ops or merged in ops or cat in cell.graph or merged in cell.graph:
            continue
        ops[cat] = (N.Concat(), tuple(weights))
        ops[merged] = (N.MatMul(), (a, cat))
        start = 0
        for m, w in zip(members, weights, strict=True):
            width = int(cell.spec_shape(w)[1])
            ops[m] = (N.Slice(start, start + width), (merged,))
            start += width
        changed = True
    return _rebuild(cell, ops) if changed else cell


def reassociate_adds(cell: Cell) -> Cell:
    """Group the step-independent terms of Add trees (see the module docstring)."""
    phase = classify(cell)
    uses: dict[str, int] = {}
    for n in cell.order:
        for r in cell.ops[n].inputs:
            uses[r] = uses.get(r, 0) + 1
    pinned = (
        set(cell.outputs.values()) | set(cell.losses) | {s.update for s in cell.states.values()}
    )

    def is_add(n: str) -> bool:
        return n in cell.ops and type(cell.ops[n].op) is N.Add

    def independent(n: str) -> bool:
        kind = cell.kind(n)
        return kind in ("param", "input") or (kind == "op" and phase[n] in ("static", "pre"))

    ops = _ops(cell)
    absorbed: set[str] = set()
    changed = False
    for root in reversed(cell.order):
        if root in absorbed or not is_add(root) or phase[root] not in ("rec", "post"):
            continue
        leaves: list[str] = []
        inner: list[str] = []
        stack = list(reversed(cell.ops[root].inputs))
        while stack:
            r = stack.pop()
            if is_add(r) and uses.get(r, 0) == 1 and r not in pinned and phase[r] == phase[root]:
                inner.append(r)
                stack.extend(reversed(cell.ops[r].inputs))
            else:
                leaves.append(r)
        fixed = [r for r in leaves if independent(r)]
        moving = [r for r in leaves if not independent(r)]
        root_shape = cell.spec_shape(root)
        if len(fixed) < 2 or not moving:
            continue
        if any(cell.spec_shape(r) != root_shape for r in moving):
            continue
        # dynamic step-independent terms first, so the partial sums keep the batch dimension
        fixed.sort(key=lambda r: cell.shared(r))
        acc = fixed[0]
        for k, r in enumerate(fixed[1:], 1):
            name = f"{root}.fixed{k}"
            ops[name] = (N.Add(), (acc, r))
            acc = name
        racc = moving[0]
        for k, r in enumerate(moving[1:], 1):
            name = f"{root}.moving{k}"
            ops[name] = (N.Add(), (racc, r))
            racc = name
        ops[root] = (N.Add(), (acc, racc))
        for r in inner:
            del ops[r]
        absorbed.update(inner)
        changed = True
    return _rebuild(cell, ops) if changed else cell


def rewrite(cell: Cell, passes: Iterable[str]) -> Cell:
    """Apply the cell rewrites among ``passes`` (in the order of ``CELL_PASSES``)."""
    names = set(passes)
    unknown = names - set(ALL_PASSES)
    if unknown:
        raise ValueError(f"unknown pass(es) {sorted(unknown)}; known: {list(ALL_PASSES)}")
    if "merge_matmuls" in names:
        cell = merge_matmuls(cell)
    if "reassociate_adds" in names:
        cell = reassociate_adds(cell)
    return cell
