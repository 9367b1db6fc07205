"""Layout pass ``reuse_buffers``: a node writes over an input nobody else reads.

A node whose input has no other reader writes its output over that input
when no backward step needs the overwritten value (nodes declare what
their backward reads): in a GRU the recurrent GEMM, the gate
pre-activations and the gates share one buffer, as in hand-fused code.

The pass is a choice made while a plan is bound (the runtime, ``Workspace``): the
runtime checks ``REUSE_BUFFERS`` in ``Plan.passes``; this unit declares it.
"""

from __future__ import annotations

from minigrad.pass_names import REUSE_BUFFERS
from minigrad.passes.base import Pass

__all__ = ["PASS"]

PASS = Pass(
    name=REUSE_BUFFERS,
    level="layout",
    description=__doc__ or "",
    applied_by="the runtime, while binding (Workspace)",
)
