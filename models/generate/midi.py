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

Files are written atomically (``models.io.atomic_write``), streamed a block of
steps at a time, so a song of a million steps takes bounded memory.
"""

from __future__ import annotations

import importlib
import io
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt

from models.data.dataset import MIDI_MAX, N_PITCHES, PITCH_LO, check_pitch_range
from models.io import FileError, atomic_write, open_regular

MAX_MIDI_BYTES: Final = 4 << 20
"""The largest MIDI file :func:`read_midi_notes` reads (4 MiB; a song takes kilobytes)."""
MAX_MIDI_STEPS: Final = 1_000_000
"""The longest song :func:`read_midi_notes` turns into a roll, in steps (an 88 MB roll)."""

__all__ = [
    "DEFAULT_TEMPO_BPM",
    "MAX_TEMPO_BPM",
    "MIN_TEMPO_BPM",
    "TICKS_PER_BEAT",
    "MissingExtraError",
    "check_tempo",
    "import_extra",
    "read_midi_notes",
    "write_midi",
]

TICKS_PER_BEAT: Final = 480
"""Ticks per beat (quarter note) of the files written here."""
DEFAULT_TEMPO_BPM: Final = 100.0
"""Default tempo of :func:`write_midi`, in beats (steps, by default) per minute."""
MAX_MIDI_TEMPO: Final = 0xFFFFFF
"""The largest MIDI tempo, in microseconds per beat (a 24-bit field)."""
MIN_TEMPO_BPM: Final = 60e6 / MAX_MIDI_TEMPO
"""The slowest tempo a MIDI file holds, about 3.58 beats per minute."""
MAX_TEMPO_BPM: Final = 10_000.0
"""The fastest tempo :func:`write_midi` takes (6 ms per beat)."""
TEMPO_RANGE: Final = (
    f"at least 60000000/{MAX_MIDI_TEMPO} (about 3.58) and at most {MAX_TEMPO_BPM:g}"
)
"""The range of ``tempo_bpm`` in words, for error messages."""


def check_tempo(what: str, tempo_bpm: object) -> float:
    """``tempo_bpm`` if it is a number in ``MIN_TEMPO_BPM..MAX_TEMPO_BPM``.

    A MIDI tempo is ``60e6 / bpm`` microseconds per beat, stored in 24 bits.

    Raises:
        ValueError: naming ``what`` and the range.
    """
    if (
        isinstance(tempo_bpm, int | float)
        and not isinstance(tempo_bpm, bool)
        and MIN_TEMPO_BPM <= tempo_bpm <= MAX_TEMPO_BPM  # False for NaN
    ):
        return float(tempo_bpm)
    got = "a huge integer" if isinstance(tempo_bpm, int) and tempo_bpm > 1e18 else repr(tempo_bpm)
    raise ValueError(f"{what} must be {TEMPO_RANGE} beats per minute, got {got}")


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


def _check_roll(roll: npt.ArrayLike) -> npt.NDArray[Any]:
    """The roll as an array, checked to hold only 0 and 1 (block by block: no copy of a
    long roll is made)."""
    values = np.asarray(roll)
    if values.ndim != 2:
        raise ValueError(f"roll must have shape (T, P), got shape {values.shape}")
    if values.dtype.kind not in "biuf":
        raise ValueError(f"roll must hold 0/1 numbers, got dtype {values.dtype}")
    for a in range(0, values.shape[0], _BLOCK_STEPS):
        block = values[a : a + _BLOCK_STEPS]
        if not np.all((block == 0) | (block == 1)):
            raise ValueError(
                "roll must hold only 0 and 1 (sample or threshold probabilities first)"
            )
    return values


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
        tempo_bpm: beats per minute, ``MIN_TEMPO_BPM`` (about 3.58, the slowest
            a MIDI file holds) to ``MAX_TEMPO_BPM`` (10000).
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
    check_pitch_range(pitch_lo, MIDI_MAX)
    if pitch_lo + n_pitches - 1 > 127 and values[:, max(0, 128 - pitch_lo) :].any():
        raise ValueError(
            f"the roll has notes above MIDI 127 (pitch_lo {pitch_lo}, {n_pitches} columns)"
        )
    tempo_bpm = check_tempo("tempo_bpm", tempo_bpm)
    tps = _positive_int("ticks_per_step", ticks_per_step)
    if not 1 <= velocity <= 127:
        raise ValueError(f"velocity must lie in 1..127, got {velocity!r}")
    if not 0 <= program <= 127:
        raise ValueError(f"program must lie in 0..127, got {program!r}")
    mido = _mido(f"writing the MIDI file {path}")
    header = [
        mido.MetaMessage("track_name", name=name, time=0),
        mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0),
        mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
        mido.Message("program_change", program=int(program), channel=0, time=0),
    ]
    # delta time 0, then the message; the program change (a channel message) sets the
    # running status, which no note message shares
    head = b"".join(b"\x00" + bytes(m.bytes()) for m in header)

    def write(f: IO[bytes]) -> None:
        f.write(b"MThd" + struct.pack(">LhhH", 6, 0, 1, TICKS_PER_BEAT))
        f.write(b"MTrk\0\0\0\0")  # the length, known at the end
        size = f.write(head)
        now, status = 0, 0xC0
        for block in _note_blocks(values, pitch_lo, tps, int(velocity)):
            data, now, status = _encode_notes(*block, now=now, status=status)
            size += f.write(data)
        size += f.write(_vlq_bytes(n_steps * tps - now) + b"\xff\x2f\x00")  # end of track
        if size > 0xFFFFFFFF:
            raise ValueError(f"{path}: the song needs {size} bytes, more than a MIDI track holds")
        f.seek(18)
        f.write(struct.pack(">L", size))

    atomic_write(path, write)


_BLOCK_STEPS: Final = 2048
"""Steps of the roll turned into MIDI bytes at a time: memory stays bounded for any length."""


def _note_blocks(
    values: npt.NDArray[Any], pitch_lo: int, tps: int, velocity: int
) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], int]]:
    """The note events of the roll, block by block, in file order.

    Yields:
        ``(ticks, notes, on, velocity)``: the events of a block of steps, sorted by
        tick, note-offs (``on`` 0) before note-ons (1) at a tick, then by note.
    """
    n_steps, n_pitches = values.shape
    prev = np.zeros((1, n_pitches), dtype=np.int8)
    for a in range(0, n_steps + 1, _BLOCK_STEPS):
        rows = values[a : a + _BLOCK_STEPS].astype(np.int8)
        if a + _BLOCK_STEPS > n_steps:  # the last block: every note ends after the roll
            rows = np.concatenate([rows, np.zeros((1, n_pitches), dtype=np.int8)])
        change = np.diff(np.concatenate([prev, rows]), axis=0)  # +1: a note starts, -1: ends
        prev = rows[-1:]
        step, column = np.nonzero(change)
        on = (change[step, column] > 0).astype(np.int64)
        order = np.lexsort((column, on, step))
        yield (
            (a + step[order]).astype(np.int64) * tps,
            pitch_lo + column[order].astype(np.int64),
            on[order],
            velocity,
        )


def _vlq_bytes(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits a byte, the high bit set on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _encode_notes(
    ticks: npt.NDArray[np.int64],
    notes: npt.NDArray[np.int64],
    on: npt.NDArray[np.int64],
    velocity: int,
    *,
    now: int,
    status: int,
) -> tuple[bytes, int, int]:
    """The bytes of note messages (``mido``'s encoding, running status included).

    Args:
        ticks, notes, on: the events (see :func:`_note_blocks`); velocity: of a note-on.
        now: the tick of the previous message; status: its status byte.

    Returns:
        ``(bytes, now, status)`` after the last event.
    """
    n = len(ticks)
    if n == 0:
        return b"", now, status
    delta = np.diff(ticks, prepend=now)
    # bytes of each delta's variable-length quantity: 1 + one per further 7 bits
    nb = np.ones(n, dtype=np.int64)
    rest = delta >> 7
    while rest.any():
        nb += rest > 0
        rest >>= 7
    stat = np.where(on == 1, 0x90, 0x80)
    prev_stat = np.concatenate([[status], stat[:-1]])
    with_status = (stat != prev_stat).astype(np.int64)
    length = nb + with_status + 2
    offset = np.concatenate([[0], np.cumsum(length)[:-1]])
    out = np.zeros(int(length.sum()), dtype=np.uint8)
    for j in range(int(nb.max())):
        has = nb > j
        shift = 7 * (nb[has] - 1 - j)
        byte = (delta[has] >> shift) & 0x7F
        out[offset[has] + j] = byte | np.where(j < nb[has] - 1, 0x80, 0)
    pos = offset + nb
    out[pos[with_status == 1]] = stat[with_status == 1]
    pos = pos + with_status
    out[pos] = notes
    out[pos + 1] = np.where(on == 1, velocity, 0)
    return out.tobytes(), int(ticks[-1]), int(stat[-1])


def read_midi_notes(
    path: str | Path,
    *,
    pitch_lo: int = PITCH_LO,
    n_pitches: int = N_PITCHES,
    ticks_per_step: int | None = None,
    max_steps: int = MAX_MIDI_STEPS,
) -> npt.NDArray[np.uint8]:
    """Read a MIDI file back into a piano roll.

    Memory is bounded: the file must be a regular file of at most
    :data:`MAX_MIDI_BYTES`, and a song longer than ``max_steps`` steps is
    refused before its roll is allocated (a 37-byte file can claim a note
    billions of ticks long).

    Args:
        path: a Standard MIDI File.
        pitch_lo: MIDI number of column 0 of the roll.
        n_pitches: P, the number of columns.
        ticks_per_step: ticks per time step; default the file's ticks per
            beat (one step per quarter note, as :func:`write_midi` writes).
        max_steps: the longest song accepted, in steps.

    Returns:
        ``(T, P)`` uint8, 1 where a note sounds; ``T`` is the length of the
        longest track in steps (rounded up).

    Raises:
        MissingExtraError: ``mido`` is not installed.
        ValueError: ``pitch_lo`` or ``n_pitches`` out of MIDI's range 0..127,
            ``ticks_per_step`` or ``max_steps`` below 1 (naming it), or the file is
            missing, not a regular file, larger than :data:`MAX_MIDI_BYTES`, not a
            readable MIDI file, SMPTE-timed or of 0 ticks per beat (without
            ``ticks_per_step``), longer than ``max_steps``, or holds a note
            outside ``pitch_lo .. pitch_lo + n_pitches - 1``.
    """
    n_pitches = _positive_int("n_pitches", n_pitches)
    max_steps = _positive_int("max_steps", max_steps)
    if ticks_per_step is not None:
        ticks_per_step = _positive_int("ticks_per_step", ticks_per_step)
    check_pitch_range(pitch_lo, pitch_lo, names=("pitch_lo", "pitch_lo"))
    check_pitch_range(
        pitch_lo, pitch_lo + n_pitches - 1, names=("pitch_lo", "pitch_lo + n_pitches - 1")
    )
    mido = _mido(f"reading the MIDI file {path}")
    try:
        with open_regular(path, "MIDI") as fh:
            data = fh.read(MAX_MIDI_BYTES + 1)
    except FileError as exc:
        message = str(exc).replace("no such file (expected a MIDI file)", "no such MIDI file")
        raise ValueError(message) from None
    if len(data) > MAX_MIDI_BYTES:
        raise ValueError(f"{path}: larger than {MAX_MIDI_BYTES} bytes, too large a MIDI file")
    try:
        song = mido.MidiFile(file=io.BytesIO(data))
    except MemoryError:
        raise ValueError(f"{path}: not a readable MIDI file (it claims too much memory)") from None
    except Exception as exc:  # mido fails in many ways on a bad file
        raise ValueError(
            f"{path}: not a readable MIDI file ({type(exc).__name__}: {exc})"
        ) from None
    if ticks_per_step is not None:
        tps = ticks_per_step
    elif int(song.ticks_per_beat) < 0:  # the division's top bit: frames per second
        raise ValueError(
            f"{path}: SMPTE time division is not supported (the file counts time in "
            "frames per second, not ticks per beat); pass ticks_per_step to read its ticks"
        )
    elif int(song.ticks_per_beat) == 0:
        raise ValueError(f"{path}: 0 ticks per beat in the header, not a usable MIDI file")
    else:
        tps = int(song.ticks_per_beat)
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
    if -(-length // tps) > max_steps:
        raise ValueError(
            f"{path}: the song lasts {-(-length // tps)} steps, more than the {max_steps} accepted"
        )
    roll = np.zeros((-(-length // tps), n_pitches), dtype=np.uint8)
    for note, start, end in notes:
        column = note - pitch_lo
        if not 0 <= column < n_pitches:
            raise ValueError(
                f"{path}: note {note} lies outside the roll's range "
                f"{pitch_lo}..{pitch_lo + n_pitches - 1}"
            )
        s0, s1 = round(start / tps), min(round(end / tps), max_steps)
        if s1 > roll.shape[0]:
            roll = np.concatenate([roll, np.zeros((s1 - roll.shape[0], n_pitches), np.uint8)])
        roll[s0:s1, column] = 1
    return roll
