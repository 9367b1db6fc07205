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

Initialisers (``init=``):

* ``"default"``: PyTorch's ``uniform(-1/sqrt(H), 1/sqrt(H))`` for every
  parameter (H the hidden size), except the LSTM forget-gate bias, set to 1;
* ``"orthogonal"``: recurrent weights orthogonal (``minigrad.init.orthogonal``,
  block by block for stacked weights), input weights Glorot-uniform, biases 0
  (LSTM forget-gate bias 1, LSTM peepholes 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from minigrad import init as mginit
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
from minigrad.init import Initializer

__all__ = [
    "CELLS",
    "INITS",
    "Fragment",
    "gru_chung",
    "gru_reset_after",
    "layer_prefix",
    "lstm",
    "mgu",
    "stack",
    "state_names",
    "tanh_rnn",
]

INITS: tuple[str, ...] = ("default", "orthogonal")
"""The names accepted by the ``init=`` argument of every fragment."""


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


@dataclass(frozen=True)
class _Inits:
    """The initialisers of one layer: input weights, recurrent weights, biases,
    LSTM forget-gate bias and LSTM peepholes."""

    input: Initializer
    recurrent: Initializer
    bias: Initializer
    forget_bias: Initializer
    peephole: Initializer


def _inits(init: str, hidden_size: int) -> _Inits:
    """The initialisers named ``init`` for a layer of ``hidden_size`` units."""
    if init == "default":
        u = mginit.pytorch_uniform(hidden_size)
        return _Inits(u, u, u, mginit.constant(1.0), u)
    if init == "orthogonal":
        return _Inits(
            mginit.glorot_uniform(),
            mginit.orthogonal(),
            mginit.zeros(),
            mginit.constant(1.0),
            mginit.zeros(),
        )
    raise ValueError(f"unknown init {init!r}; valid: {', '.join(repr(i) for i in INITS)}")


def _check_sizes(input_size: int, hidden_size: int) -> None:
    for what, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} must be an int >= 1, got {v!r}")


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
    _check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    ini = _inits(init, H)
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
    _check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    head, k = _torch_names(prefix)
    ini = _inits(init, H)
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
    _check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    ini = _inits(init, H)
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
    _check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    ini = _inits(init, H)
    h = b.state(f"{p}h", H)
    W = b.param(f"{p}W", (D, H), init=ini.input)
    U = b.param(f"{p}U", (H, H), init=ini.recurrent)
    bias = b.param(f"{p}b", H, init=ini.bias)
    a = add(affine(x, W, bias, name=f"{p}a_in"), matmul(h, U, name=f"{p}a_rec"), name=f"{p}a")
    h_next = tanh(a, name=f"{p}h_next")
    b.update(h, h_next)
    return h_next


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
    _check_sizes(input_size, hidden_size)
    p, D, H = prefix, input_size, hidden_size
    ini = _inits(init, H)
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


# --------------------------------------------------------------------------
# registry and stacking

CELLS: dict[str, Fragment] = {
    "gru": gru_chung,
    "gru_chung": gru_chung,
    "gru_reset_after": gru_reset_after,
    "lstm": lstm,
    "tanh": tanh_rnn,
    "mgu": mgu,
}
"""Cell name -> fragment. ``"gru"`` is Chung et al.'s GRU."""


def _fragment(cell: str) -> Fragment:
    """The fragment named ``cell``; ValueError listing the valid names otherwise."""
    try:
        return CELLS[cell]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown cell {cell!r}; valid: {', '.join(repr(c) for c in CELLS)}"
        ) from None


def _check_layers(layers: int) -> None:
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"the number of layers must be an int >= 1, got {layers!r}")


def layer_prefix(layer: int, layers: int) -> str:
    """The name prefix of layer ``layer`` (0-based) in a stack of ``layers``:
    ``""`` for a single layer, ``"l{layer}."`` otherwise."""
    return "" if layers == 1 else f"l{layer}."


def stack(
    b: CellBuilder,
    x: Ref,
    cell: str,
    input_size: int,
    hidden_size: int,
    layers: int,
    *,
    init: str = "default",
) -> list[Ref]:
    """Add ``layers`` layers of the cell named ``cell``, each reading the previous one's new state.

    Args:
        b: the builder to add to.
        x: the input of the first layer, (B, input_size).
        cell: a key of ``CELLS``.
        input_size: D, the first layer's input size (the others read H).
        hidden_size: H, every layer's state size.
        layers: the number of layers L >= 1.
        init: ``"default"`` or ``"orthogonal"``.

    Layer l uses the prefix ``f"l{l}."`` when L > 1 and ``""`` when L == 1
    (so ``gru_reset_after`` layers get PyTorch's names ``weight_ih_l{l}``).

    Returns:
        Each layer's new hidden state, bottom first: L Refs of shape (B, H).

    Raises:
        ValueError: for an unknown cell name (listing the valid ones) or L < 1.
    """
    frag = _fragment(cell)
    _check_layers(layers)
    out: list[Ref] = []
    inp, size = x, input_size
    for layer in range(layers):
        h = frag(b, inp, size, hidden_size, prefix=layer_prefix(layer, layers), init=init)
        out.append(h)
        inp, size = h, hidden_size
    return out


def state_names(cell: str, layers: int) -> list[str]:
    """The names of the states ``stack(b, x, cell, D, H, layers)`` declares.

    Args:
        cell: a key of ``CELLS``.
        layers: the number of layers L >= 1.

    Returns:
        Layer by layer, bottom first: ``h`` (and then ``c`` for the LSTM)
        with the layer's prefix, e.g. ``["l0.h", "l0.c", "l1.h", "l1.c"]``.
        Each state has shape (B, H).
    """
    frag = _fragment(cell)
    _check_layers(layers)
    kinds = ("h", "c") if frag is lstm else ("h",)
    return [f"{layer_prefix(layer, layers)}{k}" for layer in range(layers) for k in kinds]
