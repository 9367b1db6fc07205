"""Compile time against the number of stacked layers.

    python benchmarks/bench_compile.py [--layers 1,2,4,8,16,32,64] [--hidden 8] [--repeats 3]

Builds a stack of L GRU layers (``models.cells.stack``, H units each, an L2
loss on the last layer), then times, for each L: the cell rewrites
(``minigrad.passes.rewrite`` with the default passes), ``compile_plan`` of
the short unroll a loop program is cut from (which rewrites again), and
``minigrad.compile`` plus one ``loss_and_grads`` of T = 4 steps, B = 2 (what
a first training batch pays). Times are the process's CPU time
(``time.process_time``; one BLAS thread, so it equals the wall time on an idle
machine and is not inflated by other jobs sharing the cores). Medians of
``--repeats`` fresh cells; the last column is the total per layer, which stays
flat when compiling is linear in the number of layers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--layers", default="1,2,4,8,16,32,64", help="comma-separated L values")
    p.add_argument("--hidden", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import minigrad as mg
    from minigrad.passes import rewrite
    from models.cells import stack

    H, D, T, B = args.hidden, 3, 4, 2

    def build(layers: int) -> mg.Cell:
        b = mg.CellBuilder(f"gru{layers}")
        x, y = b.input("x", D), b.input("y", H)
        hs = stack(b, x, "gru", D, H, layers)
        b.loss(mg.l2_loss(hs[-1], y, name="l2"))
        return b.build()

    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((T, B, D)), "y": rng.standard_normal((T, B, H))}
    print(f"# stacked GRU, H = {H}, compile + one run of T = {T}, B = {B}; CPU seconds, "
          f"median of {args.repeats}")
    print("| layers | rewrite s | compile_plan(K) s | compile + first run s | ms per layer |")
    print("|---|---|---|---|---|")
    for layers in (int(v) for v in args.layers.split(",")):
        times: dict[str, list[float]] = {"rewrite": [], "plan": [], "total": []}
        for _ in range(args.repeats):
            cell = build(layers)
            t = time.process_time()
            rewrite(cell, mg.DEFAULT_PASSES)
            times["rewrite"].append(time.process_time() - t)
            t = time.process_time()
            mg.compile_plan(cell, 3)
            times["plan"].append(time.process_time() - t)
            cell = build(layers)  # a fresh cell: nothing cached
            params = cell.init_params(0)
            t = time.process_time()
            mg.compile(cell).loss_and_grads(params, inputs)
            times["total"].append(time.process_time() - t)
        med = {k: float(np.median(v)) for k, v in times.items()}
        print(f"| {layers} | {med['rewrite']:.3f} | {med['plan']:.3f} | {med['total']:.3f} | "
              f"{1e3 * med['total'] / layers:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
