"""Tests for models.data: loaders, their errors, the embedded dataset and batching."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from models.data import (
    EMBEDDED,
    N_PITCHES,
    PITCH_LO,
    Batch,
    DataError,
    Dataset,
    Split,
    batches,
    load_dataset,
    load_npz,
    load_pickle,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS_DIR = Path(__file__).resolve().parents[1] / "models" / "data" / "datasets"
SPLITS = ("train", "valid", "test")

# A sequence: a list of time steps, each a list of MIDI note numbers.
Seq = list[list[int]]


def small_data() -> dict[str, list[Seq]]:
    """Three tiny splits with sequences of different lengths, rests included."""
    return {
        "train": [
            [[60, 64, 67], [62], [], [21, 108]],
            [[48]],
            [[50, 53], [52, 55], [53, 57]],
        ],
        "valid": [[[60], [61]], [[72, 76]]],
        "test": [[[65]]],
    }


def npz_arrays(data: dict[str, list[Seq]]) -> dict[str, npt.NDArray[Any]]:
    """Encode ``data`` in the shared ``.npz`` layout."""
    arrays: dict[str, npt.NDArray[Any]] = {"format_version": np.asarray(1, dtype=np.int32)}
    for s, seqs in data.items():
        steps = [step for seq in seqs for step in seq]
        arrays[f"{s}_notes"] = np.asarray([n for st in steps for n in st], dtype=np.int16)
        arrays[f"{s}_step_offsets"] = np.cumsum([0] + [len(st) for st in steps]).astype(np.int32)
        arrays[f"{s}_seq_offsets"] = np.cumsum([0] + [len(q) for q in seqs]).astype(np.int32)
    return arrays


def roll_of(seq: Seq) -> npt.NDArray[np.uint8]:
    """The (T, 88) piano roll of one sequence, built the slow way."""
    roll = np.zeros((len(seq), N_PITCHES), dtype=np.uint8)
    for t, step in enumerate(seq):
        for n in step:
            roll[t, n - PITCH_LO] = 1
    return roll


def write_npz(path: Path, arrays: dict[str, npt.NDArray[Any]]) -> Path:
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.fixture
def small_npz(tmp_path: Path) -> Path:
    return write_npz(tmp_path / "small.npz", npz_arrays(small_data()))


def assert_matches(dataset: Dataset, data: dict[str, list[Seq]]) -> None:
    for s in SPLITS:
        split = dataset.split(s)
        assert len(split) == len(data[s])
        assert split.n_steps == sum(len(q) for q in data[s])
        for i, seq in enumerate(data[s]):
            np.testing.assert_array_equal(split.sequence(i), roll_of(seq))


# --------------------------------------------------------------------------- shared data


def shared_npz() -> Path:
    path = SHARED_DATA / "jsb_chorales.npz"
    if not path.is_file():
        pytest.skip(f"reference data {path} is absent (it lives outside the repository)")
    return path


@pytest.mark.parametrize(
    ("split", "n_seqs", "n_steps", "n_notes"),
    [("train", 229, 13807, 53824), ("valid", 76, 4602, 17811), ("test", 77, 4725, 18367)],
)
def test_shared_jsb_counts(split: str, n_seqs: int, n_steps: int, n_notes: int) -> None:
    dataset = load_dataset(shared_npz())
    part = dataset.split(split)
    assert len(part) == n_seqs
    assert part.n_steps == n_steps
    assert int(part.roll.sum(dtype=np.int64)) == n_notes
    sounding = np.flatnonzero(part.roll.any(axis=0)) + PITCH_LO
    assert sounding.min() >= 43 and sounding.max() <= 96


# --------------------------------------------------------------------------- embedded data

EMBEDDED_COUNTS = {"train": (227, 12431), "valid": (71, 3973), "test": (67, 3467)}


def test_embedded_dataset_loads() -> None:
    dataset = load_dataset(EMBEDDED)
    assert dataset.name == EMBEDDED
    assert len(dataset.train) > 100
    for s in SPLITS:
        split = dataset.split(s)
        assert (len(split), split.n_steps) == EMBEDDED_COUNTS[s]
        assert split.roll.shape == (split.n_steps, N_PITCHES)
        assert set(np.unique(split.roll).tolist()) <= {0, 1}
        assert split.roll.sum(axis=1).max() <= 4  # four voices at most
    npz = DATASETS_DIR / f"{EMBEDDED}.npz"
    assert npz.stat().st_size < 1_000_000
    with np.load(npz, allow_pickle=False) as archive:
        assert archive["train_notes"].dtype == np.int16
        assert archive["train_step_offsets"].dtype == np.int32
        assert archive["train_seq_offsets"].dtype == np.int32
        assert int(archive["format_version"]) == 1
        assert int(archive["pitch_lo"]) == 21 and int(archive["pitch_hi"]) == 108
        assert str(archive["source"]).startswith("music21 ")
        assert len(str(archive["source_sha256"])) == 64


def test_embedded_dataset_rebuilds_identically() -> None:
    """Rebuilding from the music21 corpus gives the shipped arrays (about a minute)."""
    music21 = pytest.importorskip("music21")
    from models.data.datasets import build_chorales

    with np.load(DATASETS_DIR / f"{EMBEDDED}.npz", allow_pickle=False) as archive:
        shipped = {k: archive[k] for k in archive.files}
    built_with = str(shipped["source"]).split()[1]
    if built_with != music21.__version__:
        pytest.skip(f"shipped file was built with music21 {built_with}, not {music21.__version__}")
    rebuilt = build_chorales.build_arrays()
    assert sorted(rebuilt) == sorted(shipped)
    for key, value in shipped.items():
        np.testing.assert_array_equal(rebuilt[key], value, err_msg=key)
        assert rebuilt[key].dtype == value.dtype, key


def test_npz_writer_is_byte_deterministic(tmp_path: Path) -> None:
    from models.data.datasets import build_chorales

    arrays = npz_arrays(small_data())
    build_chorales.write_npz(tmp_path / "a.npz", arrays)
    build_chorales.write_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert_matches(load_npz(tmp_path / "a.npz"), small_data())


def test_assign_split_is_stable() -> None:
    from models.data.datasets.build_chorales import assign_split

    names = [f"bwv{i}.{j}.mxl" for i in range(1, 200) for j in range(1, 4)]
    splits = [assign_split(n) for n in names]
    assert splits == [assign_split(n) for n in names]
    share = splits.count("train") / len(splits)
    assert 0.5 < share < 0.7


# --------------------------------------------------------------------------- npz loading


def test_npz_loads(small_npz: Path) -> None:
    dataset = load_dataset(small_npz)
    assert dataset.name == "small"
    assert_matches(dataset, small_data())
    assert dataset.train.offsets.dtype == np.int64
    assert dataset.train.roll.dtype == np.uint8
    np.testing.assert_array_equal(dataset.train.lengths, [4, 1, 3])


def test_split_is_read_only(small_npz: Path) -> None:
    split = load_npz(small_npz).train
    with pytest.raises(ValueError, match="read-only"):
        split.roll[0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        split.offsets[0] = 1


def test_truncated_npz(small_npz: Path, tmp_path: Path) -> None:
    data = small_npz.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.npz: corrupt or truncated \.npz archive"):
        load_npz(cut)


def test_corrupt_npz_member(small_npz: Path, tmp_path: Path) -> None:
    data = bytearray(small_npz.read_bytes())
    for i in range(60, len(data) // 2):
        data[i] ^= 0x5A
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bad\.npz: corrupt or truncated"):
        load_npz(bad)


def test_text_file_named_npz(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("60 64 67\n62\n")
    with pytest.raises(DataError, match=r"notes\.npz: is not a \.npz \(zip\) archive") as info:
        load_dataset(path)
    assert "_seq_offsets" in str(info.value)
    assert "\n" not in str(info.value)


def test_empty_file_and_npy_named_npz(tmp_path: Path) -> None:
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.npz: is not a \.npz"):
        load_npz(empty)
    npy = tmp_path / "array.npz"
    with npy.open("wb") as fh:
        np.save(fh, np.arange(3))
    with pytest.raises(DataError, match=r"array\.npz: is a single \.npy array"):
        load_npz(npy)


def test_npz_missing_keys(tmp_path: Path) -> None:
    arrays = npz_arrays(small_data())
    del arrays["valid_seq_offsets"], arrays["test_notes"]
    path = write_npz(tmp_path / "partial.npz", arrays)
    with pytest.raises(DataError, match=r"partial\.npz: missing key\(s\)") as info:
        load_npz(path)
    message = str(info.value)
    assert "valid_seq_offsets" in message and "test_notes" in message
    assert "train_notes" not in message.split(";")[0]


def test_npz_of_another_layout(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "other.npz", {"x": np.zeros(3), "y": np.ones(2)})
    with pytest.raises(DataError, match=r"other\.npz: missing key\(s\) format_version"):
        load_npz(path)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("format_version", np.asarray(2), "format_version: expected the integer 1"),
        (
            "train_notes",
            np.asarray([60, 64, 67, 62, 21, 109, 48, 50, 53, 52, 55, 53, 57]),
            "key train_notes: expected MIDI notes in 21..108, got 21..109",
        ),
        (
            "valid_notes",
            np.asarray([60.0, 61.0, 72.0, 76.0]),
            "key valid_notes: expected a 1-d integer",
        ),
        ("test_step_offsets", np.asarray([0, 2]), "key test_step_offsets: expected offsets from 0"),
        (
            "train_seq_offsets",
            np.asarray([0, 4, 3, 8]),
            "train_seq_offsets: expected non-decreasing",
        ),
        ("valid_seq_offsets", np.asarray([0, 2, 5]), "valid_seq_offsets: expected offsets from 0"),
    ],
)
def test_npz_bad_values(tmp_path: Path, key: str, value: npt.NDArray[Any], expected: str) -> None:
    arrays = npz_arrays(small_data())
    arrays[key] = value
    path = write_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(DataError, match=r"bad\.npz") as info:
        load_npz(path)
    assert expected in str(info.value)


def test_missing_path_and_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.npz"
    with pytest.raises(DataError, match=r"nowhere\.npz: no such file"):
        load_npz(missing)
    with pytest.raises(DataError, match="neither an embedded dataset"):
        load_dataset(missing)
    with pytest.raises(DataError, match="is a directory"):
        load_npz(tmp_path)
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(tmp_path)
    with pytest.raises(DataError, match=r"no such file \(expected a \.pickle"):
        load_pickle(tmp_path / "nowhere.pickle")


def test_unknown_name_lists_embedded() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("nottingham")
    message = str(info.value)
    assert "'nottingham'" in message and EMBEDDED in message
    assert ".npz" in message and ".pickle" in message


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("60,64\n")
    with pytest.raises(DataError, match=r"unknown file type '\.csv'"):
        load_dataset(path)


# --------------------------------------------------------------------------- pickles


def write_pickle(path: Path, obj: object, protocol: int = 2) -> Path:
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def test_pickle_loads(tmp_path: Path) -> None:
    data = small_data()
    original: dict[str, Any] = {
        "train": [[tuple(float(n) for n in step) for step in seq] for seq in data["train"]],
        "valid": data["valid"],
        "test": [[tuple(step) for step in seq] for seq in data["test"]],
    }
    path = write_pickle(tmp_path / "JSB Chorales.pickle", original)
    dataset = load_dataset(path)
    assert dataset.name == "JSB Chorales"
    assert_matches(dataset, data)


def test_python2_style_pickle_loads(tmp_path: Path) -> None:
    """Protocol 0 with latin-1 byte strings as keys, as Python 2's cPickle wrote them."""
    raw = pickle.dumps({"train": [[[60]]], "valid": [[[62.0]]], "test": [[[64], []]]}, protocol=0)
    path = tmp_path / "old.pkl"
    path.write_bytes(raw)
    dataset = load_pickle(path)
    assert dataset.test.n_steps == 2


@pytest.mark.parametrize(
    ("split", "seq_index", "bad_step", "expected"),
    [
        ("valid", 1, [72, 200], "note 200 is outside 21..108"),
        ("train", 2, [60, "64"], "note '64' is not a MIDI note number"),
        ("test", 0, [60.5], "note 60.5 is not a MIDI note number"),
        ("train", 0, [True], "note True is not a MIDI note number"),
        ("valid", 0, [20], "note 20 is outside 21..108"),
    ],
)
def test_pickle_bad_note_names_place(
    tmp_path: Path, split: str, seq_index: int, bad_step: list[Any], expected: str
) -> None:
    data: dict[str, Any] = small_data()
    data[split][seq_index][0] = bad_step
    path = write_pickle(tmp_path / "bad.pickle", data)
    with pytest.raises(DataError) as info:
        load_pickle(path)
    message = str(info.value)
    assert "bad.pickle" in message
    assert f"split '{split}', sequence {seq_index}, step 0" in message
    assert expected in message


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([1, 2, 3], "got a pickled list"),
        ({"train": [], "valid": []}, "missing split(s) test"),
        ({"train": 5, "valid": [], "test": []}, "split 'train': expected a list of sequences"),
        (
            {"train": [], "valid": [[60]], "test": []},
            "split 'valid', sequence 0, step 0: expected a list",
        ),
        ({"train": [], "valid": [], "test": ["abc"]}, "split 'test', sequence 0: expected a list"),
    ],
)
def test_pickle_bad_structure(tmp_path: Path, obj: object, expected: str) -> None:
    path = write_pickle(tmp_path / "odd.pickle", obj)
    with pytest.raises(DataError, match=r"odd\.pickle") as info:
        load_pickle(path)
    assert expected in str(info.value)


class _OpensAFile:
    """Unpickling this would call builtins.open(target, "w"), creating the file."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (self.target, "w"))


class _RunsACommand:
    """Unpickling this would run ``touch target`` through os.system."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.target}'",))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize(
    ("payload", "culprit"),
    [
        (_OpensAFile, f"{builtins.open.__module__}.open"),  # io.open
        (_RunsACommand, f"{os.system.__module__}.system"),  # posix.system
    ],
)
def test_crafted_pickle_is_refused(
    tmp_path: Path, protocol: int, payload: type, culprit: str
) -> None:
    target = tmp_path / "pwned"
    evil = {"train": [[[60]]], "valid": [payload(target)], "test": []}
    path = write_pickle(tmp_path / "evil.pickle", evil, protocol=protocol)
    with pytest.raises(DataError, match=r"evil\.pickle: refused to load") as info:
        load_dataset(path)
    assert "only plain lists, tuples, dicts and numbers are accepted" in str(info.value)
    assert f"it references {culprit};" in str(info.value)
    assert not target.exists()


def test_pickle_of_numpy_array_is_refused(tmp_path: Path) -> None:
    path = write_pickle(tmp_path / "np.pickle", {"train": np.zeros(3)})
    with pytest.raises(DataError, match=r"refused to load .* references numpy"):
        load_pickle(path)


def test_garbage_pickle(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pickle"
    path.write_bytes(b"\x80\x02]q\x00(K")  # cut short
    with pytest.raises(DataError, match=r"garbage\.pickle: not a readable pickle"):
        load_pickle(path)


# --------------------------------------------------------------------------- splits


def test_split_sequence_and_subset(small_npz: Path) -> None:
    train = load_npz(small_npz).train
    data = small_data()["train"]
    np.testing.assert_array_equal(train.sequence(2), roll_of(data[2]))
    with pytest.raises(IndexError):
        train.sequence(3)
    # a negative index is refused, not counted from the end
    for bad in (-1, -3, 3, 1.0, True):
        with pytest.raises(IndexError, match=r"valid indices are 0\.\.2|integer in 0\.\.2"):
            train.sequence(bad)  # type: ignore[arg-type]
    for bad_list in ([-1], [0, -3], [0, 3], [0.5]):
        with pytest.raises(IndexError, match=r"0\.\.2"):
            train.subset(bad_list)  # type: ignore[arg-type]
    sub = train.subset([2, 0, 2])
    assert len(sub) == 3 and sub.n_steps == 3 + 4 + 3
    for i, j in enumerate([2, 0, 2]):
        np.testing.assert_array_equal(sub.sequence(i), roll_of(data[j]))
    assert len(train.subset(np.asarray([], dtype=np.int64))) == 0
    with pytest.raises(IndexError):
        train.subset([5])


def test_dataset_split_name(small_npz: Path) -> None:
    dataset = load_npz(small_npz)
    assert dataset.split("valid") is dataset.valid
    with pytest.raises(DataError, match="no split 'validation'"):
        dataset.split("validation")


def test_split_rejects_bad_arrays() -> None:
    roll = np.zeros((3, N_PITCHES), dtype=np.uint8)
    with pytest.raises(DataError, match="offsets must rise"):
        Split(roll=roll, offsets=np.asarray([0, 2], dtype=np.int64))
    with pytest.raises(DataError, match="uint8"):
        Split(roll=np.zeros((3, 12), dtype=np.uint8), offsets=np.asarray([0, 3], dtype=np.int64))


# --------------------------------------------------------------------------- batches


def test_batch_shapes_padding_and_shift(small_npz: Path) -> None:
    train = load_npz(small_npz).train
    data = small_data()["train"]
    out = list(batches(train, 2))
    assert [b.lengths.tolist() for b in out] == [[4, 1], [3]]
    first = out[0]
    assert isinstance(first, Batch)
    assert first.inputs.shape == first.targets.shape == (4, 2, N_PITCHES)
    assert first.mask.shape == (4, 2)
    assert first.inputs.dtype == first.targets.dtype == first.mask.dtype == np.float64
    np.testing.assert_array_equal(first.mask, [[1, 1], [1, 0], [1, 0], [1, 0]])
    assert first.n_steps == 5 == int(first.mask.sum())
    for b, seq in enumerate(data[:2]):
        roll = roll_of(seq)
        length = len(seq)
        np.testing.assert_array_equal(first.targets[:length, b], roll)
        np.testing.assert_array_equal(first.inputs[0, b], 0.0)
        np.testing.assert_array_equal(first.inputs[1:length, b], roll[:-1])
        np.testing.assert_array_equal(first.targets[length:, b], 0.0)
        np.testing.assert_array_equal(first.inputs[length:, b], 0.0)
    assert out[1].inputs.shape == (3, 1, N_PITCHES)


def test_batches_float32(small_npz: Path) -> None:
    (batch,) = batches(load_npz(small_npz).train, 8, dtype=np.float32)
    assert batch.inputs.dtype == batch.targets.dtype == batch.mask.dtype == np.float32
    assert batch.lengths.tolist() == [4, 1, 3]


def test_batches_argument_checks(small_npz: Path) -> None:
    train = load_npz(small_npz).train
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(train, 0))
    with pytest.raises(TypeError, match="batch_size"):
        next(batches(train, 2.0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="float"):
        next(batches(train, 2, dtype=np.int64))  # type: ignore[arg-type]


def test_split_keeps_the_roll_packed_and_unpacks_what_is_asked() -> None:
    rng = np.random.default_rng(0)
    roll = (rng.random((9, N_PITCHES)) < 0.1).astype(np.uint8)
    split = Split(roll=roll, offsets=np.asarray([0, 4, 9]))
    assert split.bits.shape == (9, 11) and split.bits.nbytes == 99
    np.testing.assert_array_equal(split.roll, roll)
    np.testing.assert_array_equal(split.rows(np.asarray([8, 0, 8])), roll[[8, 0, 8]])
    np.testing.assert_array_equal(split.rows(slice(2, 5)), roll[2:5])
    np.testing.assert_array_equal(split.sequence(1), roll[4:9])
    np.testing.assert_array_equal(split.subset([1, 0]).roll, np.concatenate([roll[4:], roll[:4]]))
    again = Split.from_bits(np.packbits(roll, axis=1), [0, 9])
    np.testing.assert_array_equal(again.roll, roll)
    for view in (split.bits, split.rows(slice(0, 2)), split.sequence(0)):
        with pytest.raises(ValueError, match="read-only"):
            view[0, 0] = 1
    with pytest.raises(AttributeError, match="read-only"):
        split.offsets = np.asarray([0, 9])  # type: ignore[misc]
    with pytest.raises(DataError, match="bits"):
        Split.from_bits(np.zeros((3, 10), dtype=np.uint8), [0, 3])
    with pytest.raises(DataError, match="offsets"):
        Split.from_bits(np.zeros((3, 11), dtype=np.uint8), [0, 2])


def test_batches_are_filled_in_blocks_of_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    batches_module = importlib.import_module("models.data.batches")
    split = load_dataset(EMBEDDED).valid
    whole = list(batches(split, 5))
    monkeypatch.setattr(batches_module, "_BLOCK", 3)
    for a, b in zip(whole, batches(split, 5), strict=True):
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.targets, b.targets)
        np.testing.assert_array_equal(a.mask, b.mask)
    assert int(whole[0].targets.sum()) > 0


def test_batches_max_padded_steps_closes_batches_early(small_npz: Path) -> None:
    train = load_npz(small_npz).train  # lengths 4, 1, 3
    # 4 * 2 = 8 padded steps fit in 8; adding the third (4 * 3 = 12) would not
    assert [b.lengths.tolist() for b in batches(train, 8, max_padded_steps=8)] == [[4, 1], [3]]
    assert [b.lengths.tolist() for b in batches(train, 8, max_padded_steps=7)] == [[4], [1, 3]]
    # a sequence longer than the bound still gets a batch of its own
    assert [b.lengths.tolist() for b in batches(train, 8, max_padded_steps=1)] == [[4], [1], [3]]
    assert [b.lengths.tolist() for b in batches(train, 8, max_padded_steps=10**6)] == [[4, 1, 3]]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_padded_steps"):
            next(batches(train, 2, max_padded_steps=bad))  # type: ignore[arg-type]


def test_load_builds_the_roll_in_blocks(small_npz: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import models.data.load as load_module

    whole = load_npz(small_npz)
    monkeypatch.setattr(load_module, "_ROLL_BLOCK", 1)
    blocks = load_npz(small_npz)
    for s in ("train", "valid", "test"):
        np.testing.assert_array_equal(whole.split(s).roll, blocks.split(s).roll)
        assert int(whole.split(s).roll.sum()) > 0


def _epoch_signature(split: Split, batch_size: int, seed: int) -> list[bytes]:
    """Each sequence of one shuffled epoch, as the bytes of its unpadded targets."""
    seen = []
    for batch in batches(split, batch_size, rng=np.random.default_rng(seed)):
        for b, length in enumerate(batch.lengths.tolist()):
            seen.append(batch.targets[:length, b].astype(np.uint8).tobytes())
    return seen


def test_shuffled_epoch_is_deterministic_and_complete() -> None:
    dataset = load_dataset(EMBEDDED)
    valid = dataset.valid
    expected = sorted(valid.sequence(i).tobytes() for i in range(len(valid)))
    first = _epoch_signature(valid, 16, seed=3)
    assert first == _epoch_signature(valid, 16, seed=3)
    assert first != _epoch_signature(valid, 16, seed=4)
    assert sorted(first) == expected
    in_order = [valid.sequence(i).tobytes() for i in range(len(valid))]
    assert first != in_order
    batches_seen = list(batches(valid, 16, rng=np.random.default_rng(3)))
    assert sum(b.n_steps for b in batches_seen) == valid.n_steps
    assert [len(b.lengths) for b in batches_seen] == [16] * (len(valid) // 16) + (
        [len(valid) % 16] if len(valid) % 16 else []
    )


def test_a_batch_of_one_sequence_shares_one_array_of_frames(
    small_npz: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from models.data import batch_groups, make_batch

    train = load_npz(small_npz).train  # lengths 4, 1, 3
    batches_module = importlib.import_module("models.data.batches")
    monkeypatch.setattr(batches_module, "_BLOCK", 2)
    for i in range(len(train)):
        one = make_batch(train, np.asarray([i]), np.float64)
        roll = train.sequence(i)
        # the same contents as in a padded batch, without a second copy
        np.testing.assert_array_equal(one.targets[:, 0], roll)
        np.testing.assert_array_equal(one.inputs[0, 0], 0.0)
        np.testing.assert_array_equal(one.inputs[1:, 0], roll[:-1])
        assert one.inputs.base is one.targets.base is not None
        assert one.inputs.nbytes + one.targets.nbytes == 2 * len(roll) * N_PITCHES * 8
        with pytest.raises(ValueError, match="read-only"):
            one.inputs[0, 0, 0] = 1.0
    # batch_groups draws the permutation batches draws, and gives the same groups
    groups = batch_groups(train, 2, rng=np.random.default_rng(3), max_padded_steps=4)
    made = list(batches(train, 2, rng=np.random.default_rng(3), max_padded_steps=4))
    assert sorted(int(i) for g in groups for i in g) == [0, 1, 2] and len(groups) == len(made)
    for g, b in zip(groups, made, strict=True):
        np.testing.assert_array_equal(train.lengths[g], b.lengths)
