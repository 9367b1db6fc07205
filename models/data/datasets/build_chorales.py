"""Build the embedded Bach chorale dataset from the corpus shipped with music21.

Run it as::

    python -m models.data.datasets.build_chorales [--out PATH]

It needs the optional ``music21`` extra (``pip install 'minigrad[music21]'``);
the rest of minigrad never imports music21. The procedure, the split and the
resulting counts are described in ``models/datasets/README.md``. In short:

1. Every MusicXML file ``bwv*.mxl`` / ``bwv*.xml`` of music21's ``bach``
   corpus folder is taken in sorted file-name order; files that do not hold
   exactly four parts (chorales with obbligato instruments, the prelude
   BWV 846) are skipped.
2. Each chorale is transposed so that its tonic, as found by music21's key
   analysis (``Score.analyze("key")``), becomes C (major keys to C major, minor
   keys to C minor), by the smallest shift in semitones (-6..+5).
3. It is quantised to one time step per quarter note: step ``k`` holds every
   MIDI pitch of any of the four parts that is sounding at the ``k``-th
   quarter-note beat (a tied or held note counts at every beat it covers; a
   beat where all parts rest is an empty step). The beat grid is aligned to
   the bar lines, so an upbeat of a fraction of a quarter note is not sampled.
4. Each chorale goes to ``train``, ``valid`` or ``test`` by a fixed hash of its
   file name (see :func:`assign_split`), about 60/20/20.
5. The arrays are written in the layout that :func:`models.data.load_npz`
   reads, as a zip archive with fixed time stamps, so rebuilding with the same
   music21 corpus gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models.data.dataset import N_PITCHES, PITCH_LO
from models.data.load import load_npz

SPLITS: tuple[str, str, str] = ("train", "valid", "test")
FORMAT_VERSION = 1
PITCH_HI = PITCH_LO + N_PITCHES - 1
DEFAULT_OUT = Path(__file__).resolve().parent / "bach_chorales.npz"
EXCLUDED = frozenset({"bwv846.mxl"})  # Well-Tempered Clavier prelude, not a chorale
_EPS = 1e-6
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# A chorale: a list of time steps, each the ascending MIDI note numbers sounding.
Chorale = list[list[int]]


def _import_music21() -> Any:
    """Return the ``music21`` module, or exit with a hint when it is not installed."""
    try:
        return importlib.import_module("music21")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("build_chorales needs music21: pip install 'minigrad[music21]'") from exc


def chorale_paths(music21: Any) -> list[Path]:
    """List the candidate chorale files of music21's Bach corpus, sorted by file name.

    Args:
        music21: the imported ``music21`` module.

    Returns:
        Paths of every ``bwv*.mxl`` / ``bwv*.xml`` file, minus :data:`EXCLUDED`.
    """
    paths = [
        Path(p)
        for p in music21.corpus.getComposer("bach")
        if Path(p).suffix in (".mxl", ".xml")
        and Path(p).name.startswith("bwv")
        and Path(p).name not in EXCLUDED
    ]
    return sorted(paths, key=lambda p: p.name)


def assign_split(file_name: str) -> str:
    """Return the split of a chorale: ``"train"``, ``"valid"`` or ``"test"``.

    The first 8 hex digits of the SHA-256 of the file name, modulo 100, send a
    chorale to ``train`` below 60, ``valid`` below 80 and ``test`` otherwise, so
    a chorale's split never depends on which other files the corpus holds.

    Args:
        file_name: the corpus file name, e.g. ``"bwv10.7.mxl"``.
    """
    bucket = int(hashlib.sha256(file_name.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < 60:
        return "train"
    if bucket < 80:
        return "valid"
    return "test"


def transposition_to_c(score: Any) -> int:
    """Return the shift in semitones (-6..+5) that moves the analysed tonic of ``score`` to C.

    Args:
        score: a ``music21.stream.Score``.
    """
    tonic_pc = int(score.analyze("key").tonic.pitchClass)
    return (-tonic_pc + 6) % 12 - 6


def _beat_origin(part: Any) -> float:
    """Offset in [0, 1) of the quarter-note grid, aligned to the first full bar of ``part``."""
    measures = list(part.getElementsByClass("Measure"))
    if len(measures) < 2:
        return 0.0
    return float(measures[1].offset) % 1.0


def quantise(score: Any, shift: int) -> Chorale:
    """Sample a four-part score at every quarter-note beat.

    Args:
        score: a ``music21.stream.Score`` with four parts.
        shift: semitones added to every MIDI pitch.

    Returns:
        ``n_steps`` lists, each the sorted distinct MIDI pitches sounding at that
        beat in any part (empty for a rest).
    """
    origin = _beat_origin(score.parts[0])
    end_time = float(score.highestTime)
    n_steps = max(0, math.ceil(end_time - origin - _EPS))
    steps: list[set[int]] = [set() for _ in range(n_steps)]
    for part in score.parts:
        for element in part.flatten().notes:
            length = float(element.duration.quarterLength)
            if length <= 0.0:  # grace notes take no time
                continue
            start = float(element.offset)
            first = math.ceil(start - origin - _EPS)
            stop = min(n_steps, math.ceil(start + length - origin - _EPS))
            midis = [int(p.midi) + shift for p in element.pitches]
            for k in range(max(first, 0), stop):
                steps[k].update(midis)
    return [sorted(step) for step in steps]


def build(music21: Any, *, verbose: bool = False) -> dict[str, list[Chorale]]:
    """Parse, transpose, quantise and split the music21 Bach chorales.

    Args:
        music21: the imported ``music21`` module.
        verbose: print one line per file.

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}``, each a list of chorales
        (``(T_i,)`` lists of note lists) in sorted file-name order.
    """
    out: dict[str, list[Chorale]] = {s: [] for s in SPLITS}
    for path in chorale_paths(music21):
        score = music21.corpus.parse(str(path))
        if len(score.parts) != 4:
            if verbose:
                print(f"skip {path.name}: {len(score.parts)} parts")
            continue
        shift = transposition_to_c(score)
        chorale = quantise(score, shift)
        notes = [n for step in chorale for n in step]
        if notes and (min(notes) < PITCH_LO or max(notes) > PITCH_HI):
            raise ValueError(f"{path.name}: a note falls outside {PITCH_LO}..{PITCH_HI}")
        split = assign_split(path.name)
        out[split].append(chorale)
        if verbose:
            print(f"{path.name}: {split}, shift {shift:+d}, {len(chorale)} steps")
    return out


def canonical_text(data: dict[str, list[Chorale]]) -> str:
    """The text whose SHA-256 is stored as ``source_sha256``.

    It is compact JSON with sorted keys: ``{"test": [...], "train": [...],
    "valid": [...]}``, each split a list of sequences, each a list of steps, each
    a list of ascending MIDI note numbers, e.g. ``[[60,64,67],[],[62]]``.

    Args:
        data: ``{split: list of chorales}`` as returned by :func:`build`.
    """
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def to_arrays(data: dict[str, list[Chorale]], source: str) -> dict[str, npt.NDArray[Any]]:
    """Encode the chorales in the shared ``.npz`` layout.

    Args:
        data: ``{split: list of chorales}``.
        source: the text stored under ``source``.

    Returns:
        For each split ``s``: ``s_notes`` int16 ``(n_notes,)``, ``s_step_offsets``
        int32 ``(n_steps + 1,)``, ``s_seq_offsets`` int32 ``(n_seqs + 1,)``; then the
        scalars ``format_version``, ``pitch_lo``, ``pitch_hi``, ``source`` and
        ``source_sha256``.
    """
    arrays: dict[str, npt.NDArray[Any]] = {}
    for s in SPLITS:
        steps = [step for chorale in data[s] for step in chorale]
        notes = [n for step in steps for n in step]
        step_sizes = [len(step) for step in steps]
        seq_sizes = [len(chorale) for chorale in data[s]]
        arrays[f"{s}_notes"] = np.asarray(notes, dtype=np.int16)
        arrays[f"{s}_step_offsets"] = np.concatenate(
            [[0], np.cumsum(step_sizes, dtype=np.int64)]
        ).astype(np.int32)
        arrays[f"{s}_seq_offsets"] = np.concatenate(
            [[0], np.cumsum(seq_sizes, dtype=np.int64)]
        ).astype(np.int32)
    arrays["format_version"] = np.asarray(FORMAT_VERSION, dtype=np.int32)
    arrays["pitch_lo"] = np.asarray(PITCH_LO, dtype=np.int32)
    arrays["pitch_hi"] = np.asarray(PITCH_HI, dtype=np.int32)
    arrays["source"] = np.asarray(source, dtype=np.str_)
    digest = hashlib.sha256(canonical_text(data).encode("utf-8")).hexdigest()
    arrays["source_sha256"] = np.asarray(digest, dtype=np.str_)
    return arrays


def write_npz(path: Path, arrays: dict[str, npt.NDArray[Any]]) -> None:
    """Write ``arrays`` as a compressed ``.npz`` with fixed zip time stamps.

    ``numpy.savez_compressed`` stamps each member with the current time; this
    writer gives the same bytes for the same arrays, keys in the given order.

    Args:
        path: the file to write.
        arrays: name -> array (any shape; no object arrays).
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, value, allow_pickle=False)


def build_arrays(*, verbose: bool = False) -> dict[str, npt.NDArray[Any]]:
    """Build the embedded dataset's arrays from the installed music21 corpus.

    Args:
        verbose: print one line per corpus file.

    Returns:
        The arrays :func:`to_arrays` describes.
    """
    music21 = _import_music21()
    data = build(music21, verbose=verbose)
    n_files = sum(len(v) for v in data.values())
    source = (
        f"music21 {music21.__version__} corpus 'bach': {n_files} four-part chorales, "
        "transposed to C major / C minor, one step per quarter note"
    )
    return to_arrays(data, source)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: build the dataset and write it to ``--out``.

    Args:
        argv: command-line arguments (``sys.argv[1:]`` when ``None``).

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz file")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per file")
    args = parser.parse_args(argv)
    arrays = build_arrays(verbose=args.verbose)
    out: Path = args.out
    write_npz(out, arrays)
    dataset = load_npz(out)
    for s in SPLITS:
        split = dataset.split(s)
        n_notes = int(arrays[f"{s}_notes"].shape[0])
        print(f"{s}: {len(split)} sequences, {split.n_steps} steps, {n_notes} notes")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
