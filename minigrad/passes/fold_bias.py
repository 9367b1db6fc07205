"""Cell pass ``fold_bias``: a MatMul followed by a bias addition becomes one Affine.

``MatMul`` followed by the addition of a bias becomes one ``Affine``; when
a merged MatMul is sliced and each slice gets its own bias, the biases are
concatenated (once per sequence) and added in the same pass.
"""

from __future__ import annotations

from minigrad import nodes as N
from minigrad.cell import Cell
from minigrad.passes.base import Pass, ops_of, rebuild

__all__ = ["PASS", "fold_bias"]


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
    ops = ops_of(cell)
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
    return rebuild(cell, ops) if changed else cell


PASS = Pass(
    name="fold_bias",
    level="cell",
    description=__doc__ or "",
    applied_by="minigrad.passes.driver.rewrite",
    rewrite=fold_bias,
)
