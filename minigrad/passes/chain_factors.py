"""Layout pass ``chain_factors``: a unary elementwise node's Jacobian folded into its readers'.

A unary elementwise node inside the loop (a tanh, a sigmoid) whose readers
are all elementwise nodes hands its Jacobian to them: each reader
multiplies by the product of both factors (prepared for all steps at once)
and writes the unary node's input gradient directly, as a hand derivation
writes ``dL/da_c = dL/dh * z * (1 - c^2)``.

It requires ``factor_elementwise``: the factors it chains are the ones that
pass computes for all steps; without them there is nothing to chain, so
asking for ``chain_factors`` alone is an error rather than a pass that does
nothing.

The pass is a choice made while a plan is bound (the runtime, ``Workspace``): the
runtime checks ``CHAIN_FACTORS`` in ``Plan.passes``; this unit declares it.
"""

from __future__ import annotations

from minigrad.pass_names import CHAIN_FACTORS, FACTOR_ELEMENTWISE
from minigrad.passes.base import Pass

__all__ = ["PASS"]

PASS = Pass(
    name=CHAIN_FACTORS,
    level="layout",
    description=__doc__ or "",
    requires=(FACTOR_ELEMENTWISE,),
    applied_by="the runtime, while binding (Workspace)",
)
