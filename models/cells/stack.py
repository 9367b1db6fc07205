"""Stacking fragments into layers, with optional dropout and zoneout, and the names
of their states.

The regularisers are added around whatever nodes a fragment declares
(``minigrad.noise``), never per cell type: dropout on each layer's input,
recurrent dropout on each state where it enters the next step's computation,
zoneout on each state's update. At rate 0 nothing is added, so the cell is
exactly the one without them.
"""

from __future__ import annotations

import math

from minigrad.cell import (
    CellBuilder,
    Ref,
)
from minigrad.noise import dropout_value, recurrent_dropout, zoneout_states
from models.cells.fragment import Fragment
from models.cells.registry import fragment


def check_layers(layers: int) -> None:
    """Raise ValueError unless ``layers`` is an int >= 1."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"the number of layers must be an int >= 1, got {layers!r}")


def layer_prefix(layer: int, layers: int) -> str:
    """The name prefix of layer ``layer`` (0-based) in a stack of ``layers``:
    ``""`` for a single layer, ``"l{layer}."`` otherwise."""
    return "" if layers == 1 else f"l{layer}."


def stack(
    b: CellBuilder,
    x: Ref,
    cell: str | Fragment,
    input_size: int,
    hidden_size: int,
    layers: int,
    *,
    init: str = "default",
    dropout: float = 0.0,
    recurrent: float = 0.0,
    zoneout: float = 0.0,
) -> list[Ref]:
    """Add ``layers`` layers of the cell named ``cell``, each reading the previous one's new state.

    Args:
        b: the builder to add to.
        x: the input of the first layer, (B, input_size).
        cell: a cell name, ``module:function`` spec or fragment (``resolve_cell``).
        input_size: D, the first layer's input size (the others read H).
        hidden_size: H, every layer's state size.
        layers: the number of layers L >= 1.
        init: ``"default"`` or ``"orthogonal"``.
        dropout: variational dropout rate on each layer's input (noise input
            ``"{prefix}in.drop.mask"``, one mask per sequence); 0 for none.
        recurrent: variational dropout rate on each state where it enters the
            next step's computation (``"{state}.rdrop.mask"``); 0 for none.
        zoneout: zoneout probability of each state (``"{state}.zoneout.mask"``,
            a new mask every step); the layer's output is then the zoned state.

    Layer l uses the prefix ``f"l{l}."`` when L > 1 and ``""`` when L == 1
    (so ``gru_reset_after`` layers get PyTorch's names ``weight_ih_l{l}``).

    Returns:
        Each layer's new hidden state, bottom first: L Refs of shape (B, H).

    Raises:
        ValueError: for an unknown cell name (listing the valid ones) or L < 1.
    """
    frag = fragment(cell)
    check_layers(layers)
    out: list[Ref] = []
    inp, size = x, input_size
    for layer in range(layers):
        prefix = layer_prefix(layer, layers)
        inp = dropout_value(b, inp, size, dropout, name=f"{prefix}in.drop")
        before = set(b.state_names())
        h = _run_fragment(frag, b, inp, size, hidden_size, prefix, init)
        mine = [s for s in b.state_names() if s not in before]
        recurrent_dropout(b, mine, recurrent)
        h = zoneout_states(b, mine, zoneout).get(h.name, h)
        out.append(h)
        inp, size = h, hidden_size
    return out


def _run_fragment(
    frag: Fragment, b: CellBuilder, x: Ref, size: int, hidden: int, prefix: str, init: str
) -> Ref:
    """One layer of ``frag``; a function that does not follow the fragment contract
    ``frag(b, x, input_size, hidden_size, *, prefix, init) -> Ref`` gets a one-line
    ``ValueError`` naming it instead of a traceback from inside it."""
    what = getattr(frag, "__module__", "?") + ":" + getattr(frag, "__qualname__", repr(frag))
    try:
        h = frag(b, x, size, hidden, prefix=prefix, init=init)
    except TypeError as exc:
        raise ValueError(
            f"cell function {what} does not take the fragment arguments "
            f"(b, x, input_size, hidden_size, *, prefix, init): {exc}"
        ) from None
    if not isinstance(h, Ref):
        raise ValueError(
            f"cell function {what} returned {type(h).__name__}, expected the Ref of the "
            "layer's new hidden state (B, H)"
        )
    return h


def layer_states(
    cell: str | Fragment, input_size: int = 1, hidden_size: int = 1
) -> tuple[str, ...]:
    """The names of the states one layer of ``cell`` declares, without prefix, in order.

    Read from the cell itself: the fragment is run once into a scratch
    builder (of the sizes given; the names do not depend on them for the
    built-in cells) and its declared states are listed, so a cell with any
    number of states needs no special case (``("h",)`` for the GRU,
    ``("h", "c")`` for the LSTM). The models read them from their built cell.
    """
    frag = fragment(cell)
    b = CellBuilder("probe")
    x = b.input("x", input_size)
    frag(b, x, input_size, hidden_size, prefix="", init="default")
    return tuple(b.state_names())


def param_count(
    cell: str | Fragment, input_size: int, hidden_size: int, layers: int, readout: int = 0
) -> int:
    """The number of scalar parameters of ``layers`` stacked layers of ``cell`` and a
    read-out of ``readout`` units (0: none), counted without allocating any.

    One layer reading ``input_size`` and one reading ``hidden_size`` are declared
    into scratch builders (declarations allocate nothing); every layer above the
    first reads the one below, so the stack has one of the first and
    ``layers - 1`` of the second.

    Raises:
        ValueError: an unknown cell, or L < 1.
        minigrad.errors.ShapeError: a single parameter above
            ``minigrad.cell.MAX_ELEMENTS``.
    """
    frag = fragment(cell)
    check_layers(layers)

    def one_layer(width: int) -> int:
        b = CellBuilder("count")
        x = b.input("x", width)
        b.output("h", _run_fragment(frag, b, x, width, hidden_size, "", "default"))
        return sum(math.prod(spec.shape) for spec in b.build().params.values())

    total = one_layer(input_size)
    if layers > 1:
        total += (layers - 1) * one_layer(hidden_size)
    return total + (hidden_size * readout + readout if readout else 0)


def state_names(cell: str | Fragment, layers: int) -> list[str]:
    """The names of the states ``stack(b, x, cell, D, H, layers)`` declares.

    Args:
        cell: a cell name, ``module:function`` spec or fragment.
        layers: the number of layers L >= 1.

    Returns:
        Layer by layer, bottom first, each layer's declared states with the
        layer's prefix, e.g. ``["l0.h", "l0.c", "l1.h", "l1.c"]`` for the
        LSTM. Each state has shape (B, H).
    """
    check_layers(layers)
    kinds = layer_states(cell)
    return [f"{layer_prefix(layer, layers)}{k}" for layer in range(layers) for k in kinds]
