"""Tests for models.sweep: learning-rate candidates, trials on a process pool and on
Dask, failed and killed trials, re-runs, and ``minigrad sweep``."""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from npz_layout import write_tiny_dataset
from sweep_faults import FAILED_ON_PURPOSE, faulty_trial

import models.cli.sweep
import models.sweep.trial
from models.cli.main import main
from models.sweep import (
    BLAS_ENV,
    RESULTS_CSV,
    RESULTS_JSON,
    TRIALS_CSV,
    SweepConfig,
    SweepResult,
    learning_rates,
    parse_cells,
    parse_executor,
    parse_hidden,
    parse_lr_range,
    run_sweep,
)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset in the shared .npz layout: 4 short sequences per split."""
    return write_tiny_dataset(
        tmp_path_factory.mktemp("data") / "tiny.npz", seed=1, n_seqs=4, lengths=(8, 15),
        notes=(55, 70), per_step=3,
    )  # fmt: skip


TRAIN_OPTIONS = {"epochs": 2, "batch_size": 2, "patience": 0, "eval_batch_size": 4}


def tiny_sweep(data: Path, out: Path, **kw: Any) -> SweepConfig:
    base: dict[str, Any] = {
        "dataset": str(data),
        "out": str(out),
        "cells": ("gru", "lstm"),
        "hidden": {"gru": 4, "lstm": 3},
        "lr_candidates": 2,
        "lr_range": (1e-3, 3e-2),
        "train_options": TRAIN_OPTIONS,
    }
    base.update(kw)
    return SweepConfig(**base)


@pytest.fixture(scope="module")
def local_sweep(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> SweepResult:
    """The tiny sweep run once on the local process pool."""
    out = tmp_path_factory.mktemp("sweep") / "local"
    return run_sweep(tiny_sweep(tiny, out), executor="local:2")


def _table(result: SweepResult) -> list[tuple[Any, ...]]:
    """The numbers of the results (no times, no directories)."""
    return [
        (
            r["cell"],
            r["hidden"],
            r["num_params"],
            r["lr"],
            r["train_nll"],
            r["valid_nll"],
            r["test_nll"],
            r["trials_ok"],
            r["trials_failed"],
        )
        for r in result.cells
    ] + [
        (t["name"], t["status"], t["train_nll"], t["valid_nll"], t["test_nll"], t["best_epoch"])
        for t in result.trials
    ]


def _assert_same_table(a: SweepResult, b: SweepResult) -> None:
    ta, tb = _table(a), _table(b)
    assert len(ta) == len(tb)
    for ra, rb in zip(ta, tb, strict=True):
        assert len(ra) == len(rb)
        for va, vb in zip(ra, rb, strict=True):
            if isinstance(va, float) and isinstance(vb, float):
                assert va == pytest.approx(vb, rel=1e-9)
            else:
                assert va == vb


# --------------------------------------------------------------------------- settings


def test_learning_rates_are_log_uniform_and_deterministic() -> None:
    a = learning_rates(10, 1e-4, 1e-2, seed=0)
    assert a == learning_rates(10, 1e-4, 1e-2, seed=0)
    assert a != learning_rates(10, 1e-4, 1e-2, seed=1)
    assert len(a) == 10 and a == sorted(a)
    assert all(1e-4 <= x <= 1e-2 for x in a)
    assert all(float(f"{x:.3e}") == x for x in a)  # 4 significant digits, as in the names
    grid = learning_rates(3, 1e-4, 1e-2, grid=True)
    assert grid == [1e-4, 1e-3, 1e-2]
    assert learning_rates(1, 1e-3, 1e-2, grid=True) == [1e-3]
    draws = np.log10(learning_rates(400, 1e-4, 1e-2, seed=3))
    assert abs(float(np.mean(draws)) + 3.0) < 0.1  # uniform in log10 over [-4, -2]
    with pytest.raises(ValueError, match="0 < LO <= HI"):
        learning_rates(3, 1e-2, 1e-4)
    with pytest.raises(ValueError, match=">= 1"):
        learning_rates(0, 1e-4, 1e-2)


def test_parsers_name_the_part_at_fault() -> None:
    assert parse_executor("local") == ("local", 2)
    assert parse_executor("local:3") == ("local", 3)
    assert parse_executor("dask://10.0.0.1:8786") == ("dask", "tcp://10.0.0.1:8786")
    assert parse_executor("dask://tls://host:8786") == ("dask", "tls://host:8786")
    for bad, fragment in [
        ("threads", "expected local, local:N or dask://HOST:PORT"),
        ("local:x", "N 'x' is not an integer"),
        ("local:0", "N must be >= 1"),
        ("dask://", "no scheduler address"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            parse_executor(bad)
    assert parse_hidden("gru=46, lstm=36") == {"gru": 46, "lstm": 36}
    with pytest.raises(ValueError, match="entry 'gru' is not CELL=H"):
        parse_hidden("gru")
    with pytest.raises(ValueError, match="unknown cell 'rnn'"):
        parse_hidden("rnn=3")
    with pytest.raises(ValueError, match="size 'x' of gru"):
        parse_hidden("gru=x")
    assert parse_cells("gru,lstm,tanh") == ("gru", "lstm", "tanh")
    with pytest.raises(ValueError, match="unknown cell 'foo'"):
        parse_cells("gru,foo")
    with pytest.raises(ValueError, match="repeated"):
        parse_cells("gru,gru")
    assert parse_lr_range("1e-4:1e-2") == (1e-4, 1e-2)
    with pytest.raises(ValueError, match="HI 'x' is not a number"):
        parse_lr_range("1e-4:x")
    with pytest.raises(ValueError, match="LO must not exceed HI"):
        parse_lr_range("1e-2:1e-4")


def test_trials_and_paper_sizes(tiny: Path, tmp_path: Path) -> None:
    cfg = SweepConfig(dataset=str(tiny), out=str(tmp_path), lr_candidates=3, seeds=2)
    assert cfg.hidden_sizes() == {"gru": 46, "lstm": 36, "tanh": 100}
    trials = cfg.trials()
    assert len(trials) == 3 * 3 * 2
    names = [t.name for t in trials]
    assert len(set(names)) == len(names)
    first = trials[0]
    assert first.name == f"gru-lr{first.lr:.3e}-s0" and first.out == tmp_path.resolve() / first.name
    assert first.config.lr == first.lr and first.config.hidden == 46
    assert first.config.weight_noise == 0.075 and first.config.optimizer == "rmsprop"
    with pytest.raises(ValueError, match="no default hidden size; give one with --hidden mgu=H"):
        replace(cfg, cells=("mgu",)).trials()
    assert replace(cfg, cells=("gru",), hidden={"gru": 5}).hidden_sizes() == {"gru": 5}
    with pytest.raises(ValueError, match="set by the sweep"):
        replace(cfg, train_options={"lr": 0.1}).trials()
    with pytest.raises(ValueError, match="epochs"):
        replace(cfg, train_options={"epochs": 0}).trials()


def test_a_too_large_model_is_refused_naming_each_swept_cell(tiny: Path, tmp_path: Path) -> None:
    from models.cells.stack import param_count
    from models.nets.limits import lstm_param_count

    cfg = SweepConfig(dataset=str(tiny), out=str(tmp_path / "sw"), cells=("gru",), hidden={"gru": 3000})
    with pytest.raises(ValueError) as exc:
        cfg.trials()
    gru = param_count("gru", 88, 3000, 1, 88)
    assert f"cell 'gru' with hidden 3000 and 1 layer(s): {gru:,} parameters" in str(exc.value)
    assert f"({lstm_param_count(88, 3000, 1, 88):,} parameters)" in str(exc.value)
    assert "'lstm'" not in str(exc.value) and "\n" not in str(exc.value)
    # every refused cell is named with its own count; an accepted one is not
    two = replace(cfg, cells=("gru", "tanh", "mgu"), hidden={"gru": 3000, "tanh": 2900, "mgu": 20})
    with pytest.raises(ValueError) as exc:
        two.trials()
    tanh = param_count("tanh", 88, 2900, 1, 88)
    assert f"cell 'tanh' with hidden 2900 and 1 layer(s): {tanh:,} parameters" in str(exc.value)
    assert "cell 'gru'" in str(exc.value) and "'mgu'" not in str(exc.value)
    assert not (tmp_path / "sw").exists()


def test_param_count_matches_the_built_models() -> None:
    from models.cells.stack import param_count
    from models.nets.sequence import SequenceModel

    for cell in ("gru", "lstm", "tanh", "mgu", "gru_reset_after"):
        for layers in (1, 3):
            model = SequenceModel(cell=cell, hidden_size=7, layers=layers)
            assert param_count(cell, 88, 7, layers, 88) == model.num_params


# --------------------------------------------------------------------------- running


def test_local_sweep_table(local_sweep: SweepResult) -> None:
    res = local_sweep
    assert res.data["status"] == "finished" and not res.failed
    assert [t["status"] for t in res.trials] == ["ok"] * 4
    for row in res.cells:
        mine = [t for t in res.trials if t["cell"] == row["cell"]]
        best = min(mine, key=lambda t: t["valid_nll"])  # chosen by validation NLL only
        assert row["lr"] == best["lr"]
        assert (row["train_nll"], row["valid_nll"], row["test_nll"]) == (
            best["train_nll"],
            best["valid_nll"],
            best["test_nll"],
        )
        assert row["trials_ok"] == 2 and row["trials_failed"] == 0
        assert row["wall_seconds"] > 0
    root = Path(res.data["sweep"]["out"])
    for t in res.trials:
        metrics = json.loads((Path(t["run_dir"]) / "metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["valid_nll"] == t["valid_nll"]
        assert Path(t["run_dir"]).parent == root
    on_disk = json.loads((root / RESULTS_JSON).read_text())
    assert on_disk["cells"] == res.cells and on_disk["trials"] == res.trials
    with (root / RESULTS_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert [r["cell"] for r in rows] == ["gru", "lstm"]
    assert float(rows[0]["valid_nll"]) == res.cells[0]["valid_nll"]
    with (root / TRIALS_CSV).open() as f:
        assert [r["name"] for r in csv.DictReader(f)] == [t["name"] for t in res.trials]


def test_dask_gives_the_same_table(
    local_sweep: SweepResult, tiny: Path, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        dashboard_address=None,
    ) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        res = run_sweep(tiny_sweep(tiny, tmp_path / "dask"), executor=address)
    assert res.data["executor"] == address
    _assert_same_table(local_sweep, res)


def test_dask_reports_a_failing_trial(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    distributed = pytest.importorskip("distributed")
    cfg = tiny_sweep(tiny, tmp_path / "dask", cells=("gru",))
    victim = cfg.trials()[1].name
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None
    ) as cluster:
        res = run_sweep(
            cfg,
            executor=cluster.scheduler_address.replace("tcp://", "dask://"),
            trial_runner=functools.partial(faulty_trial, raise_on=(victim,)),  # threads: never exit
        )
    (failed,) = res.failed
    assert failed["name"] == victim and FAILED_ON_PURPOSE in failed["error"]
    assert res.cells[0]["trials_ok"] == 1 and res.cells[0]["trials_failed"] == 1
    assert res.cells[0]["lr"] == cfg.trials()[0].lr  # chosen among the trials that finished


def test_killed_trial_then_rerun(
    local_sweep: SweepResult,
    tiny: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "sweep"
    cfg = tiny_sweep(tiny, out)
    victim = cfg.trials()[1].name  # runs beside the first trial on the 2 workers
    argv = [
        "sweep",
        "--dataset",
        str(tiny),
        "--out",
        str(out),
        "--cells",
        "gru,lstm",
        "--hidden",
        "gru=4,lstm=3",
        "--lr-candidates",
        "2",
        "--lr-range",
        "1e-3:3e-2",
        "--executor",
        "local:2",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--patience",
        "0",
        "--eval-batch-size",
        "4",
    ]
    killing = functools.partial(faulty_trial, exit_on=(victim,))
    monkeypatch.setattr(
        models.cli.sweep, "run_sweep", functools.partial(run_sweep, trial_runner=killing)
    )
    assert main(argv) == 1
    stdout, stderr = capsys.readouterr()
    assert "gru" in stdout and "lstm" in stdout  # the table is printed
    assert stderr.strip().splitlines()[-1].startswith("minigrad: error: 1 of 4 trials failed")
    doc = json.loads((out / RESULTS_JSON).read_text())
    by_name = {t["name"]: t for t in doc["trials"]}
    assert by_name[victim]["status"] == "failed"
    assert "BrokenProcessPool" in by_name[victim]["error"]
    assert [n for n, t in by_name.items() if t["status"] == "ok"] == [
        t.name for t in cfg.trials() if t.name != victim
    ]
    gru = doc["cells"][0]
    assert (gru["trials_ok"], gru["trials_failed"]) == (1, 1)
    assert gru["lr"] == cfg.trials()[0].lr
    lstm = local_sweep.cells[1]
    assert doc["cells"][1]["valid_nll"] == pytest.approx(lstm["valid_nll"], rel=1e-12)

    # Re-run with the plain trials: the finished trials are skipped, the killed one runs;
    # a trial that lost its metrics (but kept its checkpoint) is resumed.
    monkeypatch.undo()
    lost = cfg.trials()[3]
    (lost.out / "metrics.json").unlink()
    stamps = {
        t.name: (t.out / "metrics.json").stat().st_mtime_ns
        for t in cfg.trials()[:3]
        if t.name != victim
    }
    assert main(argv) == 0
    capsys.readouterr()
    doc = json.loads((out / RESULTS_JSON).read_text())
    by_name = {t["name"]: t for t in doc["trials"]}
    assert all(t["status"] == "ok" for t in by_name.values())
    assert by_name[victim]["reused"] is False and by_name[lost.name]["resumed"] is True
    for name, stamp in stamps.items():
        assert by_name[name]["reused"] is True
        assert (out / name / "metrics.json").stat().st_mtime_ns == stamp
    res = SweepResult(doc, {})
    _assert_same_table(local_sweep, res)


def test_finished_runs_with_other_options_are_not_reused(
    local_sweep: SweepResult, tmp_path: Path
) -> None:
    src = Path(local_sweep.data["sweep"]["out"])
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    data = local_sweep.data["sweep"]["dataset"]
    cfg = tiny_sweep(Path(data), out, train_options={**TRAIN_OPTIONS, "epochs": 3})
    # the sweep folder records its options: another command is refused as a whole,
    # and the recorded results stay as they were
    before = (out / "results.json").read_bytes()
    with pytest.raises(ValueError, match=r"holds a sweep with other options \(epochs: 2, now 3\)"):
        run_sweep(cfg)
    assert (out / "results.json").read_bytes() == before
    # without the record (and the tables, which would be someone else's files then),
    # each trial folder still refuses a run with other options
    def forget() -> None:
        for name in ("results.json", "results.csv", "trials.csv"):
            (out / name).unlink()

    forget()
    res = run_sweep(cfg)
    assert len(res.failed) == 4
    assert all(
        "holds a finished run with other options (epochs: 2" in t["error"] for t in res.failed
    )
    forget()
    same = run_sweep(tiny_sweep(Path(data), out))  # the original options: everything reused
    assert all(t["reused"] for t in same.trials)
    _assert_same_table(local_sweep, same)


def test_a_trial_folder_holding_someone_elses_run_is_refused_not_replaced(
    tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sw"
    cfg = tiny_sweep(
        tiny, out, cells=("gru",), hidden={"gru": 4}, lr_candidates=1,
        train_options={**TRAIN_OPTIONS, "epochs": 1},
    )
    (trial,) = cfg.trials()
    trial.out.mkdir(parents=True)
    metrics = trial.out / "metrics.json"
    other = {**trial.config.to_dict(), "hidden": 7}
    foreign = {
        # an unfinished run with other options, or with none, or no object at all
        "other options": json.dumps({"status": "running", "config": other}),
        "records no run options": json.dumps({"status": "interrupted"}),
        "unreadable": "{",
    }
    for fragment, text in foreign.items():
        metrics.write_text(text)
        with pytest.raises(ValueError) as exc:
            run_sweep(cfg)
        line = str(exc.value)
        assert str(metrics) in line and fragment in line and "--overwrite" in line
        assert "\n" not in line
        assert metrics.read_text() == text  # nothing replaced
        assert sorted(p.name for p in out.iterdir()) == [trial.name]  # nothing written
    # run files without metrics.json or a checkpoint: someone else's too
    metrics.unlink()
    (trial.out / "model.npz").write_bytes(b"theirs")
    with pytest.raises(ValueError, match=r"model\.npz: a run's file without its metrics\.json"):
        run_sweep(cfg)
    assert (trial.out / "model.npz").read_bytes() == b"theirs"
    # --overwrite is the explicit way to replace them
    (trial.out / "model.npz").unlink()
    metrics.write_text(foreign["other options"])
    res = run_sweep(cfg, overwrite=True)
    assert not res.failed
    assert json.loads(metrics.read_text())["status"] == "finished"
    # the sweep's own trial, unfinished (interrupted), is run again as before
    mine = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({**mine, "status": "interrupted"}))
    again = run_sweep(cfg)
    assert not again.failed and json.loads(metrics.read_text())["status"] == "finished"


def test_blas_environment_is_set_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with models.sweep.trial.blas_env():
        assert {k: os.environ.get(k) for k in BLAS_ENV} == dict.fromkeys(BLAS_ENV, "1")
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


def test_trials_run_with_one_blas_thread(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    distributed = pytest.importorskip("distributed")
    seen: dict[str, str | None] = {}

    def fake_train(*args: Any, **kwargs: Any) -> Any:
        seen.update({k: os.environ.get(k) for k in BLAS_ENV})
        raise RuntimeError("stop here")

    monkeypatch.setattr(models.sweep.trial, "train", fake_train)  # the workers are threads here
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    cfg = tiny_sweep(tiny, tmp_path / "s", cells=("gru",), lr_candidates=1)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None
    ) as cluster:
        res = run_sweep(cfg, executor=cluster.scheduler_address.replace("tcp://", "dask://"))
    assert seen == dict.fromkeys(BLAS_ENV, "1")
    assert [t["error"] for t in res.failed] == ["RuntimeError: stop here"]


def test_sweep_command_errors(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["sweep", "--dataset", str(tiny), "--out", str(tmp_path / "s")]
    for extra, code, fragment in [
        (["--cells", "gru,foo"], 2, "unknown cell 'foo'"),
        (["--executor", "threads"], 2, "expected local, local:N or dask://HOST:PORT"),
        (["--lr-range", "1e-2"], 2, "expected LO:HI"),
        (["--lr-candidates", "0"], 2, "--lr-candidates must be an integer >= 1"),
        (["--lr-candidates", "100000000"], 2, "--lr-candidates must be at most 1000"),
        (["--cells", "mgu"], 2, "give one with --hidden mgu=H"),
        (["--epochs", "zero"], 2, "invalid int value"),
    ]:
        assert main([*base, *extra]) == code
        out, err = capsys.readouterr()
        assert out == "" and fragment in err
        if fragment != "invalid int value":
            assert len(err.strip().splitlines()) == 1
    assert (
        main(["sweep", "--dataset", str(tmp_path / "none.npz"), "--out", str(tmp_path / "s")]) == 1
    )
    assert "neither an embedded dataset" in capsys.readouterr().err
    assert main(["sweep", "--help"]) == 0
    assert "dask://HOST:PORT" in capsys.readouterr().out


def test_dask_without_distributed_names_the_extra(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
    out = tmp_path / "s"
    argv = [
        "sweep",
        "--dataset",
        str(tiny),
        "--out",
        str(out),
        "--executor",
        "dask://127.0.0.1:8786",
    ]
    assert main(argv) == 1
    stdout, stderr = capsys.readouterr()
    assert stdout == ""
    (line,) = stderr.strip().splitlines()
    assert line.startswith("minigrad: error: --executor dask://127.0.0.1:8786 needs")
    assert 'pip install "minigrad[dask]"' in line
    assert not out.exists()  # nothing was started


def test_a_closed_stderr_loses_the_sweeps_messages_not_its_exit_code(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stderr", Closed())
    out = tmp_path / "s"
    argv = ["sweep", "--dataset", str(tiny), "--out", str(out), "--cells", "gru",
            "--hidden", "gru=3", "--lr-candidates", "1", "--executor", "local:1",
            "--epochs", "1", "--batch-size", "2", "--eval-batch-size", "4"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "results.json").read_text())["status"] == "finished"


def test_a_sweep_folder_from_before_lr_scaling_is_continued_by_its_own_recipe(
    tiny: Path, tmp_path: Path
) -> None:
    old_recipe = {"lr_schedule": "constant", "lr_scaling": "none"}
    out = tmp_path / "old"
    run_sweep(tiny_sweep(tiny, out, train_options={**TRAIN_OPTIONS, **old_recipe}))
    # what a sweep of the constant-rate days recorded: the options given (none of
    # the recipe's), and trial configurations with a constant schedule and no scaling
    doc = json.loads((out / "results.json").read_text())
    doc["sweep"]["train_options"] = dict(TRAIN_OPTIONS)
    del doc["sweep"]["training"]
    (out / "results.json").write_text(json.dumps(doc))
    trials = sorted(out.glob("*/metrics.json"))
    for path in trials:
        m = json.loads(path.read_text())
        del m["config"]["lr_scaling"], m["config"]["lr_reference_steps"]
        path.write_text(json.dumps(m))
    before = {p: p.read_bytes() for p in trials}
    # today's defaults are another recipe: refused as a whole, naming the option
    with pytest.raises(ValueError, match=r"other options \(lr_scaling: 'none', now 'sqrt'\)"):
        run_sweep(tiny_sweep(tiny, out))
    # the old recipe, given explicitly, continues the folder and reuses every trial
    res = run_sweep(tiny_sweep(tiny, out, train_options={**TRAIN_OPTIONS, **old_recipe}))
    assert not res.failed and len(res.data["trials"]) == 4
    assert {p: p.read_bytes() for p in trials} == before


def _forget_option(out: Path, key: str) -> dict[Path, bytes]:
    """Make the sweep folder ``out`` look written before option ``key`` existed (its
    recorded options and every trial's configuration without it); returns each
    trial's ``metrics.json`` bytes by path."""
    doc = json.loads((out / "results.json").read_text())
    del doc["sweep"]["training"][key]
    (out / "results.json").write_text(json.dumps(doc))
    for path in out.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        del m["config"][key]
        path.write_text(json.dumps(m))
    return {p: p.read_bytes() for p in sorted(out.glob("*/metrics.json"))}


def test_a_sweep_folder_from_before_momentum_and_batches_of_two(tiny: Path, tmp_path: Path) -> None:
    """A folder whose recorded options predate ``momentum`` (and whose trials trained
    in batches of 8, the default then) is continued with ``--batch-size 8``, and the
    refusal without it names the flag that continues it."""
    train = {k: v for k, v in TRAIN_OPTIONS.items() if k != "batch_size"}
    out = tmp_path / "old"
    run_sweep(tiny_sweep(tiny, out, train_options={**train, "batch_size": 8}))
    before = _forget_option(out, "momentum")
    with pytest.raises(
        ValueError,
        match=r"other options \(batch_size: 8, now 2\); run it with the same "
        r"options \(--batch-size 8\)",
    ):
        run_sweep(tiny_sweep(tiny, out, train_options={**train, "batch_size": 2}))
    res = run_sweep(tiny_sweep(tiny, out, train_options={**train, "batch_size": 8}))
    assert not res.failed and len(res.data["trials"]) == 4
    assert {p: p.read_bytes() for p in before} == before


def test_a_bad_training_option_in_a_sweep_config_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "sweep.toml"
    toml.write_text('dataset = "bach_chorales"\nmomentum = "high"\n')
    argv = ["sweep", "--config", str(toml), "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"training options (of the flags and --config {toml})" in err
    assert "key 'momentum' must be a number" in err
    assert not (tmp_path / "s").exists()


def test_a_sweep_folder_from_before_the_parameter_average_is_continued(
    tiny: Path, tmp_path: Path
) -> None:
    """Records written before ``ema_decay`` existed read as no average: the folder
    continues and every finished trial is reused."""
    out = tmp_path / "old"
    run_sweep(tiny_sweep(tiny, out))
    before = _forget_option(out, "ema_decay")
    res = run_sweep(tiny_sweep(tiny, out))
    assert not res.failed and len(res.data["trials"]) == 4
    assert {p: p.read_bytes() for p in before} == before
