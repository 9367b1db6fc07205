"""GRU fragments: Chung et al.'s convention and PyTorch's (reset after)."""

from __future__ import annotations

import re

from minigrad.cell import (
    CellBuilder,
    Ref,
    add,
    affine,
    gru_update,
    matmul,
    mul,
    sigmoid,
    slice_,
    tanh,
)
from minigrad.init import layer_inits
from models.cells.fragment import check_sizes

# --------------------------------------------------------------------------
# GRU, Chung et al. 2014


def gru_chung(
    b: CellBuilder,
    x: Ref,
    input_size: int,
    hidden_size: int,
    *,
    prefix: str = "",
    init: str = "default",
) -> Ref:
    """GRU of Chung et al. (2014), the reset gate applied before the recurrent product.

    Per step, with ``h`` the previous state::

        z  = sigmoid(x Wz + h Wrecz + bz)
        r  = sigmoid(x Wr + h Wrecr + br)
        c  = tanh(x Wca + (r*h) Wreca + bca)
        h' = (1 - z)*h + z*c                  (one GRUUpdate node)

    Args:
        b: the builder to add to.
        x: the layer's input, (B, input_size).
        input_size: D.
        hidden_size: H.
        prefix: prepended to every name declared.
        init: ``"default"`` or ``"orthogonal"`` (module docstring).

    Declares the state ``{prefix}h`` (B, H) and the parameters ``Wz``, ``Wr``,
    ``Wca`` (D, H), ``Wrecz``, ``Wrecr``, ``Wreca`` (H, H), ``bz``, ``br``,
    ``bca`` (H,), each with the prefix; no weight is stacked.

    Returns:
        The new state ``{prefix}h_next``, (B, H).
    """
    check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    ini = layer_inits(init, H)
    h = b.state(f"{p}h", H)
    Wz = b.param(f"{p}Wz", (D, H), init=ini.input)
    Wr = b.param(f"{p}Wr", (D, H), init=ini.input)
    Wca = b.param(f"{p}Wca", (D, H), init=ini.input)
    Wrecz = b.param(f"{p}Wrecz", (H, H), init=ini.recurrent)
    Wrecr = b.param(f"{p}Wrecr", (H, H), init=ini.recurrent)
    Wreca = b.param(f"{p}Wreca", (H, H), init=ini.recurrent)
    bz = b.param(f"{p}bz", H, init=ini.bias)
    br = b.param(f"{p}br", H, init=ini.bias)
    bca = b.param(f"{p}bca", H, init=ini.bias)

    z_pre = add(
        affine(x, Wz, bz, name=f"{p}z_in"), matmul(h, Wrecz, name=f"{p}z_rec"), name=f"{p}z_pre"
    )
    z = sigmoid(z_pre, name=f"{p}z")
    r_pre = add(
        affine(x, Wr, br, name=f"{p}r_in"), matmul(h, Wrecr, name=f"{p}r_rec"), name=f"{p}r_pre"
    )
    r = sigmoid(r_pre, name=f"{p}r")
    rh = mul(r, h, name=f"{p}rh")
    c_pre = add(
        affine(x, Wca, bca, name=f"{p}c_in"),
        matmul(rh, Wreca, name=f"{p}c_rec"),
        name=f"{p}c_pre",
    )
    c = tanh(c_pre, name=f"{p}c")
    h_next = gru_update(z, h, c, name=f"{p}h_next")
    b.update(h, h_next)
    return h_next


# --------------------------------------------------------------------------
# GRU, PyTorch's convention (reset after the recurrent product)

_LAYER_PREFIX = re.compile(r"^(|.*\.)l(\d+)\.$")


def _torch_names(prefix: str) -> tuple[str, int]:
    """Split a prefix into (head, layer) for PyTorch-style parameter names.

    ``"l1."`` -> ``("", 1)``; ``"enc.l2."`` -> ``("enc.", 2)``; any other
    prefix -> ``(prefix, 0)``.
    """
    m = _LAYER_PREFIX.match(prefix)
    if m is None:
        return prefix, 0
    return m.group(1), int(m.group(2))


def gru_reset_after(
    b: CellBuilder,
    x: Ref,
    input_size: int,
    hidden_size: int,
    *,
    prefix: str = "",
    init: str = "default",
) -> Ref:
    """GRU in PyTorch's convention (``torch.nn.GRU``): the reset gate multiplies the
    recurrent product, and the update gate weighs the old state.

    Per step, with ``h`` the previous state::

        gi = x W_ih^T + b_ih,   gh = h W_hh^T + b_hh     (each (B, 3H), blocks r, z, n)
        r  = sigmoid(gi_r + gh_r)
        z  = sigmoid(gi_z + gh_z)
        n  = tanh(gi_n + r * gh_n)
        h' = (1 - z)*n + z*h                              (GRUUpdate(z, n, h))

    Args:
        b: the builder to add to.
        x: the layer's input, (B, input_size).
        input_size: D.
        hidden_size: H.
        prefix: prepended to the names of the state and of every node.
        init: ``"default"`` (exactly PyTorch's initialisation) or ``"orthogonal"``.

    Parameters, in PyTorch's layouts, stacked by gate in the order **r, z, n**
    (rows ``0:H`` are r, ``H:2H`` z, ``2H:3H`` n):

    * ``weight_ih_l{k}`` (3H, D), ``weight_hh_l{k}`` (3H, H),
    * ``bias_ih_l{k}`` (3H,), ``bias_hh_l{k}`` (3H,).

    The layer index ``k`` follows PyTorch: a prefix ending in ``l<k>.`` (as
    ``stack`` gives layer k of a deep stack, ``"l1."``) names the parameters
    ``weight_ih_l<k>`` with that part of the prefix removed (``"enc.l1."`` ->
    ``enc.weight_ih_l1``); any other prefix is prepended to ``weight_ih_l0``.
    The state is ``{prefix}h`` (B, H) in every case.

    Returns:
        The new state ``{prefix}h_next``, (B, H).
    """
    check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    head, k = _torch_names(prefix)
    ini = layer_inits(init, H)
    h = b.state(f"{p}h", H)
    w_ih = b.param(f"{head}weight_ih_l{k}", (3 * H, D), init=ini.input)
    w_hh = b.param(f"{head}weight_hh_l{k}", (3 * H, H), init=ini.recurrent)
    b_ih = b.param(f"{head}bias_ih_l{k}", 3 * H, init=ini.bias)
    b_hh = b.param(f"{head}bias_hh_l{k}", 3 * H, init=ini.bias)

    gi = add(matmul(x, w_ih, transpose_b=True, name=f"{p}x_Wih"), b_ih, name=f"{p}gi")
    gh = add(matmul(h, w_hh, transpose_b=True, name=f"{p}h_Whh"), b_hh, name=f"{p}gh")
    gi_r = slice_(gi, 0, H, name=f"{p}gi_r")
    gi_z = slice_(gi, H, 2 * H, name=f"{p}gi_z")
    gi_n = slice_(gi, 2 * H, 3 * H, name=f"{p}gi_n")
    gh_r = slice_(gh, 0, H, name=f"{p}gh_r")
    gh_z = slice_(gh, H, 2 * H, name=f"{p}gh_z")
    gh_n = slice_(gh, 2 * H, 3 * H, name=f"{p}gh_n")
    r = sigmoid(add(gi_r, gh_r, name=f"{p}r_pre"), name=f"{p}r")
    z = sigmoid(add(gi_z, gh_z, name=f"{p}z_pre"), name=f"{p}z")
    n_pre = add(gi_n, mul(r, gh_n, name=f"{p}r_ghn"), name=f"{p}n_pre")
    n = tanh(n_pre, name=f"{p}n")
    h_next = gru_update(z, n, h, name=f"{p}h_next")
    b.update(h, h_next)
    return h_next


