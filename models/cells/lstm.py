"""The LSTM fragment with peepholes (Graves 2013, as in Chung et al. 2014)."""

from __future__ import annotations

from minigrad.cell import (
    CellBuilder,
    Ref,
    add,
    affine,
    matmul,
    mul,
    sigmoid,
    tanh,
)
from minigrad.init import layer_inits
from models.cells.fragment import check_sizes

# --------------------------------------------------------------------------
# LSTM with peepholes (Graves 2013, as in Chung et al. 2014)


def lstm(
    b: CellBuilder,
    x: Ref,
    input_size: int,
    hidden_size: int,
    *,
    prefix: str = "",
    init: str = "default",
) -> Ref:
    """LSTM with diagonal peepholes (Graves 2013; the LSTM of Chung et al. 2014).

    Per step, with ``h``, ``c`` the previous hidden and cell states::

        i  = sigmoid(x Wi + h Ui + pi*c + bi)
        f  = sigmoid(x Wf + h Uf + pf*c + bf)
        g  = tanh(x Wc + h Uc + bc)
        c' = f*c + i*g
        o  = sigmoid(x Wo + h Uo + po*c' + bo)     (peephole on the new cell)
        h' = o * tanh(c')

    Args:
        b: the builder to add to.
        x: the layer's input, (B, input_size).
        input_size: D.
        hidden_size: H.
        prefix: prepended to every name declared.
        init: ``"default"`` or ``"orthogonal"``; the forget-gate bias ``bf``
            starts at 1 under both.

    Declares the states ``{prefix}h`` and ``{prefix}c`` (B, H) and the
    parameters ``Wi``, ``Wf``, ``Wc``, ``Wo`` (D, H); ``Ui``, ``Uf``, ``Uc``,
    ``Uo`` (H, H); peepholes ``pi``, ``pf``, ``po`` (H,); biases ``bi``,
    ``bf``, ``bc``, ``bo`` (H,), each with the prefix; no weight is stacked.

    Returns:
        The new hidden state ``{prefix}h_next``, (B, H).
    """
    check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    ini = layer_inits(init, H)
    h = b.state(f"{p}h", H)
    c = b.state(f"{p}c", H)
    W = {g: b.param(f"{p}W{g}", (D, H), init=ini.input) for g in "ifco"}
    U = {g: b.param(f"{p}U{g}", (H, H), init=ini.recurrent) for g in "ifco"}
    P = {g: b.param(f"{p}p{g}", H, init=ini.peephole) for g in "ifo"}
    bias = {
        g: b.param(f"{p}b{g}", H, init=ini.forget_bias if g == "f" else ini.bias) for g in "ifco"
    }

    def pre(gate: str, wname: str, cell: Ref | None) -> Ref:
        """The pre-activation of a gate: x W + h U (+ peephole * cell) + bias."""
        s = add(
            affine(x, W[wname], bias[wname], name=f"{p}{gate}_in"),
            matmul(h, U[wname], name=f"{p}{gate}_rec"),
            name=f"{p}{gate}_pre" if cell is None else f"{p}{gate}_xh",
        )
        if cell is None:
            return s
        return add(s, mul(P[gate], cell, name=f"{p}{gate}_peep"), name=f"{p}{gate}_pre")

    i = sigmoid(pre("i", "i", c), name=f"{p}i")
    f = sigmoid(pre("f", "f", c), name=f"{p}f")
    g = tanh(pre("g", "c", None), name=f"{p}g")
    c_next = add(mul(f, c, name=f"{p}f_c"), mul(i, g, name=f"{p}i_g"), name=f"{p}c_next")
    o = sigmoid(pre("o", "o", c_next), name=f"{p}o")
    h_next = mul(o, tanh(c_next, name=f"{p}tanh_c"), name=f"{p}h_next")
    b.update(h, h_next)
    b.update(c, c_next)
    return h_next


