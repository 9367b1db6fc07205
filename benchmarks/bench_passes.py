"""What each graph pass is worth: the GRU's loss and gradients with one pass off at a time.

    python benchmarks/bench_passes.py [--size T,B,D,H] [--dtype float64] [--repeats 9]

Times ``Plan.loss_and_grads`` of the GRU of ``models.nets.gru`` (variant "chung")
with all passes, with each pass switched off in turn (with the
passes that require it), and with none (the plain
plan: one instruction per node and step), interleaved in one process; prints
medians and the slowdown against all passes.
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
    p.add_argument("--size", default="50,32,64,128", help="T,B,D,H")
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    sys.path.insert(0, str(ROOT))
    import numpy as np

    import minigrad as mg
    from minigrad.passes import without
    from models.nets.gru import GRU

    T, B, D, H = (int(v) for v in args.size.split(","))
    dtype = np.dtype(args.dtype)
    gru = GRU(D, H, dtype=dtype.type, seed=0)
    rng = np.random.default_rng(0)
    inputs = {
        "x": rng.standard_normal((T, B, D)).astype(dtype),
        "y": rng.standard_normal((T, B, H)).astype(dtype),
    }
    settings: list[tuple[str, tuple[str, ...]]] = [("all passes", mg.DEFAULT_PASSES)]
    # a pass off takes the passes that require it along (chain_factors with factor_elementwise)
    settings += [(f"without {p}", without(p)) for p in mg.DEFAULT_PASSES]
    settings.append(("plain plan (no pass)", ()))
    plans = [(name, mg.plan_of(gru.cell, T, passes=passes)) for name, passes in settings]
    times: dict[str, list[float]] = {name: [] for name, _ in plans}
    for _, plan in plans:
        plan.loss_and_grads(gru.params, inputs)
    order = np.random.default_rng(0)
    for _ in range(args.repeats):
        # a shuffled order each round, so that no plan always runs right after the plain
        # plan has flushed the caches
        for i in order.permutation(len(plans)):
            name, plan = plans[int(i)]
            t = time.perf_counter()
            plan.loss_and_grads(gru.params, inputs)
            times[name].append(time.perf_counter() - t)
    base = float(np.median(times["all passes"]))
    print(
        f"# GRU loss and gradients, (T, B, D, H) = ({T}, {B}, {D}, {H}), {dtype.name}, "
        f"median of {args.repeats}"
    )
    print("| plan | ms | x all passes |\n|---|---|---|")
    for name, _ in plans:
        m = float(np.median(times[name]))
        print(f"| {name} | {m * 1e3:.2f} | {m / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
