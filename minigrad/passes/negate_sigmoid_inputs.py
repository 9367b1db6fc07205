"""Cell pass ``negate_sigmoid_inputs``: ``sigmoid(p)`` as ``neg_sigmoid(-p)``.

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
alone. All sigmoids are rewritten in one rebuild of the cell. Negation is
exact in IEEE arithmetic and rounding is symmetric, so results do not change
by a single bit.
"""

from __future__ import annotations

from minigrad import nodes as N
from minigrad.cell import Cell
from minigrad.passes.base import Ops, Pass, ops_of, rebuild

__all__ = ["PASS", "negate_sigmoid_inputs"]


def negate_sigmoid_inputs(cell: Cell) -> Cell:
    """Turn ``sigmoid(p)`` into ``neg_sigmoid(-p)`` where ``-p`` comes for free
    (see the module docstring).

    Every sigmoid is examined on the cell as given and all the rewrites are made
    in one rebuild, so the cost grows with the size of the cell, not with its
    size times its number of sigmoids. Two sigmoids' rewrites never negate the
    same column of a value (each one's columns are seen by no other reader), so
    they compose; a sigmoid whose requests would still clash with those accepted
    before it is left alone.
    """
    accepted: list[_Wrap] = []
    # the column ranges accepted so far, per input slot: a new sigmoid's requests are
    # checked against the slots they touch only
    taken: dict[tuple[str, int], list[tuple[int, int]]] = {}
    negated: list[str] = []
    for s in cell.order:
        spec = cell.ops[s]
        if type(spec.op) is not N.Sigmoid or spec.static:
            continue
        (p,) = spec.inputs
        width = cell.spec_shape(p)[-1] if cell.spec_shape(p) else None
        if not isinstance(width, int):
            continue
        wraps = _negation(cell, p, 0, width, s)
        if wraps is None or _compose(wraps) is None:
            continue
        if any(
            lo < b and a < hi
            for via, slot, _v, lo, hi in wraps
            for a, b in taken.get((via, slot), ())
        ):
            continue
        for via, slot, _v, lo, hi in wraps:
            taken.setdefault((via, slot), []).append((lo, hi))
        accepted += wraps
        negated.append(s)
    slots = _compose(accepted)
    if not negated or slots is None:
        return cell
    ops = ops_of(cell)
    made: dict[tuple[str, _Columns], str] = {}
    for (via, slot), (v, columns) in slots.items():
        ins = list(ops[via][1])
        ins[slot] = _negated_columns(cell, ops, made, v, columns)
        ops[via] = (ops[via][0], tuple(ins))
    for s in negated:
        ops[s] = (N.NegSigmoid(), cell.ops[s].inputs)
    return rebuild(cell, ops)


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
    ops: Ops,
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


PASS = Pass(
    name="negate_sigmoid_inputs",
    level="cell",
    description=__doc__ or "",
    applied_by="minigrad.passes.driver.rewrite",
    rewrite=negate_sigmoid_inputs,
)
