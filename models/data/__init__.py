"""Polyphonic-music datasets as 88-key piano rolls, and padded batches for BPTT.

* ``dataset``: ``Dataset`` and ``Split`` (a split's sequences in one piano roll), pitch range;
* ``batches``: ``Batch`` and ``batches`` (padded, time-major);
* ``load``: ``load_dataset`` (embedded name, ``.npz`` or restricted pickle);
* ``datasets/``: the embedded Bach chorales and the script that builds them.
"""

from __future__ import annotations

from models.data.batches import Batch, batch_groups, batches, make_batch
from models.data.dataset import (
    EMBEDDED,
    EMBEDDED_DATASETS,
    N_PITCHES,
    PITCH_LO,
    SPLIT_NAMES,
    DataError,
    Dataset,
    Split,
)
from models.data.load import load_dataset, load_npz, load_pickle

__all__ = [
    "EMBEDDED",
    "EMBEDDED_DATASETS",
    "N_PITCHES",
    "PITCH_LO",
    "SPLIT_NAMES",
    "Batch",
    "DataError",
    "Dataset",
    "Split",
    "batch_groups",
    "batches",
    "load_dataset",
    "load_npz",
    "load_pickle",
    "make_batch",
]
