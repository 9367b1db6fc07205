"""Cell fragments (one module per family), the cell registry and stacking.

* ``fragment``: the ``Fragment`` signature and the initialiser names ``INITS``;
* ``gru``, ``lstm``, ``mgu``, ``rnn``: the built-in fragments;
* ``registry``: ``CELLS``, cell name -> fragment;
* ``stack``: ``stack`` (layers of one cell) and ``state_names``.
"""

from __future__ import annotations

from models.cells.fragment import INITS, Fragment
from models.cells.gru import gru_chung, gru_reset_after
from models.cells.lstm import lstm
from models.cells.mgu import mgu
from models.cells.registry import CELLS, fragment
from models.cells.rnn import tanh_rnn
from models.cells.stack import layer_prefix, stack, state_names

__all__ = [
    "CELLS",
    "INITS",
    "Fragment",
    "fragment",
    "gru_chung",
    "gru_reset_after",
    "layer_prefix",
    "lstm",
    "mgu",
    "stack",
    "state_names",
    "tanh_rnn",
]
