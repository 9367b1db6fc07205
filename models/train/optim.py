"""Gradient-based optimisers over named parameter arrays.

Parameters are held in a ``dict[str, Array]`` and updated in place, so any
node that holds a reference to a parameter array sees the new values. Every
update is carried out in the parameter's own dtype: float32 parameters and
their optimiser state stay float32 (except the moving average of the
parameters, kept in float64).

The per-parameter state of an optimiser ("slots", such as Adam's first and
second moments) is created lazily at the first :meth:`Optimizer.step`, with
the shape and dtype of each parameter. :meth:`Optimizer.state_dict` flattens
it into plain arrays keyed ``"<slot>/<parameter name>"`` plus the step counter
``"t"`` (a 0-d int64 array), so that it can be stored in an ``.npz`` file next
to the parameters. Hyperparameters (learning rate, decay rates) are not part
of the state: they belong to the configuration, and the learning rate may be
changed between steps through the ``lr`` attribute.

The module also provides the two gradient-side tools of recurrent-network
training: global gradient-norm clipping (:func:`clip_grad_norm`) and Graves's
weight noise (:func:`add_weight_noise`).
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from minigrad.errors import NonFiniteError
from minigrad.types import AnyArray, Array

__all__ = [
    "SGD",
    "Adam",
    "Optimizer",
    "RMSProp",
    "add_weight_noise",
    "clip_grad_norm",
    "decay_weights",
    "global_norm",
    "make_optimizer",
]


MAX_STEPS = 2**62
"""The largest step count ``t`` a state may hold (it is stored as a 64-bit integer)."""


def _slot_dtype(slot: str, param: Array) -> np.dtype[np.floating]:
    """A slot's dtype: the parameter's, but float64 at least for the parameter
    average, whose small increments float32 would round away."""
    if slot == "ema":
        return np.promote_types(param.dtype, np.float64)
    return param.dtype


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _check_unit_interval(name: str, value: float, *, allow_zero: bool) -> float:
    value = float(value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value < 1.0):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name} must lie in {bound}, got {value!r}")
    return value


class Optimizer(ABC):
    """Base class of the optimisers: validation, lazy state and (de)serialisation.

    Subclasses name their per-parameter state slots in :meth:`slot_names` and
    implement the update of a single parameter in :meth:`_update`.

    With ``ema_decay > 0`` the optimiser also keeps an exponential moving
    average of the parameters after each step (Polyak averaging in its
    exponential form, as Keras's ``use_ema`` and TensorFlow's
    ``ExponentialMovingAverage``): ``a <- d * a + (1 - d) * w`` from ``a = 0``,
    read through :meth:`averaged` with Adam's bias correction
    ``a / (1 - d**t)``, so that it is a weighted mean of the parameters of
    every step so far, the recent ones weighing most (about the last
    ``1 / (1 - d)`` steps). It is the slot ``"ema"`` and is saved and restored
    with the rest of the state.

    Args:
        lr: learning rate, a positive scalar. It is a plain attribute and may
            be changed between steps (learning-rate schedules).
        ema_decay: decay ``d`` of the parameter average, in ``[0, 1)``; 0
            keeps no average.

    Attributes:
        t: number of steps taken so far (restored by :meth:`load_state_dict`).
    """

    lr: float
    t: int
    ema_decay: float

    def __init__(self, lr: float, ema_decay: float = 0.0) -> None:
        self.lr = _check_positive("lr", lr)
        self.ema_decay = _check_unit_interval("ema_decay", ema_decay, allow_zero=True)
        self.t = 0
        self._slots: dict[str, dict[str, Array]] = {slot: {} for slot in self._slot_keys()}

    def _slot_keys(self) -> tuple[str, ...]:
        """The update's slots and, with a parameter average, ``"ema"``."""
        return self.slot_names() + (("ema",) if self.ema_decay > 0 else ())

    @abstractmethod
    def slot_names(self) -> tuple[str, ...]:
        """Names of the per-parameter state arrays kept by this optimiser.

        Returns:
            A tuple of slot names, e.g. ``("m", "v")`` for Adam; empty when the
            optimiser keeps no per-parameter state.
        """

    @abstractmethod
    def _update(self, param: Array, grad: Array, slots: dict[str, Array], t: int) -> None:
        """Update one parameter in place.

        Args:
            param: the parameter, any shape ``S``; modified in place.
            grad: its gradient, shape ``S``.
            slots: this parameter's state arrays by slot name, each shape ``S``
                and the parameter's dtype; modified in place.
            t: the 1-based index of the current step.
        """

    # -- stepping ---------------------------------------------------------

    def step(
        self,
        params: dict[str, Array],
        grads: Mapping[str, Array],
        *,
        check_finite: bool = True,
    ) -> None:
        """Apply one update to every parameter, in place.

        All checks are made before any array is modified, so a failing call
        leaves parameters and optimiser state untouched.

        Args:
            params: parameter arrays by name, each of any shape ``S_k``;
                updated in place, dtype preserved.
            grads: gradient arrays by the same names, each of shape ``S_k``.
                Must hold exactly the keys of ``params``.
            check_finite: refuse a gradient holding a NaN or an infinity (one
                pass over each gradient). A caller that has already checked
                them (the training loop: ``loss_and_grads`` checks its
                gradients) passes ``False``.

        Raises:
            ValueError: naming the key, if a parameter has no gradient, a
                gradient has no parameter, shapes differ, or the optimiser
                state was built for a different set of parameters.
            NonFiniteError: naming the parameter whose gradient holds a NaN or
                an infinity (with ``check_finite``).
        """
        for name, param in params.items():
            if name not in grads:
                raise ValueError(f"no gradient for parameter {name!r}")
            grad = grads[name]
            if np.shape(grad) != param.shape:
                raise ValueError(
                    f"gradient for parameter {name!r} has shape {np.shape(grad)}, "
                    f"expected {param.shape}"
                )
        for name in grads:
            if name not in params:
                raise ValueError(f"gradient given for unknown parameter {name!r}")
        if check_finite:
            _check_finite_grads(grads, type(self).__name__ + ".step")
        self._prepare_slots(params)
        self.t += 1
        d = self.ema_decay
        for name, param in params.items():
            slots = {slot: arrays[name] for slot, arrays in self._slots.items()}
            self._update(param, np.asarray(grads[name]), slots, self.t)
            if d > 0:
                average = slots["ema"]
                average *= d
                average += (1.0 - d) * param

    def averaged(self, like: Mapping[str, Array] | None = None) -> dict[str, Array]:
        """The bias-corrected moving average of the parameters (``ema_decay > 0``).

        Args:
            like: the parameters, whose dtypes the average is returned in; without
                them it comes in the dtype it is kept in, float64 at least (so
                that float32 parameters do not round its small increments away).

        Returns:
            New arrays by parameter name, each of its parameter's shape:
            ``a / (1 - ema_decay**t)``.

        Raises:
            ValueError: if the optimiser keeps no average (``ema_decay == 0``)
                or has taken no step yet.
        """
        if self.ema_decay <= 0:
            raise ValueError("this optimizer keeps no parameter average (ema_decay is 0)")
        if self.t == 0:
            raise ValueError("no parameter average before the first step")
        # 1 - d**t without the loss of digits of 1 - (a number near 1)
        scale = -math.expm1(self.t * math.log(self.ema_decay))
        return {
            name: (a / scale).astype(a.dtype if like is None else like[name].dtype, copy=False)
            for name, a in self._slots["ema"].items()
        }

    def check_params(self, params: Mapping[str, Array]) -> None:
        """Check the state against the parameters it will step (names and shapes),
        or create it if there is none yet; :meth:`step` does the same first.

        Raises:
            ValueError: naming the parameter or the slot that does not fit.
        """
        self._prepare_slots(params)

    def _prepare_slots(self, params: Mapping[str, Array]) -> None:
        """Create the state on first use, or check it against ``params``."""
        if not self._slots:
            return
        existing = next(iter(self._slots.values()))
        if not existing:
            for slot, arrays in self._slots.items():
                for name, param in params.items():
                    arrays[name] = np.zeros(param.shape, _slot_dtype(slot, param))
            return
        for name in existing:
            if name not in params:
                raise ValueError(
                    f"optimizer state holds parameter {name!r}, which is not among the "
                    "parameters being stepped"
                )
        for name, param in params.items():
            if name not in existing:
                raise ValueError(
                    f"optimizer state has no entry for parameter {name!r} "
                    "(state was built for a different parameter set)"
                )
            for slot, arrays in self._slots.items():
                state = arrays[name]
                if state.shape != param.shape:
                    raise ValueError(
                        f"optimizer state {slot}/{name} has shape {state.shape}, "
                        f"parameter {name!r} has shape {param.shape}"
                    )
        # Dtypes are aligned only after every check has passed.
        for name, param in params.items():
            for slot, arrays in self._slots.items():
                want = _slot_dtype(slot, param)
                if arrays[name].dtype != want:
                    arrays[name] = arrays[name].astype(want)

    # -- serialisation ----------------------------------------------------

    def state_dict(self) -> dict[str, AnyArray]:
        """Return a flat copy of the optimiser state.

        Returns:
            ``"<slot>/<name>"`` -> array of parameter ``name``'s shape and
            dtype, for every slot and parameter (nothing before the first
            step), plus ``"t"`` -> 0-d int64 array, the number of steps taken.
        """
        state: dict[str, AnyArray] = {"t": np.array(self.t, dtype=np.int64)}
        for slot, arrays in self._slots.items():
            for name, array in arrays.items():
                state[f"{slot}/{name}"] = array.copy()
        return state

    def load_state_dict(self, state: Mapping[str, AnyArray]) -> None:
        """Replace the optimiser state by a copy of ``state``.

        The shapes are checked against the parameters at the next
        :meth:`step`.

        Args:
            state: as returned by :meth:`state_dict` of an optimiser of the
                same class and settings: ``"t"`` -> 0-d integer array, and
                ``"<slot>/<name>"`` -> floating array of parameter ``name``'s
                shape, with the same names in every slot.

        Raises:
            TypeError: if ``state`` is not a mapping (a dict of arrays).
            ValueError: naming the key, if ``"t"`` is missing or malformed, a
                key is not a slot of this optimiser, an array is not floating
                or holds a NaN or an infinity, or the slots disagree on names or shapes.
        """
        kind = type(self).__name__
        if not isinstance(state, Mapping):
            raise TypeError(
                f"{kind}.load_state_dict expects a dict of arrays (as returned by "
                f"state_dict()), got {type(state).__name__}"
            )
        if "t" not in state:
            raise ValueError(f"{kind} state is missing key 't'")
        t_arr = np.asarray(state["t"])
        if t_arr.shape != () or not np.issubdtype(t_arr.dtype, np.integer):
            raise ValueError(
                f"{kind} state key 't' must be a 0-d integer array, "
                f"got shape {t_arr.shape} dtype {t_arr.dtype}"
            )
        t = int(t_arr)
        if not 0 <= t <= MAX_STEPS:
            raise ValueError(f"{kind} state key 't' must be in 0..{MAX_STEPS}, got {t}")
        slots: dict[str, dict[str, Array]] = {slot: {} for slot in self._slot_keys()}
        for key, value in state.items():
            if key == "t":
                continue
            if not isinstance(key, str):
                raise ValueError(f"{kind} state keys must be strings, got {key!r}")
            slot, sep, name = key.partition("/")
            if not sep or slot not in slots or not name:
                expected = ", ".join(f"'{s}/<name>'" for s in self._slot_keys()) or "none"
                raise ValueError(
                    f"unexpected key {key!r} in {kind} state (expected 't' and slot keys: "
                    f"{expected})"
                )
            array = np.asarray(value)
            if not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"{kind} state key {key!r} has non-floating dtype {array.dtype}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{kind} state key {key!r} holds NaN or infinite values")
            slots[slot][name] = np.array(array, copy=True)
        names: set[str] = set()
        for arrays in slots.values():
            names.update(arrays)
        for name in sorted(names):
            shapes = set()
            for slot, arrays in slots.items():
                if name not in arrays:
                    raise ValueError(f"{kind} state is missing key {slot + '/' + name!r}")
                shapes.add(arrays[name].shape)
            if len(shapes) > 1:
                raise ValueError(
                    f"{kind} state arrays for parameter {name!r} disagree in shape: "
                    f"{sorted(shapes)}"
                )
        if t > 0 and self._slot_keys() and not names:
            raise ValueError(
                f"{kind} state has taken {t} step(s) but holds none of its slots "
                f"({', '.join(self._slot_keys())})"
            )
        self.t = t
        self._slots = slots


class RMSProp(Optimizer):
    """RMSProp, in the Tieleman-Hinton form or (``centered=True``) Graves's form.

    With decay ``rho``, the running mean square of the gradient ``g`` is
    ``v <- rho * v + (1 - rho) * g**2``. The step is ``g / sqrt(v + eps)``
    (Tieleman & Hinton, 2012, lecture 6.5), or, when ``centered``, with a
    running mean ``n <- rho * n + (1 - rho) * g`` as well,
    ``g / sqrt(v - n**2 + eps)``: the gradient is divided by an estimate of
    its standard deviation instead of its root mean square (Graves, 2013,
    "Generating Sequences With Recurrent Neural Networks", eqs. 38-41).
    ``eps`` sits inside the square root in both forms, as in Graves's paper.

    The update goes through a velocity ``d <- momentum * d - lr * step`` with
    ``w <- w + d``; with ``momentum=0`` this is plain ``w <- w - lr * step``.
    Graves's settings are ``RMSProp(lr=1e-4, decay=0.95, eps=1e-4,
    momentum=0.9, centered=True)``.

    State slots: ``"v"``, plus ``"n"`` when centered and ``"d"`` when
    ``momentum > 0``.

    Args:
        lr: learning rate, positive scalar.
        decay: decay ``rho`` of the running averages, in ``(0, 1)``.
        eps: stabilising constant added under the square root, positive.
        momentum: momentum of the velocity, in ``[0, 1)``.
        centered: use Graves's centred form.
        ema_decay: decay of the parameter average (:class:`Optimizer`); 0: none.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        decay: float = 0.9,
        eps: float = 1e-6,
        momentum: float = 0.0,
        centered: bool = False,
        ema_decay: float = 0.0,
    ) -> None:
        self.decay = _check_unit_interval("decay", decay, allow_zero=False)
        self.eps = _check_positive("eps", eps)
        self.momentum = _check_unit_interval("momentum", momentum, allow_zero=True)
        self.centered = bool(centered)
        super().__init__(lr, ema_decay)

    def slot_names(self) -> tuple[str, ...]:
        """Slot names: ``"v"``, ``"n"`` if centered, ``"d"`` if momentum is used.

        Returns:
            The tuple of slot names.
        """
        names = ["v"]
        if self.centered:
            names.append("n")
        if self.momentum > 0.0:
            names.append("d")
        return tuple(names)

    def _update(self, param: Array, grad: Array, slots: dict[str, Array], t: int) -> None:
        rho = self.decay
        v = slots["v"]
        v *= rho
        v += (1.0 - rho) * np.square(grad)
        if self.centered:
            n = slots["n"]
            n *= rho
            n += (1.0 - rho) * grad
            denom = np.sqrt(v - np.square(n) + self.eps)
        else:
            denom = np.sqrt(v + self.eps)
        step = (grad / denom).astype(param.dtype, copy=False)
        if self.momentum > 0.0:
            d = slots["d"]
            d *= self.momentum
            d -= self.lr * step
            param += d
        else:
            param -= self.lr * step


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015, algorithm 1).

    ``m <- b1 * m + (1 - b1) * g``, ``v <- b2 * v + (1 - b2) * g**2``, and
    ``w <- w - lr * m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - b1**t)``
    and ``v_hat = v / (1 - b2**t)``. State slots: ``"m"`` and ``"v"``.

    Args:
        lr: learning rate, positive scalar.
        beta1: decay of the first-moment average, in ``[0, 1)``.
        beta2: decay of the second-moment average, in ``[0, 1)``.
        eps: stabilising constant added to ``sqrt(v_hat)``, positive.
        ema_decay: decay of the parameter average (:class:`Optimizer`); 0: none.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        ema_decay: float = 0.0,
    ) -> None:
        self.beta1 = _check_unit_interval("beta1", beta1, allow_zero=True)
        self.beta2 = _check_unit_interval("beta2", beta2, allow_zero=True)
        self.eps = _check_positive("eps", eps)
        super().__init__(lr, ema_decay)

    def slot_names(self) -> tuple[str, ...]:
        """Slot names ``("m", "v")``.

        Returns:
            The tuple of slot names.
        """
        return ("m", "v")

    def _update(self, param: Array, grad: Array, slots: dict[str, Array], t: int) -> None:
        m, v = slots["m"], slots["v"]
        m *= self.beta1
        m += (1.0 - self.beta1) * grad
        v *= self.beta2
        v += (1.0 - self.beta2) * np.square(grad)
        m_hat = m / (1.0 - self.beta1**t)
        v_hat = v / (1.0 - self.beta2**t)
        param -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(param.dtype, copy=False)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    With momentum ``mu`` the velocity is ``b <- mu * b + g`` and the step is
    ``w <- w - lr * b``, or with ``nesterov=True`` ``w <- w - lr * (g + mu * b)``
    (the form used by PyTorch, in which the learning rate multiplies the whole
    step). With ``momentum=0`` this is plain ``w <- w - lr * g`` and no state is
    kept. State slot: ``"b"`` when ``momentum > 0``.

    Args:
        lr: learning rate, positive scalar.
        momentum: momentum ``mu``, in ``[0, 1)``.
        nesterov: use Nesterov momentum (requires ``momentum > 0``).
        ema_decay: decay of the parameter average (:class:`Optimizer`); 0: none.
    """

    def __init__(
        self, lr: float, momentum: float = 0.9, nesterov: bool = False, ema_decay: float = 0.0
    ) -> None:
        self.momentum = _check_unit_interval("momentum", momentum, allow_zero=True)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov=True requires momentum > 0")
        super().__init__(lr, ema_decay)

    def slot_names(self) -> tuple[str, ...]:
        """Slot names: ``("b",)`` with momentum, else none.

        Returns:
            The tuple of slot names.
        """
        return ("b",) if self.momentum > 0.0 else ()

    def _update(self, param: Array, grad: Array, slots: dict[str, Array], t: int) -> None:
        if self.momentum == 0.0:
            param -= (self.lr * grad).astype(param.dtype, copy=False)
            return
        b = slots["b"]
        b *= self.momentum
        b += grad
        step = grad + self.momentum * b if self.nesterov else b
        param -= (self.lr * step).astype(param.dtype, copy=False)


_OPTIMIZERS: dict[str, type[RMSProp] | type[Adam] | type[SGD]] = {
    "rmsprop": RMSProp,
    "adam": Adam,
    "sgd": SGD,
}


def make_optimizer(
    name: str, lr: float, *, momentum: float | None = None, ema_decay: float = 0.0
) -> Optimizer:
    """Build an optimiser by name with its default settings.

    Args:
        name: ``"rmsprop"``, ``"adam"`` or ``"sgd"`` (case-insensitive).
        lr: learning rate, positive scalar.
        momentum: ``None`` for the optimiser's default (RMSProp 0, SGD 0.9), or
            the momentum in ``[0, 1)`` of RMSProp's or SGD's velocity; Adam takes
            only ``None`` or 0 (its first-moment average is its own).
        ema_decay: decay in ``[0, 1)`` of the moving average of the parameters
            (:meth:`Optimizer.averaged`); 0 keeps none.

    Returns:
        The new optimiser.

    Raises:
        ValueError: listing the valid names, if ``name`` is unknown; for a
            momentum out of range or given to Adam.
        TypeError: for a momentum that is not a number (a string, a bool, an array).
    """
    cls = _OPTIMIZERS.get(name.strip().lower())
    if cls is None:
        valid = ", ".join(repr(n) for n in _OPTIMIZERS)
        raise ValueError(f"unknown optimizer {name!r}; valid names are {valid}")
    ema_decay = _real("ema_decay", ema_decay)
    if momentum is None:
        return cls(lr=lr, ema_decay=ema_decay)
    momentum = _real("momentum", momentum)
    if cls is Adam:
        if momentum != 0.0:
            raise ValueError(
                f"momentum {momentum!r}: Adam's first-moment average (beta1) is its own; "
                "give 0 or None"
            )
        return Adam(lr=lr, ema_decay=ema_decay)
    return (RMSProp if cls is RMSProp else SGD)(lr=lr, momentum=momentum, ema_decay=ema_decay)


def _real(name: str, value: object) -> float:
    """``value`` as a float, refusing what is not a real number (a string, a bool, an array)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name}: must be in [0, 1), got a number beyond the floats") from None


def global_norm(grads: Mapping[str, Array]) -> float:
    """The global L2 norm ``sqrt(sum_k sum(g_k**2))`` of arrays of any shapes,
    accumulated in float64."""
    total = 0.0
    for grad in grads.values():
        flat = np.asarray(grad, dtype=np.float64).ravel()
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def _check_finite_grads(grads: Mapping[str, Array], where: str) -> None:
    """A ``NonFiniteError`` naming the first gradient (in key order) holding a NaN
    or an infinity."""
    for name, grad in grads.items():
        if not np.all(np.isfinite(grad)):
            raise NonFiniteError(
                f"{where}: the gradient of parameter {name!r} holds NaN or infinite values",
                node=name,
            )


def decay_weights(params: dict[str, Array], factor: float) -> None:
    """Decoupled weight decay: multiply every parameter with two or more dimensions
    (weight matrices) by ``factor`` in place; vectors (biases, peepholes) are kept.

    Args:
        params: parameter arrays by name; the matrices are scaled in place.
        factor: ``1 - lr * weight_decay`` for AdamW-style decay, in (0, 1].
    """
    for p in params.values():
        if p.ndim >= 2:
            p *= factor


def clip_grad_norm(grads: dict[str, Array], max_norm: float) -> float:
    """Rescale gradients in place so that their global L2 norm is at most ``max_norm``.

    The norm is taken over all arrays together, ``sqrt(sum_k sum(g_k**2))``,
    accumulated in float64. If it exceeds ``max_norm`` every array is
    multiplied by ``max_norm / norm`` (dtype preserved). A non-finite norm
    (a NaN or an infinity in some gradient) is refused, naming the first such
    gradient, and leaves the gradients untouched; the check costs nothing
    beyond the norm itself.

    Args:
        grads: gradient arrays by name, any shapes; scaled in place.
        max_norm: the largest allowed global norm, positive.

    Returns:
        The global norm before clipping.

    Raises:
        NonFiniteError: naming the parameter whose gradient is not finite.
    """
    max_norm = _check_positive("max_norm", max_norm)
    norm = global_norm(grads)
    if not math.isfinite(norm):
        _check_finite_grads(grads, "clip_grad_norm")
        # every gradient is finite, only their squares overflowed float64
        raise NonFiniteError(f"clip_grad_norm: the global gradient norm overflows float64 ({norm})")
    if norm > max_norm:
        scale = max_norm / norm
        for grad in grads.values():
            grad *= scale
    return norm


def add_weight_noise(
    params: Mapping[str, Array], std: float, rng: np.random.Generator
) -> dict[str, Array]:
    """Return noisy copies of the parameters (Graves-style weight noise).

    Each array gets independent Gaussian noise of standard deviation ``std``.
    The noisy copies are meant for the forward and backward pass of one
    batch; the gradients so obtained are applied to the clean parameters,
    which are never modified here. Noise is drawn in float64, in sorted key
    order, and cast to each parameter's dtype, so the result depends only on
    the generator's state, the parameter names and shapes, and ``std``.

    Args:
        params: parameter arrays by name, each of any shape ``S_k``.
        std: standard deviation of the noise, non-negative (0 gives copies).
        rng: the generator the noise is drawn from; advanced.

    Returns:
        A new dict, in the key order of ``params``, of new arrays of shape
        ``S_k`` and the dtype of the corresponding parameter.
    """
    std = float(std)
    if not (math.isfinite(std) and std >= 0.0):
        raise ValueError(f"std must be a non-negative finite number, got {std!r}")
    noise: dict[str, Array] = {}
    for name in sorted(params):
        param = params[name]
        noise[name] = std * rng.standard_normal(param.shape)
    return {name: (param + noise[name]).astype(param.dtype) for name, param in params.items()}
