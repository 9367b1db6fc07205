"""The names of the layout passes, whose logic runs while a plan is bound.

The units that declare these passes live in ``minigrad.passes`` (the
compiler); the runtime (``Workspace``, while binding) checks them in
``Plan.passes`` by these constants, so that it never imports the compiler and
a renamed pass cannot leave a stale string behind.
"""

from __future__ import annotations

__all__ = [
    "ASSIGN_FIRST_WRITES",
    "CHAIN_FACTORS",
    "FACTOR_ELEMENTWISE",
    "FLAT_CALLS",
    "REUSE_BUFFERS",
]

ASSIGN_FIRST_WRITES = "assign_first_writes"
CHAIN_FACTORS = "chain_factors"
FACTOR_ELEMENTWISE = "factor_elementwise"
FLAT_CALLS = "flat_calls"
REUSE_BUFFERS = "reuse_buffers"
