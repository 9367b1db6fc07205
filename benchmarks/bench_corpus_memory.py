"""Benchmark: peak memory of ``minigrad train`` on corpora of long pieces.

    python benchmarks/bench_corpus_memory.py [--corpus piano classical nottingham]
                                             [--epochs 1] [--hidden 46]

The polyphonic-music benchmarks of the family differ mostly in how long their
pieces are: JSB chorales reach about 160 steps, Nottingham 1,793, the piano
and classical corpora about 4,000. This script writes synthetic corpora with
the piece counts and length ranges of those benchmarks, in the ``.npz``
layout of the shared data (random chords that change every few steps, 3 to 8
notes per step), so that the memory of a run can be measured without the
real files. Each corpus is trained with the documented default command
(``minigrad train --dataset FILE --cell gru --hidden 46``, here for
``--epochs`` epochs, which includes scoring the valid and test splits) in a
fresh process, and the script prints that process's peak resident memory
(``ru_maxrss``) and wall time. ``nottingham`` uses ``../shared/data/nottingham.npz``
when it exists.

The synthetic files are written to a temporary folder and deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# (train, valid, test) piece counts and (shortest, longest) piece in steps
CORPORA: dict[str, tuple[tuple[int, int, int], tuple[int, int]]] = {
    "piano": ((87, 12, 25), (100, 3857)),
    "classical": ((524, 135, 124), (100, 4273)),
}


def _piece(rng: np.random.Generator, steps: int) -> tuple[list[int], list[int]]:
    """Notes and per-step note counts of one random piece of ``steps`` steps."""
    notes: list[int] = []
    counts: list[int] = []
    t = 0
    while t < steps:
        hold = int(rng.integers(1, 8))
        chord = sorted(rng.choice(np.arange(36, 96), size=int(rng.integers(3, 9)), replace=False))
        for _ in range(min(hold, steps - t)):
            notes.extend(int(n) for n in chord)
            counts.append(len(chord))
        t += hold
    return notes, counts


def write_corpus(
    path: Path, sizes: tuple[int, int, int], lengths: tuple[int, int], seed: int
) -> int:
    """Write a synthetic corpus to ``path``; returns its total number of steps."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(1),
        "pitch_lo": np.array(21),
        "pitch_hi": np.array(108),
    }
    total = 0
    for split, n in zip(("train", "valid", "test"), sizes, strict=True):
        lens = rng.integers(lengths[0], lengths[1] + 1, size=n)
        lens[0] = lengths[1]  # the longest piece is in every split
        notes: list[int] = []
        step_offsets = [0]
        seq_offsets = [0]
        for steps in lens:
            piece, counts = _piece(rng, int(steps))
            notes.extend(piece)
            step_offsets.extend((step_offsets[-1] + np.cumsum(counts)).tolist())
            seq_offsets.append(seq_offsets[-1] + int(steps))
        arrays[f"{split}_notes"] = np.asarray(notes, dtype=np.int16)
        arrays[f"{split}_step_offsets"] = np.asarray(step_offsets, dtype=np.int32)
        arrays[f"{split}_seq_offsets"] = np.asarray(seq_offsets, dtype=np.int32)
        total += int(lens.sum())
    np.savez_compressed(path, **arrays)
    return total


_MEASURE = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); "
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(r.returncode, time.perf_counter() - t, "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def measure(dataset: Path, out: Path, epochs: int, hidden: int) -> tuple[int, float, int]:
    """(exit code, seconds, peak RSS in kB) of one ``minigrad train`` run."""
    cmd = [
        sys.executable, "-c", "import sys; from models.cli import main; sys.exit(main(sys.argv[1:]))",
        "train", "--dataset", str(dataset),
        "--cell", "gru", "--hidden", str(hidden), "--epochs", str(epochs),
        "--out", str(out), "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    got = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd],
        capture_output=True, text=True, cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    code, secs, kb = got.stdout.split()
    return int(code), float(secs), int(kb)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", nargs="+", default=["nottingham", "piano", "classical"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=46)
    a = ap.parse_args(argv)
    print(f"minigrad train --cell gru --hidden {a.hidden} --epochs {a.epochs}, one BLAS thread")
    print(
        "\n| corpus | pieces (train/valid/test) | longest | steps | exit | wall (s) | peak RSS (MB) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.corpus:
            if name == "nottingham":
                path = ROOT.parent / "shared" / "data" / "nottingham.npz"
                if not path.is_file():
                    print("| nottingham | (../shared/data/nottingham.npz absent) | | | | | |")
                    continue
                desc, longest, total = "694/173/170", 1793, "-"
            else:
                sizes, lengths = CORPORA[name]
                path = Path(tmp) / f"{name}.npz"
                total = f"{write_corpus(path, sizes, lengths, seed=0):,}"
                desc, longest = "/".join(map(str, sizes)), lengths[1]
            code, secs, kb = measure(path, Path(tmp) / f"run-{name}", a.epochs, a.hidden)
            print(
                f"| {name} | {desc} | {longest:,} | {total} | {code} | {secs:.0f} | {kb / 1024:.0f} |"
            )


if __name__ == "__main__":
    main()
