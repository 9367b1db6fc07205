"""The two-step GRU of the hand derivation, its gradients checked by finite differences.

The hand derivation this project grew from takes Chung et al.'s GRU::

    z_t = sigmoid(x_t Wz + h_{t-1} Wrecz + bz)
    r_t = sigmoid(x_t Wr + h_{t-1} Wrecr + br)
    c_t = tanh(x_t Wca + (r_t * h_{t-1}) Wreca + bca)
    h_t = (1 - z_t) * h_{t-1} + z_t * c_t

with an L2 cost at every time step, ``C = C_1 + C_2`` where
``C_t = 0.5 * ||h_t - y_t||^2``, over two time steps, and works out the
gradient of each of the six weights (``Wz``, ``Wr``, ``Wca``, ``Wrecz``,
``Wrecr``, ``Wreca``) at step 2 and at step 1 by the chain rule.

Here minigrad derives the same gradients from the nodes' local derivatives
(``models.GRU``, variant ``"chung"``); this script prints each of the six
weight gradients and the three bias gradients next to a fourth-order central
finite difference of the loss, for two steps and for one step ("at step 1").

Run it with ``python -m models.examples.tutorial_two_steps``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from minigrad.types import Array
from models.nets.gru import GRU

__all__ = [
    "BIASES",
    "WEIGHTS",
    "TutorialResult",
    "finite_difference",
    "main",
    "problem",
    "run",
]

WEIGHTS: tuple[str, ...] = ("Wz", "Wr", "Wca", "Wrecz", "Wrecr", "Wreca")
"""The six GRU weights of the derivation: input weights (D, H), recurrent weights (H, H)."""

BIASES: tuple[str, ...] = ("bz", "br", "bca")
"""The three GRU biases, (H,)."""


@dataclass(frozen=True)
class TutorialResult:
    """The gradients of one run of the tutorial's problem.

    Attributes:
        steps: the number of time steps T.
        loss: ``sum_t 0.5 * ||h_t - y_t||^2``.
        analytic: minigrad's gradient of every weight and bias, ``{name: array
            of the parameter's shape}``.
        numeric: the finite-difference gradient, same keys and shapes.
        rel_error: ``max |analytic - numeric| / max |numeric|`` per name.
    """

    steps: int
    loss: float
    analytic: dict[str, Array]
    numeric: dict[str, Array]
    rel_error: dict[str, float]


def problem(
    steps: int = 2,
    *,
    input_size: int = 3,
    hidden_size: int = 4,
    batch: int = 1,
    seed: int = 0,
) -> tuple[GRU, Array, Array, Array]:
    """The tutorial's GRU and data, in float64.

    Args:
        steps: T, the number of time steps.
        input_size: D.
        hidden_size: H.
        batch: B, the number of sequences.
        seed: seed of the parameters and the data.

    Returns:
        ``(model, x, y, h0)`` with ``x`` (T, B, D), ``y`` (T, B, H) and ``h0`` (B, H).
    """
    model = GRU(input_size, hidden_size, variant="chung", seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((steps, batch, input_size))
    y = rng.standard_normal((steps, batch, hidden_size))
    h0 = 0.5 * rng.standard_normal((batch, hidden_size))
    return model, x, y, h0


def finite_difference(f: Callable[[], float], array: Array, eps: float = 1e-3) -> Array:
    """The gradient of ``f()`` with respect to ``array`` by a fourth-order central difference.

    ``array`` is perturbed in place, one entry at a time, and restored; ``f``
    must read it on every call. The stencil
    ``(8 (f(+e) - f(-e)) - (f(+2e) - f(-2e))) / (12 e)`` has truncation error
    O(e^4).

    Args:
        f: the scalar function.
        array: any shape, float64.
        eps: the step e.

    Returns:
        An array of ``array``'s shape.
    """
    grad = np.zeros_like(array)
    for idx in np.ndindex(array.shape):
        orig = array[idx]
        vals = []
        for k in (2, 1, -1, -2):
            array[idx] = orig + k * eps
            vals.append(f())
        array[idx] = orig
        fp2, fp1, fm1, fm2 = vals
        grad[idx] = (8 * (fp1 - fm1) - (fp2 - fm2)) / (12 * eps)
    return grad


def run(steps: int = 2, *, seed: int = 0) -> TutorialResult:
    """Compute the tutorial's gradients with minigrad and by finite differences.

    Args:
        steps: T (2 for the derivation, 1 for "at step 1").
        seed: seed of the parameters and the data.

    Returns:
        A ``TutorialResult`` for the weights ``WEIGHTS`` and biases ``BIASES``.
    """
    model, x, y, h0 = problem(steps, seed=seed)
    loss, grads = model.loss_and_grads(x, y, h0)

    def cost() -> float:
        # the cost recomputed from the hidden states alone, not from minigrad's loss node
        h = model.forward(x, h0)
        return float(0.5 * np.sum((h - y) ** 2))

    analytic: dict[str, Array] = {}
    numeric: dict[str, Array] = {}
    rel: dict[str, float] = {}
    for name in (*WEIGHTS, *BIASES):
        analytic[name] = grads[name]
        numeric[name] = finite_difference(cost, model.params[name])
        scale = max(float(np.max(np.abs(numeric[name]))), 1e-300)
        rel[name] = float(np.max(np.abs(analytic[name] - numeric[name]))) / scale
    return TutorialResult(steps, loss, analytic, numeric, rel)


def _report(res: TutorialResult, verbose: bool) -> None:
    print(f"== T = {res.steps}: loss = sum_t 0.5 ||h_t - y_t||^2 = {res.loss:.12f}")
    for name in (*WEIGHTS, *BIASES):
        print(f"-- dC/d{name}  {res.analytic[name].shape}")
        if verbose:
            print("minigrad:")
            print(res.analytic[name])
            print("finite difference:")
            print(res.numeric[name])
        print(f"max relative difference: {res.rel_error[name]:.2e}")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the gradients for two steps (in full) and for one step (the check only).

    Args:
        argv: command-line arguments (``--seed N``); default ``sys.argv[1:]``.

    Returns:
        0 when every relative difference is below 1e-7, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=0, help="seed of parameters and data")
    args = parser.parse_args(argv)
    ok = True
    with np.printoptions(precision=8, suppress=True, linewidth=100):
        for steps, verbose in ((2, True), (1, False)):
            res = run(steps, seed=args.seed)
            _report(res, verbose)
            ok = ok and max(res.rel_error.values()) < 1e-7
            print()
    print("finite-difference check:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
