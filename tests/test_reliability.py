"""Regression tests for hostile files, faults and concurrent runs, one per class of defect.

Every crafted file is made here, small; commands run through ``main`` (or a
subprocess where a signal, a lock holder or a closed stdout is needed) and must
give one line and the documented exit code, never a traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from npz_layout import write_npz_dataset, write_tiny_dataset

from models.cli.main import main
from models.data import N_PITCHES, DataError, load_dataset
from models.data.load import MAX_STEPS
from models.io import TEMP_SUFFIX, RunLock
from models.nets.base import RecurrentModel
from models.sweep import SweepConfig, run_sweep
from models.train import TrainConfig
from models.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.train.config import config_from_mapping
from models.train.loop import train
from models.train.report import Reporter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny.npz", seed=5)


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--dataset", str(data), "--out", str(out), "--hidden", "3", "--epochs", "1",
        "--batch-size", "2", "--eval-batch-size", "4", "--no-progress",
        "--lr-schedule", "constant", *extra,  # a constant rate resumes to more epochs
    ]  # fmt: skip


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    got = main(argv)
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    return lines[0]


def _cli(*argv: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "models", *argv], capture_output=True, text=True, env=env, **kw
    )


# --------------------------------------------------------------------------- data loss


def test_f1_a_finished_run_without_checkpoint_is_not_replaced(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("model.npz", "metrics.json", "curves.svg"):
        (out / name).write_text("keep")
        line = _one_line(capsys, _args(tiny, out), 1)
        assert f"already holds a run ({name})" in line
        assert (out / name).read_text() == "keep"
        (out / name).unlink()


def test_f2_a_second_writer_is_refused_by_the_folder_lock(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(_args(tiny, out)) == 0
    capsys.readouterr()
    with RunLock(out):  # as a run in progress would hold it
        for extra in ([], ["--overwrite"], ["--resume", "--epochs", "2"]):
            line = _one_line(capsys, _args(tiny, out, *extra), 1)
            assert "another minigrad process" in line and str(out) in line
    assert main(_args(tiny, out, "--resume", "--epochs", "2")) == 0


def test_f3_resume_refuses_a_changed_dataset(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(tiny.read_bytes())
    out = tmp_path / "run"
    assert main(_args(data, out)) == 0
    with np.load(tiny) as z:
        arrays = dict(z)
    arrays["train_notes"] = np.where(arrays["train_notes"] == 60, 61, arrays["train_notes"])
    np.savez(data, **arrays)
    capsys.readouterr()
    line = _one_line(capsys, _args(data, out, "--resume", "--epochs", "2"), 1)
    assert "changed since" in line and "--allow-data-change" in line
    assert main(_args(data, out, "--resume", "--epochs", "2", "--allow-data-change")) == 0


def test_f14_non_finite_parameters_are_refused_on_load(tmp_path: Path) -> None:
    model = RecurrentModel("gru", 2, 3)
    bad = {k: v.copy() for k, v in model.params.items()}
    key = next(iter(bad))
    bad[key].flat[0] = np.nan
    with pytest.raises(ValueError, match=rf"key '{key}' holds NaN or infinite"):
        model.load_state_dict(bad)
    path = tmp_path / "m.npz"
    save_checkpoint(path, params=bad, optimizer={}, epoch=0, rng_state={}, config={})
    with pytest.raises(CheckpointError, match=rf"parameter 'param/{key}' holds NaN"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- bounded inputs


def test_f4_f5_non_regular_and_huge_configs_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)
    assert "is a FIFO" in _one_line(capsys, ["train", "--config", str(fifo)], 2)
    assert "character device" in _one_line(capsys, ["train", "--config", "/dev/zero"], 2)
    data = tmp_path / "d.npz"
    os.mkfifo(data)
    assert "is a FIFO" in _one_line(capsys, ["train", "--dataset", str(data)], 1)
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (2 << 20))
    assert "too large" in _one_line(capsys, ["train", "--config", str(big)], 2)


def test_f8_pickle_expansion_is_bounded(tmp_path: Path) -> None:
    step = [60]
    seq = [step] * 10_000
    data = {"train": [seq] * (MAX_STEPS // 10_000 + 1), "valid": [[step]], "test": [[step]]}
    path = tmp_path / "laughs.pickle"
    path.write_bytes(pickle.dumps(data, protocol=2))
    assert path.stat().st_size < 100_000
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="more than 2000000 time steps"):
        load_dataset(path)
    # a guard against building the whole expansion, not a speed test: it takes
    # well under a second alone, and a loaded machine must not fail it
    assert time.perf_counter() - t0 < 30


def test_f9_empty_sequences_are_refused_at_load(tmp_path: Path) -> None:
    roll = np.zeros((3, N_PITCHES), dtype=np.uint8)
    empty = np.zeros((0, N_PITCHES), dtype=np.uint8)
    path = write_npz_dataset(
        tmp_path / "e.npz", {"train": [roll, empty], "valid": [roll], "test": [roll]}
    )
    with pytest.raises(DataError, match=r"key train: sequence 1 has no time steps"):
        load_dataset(path)


def test_f11_hand_edited_checkpoint_metadata(tiny: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    model = RecurrentModel("gru", 2, 3)
    save_checkpoint(good, params=model.params, optimizer={}, epoch=0, rng_state={}, config={})
    with np.load(good) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    cases = {
        "nested more than": "[" * 100_000 + "]" * 100_000,
        "invalid epoch": json.dumps({**meta, "epoch": [1]}),
    }
    for match, text in cases.items():
        path = tmp_path / "bad.npz"
        np.savez(path, **{**arrays, "meta": np.array(text)})
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(path)
    # a stored option of the wrong type, or a state no generator takes
    from models.train.loop import load_model

    run = tmp_path / "run"
    train(
        TrainConfig(dataset=str(tiny), out=str(run), hidden=3, epochs=1, batch_size=2,
                    eval_batch_size=4, progress=False),
        reporter=Reporter(),
    )  # fmt: skip
    with np.load(run / "model.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    edits = {
        "key 'hidden' must be an integer": {**meta, "config": {**meta["config"], "hidden": [3]}},
        "invalid PCG64 rng state": {
            **meta,
            "rng_state": {**meta["rng_state"], "state": {"state": -1, "inc": -3}},
        },
    }
    for match, edited in edits.items():
        path = tmp_path / "edited.npz"
        np.savez(path, **{**arrays, "meta": np.array(json.dumps(edited))})
        with pytest.raises(CheckpointError, match=match):
            load_model(path)
    ck = load_checkpoint(good)
    state = {"bit_generator": "PCG64", "state": {"state": -5, "inc": 1}, "has_uint32": 0,
             "uinteger": 0}  # fmt: skip
    with pytest.raises(CheckpointError, match="invalid PCG64 rng state"):
        type(ck)(**{**ck.__dict__, "rng_state": state}).make_rng()


def test_f17_f19_dataset_symlinks_keep_their_suffix_and_duplicate_keys_are_refused(
    tiny: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "noext"
    plain.write_bytes(tiny.read_bytes())
    link = tmp_path / "link.npz"
    link.symlink_to(plain)
    cfg = TrainConfig(dataset=str(link)).resolved()
    assert cfg.dataset.endswith("link.npz")
    assert len(load_dataset(cfg.dataset).train) == 3
    with pytest.raises(ValueError, match="'batch_size' is given twice"):
        config_from_mapping({"batch-size": 2, "batch_size": 3})


# --------------------------------------------------------------------------- faults


def test_sigterm_keeps_a_resumable_checkpoint_and_records_the_status(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = _args(tiny, out)
    argv[argv.index("--epochs") + 1] = "100000"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "models", *argv], stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 60

    def epochs_done() -> int:
        # metrics.json says "running" from the first checkpoint on; wait for an epoch
        if not (out / "metrics.json").exists():
            return 0
        return len(json.loads((out / "metrics.json").read_text())["epochs"])

    while time.time() < deadline and epochs_done() < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert load_checkpoint(out / "checkpoint.npz").epoch >= 1
    assert not list(out.glob(f"*{TEMP_SUFFIX}"))


# A signal sent by the run itself at a chosen point of its start: right after the
# first checkpoint is renamed into place (the window where a run used to leave a
# checkpoint and no metrics.json), or inside that write, before the rename.
_SIGNAL_AT = """
import os, signal, sys
import models.train.loop as loop
real = loop._save_checkpoint
sig, when = getattr(signal, sys.argv[1]), sys.argv[2]
def save(*args, **kwargs):
    if when == "before":
        os.kill(os.getpid(), sig)
    real(*args, **kwargs)
    if when == "after":
        os.kill(os.getpid(), sig)
loop._save_checkpoint = save
real_write = loop._write_outputs
def write(*args, **kwargs):
    real_write(*args, **kwargs)
    if when == "written":
        os.kill(os.getpid(), sig)
loop._write_outputs = write
from models.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_right_after_the_first_checkpoint_records_interrupted(
    tiny: Path, tmp_path: Path, sig: str, code: int
) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AT, sig, "after", *_args(tiny, out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "--resume" in proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs"] == []
    assert load_checkpoint(out / "checkpoint.npz").epoch == 0
    assert not list(out.glob(f"*{TEMP_SUFFIX}"))
    # and the run continues from it
    assert main([*_args(tiny, out), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"


def test_a_kill_9_after_the_first_checkpoint_leaves_metrics_running(
    tiny: Path, tmp_path: Path
) -> None:
    # metrics.json is written with the first checkpoint, before the first epoch
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AT, "SIGKILL", "written", *_args(tiny, out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "running" and metrics["epochs"] == []
    assert load_checkpoint(out / "checkpoint.npz").epoch == 0
    assert main([*_args(tiny, out), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"


def test_a_signal_before_the_first_checkpoint_leaves_no_run(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AT, "SIGTERM", "before", *_args(tiny, out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr and "--resume" not in proc.stderr
    # nothing to resume, nothing half-made: the folders the run created are gone
    assert not (tmp_path / "new").exists()


def test_f30_stale_temporaries_are_removed_and_the_default_folder_gets_a_suffix(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(
        dataset=str(tiny),
        hidden=3,
        epochs=1,
        batch_size=2,
        eval_batch_size=4,
        progress=False,
        lr_schedule="constant",  # resumed below to more epochs
    )
    first = train(config, reporter=Reporter()).out
    stale = first / f".checkpoint.npz.x1{TEMP_SUFFIX}"
    stale.write_text("half")
    second = train(config, reporter=Reporter()).out
    assert second == first.with_name(first.name + "-2")
    # a run in the first folder (here, resuming it) cleans what a killed writer left
    train(
        TrainConfig(**{**config.__dict__, "out": str(first), "resume": True, "epochs": 2}),
        reporter=Reporter(),
    )
    assert not stale.exists()


def test_f20_f21_early_interrupt_and_closed_stdout_give_no_traceback(tiny: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "models", "train", "--dataset", str(tiny)],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # after the interpreter's own start-up, while numpy and models load
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # -2: the signal came during the interpreter's own start-up, before any of
    # minigrad runs (a loaded machine); it prints nothing then either
    assert proc.returncode in (130, -2), err
    assert "Traceback" not in err
    closed = _cli("explain", "--param", "Wz", stdout=None, stdin=subprocess.DEVNULL)
    assert closed.returncode == 0
    code = "import os, sys; os.close(1); sys.stdout = None; from models.cli import main; " \
        "sys.exit(main(['explain', '--param', 'Wz']))"  # fmt: skip
    proc2 = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # explain's only output is lost: one line and exit code 1 (train, whose results
    # are files, succeeds with a closed stdout: test_hostile.py)
    assert proc2.returncode == 1 and "Traceback" not in proc2.stderr
    assert proc2.stderr == "minigrad: error: cannot write to standard output (it is closed)\n"


@pytest.mark.parametrize(("sig", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_the_console_script_holds_signals_from_its_first_import(sig: str, code: int) -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["minigrad"] == "models.console:main"
    # a signal right after the console script's import, while nothing heavy has
    # loaded yet (what would be a KeyboardInterrupt traceback from inside an import)
    program = (
        "import os, signal, sys\n"
        "import models.console\n"
        "assert 'numpy' not in sys.modules and 'models.cli' not in sys.modules\n"
        f"os.kill(os.getpid(), signal.{sig})\n"
        "sys.argv = ['minigrad', 'explain', '--param', 'Wz']\n"
        "sys.exit(models.console.main())\n"
    )
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip() == "minigrad: interrupted" and proc.stdout == ""


def test_f10_memory_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import models.cli.explain as explain_cmd

    def boom(*a: object, **k: object) -> str:
        raise MemoryError

    monkeypatch.setattr(explain_cmd, "explain", boom)
    assert "out of memory" in _one_line(capsys, ["explain", "--param", "Wz"], 1)


# --------------------------------------------------------------------------- sweeps


def test_f12_f22_sweep_reruns_a_corrupt_trial_and_bounds_its_size(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = SweepConfig(
        dataset=str(tiny),
        out=str(tmp_path / "s"),
        cells=("gru",),
        hidden={"gru": 3},
        lr_candidates=1,
        train_options={"epochs": 1, "batch_size": 2, "eval_batch_size": 4},
    )
    first = run_sweep(cfg, executor="local:1")
    (trial,) = first.trials
    metrics = Path(trial["run_dir"]) / "metrics.json"
    bad = (
        '{"status": "finished", "config": [], "model": 3, "train_nll": 1, "valid_nll": 1, '
        '"test_nll": [1]}'
    )
    for text in (bad, "{"):
        metrics.write_text(text)
        log = tmp_path / "log.txt"
        with log.open("w") as fh:
            again = run_sweep(cfg, executor="local:1", log=fh)
        assert not again.failed
        assert f"{metrics}: unreadable" in log.read_text()
    line = _one_line(
        capsys,
        ["sweep", "--dataset", str(tiny), "--out", str(tmp_path / "x"), "--lr-candidates",
         "100000000"],
        2,
    )  # fmt: skip
    assert "at most 1000" in line


def test_f13_sweep_workers_die_with_the_sweep(tmp_path: Path) -> None:
    from models.sweep.trial import init_worker

    code = (
        "import os, sys, time\n"
        "from models.sweep.trial import init_worker\n"
        "init_worker(int(sys.argv[1]))\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, os; p = subprocess.Popen([sys.executable, '-c', sys.argv[1], "
         "str(os.getpid())], stdout=subprocess.PIPE, text=True); "
         "print(p.stdout.readline().strip(), flush=True); import time; time.sleep(60)", code],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert parent.stdout is not None
    worker = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its parent")
    assert callable(init_worker)


def test_sweep_folder_records_its_options_and_takes_a_config(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text(
        f'dataset = "{tiny}"\nout = "{tmp_path / "s"}"\ncells = ["gru"]\nhidden = "gru=3"\n'
        'lr-candidates = 1\nexecutor = "local:1"\nepochs = 1\nbatch_size = 2\n'
        "eval_batch_size = 4\n"
    )
    assert main(["sweep", "--config", str(toml)]) == 0
    results = tmp_path / "s" / "results.json"
    before = results.read_bytes()
    line = _one_line(capsys, ["sweep", "--config", str(toml), "--epochs", "2"], 1)
    assert "holds a sweep with other options" in line and "--overwrite" in line
    assert results.read_bytes() == before
    assert main(["sweep", "--config", str(toml), "--epochs", "2", "--overwrite"]) == 0
    doc = json.loads(results.read_text())
    assert doc["sweep"]["train_options"]["epochs"] == 2 and doc["trials"][0]["epochs_run"] == 2


# --------------------------------------------------------------------------- refusals


def test_a_refused_train_or_sweep_leaves_no_lock_file(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.io import LOCK_FILE

    held = tmp_path / "held"
    held.mkdir()
    (held / "metrics.json").write_text('{"status": "finished"}')
    assert "already holds a run" in _one_line(capsys, _args(tiny, held), 1)
    assert sorted(p.name for p in held.iterdir()) == ["metrics.json"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "results.csv").write_text("a,b\n")
    argv = ["sweep", "--dataset", str(tiny), "--out", str(theirs), "--cells", "gru",
            "--hidden", "gru=3", "--lr-candidates", "1", "--epochs", "1"]  # fmt: skip
    assert "but no sweep" in _one_line(capsys, argv, 1)
    assert sorted(p.name for p in theirs.iterdir()) == ["results.csv"]
    # a --resume refused for other options writes nothing: it leaves no lock file
    # where there was none, and leaves the run's own lock file where there was one
    run = tmp_path / "run"
    assert main(_args(tiny, run)) == 0
    files = sorted(p.name for p in run.iterdir())
    assert LOCK_FILE in files
    refused = [*_args(tiny, run, "--resume"), "--hidden", "4"]
    assert "option 'hidden' is 4" in _one_line(capsys, refused, 2)
    assert sorted(p.name for p in run.iterdir()) == files
    (run / LOCK_FILE).unlink()
    assert "option 'hidden' is 4" in _one_line(capsys, refused, 2)
    assert LOCK_FILE not in {p.name for p in run.iterdir()}
