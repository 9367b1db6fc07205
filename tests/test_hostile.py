"""Regression tests for the second red-team pass: one per class of defect.

Long songs in bounded memory and linear time, non-finite optimiser state, MIDI
ranges, bounded BLAS threads, non-regular output paths, no empty run folder
after a failed start, deeply nested configs, empty batches, and a sweep of
absurd option values over every command. Every crafted file is made here.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from npz_layout import write_tiny_dataset

import minigrad as mg
from minigrad.errors import ShapeError
from models.cli.main import main
from models.data import N_PITCHES, PITCH_LO, DataError, load_dataset
from models.data.batches import Batch
from models.generate import midi as midi_module
from models.generate.roll_svg import MAX_COLUMNS, piano_roll_svg
from models.generate.sample import sample, write_roll_npz
from models.io import LOCK_FILE, atomic_write_text
from models.nets.base import RecurrentModel
from models.nets.sequence import SequenceModel
from models.train import TrainConfig
from models.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.train.optim import RMSProp


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny.npz", seed=7)


@pytest.fixture(scope="module")
def run(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(_args(tiny, out)) == 0
    return out


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--dataset", str(data), "--out", str(out), "--hidden", "3", "--epochs", "1",
        "--batch-size", "2", "--eval-batch-size", "4", "--no-progress", *extra,
    ]  # fmt: skip


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int) -> str:
    got = main(argv)
    err = capsys.readouterr().err
    assert got == code, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _random_roll(steps: int, density: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((steps, N_PITCHES)) < density).astype(np.uint8)


# --------------------------------------------------------------------------- long songs


def _reference_midi(values: np.ndarray, tps: int = 480) -> bytes:
    """The MIDI file of a roll built message by message with mido (the former writer)."""
    mido = pytest.importorskip("mido")
    n_steps, n_pitches = values.shape
    padded = np.zeros((n_steps + 2, n_pitches), dtype=np.int8)
    padded[1:-1] = values
    change = np.diff(padded, axis=0)
    events = sorted(
        (int(s) * tps, int(change[s, c] > 0), PITCH_LO + int(c))
        for s, c in zip(*np.nonzero(change), strict=True)
    )
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name="minigrad", time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100.0), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    track.append(mido.Message("program_change", program=0, channel=0, time=0))
    now = 0
    for tick, on, note in events:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, note=note, velocity=80 if on else 0, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=n_steps * tps - now))
    song = mido.MidiFile(type=0, ticks_per_beat=480)
    song.tracks.append(track)
    buffer = io.BytesIO()
    song.save(file=buffer)
    return buffer.getvalue()


def test_midi_is_written_block_by_block_as_mido_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mido")
    monkeypatch.setattr(midi_module, "_BLOCK_STEPS", 7)  # many blocks, notes across them
    path = tmp_path / "a.mid"
    for steps, density, tps in ((0, 0.1, 480), (1, 0.5, 480), (50, 0.1, 480), (40, 0.4, 1)):
        roll = _random_roll(steps, density, seed=steps)
        if steps > 30:
            roll[10:25] = 0  # a long rest across blocks
        midi_module.write_midi(roll, path, ticks_per_step=tps)
        assert path.read_bytes() == _reference_midi(roll, tps), (steps, density)
    roll = _random_roll(23, 0.05)
    midi_module.write_midi(roll, path, ticks_per_step=100_000)  # multi-byte delta times
    assert path.read_bytes() == _reference_midi(roll, 100_000)
    np.testing.assert_array_equal(
        midi_module.read_midi_notes(path, ticks_per_step=100_000), roll[: len(roll)]
    )


def test_long_songs_are_written_in_bounded_memory(tmp_path: Path) -> None:
    pytest.importorskip("mido")
    dense = _random_roll(20_000, 0.5)  # 1.8 MB; about 900,000 note events
    long = np.zeros((400_000, N_PITCHES), dtype=np.uint8)  # 35 MB, as float64 280 MB
    long[::3, 40] = 1
    long[:, 50] = 1
    tracemalloc.start()
    try:
        midi_module.write_midi(dense, tmp_path / "a.mid")
        _, midi_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        svg = piano_roll_svg(long, primed_steps=1234)
        _, svg_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        write_roll_npz(tmp_path / "a.npz", long)
        _, npz_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the former writer kept a few hundred bytes of Python objects per event (hundreds of
    # megabytes here); now a block of steps at a time
    assert midi_peak < 24 << 20, midi_peak
    assert svg_peak < 24 << 20, svg_peak  # no float copy of the roll
    assert npz_peak < 24 << 20, npz_peak  # no copy of the roll in memory
    assert svg.count('class="note"') <= 2 * MAX_COLUMNS
    with np.load(tmp_path / "a.npz") as f:
        np.testing.assert_array_equal(f["roll"], long)
    assert (tmp_path / "a.mid").stat().st_size > 900_000 * 2


def test_a_long_roll_is_drawn_in_bins_with_the_primed_part_apart() -> None:
    steps = 10 * MAX_COLUMNS
    roll = np.zeros((steps, N_PITCHES), dtype=np.uint8)
    roll[:, 0] = 1  # a note held throughout: one rectangle each side of the prime
    roll[::2, 1] = 1  # every other step: drawn at half opacity
    svg = piano_roll_svg(roll, primed_steps=333)
    notes = [ln for ln in svg.splitlines() if 'class="note"' in ln]
    held = [ln for ln in notes if 'fill-opacity' not in ln]
    assert len(held) == 2  # primed (grey) and generated (blue)
    assert {'fill="#777777"' in ln for ln in held} == {True, False}
    halves = [float(ln.split('fill-opacity="')[1].split('"')[0]) for ln in notes if ln not in held]
    # bins of 11 steps hold 5 or 6 notes; the last primed bin, 3 steps, 1 or 2
    assert halves and all(0.3 <= h <= 0.7 for h in halves)
    assert len(notes) <= 2 * MAX_COLUMNS
    short = piano_roll_svg(roll[:50], primed_steps=10)  # short rolls: one column a step
    assert short.count('class="note"') == 2 + 25  # the held note split at the prime, 25 steps


def test_sampling_reuses_one_bound_step(run: Path) -> None:
    from models.generate.sample import load_model

    model = load_model(run / "model.npz")
    a = sample(model, 300, seed=3)
    # the same notes as one model.step per frame (the documented definition)
    rng = np.random.default_rng(3)
    frame, states = np.zeros((1, N_PITCHES)), None
    for t in range(300):
        logits, states = model.step(frame, states)
        p = 0.5 * (1.0 + np.tanh(0.5 * logits[0]))
        frame = (rng.random(N_PITCHES) < p).astype(np.float64)[None]
        assert np.array_equal(frame[0], a[t]), t
    compiled = len(mg.program._PLANS.get(model.cell, {}))
    sample(model, 500, seed=4)
    assert len(mg.program._PLANS.get(model.cell, {})) == compiled  # nothing per length


# --------------------------------------------------------------------------- resume


def test_non_finite_optimizer_state_is_refused_on_load(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(_args(tiny, out)) == 0
    ckpt = out / "checkpoint.npz"
    with np.load(ckpt) as z:
        arrays = dict(z)
    key = next(k for k in arrays if k.startswith("optim/") and arrays[k].dtype.kind == "f")
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] = np.inf
    np.savez(ckpt, **arrays)
    with pytest.raises(CheckpointError, match=rf"optimizer state '{key}' holds NaN"):
        load_checkpoint(ckpt)
    capsys.readouterr()
    line = _one_line(capsys, _args(tiny, out, "--resume", "--epochs", "2"), 1)
    assert key in line and "NaN or infinite" in line
    opt = RMSProp(lr=0.1)
    with pytest.raises(ValueError, match="state key 'v/W' holds NaN"):
        opt.load_state_dict({"t": np.int64(1), "v/W": np.array([np.nan])})


# --------------------------------------------------------------------------- MIDI ranges


@pytest.mark.parametrize(
    ("lo", "hi", "words"),
    [
        (-1, 108, "pitch_lo must be a MIDI note number in 0..127, got -1"),
        (21, 300, "pitch_hi must be a MIDI note number in 0..127, got 300"),
        (100, 30, "pitch_lo 100 is above pitch_hi 30"),
        (62, 108, "outside the range pitch_lo..pitch_hi = 62..108"),
    ],
)
def test_dataset_pitch_range_is_checked(
    tiny: Path, tmp_path: Path, lo: int, hi: int, words: str
) -> None:
    with np.load(tiny) as z:
        arrays = dict(z)
    arrays["pitch_lo"], arrays["pitch_hi"] = np.int32(lo), np.int32(hi)
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=words) as info:
        load_dataset(path)
    assert "\n" not in str(info.value)


def test_midi_pitch_options_are_checked(tmp_path: Path) -> None:
    pytest.importorskip("mido")
    roll = np.zeros((2, N_PITCHES), dtype=np.uint8)
    for bad in (-5, 128, 10**9):
        with pytest.raises(ValueError, match="pitch_lo must be a MIDI note number"):
            midi_module.write_midi(roll, tmp_path / "a.mid", pitch_lo=bad)
        with pytest.raises(ValueError, match="pitch_lo must be a MIDI note number"):
            piano_roll_svg(roll, pitch_lo=bad)
        with pytest.raises(ValueError, match="pitch_lo must be a MIDI note number"):
            write_roll_npz(tmp_path / "a.npz", roll, pitch_lo=bad)
    midi_module.write_midi(roll, tmp_path / "a.mid")
    with pytest.raises(ValueError, match=r"pitch_lo \+ n_pitches - 1 must be .* got 139"):
        midi_module.read_midi_notes(tmp_path / "a.mid", pitch_lo=52)
    with pytest.raises(ValueError, match="n_pitches must be an int >= 1"):
        midi_module.read_midi_notes(tmp_path / "a.mid", n_pitches=-3)


# --------------------------------------------------------------------------- options


def test_blas_threads_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("100000", "-1"):
        line = _one_line(capsys, ["train", "--blas-threads", value], 2)
        assert "blas_threads" in line
    with pytest.raises(ValueError, match=r"blas_threads': must be in 0\.\.256"):
        TrainConfig(blas_threads=257).validate()


def test_non_regular_outputs_are_refused_and_kept(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "song.mid"
    os.mkfifo(fifo)
    model = str(run / "model.npz")
    for flag, path in (("-o", fifo), ("--roll", tmp_path / "roll.svg"), ("-o", tmp_path)):
        if flag == "--roll":
            os.mkfifo(path)
        argv = ["sample", "--checkpoint", model, "--steps", "3", flag, str(path)]
        if flag == "-o" and path == tmp_path:
            argv[-1] = str(tmp_path / "sub.npz" / "..")
        line = _one_line(capsys, argv, 2)
        assert flag in line
    assert fifo.is_fifo() and (tmp_path / "roll.svg").is_fifo()
    line = _one_line(capsys, ["graph", "-o", str(tmp_path / "nowhere" / "g.dot")], 2)
    assert "does not exist" in line
    with pytest.raises(OSError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    assert fifo.is_fifo()


# --------------------------------------------------------------------------- run folders


def test_a_run_that_fails_before_writing_leaves_no_folder(
    tiny: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "badcell.py").write_text("def bad(*args, **kw):\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "new" / "deeper" / "run"
    _one_line(capsys, _args(tiny, out, "--cell", "badcell:bad"), 1)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "mine"
    existing.mkdir()
    _one_line(capsys, _args(tiny, existing, "--cell", "badcell:bad"), 1)
    assert existing.is_dir()  # it was there before: kept
    assert set(os.listdir(existing)) <= {LOCK_FILE}
    keep = existing / "notes.txt"
    keep.write_text("mine")
    _one_line(capsys, _args(tiny, existing / "sub", "--cell", "badcell:bad"), 1)
    assert not (existing / "sub").exists() and keep.read_text() == "mine"
    sys.modules.pop("badcell", None)


# --------------------------------------------------------------------------- configs


def test_a_deeply_nested_config_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "arrays.toml": "epochs = " + "[" * 10_000 + "]" * 10_000 + "\n",
        "tables.toml": "epochs = " + "{a = " * 10_000 + "1" + "}" * 10_000 + "\n",
        "two.toml": 'cells = [["gru"]]\n',
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        for command in ("train", "sweep"):
            line = _one_line(capsys, [command, "--config", str(path)], 2)
            assert str(path) in line and "nested" in line, line


# --------------------------------------------------------------------------- empty batches


def test_an_empty_batch_is_named_as_such() -> None:
    model = RecurrentModel("gru", 3, 4)
    with pytest.raises(ShapeError, match=r"x has shape \(5, 0, 3\): an empty batch \(B = 0\)"):
        model.forward(np.zeros((5, 0, 3)))
    program = mg.compile(model.cell)
    for T in (5, 40):  # 40: longer than the loop's bound template
        inputs = {"x": np.zeros((T, 0, 3)), "y": np.zeros((T, 0, 4))}
        with pytest.raises(ShapeError, match=r"input 'x' has an empty batch \(B = 0\)") as info:
            program.loss_and_grads(model.params, inputs)
        assert "expected (" not in str(info.value)
    plan = mg.plan_of(model.cell, 5)
    with pytest.raises(ShapeError, match=r"input 'x' has an empty batch \(B = 0\)"):
        plan.loss_and_grads(model.params, {"x": np.zeros((5, 0, 3)), "y": np.zeros((5, 0, 4))})
    music = SequenceModel("gru", hidden_size=3)
    z = np.zeros((5, 0, N_PITCHES))
    empty: Any = Batch(z, z, np.zeros((5, 0)), np.zeros(0, dtype=np.int64), 0)
    with pytest.raises(ShapeError, match=r"batch.inputs has an empty batch"):
        music.loss_and_grads(empty)
    with pytest.raises(ShapeError, match="an empty batch"):
        music.step(np.zeros((0, N_PITCHES)))


# --------------------------------------------------------------------------- absurd options


def _numeric_options() -> list[tuple[str, str, type]]:
    import argparse

    from models.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [
        (command, action.option_strings[-1], action.type)
        for command, p in sub.choices.items()
        for action in p._actions
        if action.option_strings and action.type in (int, float)
    ]


def test_every_numeric_option_refuses_absurd_values_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    required = {
        "evaluate": ["--checkpoint", "m.npz"],
        "sample": ["--checkpoint", "m.npz", "--steps", "1"],
        "explain": ["--param", "all"],
        "graph": ["-o", "g.dot"],
        "sweep": ["--dataset", "d.npz", "--out", "s"],
    }
    options = _numeric_options()
    assert len(options) > 50
    for command, opt, kind in options:
        values = ["nan", "inf", "9" * 5000] if kind is float else ["1e12", "nan", "9" * 5000]
        for value in values:
            line = _one_line(capsys, [command, *required.get(command, []), opt, value], 2)
            assert opt.lstrip("-").replace("-", "_") in line.replace("-", "_"), line
            assert line.endswith(f"see 'minigrad {command} --help'") or "must" in line, line


def test_usage_errors_are_one_line_and_outputs_checked_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _one_line(capsys, ["train", "--epochs", "x"], 2)
    assert line == (
        "minigrad train: error: argument --epochs: invalid int value: 'x'; "
        "see 'minigrad train --help'"
    )
    assert "unknown file type '.jpg'" in _one_line(capsys, ["graph", "-o", "g.jpg"], 2)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for out in (fifo, tmp_path / "file"):
        if out.name == "file":
            out.write_text("mine")
        line = _one_line(capsys, ["train", "--out", str(out), "--no-progress"], 1)
        assert f"--out {out}: exists and is not a folder" in line
    assert (tmp_path / "file").read_text() == "mine" and fifo.is_fifo()
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for out in (fifo, loop):
        line = _one_line(capsys, ["sweep", "--dataset", "x.npz", "--out", str(out)], 2)
        assert f"--out {out}: exists and is not a folder" in line
    long = "x" * 5000 + ".npz"
    line = _one_line(capsys, ["train", "--dataset", long], 1)
    assert line.endswith(": File name too long") and "Errno" not in line


def test_imports_that_fail_in_any_way_get_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "boom_at_import.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in (".", "..x", ""):
        assert "not a module name" in _one_line(capsys, ["cells", "--import", name], 2)
    line = _one_line(capsys, ["cells", "--import", "boom_at_import"], 1)
    assert "--import boom_at_import: importing it failed: RuntimeError: boom" in line
    line = _one_line(capsys, ["train", "--cell", "boom_at_import:f", "--no-progress"], 1)
    assert "--cell boom_at_import:f: importing module 'boom_at_import' failed" in line


def test_one_long_piece_is_scored_in_segments_of_uint8_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a 600 KB file can hold one piece of 300,000 steps: float64 inputs, targets and
    # logits of the whole piece took 742 MB to score it
    from minigrad.program import Program
    from models.data import Split
    from models.nets.sequence import EVAL_SEGMENT

    rng = np.random.default_rng(0)
    steps = 2 * EVAL_SEGMENT + 5
    roll = (rng.random((steps, N_PITCHES)) < 0.05).astype(np.uint8)
    split = Split(roll=roll, offsets=np.asarray([0, steps]))
    model = SequenceModel(hidden_size=3, seed=0)
    seen: list[tuple[int, str]] = []
    forward = Program.forward

    def spy(self: Program, params: object, inputs: dict[str, np.ndarray], *a: object,
            **kw: object) -> object:
        seen.append((inputs["x"].shape[0], str(inputs["x"].dtype)))
        return forward(self, params, inputs, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Program, "forward", spy)
    scores = model.evaluate(split)
    assert scores["n_steps"] == steps and np.isfinite(scores["nll"])
    assert seen == [(EVAL_SEGMENT, "uint8"), (EVAL_SEGMENT, "uint8"), (5, "uint8")]


# --------------------------------------------------------------------------- third pass


def test_sweep_refuses_a_folder_of_foreign_files_and_an_empty_out(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("results.csv", "trials.csv"):
        (mine / name).write_text(f"my {name}\n")
    sweep = ["sweep", "--dataset", str(tiny), "--cells", "gru", "--hidden", "gru=3",
             "--lr-candidates", "1", "--epochs", "1", "--executor", "local:1"]  # fmt: skip
    line = _one_line(capsys, [*sweep, "--out", str(mine)], 1)
    assert f"--out {mine}: holds results.csv, trials.csv but no sweep" in line, line
    assert "--overwrite" in line
    assert (mine / "results.csv").read_text() == "my results.csv\n"
    assert (mine / "trials.csv").read_text() == "my trials.csv\n"
    assert not (mine / "results.json").exists()
    monkeypatch.chdir(tmp_path / "mine")
    line = _one_line(capsys, [*sweep, "--out", ""], 2)
    assert "--out must not be empty" in line
    assert {p.name for p in mine.iterdir()} - {LOCK_FILE} == {"results.csv", "trials.csv"}


def test_non_finite_checkpoint_metadata_is_refused_naming_the_key(
    tiny: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import shutil

    with np.load(run / "checkpoint.npz") as z:
        arrays = dict(z)
    for key in ("extra.best_valid_nll", "extra.history[0].lr", "extra.history[0].train_nll"):
        meta = json.loads(str(arrays["meta"]))
        if key == "extra.best_valid_nll":
            meta["extra"]["best_valid_nll"] = float("nan")  # json.dumps writes NaN
        elif key == "extra.history[0].lr":
            meta["extra"]["history"][0]["lr"] = float("inf")  # Infinity
        else:  # an int beyond any float: it overflowed when the run wrote its metrics
            meta["extra"]["history"][0]["train_nll"] = 10**400
        copy = tmp_path / key
        shutil.copytree(run, copy)
        np.savez(copy / "checkpoint.npz", **{**arrays, "meta": np.array(json.dumps(meta))})
        with pytest.raises(CheckpointError, match=rf"'meta' field '{re.escape(key)}' is not a"):
            load_checkpoint(copy / "checkpoint.npz")
        line = _one_line(capsys, _args(tiny, copy, "--resume", "--epochs", "2"), 1)
        assert f"'{key}' is not a finite number" in line, line
    with pytest.raises(CheckpointError, match=r"'extra\.x' is not a finite number"):
        save_checkpoint(tmp_path / "x.npz", params={}, optimizer={}, epoch=0, rng_state={},
                        config={}, extra={"x": float("nan")})  # fmt: skip
    assert not (tmp_path / "x.npz").exists()


def test_resume_from_a_model_file_says_it_is_not_a_checkpoint(
    tiny: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.copy(copy / "model.npz", copy / "checkpoint.npz")
    line = _one_line(capsys, _args(tiny, copy, "--resume", "--epochs", "2"), 1)
    assert f"{copy / 'checkpoint.npz'}: not a training checkpoint" in line, line


def test_sample_tempo_is_checked_before_any_file_is_written(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    song, roll = tmp_path / "t.mid", tmp_path / "t.svg"
    for tempo in ("1e-300", "3", "3.5", "10001", "nan", "-1"):
        argv = ["sample", "--checkpoint", str(run / "model.npz"), "--steps", "2",
                "--tempo", tempo, "-o", str(song), "--roll", str(roll)]  # fmt: skip
        line = _one_line(capsys, argv, 2)
        assert "--tempo must be at least 60000000/16777215 (about 3.58)" in line, line
        assert "at most 10000" in line
        assert not song.exists() and not roll.exists()
    assert midi_module.check_tempo("t", 60e6 / 16777215) == pytest.approx(3.5763, abs=1e-4)
    with pytest.raises(ValueError, match="tempo_bpm must be at least"):
        midi_module.write_midi(np.zeros((2, 88)), tmp_path / "x.mid", tempo_bpm=3)
    with pytest.raises(ValueError, match="got a huge integer"):
        midi_module.check_tempo("t", 10**5000)
    if importlib.util.find_spec("mido") is None:
        return  # the slowest tempo in a file needs the optional mido
    import mido

    argv = ["sample", "--checkpoint", str(run / "model.npz"), "--steps", "2", "--tempo",
            str(60e6 / 16777215), "-o", str(song)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    (tempo,) = [m.tempo for m in mido.MidiFile(song).tracks[0] if m.type == "set_tempo"]
    assert tempo == 16777215


def test_every_bad_config_file_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (1 << 20))
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# caf\xe9\n")
    bad = {
        big: "too large",
        fifo: "is a FIFO",
        tmp_path: "is a directory",
        Path("/dev/zero"): "character device",
        latin: "not UTF-8",
        tmp_path / "missing.toml": "no such file",
    }
    for command in (["train"], ["sweep", "--dataset", "d.npz", "--out", str(tmp_path / "s")]):
        for path, what in bad.items():
            line = _one_line(capsys, [*command, "--config", str(path)], 2)
            assert line.startswith(f"minigrad: error: --config {path}: ") and what in line, line


_STDOUT_CASES = """
import io, json, os, sys
from models.cli import main
model, data, out = sys.argv[1:4]
cases = {
    "evaluate": ["evaluate", "--checkpoint", model, "--dataset", data],
    "sample": ["sample", "--checkpoint", model, "--steps", "2", "-o", out + "/s.npz"],
    "cells": ["cells"],
    "explain": ["explain", "--param", "Wz"],
    "print-config": ["train", "--print-config"],
    "train": ["train", "--dataset", data, "--out", out + "/run", "--hidden", "3", "--epochs",
              "1", "--batch-size", "2", "--eval-batch-size", "4", "--no-progress"],
}
got = {}
for how in ("closed", "full"):
    for name, argv in cases.items():
        sys.stdout = None if how == "closed" else open("/dev/full", "w")
        sys.stderr = io.StringIO()
        code = main(argv + (["--overwrite"] if name == "train" else []))
        got[f"{how} {name}"] = [code, sys.stderr.getvalue()]
sys.stderr = sys.__stderr__
os.write(2, json.dumps(got).encode())
"""


def test_a_command_whose_output_is_lost_fails_in_one_line(
    tiny: Path, run: Path, tmp_path: Path
) -> None:
    import json
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", _STDOUT_CASES, str(run / "model.npz"), str(tiny), str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    got = json.loads(proc.stderr)
    for case, (code, err) in got.items():
        how, name = case.split(" ", 1)
        if name == "train":  # the run is in its folder: it succeeds either way
            assert code == 0 and "error" not in err, (case, err)
            continue
        reason = "it is closed" if how == "closed" else "No space left on device"
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 1, (case, err)
        assert lines == [f"minigrad: error: cannot write to standard output ({reason})"], case
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_empty_paths_are_refused_naming_the_option(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(run / "model.npz")
    cases = {
        "--checkpoint": [["evaluate", "--checkpoint", ""],
                         ["sample", "--checkpoint", "", "--steps", "1", "-o", "a.mid"]],
        "--dataset": [["evaluate", "--checkpoint", model, "--dataset", ""]],
        "-o/--out": [["sample", "--checkpoint", model, "--steps", "1", "-o", ""],
                     ["graph", "-o", ""]],
        "--roll": [["sample", "--checkpoint", model, "--steps", "1", "--roll", ""]],
        "--config": [["train", "--config", ""], ["sweep", "--config", ""]],
    }  # fmt: skip
    for option, argvs in cases.items():
        for argv in argvs:
            line = _one_line(capsys, argv, 2)
            assert f"argument {option}: must not be empty" in line, line


def test_a_huge_pickled_note_is_named_by_its_place_not_printed(tmp_path: Path) -> None:
    import pickle

    for note, what in ((10**5000, "note (an integer of 16610 bits) is outside 21..108"),
                       ([10**5000], "note (a list holding a huge integer) is not a MIDI"),
                       ("x" * 10**6, "note 'xxxxxxxx")):  # fmt: skip
        path = tmp_path / "huge.pickle"
        songs = {"train": [[[60], [60, note]]], "valid": [[[60]]], "test": [[[60]]]}
        path.write_bytes(pickle.dumps(songs, protocol=2))
        with pytest.raises(DataError) as info:
            load_dataset(path)
        message = str(info.value)
        assert message.startswith(f"{path}: split 'train', sequence 0, step 1: "), message
        assert what in message and len(message) < 300, message


def _midi_bytes(division: int) -> bytes:
    """A type 0 MIDI file of one note (60), with the header's time ``division``."""
    events = b"\x00\x90\x3c\x40" + b"\x60\x80\x3c\x00" + b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + b"\x00\x00\x00\x01" + division.to_bytes(2, "big")
    return header + b"MTrk" + len(events).to_bytes(4, "big") + events


def test_midi_time_division_and_max_steps_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"max_steps must be an int >= 1, got -1"):
        midi_module.read_midi_notes(tmp_path / "none.mid", max_steps=-1)
    with pytest.raises(ValueError, match=r"ticks_per_step must be an int >= 1, got 0"):
        midi_module.read_midi_notes(tmp_path / "none.mid", ticks_per_step=0)
    pytest.importorskip("mido")
    cases = {0xE728: "SMPTE time division is not supported", 0: "0 ticks per beat"}
    for division, what in cases.items():
        path = tmp_path / f"d{division}.mid"
        path.write_bytes(_midi_bytes(division))
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {what}"):
            midi_module.read_midi_notes(path)
    good = tmp_path / "good.mid"
    good.write_bytes(_midi_bytes(0x60))
    roll = midi_module.read_midi_notes(good)
    assert roll.shape == (1, N_PITCHES) and roll[0, 60 - PITCH_LO] == 1 and roll.sum() == 1


def test_sweep_hidden_sizes_given_twice_or_for_unswept_cells_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sweep = ["sweep", "--dataset", "d.npz", "--out", "s", "--cells", "gru"]
    line = _one_line(capsys, [*sweep, "--hidden", "gru=4,gru=5"], 2)
    assert "--hidden 'gru=4,gru=5': the size of gru is given twice" in line, line
    line = _one_line(capsys, [*sweep, "--hidden", "lstm=4"], 2)
    assert "--hidden gives a size for lstm, which is not swept (--cells gru)" in line, line


def test_sample_refuses_to_replace_a_file_of_a_run(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run, other)
    before = {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()}
    sample = ["sample", "--checkpoint", str(run / "model.npz"), "--steps", "4"]
    for flag, name in (("-o", "model.npz"), ("-o", "checkpoint.npz"), ("--roll", "curves.svg")):
        line = _one_line(capsys, [*sample, flag, str(other / name)], 2)
        assert "holds a run or a sweep" in line and name in line, line
    assert {p.name: p.read_bytes() for p in other.iterdir() if p.is_file()} == before
    # a song of its own name in the same folder is fine
    assert main([*sample, "-o", str(other / "song.npz")]) == 0


def test_the_l2_models_refuse_an_overflowing_loss_naming_the_node() -> None:
    from models.nets import GRU, LSTM

    for model in (GRU(3, 4, seed=0), LSTM(3, 4, seed=0)):
        x = np.ones((5, 2, 3))
        with pytest.raises(mg.NonFiniteError, match="loss is inf; first non-finite value at "
                                                    "node 'loss', step 0") as err:
            model.loss_and_grads(x, np.full((5, 2, 4), 1e300))
        assert err.value.node == "loss" and err.value.step == 0
        loss, grads = model.loss_and_grads(x, np.zeros((5, 2, 4)))  # finite: unchanged
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())


def test_an_output_through_a_link_into_a_run_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tiny_dataset(tmp_path / "d.npz", 0)
    assert main(["train", "--dataset", "d.npz", "--hidden", "3", "--epochs", "1",
                 "--out", "run", "--no-progress"]) == 0
    saved = {n: (tmp_path / "run" / n).read_bytes() for n in ("model.npz", "curves.svg")}
    (tmp_path / "song.npz").symlink_to(tmp_path / "run" / "model.npz")
    (tmp_path / "roll.svg").symlink_to(tmp_path / "run" / "curves.svg")
    capsys.readouterr()
    for argv in (["-o", "song.npz"], ["--roll", "roll.svg"]):
        assert main(["sample", "--checkpoint", "run/checkpoint.npz", "--steps", "3", *argv]) == 2
        err = capsys.readouterr().err
        assert "through the link" in err and "refusing to replace it" in err, err
    for name, data in saved.items():
        assert (tmp_path / "run" / name).read_bytes() == data
    # graph writes through a link and keeps it a link
    (tmp_path / "pic.dot").write_text("old")
    (tmp_path / "link.dot").symlink_to(tmp_path / "pic.dot")
    assert main(["graph", "--cell", "gru", "-o", "link.dot"]) == 0
    assert (tmp_path / "link.dot").is_symlink()
    assert (tmp_path / "pic.dot").read_text().startswith("digraph")


def test_a_highly_compressible_data_set_is_not_taken_for_a_zip_bomb(tmp_path: Path) -> None:
    # a C major chord held for 200,000 steps per split: 1.2 million notes that deflate
    # compresses several hundred times, within every size limit of a data set
    n = 200_000
    arrays: dict[str, np.ndarray] = {"format_version": np.array(1)}
    for split in ("train", "valid", "test"):
        arrays[f"{split}_notes"] = np.tile(np.asarray([60, 64, 67], dtype=np.int16), n)
        arrays[f"{split}_step_offsets"] = np.arange(0, 3 * n + 1, 3, dtype=np.int32)
        arrays[f"{split}_seq_offsets"] = np.asarray([0, n], dtype=np.int32)
    path = tmp_path / "chord.npz"
    np.savez_compressed(path, **arrays)
    assert path.stat().st_size < 2 << 20
    data = load_dataset(str(path))
    assert data.train.n_steps == n and int(data.train.rows(slice(0, 1)).sum()) == 3


def test_a_float_in_a_checkpoints_rng_state_is_refused(tmp_path: Path) -> None:
    state = np.random.default_rng(0).bit_generator.state
    state["state"]["inc"] = 1.5  # numpy would truncate it into another random stream
    save_checkpoint(tmp_path / "c.npz", params={}, optimizer={}, epoch=0, rng_state=state,
                    config={})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"rng state\.state\.inc: expected an integer"):
        load_checkpoint(tmp_path / "c.npz")


def test_absurd_weight_noise_is_refused_and_huge_losses_print_short() -> None:
    from models.train.report import nll_text as _nll

    TrainConfig(weight_noise=10.0).validate()
    with pytest.raises(ValueError, match="weight_noise': must be at most 10"):
        TrainConfig(weight_noise=1e300).validate()
    assert _nll(8.123456) == "8.1235" and _nll(1e300) == "1e+300"


def test_a_closed_or_full_stderr_ends_the_messages_not_the_run(tmp_path: Path) -> None:
    from models.train import train
    from models.train.report import ConsoleReporter

    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    write_tiny_dataset(tmp_path / "d.npz", 0)
    config = TrainConfig(dataset=str(tmp_path / "d.npz"), hidden=3, epochs=2,
                         out=str(tmp_path / "run"), progress=False)
    result = train(config, reporter=ConsoleReporter(stream=Broken()))
    assert result.metrics["status"] == "finished"
    assert (tmp_path / "run" / "model.npz").is_file()


def test_a_link_swapped_during_sampling_does_not_lead_into_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    cli_sample = importlib.import_module("models.cli.sample")
    monkeypatch.chdir(tmp_path)
    write_tiny_dataset(tmp_path / "d.npz", 0)
    assert main(["train", "--dataset", "d.npz", "--hidden", "3", "--epochs", "1",
                 "--out", "run", "--no-progress"]) == 0
    model = (tmp_path / "run" / "model.npz").read_bytes()
    (tmp_path / "song.npz").symlink_to(tmp_path / "elsewhere.npz")
    real = cli_sample.sample

    def swapping(*a: Any, **kw: Any) -> Any:
        roll = real(*a, **kw)
        (tmp_path / "song.npz").unlink()
        (tmp_path / "song.npz").symlink_to(tmp_path / "run" / "model.npz")
        return roll

    monkeypatch.setattr(cli_sample, "sample", swapping)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", "run/model.npz", "--steps", "3",
                 "-o", "song.npz"]) == 2
    assert "through the link" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.npz").read_bytes() == model
