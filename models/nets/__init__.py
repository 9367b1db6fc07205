"""Networks over cells: a stack of cell fragments plus a read-out head.

* ``base``: ``RecurrentModel`` (a stack of fragments with an L2 head) and the
  argument checks every model shares (``check_array``, ``check_state_dict``);
* ``sequence``: ``SequenceModel``, the next-frame model on piano rolls;
* ``wrappers``: ``Stacked`` and ``Bidirectional``;
* ``gru``, ``lstm``, ``mgu``, ``rnn``: one thin class per built-in cell.
"""

from __future__ import annotations

from models.nets.base import RecurrentModel, check_array, check_state_dict
from models.nets.gru import GRU, GRU_VARIANTS
from models.nets.lstm import LSTM
from models.nets.mgu import MGU
from models.nets.rnn import TanhRNN
from models.nets.sequence import SequenceModel
from models.nets.wrappers import Bidirectional, Stacked

__all__ = [
    "GRU",
    "GRU_VARIANTS",
    "LSTM",
    "MGU",
    "Bidirectional",
    "RecurrentModel",
    "SequenceModel",
    "Stacked",
    "TanhRNN",
    "check_array",
    "check_state_dict",
]
