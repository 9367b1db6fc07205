"""The tanh-RNN (Elman) fragment."""

from __future__ import annotations

from minigrad.cell import (
    CellBuilder,
    Ref,
    add,
    affine,
    matmul,
    tanh,
)
from minigrad.init import layer_inits
from models.cells.fragment import check_sizes

# --------------------------------------------------------------------------
# tanh-RNN (Elman) and the minimal gated unit


def tanh_rnn(
    b: CellBuilder,
    x: Ref,
    input_size: int,
    hidden_size: int,
    *,
    prefix: str = "",
    init: str = "default",
) -> Ref:
    """Elman network ``h' = tanh(x W + h U + b)``.

    Args:
        b: the builder to add to.
        x: the layer's input, (B, input_size).
        input_size: D.
        hidden_size: H.
        prefix: prepended to every name declared.
        init: ``"default"`` or ``"orthogonal"``.

    Declares the state ``{prefix}h`` (B, H) and the parameters ``W`` (D, H),
    ``U`` (H, H), ``b`` (H,), each with the prefix.

    Returns:
        The new state ``{prefix}h_next``, (B, H).
    """
    check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    ini = layer_inits(init, H)
    h = b.state(f"{p}h", H)
    W = b.param(f"{p}W", (D, H), init=ini.input)
    U = b.param(f"{p}U", (H, H), init=ini.recurrent)
    bias = b.param(f"{p}b", H, init=ini.bias)
    a = add(affine(x, W, bias, name=f"{p}a_in"), matmul(h, U, name=f"{p}a_rec"), name=f"{p}a")
    h_next = tanh(a, name=f"{p}h_next")
    b.update(h, h_next)
    return h_next


