"""``LSTM``: the peephole LSTM of Graves (2013), as used by Chung et al. (2014)."""

from __future__ import annotations

import numpy as np

from minigrad.types import Array, FloatDType
from models.nets.base import RecurrentModel

__all__ = ["LSTM"]


class LSTM(RecurrentModel):
    """An LSTM with diagonal peepholes (one or more layers) and an L2 loss on the top
    layer's hidden states.

    Per step (``models.cells.lstm``)::

        i  = sigmoid(x Wi + h Ui + pi*c + bi)
        f  = sigmoid(x Wf + h Uf + pf*c + bf)
        g  = tanh(x Wc + h Uc + bc)
        c' = f*c + i*g
        o  = sigmoid(x Wo + h Uo + po*c' + bo)
        h' = o * tanh(c')

    Parameters ``Wi``, ``Wf``, ``Wc``, ``Wo`` (D, H); ``Ui``, ``Uf``, ``Uc``,
    ``Uo`` (H, H); ``pi``, ``pf``, ``po``, ``bi``, ``bf``, ``bc``, ``bo``
    (H,); prefixed ``l{k}.`` when ``num_layers`` > 1. The forget-gate bias
    starts at 1.

    Args:
        input_size: D.
        hidden_size: H.
        dtype: ``numpy.float32`` or ``numpy.float64``.
        seed: seed (or ``numpy.random.Generator``) of the initial parameters.
        init: ``"default"`` or ``"orthogonal"``.
        num_layers: L >= 1; h0 and c0 are (B, H) for L == 1, (L, B, H) otherwise.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        dtype: FloatDType | np.dtype[np.floating] = np.float64,
        seed: int | np.random.Generator = 0,
        init: str = "default",
        num_layers: int = 1,
    ) -> None:
        super().__init__(
            "lstm",
            input_size,
            hidden_size,
            dtype=dtype,
            seed=seed,
            init=init,
            num_layers=num_layers,
        )

    def forward(self, x: Array, h0: Array | None = None, c0: Array | None = None) -> Array:
        """Run the LSTM.

        Args:
            x: (T, B, D), time-major, the model's dtype.
            h0: optional initial hidden state, (B, H) (or (L, B, H)); zeros if None.
            c0: optional initial cell state, shaped like h0; zeros if None.

        Returns:
            The top layer's hidden states h_1 .. h_T, (T, B, H).
        """
        return self._forward(x, {"h": h0, "c": c0})

    def loss_and_grads(
        self, x: Array, y: Array, h0: Array | None = None, c0: Array | None = None
    ) -> tuple[float, dict[str, Array]]:
        """The L2 loss ``0.5 * sum_t ||h_t - y_t||^2`` and its gradients.

        Args:
            x: (T, B, D).
            y: (T, B, H).
            h0: optional initial hidden state, (B, H) (or (L, B, H)).
            c0: optional initial cell state, shaped like h0.

        Returns:
            ``(loss, grads)``: one entry per ``state_dict`` key, plus ``"x"``
            (T, B, D), ``"h0"`` and ``"c0"`` (the shape of h0).
        """
        return self._loss_and_grads(x, y, {"h": h0, "c": c0})
