"""Cell pass ``fuse_siblings``: elementwise siblings over adjacent column blocks become one node.

Elementwise nodes of the same type whose inputs are adjacent column
blocks of the same values (the z and r gates of a GRU, say) become one
node over the joined block, followed by free ``Slice`` views. Repeated
until nothing changes, so an ``Add`` fused this way lets the ``Sigmoid``
after it fuse too.
"""

from __future__ import annotations

from minigrad import nodes as N
from minigrad.cell import Cell
from minigrad.passes.base import Pass, ops_of, rebuild
from minigrad.passes.phases import Phase, classify

__all__ = ["PASS", "fuse_siblings"]


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
    ops = ops_of(cell)
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
    return rebuild(cell, ops)


PASS = Pass(
    name="fuse_siblings",
    level="cell",
    description=__doc__ or "",
    applied_by="minigrad.passes.driver.rewrite",
    rewrite=fuse_siblings,
)
