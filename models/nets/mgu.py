"""``MGU``: the minimal gated unit of Zhou et al. (2016)."""

from __future__ import annotations

import numpy as np

from minigrad.types import FloatDType
from models.nets.base import RecurrentModel

__all__ = ["MGU"]


class MGU(RecurrentModel):
    """A minimal gated unit (one or more layers) with an L2 loss on the top layer's states.

    Per step (``models.cells.mgu``)::

        f  = sigmoid(x Wf + h Uf + bf)
        c  = tanh(x Wh + (f*h) Uh + bh)
        h' = (1 - f)*h + f*c

    Parameters ``Wf``, ``Wh`` (D, H), ``Uf``, ``Uh`` (H, H), ``bf``, ``bh``
    (H,), prefixed ``l{k}.`` when ``num_layers`` > 1.

    Args:
        input_size: D.
        hidden_size: H.
        dtype: ``numpy.float32`` or ``numpy.float64``.
        seed: seed (or ``numpy.random.Generator``) of the initial parameters.
        init: ``"default"`` or ``"orthogonal"``.
        num_layers: L >= 1; h0 is (B, H) for L == 1 and (L, B, H) otherwise.
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
            "mgu",
            input_size,
            hidden_size,
            dtype=dtype,
            seed=seed,
            init=init,
            num_layers=num_layers,
        )
