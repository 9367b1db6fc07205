"""Piano rolls to and from Standard MIDI Files, through the optional ``mido`` package.

``mido`` is an optional extra: ``pip install "minigrad[midi]"``. Without it,
:func:`write_midi` and :func:`read_midi_notes` raise :class:`MissingExtraError`,
whose one-line message gives that command; the rest of minigrad never needs it.

Conventions of :func:`write_midi`:

* column ``j`` of the roll is MIDI note ``pitch_lo + j`` (21 = A0 for the
  88-key rolls of ``models.data``);
* a time step lasts ``ticks_per_step`` ticks at ``TICKS_PER_BEAT`` ticks per
  beat: the default, one beat (a quarter note) per step, is the time grid of
  the JSB chorales; at ``tempo_bpm`` beats per minute;
* a note sounding on consecutive steps is one held note (a piano roll cannot
  tell a held note from a repeated one);
* one track (type 0 file) with the track name, the tempo, a 4/4 time
  signature and a piano program; every note has velocity ``velocity``;
* the track lasts exactly ``T * ticks_per_step`` ticks, so trailing rests
  survive a round trip.

:func:`read_midi_notes` inverts it: note-on/note-off pairs of every track
and channel (a note-on of velocity 0 is a note-off) are quantised to the
nearest step, and the roll is as long as the longest track.

Files are written atomically (``models.train.checkpoint.atomic_write_bytes``).
"""

from __future__ import annotations

import importlib
import io
import math
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models.data.dataset import N_PITCHES, PITCH_LO
from models.train.checkpoint import atomic_write_bytes

__all__ = [
    "DEFAULT_TEMPO_BPM",
    "TICKS_PER_BEAT",
    "MissingExtraError",
    "import_extra",
    "read_midi_notes",
    "write_midi",
]

TICKS_PER_BEAT: Final = 480
"""Ticks per beat (quarter note) of the files written here."""
DEFAULT_TEMPO_BPM: Final = 100.0
"""Default tempo of :func:`write_midi`, in beats (steps, by default) per minute."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip command.

    Attributes:
        extra: the name of the extra, e.g. ``"midi"``.
        package: the missing module, e.g. ``"mido"``.
    """

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f'{purpose} needs the optional package {package}: pip install "minigrad[{extra}]"'
        )
        self.package = package
        self.extra = extra
        self.purpose = purpose

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.package, self.extra, self.purpose))


def import_extra(module: str, extra: str, purpose: str) -> Any:
    """Import an optional dependency, or raise :class:`MissingExtraError`.

    Args:
        module: the module to import, e.g. ``"mido"``.
        extra: the extra of ``pyproject.toml`` that installs it, e.g. ``"midi"``.
        purpose: what needs it, the start of the message (``"writing MIDI files"``).

    Returns:
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module.split(".")[0], extra, purpose) from None


def _mido(purpose: str) -> Any:
    return import_extra("mido", "midi", purpose)


def _check_roll(roll: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    values = np.asarray(roll)
    if values.ndim != 2:
        raise ValueError(f"roll must have shape (T, P), got shape {values.shape}")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"roll must hold 0/1 numbers, got dtype {values.dtype}")
    if values.size and not np.all((values == 0) | (values == 1)):
        raise ValueError("roll must hold only 0 and 1 (sample or threshold probabilities first)")
    return values.astype(np.uint8)


def _positive_int(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return int(value)


def write_midi(
    roll: npt.ArrayLike,
    path: str | Path,
    *,
    pitch_lo: int = PITCH_LO,
    tempo_bpm: float = DEFAULT_TEMPO_BPM,
    ticks_per_step: int = TICKS_PER_BEAT,
    velocity: int = 80,
    program: int = 0,
    name: str = "minigrad",
) -> None:
    """Write a piano roll as a type 0 Standard MIDI File, atomically.

    Args:
        roll: ``(T, P)`` 0/1 values (bool, int or float); column ``j`` is MIDI
            note ``pitch_lo + j``.
        path: the target ``.mid`` file; its directory must exist.
        pitch_lo: MIDI number of column 0 (21 for an 88-key roll).
        tempo_bpm: beats per minute, > 0.
        ticks_per_step: ticks per time step, >= 1 (``TICKS_PER_BEAT``: a
            quarter note per step; 240 for eighth notes, ...).
        velocity: note-on velocity, 1..127.
        program: General MIDI program (0: acoustic grand piano), 0..127.
        name: the track name.

    Raises:
        MissingExtraError: ``mido`` is not installed.
        ValueError: a roll that is not 2-d 0/1, notes outside MIDI 0..127, or
            another argument out of range (naming it).
        OSError: the file cannot be written.
    """
    values = _check_roll(roll)
    n_steps, n_pitches = values.shape
    if isinstance(pitch_lo, bool) or not isinstance(pitch_lo, int) or pitch_lo < 0:
        raise ValueError(f"pitch_lo must be a MIDI number >= 0, got {pitch_lo!r}")
    if pitch_lo + n_pitches - 1 > 127 and values[:, max(0, 128 - pitch_lo) :].any():
        raise ValueError(
            f"the roll has notes above MIDI 127 (pitch_lo {pitch_lo}, {n_pitches} columns)"
        )
    if not (isinstance(tempo_bpm, int | float) and math.isfinite(tempo_bpm) and tempo_bpm > 0):
        raise ValueError(f"tempo_bpm must be a positive number, got {tempo_bpm!r}")
    tps = _positive_int("ticks_per_step", ticks_per_step)
    if not 1 <= velocity <= 127:
        raise ValueError(f"velocity must lie in 1..127, got {velocity!r}")
    if not 0 <= program <= 127:
        raise ValueError(f"program must lie in 0..127, got {program!r}")
    mido = _mido(f"writing the MIDI file {path}")

    # (tick, order, message): note-offs (order 0) before note-ons (order 1) at a tick.
    events: list[tuple[int, int, int, str]] = []
    padded = np.zeros((n_steps + 2, n_pitches), dtype=np.int8)
    padded[1:-1] = values
    change = np.diff(padded, axis=0)  # (T + 1, P): +1 where a note starts, -1 where it ends
    for step, column in zip(*np.nonzero(change), strict=True):
        on = change[step, column] > 0
        events.append(
            (int(step) * tps, 1 if on else 0, pitch_lo + int(column), "on" if on else "off")
        )
    events.sort()

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name=name, time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    track.append(mido.Message("program_change", program=int(program), channel=0, time=0))
    now = 0
    for tick, _, note, kind in events:
        vel = int(velocity) if kind == "on" else 0
        msg_type = "note_on" if kind == "on" else "note_off"
        track.append(mido.Message(msg_type, note=note, velocity=vel, channel=0, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=n_steps * tps - now))
    song = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_BEAT)
    song.tracks.append(track)
    buffer = io.BytesIO()
    song.save(file=buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_midi_notes(
    path: str | Path,
    *,
    pitch_lo: int = PITCH_LO,
    n_pitches: int = N_PITCHES,
    ticks_per_step: int | None = None,
) -> npt.NDArray[np.uint8]:
    """Read a MIDI file back into a piano roll.

    Args:
        path: a Standard MIDI File.
        pitch_lo: MIDI number of column 0 of the roll.
        n_pitches: P, the number of columns.
        ticks_per_step: ticks per time step; default the file's ticks per
            beat (one step per quarter note, as :func:`write_midi` writes).

    Returns:
        ``(T, P)`` uint8, 1 where a note sounds; ``T`` is the length of the
        longest track in steps (rounded up).

    Raises:
        MissingExtraError: ``mido`` is not installed.
        ValueError: the file is not a readable MIDI file, or holds a note
            outside ``pitch_lo .. pitch_lo + n_pitches - 1``.
    """
    mido = _mido(f"reading the MIDI file {path}")
    try:
        song = mido.MidiFile(str(path))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such MIDI file") from None
    except (OSError, EOFError, ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable MIDI file ({exc})") from None
    tps = int(song.ticks_per_beat) if ticks_per_step is None else ticks_per_step
    tps = _positive_int("ticks_per_step", tps)
    notes: list[tuple[int, int, int]] = []  # (note, start tick, end tick)
    length = 0
    for track in song.tracks:
        now = 0
        sounding: dict[tuple[int, int], int] = {}
        for msg in track:
            now += int(msg.time)
            if msg.type not in ("note_on", "note_off"):
                continue
            key = (int(msg.channel), int(msg.note))
            if msg.type == "note_on" and msg.velocity > 0:
                sounding.setdefault(key, now)
            elif key in sounding:
                notes.append((key[1], sounding.pop(key), now))
        notes.extend((key[1], start, now) for key, start in sounding.items())
        length = max(length, now)
    roll = np.zeros((-(-length // tps), n_pitches), dtype=np.uint8)
    for note, start, end in notes:
        column = note - pitch_lo
        if not 0 <= column < n_pitches:
            raise ValueError(
                f"{path}: note {note} lies outside the roll's range "
                f"{pitch_lo}..{pitch_lo + n_pitches - 1}"
            )
        s0, s1 = round(start / tps), round(end / tps)
        if s1 > roll.shape[0]:
            roll = np.concatenate([roll, np.zeros((s1 - roll.shape[0], n_pitches), np.uint8)])
        roll[s0:s1, column] = 1
    return roll
