"""A user's own cells, outside minigrad: a CIFG-LSTM (two states) and a GRU whose gates
use the user's own node type ``HardSigmoid`` (``hard_nodes``).

The tests put this folder on ``PYTHONPATH`` for the training run only
(``--cell cifg_cell:cifg``), and evaluate, sample and resume in processes that
cannot import it.
"""

from __future__ import annotations

from hard_nodes import hard_sigmoid

import minigrad as mg
from minigrad import CellBuilder, Ref
from minigrad.init import layer_inits


def cifg(
    b: CellBuilder,
    x: Ref,
    input_size: int,
    hidden_size: int,
    *,
    prefix: str = "",
    init: str = "default",
) -> Ref:
    """LSTM with coupled input and forget gates: ``i = 1 - f``; states ``h`` and ``c``."""
    p, D, H = prefix, input_size, hidden_size
    ini = layer_inits(init, H)
    h = b.state(f"{p}h", H)
    c = b.state(f"{p}c", H)
    W = {g: b.param(f"{p}W{g}", (D, H), init=ini.input) for g in "fco"}
    U = {g: b.param(f"{p}U{g}", (H, H), init=ini.recurrent) for g in "fco"}
    bias = {g: b.param(f"{p}b{g}", H, init=ini.forget_bias if g == "f" else ini.bias) for g in "fco"}

    def pre(g: str) -> Ref:
        return mg.add(mg.affine(x, W[g], bias[g]), mg.matmul(h, U[g]), name=f"{p}{g}_pre")

    f = mg.sigmoid(pre("f"), name=f"{p}f")
    g = mg.tanh(pre("c"), name=f"{p}g")
    c_next = mg.gru_update(f, g, c, name=f"{p}c_next")  # f * c + (1 - f) * g
    o = mg.sigmoid(pre("o"), name=f"{p}o")
    h_next = mg.mul(o, mg.tanh(c_next, name=f"{p}tanh_c"), name=f"{p}h_next")
    b.update(h, h_next)
    b.update(c, c_next)
    return h_next


def hard_mgu(
    b: CellBuilder,
    x: Ref,
    input_size: int,
    hidden_size: int,
    *,
    prefix: str = "",
    init: str = "default",
) -> Ref:
    """A minimal gated unit whose forget gate is ``HardSigmoid`` (a user's node type)."""
    p, D, H = prefix, input_size, hidden_size
    ini = layer_inits(init, H)
    h = b.state(f"{p}h", H)
    Wf, Wh = (b.param(f"{p}{n}", (D, H), init=ini.input) for n in ("Wf", "Wh"))
    Uf, Uh = (b.param(f"{p}{n}", (H, H), init=ini.recurrent) for n in ("Uf", "Uh"))
    f = hard_sigmoid(mg.add(x @ Wf, h @ Uf), name=f"{p}f")
    c = mg.tanh(mg.add(x @ Wh, (f * h) @ Uh), name=f"{p}c")
    h_next = mg.gru_update(f, h, c, name=f"{p}h_next")
    b.update(h, h_next)
    return h_next
