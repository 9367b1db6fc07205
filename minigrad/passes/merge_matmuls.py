"""Cell pass ``merge_matmuls``: one GEMM for the MatMuls (or Affines) that share a left operand.

MatMul nodes that share their left operand and multiply it by parameters
(or parameter-only nodes) become one MatMul by the concatenated weights
(Affine nodes likewise, with concatenated biases),
followed by one ``Slice`` per original node (keeping its name). The
concatenation is a parameter-only node, computed once per sequence. In a
GRU this turns ``x Wz``, ``x Wr``, ``x Wca`` into one GEMM and
``h Wrecz``, ``h Wrecr`` into another.
"""

from __future__ import annotations

from minigrad import nodes as N
from minigrad.cell import Cell
from minigrad.passes.base import Pass, ops_of, rebuild

__all__ = ["PASS", "merge_matmuls"]


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
    ops = ops_of(cell)
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
    return rebuild(cell, ops) if changed else cell


PASS = Pass(
    name="merge_matmuls",
    level="cell",
    description=__doc__ or "",
    applied_by="minigrad.passes.driver.rewrite",
    rewrite=merge_matmuls,
)
