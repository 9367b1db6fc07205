"""Hand-fused expert numpy GRU (Chung et al. 2014 variant): the performance bar.

This computes exactly what ``tests/reference_cells.py::gru_chung`` computes::

    z  = sigma(x Wz + h Wrecz + bz)
    r  = sigma(x Wr + h Wrecr + br)
    c  = tanh(x Wca + (r*h) Wreca + bca)
    h' = (1 - z)*h + z*c

with the L2 loss ``0.5 * sum_t ||h_t - y_t||^2``, but written the way a numpy expert writes
a fast GRU by hand.  The tricks, in the order they appear:

1. **Input projections hoisted out of the time loop.**  The input-to-gate products do not
   depend on the state, so all three gates at all time steps are one GEMM:
   ``P = X (T*B, D) @ [Wz | Wr | Wca] (D, 3H) + [bz | br | bca]``.  The time loop only does
   the recurrent work.
2. **Fused recurrent gates.**  Both sigmoid gates read the same ``h``, so one GEMM per step
   ``h @ [Wrecz | Wrecr] (H, 2H)`` replaces two; the candidate needs ``(r*h) @ Wreca``.
3. **Halved sigmoid weights.**  ``sigma(a) = 0.5 * tanh(a / 2) + 0.5`` is exact and cannot
   overflow.  Multiplying the z and r columns of the stacked weights and biases by 0.5 once
   (exact in binary floating point) folds the ``a / 2`` into the GEMMs, so a sigmoid costs
   three in-place passes (tanh, *0.5, +0.5).
4. **Preallocated buffers, in-place ufuncs.**  Every per-step result is written with
   ``out=`` straight into a (T, ...) buffer that the backward pass reads; nothing is
   allocated inside the loops.  The buffers themselves are kept between calls (one growable
   scratch array per name and dtype, per thread): a fresh multi-megabyte ``np.empty`` on
   every call pays page faults that cost about as much as the whole recurrent loop.
5. **Adjoint-independent factors hoisted out of the backward loop.**  Writing ``dh`` for
   dL/dh_t, the pre-activation adjoints are ``daz = dh * Fz``, ``dac = dh * Fc`` and
   ``dar = (dac Wreca^T) * Fr``, and ``dh_prev = dh * (1 - z) + (dac Wreca^T) * r +
   [daz | dar] [Wrecz | Wrecr]^T`` with ``Fz = (c - h) z (1 - z)``, ``Fc = z (1 - c^2)``,
   ``Fr = h r (1 - r)``.  The factors depend only on the forward pass, so they are computed
   for all steps at once (large vectorised ufuncs) before the loop.
6. **The backward loop only carries the state adjoint.**  Per step: two GEMMs
   (``dac @ Wreca^T`` and ``[daz | dar] @ [Wrecz | Wrecr]^T``) and a handful of in-place
   elementwise products.  The pre-activation adjoints of every step are stored in one
   (T, B, 3H) buffer laid out like ``P``.
7. **Weight gradients after the loop, in a few large GEMMs over all steps**::

       d[Wz | Wr | Wca]  = X^T (D, T*B) @ dP (T*B, 3H)
       d[Wrecz | Wrecr]  = Hprev^T @ dP[:, :2H]
       dWreca            = (R * Hprev)^T @ dP[:, 2H:]
       dX                = dP @ [Wz | Wr | Wca]^T
       d[bz | br | bca]  = column sums of dP

   A few GEMMs over all T*B rows keep BLAS near its peak and cost less than T small
   per-step ones followed by T accumulations.
8. **dtype discipline.**  Everything is allocated in the inputs' dtype and only Python
   scalars (which do not promote) enter the arithmetic, so float32 stays float32.

The same file holds :class:`SigmoidReadoutGRU`, the fused GRU followed by an affine sigmoid
read-out trained with masked binary cross-entropy, used as the training-epoch reference.
Padded steps (mask 0) carry the state unchanged, ``h_t = m h_new + (1 - m) h_{t-1}``, which
is the same GRU with the update gate ``z`` replaced by ``m * z``; the fused core takes the
mask into account in exactly that way.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]
Params = dict[str, Array]

GRU_PARAM_NAMES = ("Wz", "Wr", "Wca", "Wrecz", "Wrecr", "Wreca", "bz", "br", "bca")
READOUT_PARAM_NAMES = (*GRU_PARAM_NAMES, "V", "c")

__all__ = [
    "GRU_PARAM_NAMES",
    "READOUT_PARAM_NAMES",
    "SigmoidReadoutGRU",
    "forward",
    "init_params",
    "loss_and_grads",
    "readout_loss_and_grads",
]


def _sigmoid_of_half_(a: Array) -> Array:
    """In place: ``a <- sigma(2 a) = 0.5 * tanh(a) + 0.5`` (inputs pre-halved, trick 3)."""
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5
    return a


_WORKSPACE = threading.local()


def _buffer(name: str, shape: tuple[int, ...], dtype: np.dtype) -> Array:
    """A reusable scratch array (trick 4): one growable flat buffer per name and dtype.

    Fresh multi-megabyte arrays cost page faults on every call; reusing the same memory
    across calls (per thread) removes that cost.  Arrays from here never leave the module.
    """
    store: dict[tuple[str, np.dtype], Array] = _WORKSPACE.__dict__.setdefault("buffers", {})
    size = math.prod(shape)
    flat = store.get((name, dtype))
    if flat is None or flat.size < size:
        flat = store[(name, dtype)] = np.empty(size, dtype=dtype)
    return flat[:size].reshape(shape)


@dataclass
class _Tape:
    """Everything the backward pass needs from the forward pass (views into the workspace)."""

    x2: Array  # (T*B, D) inputs
    w_in: Array  # (D, 3H) [Wz | Wr | Wca], unscaled
    w_zr: Array  # (H, 2H) [Wrecz | Wrecr], unscaled
    w_reca: Array  # (H, H)
    states: Array  # (T+1, B, H) h_0 .. h_T
    zr: Array  # (T, B, 2H) gates [z | r]
    cand: Array  # (T, B, H) candidate c
    rh: Array  # (T, B, H) r * h_prev
    mask: Array | None  # (T, B, 1) or None


def _dtype_of(params: Params, *arrays: Array | None) -> np.dtype:
    return np.result_type(
        *(params[n] for n in GRU_PARAM_NAMES), *(a for a in arrays if a is not None)
    )


def _forward(params: Params, x: Array, h0: Array | None, mask: Array | None = None) -> _Tape:
    dtype = _dtype_of(params, x, h0)
    x = np.asarray(x, dtype=dtype)
    T, B, D = x.shape
    H = params["Wrecz"].shape[0]
    H2 = 2 * H

    w_in = np.concatenate([params["Wz"], params["Wr"], params["Wca"]], axis=1).astype(dtype)
    b_in = np.concatenate([params["bz"], params["br"], params["bca"]]).astype(dtype)
    w_zr = np.concatenate([params["Wrecz"], params["Wrecr"]], axis=1).astype(dtype)
    w_reca = np.ascontiguousarray(params["Wreca"], dtype=dtype)

    # Trick 3: halve the sigmoid-gate columns once (exact), so sigma(a) = 0.5 tanh(a/2) + 0.5
    # needs no separate pre-scaling pass.
    w_in_fwd = w_in.copy()
    w_in_fwd[:, :H2] *= 0.5
    b_in_fwd = b_in.copy()
    b_in_fwd[:H2] *= 0.5
    w_zr_half = w_zr * 0.5

    # Trick 1: all input projections, all gates, all steps, one GEMM.
    x2 = x.reshape(T * B, D)
    proj = np.matmul(x2, w_in_fwd, out=_buffer("proj", (T * B, 3 * H), dtype))
    proj += b_in_fwd
    proj3 = proj.reshape(T, B, 3 * H)

    states = _buffer("states", (T + 1, B, H), dtype)
    states[0] = 0 if h0 is None else h0
    zr = _buffer("zr", (T, B, H2), dtype)
    cand = _buffer("cand", (T, B, H), dtype)
    rh = _buffer("rh", (T, B, H), dtype)
    mask3 = None
    if mask is not None:
        mask3 = _buffer("mask", (T, B, 1), dtype)
        mask3[..., 0] = mask

    for t in range(T):
        h, h_new = states[t], states[t + 1]
        zr_t, c_t, rh_t = zr[t], cand[t], rh[t]
        # Trick 2: both sigmoid gates with one recurrent GEMM.
        np.matmul(h, w_zr_half, out=zr_t)
        zr_t += proj3[t, :, :H2]
        _sigmoid_of_half_(zr_t)
        z_t, r_t = zr_t[:, :H], zr_t[:, H:]
        np.multiply(r_t, h, out=rh_t)
        np.matmul(rh_t, w_reca, out=c_t)
        c_t += proj3[t, :, H2:]
        np.tanh(c_t, out=c_t)
        # h' = h + z (c - h)   [masked: z -> m z]
        np.subtract(c_t, h, out=h_new)
        h_new *= z_t
        if mask3 is not None:
            h_new *= mask3[t]
        h_new += h
    return _Tape(x2, w_in, w_zr, w_reca, states, zr, cand, rh, mask3)


def _backward(tape: _Tape, d_hidden: Array) -> Params:
    """Gradients given dL/dh_t for t = 1..T.  ``d_hidden`` (T, B, H) is overwritten."""
    states, zr, cand, mask = tape.states, tape.zr, tape.cand, tape.mask
    T, B, H = cand.shape
    H2 = 2 * H
    dtype = cand.dtype
    h_prev = states[:-1]
    z, r = zr[..., :H], zr[..., H:]

    # Trick 5: every factor that does not depend on the adjoint, for all steps at once.
    keep = _buffer("keep", (T, B, H), dtype)  # first z m (effective update gate) ...
    if mask is not None:
        np.multiply(z, mask, out=keep)
    else:
        np.copyto(keep, z)
    f_c = np.multiply(cand, cand, out=_buffer("f_c", (T, B, H), dtype))
    np.subtract(1, f_c, out=f_c)
    f_c *= keep  # Fc = z m (1 - c^2)
    f_r = np.subtract(cand, h_prev, out=_buffer("f_r", (T, B, H), dtype))  # c - h, for now
    f_z = np.subtract(1, z, out=_buffer("f_z", (T, B, H), dtype))
    f_z *= z
    f_z *= f_r  # Fz = (c - h) z (1 - z) m
    if mask is not None:
        f_z *= mask
    np.subtract(1, r, out=f_r)
    f_r *= r
    f_r *= h_prev  # Fr = h r (1 - r)
    np.subtract(1, keep, out=keep)  # ... then 1 - z m: the direct path h -> h'

    w_zr_t = np.ascontiguousarray(tape.w_zr.T)
    w_reca_t = np.ascontiguousarray(tape.w_reca.T)
    d_pre = _buffer("d_pre", (T, B, 3 * H), dtype)  # [daz | dar | dac], laid out like P
    d_rh = _buffer("d_rh", (B, H), dtype)
    tmp = _buffer("tmp", (B, H), dtype)
    d_prev = np.empty((B, H), dtype=dtype)  # ends as dL/dh_0, returned

    # Trick 6: the loop only carries the state adjoint; d_hidden[t] accumulates dL/dh_t.
    dh = d_hidden[T - 1]
    for t in range(T - 1, -1, -1):
        dp = d_pre[t]
        daz, dar, dac = dp[:, :H], dp[:, H:H2], dp[:, H2:]
        np.multiply(dh, f_z[t], out=daz)
        np.multiply(dh, f_c[t], out=dac)
        np.matmul(dac, w_reca_t, out=d_rh)
        np.multiply(d_rh, f_r[t], out=dar)
        np.matmul(dp[:, :H2], w_zr_t, out=d_prev)
        np.multiply(dh, keep[t], out=tmp)
        d_prev += tmp
        np.multiply(d_rh, r[t], out=tmp)
        d_prev += tmp
        if t > 0:
            dh = d_hidden[t - 1]
            dh += d_prev

    # Trick 7: weight gradients with a few large GEMMs over all T*B rows.
    dp2 = d_pre.reshape(T * B, 3 * H)
    d_w_in = tape.x2.T @ dp2
    d_b_in = dp2.sum(axis=0)
    d_w_zr = h_prev.reshape(T * B, H).T @ dp2[:, :H2]
    d_w_reca = tape.rh.reshape(T * B, H).T @ dp2[:, H2:]
    d_x = dp2 @ tape.w_in.T

    def cols(a: Array, lo: int, hi: int) -> Array:
        return np.ascontiguousarray(a[..., lo:hi])

    return {
        "Wz": cols(d_w_in, 0, H),
        "Wr": cols(d_w_in, H, H2),
        "Wca": cols(d_w_in, H2, 3 * H),
        "Wrecz": cols(d_w_zr, 0, H),
        "Wrecr": cols(d_w_zr, H, H2),
        "Wreca": d_w_reca,
        "bz": cols(d_b_in, 0, H),
        "br": cols(d_b_in, H, H2),
        "bca": cols(d_b_in, H2, 3 * H),
        "x": d_x.reshape(T, B, -1),
        "h0": d_prev,
    }


def forward(params: Params, x: Array, h0: Array | None = None) -> Array:
    """Hidden states h_1 .. h_T, shape (T, B, H), of the GRU on ``x`` (T, B, D)."""
    return _forward(params, x, h0).states[1:].copy()


def loss_and_grads(
    params: Params, x: Array, y: Array, h0: Array | None = None
) -> tuple[float, Params]:
    """``0.5 * sum_t ||h_t - y_t||^2`` and its gradients (9 params, ``"x"``, ``"h0"``)."""
    tape = _forward(params, x, h0)
    residual = _buffer("d_hidden", tape.cand.shape, tape.cand.dtype)
    np.subtract(tape.states[1:], y, out=residual)
    loss = 0.5 * float(np.vdot(residual, residual))
    return loss, _backward(tape, residual)


# ----------------------------------------------------------------------------- sigmoid read-out


def init_params(
    input_size: int,
    hidden_size: int,
    output_size: int,
    rng: np.random.Generator,
    dtype: np.dtype | type[np.floating] = np.float64,
    scale: float = 0.1,
) -> Params:
    """GRU + read-out parameters, weights uniform in [-scale, scale], biases zero."""
    D, H, K = input_size, hidden_size, output_size
    shapes = {
        "Wz": (D, H), "Wr": (D, H), "Wca": (D, H),
        "Wrecz": (H, H), "Wrecr": (H, H), "Wreca": (H, H),
        "V": (H, K),
    }  # fmt: skip
    params: Params = {
        name: rng.uniform(-scale, scale, size=shape).astype(dtype) for name, shape in shapes.items()
    }
    for name, size in (("bz", H), ("br", H), ("bca", H), ("c", K)):
        params[name] = np.zeros(size, dtype=dtype)
    return {name: params[name] for name in READOUT_PARAM_NAMES}


def readout_loss_and_grads(
    params: Params,
    x: Array,
    targets: Array,
    mask: Array | None = None,
    h0: Array | None = None,
) -> tuple[np.floating, Params]:
    """Masked binary cross-entropy of ``sigmoid(h_t V + c)`` against ``targets``.

    ``x`` (T, B, D), ``targets`` (T, B, K), ``mask`` (T, B) of 0/1 (None: all ones).  The
    loss is ``sum_{t,b} m_tb sum_k [softplus(l_tbk) - y_tbk l_tbk]`` with logits ``l``,
    which equals the negative log-likelihood in nats; padded steps carry the state and
    count zero.  Returns the loss (a numpy scalar of the computation's dtype) and the
    gradients of every parameter (plus ``"x"`` and ``"h0"``).
    """
    tape = _forward(params, x, h0, mask)
    dtype = tape.cand.dtype
    T, B, H = tape.cand.shape
    V = np.asarray(params["V"], dtype=dtype)
    K = V.shape[1]
    y2 = np.asarray(targets, dtype=dtype).reshape(T * B, K)
    m1 = np.ones(T * B, dtype=dtype) if mask is None else np.asarray(mask, dtype).reshape(-1)

    hidden2 = tape.states[1:].reshape(T * B, H)
    shape = (T * B, K)
    logits = np.matmul(hidden2, V, out=_buffer("logits", shape, dtype))
    logits += np.asarray(params["c"], dtype=dtype)

    # Stable softplus(l) = max(l, 0) + log1p(exp(-|l|)); sigma(l) shares e = exp(-|l|).
    e = np.abs(logits, out=_buffer("exp_neg_abs", shape, dtype))
    np.negative(e, out=e)
    np.exp(e, out=e)
    per_elem = np.log1p(e, out=_buffer("per_elem", shape, dtype))
    d_logits = np.maximum(logits, 0, out=_buffer("d_logits", shape, dtype))  # scratch here
    per_elem += d_logits
    np.multiply(y2, logits, out=d_logits)
    per_elem -= d_logits
    loss = m1 @ per_elem.sum(axis=1)

    inv = np.add(e, 1, out=per_elem)
    np.reciprocal(inv, out=inv)  # 1 / (1 + e)
    np.multiply(e, inv, out=d_logits)  # sigma(l) for l < 0
    np.copyto(d_logits, inv, where=logits >= 0)  # sigma(l) for l >= 0
    d_logits -= y2
    d_logits *= m1[:, None]

    grads_v = hidden2.T @ d_logits
    grads_c = d_logits.sum(axis=0)
    d_hidden = _buffer("d_hidden", (T, B, H), dtype)
    np.matmul(d_logits, V.T, out=d_hidden.reshape(T * B, H))
    grads = _backward(tape, d_hidden)
    grads["V"] = grads_v
    grads["c"] = grads_c
    return loss, grads


Batch = tuple[Array, Array, Array]


class SigmoidReadoutGRU:
    """Fused GRU + sigmoid read-out with a plain-SGD training epoch (the epoch reference).

    ``params`` holds :data:`READOUT_PARAM_NAMES`; they are updated in place by
    :meth:`sgd_step` / :meth:`train_epoch`, keeping their dtype.
    """

    def __init__(self, params: Params) -> None:
        missing = set(READOUT_PARAM_NAMES) - set(params)
        if missing:
            raise KeyError(f"missing parameters: {sorted(missing)}")
        self.params = params

    @classmethod
    def create(
        cls,
        input_size: int,
        hidden_size: int,
        output_size: int,
        rng: np.random.Generator,
        dtype: np.dtype | type[np.floating] = np.float64,
        scale: float = 0.1,
    ) -> SigmoidReadoutGRU:
        return cls(init_params(input_size, hidden_size, output_size, rng, dtype, scale))

    def loss_and_grads(
        self,
        x: Array,
        targets: Array,
        mask: Array | None = None,
        h0: Array | None = None,
    ) -> tuple[np.floating, Params]:
        return readout_loss_and_grads(self.params, x, targets, mask, h0)

    def sgd_step(
        self, grads: Params, learning_rate: float, clip_norm: float | None = None
    ) -> float:
        """``p -= lr * g`` for every parameter, after optional global-norm clipping.

        Returns the gradient norm before clipping.
        """
        norm = math.sqrt(sum(float(np.vdot(grads[n], grads[n])) for n in READOUT_PARAM_NAMES))
        step = learning_rate
        if clip_norm is not None and norm > clip_norm:
            step *= clip_norm / norm
        for name in READOUT_PARAM_NAMES:
            self.params[name] -= step * grads[name]
        return norm

    def train_epoch(
        self,
        batches: Iterable[Batch],
        learning_rate: float,
        clip_norm: float | None = None,
    ) -> float:
        """One pass of SGD over ``(x, targets, mask)`` batches; returns the summed loss."""
        total = 0.0
        for x, targets, mask in batches:
            loss, grads = self.loss_and_grads(x, targets, mask)
            self.sgd_step(grads, learning_rate, clip_norm)
            total += float(loss)
        return total
