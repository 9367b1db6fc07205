"""A compiled plan bound for one batch size: the runtime's parts, composed.

A ``Plan`` (``minigrad.plan``) is a list of instructions (``Instr``) over
named buffers (``BufRef``). For each batch size (and masked or not) it is
bound once into a ``Workspace``:

* its buffers, carved out of one arena (``minigrad.runtime.layout``);
* the forward pass as a flat list of numpy calls
  (``minigrad.runtime.bind_forward``);
* at the first backward pass, the gradient buffers and the backward pass as
  a flat list of calls (``minigrad.runtime.bind_backward``), once with seeds
  for the outputs' gradients and once without, as passes ask for them.

The choices made while binding (views, shared and reused buffers,
precomputed Jacobians and their chains, flat ufunc calls, the first write into
each gradient region assigning instead of adding) are the plan-level passes of
``minigrad.passes``. Running a batch (``minigrad.runtime.execute``) then
copies the parameters, inputs and initial states in and calls the lists: no
networkx and no per-node Python work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from minigrad.runtime import execute
from minigrad.runtime.bind_backward import FactorJob, Target, bind_backward
from minigrad.runtime.bind_forward import bind_forward
from minigrad.runtime.calls import Span
from minigrad.runtime.execute import Gradients, Run
from minigrad.runtime.instr import BufRef
from minigrad.runtime.layout import lay_out, mask_views, sliced, view
from minigrad.types import Array, BoolArray

if TYPE_CHECKING:
    from minigrad.plan import Plan

__all__ = ["Gradients", "Run", "Workspace"]


class Workspace:
    """Buffers and bound instruction lists of a plan for one batch size.

    Attributes (a loop program, ``minigrad.loop``, re-targets them): ``plan``,
    ``batch``, ``masked``, ``T``; the layout's ``arena``, ``bufs``, ``aliased``,
    ``inplace``, ``mask``, ``mask_col``, ``mask_bool``; the forward binding's
    ``fwd`` and ``fwd_spans``; the current backward binding's ``gbufs``,
    ``factor_jobs``, ``seed_modes``, ``bwd`` and ``bwd_spans`` (``_zero``: the
    gradient arrays zeroed before each pass).
    """

    def __init__(self, plan: Plan, batch: int, masked: bool) -> None:
        self.plan = plan
        self.batch = batch
        self.masked = masked
        self.generation = 0
        self.T = plan.steps
        layout = lay_out(plan, batch, masked)
        self.arena = layout.arena
        self.bufs = layout.bufs
        self.aliased = layout.aliased
        self.inplace = layout.inplace
        self.mask = layout.mask
        self.mask_col = layout.mask_col
        self.mask_bool = layout.mask_bool
        self.fwd, self.fwd_spans, self._skip_carry = bind_forward(
            plan, self.bufs, self.aliased, masked, self.mask_bool, self.mask_col
        )
        self._bindings: dict[bool, tuple[Any, ...]] = {}
        self.gbufs: dict[str, Array] = {}
        self.bwd: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.bwd_spans: list[Span] = []
        self.factor_jobs: list[FactorJob] = []
        self.seed_modes: dict[str, bool] = {}
        self._zero: list[Array] = []
        self._zero_roots: list[str] = []
        self._chained: set[str] = set()

    # -- views of the layout ---------------------------------------------------------

    def _view(self, b: Mapping[str, Array], ref: BufRef) -> Array:
        return view(b, ref)

    def _sliced(self, b: Mapping[str, Array], n: str) -> Array:
        return sliced(self.plan, self.T, b, n)

    def _mask_views(self, t: int, ndim: int) -> tuple[BoolArray, Array]:
        return mask_views(self.mask_bool, self.mask_col, t, ndim)

    # -- binding -------------------------------------------------------------------

    def _bind_backward(self, output_seeds: bool) -> None:
        """Gradient buffers and the backward instruction list, made at the first backward
        pass (a workspace used only for forward passes never allocates them). There are
        two bindings: with gradients given for the outputs, and without (then nothing
        needs to seed, and zero, the outputs' gradient regions)."""
        target = Target(
            plan=self.plan,
            T=self.T,
            bufs=self.bufs,
            arena=self.arena,
            aliased=self.aliased,
            skip_carry=self._skip_carry,
            masked=self.masked,
            mask_bool=self.mask_bool,
            mask_col=self.mask_col,
        )
        b = bind_backward(target, output_seeds)
        self.gbufs = b.gbufs
        self.factor_jobs = b.factor_jobs
        self._chained = b.chained
        self._zero_roots = b.zero_roots
        self._zero = b.zero
        self.seed_modes = b.seed_modes
        self.bwd = b.calls
        self.bwd_spans = b.spans

    def _use_binding(self, with_outputs: bool) -> None:
        """Make the backward binding (with or without output seeds) the current one."""
        binding = self._bindings.get(with_outputs)
        if binding is None:
            self._bind_backward(with_outputs)
            self._bindings[with_outputs] = (
                self.gbufs,
                self.factor_jobs,
                self._zero,
                self.seed_modes,
                self.bwd,
            )
        else:
            self.gbufs, self.factor_jobs, self._zero, self.seed_modes, self.bwd = binding

    # -- running ---------------------------------------------------------------------

    def _load(
        self,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array],
        mask: Array | BoolArray | None,
    ) -> None:
        execute.load(
            self.plan.cell,
            self.bufs,
            self.T,
            self.batch,
            (self.mask, self.mask_col, self.mask_bool),
            params,
            inputs,
            states,
            mask,
        )

    def forward(
        self,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array],
        mask: Array | BoolArray | None,
        with_outputs: bool = True,
    ) -> Run:
        self._load(params, inputs, states, mask)
        # exp() overflowing to inf inside a sigmoid is exact (1 / inf = 0): not worth a warning
        with np.errstate(over="ignore"):
            self._execute_forward()
        self.generation += 1
        return execute.collect_run(
            self.plan.cell,
            self.bufs,
            self.T,
            self.mask,
            self.batch,
            self.masked,
            self.generation,
            with_outputs,
        )

    def backward(self, grad_outputs: Mapping[str, Array], loss_scale: float) -> Gradients:
        cell = self.plan.cell
        execute.check_grad_outputs(cell, grad_outputs)
        self._use_binding(bool(grad_outputs))
        execute.seed(
            cell,
            self.gbufs,
            self.T,
            self.mask,
            self.masked,
            self.seed_modes,
            self._zero,
            self.factor_jobs,
            grad_outputs,
            loss_scale,
        )
        self._execute_backward()
        return execute.collect_gradients(cell, self.gbufs, self.plan.wrt)

    def _execute_forward(self) -> None:
        execute.run_calls(self.fwd)

    def _execute_backward(self) -> None:
        execute.run_calls(self.bwd)

    def first_nonfinite(self) -> tuple[str, int] | None:
        """The first (node, step) of the unrolled order whose value is not finite, read
        from the buffers as they are (the plan asks this of a plain plan, whose buffers
        hold every value)."""
        return execute.first_nonfinite(self.plan, self.bufs, self.T)
