"""Benchmark: compile time and memory of loop programs (``minigrad.compile``).

    python benchmarks/bench_loop.py [--hidden 46] [--batch 8] [--steps 10000]

Prints two tables for the GRU sequence model (``models.sequence``, H units,
88 pitches in and out, float64):

* compile + bind time against T: compiling the cell once
  (``minigrad.compile``), binding it for batch size B and laying the buffers out
  for T steps, for the loop program and, up to T = 1,000, for the full unroll
  (``mode="unrolled"``); median of ``--repeats`` fresh compilations;
* peak memory of one training step (forward + backward) at T = ``--steps``, B =
  ``--batch``: the bytes numpy allocated for it (``tracemalloc``, which sees
  numpy's buffers), against the bytes BPTT must keep (the state and the three
  gate activations of every step: 4 * T * B * H * 8).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from models.sequence import SequenceModel

import minigrad as mg


def _bind(model: SequenceModel, T: int, B: int, mode: str) -> float:
    """Seconds to compile the model's cell and lay it out for (T, B); nothing runs."""
    gc.collect()
    t0 = time.perf_counter()
    prog = mg.Program(model.cell, wrt=model.params, mode=mode)
    if mode == "loop":
        ws = prog._runner(B, True)
        ws.steps_of(T)
        ws._use_binding(False)
    else:
        plan = mg.compile_plan(model.cell, T, wrt=model.params)
        plan._workspace(B, True)._bind_backward(False)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=46)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    H, B = a.hidden, a.batch
    model = SequenceModel("gru", hidden_size=H)
    print(f"GRU-{H} sequence model, B = {B}, float64")
    print("\n| T | loop: compile + bind (s) | full unroll: compile + bind (s) |")
    print("| ---: | ---: | ---: |")
    for T in (10, 100, 1_000, a.steps):
        loop = statistics.median(_bind(model, T, B, "loop") for _ in range(a.repeats))
        unrolled = (
            f"{statistics.median(_bind(model, T, B, 'unrolled') for _ in range(a.repeats)):.3f}"
            if T <= 1_000
            else "-"
        )
        print(f"| {T:,} | {loop:.3f} | {unrolled} |")

    T = a.steps
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(T, B, 88)) > 0.9).astype(np.float64)
    inputs = {"x": x, "t": np.roll(x, -1, axis=0)}
    mask = np.ones((T, B))
    prog = mg.Program(model.cell, wrt=model.params)
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    loss, _g = prog.loss_and_grads(model.params, inputs, mask=mask)
    seconds = time.perf_counter() - t0
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    keep = 4 * T * B * H * 8
    ws = prog._runner(B, True)
    layout = sum(n.nbytes for n in ws._owners.new)
    print(f"\none training step at T = {T:,}, B = {B}: {seconds:.2f} s, loss {loss:.4f}")
    print("| bytes BPTT must keep | per-step buffers of the program | peak allocated | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    print(f"| {keep / 2**20:.1f} MiB | {layout / 2**20:.1f} MiB | {peak / 2**20:.1f} MiB "
          f"| {peak / keep:.2f} |")


if __name__ == "__main__":
    main()
