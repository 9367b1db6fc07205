"""Training-recipe options: learning-rate schedules, update budgets, weight decay,
gradient-norm logging, and dropout and zoneout in the music model."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_train import _assert_same_run, quiet, tiny_config, write_tiny_npz

from models.cli.main import main
from models.data import batches, load_dataset
from models.data.batches import batch_groups
from models.generate.sample import sample
from models.nets.sequence import SequenceModel
from models.train import TrainConfig, train
from models.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.train.loop import TRAIN_PADDED_STEPS, check_resume_config, load_model
from models.train.optim import decay_weights, make_optimizer
from models.train.schedule import LRSchedule, scaled_lr


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


# --------------------------------------------------------------------------- schedules


def test_constant_schedule_is_the_rate_itself() -> None:
    s = LRSchedule(3e-3)
    assert all(s.rate(u, 1 + u // 10) == 3e-3 for u in range(50))


def test_warmup_is_linear_then_hands_over() -> None:
    s = LRSchedule(1.0, warmup_updates=4)
    assert [s.rate(u, 1) for u in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_goes_from_lr_to_lr_min_over_the_budget() -> None:
    s = LRSchedule(1.0, "cosine", total_updates=100, lr_min=0.1)
    assert s.rate(0, 1) == 1.0
    assert s.rate(50, 1) == pytest.approx(0.55)
    assert s.rate(100, 1) == pytest.approx(0.1)
    assert s.rate(1000, 9) == pytest.approx(0.1)
    rates = [s.rate(u, 1) for u in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(rates))


def test_step_decay_every_few_epochs_down_to_the_floor() -> None:
    s = LRSchedule(1.0, "step", lr_decay=0.5, step_epochs=2, lr_min=0.2)
    assert [s.rate(0, e) for e in range(1, 9)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2]


def test_plateau_reduces_after_patience_epochs_without_improvement() -> None:
    s = LRSchedule(1.0, "plateau", lr_decay=0.1, plateau_patience=2)
    best = 0
    reduced = []
    for epoch, improved in enumerate([True, True, False, False, False, False, True, False], 1):
        best = epoch if improved else best
        reduced.append(s.end_epoch(epoch, best))
    # best epoch 2; reductions at 4 (2 epochs after it) and 6 (2 after the first reduction)
    assert reduced == [False, False, False, True, False, True, False, False]
    assert s.rate(0, 9) == pytest.approx(0.01)
    again = LRSchedule(1.0, "plateau", lr_decay=0.1, plateau_patience=2)
    again.load_state_dict(dict(s.state_dict()), where="test")
    assert again.rate(0, 9) == s.rate(0, 9) and again.last_reduction == 6


def test_bad_schedule_state_is_named() -> None:
    with pytest.raises(ValueError, match=r"ck\.npz: bad learning-rate schedule state"):
        LRSchedule(1.0).load_state_dict({"scale": -1.0, "last_reduction": 0}, where="ck.npz")


def test_the_rate_scales_with_the_steps_per_batch() -> None:
    assert scaled_lr(3e-3, "none", 2048, 512) == 3e-3
    assert scaled_lr(3e-3, "sqrt", 2048, 512) == pytest.approx(6e-3)
    assert scaled_lr(3e-3, "linear", 2048, 512) == pytest.approx(1.2e-2)
    assert scaled_lr(3e-3, "sqrt", 128, 512) == pytest.approx(1.5e-3)
    with pytest.raises(ValueError, match="unknown learning-rate scaling 'cube'"):
        scaled_lr(3e-3, "cube", 2048, 512)
    with pytest.raises(ValueError, match="positive sizes"):
        scaled_lr(3e-3, "sqrt", 0.0, 512)


@pytest.mark.parametrize("scaling", ["sqrt", "linear"])
def test_a_run_trains_at_its_scaled_rate(tiny_npz: Path, tmp_path: Path, scaling: str) -> None:
    cfg = tiny_config(tiny_npz, tmp_path, epochs=1, lr_scaling=scaling, lr_reference_steps=7)
    split = load_dataset(str(tiny_npz)).train
    mean_steps = split.n_steps / len(
        batch_groups(split, cfg.batch_size, max_padded_steps=TRAIN_PADDED_STEPS)
    )
    power = 0.5 if scaling == "sqrt" else 1.0
    (record,) = train(cfg, reporter=quiet()).metrics["epochs"]
    assert record["lr"] == pytest.approx(cfg.lr * (mean_steps / 7) ** power, rel=1e-12)
    assert record["lr"] != pytest.approx(cfg.lr)


def test_a_checkpoint_from_before_lr_scaling_trained_unscaled(tmp_path: Path) -> None:
    saved = TrainConfig().to_dict()
    del saved["lr_scaling"]
    check_resume_config(replace(TrainConfig(), lr_scaling="none"), saved, tmp_path)
    with pytest.raises(ValueError, match=r"option 'lr_scaling' is 'sqrt'.*'none'"):
        check_resume_config(replace(TrainConfig(), lr_scaling="sqrt"), saved, tmp_path)


def _forget_scaling(checkpoint: Path) -> None:
    """Rewrite a checkpoint as one written before the rate's scaling existed."""
    ck = load_checkpoint(checkpoint)
    old = {k: v for k, v in ck.config.items() if k not in ("lr_scaling", "lr_reference_steps")}
    save_checkpoint(
        checkpoint,
        params=ck.params,
        optimizer=ck.optimizer,
        epoch=ck.epoch,
        rng_state=ck.rng_state,
        config=old,
        extra=ck.extra,
        best_params=ck.best_params,
        cell=ck.cell,
    )


def test_a_plain_resume_of_a_checkpoint_from_before_lr_scaling(
    tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--dataset", str(tiny_npz), "--hidden", "3", "--batch-size", "2"]
    argv += ["--lr-schedule", "constant", "--lr-scaling", "none", "--no-progress"]
    assert main([*argv, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main([*argv, "--epochs", "1", "--out", str(tmp_path / "old")]) == 0
    _forget_scaling(tmp_path / "old" / "checkpoint.npz")
    # the command a Ctrl-C prints, with no recipe option: the run trained unscaled
    resume = ["train", "--resume", "--out", str(tmp_path / "old"), "--epochs", "2"]
    capsys.readouterr()
    assert main([*resume, "--print-config", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lr_scaling"] == "none" and shown["lr_schedule"] == "constant"
    assert main([*resume, "--no-progress"]) == 0
    _assert_same_run(tmp_path / "straight", tmp_path / "old")


def test_a_scaled_rate_that_is_not_a_positive_number_is_refused(
    tiny_npz: Path, tmp_path: Path
) -> None:
    for lr, scaling, ref in ((1e308, "linear", 1), (5e-324, "linear", 1_000_000_000)):
        cfg = tiny_config(tiny_npz, tmp_path / str(ref), lr=lr, lr_scaling=scaling)
        with pytest.raises(ValueError, match=r"options 'lr' and 'lr_scaling'.*positive finite"):
            train(replace(cfg, lr_reference_steps=ref), reporter=quiet())
        assert not (tmp_path / str(ref) / "checkpoint.npz").exists()


def test_decoupled_weight_decay_leaves_vectors_alone() -> None:
    params = {"W": np.ones((2, 3)), "b": np.ones(3), "W32": np.ones((2, 2), np.float32)}
    decay_weights(params, 0.9)
    assert np.all(params["W"] == 0.9) and np.all(params["b"] == 1.0)
    assert params["W32"].dtype == np.float32 and np.allclose(params["W32"], 0.9)


# --------------------------------------------------------------------------- training

RECIPES: dict[str, dict[str, Any]] = {
    "plateau+warmup+decay": {
        "lr_schedule": "plateau",
        "lr_plateau_patience": 1,
        "warmup_updates": 4,
        "weight_decay": 0.5,
    },
    "cosine": {"lr_schedule": "cosine", "max_updates": 12, "lr_min": 1e-3},
    "step+dropout": {
        "lr_schedule": "step",
        "lr_step_epochs": 1,
        "dropout": 0.3,
        "recurrent_dropout": 0.2,
        "zoneout": 0.1,
    },
    "lstm+dropout": {"cell": "lstm", "dropout": 0.2, "recurrent_dropout": 0.2, "zoneout": 0.2},
    "average": {"ema_decay": 0.9, "weight_decay": 0.1},
}


@pytest.mark.parametrize("recipe", RECIPES.values(), ids=list(RECIPES))
def test_two_plus_two_epochs_equal_four_bit_for_bit(
    tiny_npz: Path, tmp_path: Path, recipe: dict[str, Any]
) -> None:
    train(tiny_config(tiny_npz, tmp_path / "straight", epochs=4, **recipe), reporter=quiet())
    part = tiny_config(tiny_npz, tmp_path / "resumed", epochs=2, **recipe)
    train(part, reporter=quiet())
    train(replace(part, epochs=4, resume=True), reporter=quiet())
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed")
    history = json.loads((tmp_path / "straight" / "metrics.json").read_text())["epochs"]
    assert [r["updates"] for r in history] == [3, 6, 9, 12]


def test_history_logs_rate_and_gradient_norm(tiny_npz: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_npz, tmp_path, epochs=3, lr_schedule="step", lr_step_epochs=1, clip=0.5)
    m = train(cfg, reporter=quiet()).metrics
    h = m["epochs"]
    assert [r["lr"] for r in h] == pytest.approx([1e-2, 5e-3, 2.5e-3])
    for r in h:
        assert 0 < r["grad_norm"] <= r["grad_norm_max"]
    # norms are logged before clipping: the first epochs' gradients exceed the clip
    assert h[0]["grad_norm_max"] > 0.5
    svg = (tmp_path / "curves.svg").read_text()
    assert "learning rate" in svg and "mean, before clipping at 0.5" in svg


def test_the_plateau_schedule_lowers_the_rate_when_validation_stalls(
    tiny_npz: Path, tmp_path: Path
) -> None:
    # a rate this large makes the validation NLL stop improving early
    cfg = tiny_config(
        tiny_npz, tmp_path, epochs=8, lr=0.3, lr_schedule="plateau", lr_plateau_patience=1
    )
    m = train(cfg, reporter=quiet()).metrics
    rates = [r["lr"] for r in m["epochs"]]
    assert rates[0] == 0.3 and min(rates) < 0.3
    valid = [r["valid_nll"] for r in m["epochs"]]
    for i in range(1, len(rates)):  # a reduction only follows an epoch that did not improve
        if rates[i] < rates[i - 1]:
            assert i >= 2 and valid[i - 1] >= min(valid[: i - 1])


def test_update_budget_stops_in_the_middle_of_an_epoch(tiny_npz: Path, tmp_path: Path) -> None:
    m = train(tiny_config(tiny_npz, tmp_path, epochs=10, max_updates=4), reporter=quiet()).metrics
    assert m["stop_reason"] == "max_updates"
    assert [r["updates"] for r in m["epochs"]] == [3, 4]
    assert math.isfinite(m["test_nll"])


def test_cosine_refuses_a_resume_with_other_epochs(tiny_npz: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_npz, tmp_path, epochs=2, lr_schedule="cosine")
    train(cfg, reporter=quiet())
    with pytest.raises(ValueError, match="cosine schedule decays over the epochs"):
        train(replace(cfg, epochs=4, resume=True), reporter=quiet())


def test_weight_decay_shrinks_the_weights(tiny_npz: Path, tmp_path: Path) -> None:
    plain = train(tiny_config(tiny_npz, tmp_path / "a", epochs=2), reporter=quiet())
    decayed = train(
        tiny_config(tiny_npz, tmp_path / "b", epochs=2, weight_decay=5.0), reporter=quiet()
    )
    norm = {k: float(np.linalg.norm(decayed.model.params[k])) for k in decayed.model.params}
    for k, v in plain.model.params.items():
        if v.ndim == 2:
            assert norm[k] < float(np.linalg.norm(v))


def test_momentum_reaches_the_optimiser(tiny_npz: Path, tmp_path: Path) -> None:
    """A run with momentum keeps the velocity in its checkpoint and trains otherwise
    than one without; two halves with a resume between them equal the whole run."""
    plain = train(tiny_config(tiny_npz, tmp_path / "a", epochs=2), reporter=quiet())
    whole = tiny_config(tiny_npz, tmp_path / "b", epochs=2, momentum=0.9)
    heavy = train(whole, reporter=quiet())
    slots = set(load_checkpoint(tmp_path / "b" / "checkpoint.npz").optimizer)
    assert slots >= {f"d/{k}" for k in heavy.model.params}
    assert not any(
        k.startswith("d/") for k in load_checkpoint(tmp_path / "a" / "checkpoint.npz").optimizer
    )
    assert heavy.metrics["valid_nll"] != plain.metrics["valid_nll"]
    half = replace(whole, out=str(tmp_path / "c"), epochs=1)
    train(half, reporter=quiet())
    train(replace(half, epochs=2, resume=True), reporter=quiet())
    _assert_same_run(tmp_path / "b", tmp_path / "c")


def test_the_start_line_says_which_momentum(
    tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--dataset", str(tiny_npz), "--hidden", "3", "--epochs", "1", "--no-progress"]
    assert main([*argv, "--optimizer", "sgd", "--lr", "0.1", "--out", str(tmp_path / "a")]) == 0
    assert "plain SGD (no momentum; --momentum 0.9 for the heavy ball)" in capsys.readouterr().err
    assert main([*argv, "--momentum", "0.9999999999", "--out", str(tmp_path / "b")]) == 0
    assert "momentum 0.9999999999" in capsys.readouterr().err


def test_make_optimizer_checks_the_momentum() -> None:
    assert make_optimizer("sgd", 0.1).momentum == 0.9  # the class's own default
    assert make_optimizer("sgd", 0.1, momentum=0.0).slot_names() == ()
    assert make_optimizer("rmsprop", 0.1, momentum=0.5).slot_names() == ("v", "d")
    for bad in ("0.5", True, np.array([0.5, 0.1])):
        with pytest.raises(TypeError, match="momentum: expected a number"):
            make_optimizer("sgd", 0.1, momentum=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Adam's first-moment average"):
        make_optimizer("adam", 0.1, momentum=0.9)
    with pytest.raises(ValueError, match="momentum: must be in"):
        make_optimizer("rmsprop", 0.1, momentum=10**400)
    assert make_optimizer("sgd", 0.1, momentum=np.float32(0.5)).momentum == 0.5


def test_momentum_is_refused_with_adam() -> None:
    with pytest.raises(ValueError, match="option 'momentum': must be 0 with optimizer 'adam'"):
        replace(TrainConfig(), optimizer="adam", momentum=0.9).validate()
    replace(TrainConfig(), optimizer="adam", momentum=0.0).validate()


OPTIONS_OF_260A94F = {
    "allow_data_change", "batch_size", "blas_threads", "cell", "clip", "dataset", "dropout",
    "dtype", "epochs", "eval_batch_size", "hidden", "init", "layers", "lr", "lr_decay", "lr_min",
    "lr_plateau_patience", "lr_reference_steps", "lr_scaling", "lr_schedule", "lr_step_epochs",
    "max_train_seconds", "max_updates", "momentum", "optimizer", "out", "overwrite", "patience",
    "progress", "recurrent_dropout", "resume", "seed", "warmup_updates", "weight_decay",
    "weight_noise", "zoneout",
}  # fmt: skip
"""The options of commit 260a94f, whose sweep folders record every option."""


def test_every_option_added_since_says_what_its_absence_meant() -> None:
    from dataclasses import fields

    from models.train.config import OPTIONS_BEFORE

    added = {f.name for f in fields(TrainConfig)} - OPTIONS_OF_260A94F
    assert added <= set(OPTIONS_BEFORE), f"add {sorted(added - set(OPTIONS_BEFORE))}"


def test_a_stored_run_from_before_momentum_keeps_its_optimiser(tmp_path: Path) -> None:
    for optimizer, momentum in (("sgd", 0.9), ("rmsprop", 0.0), ("adam", 0.0)):
        saved = replace(TrainConfig(), optimizer=optimizer).to_dict()
        del saved["momentum"]
        check_resume_config(
            replace(TrainConfig(), optimizer=optimizer, momentum=momentum), saved, tmp_path
        )
    saved = replace(TrainConfig(), optimizer="sgd").to_dict()
    del saved["momentum"]
    with pytest.raises(ValueError, match="'momentum'"):
        check_resume_config(replace(TrainConfig(), optimizer="sgd"), saved, tmp_path)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("dropout", 1.0, r"option 'dropout': must be a number in \[0, 1\)"),
        ("lr_schedule", "linear", "option 'lr_schedule': unknown value 'linear'"),
        ("lr_decay", 1.5, r"option 'lr_decay': must be a number in \(0, 1\)"),
        ("max_updates", -1, "option 'max_updates': must be >= 0"),
        ("lr_min", 1.0, "option 'lr_min': must not exceed lr"),
        ("lr_scaling", "cube", "option 'lr_scaling': unknown value 'cube'; valid: none, sqrt"),
        ("lr_reference_steps", 0, "option 'lr_reference_steps': must be >= 1"),
        ("lr_reference_steps", 10**400, "option 'lr_reference_steps': must be <= 1000000000"),
        ("momentum", 1.0, r"option 'momentum': must be a number in \[0, 1\)"),
        ("momentum", -0.5, r"option 'momentum': must be a number in \[0, 1\)"),
        ("momentum", math.nan, r"option 'momentum': must be a number in \[0, 1\)"),
        ("ema_decay", 1.0, r"option 'ema_decay': must be a number in \[0, 1\)"),
        ("ema_decay", -1e-9, r"option 'ema_decay': must be a number in \[0, 1\)"),
        ("ema_decay", math.inf, r"option 'ema_decay': must be a number in \[0, 1\)"),
        ("momentum", 10**400, "option 'momentum': expected a number, got an integer of 401 digits"),
        ("lr", -(10**400), "option 'lr': expected a number, got an integer of 401 digits"),
        ("epochs", 10**400, "option 'epochs': must be at most 9,223,372,036,854,775,807 in size"),
    ],
)
def test_bad_recipe_options_are_named(option: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(TrainConfig(), **{option: value}).validate()


def test_the_parameter_average_is_what_is_validated_and_kept(
    tiny_npz: Path, tmp_path: Path
) -> None:
    plain = train(tiny_config(tiny_npz, tmp_path / "plain", epochs=3), reporter=quiet()).metrics
    # a decay of 1e-12 is an average of the last step alone: the plain run's numbers
    near = tiny_config(tiny_npz, tmp_path / "near", epochs=3, ema_decay=1e-12)
    m = train(near, reporter=quiet()).metrics
    assert [r["valid_nll"] for r in m["epochs"]] == pytest.approx(
        [r["valid_nll"] for r in plain["epochs"]], rel=1e-9
    )
    averaged = tiny_config(tiny_npz, tmp_path / "avg", epochs=3, ema_decay=0.9)
    result = train(averaged, reporter=quiet())
    valid = [r["valid_nll"] for r in result.metrics["epochs"]]
    assert valid != pytest.approx([r["valid_nll"] for r in plain["epochs"]], rel=1e-6)
    # model.npz holds the best epoch's average, and scores the validation NLL it was chosen by
    model, _ = load_model(tmp_path / "avg" / "model.npz")
    ds = load_dataset(str(tiny_npz))
    best = result.metrics["best_epoch"]
    assert model.evaluate(ds.valid, 16)["nll"] == pytest.approx(valid[best - 1], rel=1e-12)
    trained = load_checkpoint(tmp_path / "avg" / "checkpoint.npz").params
    assert any(not np.array_equal(trained[k], v) for k, v in model.params.items())


def test_a_checkpoint_whose_optimizer_disagrees_with_its_run_is_refused(
    tiny_npz: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_npz, tmp_path / "run", epochs=1, ema_decay=0.9, optimizer="sgd")
    cfg = replace(cfg, momentum=0.0)
    train(cfg, reporter=quiet())
    path = tmp_path / "run" / "checkpoint.npz"
    ck = load_checkpoint(path)

    def write(optimizer: dict[str, Any]) -> None:
        save_checkpoint(
            path, params=ck.params, optimizer=optimizer, epoch=ck.epoch,
            rng_state=ck.rng_state, config=ck.config, extra=ck.extra,
            best_params=ck.best_params, cell=ck.cell,
        )  # fmt: skip

    resume = replace(cfg, epochs=2, resume=True)
    write({**ck.optimizer, "t": np.array(1)})
    with pytest.raises(CheckpointError, match=r"has taken 1 step\(s\), but the run made 3"):
        train(resume, reporter=quiet())
    write({"t": ck.optimizer["t"]})  # the average's arrays removed
    with pytest.raises(CheckpointError, match=r"checkpoint.npz: optimizer state: .* none of its"):
        train(resume, reporter=quiet())
    first = sorted(k for k in ck.optimizer if k != "t")[0]
    write({k: v for k, v in ck.optimizer.items() if k != first})
    with pytest.raises(CheckpointError, match=r"checkpoint.npz: optimizer state: .*no entry for parameter"):
        train(resume, reporter=quiet())


def test_the_start_line_names_the_average(
    tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--dataset", str(tiny_npz), "--hidden", "3", "--epochs", "1", "--no-progress"]
    assert main([*argv, "--ema-decay", "0.999", "--out", str(tmp_path / "a")]) == 0
    assert "validating a moving average of the parameters (decay 0.999)" in (
        capsys.readouterr().err
    )


def test_recipe_options_on_the_command_line_and_in_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = tmp_path / "recipe.toml"
    toml.write_text('lr_schedule = "cosine"\nwarmup_updates = 10\nzoneout = 0.1\n')
    argv = ["train", "--config", str(toml), "--dropout", "0.25", "--max-updates", "500"]
    assert main([*argv, "--print-config", "json"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["lr_schedule"] == "cosine" and cfg["warmup_updates"] == 10
    assert cfg["zoneout"] == 0.1 and cfg["dropout"] == 0.25 and cfg["max_updates"] == 500
    assert cfg["weight_decay"] == 0.0 and cfg["recurrent_dropout"] == 0.0


# --------------------------------------------------------------------------- dropout in the model


def _batch() -> Any:
    split = load_dataset("bach_chorales").valid
    return next(iter(batches(split, 4, dtype=np.float64)))


def test_evaluation_and_sampling_have_no_dropout() -> None:
    plain = SequenceModel(hidden_size=8, seed=0)
    dropped = SequenceModel(hidden_size=8, seed=0, dropout=0.5, recurrent_dropout=0.5)
    assert dropped.params.keys() == plain.params.keys()
    dropped.load_state_dict(plain.params)
    split = load_dataset("bach_chorales").valid
    assert dropped.evaluate(split, 16) == plain.evaluate(split, 16)
    b = _batch()
    np.testing.assert_array_equal(dropped.logits(b), plain.logits(b))
    np.testing.assert_array_equal(
        sample(dropped, steps=20, seed=3), sample(plain, steps=20, seed=3)
    )


def test_training_masks_follow_the_generator() -> None:
    model = SequenceModel(hidden_size=8, seed=0, dropout=0.3, recurrent_dropout=0.3, zoneout=0.2)
    b = _batch()
    a1, g1 = model.loss_and_grads(b, noise_rng=np.random.default_rng(5))
    a2, g2 = model.loss_and_grads(b, noise_rng=np.random.default_rng(5))
    a3, _ = model.loss_and_grads(b, noise_rng=np.random.default_rng(6))
    assert a1 == a2 and a1 != a3
    for k in g1:
        np.testing.assert_array_equal(g1[k], g2[k])
    clean, _ = model.loss_and_grads(b)
    assert clean not in (a1, a3)
    assert model.evaluate(load_dataset("bach_chorales").valid, 16) == model.evaluate(
        load_dataset("bach_chorales").valid, 16
    )


def test_every_cell_gets_dropout_and_zoneout_through_the_stack() -> None:
    for cell in ("gru", "gru_reset_after", "lstm", "tanh", "mgu"):
        m = SequenceModel(
            cell, hidden_size=4, layers=2, dropout=0.1, recurrent_dropout=0.1, zoneout=0.1
        )
        noise = {n for n, s in m.cell.inputs.items() if s.noise is not None}
        assert {"l0.in.drop.mask", "l1.in.drop.mask", "out.drop.mask"} <= noise, cell
        assert {"l0.h.rdrop.mask", "l1.h.rdrop.mask", "l0.h.zoneout.mask"} <= noise, cell
        assert ("l0.c.rdrop.mask" in noise) is False
        plain = SequenceModel(cell, hidden_size=4, layers=2)
        assert m.num_params == plain.num_params


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_music_cell_with_every_regulariser_passes_gradcheck(cell: str) -> None:
    import minigrad as mg

    m = SequenceModel(
        cell, hidden_size=3, layers=2, dropout=0.3, recurrent_dropout=0.3, zoneout=0.3
    )
    T, B = 3, 2
    rng = np.random.default_rng(0)
    inputs = {
        "x": (rng.random((T, B, 88)) < 0.1).astype(np.float64),
        "t": (rng.random((T, B, 88)) < 0.1).astype(np.float64),
        **{k: np.array(v) for k, v in m.noise(T, B, np.random.default_rng(1)).items()},
    }
    assert any(np.any(v == 0) for k, v in inputs.items() if k.endswith("drop.mask"))
    # gradcheck raises GradcheckError on a wrong gradient; the worst relative errors it
    # reports on this loss are 2e-6 to 3e-6 without regularisers and up to 2e-4 with them
    result = mg.gradcheck(m.cell, m.params, inputs)
    assert result.max_rel_error < 1e-3 and result.checks > 0
