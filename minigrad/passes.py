"""Graph passes: documented rewrites that make a compiled plan fast, each one optional.

A plan is compiled with the passes named in ``passes`` (default:
``DEFAULT_PASSES``, all of them); ``passes=()`` compiles the plain per-node,
per-step plan, which is the reference the optimised plans are tested against.

Cell rewrites (a ``Cell`` in, an equivalent ``Cell`` out; parameter, input,
state, output and loss names are unchanged, so are the names of the original
nodes wherever they survive):

``merge_matmuls``
    MatMul nodes that share their left operand and multiply it by parameters
    (or parameter-only nodes) become one MatMul by the concatenated weights
    (Affine nodes likewise, with concatenated biases),
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

``fold_bias``
    ``MatMul`` followed by the addition of a bias becomes one ``Affine``; when
    a merged MatMul is sliced and each slice gets its own bias, the biases are
    concatenated (once per sequence) and added in the same pass.

``fuse_siblings``
    Elementwise nodes of the same type whose inputs are adjacent column
    blocks of the same values (the z and r gates of a GRU, say) become one
    node over the joined block, followed by free ``Slice`` views. Repeated
    until nothing changes, so an ``Add`` fused this way lets the ``Sigmoid``
    after it fuse too.

``negate_sigmoid_inputs``
    ``sigmoid(p)`` costs four numpy calls (negate, exp, add, divide);
    ``neg_sigmoid(u) = 1 / (1 + exp(u))`` costs three. Where ``-p`` comes for
    free, the sigmoid becomes ``neg_sigmoid(-p)``: the negation is pushed up
    through sums, scalings, products, slices and concatenations into the
    weight columns and biases that produce ``p``, which are negated once per
    sequence by new parameter-only ``Scale(-1)`` nodes (a GRU's
    ``x [Wr|Wz] + h [Wrecr|Wrecz] + [br|bz]`` becomes
    ``x [-Wr|-Wz] + h [-Wrecr|-Wrecz] + [-br|-bz]``). A value is negated only
    where no other reader sees the negated columns. When several paths from
    one sigmoid reach the same input slot (``m[:, 0:3] + m[:, 3:6]`` with
    ``m = x W``), that slot reads one node with the union of their columns
    negated; if two paths would negate the same column, the sigmoid is left
    alone. Negation is exact in IEEE
    arithmetic and rounding is symmetric, so results do not change by a single
    bit.

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

``share_add_grads``
    An ``Add`` hands its gradient unchanged to its inputs: inputs that only
    this Add reads share its gradient buffer, and the Add's backward step
    disappears.

``factor_elementwise``
    Elementwise nodes inside the time loop (sigmoid, tanh, gates) have a
    diagonal Jacobian that depends on forward values only: it is computed for
    all steps at once before the backward loop, and each step's backward
    becomes one multiplication per input.

``reuse_buffers``
    A node whose input has no other reader writes its output over that input
    when no backward step needs the overwritten value (nodes declare what
    their backward reads): in a GRU the recurrent GEMM, the gate
    pre-activations and the gates share one buffer, as in hand-fused code.

``chain_factors``
    A unary elementwise node inside the loop (a tanh, a sigmoid) whose readers
    are all elementwise nodes hands its Jacobian to them: each reader
    multiplies by the product of both factors (prepared for all steps at once)
    and writes the unary node's input gradient directly, as a hand derivation
    writes ``dL/da_c = dL/dh * z * (1 - c^2)``.

``flat_calls``
    Nodes that can spell their forward pass as a few numpy ufunc calls
    (``Node.forward_calls``) are bound as those calls, and the backward
    multiplications and GEMMs prepared above are bound as plain ufunc calls:
    the time loops run a flat list of ``f(*args)`` with no Python frame per
    node in between.

``assign_first_writes``
    The first write into each gradient region in backward order assigns
    instead of adding, so gradient buffers need no zeroing and no temporary,
    except where a region is only partly covered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Literal

from minigrad import nodes as N
from minigrad.cell import Cell
from minigrad.errors import ArgumentError, check_names

__all__ = [
    "ALL_PASSES",
    "DEFAULT_PASSES",
    "Phase",
    "classify",
    "fold_bias",
    "fuse_siblings",
    "merge_matmuls",
    "negate_sigmoid_inputs",
    "reassociate_adds",
    "rewrite",
]

ALL_PASSES = (
    "fold_bias",
    "fuse_siblings",
    "merge_matmuls",
    "reassociate_adds",
    "time_batch",
    "defer_shared_grads",
    "view_slices",
    "share_add_grads",
    "assign_first_writes",
    "factor_elementwise",
    "reuse_buffers",
    "flat_calls",
    "chain_factors",
    "negate_sigmoid_inputs",
)
DEFAULT_PASSES = ALL_PASSES

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
    return cell.to_builder(ops).build()


def _ops(cell: Cell) -> dict[str, tuple[N.Node, tuple[str, ...]]]:
    return {n: (cell.ops[n].op, cell.ops[n].inputs) for n in cell.order}


def merge_matmuls(cell: Cell) -> Cell:
    """Merge MatMul (or Affine) nodes that share a left operand into one GEMM
    (see the module docstring)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for n in cell.order:
        spec = cell.ops[n]
        op = spec.op
        if spec.static:
            continue
        if type(op) is N.MatMul and not op.transpose_b:
            kind = "matmul"
        elif type(op) is N.Affine:
            kind = "affine"
        else:
            continue
        a, w = spec.inputs[0], spec.inputs[1]
        if not all(cell.shared(r) for r in spec.inputs[1:]) or len(cell.spec_shape(w)) != 2:
            continue
        groups.setdefault((a, kind), []).append(n)
    ops = _ops(cell)
    dtypes = cell.dtypes()
    changed = False
    for (a, kind), members in groups.items():
        weights = [cell.ops[m].inputs[1] for m in members]
        if len(members) < 2 or len({dtypes[w] for w in weights}) != 1:
            continue
        cat = "concat[" + ",".join(weights) + "]"
        merged = f"{a}@[" + ",".join(weights) + "]"
        if cat in ops or merged in ops or cat in cell.graph or merged in cell.graph:
            continue
        ops[cat] = (N.Concat(), tuple(weights))
        if kind == "affine":
            biases = [cell.ops[m].inputs[2] for m in members]
            bcat = "concat[" + ",".join(biases) + "]"
            if bcat in ops or bcat in cell.graph:
                del ops[cat]
                continue
            ops[bcat] = (N.Concat(), tuple(biases))
            ops[merged] = (N.Affine(), (a, cat, bcat))
        else:
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
    pinned = cell.pinned

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
            if (
                is_add(r)
                and len(cell.readers.get(r, ())) == 1
                and r not in pinned
                and phase[r] == phase[root]
            ):
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


def _bias_of(cell: Cell, add: str, value: str) -> str | None:
    """If ``add`` is ``value + b`` (either order) with ``b`` a shared vector, return ``b``."""
    spec = cell.ops[add]
    if type(spec.op) is not N.Add or len(spec.inputs) != 2 or spec.inputs.count(value) != 1:
        return None
    other = spec.inputs[1] if spec.inputs[0] == value else spec.inputs[0]
    if not cell.shared(other) or len(cell.spec_shape(other)) != 1:
        return None
    if cell.spec_shape(other)[0] != cell.spec_shape(value)[-1]:
        return None
    return other


def fold_bias(cell: Cell) -> Cell:
    """Fold bias additions into their MatMul (see the module docstring)."""
    uses = {r: [n for n, _j in rs] for r, rs in cell.readers.items()}
    pinned = cell.pinned
    ops = _ops(cell)
    changed = False
    for m in cell.order:
        spec = cell.ops[m]
        op = spec.op
        if type(op) is not N.MatMul or op.transpose_b or spec.static or m in pinned:
            continue
        a, w = spec.inputs
        if not cell.shared(w) or len(cell.spec_shape(w)) != 2:
            continue
        users = uses.get(m, [])
        if len(users) == 1 and (bias := _bias_of(cell, users[0], m)) is not None:
            ops[users[0]] = (N.Affine(), (a, w, bias))
            del ops[m]
            changed = True
            continue
        # a merged MatMul whose column blocks each get a bias
        width = int(cell.spec_shape(m)[-1])
        blocks: list[tuple[int, int, str, str, str]] = []
        for u in users:
            uop = cell.ops[u].op
            if type(uop) is not N.Slice or u in pinned or len(uses.get(u, [])) != 1:
                break
            add = uses[u][0]
            bias = _bias_of(cell, add, u)
            if bias is None:
                break
            blocks.append((uop.start, uop.stop, u, add, bias))
        else:
            blocks.sort()
            if not blocks or blocks[0][0] != 0 or blocks[-1][1] != width:
                continue
            if any(blocks[i][1] != blocks[i + 1][0] for i in range(len(blocks) - 1)):
                continue
            cat = "concat[" + ",".join(b[4] for b in blocks) + "]"
            if cat in ops or cat in cell.graph:
                continue
            ops[cat] = (N.Concat(), tuple(b[4] for b in blocks))
            ops[m] = (N.Affine(), (a, w, cat))
            for start, stop, sl, add, _bias in blocks:
                del ops[sl]
                ops[add] = (N.Slice(start, stop), (m,))
            changed = True
    return _rebuild(cell, ops) if changed else cell


_ELEMENTWISE = (
    N.Add,
    N.Sub,
    N.Mul,
    N.Sigmoid,
    N.Tanh,
    N.ReLU,
    N.OneMinus,
    N.Scale,
    N.Identity,
    N.GRUUpdate,
)


def fuse_siblings(cell: Cell) -> Cell:
    """Fuse elementwise siblings over adjacent column blocks (see the module docstring)."""
    while True:
        fused = _fuse_once(cell)
        if fused is cell:
            return cell
        cell = fused


def _fuse_once(cell: Cell) -> Cell:
    phase = classify(cell)
    pinned = cell.pinned
    Ranges = tuple[tuple[int, int], ...]
    groups: dict[tuple[type, str, tuple[str, ...], Phase], list[tuple[Ranges, str]]] = {}
    for n in cell.order:
        spec = cell.ops[n]
        if type(spec.op) not in _ELEMENTWISE or n in pinned or spec.static:
            continue
        ranges: list[tuple[int, int]] = []
        sources: list[str] = []
        for r in spec.inputs:
            rs = cell.ops.get(r)
            if rs is None or type(rs.op) is not N.Slice:
                break
            sop = rs.op
            assert isinstance(sop, N.Slice)
            ranges.append((sop.start, sop.stop))
            sources.append(rs.inputs[0])
        else:
            if len({b - a for a, b in ranges}) != 1:
                continue
            key = (type(spec.op), spec.op.params_repr(), tuple(sources), phase[n])
            groups.setdefault(key, []).append((tuple(ranges), n))
    ops = _ops(cell)
    changed = False
    for key, members in groups.items():
        members.sort()
        run = [members[0]]
        runs = []
        for mem in members[1:]:
            if all(prev[1] == nxt[0] for prev, nxt in zip(run[-1][0], mem[0], strict=True)):
                run.append(mem)
            else:
                runs.append(run)
                run = [mem]
        runs.append(run)
        for run in runs:
            if len(run) < 2:
                continue
            fused = "fused(" + ",".join(m[1] for m in run) + ")"
            if fused in ops or fused in cell.graph:
                continue
            ins = []
            for i, src in enumerate(key[2]):
                lo, hi = run[0][0][i][0], run[-1][0][i][1]
                if lo == 0 and hi == int(cell.spec_shape(src)[-1]):
                    ins.append(src)
                else:
                    block = f"{src}[{lo}:{hi}]"
                    if block not in ops:
                        ops[block] = (N.Slice(lo, hi), (src,))
                    ins.append(block)
            ops[fused] = (cell.ops[run[0][1]].op, tuple(ins))
            offset = 0
            for rngs, n in run:
                width = rngs[0][1] - rngs[0][0]
                ops[n] = (N.Slice(offset, offset + width), (fused,))
                offset += width
            changed = True
    if not changed:
        return cell
    # drop the slices nobody reads any more
    while True:
        used = {r for _op, ins in ops.values() for r in ins} | cell.pinned
        dead = [n for n, (op, _ins) in ops.items() if type(op) is N.Slice and n not in used]
        if not dead:
            break
        for n in dead:
            del ops[n]
    return _rebuild(cell, ops)


def negate_sigmoid_inputs(cell: Cell) -> Cell:
    """Turn ``sigmoid(p)`` into ``neg_sigmoid(-p)`` where ``-p`` comes for free
    (see the module docstring)."""
    for s in cell.order:
        spec = cell.ops[s]
        if type(spec.op) is not N.Sigmoid or spec.static:
            continue
        (p,) = spec.inputs
        width = cell.spec_shape(p)[-1] if cell.spec_shape(p) else None
        if not isinstance(width, int):
            continue
        wraps = _negation(cell, p, 0, width, s)
        if wraps is None:
            continue
        slots = _compose(wraps)
        if slots is None:
            continue
        ops = _ops(cell)
        made: dict[tuple[str, _Columns], str] = {}
        for (via, slot), (v, columns) in slots.items():
            ins = list(ops[via][1])
            ins[slot] = _negated_columns(cell, ops, made, v, columns)
            ops[via] = (ops[via][0], tuple(ins))
        ops[s] = (N.NegSigmoid(), (p,))
        cell = _rebuild(cell, ops)
    return cell


#: (reader, its input slot, value, first column, end column): the reader is to read
#: the value with those columns negated, from a new parameter-only node
_Wrap = tuple[str, int, str, int, int]
#: sorted, disjoint, non-adjacent column ranges ``(start, stop)`` of one value
_Columns = tuple[tuple[int, int], ...]


def _compose(wraps: list[_Wrap]) -> dict[tuple[str, int], tuple[str, _Columns]] | None:
    """The requests of one rewrite, grouped by the input slot they replace.

    Two paths from one sigmoid can ask for the same slot (``m[:, 0:3] + m[:, 3:6]``
    with ``m = x W`` asks twice for W, once per column block): the slot then reads
    one value with the union of the columns negated. Two requests that both negate
    one column would cancel out, so a rewrite that makes them is refused (None).
    """
    grouped: dict[tuple[str, int], tuple[str, list[tuple[int, int]]]] = {}
    for via, slot, v, lo, hi in wraps:
        value, ranges = grouped.setdefault((via, slot), (v, []))
        assert value == v, (via, slot, value, v)
        ranges.append((lo, hi))
    out: dict[tuple[str, int], tuple[str, _Columns]] = {}
    for key, (v, ranges) in grouped.items():
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if merged and lo < merged[-1][1]:
                return None  # a column negated twice
            if merged and lo == merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        out[key] = (v, tuple(merged))
    return out


def _negation(cell: Cell, v: str, lo: int, hi: int, via: str) -> list[_Wrap] | None:
    """How to make ``via`` see ``v`` with columns ``lo:hi`` negated, exactly: the
    parameter-only values to replace, or None if that would change anything else."""
    slots = [j for j, r in enumerate(cell.ops[via].inputs) if r == v]
    if len(slots) != 1:
        return None
    if not cell.spec_shape(v):
        return None
    inner = _negation_inside(cell, v, lo, hi, via)
    if inner is not None:
        return inner
    if cell.shared(v):
        return [(via, slots[0], v, lo, hi)]
    return None


def _negation_inside(cell: Cell, v: str, lo: int, hi: int, via: str) -> list[_Wrap] | None:
    """Negate columns ``lo:hi`` of op ``v`` itself by negating its inputs, when no
    reader but ``via`` sees those columns."""
    if cell.kind(v) != "op" or v in cell.pinned:
        return None
    for c, _j in cell.readers.get(v, []):
        if c == via:
            continue
        cop = cell.ops[c].op
        if not (isinstance(cop, N.Slice) and (cop.stop <= lo or cop.start >= hi)):
            return None
    spec = cell.ops[v]
    op = spec.op
    width = cell.spec_shape(v)[-1]
    requests: list[tuple[str, int, int]] = []
    if type(op) in (N.Add, N.Sub):
        for r in spec.inputs:
            rs = cell.spec_shape(r)
            if not rs or rs[-1] != width:
                return None
            requests.append((r, lo, hi))
    elif type(op) is N.Scale:
        requests.append((spec.inputs[0], lo, hi))
    elif type(op) is N.Mul:
        # negating either factor will do: the first that can be
        for r in spec.inputs:
            rs = cell.spec_shape(r)
            if rs and rs[-1] == width and (sub := _negation(cell, r, lo, hi, v)) is not None:
                return sub
        return None
    elif type(op) is N.MatMul and not op.transpose_b:
        requests.append((spec.inputs[1], lo, hi))
    elif type(op) is N.Affine:
        requests += [(spec.inputs[1], lo, hi), (spec.inputs[2], lo, hi)]
    elif isinstance(op, N.Slice):
        requests.append((spec.inputs[0], op.start + lo, op.start + hi))
    elif type(op) is N.Concat:
        start = 0
        for r in spec.inputs:
            w = cell.spec_shape(r)[-1]
            assert isinstance(w, int)
            a, b = max(lo, start), min(hi, start + w)
            if a < b:
                requests.append((r, a - start, b - start))
            start += w
    else:
        return None
    out: list[_Wrap] = []
    for r, a, b in requests:
        sub = _negation(cell, r, a, b, v)
        if sub is None:
            return None
        out += sub
    return out


def _negated_columns(
    cell: Cell,
    ops: dict[str, tuple[N.Node, tuple[str, ...]]],
    made: dict[tuple[str, _Columns], str],
    v: str,
    columns: _Columns,
) -> str:
    """A parameter-only node: ``v`` with ``columns`` negated (one per request)."""
    if (v, columns) in made:
        return made[v, columns]
    width = cell.spec_shape(v)[-1]
    assert isinstance(width, int)

    def fresh(name: str) -> str:
        k = 1
        base = name
        while name in ops or name in cell.graph:
            k += 1
            name = f"{base}#{k}"
        return name

    if columns == ((0, width),):
        name = fresh(f"neg[{v}]")
        ops[name] = (N.Scale(-1.0), (v,))
    else:
        pieces: list[tuple[int, int, bool]] = []
        start = 0
        for lo, hi in columns:
            if start < lo:
                pieces.append((start, lo, False))
            pieces.append((lo, hi, True))
            start = hi
        if start < width:
            pieces.append((start, width, False))
        parts: list[str] = []
        for a, b, negate in pieces:
            piece = fresh(f"{v}[{a}:{b}]")
            ops[piece] = (N.Slice(a, b), (v,))
            if negate:
                neg = fresh(f"neg[{piece}]")
                ops[neg] = (N.Scale(-1.0), (piece,))
                piece = neg
            parts.append(piece)
        spans = ",".join(f"{lo}:{hi}" for lo, hi in columns)
        name = fresh(f"neg[{v}][{spans}]")
        ops[name] = (N.Concat(), tuple(parts))
    made[v, columns] = name
    return name


#: the cell rewrites, in the order they are applied
CELL_PASSES: dict[str, Callable[[Cell], Cell]] = {
    "merge_matmuls": merge_matmuls,
    "reassociate_adds": reassociate_adds,
    "fold_bias": fold_bias,
    "fuse_siblings": fuse_siblings,
    "negate_sigmoid_inputs": negate_sigmoid_inputs,
}


def rewrite(cell: Cell, passes: Iterable[str]) -> Cell:
    """Apply the cell rewrites among ``passes`` (in the order of ``CELL_PASSES``)."""
    names = check_names(passes, "passes")
    unknown = names - set(ALL_PASSES)
    if unknown:
        raise ArgumentError(
            f"passes: unknown pass(es) {sorted(unknown)}; known: {list(ALL_PASSES)}"
        )
    for name, apply in CELL_PASSES.items():
        if name in names:
            cell = apply(cell)
    return cell
