"""Compiling grows with the size of the cell, not faster: the graph passes rebuild
the cell a fixed number of times whatever the number of stacked layers (a pass
that rebuilt it once per sigmoid made compile time grow as layers squared).
Times are measured in ``benchmarks/bench_compile.py``; this counts work."""

from __future__ import annotations

import numpy as np
import pytest

import minigrad as mg
from minigrad.cell import CellBuilder
from models.cells import stack

D, H = 3, 4


def _stacked(cell: str, layers: int) -> mg.Cell:
    b = mg.CellBuilder(f"{cell}{layers}")
    x, y = b.input("x", D), b.input("y", H)
    hs = stack(b, x, cell, D, H, layers)
    b.loss(mg.l2_loss(hs[-1], y, name="l2"))
    return b.build()


def _builds_per_compile(cell: mg.Cell, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many times ``CellBuilder.build`` runs while ``cell`` is compiled and run once."""
    count = 0
    build = CellBuilder.build

    def counted(self: CellBuilder) -> mg.Cell:
        nonlocal count
        count += 1
        return build(self)

    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((3, 2, D)), "y": rng.standard_normal((3, 2, H))}
    params = cell.init_params(0)
    with monkeypatch.context() as m:
        m.setattr(CellBuilder, "build", counted)
        mg.compile(cell).loss_and_grads(params, inputs)
    return count


@pytest.mark.parametrize("cell", ["gru", "lstm", "mgu"])
def test_rebuilds_per_compile_do_not_grow_with_layers(
    cell: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = [_builds_per_compile(_stacked(cell, n), monkeypatch) for n in (1, 3, 6)]
    assert counts[0] == counts[1] == counts[2], counts
    assert 1 <= counts[0] <= 8, counts  # the rewrites did run, a few times at most


def test_all_layers_are_rewritten_in_one_pass() -> None:
    """Every layer's gates become one NegSigmoid, in the same number of rebuilds."""
    cell = mg.passes.rewrite(_stacked("gru", 6), mg.DEFAULT_PASSES)
    assert sum(type(s.op) is mg.NegSigmoid for s in cell.ops.values()) == 6
    assert not any(type(s.op) is mg.Sigmoid for s in cell.ops.values())


def test_a_program_rewrites_its_cell_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch sizes that need other short unrolls (and the unrolled mode) reuse the
    rewritten cell: no rebuild after the first compilation."""
    cell = _stacked("gru", 2)
    prog = mg.compile(cell)
    params = cell.init_params(0)
    rng = np.random.default_rng(0)

    def run(T: int, B: int) -> None:
        inputs = {"x": rng.standard_normal((T, B, D)), "y": rng.standard_normal((T, B, H))}
        prog.loss_and_grads(params, inputs)

    run(3, 2)
    count = 0
    build = CellBuilder.build

    def counted(self: CellBuilder) -> mg.Cell:
        nonlocal count
        count += 1
        return build(self)

    with monkeypatch.context() as m:
        m.setattr(CellBuilder, "build", counted)
        for B in (1, 3, 4, 5, 6):
            run(7, B)
        assert len(prog._plans) >= 2  # more than one short unroll was compiled
    assert count == 0
