"""Hand-written plain-numpy recurrent cells with hand-derived BPTT, used as test oracles.

Every cell here is written independently of ``minigrad``: a straightforward per-step
forward loop followed by a per-step backward loop whose derivatives were worked out by
hand (the derivation is in each docstring).  Readability matters more than speed.

Common contract
---------------
``fn(params, x, y, h0=None[, c0=None]) -> (hidden, loss, grads)`` where

* ``x`` is (T, B, D), time-major; rows are samples, so ``x_t`` (B, D) multiplies weight
  matrices from the left (``x_t @ W`` with ``W`` of shape (D, H));
* ``y`` is (T, B, H), the regression target of every hidden state;
* ``hidden`` is (T, B, H): the states h_1 .. h_T (h_0 is not included);
* ``loss = 0.5 * sum_t ||h_t - y_t||^2``;
* ``grads`` has one entry per parameter name, plus ``"x"`` (T, B, D) and ``"h0"`` (B, H)
  (and ``"c0"`` for the LSTM).  ``h0`` (and ``c0``) default to zeros.

Backward convention: ``dh`` denotes the adjoint dL/dh_t of the state leaving step t.  It is
the local loss term ``h_t - y_t`` plus the adjoint carried back from step t + 1.  Weight
gradients are summed over time steps; ``sigma' = s (1 - s)`` and ``tanh' = 1 - tanh^2``.

All arithmetic follows the dtype of the inputs: float32 in, float32 out (the loss is
returned as a numpy scalar of that dtype); float64 is used for exact checks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]
Params = dict[str, Array]
CellResult = tuple[Array, np.floating, dict[str, Array]]

__all__ = [
    "central_difference_gradient",
    "gru_chung",
    "gru_reset_after",
    "init_gru_chung",
    "init_gru_reset_after",
    "init_lstm_peephole",
    "init_mgu",
    "init_tanh_rnn",
    "lstm_peephole",
    "mgu",
    "sigmoid",
    "tanh_rnn",
]


# ----------------------------------------------------------------------------- helpers


def sigmoid(a: Array) -> Array:
    """Logistic function, written as ``0.5 * (1 + tanh(a / 2))``: exact, overflow-free."""
    out: Array = 0.5 * (1.0 + np.tanh(0.5 * a))
    return out


def _common_dtype(params: Params, *arrays: Array | None) -> np.dtype:
    return np.result_type(*params.values(), *(a for a in arrays if a is not None))


def _state0(state: Array | None, batch: int, hidden: int, dtype: np.dtype) -> Array:
    if state is None:
        return np.zeros((batch, hidden), dtype=dtype)
    return np.asarray(state, dtype=dtype)


def _cast(params: Params, dtype: np.dtype) -> Params:
    return {name: np.asarray(value, dtype=dtype) for name, value in params.items()}


def _l2_loss(hidden: Array, y: Array) -> np.floating:
    diff = hidden - y
    return diff.dtype.type(0.5) * np.sum(diff * diff)


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    return rng.uniform(-0.5, 0.5, size=shape).astype(dtype)


def central_difference_gradient(
    f: Callable[[], np.floating | float], array: Array, eps: float = 1e-3
) -> Array:
    """Per-element fourth-order central difference of ``f()`` with respect to ``array``.

    ``array`` is perturbed in place (and restored); ``f`` must read it on every call.  The
    stencil ``(8 (f(+e) - f(-e)) - (f(+2e) - f(-2e))) / (12 e)`` has truncation error
    O(e^4).  The arithmetic is done in ``array``'s dtype (at least float64), so evaluating
    ``f`` in ``np.longdouble`` lowers the rounding noise, about ``eps_dtype * |f| / e``.
    """
    dtype = np.result_type(array.dtype, np.float64)
    grad = np.zeros(array.shape, dtype=dtype)
    flat = array.reshape(-1)  # a view: the array must be contiguous
    if flat.size and not np.shares_memory(flat, array):
        raise ValueError("central_difference_gradient needs a contiguous array")
    step = dtype.type(eps)
    for k in range(flat.size):
        original = flat[k]
        values = []
        for multiple in (2, 1, -1, -2):
            flat[k] = original + multiple * step
            values.append(dtype.type(f()))
        flat[k] = original
        f_p2, f_p1, f_m1, f_m2 = values
        grad.reshape(-1)[k] = (8 * (f_p1 - f_m1) - (f_p2 - f_m2)) / (12 * step)
    return grad


# ----------------------------------------------------------------------------- GRU (Chung)


def init_gru_chung(D: int, H: int, rng: np.random.Generator, dtype: np.dtype) -> Params:
    """Random parameters for :func:`gru_chung` (uniform in [-0.5, 0.5])."""
    dtype = np.dtype(dtype)
    params: Params = {}
    for name in ("Wz", "Wr", "Wca"):
        params[name] = _uniform(rng, (D, H), dtype)
    for name in ("Wrecz", "Wrecr", "Wreca"):
        params[name] = _uniform(rng, (H, H), dtype)
    for name in ("bz", "br", "bca"):
        params[name] = _uniform(rng, (H,), dtype)
    return params


def gru_chung(params: Params, x: Array, y: Array, h0: Array | None = None) -> CellResult:
    """GRU of Chung et al. (2014), reset gate applied before the recurrent product.

    Forward, per step (h = h_{t-1}, x = x_t)::

        z  = sigma(x Wz + h Wrecz + bz)
        r  = sigma(x Wr + h Wrecr + br)
        c  = tanh(x Wca + (r*h) Wreca + bca)
        h' = (1 - z)*h + z*c

    Backward, given dh = dL/dh'::

        dz   = dh * (c - h)              daz = dz * z(1-z)
        dc   = dh * z                    dac = dc * (1 - c^2)
        d(rh) = dac Wreca^T
        dr   = d(rh) * h                 dar = dr * r(1-r)
        dWz += x^T daz, dWr += x^T dar, dWca += x^T dac
        dWrecz += h^T daz, dWrecr += h^T dar, dWreca += (r*h)^T dac
        db*  += column sums of da*
        dx_t  = daz Wz^T + dar Wr^T + dac Wca^T
        dh_prev = dh*(1-z) + d(rh)*r + daz Wrecz^T + dar Wrecr^T
    """
    dtype = _common_dtype(params, x, y, h0)
    p = _cast(params, dtype)
    x = np.asarray(x, dtype=dtype)
    y = np.asarray(y, dtype=dtype)
    T, B, _ = x.shape
    H = p["Wrecz"].shape[0]
    h_init = _state0(h0, B, H, dtype)

    hs = [h_init]
    zs, rs, cs = [], [], []
    for t in range(T):
        h = hs[-1]
        z = sigmoid(x[t] @ p["Wz"] + h @ p["Wrecz"] + p["bz"])
        r = sigmoid(x[t] @ p["Wr"] + h @ p["Wrecr"] + p["br"])
        c = np.tanh(x[t] @ p["Wca"] + (r * h) @ p["Wreca"] + p["bca"])
        hs.append((1 - z) * h + z * c)
        zs.append(z)
        rs.append(r)
        cs.append(c)
    hidden = np.stack(hs[1:])
    loss = _l2_loss(hidden, y)

    grads = {name: np.zeros_like(value) for name, value in p.items()}
    dx = np.zeros_like(x)
    dh_next = np.zeros((B, H), dtype=dtype)
    for t in reversed(range(T)):
        h, z, r, c = hs[t], zs[t], rs[t], cs[t]
        dh = (hidden[t] - y[t]) + dh_next
        daz = dh * (c - h) * z * (1 - z)
        dac = dh * z * (1 - c * c)
        drh = dac @ p["Wreca"].T
        dar = drh * h * r * (1 - r)

        grads["Wz"] += x[t].T @ daz
        grads["Wr"] += x[t].T @ dar
        grads["Wca"] += x[t].T @ dac
        grads["Wrecz"] += h.T @ daz
        grads["Wrecr"] += h.T @ dar
        grads["Wreca"] += (r * h).T @ dac
        grads["bz"] += daz.sum(axis=0)
        grads["br"] += dar.sum(axis=0)
        grads["bca"] += dac.sum(axis=0)

        dx[t] = daz @ p["Wz"].T + dar @ p["Wr"].T + dac @ p["Wca"].T
        dh_next = dh * (1 - z) + drh * r + daz @ p["Wrecz"].T + dar @ p["Wrecr"].T
    grads["x"] = dx
    grads["h0"] = dh_next
    return hidden, loss, grads


# ----------------------------------------------------------------------------- GRU (PyTorch)


def init_gru_reset_after(D: int, H: int, rng: np.random.Generator, dtype: np.dtype) -> Params:
    """Random parameters for :func:`gru_reset_after`, in PyTorch's layouts (gates r, z, n)."""
    dtype = np.dtype(dtype)
    return {
        "weight_ih_l0": _uniform(rng, (3 * H, D), dtype),
        "weight_hh_l0": _uniform(rng, (3 * H, H), dtype),
        "bias_ih_l0": _uniform(rng, (3 * H,), dtype),
        "bias_hh_l0": _uniform(rng, (3 * H,), dtype),
    }


def gru_reset_after(params: Params, x: Array, y: Array, h0: Array | None = None) -> CellResult:
    """GRU in PyTorch's convention (``torch.nn.GRU``): reset applied after the product.

    With gi = x W_ih^T + b_ih and gh = h W_hh^T + b_hh split into blocks (r, z, n)::

        r  = sigma(gi_r + gh_r)
        z  = sigma(gi_z + gh_z)
        n  = tanh(gi_n + r * gh_n)
        h' = (1 - z)*n + z*h

    Backward, given dh = dL/dh'::

        dn = dh * (1 - z)        dan = dn * (1 - n^2)
        dz = dh * (h - n)        daz = dz * z(1-z)
        dr = dan * gh_n          dar = dr * r(1-r)
        dgi = [dar, daz, dan]    dgh = [dar, daz, dan * r]
        dW_ih += dgi^T x,  db_ih += column sums of dgi
        dW_hh += dgh^T h,  db_hh += column sums of dgh
        dx_t = dgi W_ih,   dh_prev = dh*z + dgh W_hh
    """
    dtype = _common_dtype(params, x, y, h0)
    p = _cast(params, dtype)
    x = np.asarray(x, dtype=dtype)
    y = np.asarray(y, dtype=dtype)
    T, B, _ = x.shape
    w_ih, w_hh = p["weight_ih_l0"], p["weight_hh_l0"]
    b_ih, b_hh = p["bias_ih_l0"], p["bias_hh_l0"]
    H = w_hh.shape[1]
    h_init = _state0(h0, B, H, dtype)

    hs = [h_init]
    cache = []
    for t in range(T):
        h = hs[-1]
        gi = x[t] @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
        gh_n = gh[:, 2 * H :]
        n = np.tanh(gi[:, 2 * H :] + r * gh_n)
        hs.append((1 - z) * n + z * h)
        cache.append((r, z, n, gh_n))
    hidden = np.stack(hs[1:])
    loss = _l2_loss(hidden, y)

    d_w_ih, d_w_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    d_b_ih, d_b_hh = np.zeros_like(b_ih), np.zeros_like(b_hh)
    dx = np.zeros_like(x)
    dh_next = np.zeros((B, H), dtype=dtype)
    for t in reversed(range(T)):
        h = hs[t]
        r, z, n, gh_n = cache[t]
        dh = (hidden[t] - y[t]) + dh_next
        dan = dh * (1 - z) * (1 - n * n)
        daz = dh * (h - n) * z * (1 - z)
        dar = dan * gh_n * r * (1 - r)
        dgi = np.concatenate([dar, daz, dan], axis=1)
        dgh = np.concatenate([dar, daz, dan * r], axis=1)

        d_w_ih += dgi.T @ x[t]
        d_w_hh += dgh.T @ h
        d_b_ih += dgi.sum(axis=0)
        d_b_hh += dgh.sum(axis=0)
        dx[t] = dgi @ w_ih
        dh_next = dh * z + dgh @ w_hh
    grads = {
        "weight_ih_l0": d_w_ih,
        "weight_hh_l0": d_w_hh,
        "bias_ih_l0": d_b_ih,
        "bias_hh_l0": d_b_hh,
        "x": dx,
        "h0": dh_next,
    }
    return hidden, loss, grads


# ----------------------------------------------------------------------------- LSTM (peephole)


def init_lstm_peephole(D: int, H: int, rng: np.random.Generator, dtype: np.dtype) -> Params:
    """Random parameters for :func:`lstm_peephole` (uniform in [-0.5, 0.5])."""
    dtype = np.dtype(dtype)
    params: Params = {}
    for name in ("Wi", "Wf", "Wc", "Wo"):
        params[name] = _uniform(rng, (D, H), dtype)
    for name in ("Ui", "Uf", "Uc", "Uo"):
        params[name] = _uniform(rng, (H, H), dtype)
    for name in ("pi", "pf", "po", "bi", "bf", "bc", "bo"):
        params[name] = _uniform(rng, (H,), dtype)
    return params


def lstm_peephole(
    params: Params,
    x: Array,
    y: Array,
    h0: Array | None = None,
    c0: Array | None = None,
) -> CellResult:
    """LSTM with diagonal peepholes (Graves 2013; the LSTM of Chung et al. 2014).

    Forward, per step (h, c = h_{t-1}, c_{t-1})::

        i  = sigma(x Wi + h Ui + pi*c + bi)
        f  = sigma(x Wf + h Uf + pf*c + bf)
        g  = tanh(x Wc + h Uc + bc)
        c' = f*c + i*g
        o  = sigma(x Wo + h Uo + po*c' + bo)      (peephole on the new cell)
        h' = o * tanh(c')

    The loss sees h' only.  Backward, given dh = dL/dh' and dc_next = dL/dc' carried from
    step t + 1 (through c' -> c'' only)::

        dao = dh * tanh(c') * o(1-o)
        dc' = dc_next + dh * o * (1 - tanh(c')^2) + dao * po     (total adjoint of c')
        dai = dc' * g * i(1-i),  daf = dc' * c * f(1-f),  dag = dc' * i * (1 - g^2)
        dW* += x^T da*,  dU* += h^T da*,  db* += column sums of da*
        dpi += sum_b dai*c,  dpf += sum_b daf*c,  dpo += sum_b dao*c'
        dx_t    = dai Wi^T + daf Wf^T + dag Wc^T + dao Wo^T
        dh_prev = dai Ui^T + daf Uf^T + dag Uc^T + dao Uo^T
        dc_prev = dc' * f + dai * pi + daf * pf
    """
    dtype = _common_dtype(params, x, y, h0, c0)
    p = _cast(params, dtype)
    x = np.asarray(x, dtype=dtype)
    y = np.asarray(y, dtype=dtype)
    T, B, _ = x.shape
    H = p["Ui"].shape[0]
    hs = [_state0(h0, B, H, dtype)]
    cs = [_state0(c0, B, H, dtype)]
    gates = []
    for t in range(T):
        h, c = hs[-1], cs[-1]
        i = sigmoid(x[t] @ p["Wi"] + h @ p["Ui"] + p["pi"] * c + p["bi"])
        f = sigmoid(x[t] @ p["Wf"] + h @ p["Uf"] + p["pf"] * c + p["bf"])
        g = np.tanh(x[t] @ p["Wc"] + h @ p["Uc"] + p["bc"])
        c_new = f * c + i * g
        o = sigmoid(x[t] @ p["Wo"] + h @ p["Uo"] + p["po"] * c_new + p["bo"])
        tanh_c = np.tanh(c_new)
        hs.append(o * tanh_c)
        cs.append(c_new)
        gates.append((i, f, g, o, tanh_c))
    hidden = np.stack(hs[1:])
    loss = _l2_loss(hidden, y)

    grads = {name: np.zeros_like(value) for name, value in p.items()}
    dx = np.zeros_like(x)
    dh_next = np.zeros((B, H), dtype=dtype)
    dc_next = np.zeros((B, H), dtype=dtype)
    for t in reversed(range(T)):
        h, c, c_new = hs[t], cs[t], cs[t + 1]
        i, f, g, o, tanh_c = gates[t]
        dh = (hidden[t] - y[t]) + dh_next
        dao = dh * tanh_c * o * (1 - o)
        dc = dc_next + dh * o * (1 - tanh_c * tanh_c) + dao * p["po"]
        dai = dc * g * i * (1 - i)
        daf = dc * c * f * (1 - f)
        dag = dc * i * (1 - g * g)

        for gate, da in (("i", dai), ("f", daf), ("c", dag), ("o", dao)):
            grads["W" + gate] += x[t].T @ da
            grads["U" + gate] += h.T @ da
            grads["b" + gate] += da.sum(axis=0)
        grads["pi"] += (dai * c).sum(axis=0)
        grads["pf"] += (daf * c).sum(axis=0)
        grads["po"] += (dao * c_new).sum(axis=0)

        dx[t] = dai @ p["Wi"].T + daf @ p["Wf"].T + dag @ p["Wc"].T + dao @ p["Wo"].T
        dh_next = dai @ p["Ui"].T + daf @ p["Uf"].T + dag @ p["Uc"].T + dao @ p["Uo"].T
        dc_next = dc * f + dai * p["pi"] + daf * p["pf"]
    grads["x"] = dx
    grads["h0"] = dh_next
    grads["c0"] = dc_next
    return hidden, loss, grads


# ----------------------------------------------------------------------------- tanh RNN


def init_tanh_rnn(D: int, H: int, rng: np.random.Generator, dtype: np.dtype) -> Params:
    """Random parameters for :func:`tanh_rnn` (uniform in [-0.5, 0.5])."""
    dtype = np.dtype(dtype)
    return {
        "W": _uniform(rng, (D, H), dtype),
        "U": _uniform(rng, (H, H), dtype),
        "b": _uniform(rng, (H,), dtype),
    }


def tanh_rnn(params: Params, x: Array, y: Array, h0: Array | None = None) -> CellResult:
    """Elman network ``h' = tanh(x W + h U + b)``.

    Backward, given dh = dL/dh'::

        da = dh * (1 - h'^2)
        dW += x^T da,  dU += h^T da,  db += column sums of da
        dx_t = da W^T,  dh_prev = da U^T
    """
    dtype = _common_dtype(params, x, y, h0)
    p = _cast(params, dtype)
    x = np.asarray(x, dtype=dtype)
    y = np.asarray(y, dtype=dtype)
    T, B, _ = x.shape
    H = p["U"].shape[0]
    hs = [_state0(h0, B, H, dtype)]
    for t in range(T):
        hs.append(np.tanh(x[t] @ p["W"] + hs[-1] @ p["U"] + p["b"]))
    hidden = np.stack(hs[1:])
    loss = _l2_loss(hidden, y)

    grads = {name: np.zeros_like(value) for name, value in p.items()}
    dx = np.zeros_like(x)
    dh_next = np.zeros((B, H), dtype=dtype)
    for t in reversed(range(T)):
        h, h_new = hs[t], hs[t + 1]
        dh = (h_new - y[t]) + dh_next
        da = dh * (1 - h_new * h_new)
        grads["W"] += x[t].T @ da
        grads["U"] += h.T @ da
        grads["b"] += da.sum(axis=0)
        dx[t] = da @ p["W"].T
        dh_next = da @ p["U"].T
    grads["x"] = dx
    grads["h0"] = dh_next
    return hidden, loss, grads


# ----------------------------------------------------------------------------- MGU


def init_mgu(D: int, H: int, rng: np.random.Generator, dtype: np.dtype) -> Params:
    """Random parameters for :func:`mgu` (uniform in [-0.5, 0.5])."""
    dtype = np.dtype(dtype)
    return {
        "Wf": _uniform(rng, (D, H), dtype),
        "Wh": _uniform(rng, (D, H), dtype),
        "Uf": _uniform(rng, (H, H), dtype),
        "Uh": _uniform(rng, (H, H), dtype),
        "bf": _uniform(rng, (H,), dtype),
        "bh": _uniform(rng, (H,), dtype),
    }


def mgu(params: Params, x: Array, y: Array, h0: Array | None = None) -> CellResult:
    """Minimal gated unit (Zhou et al. 2016).

    Forward, per step::

        f  = sigma(x Wf + h Uf + bf)
        c  = tanh(x Wh + (f*h) Uh + bh)
        h' = (1 - f)*h + f*c

    Backward, given dh = dL/dh' (f reaches h' directly and through c)::

        dac  = dh * f * (1 - c^2)
        d(fh) = dac Uh^T
        df   = dh * (c - h) + d(fh) * h        daf = df * f(1-f)
        dWh += x^T dac,  dUh += (f*h)^T dac,  dbh += column sums of dac
        dWf += x^T daf,  dUf += h^T daf,      dbf += column sums of daf
        dx_t = dac Wh^T + daf Wf^T
        dh_prev = dh*(1-f) + d(fh)*f + daf Uf^T
    """
    dtype = _common_dtype(params, x, y, h0)
    p = _cast(params, dtype)
    x = np.asarray(x, dtype=dtype)
    y = np.asarray(y, dtype=dtype)
    T, B, _ = x.shape
    H = p["Uf"].shape[0]
    hs = [_state0(h0, B, H, dtype)]
    fs, cs = [], []
    for t in range(T):
        h = hs[-1]
        f = sigmoid(x[t] @ p["Wf"] + h @ p["Uf"] + p["bf"])
        c = np.tanh(x[t] @ p["Wh"] + (f * h) @ p["Uh"] + p["bh"])
        hs.append((1 - f) * h + f * c)
        fs.append(f)
        cs.append(c)
    hidden = np.stack(hs[1:])
    loss = _l2_loss(hidden, y)

    grads = {name: np.zeros_like(value) for name, value in p.items()}
    dx = np.zeros_like(x)
    dh_next = np.zeros((B, H), dtype=dtype)
    for t in reversed(range(T)):
        h, f, c = hs[t], fs[t], cs[t]
        dh = (hidden[t] - y[t]) + dh_next
        dac = dh * f * (1 - c * c)
        dfh = dac @ p["Uh"].T
        daf = (dh * (c - h) + dfh * h) * f * (1 - f)

        grads["Wh"] += x[t].T @ dac
        grads["Uh"] += (f * h).T @ dac
        grads["bh"] += dac.sum(axis=0)
        grads["Wf"] += x[t].T @ daf
        grads["Uf"] += h.T @ daf
        grads["bf"] += daf.sum(axis=0)
        dx[t] = dac @ p["Wh"].T + daf @ p["Wf"].T
        dh_next = dh * (1 - f) + dfh * f + daf @ p["Uf"].T
    grads["x"] = dx
    grads["h0"] = dh_next
    return hidden, loss, grads
