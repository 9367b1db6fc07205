"""Benchmark: minigrad's GRU against the hand-fused numpy reference, in one process.

    python benchmarks/bench_gru.py [--repeats 9] [--rounds 3] [--threads 1] [--quick]

Prints, for (T, B, D, H) in the four sizes of the performance issue and for
float32 and float64, the median wall time of ``GRU.loss_and_grads`` (variant
"chung", the compiled plan with the default graph passes) and of the
hand-fused reference (``benchmarks/reference_gru.py``) and their ratio; then
the wall time of one JSB training epoch (GRU with 46 units, batches of 8
sequences, sigmoid read-out, RMSProp with clipping) driven by minigrad's
``SequenceModel`` and by the hand-fused reference, and the peak memory
allocated by one training step of each (``tracemalloc``, which sees numpy's
buffers).

Both sides run interleaved in the same process, after a warm-up call, so
that a busy machine slows both alike. Where buffers land in memory differs
from one process to the next and moves a ratio by a few per cent, so the
measurement is repeated in ``--rounds`` fresh processes (default 3) and the
table gives the median of their ratios and the range seen. BLAS runs on ``--threads`` threads
(default 1: multi-threaded BLAS on small GEMMs mostly adds noise); set it
before numpy is imported.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

SIZES = [(50, 32, 64, 128), (100, 16, 88, 256), (200, 1, 88, 128), (20, 64, 256, 512)]
ROOT = Path(__file__).resolve().parents[1]
SHARED_JSB = ROOT.parent / "shared" / "data" / "jsb_chorales.npz"


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=9, help="timed calls per measurement (median)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads")
    p.add_argument("--quick", action="store_true", help="first size only, 3 repeats, no epoch")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="fresh processes to measure in; the table gives the median of their ratios "
        "(buffer placement differs between processes and moves a ratio by a few per cent)",
    )
    p.add_argument("--json", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--dataset",
        default=None,
        help="npz for the epoch (default: shared JSB, else the embedded chorales)",
    )
    return p.parse_args(argv)


def _rounds(args: argparse.Namespace, argv: list[str]) -> int:
    """Measure in ``args.rounds`` fresh processes and print the medians."""
    import json
    import statistics
    import subprocess
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            out = Path(tmp) / f"round{i}.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                *argv,
                "--rounds",
                "1",
                "--json",
                str(out),
            ]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            results.append(json.loads(out.read_text()))
    first = results[0]
    print(f"{first['header']}; median over {args.rounds} processes")
    print("| T | B | D | H | dtype | minigrad (ms) | hand-fused (ms) | ratio | ratios seen |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, row in enumerate(first["rows"]):
        tms = [r["rows"][k]["minigrad"] for r in results]
        trs = [r["rows"][k]["reference"] for r in results]
        ratios = [a / b for a, b in zip(tms, trs, strict=True)]
        T, B, D, H, dt = row["T"], row["B"], row["D"], row["H"], row["dtype"]
        print(
            f"| {T} | {B} | {D} | {H} | {dt} | {statistics.median(tms) * 1e3:.2f} | "
            f"{statistics.median(trs) * 1e3:.2f} | {statistics.median(ratios):.2f} | "
            f"{min(ratios):.2f} to {max(ratios):.2f} |"
        )
    if "epoch" in first:
        tms = [r["epoch"]["minigrad"] for r in results]
        trs = [r["epoch"]["reference"] for r in results]
        ratios = [a / b for a, b in zip(tms, trs, strict=True)]
        print()
        print(first["epoch"]["header"])
        print("| | minigrad (s) | hand-fused (s) | ratio | ratios seen |\n|---|---|---|---|---|")
        print(
            f"| epoch | {statistics.median(tms):.3f} | {statistics.median(trs):.3f} | "
            f"{statistics.median(ratios):.2f} | {min(ratios):.2f} to {max(ratios):.2f} |"
        )
        print()
        print(first["memory"]["header"])
        print("| | minigrad (MB) | hand-fused (MB) |\n|---|---|---|")
        print(
            f"| step | {first['memory']['minigrad'] / 1e6:.2f} | "
            f"{first['memory']['reference'] / 1e6:.2f} |"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = _args(raw)
    if args.rounds > 1:
        return _rounds(args, raw)
    record: dict[str, object] = {"rows": []}
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np
    import reference_gru as ref

    from models.data import batches, load_dataset
    from models.nets.gru import GRU
    from models.nets.sequence import SequenceModel
    from models.train.optim import RMSProp, clip_grad_norm

    def median_pair(
        f: Callable[[], object], g: Callable[[], object], n: int
    ) -> tuple[float, float]:
        f()
        g()
        tf, tg = [], []
        for _ in range(n):
            t = time.perf_counter()
            f()
            tf.append(time.perf_counter() - t)
            t = time.perf_counter()
            g()
            tg.append(time.perf_counter() - t)
        return float(np.median(tf)), float(np.median(tg))

    header = (
        f"# minigrad GRU benchmark: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, python {platform.python_version()}, numpy {np.__version__}, "
        f"BLAS threads {args.threads}"
    )
    record["header"] = header
    rows: list[dict[str, object]] = []
    record["rows"] = rows

    def finish() -> int:
        if args.json:
            import json

            Path(args.json).write_text(json.dumps(record))
        return 0

    print(header)
    print("| T | B | D | H | dtype | minigrad (ms) | hand-fused (ms) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    sizes = SIZES[:1] if args.quick else SIZES
    repeats = 3 if args.quick else max(7, args.repeats)
    for T, B, D, H in sizes:
        for dtype in (np.float32, np.float64):
            gru = GRU(input_size=D, hidden_size=H, variant="chung", dtype=dtype, seed=0)
            params = gru.state_dict()
            rng = np.random.default_rng(0)
            x = rng.standard_normal((T, B, D)).astype(dtype)
            y = rng.standard_normal((T, B, H)).astype(dtype)
            h0 = np.zeros((B, H), dtype=dtype)
            tm, tr = median_pair(
                lambda gru=gru, x=x, y=y, h0=h0: gru.loss_and_grads(x, y, h0),
                lambda params=params, x=x, y=y, h0=h0: ref.loss_and_grads(params, x, y, h0),
                repeats,
            )
            print(
                f"| {T} | {B} | {D} | {H} | {np.dtype(dtype).name} | {tm * 1e3:.2f} | "
                f"{tr * 1e3:.2f} | {tm / tr:.2f} |",
                flush=True,
            )
            rows.append(
                {
                    "T": T,
                    "B": B,
                    "D": D,
                    "H": H,
                    "dtype": np.dtype(dtype).name,
                    "minigrad": tm,
                    "reference": tr,
                }
            )
    if args.quick:
        return finish()

    # one training epoch on JSB: GRU 46, batches of 8, sigmoid read-out
    source = args.dataset or (str(SHARED_JSB) if SHARED_JSB.exists() else "bach_chorales")
    data = load_dataset(source)
    model = SequenceModel("gru", hidden_size=46, dtype=np.float64, seed=0)
    ref_params = {k: v.copy() for k, v in model.params.items()}
    ref_params = {
        ("V" if k == "V" else "c" if k == "c_out" else k): v for k, v in ref_params.items()
    }

    def epoch_minigrad() -> None:
        opt = RMSProp(lr=1e-3)
        for batch in batches(data.train, 8, dtype=np.float64, rng=np.random.default_rng(0)):
            _, grads = model.loss_and_grads(batch, loss_scale=1.0 / batch.n_steps)
            clip_grad_norm(grads, 1.0)
            opt.step(model.params, grads)

    def epoch_reference() -> None:
        opt = RMSProp(lr=1e-3)
        for batch in batches(data.train, 8, dtype=np.float64, rng=np.random.default_rng(0)):
            _, grads = ref.readout_loss_and_grads(
                ref_params, batch.inputs, batch.targets, batch.mask
            )
            grads = {k: v / batch.n_steps for k, v in grads.items() if k in ref_params}
            clip_grad_norm(grads, 1.0)
            opt.step(ref_params, grads)

    tm, tr = median_pair(epoch_minigrad, epoch_reference, 3)
    epoch_header = (
        f"# one training epoch on {Path(source).name} ({len(data.train)} sequences, "
        f"{data.train.n_steps} steps): GRU 46 units, batch 8, float64"
    )
    record["epoch"] = {"header": epoch_header, "minigrad": tm, "reference": tr}
    print()
    print(epoch_header)
    print("| | minigrad (s) | hand-fused (s) | ratio |")
    print("|---|---|---|---|")
    print(f"| epoch | {tm:.3f} | {tr:.3f} | {tm / tr:.2f} |")

    batch = next(iter(batches(data.train, 8, dtype=np.float64, rng=np.random.default_rng(1))))

    def peak(f: Callable[[], object]) -> int:
        f()
        tracemalloc.start()
        f()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    pm = peak(lambda: model.loss_and_grads(batch, loss_scale=1.0 / batch.n_steps))
    pr = peak(
        lambda: ref.readout_loss_and_grads(ref_params, batch.inputs, batch.targets, batch.mask)
    )
    memory_header = (
        f"# peak memory allocated by one training step (T = {batch.inputs.shape[0]}, B = 8; "
        "minigrad's buffers are allocated once per plan and batch size, then reused)"
    )
    record["memory"] = {"header": memory_header, "minigrad": pm, "reference": pr}
    print()
    print(memory_header)
    print(
        f"| | minigrad (MB) | hand-fused (MB) |\n|---|---|---|\n| step | {pm / 1e6:.2f} | {pr / 1e6:.2f} |"
    )
    return finish()


if __name__ == "__main__":
    raise SystemExit(main())
