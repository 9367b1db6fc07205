"""Deep and bidirectional models: ``Stacked`` and ``Bidirectional``.

``Stacked`` runs L layers of one cell, in either time direction; its initial
states always carry the layer axis, (L, B, H). ``Bidirectional`` runs one
layer forwards and one backwards over the same input and concatenates their
states, (T, B, 2H). Both are built from the same minigrad cells as the
single-layer models and get their gradients from minigrad's BPTT.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from minigrad.types import Array, FloatDType
from models.cells.fragment import Fragment
from models.cells.registry import resolve_cell
from models.nets.base import RecurrentModel, check_array, check_state_dict

__all__ = ["Bidirectional", "Stacked"]


class Stacked(RecurrentModel):
    """L layers of the cell named ``cell``, run forwards or backwards in time.

    Layer l's parameters and states carry the prefix ``l{l}.`` when L > 1
    (``gru_reset_after`` layers use PyTorch's names ``weight_ih_l{l}``...).

    With ``reverse=True`` the model reads the sequence from its last step to
    its first: ``x`` and ``y`` are flipped on the time axis, the cell is run,
    and the hidden states and the gradient of ``x`` are flipped back, so that
    ``forward(x)[t]`` is the state after reading ``x[T-1], ..., x[t]`` and
    ``h0`` is the state before ``x[T-1]`` is read.

    Args:
        cell: a cell name (``"gru"``, ``"gru_reset_after"``, ``"lstm"``,
            ``"tanh"``, ``"mgu"``, a registered one), a ``module:function``
            spec or a fragment function.
        input_size: D.
        hidden_size: H.
        num_layers: L >= 1.
        reverse: run the sequence backwards in time.
        dtype: ``numpy.float32`` or ``numpy.float64``.
        seed: seed (or ``numpy.random.Generator``) of the initial parameters.
        init: ``"default"`` or ``"orthogonal"``.

    Initial states ``h0`` (and ``c0`` for the LSTM) are (L, B, H), layer 0
    first, whatever L, and so are their gradients.
    """

    def __init__(
        self,
        cell: str | Fragment,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        reverse: bool = False,
        *,
        dtype: FloatDType | np.dtype[np.floating] = np.float64,
        seed: int | np.random.Generator = 0,
        init: str = "default",
    ) -> None:
        super().__init__(
            cell,
            input_size,
            hidden_size,
            dtype=dtype,
            seed=seed,
            init=init,
            num_layers=num_layers,
            name=f"{resolve_cell(cell)[0]}_x{num_layers}" + ("_reverse" if reverse else ""),
        )
        self.reverse = bool(reverse)
        self._reverse = self.reverse

    @property
    def stacked_states(self) -> bool:
        """Always True: initial states are (L, B, H)."""
        return True

    def forward(
        self,
        x: Array,
        h0: Array | None = None,
        c0: Array | None = None,
        *,
        return_sequences: bool = True,
    ) -> Array:
        """Run the stack.

        Args:
            x: (T, B, D), time-major, the model's dtype.
            h0: optional initial states, (L, B, H); zeros if None.
            c0: optional initial cell states of an LSTM stack, (L, B, H).
            return_sequences: return every step's top state (True) or only
                the last one the model computed (False): ``h_T`` forwards,
                the state at ``t = 0`` in reverse.

        Returns:
            (T, B, H) with ``return_sequences``, else (B, H).
        """
        h = self._forward(x, {"h": h0, "c": c0})
        if return_sequences:
            return h
        last: Array = h[0].copy() if self.reverse else h[-1].copy()
        return last

    def loss_and_grads(
        self, x: Array, y: Array, h0: Array | None = None, c0: Array | None = None
    ) -> tuple[float, dict[str, Array]]:
        """The L2 loss ``0.5 * sum_t ||h_t - y_t||^2`` on the top layer and its gradients.

        Args:
            x: (T, B, D).
            y: (T, B, H), aligned with ``forward(x)`` (not flipped, even in reverse).
            h0: optional initial states, (L, B, H).
            c0: optional initial cell states of an LSTM stack, (L, B, H).

        Returns:
            ``(loss, grads)``: one entry per ``state_dict`` key, ``"x"``
            (T, B, D), ``"h0"`` (L, B, H) and, for the LSTM, ``"c0"`` (L, B, H).
        """
        return self._loss_and_grads(x, y, {"h": h0, "c": c0})


class Bidirectional:
    """One layer read forwards and one read backwards, their states concatenated.

    ``forward(x)[t] = [h_fwd_t, h_bwd_t]`` (T, B, 2H), where ``h_fwd_t`` has
    read ``x[0..t]`` and ``h_bwd_t`` has read ``x[T-1..t]``. The loss is
    ``0.5 * sum_t ||forward(x)[t] - y[t]||^2`` with ``y`` (T, B, 2H): it is the
    sum of one loss per direction, so the gradients are those of the two
    directions' runs (the gradient of ``x`` is their sum).

    Args:
        cell: a cell name, ``module:function`` spec or fragment function.
        input_size: D.
        hidden_size: H, the size of each direction's state.
        dtype: ``numpy.float32`` or ``numpy.float64``.
        seed: seed of the initial parameters (the two directions draw
            independent streams spawned from it).
        init: ``"default"`` or ``"orthogonal"``.

    Attributes:
        fwd, bwd: the two directions, ``Stacked`` models of one layer.

    ``state_dict`` keys are the directions' keys prefixed ``"fwd."`` and
    ``"bwd."``. Initial states ``h0`` (and ``c0`` for the LSTM) are
    (2, B, H): ``[0]`` for the forward direction (before ``x[0]``), ``[1]``
    for the backward one (before ``x[T-1]``).
    """

    def __init__(
        self,
        cell: str | Fragment,
        input_size: int,
        hidden_size: int,
        *,
        dtype: FloatDType | np.dtype[np.floating] = np.float64,
        seed: int = 0,
        init: str = "default",
    ) -> None:
        seeds = np.random.SeedSequence(seed).spawn(2)
        self.fwd = Stacked(
            cell,
            input_size,
            hidden_size,
            1,
            reverse=False,
            dtype=dtype,
            seed=np.random.default_rng(seeds[0]),
            init=init,
        )
        self.bwd = Stacked(
            cell,
            input_size,
            hidden_size,
            1,
            reverse=True,
            dtype=dtype,
            seed=np.random.default_rng(seeds[1]),
            init=init,
        )
        self.cell_type = self.fwd.cell_type
        self.input_size = self.fwd.input_size
        self.hidden_size = self.fwd.hidden_size
        self.dtype = self.fwd.dtype
        self.state_kinds = self.fwd.state_kinds

    def __repr__(self) -> str:
        return (
            f"Bidirectional(cell={self.cell_type!r}, input_size={self.input_size}, "
            f"hidden_size={self.hidden_size}, dtype={self.dtype.name})"
        )

    @property
    def num_params(self) -> int:
        """The number of scalar parameters of both directions."""
        return self.fwd.num_params + self.bwd.num_params

    # -- parameters -----------------------------------------------------------

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters: ``{"fwd.<name>": ..., "bwd.<name>": ...}``."""
        out = {f"fwd.{k}": v for k, v in self.fwd.state_dict().items()}
        out.update({f"bwd.{k}": v for k, v in self.bwd.state_dict().items()})
        return out

    def load_state_dict(self, d: Mapping[str, object]) -> None:
        """Replace every parameter; on any error (ValueError naming the key) nothing changes.

        Args:
            d: ``{"fwd.<name>": array, "bwd.<name>": array}``, exactly the keys,
                shapes and dtype of ``state_dict()``.
        """
        current = {
            f"{tag}{k}": v
            for tag, m in (("fwd.", self.fwd), ("bwd.", self.bwd))
            for k, v in m.params.items()
        }
        new = check_state_dict(current, d)
        parts = [
            {k[len(tag) :]: v for k, v in new.items() if k.startswith(tag)}
            for tag in ("fwd.", "bwd.")
        ]
        self.fwd.params, self.bwd.params = parts

    # -- running ------------------------------------------------------------------

    def _split_states(
        self, x: Array, given: Mapping[str, Array | None]
    ) -> tuple[dict[str, Array | None], dict[str, Array | None]]:
        """(2, B, H) initial states -> one (1, B, H) state dict per direction."""
        B, H = x.shape[1], self.hidden_size
        f: dict[str, Array | None] = {}
        b: dict[str, Array | None] = {}
        for kind, arr in given.items():
            if arr is None:
                f[kind] = b[kind] = None
                continue
            if kind not in self.state_kinds:
                raise ValueError(f"{kind}0 is not used by a {self.cell_type!r} model")
            a = check_array(f"{kind}0", arr, (2, B, H), self.dtype, dims="(2, B, H)")
            f[kind], b[kind] = a[0:1], a[1:2]
        return f, b

    def forward(self, x: Array, h0: Array | None = None, c0: Array | None = None) -> Array:
        """Run both directions.

        Args:
            x: (T, B, D), time-major, the model's dtype.
            h0: optional initial states, (2, B, H) (forward, backward); zeros if None.
            c0: optional initial cell states of an LSTM, (2, B, H).

        Returns:
            (T, B, 2H): the forward direction's states, then the backward one's.
        """
        xa = check_array("x", x, ("T", "B", self.input_size), self.dtype, dims="(T, B, D)")
        sf, sb = self._split_states(xa, {"h": h0, "c": c0})
        hf = self.fwd._forward(xa, sf)
        hb = self.bwd._forward(xa, sb)
        return np.concatenate([hf, hb], axis=-1)

    def loss_and_grads(
        self, x: Array, y: Array, h0: Array | None = None, c0: Array | None = None
    ) -> tuple[float, dict[str, Array]]:
        """The L2 loss ``0.5 * sum_t ||forward(x)[t] - y[t]||^2`` and its gradients.

        Args:
            x: (T, B, D).
            y: (T, B, 2H), the target of the concatenated states.
            h0: optional initial states, (2, B, H).
            c0: optional initial cell states of an LSTM, (2, B, H).

        Returns:
            ``(loss, grads)``: one entry per ``state_dict`` key, ``"x"``
            (T, B, D), ``"h0"`` (2, B, H) and, for the LSTM, ``"c0"`` (2, B, H).
        """
        xa = check_array("x", x, ("T", "B", self.input_size), self.dtype, dims="(T, B, D)")
        T, B, H = xa.shape[0], xa.shape[1], self.hidden_size
        ya = check_array("y", y, (T, B, 2 * H), self.dtype, dims="(T, B, 2H)")
        sf, sb = self._split_states(xa, {"h": h0, "c": c0})
        lf, gf = self.fwd._loss_and_grads(xa, ya[..., :H], sf)
        lb, gb = self.bwd._loss_and_grads(xa, ya[..., H:], sb)
        grads: dict[str, Array] = {f"fwd.{k}": gf[k] for k in self.fwd.params}
        grads.update({f"bwd.{k}": gb[k] for k in self.bwd.params})
        grads["x"] = gf["x"] + gb["x"]
        for kind in self.state_kinds:
            grads[f"{kind}0"] = np.concatenate([gf[f"{kind}0"], gb[f"{kind}0"]], axis=0)
        return lf + lb, grads
