"""Tests for models.nets.sequence (the music model and its metric) and models.train (the loop,
checkpoints, resume, non-finite values, interruption, output files)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from npz_layout import write_npz_dataset
from threadpoolctl import threadpool_limits

import models.train.loop as train_mod
from minigrad.errors import NonFiniteError
from minigrad.threads import blas_thread_counts
from models.cli.main import main
from models.data import Batch, Split, batches, load_dataset, load_npz
from models.nets.sequence import SequenceModel, frame_counts, pad_batch
from models.train import Reporter, TrainConfig, TrainingInterrupted, load_model, train
from models.train.checkpoint import load_checkpoint, save_checkpoint

# --------------------------------------------------------------------------- helpers


def write_tiny_npz(
    path: Path, n_train: int = 6, n_valid: int = 3, n_test: int = 3, max_len: int = 20
) -> Path:
    """A small dataset in the shared .npz layout, cut from the embedded chorales."""
    full = load_dataset("bach_chorales")
    splits = {
        name: [full.split(name).sequence(i)[: max_len - (i % 4)] for i in range(n)]
        for name, n in (("train", n_train), ("valid", n_valid), ("test", n_test))
    }
    return write_npz_dataset(path, splits)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


def tiny_config(data: Path, out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "dataset": str(data),
        "hidden": 5,
        "epochs": 2,
        "batch_size": 2,
        "lr": 1e-2,
        "patience": 0,
        "out": str(out),
        "eval_batch_size": 2,
        # the recipe before the rate followed the data set: these tests check rates,
        # resumes to more epochs and numbers that do not depend on the default recipe
        "lr_schedule": "constant",
        "lr_scaling": "none",
    }
    base.update(kw)
    return TrainConfig(**base)


def quiet() -> Reporter:
    return Reporter()


def _sig(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def numpy_nll(model: SequenceModel, split: Split) -> tuple[float, int]:
    """Sum of the BCE of every step of every sequence, computed directly with numpy
    for a one-layer Chung GRU, and the number of steps."""
    p = model.params
    total, n = 0.0, 0
    for i in range(len(split)):
        y = split.sequence(i).astype(np.float64)
        h = np.zeros(model.hidden_size)
        prev = np.zeros(88)
        for t in range(y.shape[0]):
            z = _sig(prev @ p["Wz"] + h @ p["Wrecz"] + p["bz"])
            r = _sig(prev @ p["Wr"] + h @ p["Wrecr"] + p["br"])
            c = np.tanh(prev @ p["Wca"] + (r * h) @ p["Wreca"] + p["bca"])
            h = (1 - z) * h + z * c
            q = _sig(h @ p["V"] + p["c_out"])
            total -= float(np.sum(y[t] * np.log(q) + (1 - y[t]) * np.log(1 - q)))
            prev = y[t]
            n += 1
    return total, n


# --------------------------------------------------------------------------- the model


def test_model_layout_and_readout() -> None:
    m = SequenceModel(hidden_size=7)
    assert m.params["V"].shape == (7, 88)
    assert m.params["c_out"].shape == (88,)
    assert list(m.params)[-2:] == ["V", "c_out"]
    assert set(m.cell.inputs) == {"x", "t"}
    assert m.cell.outputs == {"logits": "logits"}
    for cell in ("gru_reset_after", "lstm", "tanh", "mgu"):
        SequenceModel(cell=cell, hidden_size=3, layers=2)
        SequenceModel(cell=cell, hidden_size=3)


def test_nll_matches_numpy(tiny_npz: Path) -> None:
    ds = load_npz(tiny_npz)
    m = SequenceModel(hidden_size=4, seed=3)
    total, n = numpy_nll(m, ds.valid)
    for bs in (1, 2, 64):
        res = m.evaluate(ds.valid, batch_size=bs)
        assert res["n_steps"] == n == ds.valid.n_steps
        assert res["nll"] == pytest.approx(total / n, rel=1e-12)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_evaluate_in_segments_carries_the_states(
    tiny_npz: Path, monkeypatch: pytest.MonkeyPatch, cell: str
) -> None:
    import models.nets.sequence as sequence_module

    ds = load_npz(tiny_npz)
    m = SequenceModel(cell=cell, hidden_size=4, seed=3, layers=2)
    whole = m.evaluate(ds.valid, batch_size=64)
    monkeypatch.setattr(sequence_module, "EVAL_SEGMENT", 2)
    assert int(ds.valid.lengths.max()) > 4  # several segments
    parts = m.evaluate(ds.valid, batch_size=64)
    assert parts["nll"] == pytest.approx(whole["nll"], rel=1e-13)
    assert parts["frame_accuracy"] == whole["frame_accuracy"]
    assert parts["n_steps"] == whole["n_steps"]


def test_evaluate_scores_long_pieces_in_smaller_batches(
    tiny_npz: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.nets.sequence as sequence_module

    ds = load_npz(tiny_npz)
    m = SequenceModel(hidden_size=4, seed=3)
    whole = m.evaluate(ds.valid, batch_size=64)
    seen: list[int] = []
    run = m._run

    def spy(batch: Batch, params: object, **kw: object) -> object:
        seen.append(batch.inputs.shape[0] * batch.inputs.shape[1])
        return run(batch, params, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(m, "_run", spy)
    longest = int(ds.valid.lengths.max())
    monkeypatch.setattr(sequence_module, "EVAL_PADDED_STEPS", longest)
    capped = m.evaluate(ds.valid, batch_size=64)
    assert len(seen) > 1 and max(seen) <= longest
    assert capped["n_steps"] == whole["n_steps"]
    assert capped["nll"] == pytest.approx(whole["nll"], rel=1e-13)
    assert capped["frame_accuracy"] == whole["frame_accuracy"]


def test_frame_counts_hand_example() -> None:
    proba = np.array([[[0.9, 0.2, 0.6], [0.7, 0.7, 0.7]], [[0.1, 0.8, 0.5], [0.9, 0.9, 0.9]]])
    targets = np.array([[[1, 0, 0], [1, 1, 1]], [[1, 1, 0], [0, 0, 0]]], dtype=np.float64)
    mask = np.array([[1, 1], [1, 0]], dtype=np.float64)  # step 1 of row 1 is padding
    # real frames: (0,0): TP note0, FP note2; (0,1): 3 TP; (1,0): FN note0, TP note1; p=0.5 is no
    assert frame_counts(proba, targets, mask) == (5, 1, 1)


def test_frame_accuracy_of_evaluate(tiny_npz: Path) -> None:
    ds = load_npz(tiny_npz)
    m = SequenceModel(hidden_size=3)
    m.params["V"][:] = 0.0
    m.params["c_out"][:] = -5.0
    key = int(np.argmax(ds.test.roll.sum(axis=0)))  # the most frequent note
    m.params["c_out"][key] = 5.0  # always predicted, nothing else ever is
    roll = ds.test.roll.astype(bool)
    tp = int(roll[:, key].sum())
    fp = ds.test.n_steps - tp
    fn = int(roll.sum()) - tp
    res = m.evaluate(ds.test, batch_size=2)
    assert res["frame_accuracy"] == pytest.approx(tp / (tp + fp + fn), rel=1e-15)


def test_padding_changes_neither_loss_nor_gradients(tiny_npz: Path) -> None:
    ds = load_npz(tiny_npz)
    m = SequenceModel(hidden_size=4, seed=1)
    batch = next(batches(ds.train, 3))
    assert len(set(batch.lengths.tolist())) > 1  # rows of different lengths
    extra = 37
    z = np.zeros((extra, *batch.inputs.shape[1:]))
    longer = Batch(
        inputs=np.concatenate([batch.inputs, z]),
        targets=np.concatenate([batch.targets, z]),
        mask=np.concatenate([batch.mask, np.zeros((extra, batch.mask.shape[1]))]),
        lengths=batch.lengths,
        n_steps=batch.n_steps,
    )
    loss_a, g_a = m.loss_and_grads(batch, loss_scale=0.5)
    loss_b, g_b = m.loss_and_grads(longer, loss_scale=0.5)
    assert loss_b == pytest.approx(loss_a, rel=1e-13)
    for k in g_a:
        np.testing.assert_allclose(g_b[k], g_a[k], rtol=1e-12, atol=1e-15)
    # and the batch equals the sum of its sequences run alone
    alone = 0.0
    for i in range(3):
        single = next(batches(ds.train.subset([i]), 1))
        alone += m.loss_and_grads(single)[0]
    assert loss_a == pytest.approx(alone, rel=1e-12)


def test_pad_batch_to_multiple_of_16(tiny_npz: Path) -> None:
    batch = next(batches(load_npz(tiny_npz).train, 2))
    padded = pad_batch(batch)
    assert padded.inputs.shape[0] % 16 == 0
    assert padded.mask[batch.inputs.shape[0] :].sum() == 0
    assert padded.n_steps == batch.n_steps


def test_loss_scale_scales_gradients(tiny_npz: Path) -> None:
    m = SequenceModel(hidden_size=3)
    batch = next(batches(load_npz(tiny_npz).train, 2))
    l1, g1 = m.loss_and_grads(batch)
    l2, g2 = m.loss_and_grads(batch, loss_scale=1.0 / batch.n_steps)
    assert l1 == l2
    for k in g1:
        np.testing.assert_allclose(g2[k], g1[k] / batch.n_steps, rtol=1e-12)


def test_load_state_dict_validates_and_leaves_model_unchanged() -> None:
    m = SequenceModel(hidden_size=3)
    before = m.state_dict()
    bad = m.state_dict()
    bad["V"] = np.zeros((4, 88))
    with pytest.raises(ValueError, match=r"'V'.*\(4, 88\).*\(3, 88\)"):
        m.load_state_dict(bad)
    bad = m.state_dict()
    bad["Wz"] = bad["Wz"].astype(np.float32)
    with pytest.raises(ValueError, match=r"'Wz'.*float32"):
        m.load_state_dict(bad)
    bad = m.state_dict()
    del bad["c_out"]
    with pytest.raises(ValueError, match="c_out"):
        m.load_state_dict(bad)
    bad = m.state_dict()
    bad["extra"] = np.zeros(1)
    with pytest.raises(ValueError, match="extra"):
        m.load_state_dict(bad)
    for k, v in m.params.items():
        np.testing.assert_array_equal(v, before[k])


def test_model_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown cell 'foo'"):
        SequenceModel(cell="foo")
    with pytest.raises(ValueError, match="hidden_size"):
        SequenceModel(hidden_size=0)
    with pytest.raises(ValueError, match="dtype"):
        SequenceModel(dtype=np.int32)
    m = SequenceModel(hidden_size=3)
    b = next(batches(load_dataset("bach_chorales").test.subset([0]), 1, dtype=np.float32))
    with pytest.raises(ValueError, match=r"float32.*float64"):
        m.loss_and_grads(b)


def test_float32_model(tiny_npz: Path) -> None:
    ds = load_npz(tiny_npz)
    m = SequenceModel(hidden_size=4, dtype=np.float32)
    b = next(batches(ds.train, 2, dtype=np.float32))
    loss, grads = m.loss_and_grads(b)
    assert math.isfinite(loss)
    assert all(g.dtype == np.float32 for g in grads.values())
    m64 = SequenceModel(hidden_size=4)
    assert m.evaluate(ds.valid)["nll"] == pytest.approx(m64.evaluate(ds.valid)["nll"], rel=1e-5)


def test_nonfinite_params_name_node_and_step(tiny_npz: Path) -> None:
    m = SequenceModel(hidden_size=3)
    m.params["V"][0, 0] = np.nan
    b = next(batches(load_npz(tiny_npz).train, 2))
    with pytest.raises(NonFiniteError, match="first non-finite value at node") as info:
        m.loss_and_grads(b)
    assert info.value.node == "logits"  # V feeds only the read-out
    assert info.value.step == 0
    assert "parameter(s) ['V'] hold non-finite values" in str(info.value)


# --------------------------------------------------------------------------- training


def _strip_seconds(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in m.items() if k not in ("wall_seconds", "train_seconds", "config")}
    out["epochs"] = [{k: v for k, v in r.items() if k != "seconds"} for r in m["epochs"]]
    return out


def test_train_writes_outputs_and_is_deterministic(tiny_npz: Path, tmp_path: Path) -> None:
    res = train(tiny_config(tiny_npz, tmp_path / "a"), reporter=quiet())
    out = tmp_path / "a"
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(res.metrics))
    for key in (
        "config",
        "epochs",
        "best_epoch",
        "test_nll",
        "test_frame_accuracy",
        "valid_nll",
        "train_nll",
        "wall_seconds",
    ):
        assert key in m
    assert [r["epoch"] for r in m["epochs"]] == [1, 2]
    assert {"train_nll", "valid_nll", "seconds"} <= set(m["epochs"][0])
    assert m["status"] == "finished"
    assert m["stop_reason"] == "max_epochs"
    with np.load(out / "model.npz", allow_pickle=False) as z:
        assert "param/V" in z.files
    ET.parse(out / "curves.svg")
    model, info = load_model(out / "model.npz")
    assert info["params"] == "best" and info["epoch"] == m["best_epoch"]
    assert model.evaluate(load_npz(tiny_npz).test, 2)["nll"] == m["test_nll"]
    # same seed, same numbers
    res2 = train(tiny_config(tiny_npz, tmp_path / "b"), reporter=quiet())
    assert _strip_seconds(res2.metrics) == _strip_seconds(res.metrics)
    # another seed, other numbers
    res3 = train(tiny_config(tiny_npz, tmp_path / "c", seed=1), reporter=quiet())
    assert res3.metrics["test_nll"] != res.metrics["test_nll"]


def test_training_learns(tiny_npz: Path, tmp_path: Path) -> None:
    res = train(tiny_config(tiny_npz, tmp_path, epochs=6, lr=3e-2), reporter=quiet())
    first = res.metrics["epochs"][0]["valid_nll"]
    assert res.metrics["valid_nll"] < first < 70


def _assert_same_run(a: Path, b: Path) -> None:
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert _strip_seconds(ma) == _strip_seconds(mb)
    for name in ("model.npz", "checkpoint.npz"):
        ca, cb = load_checkpoint(a / name), load_checkpoint(b / name)
        assert ca.epoch == cb.epoch
        assert ca.params.keys() == cb.params.keys()
        for k in ca.params:
            np.testing.assert_array_equal(ca.params[k], cb.params[k])
        for k in ca.optimizer:
            np.testing.assert_array_equal(ca.optimizer[k], cb.optimizer[k])
        assert ca.rng_state == cb.rng_state


def test_resume_is_bit_exact(tiny_npz: Path, tmp_path: Path) -> None:
    train(tiny_config(tiny_npz, tmp_path / "straight", epochs=4), reporter=quiet())
    part = tiny_config(tiny_npz, tmp_path / "resumed", epochs=2)
    train(part, reporter=quiet())
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.npz").epoch == 2
    train(replace(part, epochs=4, resume=True), reporter=quiet())
    _assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_resume_refuses_other_options(tiny_npz: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_npz, tmp_path, epochs=1)
    train(cfg, reporter=quiet())
    with pytest.raises(ValueError, match=r"option 'lr' is 0\.5, but .* trained with 0\.01"):
        train(replace(cfg, resume=True, lr=0.5), reporter=quiet())
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, reporter=quiet())
    train(replace(cfg, overwrite=True), reporter=quiet())


def test_early_stopping_restores_best(tiny_npz: Path, tmp_path: Path) -> None:
    # a huge learning rate makes validation worse after the first epochs
    cfg = tiny_config(tiny_npz, tmp_path, epochs=30, patience=2, lr=0.3, weight_noise=0.0)
    res = train(cfg, reporter=quiet())
    m = res.metrics
    best = min(r["valid_nll"] for r in m["epochs"])
    assert m["stop_reason"] == "early_stopping"
    assert len(m["epochs"]) == m["best_epoch"] + 2
    assert m["valid_nll"] == pytest.approx(best, rel=1e-12)
    assert [r["valid_nll"] for r in m["epochs"]][m["best_epoch"] - 1] == best


def _poison(monkeypatch: pytest.MonkeyPatch, at_call: int, action: str) -> None:
    """Make the ``at_call``-th weight-noise draw return NaN parameters or raise Ctrl-C."""
    real = train_mod.add_weight_noise
    calls = {"n": 0}

    def fake(params: Any, std: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
        calls["n"] += 1
        noisy = real(params, std, rng)
        if calls["n"] == at_call:
            if action == "interrupt":
                raise KeyboardInterrupt
            noisy["V"][1, 2] = np.inf
        return noisy

    monkeypatch.setattr(train_mod, "add_weight_noise", fake)


def test_nonfinite_stops_with_epoch_batch_node_step(
    tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 6 training sequences in batches of 2: 3 batches per epoch; call 5 = epoch 2, batch 2
    _poison(monkeypatch, 5, "nan")
    with pytest.raises(NonFiniteError) as info:
        train(tiny_config(tiny_npz, tmp_path, epochs=3), reporter=quiet())
    msg = str(info.value)
    assert "epoch 2, batch 2/3" in msg
    node, step = info.value.node, info.value.step
    assert node is not None and step is not None
    assert f"first non-finite value at node '{node}', " in msg
    if step >= 0:  # a per-step node (the read-out, unless a graph pass fused it)
        assert f"step {step}" in msg
    ck = load_checkpoint(tmp_path / "checkpoint.npz")
    assert ck.epoch == 1
    assert all(np.all(np.isfinite(v)) for v in ck.params.values())
    model, _ = load_model(tmp_path / "checkpoint.npz")
    assert math.isfinite(model.evaluate(load_npz(tiny_npz).valid)["nll"])


def test_ctrl_c_keeps_a_resumable_checkpoint(
    tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(tiny_npz, tmp_path / "int", epochs=3)
    _poison(monkeypatch, 5, "interrupt")
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, reporter=quiet())
    assert info.value.epoch == 1
    assert load_checkpoint(tmp_path / "int" / "checkpoint.npz").epoch == 1
    monkeypatch.undo()
    train(replace(cfg, resume=True), reporter=quiet())
    train(tiny_config(tiny_npz, tmp_path / "straight", epochs=3), reporter=quiet())
    _assert_same_run(tmp_path / "straight", tmp_path / "int")


def test_ctrl_c_in_first_epoch_resumes_from_epoch_0(
    tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(tiny_npz, tmp_path / "int", epochs=2)
    _poison(monkeypatch, 2, "interrupt")
    assert main(["train", "--config", _toml(tmp_path, cfg), "--no-progress"]) == 130
    assert load_checkpoint(tmp_path / "int" / "checkpoint.npz").epoch == 0
    monkeypatch.undo()
    assert main(["train", "--resume", "--out", str(tmp_path / "int"), "--no-progress"]) == 0
    train(tiny_config(tiny_npz, tmp_path / "straight", epochs=2), reporter=quiet())
    _assert_same_run(tmp_path / "straight", tmp_path / "int")


def _toml(tmp_path: Path, cfg: TrainConfig) -> str:
    from models.cli.train import config_to_toml

    path = tmp_path / "run.toml"
    path.write_text(config_to_toml(cfg))
    return str(path)


def test_cli_end_to_end(tiny_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = [
        "train",
        "--dataset",
        str(tiny_npz),
        "--hidden",
        "4",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--eval-batch-size",
        "3",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["out"] == str(out)
    assert captured.err.count("\n") >= 2 and "epoch 2/2" in captured.err
    m = json.loads((out / "metrics.json").read_text())
    assert summary["test_nll"] == m["test_nll"]
    with np.load(out / "model.npz", allow_pickle=False) as z:
        assert "meta" in z.files
    root = ET.parse(out / "curves.svg").getroot()
    assert root.tag.endswith("svg")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "model.npz"),
                "--dataset",
                str(tiny_npz),
                "--batch-size",
                "3",
            ]
        )
        == 0
    )
    ev = json.loads(capsys.readouterr().out)
    assert ev["split"] == "test"
    assert ev["nll"] == pytest.approx(m["test_nll"], rel=1e-12)
    assert ev["frame_accuracy"] == pytest.approx(m["test_frame_accuracy"], rel=1e-12)
    assert ev["n_steps"] == m["test_steps"]
    assert main(["evaluate", "--checkpoint", str(out / "checkpoint.npz"), "--split", "valid"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["nll"] == pytest.approx(m["valid_nll"], rel=1e-12)
    assert ev["params"] == "best"


# --------------------------------------------------------------------------- BLAS threads


class _ThreadsSeen(Reporter):
    def __init__(self) -> None:
        self.seen: list[dict[str, int]] = []

    def epoch(self, record: Any, best_epoch: int, epochs: int) -> None:
        self.seen.append(blas_thread_counts())


@pytest.mark.parametrize(("option", "inside"), [(1, 1), (0, 2), (2, 2)])
def test_train_sets_the_blas_threads_from_python(
    tiny_npz: Path, tmp_path: Path, option: int, inside: int
) -> None:
    if not blas_thread_counts():
        pytest.skip("no BLAS library that threadpoolctl can control")
    seen = _ThreadsSeen()
    with threadpool_limits(limits=2, user_api="blas"):  # as a user's process may have it
        before = blas_thread_counts()
        train(tiny_config(tiny_npz, tmp_path / "run", epochs=1, blas_threads=option), reporter=seen)
        after = blas_thread_counts()
    assert after == before  # restored
    most = max(before.values())  # 2, or 1 on a one-core machine
    assert seen.seen and all(set(c.values()) == {min(inside, most)} for c in seen.seen)


def test_an_interruption_names_the_epoch_the_checkpoint_holds(tmp_path: Path) -> None:
    """A signal between the checkpoint's rename and the loop's record of it names
    the epoch on disk, not the one before."""
    from models.train.loop import _epoch_held

    path = tmp_path / "checkpoint.npz"
    assert _epoch_held(path, 6) == 6  # no file: what the loop knows
    save_checkpoint(path, params={}, optimizer={}, epoch=7, rng_state={}, config={})
    assert _epoch_held(path, 6) == 7
