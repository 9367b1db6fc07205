"""Layout pass ``flat_calls``: the time loops bound as flat lists of numpy ufunc calls.

Nodes that can spell their forward pass as a few numpy ufunc calls
(``Node.forward_calls``) are bound as those calls, and the backward
multiplications and GEMMs prepared above are bound as plain ufunc calls:
the time loops run a flat list of ``f(*args)`` with no Python frame per
node in between.

The pass is a choice made while a plan is bound (the runtime, ``Workspace``): the
runtime checks ``FLAT_CALLS`` in ``Plan.passes``; this unit declares it.
"""

from __future__ import annotations

from minigrad.pass_names import FLAT_CALLS
from minigrad.passes.base import Pass

__all__ = ["PASS"]

PASS = Pass(
    name=FLAT_CALLS,
    level="layout",
    description=__doc__ or "",
    applied_by="the runtime, while binding (Workspace)",
)
