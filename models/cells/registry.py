"""The cell registry: cell name -> fragment."""

from __future__ import annotations

from models.cells.fragment import Fragment
from models.cells.gru import gru_chung, gru_reset_after
from models.cells.lstm import lstm
from models.cells.mgu import mgu
from models.cells.rnn import tanh_rnn

# --------------------------------------------------------------------------
# registry and stacking

CELLS: dict[str, Fragment] = {
    "gru": gru_chung,
    "gru_chung": gru_chung,
    "gru_reset_after": gru_reset_after,
    "lstm": lstm,
    "tanh": tanh_rnn,
    "mgu": mgu,
}
"""Cell name -> fragment. ``"gru"`` is Chung et al.'s GRU."""


def fragment(cell: str) -> Fragment:
    """The fragment named ``cell``; ValueError listing the valid names otherwise."""
    try:
        return CELLS[cell]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown cell {cell!r}; valid: {', '.join(repr(c) for c in CELLS)}"
        ) from None

