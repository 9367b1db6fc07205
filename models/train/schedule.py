"""Learning-rate schedules: the rate of every update of a run.

``LRSchedule.rate(update, epoch)`` gives the learning rate of one update from
the run's counters, so a resumed run continues the schedule exactly; the one
piece of state, the reduce-on-plateau factor, is saved in the checkpoint
(``state_dict``). The schedules (``lr`` is ``TrainConfig.lr``):

* ``"constant"``: ``lr`` at every update;
* ``"cosine"`` (the default of ``TrainConfig``):
  ``lr_min + (lr - lr_min) * (1 + cos(pi * u / U)) / 2`` at update ``u``
  (0-based), from ``lr`` to ``lr_min`` over the run's budget of ``U`` updates
  (``max_updates``, or ``epochs`` times the updates per epoch), then ``lr_min``;
* ``"step"``: ``lr * lr_decay ** floor((epoch - 1) / lr_step_epochs)``, at least
  ``lr_min``;
* ``"plateau"``: ``lr`` times ``lr_decay`` each time the validation NLL has
  not improved for ``lr_plateau_patience`` epochs (counted from the best epoch
  or the last reduction, whichever is later), at least ``lr_min``.

``warmup_updates > 0`` multiplies any of them by ``(u + 1) / warmup_updates``
during the first ``warmup_updates`` updates (linear warm-up).

``scaled_lr`` is the rule that turns ``TrainConfig.lr`` into the base rate of a
data set (``TrainConfig.lr_scaling``): ``lr`` is the rate of a training batch
of ``reference_steps`` real time steps, and a data set whose batches hold ``S``
real steps on average trains at ``lr * (S / reference_steps) ** k``, with
``k = 1/2`` for ``"sqrt"`` (the square-root rule of adaptive optimisers,
Malladi et al. 2022), ``k = 1`` for ``"linear"`` and ``k = 0`` for ``"none"``.
The loss is a mean over a batch's real steps, so a batch of longer sequences
gives a less noisy gradient, which can take a longer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LR_SCALINGS", "SCHEDULES", "LRSchedule", "scaled_lr"]

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step", "plateau")
"""The names accepted by ``TrainConfig.lr_schedule``."""

LR_SCALINGS: dict[str, float] = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}
"""The names accepted by ``TrainConfig.lr_scaling``, with their exponents ``k``."""


def scaled_lr(lr: float, scaling: str, mean_batch_steps: float, reference_steps: int) -> float:
    """The base learning rate of a data set (see the module docstring).

    Args:
        lr: the rate of a batch of ``reference_steps`` real steps, > 0.
        scaling: a name of ``LR_SCALINGS``.
        mean_batch_steps: S, the mean number of real time steps in a training
            batch of the data set (its training steps over its batches per epoch), > 0.
        reference_steps: the batch size in steps at which ``lr`` applies, >= 1.

    Returns:
        ``lr * (mean_batch_steps / reference_steps) ** k``.

    Raises:
        ValueError: an unknown ``scaling`` or a size that is not positive.
    """
    if scaling not in LR_SCALINGS:
        raise ValueError(
            f"unknown learning-rate scaling {scaling!r}; valid: {', '.join(LR_SCALINGS)}"
        )
    if not (mean_batch_steps > 0 and reference_steps >= 1):
        raise ValueError(
            f"learning-rate scaling needs positive sizes, got {mean_batch_steps!r} steps "
            f"per batch and a reference of {reference_steps!r}"
        )
    return float(lr * (mean_batch_steps / reference_steps) ** LR_SCALINGS[scaling])


@dataclass
class LRSchedule:
    """The learning rate of each update (see the module docstring).

    Args:
        lr: the base rate, > 0.
        kind: a name of ``SCHEDULES``.
        total_updates: U, the update budget the cosine decays over (>= 1).
        warmup_updates: the length of the linear warm-up, 0 for none.
        lr_min: the floor of the decaying schedules, >= 0.
        lr_decay: the factor of ``"step"`` and ``"plateau"``, in (0, 1).
        step_epochs: the period of ``"step"``, in epochs, >= 1.
        plateau_patience: epochs without a better validation NLL before
            ``"plateau"`` reduces the rate, >= 1.

    Attributes:
        scale: the reduce-on-plateau factor so far (1.0 until a reduction).
        last_reduction: the epoch of the last reduction (0 for none).
    """

    lr: float
    kind: str = "constant"
    total_updates: int = 1
    warmup_updates: int = 0
    lr_min: float = 0.0
    lr_decay: float = 0.5
    step_epochs: int = 50
    plateau_patience: int = 5
    scale: float = 1.0
    last_reduction: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(
                f"unknown learning-rate schedule {self.kind!r}; valid: {', '.join(SCHEDULES)}"
            )

    def rate(self, update: int, epoch: int) -> float:
        """The learning rate of update ``update`` (0-based, counted over the whole run),
        made during epoch ``epoch`` (1-based)."""
        if self.kind == "constant":
            r = self.lr
        elif self.kind == "cosine":
            progress = min(update / max(self.total_updates, 1), 1.0)
            r = self.lr_min + (self.lr - self.lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))
        elif self.kind == "step":
            r = max(self.lr_min, self.lr * self.lr_decay ** ((epoch - 1) // self.step_epochs))
        else:
            r = max(self.lr_min, self.lr * self.scale)
        if update < self.warmup_updates:
            r *= (update + 1) / self.warmup_updates
        return r

    def end_epoch(self, epoch: int, best_epoch: int) -> bool:
        """Called after the validation of epoch ``epoch``; for ``"plateau"``, reduce the
        rate when ``best_epoch`` is ``plateau_patience`` or more epochs back. Returns
        True when the rate was reduced."""
        if self.kind != "plateau":
            return False
        if epoch - max(best_epoch, self.last_reduction) >= self.plateau_patience:
            self.scale *= self.lr_decay
            self.last_reduction = epoch
            return True
        return False

    def state_dict(self) -> dict[str, float | int]:
        """The state a checkpoint keeps (plain numbers)."""
        return {"scale": self.scale, "last_reduction": self.last_reduction}

    def load_state_dict(self, state: dict[str, object], *, where: str) -> None:
        """Restore ``state_dict()``; ValueError naming ``where`` when it is malformed."""
        scale, last = state.get("scale"), state.get("last_reduction")
        if (
            not isinstance(scale, int | float)
            or isinstance(scale, bool)
            or not (math.isfinite(scale) and scale > 0)
            or not isinstance(last, int)
            or isinstance(last, bool)
            or last < 0
        ):
            raise ValueError(f"{where}: bad learning-rate schedule state {state!r}")
        self.scale, self.last_reduction = float(scale), last
