"""Cell fragments: one recurrent layer's nodes, added into a ``CellBuilder``.

A *fragment* is a function

    fragment(b, x, input_size, hidden_size, *, prefix="", init="default") -> Ref

that declares, in the builder ``b``, the parameters and carried state(s) of
one recurrent layer reading the per-step value ``x`` (shape (B, input_size)),
adds the nodes of one time step, calls ``b.update`` for each state, and
returns the ``Ref`` of the layer's new hidden state (shape (B, hidden_size)).
Fragments compose: ``stack`` feeds each layer's new state into the next one,
and the caller adds the read-out, the outputs and the loss.

Every fragment is written with minigrad nodes only (``MatMul``, ``Affine``,
``Add``, ``Mul``, ``Sigmoid``, ``Tanh``, ``Slice``, ``GRUUpdate``); the
derivatives come from the nodes, none is written here.

Layout: row vectors. ``x_t`` is (B, D) and multiplies a weight matrix from
the left (``x W`` with ``W`` of shape (D, H)), the state ``h`` is (B, H) and
``h U`` uses ``U`` of shape (H, H); biases and peepholes are (H,). The one
exception is ``gru_reset_after``, which keeps PyTorch's (3H, D) / (3H, H)
layouts so that a ``torch.nn.GRU`` state dict converted to numpy loads
unchanged.

Names: parameters, states and nodes all carry ``prefix`` (``"l1.z"``,
``"l1.Wz"``, ``"l1.h"``), so several layers live in one builder; node names
are meaningful (``z``, ``r``, ``c``, ``h_next``, ...) because ``explain`` and
error messages print them.

Initialisers (``init=``): ``minigrad.init.layer_inits(init, hidden_size)``,
public so that a user's cell initialises its weights the same way:

* ``"default"``: PyTorch's ``uniform(-1/sqrt(H), 1/sqrt(H))`` for every
  parameter (H the hidden size), except the LSTM forget-gate bias, set to 1;
* ``"orthogonal"``: recurrent weights orthogonal (``minigrad.init.orthogonal``,
  block by block for stacked weights), input weights Glorot-uniform, biases 0
  (LSTM forget-gate bias 1, LSTM peepholes 0).
"""

from __future__ import annotations

from typing import Protocol

from minigrad.cell import (
    CellBuilder,
    Ref,
)
from minigrad.init import SCHEMES

INITS: tuple[str, ...] = SCHEMES
"""The names accepted by the ``init=`` argument of every fragment (``minigrad.init.SCHEMES``)."""


class Fragment(Protocol):
    """The signature shared by every cell fragment (see the module docstring)."""

    def __call__(
        self,
        b: CellBuilder,
        x: Ref,
        input_size: int,
        hidden_size: int,
        *,
        prefix: str = "",
        init: str = "default",
    ) -> Ref:
        """Add one layer reading ``x`` (B, input_size); return its new state (B, hidden_size)."""
        ...


def check_sizes(input_size: int, hidden_size: int) -> None:
    for what, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} must be an int >= 1, got {v!r}")

