"""Layout pass ``assign_first_writes``: first writes assign, not add.

The first write into each gradient region in backward order assigns
instead of adding, so gradient buffers need no zeroing and no temporary,
except where a region is only partly covered.

The pass is a choice made while a plan is bound (the runtime, ``Workspace``): the
runtime checks ``ASSIGN_FIRST_WRITES`` in ``Plan.passes``; this unit declares it.
"""

from __future__ import annotations

from minigrad.pass_names import ASSIGN_FIRST_WRITES
from minigrad.passes.base import Pass

__all__ = ["PASS"]

PASS = Pass(
    name=ASSIGN_FIRST_WRITES,
    level="layout",
    description=__doc__ or "",
    applied_by="the runtime, while binding (Workspace)",
)
