"""Graph passes: documented rewrites that make a compiled plan fast, each one
optional and each one a unit of its own.

Every pass is one module of this package, named after the pass, holding one
``Pass`` record (``PASS``: name, level, requirements, description) and its
code. ``minigrad.passes.driver`` lists them in the order they apply
(``PASSES``) and resolves a ``passes=`` argument (``resolve``): unknown names
and missing requirements are errors, never silent no-ops. A plan is compiled
with the passes named in ``passes`` (default: ``DEFAULT_PASSES``, all of
them); ``passes=()`` compiles the plain per-node, per-step plan, the
reference the optimised plans are tested against.

Cell rewrites (a ``Cell`` in, an equivalent ``Cell`` out; parameter, input,
state, output and loss names are unchanged, so are the names of the original
nodes wherever they survive): ``merge_matmuls``, ``reassociate_adds``,
``fold_bias``, ``fuse_siblings``, ``negate_sigmoid_inputs``.

Program schedules (applied by ``minigrad.plan.compile_plan``):
``time_batch``, ``defer_shared_grads``, ``view_slices``, ``share_add_grads``.

Layout choices (applied by the runtime while binding, ``Workspace``):
``reuse_buffers``, ``flat_calls``, ``factor_elementwise``, ``chain_factors``
(requires ``factor_elementwise``), ``assign_first_writes``.

docs/passes.md says where a new pass goes.
"""

from __future__ import annotations

from minigrad.passes.base import LEVELS, Level, Pass
from minigrad.passes.driver import (
    ALL_PASSES,
    BY_NAME,
    DEFAULT_PASSES,
    PASSES,
    resolve,
    rewrite,
    without,
)
from minigrad.passes.fold_bias import fold_bias
from minigrad.passes.fuse_siblings import fuse_siblings
from minigrad.passes.merge_matmuls import merge_matmuls
from minigrad.passes.negate_sigmoid_inputs import negate_sigmoid_inputs
from minigrad.passes.phases import Phase, classify
from minigrad.passes.reassociate_adds import reassociate_adds

__all__ = [
    "ALL_PASSES",
    "BY_NAME",
    "DEFAULT_PASSES",
    "LEVELS",
    "PASSES",
    "Level",
    "Pass",
    "Phase",
    "classify",
    "fold_bias",
    "fuse_siblings",
    "merge_matmuls",
    "negate_sigmoid_inputs",
    "reassociate_adds",
    "resolve",
    "rewrite",
    "without",
]
