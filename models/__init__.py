"""Recurrent models built from minigrad cells.

* ``models.cells``: cell fragments (one recurrent layer's nodes added into a
  ``CellBuilder``) for the GRU in Chung et al.'s and PyTorch's conventions,
  the peephole LSTM, the tanh-RNN and the minimal gated unit (import them
  from ``models.cells``: ``models.lstm`` and ``models.mgu`` are the modules
  of the model classes), ``CELLS`` and ``stack``;
* ``models.base``: ``RecurrentModel``, a stack of fragments with an L2 head;
* ``GRU``, ``LSTM``, ``TanhRNN``, ``MGU``: one class per cell;
* ``Stacked`` and ``Bidirectional``: deep, reversed and bidirectional models.

No module here writes a derivative: every gradient comes from minigrad's
BPTT over the nodes' local derivatives.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.base import RecurrentModel, check_array
    from models.cells import CELLS, INITS, Fragment, layer_prefix, stack, state_names
    from models.gru import GRU, GRU_VARIANTS
    from models.lstm import LSTM
    from models.mgu import MGU
    from models.rnn import TanhRNN
    from models.wrappers import Bidirectional, Stacked

__all__ = [
    "CELLS",
    "GRU",
    "GRU_VARIANTS",
    "INITS",
    "LSTM",
    "MGU",
    "Bidirectional",
    "Fragment",
    "RecurrentModel",
    "Stacked",
    "TanhRNN",
    "check_array",
    "layer_prefix",
    "stack",
    "state_names",
]

_LAZY = {
    "CELLS": "models.cells",
    "GRU": "models.gru",
    "GRU_VARIANTS": "models.gru",
    "INITS": "models.cells",
    "LSTM": "models.lstm",
    "MGU": "models.mgu",
    "Bidirectional": "models.wrappers",
    "Fragment": "models.cells",
    "RecurrentModel": "models.base",
    "Stacked": "models.wrappers",
    "TanhRNN": "models.rnn",
    "check_array": "models.base",
    "layer_prefix": "models.cells",
    "stack": "models.cells",
    "state_names": "models.cells",
}


def __getattr__(name: str) -> Any:
    """Import the public names lazily: ``import models`` loads nothing heavy, so the
    ``minigrad`` command can set BLAS threads before numpy is imported."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
