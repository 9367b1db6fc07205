"""Tests for models.generate.sample (generating piano rolls, ``minigrad sample``) and models.generate.midi."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from npz_layout import write_npz_dataset

from models.cli.main import main
from models.data import N_PITCHES, PITCH_LO, Split, batches
from models.generate.midi import MissingExtraError, read_midi_notes, write_midi
from models.generate.sample import PrimeSpec, load_model, sample
from models.nets.sequence import SequenceModel
from models.train import Reporter, TrainConfig, train

SVG = "{http://www.w3.org/2000/svg}"

# --------------------------------------------------------------------------- fixtures


def write_tiny_dataset(path: Path, seed: int = 0) -> Path:
    """A small synthetic dataset in the shared .npz layout: 4 sequences of 12..20
    steps per split, three or four notes per step between C3 and C5."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list[np.ndarray]] = {}
    for name in ("train", "valid", "test"):
        seqs = []
        for _ in range(4):
            roll = np.zeros((int(rng.integers(12, 21)), N_PITCHES), dtype=np.uint8)
            for frame in roll:
                frame[rng.choice(np.arange(48, 73) - PITCH_LO, int(rng.integers(3, 5)))] = 1
            seqs.append(roll)
        splits[name] = seqs
    return write_npz_dataset(path, splits)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="module")
def run_dir(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        dataset=str(tiny),
        hidden=6,
        epochs=2,
        batch_size=2,
        lr=1e-2,
        patience=0,
        out=str(out),
        progress=False,
    )
    train(config, reporter=Reporter())
    return out


@pytest.fixture(scope="module")
def model(run_dir: Path) -> SequenceModel:
    return load_model(run_dir / "model.npz")


def _logits_of(model: SequenceModel, roll: np.ndarray) -> np.ndarray:
    """(T, 88) logits of the model run over the whole roll (teacher forcing)."""
    split = Split(roll=roll, offsets=np.array([0, roll.shape[0]]))
    (batch,) = batches(split, 1)
    return model.logits(batch)[:, 0, :]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- sample()


def test_same_seed_same_song(model: SequenceModel) -> None:
    a = sample(model, 40, seed=3)
    b = sample(model, 40, seed=3)
    c = sample(model, 40, seed=4)
    assert a.shape == (40, N_PITCHES) and a.dtype == np.uint8
    assert set(np.unique(a).tolist()) <= {0, 1}
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_greedy_is_deterministic_and_matches_the_full_forward_pass(model: SequenceModel) -> None:
    g = sample(model, 30, greedy=True, seed=0)
    np.testing.assert_array_equal(g, sample(model, 30, greedy=True, seed=99))
    # step by step with the carried state == the T-step plan over the generated roll
    np.testing.assert_array_equal(g, (_logits_of(model, g) > 0).astype(np.uint8))


def _sample_step_by_forward(
    model: SequenceModel, steps: int, seed: int, greedy: bool, prime: np.ndarray | None
) -> np.ndarray:
    """The sampler as it was written first: ``Plan.forward`` once per step, each
    step given the previous run's final states (every check and copy made)."""
    from minigrad import plan_of

    width = model.input_size
    primed = np.zeros((0, width), np.uint8) if prime is None else prime.astype(np.uint8)
    n_primed, total = primed.shape[0], primed.shape[0] + steps
    roll = np.zeros((total, width), np.uint8)
    roll[:n_primed] = primed
    rng = np.random.default_rng(seed)
    plan = plan_of(model.cell, 1, wrt=())
    x = np.zeros((1, 1, width), dtype=model.dtype)
    inputs = {"x": x, "t": np.zeros_like(x), **model.noise(1, 1)}
    states = None
    block = np.empty((0, width))
    with np.errstate(over="ignore"):
        for t in range(total):
            run = plan.forward(model.params, inputs, states)
            states = run.states
            if t >= n_primed:
                logits = run.outputs["logits"][0, 0]
                if greedy:
                    roll[t] = logits > 0.0
                else:
                    i = (t - n_primed) % 4096
                    if i == 0:
                        block = rng.random((min(4096, total - t), width))
                    roll[t] = block[i] < 0.5 * (1.0 + np.tanh(0.5 * logits.astype(np.float64)))
            x[0, 0] = roll[t]
    return roll


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_sample_is_bit_identical_to_a_forward_pass_per_step(
    model: SequenceModel, tiny: Path, cell: str
) -> None:
    if cell != "gru":  # a stacked LSTM with dropout: several states and noise inputs
        model = SequenceModel(cell=cell, hidden_size=5, layers=2, seed=3, dropout=0.2)
    prime = PrimeSpec.parse(f"{tiny}:test:1:7").load()
    for greedy in (False, True):
        for p in (None, prime):
            got = sample(model, 300, seed=11, greedy=greedy, prime=p)
            want = _sample_step_by_forward(model, 300, 11, greedy, p)
            np.testing.assert_array_equal(got, want)


def test_a_stepper_carries_the_states_like_forward_and_checks_its_use() -> None:
    from minigrad import plan_of
    from minigrad.errors import ArgumentError, GraphError

    model = SequenceModel(cell="lstm", hidden_size=4, layers=2, seed=1)
    plan = plan_of(model.cell, 1, wrt=())
    rng = np.random.default_rng(0)
    frames = (rng.random((20, 1, 1, N_PITCHES)) < 0.2).astype(np.float64)
    x0 = frames[0]
    stepper = plan.stepper(model.params, {"x": x0, "t": np.zeros_like(x0)})
    states = None
    for t in range(20):
        stepper.input("x")[...] = frames[t]
        stepper.step()
        run = plan.forward(model.params, {"x": frames[t], "t": np.zeros_like(x0)}, states)
        states = run.states
        np.testing.assert_array_equal(stepper.output("logits"), run.outputs["logits"])
        for name, value in stepper.states().items():
            np.testing.assert_array_equal(value, run.states[name])
    with pytest.raises(ArgumentError, match="a stepper runs a plan of one step, this one has 2"):
        plan_of(model.cell, 2, wrt=()).stepper(model.params, {"x": x0, "t": x0})
    with pytest.raises(GraphError, match="no input 'y'"):
        stepper.input("y")
    with pytest.raises(GraphError, match="no output 'h'"):
        stepper.output("h")


def test_prime_is_respected(model: SequenceModel, tiny: Path) -> None:
    prime = PrimeSpec.parse(f"{tiny}:test:1:7").load()
    roll = sample(model, 20, greedy=True, prime=prime)
    assert roll.shape == (27, N_PITCHES)
    np.testing.assert_array_equal(roll[:7], prime)
    # the generated part continues the primed state (teacher forcing over the prime)
    np.testing.assert_array_equal(roll[7:], (_logits_of(model, roll)[7:] > 0).astype(np.uint8))
    sampled = sample(model, 20, seed=1, prime=prime)
    np.testing.assert_array_equal(sampled[:7], prime)
    assert sample(model, 0, prime=prime).shape == (7, N_PITCHES)


def test_notes_are_drawn_from_their_probabilities() -> None:
    m = SequenceModel("gru", hidden_size=3)
    q = np.linspace(0.05, 0.95, N_PITCHES)
    m.params["V"][:] = 0.0  # the probabilities no longer depend on the state
    m.params["c_out"][:] = np.log(q / (1 - q))
    n = 1000
    roll = sample(m, n, seed=0)
    freq = roll.mean(axis=0)
    assert np.all(np.abs(freq - q) < 5 * np.sqrt(q * (1 - q) / n))
    np.testing.assert_array_equal(sample(m, 5, greedy=True), np.tile(q > 0.5, (5, 1)))


def test_sample_rejects_bad_arguments(model: SequenceModel) -> None:
    with pytest.raises(ValueError, match="steps"):
        sample(model, -1)
    with pytest.raises(ValueError, match="seed"):
        sample(model, 3, seed=-2)
    with pytest.raises(ValueError, match=r"shape \(P, 88\)"):
        sample(model, 3, prime=np.zeros((4, 12)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        sample(model, 3, prime=np.full((4, N_PITCHES), 0.5))


def test_load_model_from_checkpoint_and_model_file(run_dir: Path, model: SequenceModel) -> None:
    from_ckpt = load_model(run_dir / "checkpoint.npz")
    assert from_ckpt.cell_type == model.cell_type and from_ckpt.hidden_size == 6
    for k, v in model.params.items():  # the checkpoint's best parameters are the model's
        np.testing.assert_array_equal(from_ckpt.params[k], v)


# --------------------------------------------------------------------------- --prime


@pytest.mark.parametrize(
    ("spec", "fragment", "exit_code"),
    [
        # a malformed or out-of-range option value is a usage error (2)
        ("bach_chorales", "expected DATASET:SPLIT:INDEX:STEPS", 2),
        ("test:0:4", "got 3 part(s)", 2),
        ("{tiny}:dev:0:4", "SPLIT 'dev' is not one of train, valid, test", 2),
        ("{tiny}:test:first:4", "INDEX 'first' is not an integer", 2),
        ("{tiny}:test:0:four", "STEPS 'four' is not an integer", 2),
        ("{tiny}:test:0:0", "STEPS must be >= 1", 2),
        ("{tiny}:test:4:2", "INDEX 4 is out of range: split 'test' of 'tiny' has 4 sequence(s) (0..3)", 2),
        ("{tiny}:test:-1:2", "INDEX -1 is out of range: split 'test' of 'tiny' has 4 sequence(s) (0..3); a negative INDEX does not count from the end", 2),
        ("{tiny}:test:-5:2", "INDEX -5 is out of range", 2),
        ("{tiny}:test:0:500", "STEPS 500 exceeds the", 2),
        # a dataset that cannot be read
        ("{tiny}.missing:test:0:4", "DATASET: ", 1),
    ],
)
def test_bad_prime_specs_name_the_part_at_fault(
    spec: str,
    fragment: str,
    exit_code: int,
    tiny: Path,
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = spec.format(tiny=tiny)
    argv = ["sample", "--checkpoint", str(run_dir / "model.npz"), "--steps", "4"]
    code, out, err = _run([*argv, "--prime", spec, "--roll", str(tmp_path / "r.svg")], capsys)
    assert code == exit_code and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minigrad: error: --prime ")
    assert fragment in lines[0]
    assert not (tmp_path / "r.svg").exists()


def test_prime_spec_round_trip_and_default_dataset(tiny: Path) -> None:
    spec = PrimeSpec.parse(f"{tiny}:valid:1:3")
    assert (spec.split, spec.index, spec.steps) == ("valid", 1, 3)
    assert PrimeSpec.parse(str(spec)) == spec
    empty = PrimeSpec.parse(":valid:0:3")
    assert empty.dataset == ""
    np.testing.assert_array_equal(
        empty.load(str(tiny)), PrimeSpec.parse(f"{tiny}:valid:0:3").load()
    )
    with pytest.raises(ValueError, match="DATASET is empty"):
        empty.load(None)


# --------------------------------------------------------------------------- MIDI


def test_midi_round_trip(tmp_path: Path) -> None:
    mido = pytest.importorskip("mido")
    rng = np.random.default_rng(0)
    roll = (rng.random((25, N_PITCHES)) < 0.08).astype(np.uint8)
    roll[:2] = 0  # leading rests
    roll[-3:] = 0  # trailing rests
    roll[5:12, 40] = 1  # a held note
    path = tmp_path / "song.mid"
    write_midi(roll, path, tempo_bpm=90.0)
    song = mido.MidiFile(str(path))
    assert song.type == 0 and len(song.tracks) == 1
    tempos = [m.tempo for m in song.tracks[0] if m.type == "set_tempo"]
    assert tempos == [mido.bpm2tempo(90.0)]
    ons = [m for m in song.tracks[0] if m.type == "note_on" and m.velocity > 0]
    runs = int(np.sum(np.diff(np.vstack([np.zeros((1, N_PITCHES)), roll]), axis=0) > 0))
    assert len(ons) == runs  # one note per run of consecutive steps
    np.testing.assert_array_equal(read_midi_notes(path), roll)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.mid"]  # no temporary left
    # another time grid
    write_midi(roll, path, ticks_per_step=120)
    np.testing.assert_array_equal(read_midi_notes(path, ticks_per_step=120), roll)


def test_midi_rejects_bad_rolls(tmp_path: Path) -> None:
    pytest.importorskip("mido")
    with pytest.raises(ValueError, match="only 0 and 1"):
        write_midi(np.full((3, N_PITCHES), 0.3), tmp_path / "a.mid")
    with pytest.raises(ValueError, match="shape"):
        write_midi(np.zeros(5), tmp_path / "a.mid")
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not midi")
    with pytest.raises(ValueError, match="not a readable MIDI file"):
        read_midi_notes(bad)


def test_without_mido_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mido", None)  # import mido now fails
    with pytest.raises(MissingExtraError, match=r'pip install "minigrad\[midi\]"'):
        write_midi(np.zeros((3, N_PITCHES), dtype=np.uint8), tmp_path / "a.mid")
    assert not (tmp_path / "a.mid").exists()


# --------------------------------------------------------------------------- the command


def test_sample_command_writes_midi_and_roll(
    run_dir: Path, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mido")
    mid, svg = tmp_path / "song.mid", tmp_path / "song.svg"
    argv = ["sample", "--checkpoint", str(run_dir / "model.npz"), "--steps", "12", "--seed", "5"]
    argv += ["--prime", f"{tiny}:test:0:6", "-o", str(mid), "--roll", str(svg)]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 18 and summary["primed_steps"] == 6
    assert summary["generated_steps"] == 12 and summary["files"] == [str(svg), str(mid)]
    roll = read_midi_notes(mid)
    prime = PrimeSpec.parse(f"{tiny}:test:0:6").load()
    model = load_model(run_dir / "model.npz")
    expected = sample(model, 12, seed=5, prime=prime)
    # the MIDI file holds the returned roll (trailing empty steps included)
    np.testing.assert_array_equal(roll, expected)


def test_roll_svg_is_well_formed_and_marks_the_prime(
    run_dir: Path, tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svg = tmp_path / "song.svg"
    argv = ["sample", "--checkpoint", str(run_dir / "model.npz"), "--steps", "10", "--greedy"]
    code, _, err = _run([*argv, "--prime", f"{tiny}:valid:2:5", "--roll", str(svg)], capsys)
    assert code == 0, err
    root = ET.parse(svg).getroot()
    assert root.tag == f"{SVG}svg"
    primed = root.findall(f".//{SVG}rect[@class='primed']")
    assert len(primed) == 1
    frame = root.find(f".//{SVG}rect[@class='frame']")
    assert frame is not None
    step_w = float(frame.get("width", "0")) / 15
    assert float(primed[0].get("width", "0")) == pytest.approx(5 * step_w, abs=0.02)
    labels = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "primed (5 steps)" in " ".join(labels) and "generated" in labels
    notes = root.findall(f".//{SVG}rect[@class='note']")
    boundary = float(frame.get("x", "0")) + 5 * step_w
    grey = [n for n in notes if n.get("fill") == "#777777"]
    assert grey and all(float(n.get("x", "0")) < boundary - 1e-6 for n in grey)
    assert all(float(n.get("x", "0")) >= boundary - 0.02 for n in notes if n not in grey)


def test_sample_command_npz_output(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "song.npz"
    argv = [
        "sample",
        "--checkpoint",
        str(run_dir / "checkpoint.npz"),
        "--steps",
        "9",
        "-o",
        str(out),
    ]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    with np.load(out, allow_pickle=False) as f:
        np.testing.assert_array_equal(f["roll"], sample(load_model(run_dir / "model.npz"), 9))
        assert int(f["primed_steps"]) == 0 and int(f["pitch_lo"]) == PITCH_LO
    assert json.loads(stdout)["files"] == [str(out)]


def test_midi_without_mido_exits_1_with_the_hint_and_keeps_the_roll(
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "mido", None)
    mid, svg = tmp_path / "song.mid", tmp_path / "song.svg"
    argv = ["sample", "--checkpoint", str(run_dir / "model.npz"), "--steps", "5"]
    code, out, err = _run([*argv, "-o", str(mid), "--roll", str(svg)], capsys)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minigrad: error: ")
    assert 'pip install "minigrad[midi]"' in lines[0] and str(svg) in lines[0]
    assert svg.is_file() and not mid.exists()
    ET.parse(svg)


@pytest.mark.parametrize(
    ("extra", "code", "fragment"),
    [
        (["--steps", "4"], 2, "nothing to write"),
        (["--steps", "-1", "-o", "x.npz"], 2, "--steps must be in 0..1000000"),
        (["--steps", "1000000000000", "-o", "x.npz"], 2, "--steps must be in 0..1000000"),
        (["--steps", "4", "-o", "x.wav"], 2, "unknown file type '.wav'"),
        (["--steps", "4", "-o", "x.npz", "--roll", "x.npz"], 2, "name the same file"),
        (["-o", "x.npz"], 2, "--steps"),
        (["--steps", "four", "-o", "x.npz"], 2, "invalid int value"),
    ],
)
def test_sample_command_usage_errors(
    extra: list[str],
    code: int,
    fragment: str,
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    got, out, err = _run(["sample", "--checkpoint", str(run_dir / "model.npz"), *extra], capsys)
    assert got == code and out == ""
    assert fragment in err
    if fragment not in ("--steps", "invalid int value"):
        assert len(err.strip().splitlines()) == 1


def test_sample_refuses_to_write_over_its_checkpoint(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = run_dir / "model.npz"
    before = model.read_bytes()
    for flag in ("-o", "--roll"):
        argv = ["sample", "--checkpoint", str(model), "--steps", "3", flag, str(model)]
        got, _, err = _run(argv, capsys)
        assert got == 2 and "refusing to overwrite an input" in err
    assert model.read_bytes() == before


def test_sample_command_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope" / "model.npz"
    code, out, err = _run(
        ["sample", "--checkpoint", str(missing), "--steps", "3", "-o", str(tmp_path / "a.npz")],
        capsys,
    )
    assert code == 1 and out == ""
    assert err.startswith("minigrad: error: ") and str(missing) in err
    assert len(err.strip().splitlines()) == 1


def test_sample_is_a_registered_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "sample" in capsys.readouterr().out
    assert main(["sample", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "DATASET:SPLIT:INDEX:STEPS" in help_text and "minigrad[midi]" in help_text
