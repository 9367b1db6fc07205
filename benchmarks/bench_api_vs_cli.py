"""Benchmark: training epoch times from the Python API and from the ``minigrad`` command.

    python benchmarks/bench_api_vs_cli.py [--repeats 3] [--epochs 3] [--hidden 46] [--cell gru]

Runs the same training (embedded Bach chorales unless ``--dataset``, GRU
with 46 units, the default batch size, ``--epochs`` epochs, no early stop) alternately

* through the Python API, ``models.train.train(TrainConfig(...))`` in a fresh
  ``python -c`` process that imports numpy first, as a user's script would;
* through the command, ``python -m models train ...`` in a fresh process;

``--repeats`` times each, interleaved (alternating which goes first) so that
a busy machine slows both alike. Neither process gets
``OPENBLAS_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``: each
runs as a user's would by default. Prints the
median epoch time of each (from each run's ``metrics.json``, every epoch of
every repeat), their ratio (API / CLI; the goal is within 10%), and the BLAS
thread counts seen inside training. With ``--blas-threads 0`` the library
leaves BLAS alone (the behaviour before ``minigrad.threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

API = """
import numpy as np  # a user's script imports numpy first
import json, sys
from models.train import Reporter, TrainConfig, train
from minigrad.threads import blas_thread_counts

class Seen(Reporter):
    counts = {}
    def epoch(self, *args, **kwargs):
        Seen.counts = blas_thread_counts()

opts = json.loads(sys.argv[1])
train(TrainConfig(**opts), reporter=Seen())
print(json.dumps(Seen.counts))
"""


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=3, help="runs of each (median over epochs)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--hidden", type=int, default=46)
    p.add_argument("--cell", default="gru")
    p.add_argument("--dataset", default="bach_chorales")
    p.add_argument(
        "--blas-threads", type=int, default=None, help="passed to both (default: theirs)"
    )
    return p.parse_args(argv)


def _epoch_seconds(out: Path) -> list[float]:
    metrics = json.loads((out / "metrics.json").read_text())
    return [float(e["seconds"]) for e in metrics["epochs"]]


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    opts: dict[str, object] = {
        "dataset": args.dataset,
        "cell": args.cell,
        "hidden": args.hidden,
        "epochs": args.epochs,
        "patience": args.epochs,
        "progress": False,
        "overwrite": True,
    }
    if args.blas_threads is not None:
        opts["blas_threads"] = args.blas_threads
    api: list[float] = []
    cli: list[float] = []
    seen: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            out_api, out_cli = Path(tmp) / f"api{r}", Path(tmp) / f"cli{r}"
            flags = []
            for k, v in {**opts, "out": str(out_cli)}.items():
                if k in ("progress", "overwrite"):
                    flags += ["--no-progress"] if k == "progress" else ["--overwrite"]
                else:
                    flags += ["--" + k.replace("_", "-"), str(v)]
            runs = [
                (
                    [sys.executable, "-c", API, json.dumps({**opts, "out": str(out_api)})],
                    out_api,
                    api,
                ),
                ([sys.executable, "-m", "models", "train", *flags], out_cli, cli),
            ]
            for argv, out, times in runs if r % 2 == 0 else runs[::-1]:  # alternate who goes first
                subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
                times += _epoch_seconds(out)
            if r == 0:
                proc = subprocess.run(
                    [sys.executable, "-c", API, json.dumps({**opts, "epochs": 1, "out": str(out_api)})],
                    env=env, cwd=ROOT, check=True, capture_output=True, text=True,
                )  # fmt: skip
                seen = json.loads(proc.stdout.strip().splitlines()[-1])
    m_api, m_cli = statistics.median(api), statistics.median(cli)
    print(
        f"training: {args.cell}, hidden {args.hidden}, {args.dataset}, {args.epochs} epochs x {args.repeats} runs each"
    )
    print(f"BLAS threads inside train() from the Python API: {seen}")
    print(f"Python API  median epoch {m_api:.3f} s  (min {min(api):.3f}, max {max(api):.3f})")
    print(f"CLI         median epoch {m_cli:.3f} s  (min {min(cli):.3f}, max {max(cli):.3f})")
    print(f"ratio API / CLI: {m_api / m_cli:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
