"""``GRU``: the gated recurrent unit in Chung et al.'s or PyTorch's convention."""

from __future__ import annotations

import numpy as np

from minigrad.types import FloatDType
from models.nets.base import RecurrentModel

__all__ = ["GRU", "GRU_VARIANTS"]

GRU_VARIANTS: dict[str, str] = {"chung": "gru_chung", "reset_after": "gru_reset_after"}
"""GRU variant -> cell name in ``models.cells.CELLS``."""


class GRU(RecurrentModel):
    """A GRU (one or more layers) with an L2 loss on the top layer's states.

    Variants:

    * ``"chung"`` (Chung et al. 2014): ``z``, ``r`` gates, candidate
      ``c = tanh(x Wca + (r*h) Wreca + bca)``, ``h' = (1-z)*h + z*c``;
      parameters ``Wz``, ``Wr``, ``Wca`` (D, H), ``Wrecz``, ``Wrecr``,
      ``Wreca`` (H, H), ``bz``, ``br``, ``bca`` (H,).
    * ``"reset_after"`` (``torch.nn.GRU``): ``n = tanh(gi_n + r * gh_n)``,
      ``h' = (1-z)*n + z*h``; parameters ``weight_ih_l{k}`` (3H, D),
      ``weight_hh_l{k}`` (3H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (3H,),
      gates stacked in the order r, z, n, named exactly as PyTorch names them
      so that a converted ``state_dict`` loads unchanged.

    With ``num_layers`` > 1 the Chung parameters are prefixed ``l{k}.``.

    Args:
        input_size: D.
        hidden_size: H.
        variant: ``"chung"`` or ``"reset_after"``.
        dtype: ``numpy.float32`` or ``numpy.float64``.
        seed: seed (or ``numpy.random.Generator``) of the initial parameters.
        init: ``"default"`` (PyTorch's uniform(-1/sqrt(H), 1/sqrt(H))) or
            ``"orthogonal"``.
        num_layers: L >= 1; h0 is (B, H) for L == 1 and (L, B, H) otherwise.

    Raises:
        ValueError: unknown variant (listing the valid ones), init, dtype or sizes.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        variant: str = "chung",
        dtype: FloatDType | np.dtype[np.floating] = np.float64,
        seed: int | np.random.Generator = 0,
        init: str = "default",
        num_layers: int = 1,
    ) -> None:
        if variant not in GRU_VARIANTS:
            raise ValueError(
                f"unknown GRU variant {variant!r}; valid: "
                f"{', '.join(repr(v) for v in GRU_VARIANTS)}"
            )
        self.variant = variant
        super().__init__(
            GRU_VARIANTS[variant],
            input_size,
            hidden_size,
            dtype=dtype,
            seed=seed,
            init=init,
            num_layers=num_layers,
            name=f"gru_{variant}",
        )
