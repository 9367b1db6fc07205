"""Benchmark: compile time and memory of loop programs (``minigrad.compile``).

    python benchmarks/bench_loop.py [--hidden 46] [--batch 8] [--steps 10000]

Prints two tables for the GRU sequence model (``models.nets.sequence``, H
units, 88 pitches in and out, float64):

* compile + bind time against T: compiling the cell once
  (``minigrad.compile``), binding it for batch size B and laying the buffers out
  for T steps, for the loop program (with the number of per-step argument
  tuples it bound: one per step of its window, so the same for every T past the
  chunk length) and, up to T = 1,000, for the full unroll
  (``mode="unrolled"``); median of ``--repeats`` fresh compilations;
* peak memory of one training step (forward + backward) and of one forward pass
  without a backward (``backward=False``, as scoring runs) at T = ``--steps``,
  B = ``--batch``: the bytes numpy allocated for it (``tracemalloc``, which sees
  numpy's buffers), against the bytes BPTT must keep (the state and the three
  gate activations of every step: 4 * T * B * H * 8) and against the bytes of
  the per-step values the program keeps for its backward pass.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import minigrad as mg
from models.nets.sequence import SequenceModel


def _bind(model: SequenceModel, T: int, B: int, mode: str) -> tuple[float, int]:
    """Seconds to compile the model's cell and lay it out for (T, B), nothing run; and
    the number of per-step argument tuples bound (loop only)."""
    gc.collect()
    t0 = time.perf_counter()
    prog = mg.Program(model.cell, wrt=model.params, mode=mode)
    tuples = 0
    if mode == "loop":
        ws = prog._runner(B, True)
        ws.steps_of(T)
        ws._use_binding(False)
        seconds = time.perf_counter() - t0
        tuples = sum(len(targs) for body in ws._bodies.values() for _fn, targs in body)
        return seconds, tuples
    plan = mg.compile_plan(model.cell, T, wrt=model.params)
    plan._workspace(B, True)._bind_backward(False)
    return time.perf_counter() - t0, tuples


def _peak(fn: Callable[[], object]) -> tuple[float, int]:
    """Seconds and peak bytes allocated (tracemalloc) of one call."""
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    _cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak


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
    print("\n| T | loop: compile + bind (s) | per-step argument tuples bound | "
          "full unroll: compile + bind (s) |")
    print("| ---: | ---: | ---: | ---: |")
    for T in (10, 100, 1_000, a.steps):
        runs = [_bind(model, T, B, "loop") for _ in range(a.repeats)]
        loop = statistics.median(r[0] for r in runs)
        unrolled = (
            f"{statistics.median(_bind(model, T, B, 'unrolled')[0] for _ in range(a.repeats)):.3f}"
            if T <= 1_000
            else "-"
        )
        print(f"| {T:,} | {loop:.3f} | {runs[0][1]:,} | {unrolled} |")

    T = a.steps
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(T, B, 88)) > 0.9).astype(np.float64)
    inputs = {"x": x, "t": np.roll(x, -1, axis=0)}
    mask = np.ones((T, B))
    prog = mg.Program(model.cell, wrt=model.params)
    out: dict[str, float] = {}

    def train() -> None:
        loss, _g = prog.loss_and_grads(model.params, inputs, mask=mask)
        out["loss"] = loss

    seconds, peak = _peak(train)
    keep = 4 * T * B * H * 8
    ws = prog._runner(B, True)
    window = sum(n.nbytes for n in ws._owners.new)
    kept = sum(h.nbytes for h in ws._history.values())
    mode = "recomputed chunks" if ws.recompute else "kept history"
    print(f"\none training step at T = {T:,}, B = {B}: {seconds:.2f} s, loss {out['loss']:.4f}, "
          f"chunks of {ws.chunk} steps, {mode}")
    print("| bytes BPTT must keep (4TBH8) | values kept for the backward | window of the "
          "program | peak allocated | peak / 4TBH8 | peak / kept |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {keep / 2**20:.1f} MiB | {kept / 2**20:.1f} MiB | {window / 2**20:.1f} MiB "
          f"| {peak / 2**20:.1f} MiB | {peak / keep:.2f} | "
          f"{f'{peak / kept:.2f}' if kept else '- (nothing kept)'} |")

    fresh = mg.Program(model.cell, wrt=model.params)
    seconds, peak = _peak(
        lambda: fresh.forward(model.params, inputs, mask=mask, with_outputs=False, backward=False)
    )
    print(f"\nforward only (backward=False) at T = {T:,}, B = {B}: {seconds:.2f} s, "
          f"peak allocated {peak / 2**20:.1f} MiB ({peak / keep:.2f} of 4TBH8)")


if __name__ == "__main__":
    main()
