"""The minimal gated unit fragment (Zhou et al. 2016)."""

from __future__ import annotations

from minigrad.cell import (
    CellBuilder,
    Ref,
    add,
    affine,
    gru_update,
    matmul,
    mul,
    sigmoid,
    tanh,
)
from minigrad.init import layer_inits
from models.cells.fragment import check_sizes


def mgu(
    b: CellBuilder,
    x: Ref,
    input_size: int,
    hidden_size: int,
    *,
    prefix: str = "",
    init: str = "default",
) -> Ref:
    """Minimal gated unit (Zhou et al. 2016): a GRU whose forget gate also resets.

    Per step::

        f  = sigmoid(x Wf + h Uf + bf)
        c  = tanh(x Wh + (f*h) Uh + bh)
        h' = (1 - f)*h + f*c                  (GRUUpdate(f, h, c))

    Args:
        b: the builder to add to.
        x: the layer's input, (B, input_size).
        input_size: D.
        hidden_size: H.
        prefix: prepended to every name declared.
        init: ``"default"`` or ``"orthogonal"``.

    Declares the state ``{prefix}h`` (B, H) and the parameters ``Wf``, ``Wh``
    (D, H), ``Uf``, ``Uh`` (H, H), ``bf``, ``bh`` (H,), each with the prefix.

    Returns:
        The new state ``{prefix}h_next``, (B, H).
    """
    check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    ini = layer_inits(init, H)
    h = b.state(f"{p}h", H)
    Wf = b.param(f"{p}Wf", (D, H), init=ini.input)
    Wh = b.param(f"{p}Wh", (D, H), init=ini.input)
    Uf = b.param(f"{p}Uf", (H, H), init=ini.recurrent)
    Uh = b.param(f"{p}Uh", (H, H), init=ini.recurrent)
    bf = b.param(f"{p}bf", H, init=ini.bias)
    bh = b.param(f"{p}bh", H, init=ini.bias)
    f_pre = add(
        affine(x, Wf, bf, name=f"{p}f_in"), matmul(h, Uf, name=f"{p}f_rec"), name=f"{p}f_pre"
    )
    f = sigmoid(f_pre, name=f"{p}f")
    fh = mul(f, h, name=f"{p}fh")
    c_pre = add(
        affine(x, Wh, bh, name=f"{p}c_in"), matmul(fh, Uh, name=f"{p}c_rec"), name=f"{p}c_pre"
    )
    c = tanh(c_pre, name=f"{p}c")
    h_next = gru_update(f, h, c, name=f"{p}h_next")
    b.update(h, h_next)
    return h_next


