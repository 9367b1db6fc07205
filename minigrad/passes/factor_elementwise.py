"""Layout pass ``factor_elementwise``: elementwise Jacobians, all steps at once.

Elementwise nodes inside the time loop (sigmoid, tanh, gates) have a
diagonal Jacobian that depends on forward values only: it is computed for
all steps at once before the backward loop, and each step's backward
becomes one multiplication per input.

The pass is a choice made while a plan is bound (the runtime, ``Workspace``): the
runtime checks ``FACTOR_ELEMENTWISE`` in ``Plan.passes``; this unit declares it.
"""

from __future__ import annotations

from minigrad.pass_names import FACTOR_ELEMENTWISE
from minigrad.passes.base import Pass

__all__ = ["PASS"]

PASS = Pass(
    name=FACTOR_ELEMENTWISE,
    level="layout",
    description=__doc__ or "",
    applied_by="the runtime, while binding (Workspace)",
)
