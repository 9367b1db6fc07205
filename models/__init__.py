"""Recurrent models built from minigrad cells.

* ``models.cells``: cell fragments (one recurrent layer's nodes added into a
  ``CellBuilder``) for the GRU in Chung et al.'s and PyTorch's conventions,
  the peephole LSTM, the tanh-RNN and the minimal gated unit, the registry
  ``CELLS`` and ``stack``;
* ``models.nets``: ``RecurrentModel`` (a stack of fragments with an L2 head),
  ``GRU``, ``LSTM``, ``TanhRNN``, ``MGU`` (one class per cell), ``Stacked``
  and ``Bidirectional``, and ``SequenceModel`` (the music model);
* ``models.data``, ``models.train``, ``models.generate``, ``models.sweep``:
  datasets, training, generating music, learning-rate sweeps;
* ``models.cli``: the ``minigrad`` command.

Imports flow one way: cells -> data -> nets -> train -> generate -> sweep ->
cli (``tests/test_imports_models.py`` fails on a cycle).

No module here writes a derivative: every gradient comes from minigrad's
BPTT over the nodes' local derivatives.
"""

from __future__ import annotations

import importlib

# ``typing`` is not imported: the console script loads this package before it
# holds Ctrl-C back (models.console), so it stays as small as it can be. Type
# checkers read the block below (mypy treats a name TYPE_CHECKING as typing's).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from models.cells.fragment import INITS, Fragment
    from models.cells.registry import CELLS
    from models.cells.stack import layer_prefix, stack, state_names
    from models.nets.base import RecurrentModel, check_array
    from models.nets.gru import GRU, GRU_VARIANTS
    from models.nets.lstm import LSTM
    from models.nets.mgu import MGU
    from models.nets.rnn import TanhRNN
    from models.nets.wrappers import Bidirectional, Stacked

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
    "CELLS": "models.cells.registry",
    "GRU": "models.nets.gru",
    "GRU_VARIANTS": "models.nets.gru",
    "INITS": "models.cells.fragment",
    "LSTM": "models.nets.lstm",
    "MGU": "models.nets.mgu",
    "Bidirectional": "models.nets.wrappers",
    "Fragment": "models.cells.fragment",
    "RecurrentModel": "models.nets.base",
    "Stacked": "models.nets.wrappers",
    "TanhRNN": "models.nets.rnn",
    "check_array": "models.nets.base",
    "layer_prefix": "models.cells.stack",
    "stack": "models.cells.stack",
    "state_names": "models.cells.stack",
}


def __getattr__(name: str) -> Any:
    """Import the public names lazily: ``import models`` loads nothing heavy, so the
    ``minigrad`` command can set BLAS threads before numpy is imported."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
