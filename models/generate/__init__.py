"""Generating music from a trained model, and writing it out.

* ``sample``: ``sample`` (one step at a time, notes drawn from the model),
  ``PrimeSpec`` and ``write_roll_npz``;
* ``midi``: Standard MIDI Files (the optional ``mido`` package);
* ``roll_svg``: a piano roll as SVG.
"""

from __future__ import annotations

from models.generate.midi import MissingExtraError, read_midi_notes, write_midi
from models.generate.roll_svg import piano_roll_svg
from models.generate.sample import PrimeSpec, load_model, sample, write_roll_npz

__all__ = [
    "MissingExtraError",
    "PrimeSpec",
    "load_model",
    "piano_roll_svg",
    "read_midi_notes",
    "sample",
    "write_midi",
    "write_roll_npz",
]
