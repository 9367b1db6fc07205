"""Benchmark: time and peak memory of ``minigrad sample`` against the number of steps.

    python benchmarks/bench_sample.py [--steps 1000,10000,100000] [--hidden 8]

Trains a small GRU for two updates on a generated data set (its songs are dense,
about 44 notes a step: the worst case for the writers), then runs the command
``minigrad sample --steps N -o song.mid --roll song.svg`` once per N in a fresh
process, and prints its wall time, CPU time, CPU time per step and peak
resident memory (``getrusage`` of the child). Generation is linear when the CPU
time per step stays flat as N grows; the memory is the roll (88 bytes a step)
plus a bounded amount.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from npz_layout import write_npz_dataset  # noqa: E402

from models.data import N_PITCHES  # noqa: E402


def _model(folder: Path, hidden: int) -> Path:
    rng = np.random.default_rng(0)
    splits = {
        s: [(rng.random((16, N_PITCHES)) < 0.1).astype(np.uint8) for _ in range(4)]
        for s in ("train", "valid", "test")
    }
    data = write_npz_dataset(folder / "data.npz", splits)
    out = folder / "run"
    subprocess.run(
        [sys.executable, "-m", "models", "train", "--dataset", str(data), "--out", str(out),
         "--hidden", str(hidden), "--epochs", "1", "--max-updates", "2", "--no-progress"],
        check=True, capture_output=True,
    )  # fmt: skip
    return out / "model.npz"


def _run(model: Path, steps: int, folder: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one ``minigrad sample``."""
    argv = [sys.executable, "-m", "models", "sample", "--checkpoint", str(model),
            "--steps", str(steps), "-o", str(folder / "song.mid"),
            "--roll", str(folder / "song.svg")]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stderr is not None
        raise SystemExit(f"sample --steps {steps} failed: {proc.stderr.read().decode()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description="time and memory of minigrad sample")
    ap.add_argument("--steps", default="1000,10000,100000", help="comma-separated N")
    ap.add_argument("--hidden", type=int, default=8)
    args = ap.parse_args()
    steps = [int(float(s)) for s in args.steps.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = _model(folder, args.hidden)
        print(f"minigrad sample, GRU H={args.hidden}, -o song.mid --roll song.svg")
        print(f"{'steps':>9} {'wall s':>8} {'cpu s':>8} {'cpu us/step':>12} {'peak MB':>8}")
        for n in steps:
            wall, cpu, rss = _run(model, n, folder)
            print(f"{n:>9} {wall:>8.1f} {cpu:>8.1f} {cpu / n * 1e6:>12.0f} {rss:>8.0f}")


if __name__ == "__main__":
    main()
