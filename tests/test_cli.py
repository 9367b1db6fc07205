"""Tests for the ``minigrad`` command: options, --config, --print-config, errors, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from npz_layout import write_npz_dataset

import models.train.loop as train_mod
from models.cli.main import build_parser, main
from models.cli.train import config_to_toml, resolve_train_config
from models.data import load_dataset
from models.train import ConsoleReporter, TrainConfig
from models.train.checkpoint import load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _write_tiny_npz(path: Path, n: int = 4, max_len: int = 12) -> Path:
    """A small dataset in the shared .npz layout, cut from the embedded chorales."""
    full = load_dataset("bach_chorales")
    splits = {
        name: [full.split(name).sequence(i)[:max_len] for i in range(n)]
        for name in ("train", "valid", "test")
    }
    return write_npz_dataset(path, splits)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="module")
def run_dir(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch run (hidden 4)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    argv = [
        "train",
        "--dataset",
        str(tiny),
        "--hidden",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    return out


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 1) -> str:
    """Run ``main(argv)``, expect exit ``code`` and return the one error line."""
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- help, config


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for piece in (
        "--hidden N",
        "(default: 46)",
        "(default: rmsprop)",
        "(default: 0.075)",
        "--no-progress",
        "--resume",
        "--config FILE.toml",
        "--print-config",
        "(default: float64)",
        "(default: bach_chorales)",
    ):
        assert piece in text, piece
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "train" in text and "evaluate" in text
    assert main(["evaluate", "--help"]) == 0
    assert "(default: test)" in capsys.readouterr().out


def test_python_m_models_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "models", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: minigrad" in proc.stdout
    assert "evaluate" in proc.stdout


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_print_config_toml_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "train",
                "--print-config",
                "--hidden",
                "12",
                "--lr",
                "1e-4",
                "--no-progress",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    data = tomllib.loads(text)
    assert data["hidden"] == 12 and data["lr"] == 1e-4 and data["progress"] is False
    assert data["out"] == str(tmp_path / "x")
    assert set(data) == set(TrainConfig().to_dict())
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--print-config", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == data


def test_print_config_keeps_the_out_template_and_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--print-config", "json", "--cell", "lstm", "--hidden", "36"]) == 0
    data = json.loads(capsys.readouterr().out)
    # the template, so that an edited config trains into the folder its own options name
    assert data["out"] == TrainConfig().out
    assert data["epochs"] == TrainConfig().epochs
    path = tmp_path / "c.toml"
    assert main(["train", "--print-config", "--hidden", "36"]) == 0
    path.write_text(capsys.readouterr().out.replace("hidden = 36", "hidden = 12"))
    config = resolve_train_config(build_parser().parse_args(["train", "--config", str(path)]))
    assert config.out_dir() == Path("runs/bach_chorales-gru-h12-s0")


def test_flags_override_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('hidden = 10\nbatch-size = 4\ncell = "tanh"\n')
    assert main(["train", "--config", str(path), "--hidden", "20", "--print-config", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["hidden"], data["batch_size"], data["cell"]) == (20, 4, "tanh")


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("hiden = 3\n", "unknown key 'hiden'"),
        ('hidden = "many"\n', "key 'hidden' must be an integer"),
        ('cell = "foo"\n', "option 'cell': unknown value 'foo'"),
        ("lr = -1.0\n", "option 'lr'"),
        ("[train]\nhidden = 3\n", "key 'train' is a table"),
        ("hidden = \n", "invalid TOML"),
    ],
)
def test_bad_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, pattern: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    line = _fails(["train", "--config", str(path)], capsys, 2)
    assert line.startswith("minigrad: error: --config ")
    assert str(path) in line and pattern in line


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(["train", "--config", str(tmp_path / "none.toml")], capsys, 2)
    assert "none.toml: no such file" in line


def test_unknown_cell_is_one_line_listing_the_cells(capsys: pytest.CaptureFixture[str]) -> None:
    # cells are registered at run time, so the check is not argparse's; still a
    # bad option value, so a usage error
    assert main(["train", "--cell", "foo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unknown value 'foo'" in err and "lstm" in err and "module:function" in err


def test_bad_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert "option 'hidden': must be >= 1" in _fails(["train", "--hidden", "0"], capsys, 2)
    assert "option 'lr'" in _fails(["train", "--lr", "0"], capsys, 2)
    assert "option 'out'" in _fails(["train", "--out", "runs/{nope}"], capsys, 2)
    # sizes are checked before anything is allocated
    line = _fails(["train", "--hidden", "10000000000"], capsys, 2)
    assert "option 'hidden': must be <= 8192" in line
    line = _fails(["train", "--hidden", "4000"], capsys, 2)
    assert "cell 'gru' with hidden 4000 and 1 layer(s): 49," in line
    assert "counted for an LSTM of the same size (65,788,088 parameters)" in line
    # the out template substitutes named fields only; nothing is evaluated
    for template in ("runs/{dataset.__class__}", "runs/{hidden:>99999999}", "runs/{0}", "r/{"):
        assert "option 'out'" in _fails(["train", "--out", template], capsys, 2)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("minigrad ")
    assert main(["train", "--hidden", "many"]) == 2
    capsys.readouterr()


# --------------------------------------------------------------------------- data errors


def test_missing_dataset_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(
        ["train", "--dataset", str(tmp_path / "none.npz"), "--out", str(tmp_path / "o")], capsys
    )
    assert "none.npz" in line
    assert not (tmp_path / "o").exists()


def test_truncated_dataset(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "cut.npz"
    bad.write_bytes(tiny.read_bytes()[: tiny.stat().st_size // 2])
    line = _fails(["train", "--dataset", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert "cut.npz" in line


# --------------------------------------------------------------------------- evaluate


def test_evaluate_reproduces_logged_numbers(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = json.loads((run_dir / "metrics.json").read_text())
    assert main(["evaluate", "--checkpoint", str(run_dir / "model.npz"), "--batch-size", "1"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert {"split", "nll", "frame_accuracy", "n_steps"} <= set(ev)
    assert ev["nll"] == pytest.approx(m["test_nll"], rel=1e-12)
    # by default the run's own eval batch size: the very number the run reported
    assert main(["evaluate", "--checkpoint", str(run_dir / "model.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["nll"] == m["test_nll"]
    assert ev["n_steps"] == m["test_steps"]
    assert main(["evaluate", "--checkpoint", str(run_dir / "model.npz"), "--split", "train"]) == 0
    assert json.loads(capsys.readouterr().out)["nll"] == pytest.approx(m["train_nll"], rel=1e-12)


def test_evaluate_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(["evaluate", "--checkpoint", str(tmp_path / "none.npz")], capsys)
    assert "none.npz" in line and "no such" in line
    cut = tmp_path / "cut.npz"
    data = (run_dir / "model.npz").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert "cut.npz" in _fails(["evaluate", "--checkpoint", str(cut)], capsys)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    assert "text.npz" in _fails(["evaluate", "--checkpoint", str(text)], capsys)
    assert main(["evaluate"]) == 2
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run_dir / "model.npz"), "--split", "dev"]) == 2
    capsys.readouterr()


def test_mismatched_checkpoint_names_key_and_shapes(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = load_checkpoint(run_dir / "model.npz")
    # the stored configuration says hidden 6, the parameters are of hidden 4
    bad = tmp_path / "other.npz"
    save_checkpoint(
        bad,
        params=ck.params,
        optimizer={},
        epoch=ck.epoch,
        rng_state=ck.rng_state,
        config={**ck.config, "hidden": 6},
        extra=ck.extra,
    )
    line = _fails(["evaluate", "--checkpoint", str(bad)], capsys)
    assert "other.npz" in line and "'Wz'" in line
    assert "(88, 4)" in line and "(88, 6)" in line
    # an LSTM configuration on GRU parameters
    save_checkpoint(
        bad,
        params=ck.params,
        optimizer={},
        epoch=ck.epoch,
        rng_state=ck.rng_state,
        config={**ck.config, "cell": "lstm"},
        extra=ck.extra,
    )
    line = _fails(["evaluate", "--checkpoint", str(bad)], capsys)
    assert "missing" in line and "'Wi'" in line


def test_resume_with_other_model_is_refused(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a usage error (exit 2), as any flag the command cannot take
    line = _fails(["train", "--resume", "--out", str(run_dir), "--hidden", "8"], capsys, code=2)
    assert "option 'hidden' is 8" in line and "trained with 4" in line
    line = _fails(["train", "--resume", "--out", str(run_dir), "--cell", "lstm"], capsys, code=2)
    assert "option 'cell'" in line


def test_resume_names_the_dataset_as_it_was_given(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative --dataset on --resume is the stored absolute path it names."""
    monkeypatch.chdir(tiny.parent)
    argv = ["train", "--dataset", tiny.name, "--hidden", "3", "--no-progress"]
    out = str(tmp_path / "rel")
    assert main([*argv, "--epochs", "1", "--lr-schedule", "constant", "--out", out]) == 0
    resumed = [*argv, "--epochs", "2", "--lr-schedule", "constant", "--resume", "--out", out]
    assert main(resumed) == 0


def test_an_old_checkpoint_resumed_with_an_average_is_a_usage_error(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint from before --ema-decay trained without an average: asking for
    one is an option the run cannot change, not a broken file."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    ck = load_checkpoint(old / "checkpoint.npz")
    config = {k: v for k, v in ck.config.items() if k != "ema_decay"}
    save_checkpoint(
        old / "checkpoint.npz", params=ck.params, optimizer=ck.optimizer, epoch=ck.epoch,
        rng_state=ck.rng_state, config=config, extra=ck.extra, best_params=ck.best_params,
    )  # fmt: skip
    line = _fails(["train", "--resume", "--out", str(old), "--ema-decay", "0.9"], capsys, code=2)
    assert "option 'ema_decay' is 0.9" in line and "trained with 0.0" in line


def test_resume_takes_options_from_checkpoint(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            ["train", "--resume", "--out", str(run_dir), "--epochs", "3", "--print-config", "json"]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["hidden"] == 4 and data["batch_size"] == 2 and data["epochs"] == 3
    assert data["resume"] is True


def test_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _fails(["train", "--resume", "--out", str(tmp_path / "none")], capsys)
    assert "checkpoint.npz" in line


def test_existing_run_is_not_overwritten(
    run_dir: Path, tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _fails(["train", "--dataset", str(tiny), "--out", str(run_dir)], capsys)
    assert "already holds a run" in line and "--resume" in line


# --------------------------------------------------------------------------- NaN, Ctrl-C


def _poison(monkeypatch: pytest.MonkeyPatch, at_call: int, action: str) -> None:
    real = train_mod.add_weight_noise
    calls = {"n": 0}

    def fake(params: Any, std: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
        calls["n"] += 1
        noisy = real(params, std, rng)
        if calls["n"] == at_call:
            if action == "interrupt":
                raise KeyboardInterrupt
            noisy["Wz"][:] = np.nan
        return noisy

    monkeypatch.setattr(train_mod, "add_weight_noise", fake)


def _train_argv(tiny: Path, out: Path, epochs: int = 3) -> list[str]:
    return [
        "train",
        "--dataset",
        str(tiny),
        "--hidden",
        "3",
        "--epochs",
        str(epochs),
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--lr-schedule",  # a constant rate: these runs resume to more epochs
        "constant",
    ]


def test_nan_exits_1_with_one_line(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # 4 training sequences in batches of 2: call 3 is epoch 2, batch 1
    _poison(monkeypatch, 3, "nan")
    line = _fails(_train_argv(tiny, tmp_path / "r"), capsys)
    assert line.startswith("minigrad: error: epoch 2, batch 1/2:")
    assert "first non-finite value at node '" in line  # the node depends on the engine's passes
    assert "'Wz'" in line
    assert load_checkpoint(tmp_path / "r" / "checkpoint.npz").epoch == 1
    monkeypatch.undo()
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "r" / "checkpoint.npz"),
                "--dataset",
                str(tiny),
            ]
        )
        == 0
    )
    assert np.isfinite(json.loads(capsys.readouterr().out)["nll"])


def test_huge_learning_rate_is_reported(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        *_train_argv(tiny, tmp_path / "r", epochs=4),
        "--lr",
        "1e305",
        "--clip",
        "0",
        "--weight-noise",
        "0",
        "--lr-scaling",  # the rate itself, not scaled down to the tiny batches
        "none",
    ]
    line = _fails(argv, capsys)
    assert line.startswith("minigrad: error: epoch 1")
    assert "non-finite" in line or "overflowed" in line


def test_an_overflowing_epoch_sum_is_reported_as_such(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # each batch's NLL stays finite under the cosine's first rates; their sum does not
    argv = [*_train_argv(tiny, tmp_path / "r", epochs=4), "--lr", "1e305", "--clip", "0"]
    argv += ["--weight-noise", "0", "--lr-scaling", "none"]
    argv[argv.index("constant")] = "cosine"
    line = _fails(argv, capsys)
    assert line.startswith("minigrad: error: epoch ")
    assert "overflowed" in line or "non-finite" in line
    assert "metadata" not in line


def test_ctrl_c_exits_130_and_resumes(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _poison(monkeypatch, 4, "interrupt")  # epoch 2, batch 2
    assert main(_train_argv(tiny, tmp_path / "r")) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "r" / "checkpoint.npz").epoch == 1
    monkeypatch.undo()
    assert main(["train", "--resume", "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert main(_train_argv(tiny, tmp_path / "s")) == 0
    straight = json.loads(capsys.readouterr().out)
    for key in ("best_epoch", "train_nll", "valid_nll", "test_nll", "test_frame_accuracy"):
        assert resumed[key] == straight[key]


def test_parser_has_one_function_per_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"train", "evaluate"} <= set(sub.choices)  # type: ignore[arg-type]


def test_config_to_toml_is_valid_toml() -> None:
    cfg = TrainConfig(out='runs/with "quotes" \\ and ü')
    assert tomllib.loads(config_to_toml(cfg)) == cfg.to_dict()


def test_console_reporter_live_line_and_plain_lines() -> None:
    live = io.StringIO()
    rep = ConsoleReporter(live, live=True)
    rep.batch(1, 29, 29, 12.5, 1500.0, 75.0)
    rep.epoch({"epoch": 1, "train_nll": 12.5, "valid_nll": 11.0, "seconds": 0.4}, 1, 200)
    text = live.getvalue()
    assert "epoch 1  batch 29/29  loss 12.500  1,500 steps/s  left <= 1:15" in text
    assert text.endswith("epoch 1/200  train 12.5000  valid 11.0000 *  0.4s\n")
    plain = io.StringIO()  # not a terminal: no live line
    rep = ConsoleReporter(plain)
    rep.batch(1, 29, 29, 12.5, 1500.0, 75.0)
    rep.epoch({"epoch": 2, "train_nll": 9.0, "valid_nll": 10.0, "seconds": 0.4}, 1, 200)
    assert plain.getvalue() == "epoch 2/200  train 9.0000  valid 10.0000  0.4s\n"


def test_dataset_path_is_stored_absolute(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tiny.parent)
    assert (
        main(["train", "--dataset", tiny.name, "--out", str(tmp_path), "--print-config", "json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["dataset"] == str(tiny.resolve())


def test_a_bad_option_value_says_where_to_read_more(capsys: pytest.CaptureFixture[str]) -> None:
    # values checked by the command, not by argparse, end like argparse's own errors
    line = _fails(["explain", "--steps", "201"], capsys, 2)
    assert line.endswith("; see 'minigrad explain --help'"), line
    line = _fails(["train", "--hidden", "0"], capsys, 2)
    assert line.endswith("; see 'minigrad train --help'"), line
