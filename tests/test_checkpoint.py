"""Tests for models.train.checkpoint: round trips, atomicity, corrupt and hostile files."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from minigrad.types import Array
from models.train.checkpoint import (
    FORMAT_NAME,
    Checkpoint,
    CheckpointError,
    atomic_write_bytes,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from models.train.optim import Adam


def _params(seed: int = 0) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    return {
        "Wz": rng.standard_normal((4, 3)).astype(np.float32),
        "bz": rng.standard_normal(3).astype(np.float32),
        "Wout": rng.standard_normal((3, 2)),  # float64
        "scalar": np.array(0.5, dtype=np.float32),
    }


def _save(path: Path, **overrides: Any) -> dict[str, Any]:
    params = _params()
    opt = Adam()
    opt.step(params, {k: np.ones_like(v) for k, v in params.items()})
    kwargs: dict[str, Any] = {
        "params": params,
        "optimizer": opt.state_dict(),
        "epoch": 7,
        "rng_state": np.random.default_rng(11).bit_generator.state,
        "config": {"hidden": 64, "optimizer": "adam", "lr": 1e-3, "layers": [1, 2]},
        "extra": {"history": {"train": [1.5, 1.2, 0.9]}, "best_epoch": 5},
        "best_params": _params(1),
    }
    kwargs.update(overrides)
    save_checkpoint(path, **kwargs)
    return kwargs


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.ckpt"
    saved = _save(path)
    assert path.exists() and not (tmp_path / "run.ckpt.npz").exists()
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.epoch == 7 and isinstance(ckpt.epoch, int)
    for mine, theirs in ((ckpt.params, saved["params"]), (ckpt.best_params, saved["best_params"])):
        assert mine is not None
        assert list(mine) == list(theirs)
        for name, value in theirs.items():
            np.testing.assert_array_equal(mine[name], value, strict=True)  # dtype and shape too
    assert ckpt.params["Wz"].dtype == np.float32
    assert ckpt.params["scalar"].shape == ()
    assert ckpt.optimizer.keys() == saved["optimizer"].keys()
    for key, value in saved["optimizer"].items():
        np.testing.assert_array_equal(ckpt.optimizer[key], value, strict=True)
    assert ckpt.config == saved["config"]
    assert ckpt.extra is not None
    assert ckpt.extra["best_epoch"] == 5
    train = ckpt.extra["history"]["train"]
    assert train == [1.5, 1.2, 0.9]
    # a NaN in the metadata is refused when saved (and when loaded), naming the field
    with pytest.raises(CheckpointError, match=r"'extra.history.train\[1\]' is not a finite"):
        _save(tmp_path / "nan.npz", extra={"history": {"train": [1.5, float("nan")]}})


def test_optimizer_resumes_from_checkpoint(tmp_path: Path) -> None:
    params = _params()
    opt = Adam(lr=0.01)
    grads = {k: np.full_like(v, 0.3) for k, v in params.items()}
    opt.step(params, grads)
    save_checkpoint(
        tmp_path / "c.npz",
        params=params,
        optimizer=opt.state_dict(),
        epoch=1,
        rng_state=np.random.default_rng().bit_generator.state,
        config={},
    )
    ckpt = load_checkpoint(tmp_path / "c.npz")
    resumed = Adam(lr=0.01)
    resumed.load_state_dict(ckpt.optimizer)
    resumed_params = ckpt.params
    opt.step(params, grads)
    resumed.step(resumed_params, grads)
    for name in params:
        np.testing.assert_array_equal(resumed_params[name], params[name], strict=True)


@pytest.mark.parametrize("bit_generator", ["PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"])
def test_rng_state_continues_identically(tmp_path: Path, bit_generator: str) -> None:
    rng = np.random.Generator(getattr(np.random, bit_generator)(1234))
    rng.standard_normal(17)  # move away from the seed state
    rng.random()  # PCG64 keeps a buffered uint32 after some draws
    rng.integers(0, 10, size=3, dtype=np.uint32)
    _save(tmp_path / "r.npz", rng_state=rng.bit_generator.state)
    expected = rng.standard_normal(50)
    restored = load_checkpoint(tmp_path / "r.npz").make_rng()
    assert type(restored.bit_generator).__name__ == bit_generator
    np.testing.assert_array_equal(restored.standard_normal(50), expected)


def test_pcg64_big_ints_survive_json(tmp_path: Path) -> None:
    state = np.random.default_rng(5).bit_generator.state
    assert state["state"]["state"] > 2**64  # PCG64 state is a 128-bit integer
    _save(tmp_path / "s.npz", rng_state=state)
    assert load_checkpoint(tmp_path / "s.npz").rng_state == state


def test_optional_fields_absent(tmp_path: Path) -> None:
    path = tmp_path / "min.npz"
    _save(path, extra=None, best_params=None)
    ckpt = load_checkpoint(path)
    assert ckpt.extra is None and ckpt.best_params is None
    _save(path, best_params={})
    assert load_checkpoint(path).best_params == {}


def test_meta_layout(tmp_path: Path) -> None:
    path = tmp_path / "layout.npz"
    _save(path)
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        meta_arr = npz["meta"]
    assert {"param/Wz", "best/Wz", "optim/t", "optim/m/Wz", "optim/v/Wz", "meta"} <= keys
    assert all(k == "meta" or k.split("/")[0] in {"param", "best", "optim"} for k in keys)
    assert meta_arr.shape == () and meta_arr.dtype.kind == "U"
    meta = json.loads(str(meta_arr[()]))
    assert meta["format"] == FORMAT_NAME and meta["version"] == 1 and meta["epoch"] == 7


@pytest.mark.parametrize("target", ["savez", "replace", "fsync"])
def test_failure_midway_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    path = tmp_path / "model.npz"
    _save(path, epoch=3)
    before = path.read_bytes()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    if target == "savez":
        monkeypatch.setattr(np, "savez", boom)
    elif target == "replace":
        monkeypatch.setattr(os, "replace", boom)
    else:
        monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        _save(path, epoch=4, params=_params(9))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path).epoch == 3
    assert _leftovers(tmp_path, {"model.npz"}) == []


def test_keyboard_interrupt_removes_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.npz"

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _save(path)
    assert _leftovers(tmp_path, set()) == []


def test_overwrite_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "perm.npz"
    _save(path)
    os.chmod(path, 0o640)
    _save(path, epoch=8)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_checkpoint(path).epoch == 8


def test_new_file_is_not_private_temp_mode(tmp_path: Path) -> None:
    path = tmp_path / "new.npz"
    old = os.umask(0o022)
    try:
        _save(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path: Path, fraction: float) -> None:
    good = tmp_path / "good.npz"
    _save(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=r"bad\.npz"):
        load_checkpoint(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.npz.*no such"):
        load_checkpoint(tmp_path / "nope.npz")


def test_directory_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path))):
        load_checkpoint(tmp_path)


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_text("hello, I am not an archive\n")
    with pytest.raises(CheckpointError, match=r"text\.npz.*not an npz"):
        load_checkpoint(path)
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(CheckpointError, match=r"array\.npy"):
        load_checkpoint(npy)


def test_wrong_format(tmp_path: Path) -> None:
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.ones(2))
    with pytest.raises(CheckpointError, match=r"plain\.npz.*meta"):
        load_checkpoint(plain)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array(json.dumps({"format": "something-else", "version": 1})))
    with pytest.raises(CheckpointError, match=r"other\.npz.*wrong format 'something-else'"):
        load_checkpoint(other)
    newer = tmp_path / "newer.npz"
    meta = {"format": FORMAT_NAME, "version": 99, "epoch": 0}
    np.savez(newer, meta=np.array(json.dumps(meta)))
    with pytest.raises(CheckpointError, match=r"newer\.npz.*version 99"):
        load_checkpoint(newer)
    not_json = tmp_path / "garbled.npz"
    np.savez(not_json, meta=np.array("{not json"))
    with pytest.raises(CheckpointError, match=r"garbled\.npz.*JSON"):
        load_checkpoint(not_json)


def test_unexpected_entry(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    _save(path)
    with np.load(path, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    members["stray"] = np.zeros(1)
    np.savez(path, **members)
    with pytest.raises(CheckpointError, match="'stray'"):
        load_checkpoint(path)


UNPICKLED: list[str] = []


def _record_unpickling() -> str:
    UNPICKLED.append("ran")
    return "payload"


class _Hostile:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_record_unpickling, ())


def test_object_arrays_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    _save(path)
    with np.load(path, allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    hostile = np.empty(1, dtype=object)
    hostile[0] = _Hostile()
    members["param/Wz"] = hostile
    np.savez(path, **members)  # numpy pickles the object array
    UNPICKLED.clear()
    with pytest.raises(CheckpointError, match=r"evil\.npz.*object"):
        load_checkpoint(path)
    assert UNPICKLED == []


def test_save_rejects_unstorable_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    with pytest.raises(CheckpointError, match=r"bad\.npz.*'Wz'.*object"):
        _save(path, params={"Wz": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match=r"bad\.npz.*'idx'.*floating"):
        _save(path, params={"idx": np.arange(3)})
    with pytest.raises(CheckpointError, match=r"bad\.npz.*JSON"):
        _save(path, config={"fn": print})
    with pytest.raises(CheckpointError, match=r"bad\.npz.*epoch"):
        _save(path, epoch=-1)
    assert _leftovers(tmp_path, set()) == []


def test_numpy_values_in_metadata(tmp_path: Path) -> None:
    path = tmp_path / "np.npz"
    _save(path, config={"hidden": np.int64(5), "lr": np.float32(0.5), "flag": np.bool_(True)})
    config = load_checkpoint(path).config
    assert config == {"hidden": 5, "lr": 0.5, "flag": True}
    assert type(config["hidden"]) is int


def test_atomic_write_helpers(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "first <&> ünïcode\r\n")
    assert path.read_bytes() == "first <&> ünïcode\r\n".encode()
    atomic_write_bytes(path, b"\x00\x01second")
    assert path.read_bytes() == b"\x00\x01second"
    assert _leftovers(tmp_path, {"notes.txt"}) == []
    with pytest.raises(FileNotFoundError):
        atomic_write_text(tmp_path / "missing-dir" / "f.txt", "x")


def test_accepts_string_paths(tmp_path: Path) -> None:
    path = str(tmp_path / "s.npz")
    _save(Path(path))
    assert load_checkpoint(path).epoch == 7
