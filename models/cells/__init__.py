"""Cell fragments (one module per family), the cell registry and stacking.

* ``fragment``: the ``Fragment`` signature and the initialiser names ``INITS``;
* ``gru``, ``lstm``, ``mgu``, ``rnn``: the built-in fragments;
* ``registry``: ``CELLS`` (name -> fragment, at run time), ``register_cell``,
  ``resolve_cell`` (names, ``module:function`` specs, functions) and the
  ``minigrad.cells`` entry points;
* ``stack``: ``stack`` (layers of one cell), ``layer_states`` and ``state_names``
  (read from the states the cell declares).
"""

from __future__ import annotations

from models.cells.fragment import INITS, Fragment
from models.cells.gru import gru_chung, gru_reset_after
from models.cells.lstm import lstm
from models.cells.mgu import mgu
from models.cells.registry import (
    BUILTIN_CELLS,
    CELL_ENTRY_POINTS,
    CELLS,
    cell_origins,
    fragment,
    is_cell_spec,
    is_known_cell,
    register_cell,
    resolve_cell,
)
from models.cells.rnn import tanh_rnn
from models.cells.stack import layer_prefix, layer_states, stack, state_names

__all__ = [
    "BUILTIN_CELLS",
    "CELLS",
    "CELL_ENTRY_POINTS",
    "INITS",
    "Fragment",
    "cell_origins",
    "fragment",
    "gru_chung",
    "gru_reset_after",
    "is_cell_spec",
    "is_known_cell",
    "layer_prefix",
    "layer_states",
    "lstm",
    "mgu",
    "register_cell",
    "resolve_cell",
    "stack",
    "state_names",
    "tanh_rnn",
]
