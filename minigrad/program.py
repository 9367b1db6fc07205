"""``minigrad.compile``: a cell compiled once into a program that runs for any T.

``compile(cell, wrt=..., truncate=..., passes=...)`` returns a ``Program``.
Its ``forward`` reads T from the inputs. In the default ``mode="loop"`` the
program runs one compiled step per time step (``minigrad.loop``): nothing is
compiled per sequence length, the per-step buffers follow the longest T run in
one piece, and a longer sequence runs in chunks over a window of steps.
``mode="unrolled"`` runs the plan of the full networkx unroll of each T
(``minigrad.plan``), the reference the tests compare the loop with.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from minigrad.cell import Cell
from minigrad.errors import ArgumentError, GraphError, ShapeError, check_names
from minigrad.loop import LoopWorkspace, template_steps
from minigrad.passes import resolve
from minigrad.plan import Plan, compile_plan, plan_steps_limit
from minigrad.runtime.workspace import Gradients, Run
from minigrad.types import Array, BoolArray

__all__ = ["KEEP_BYTES", "MODES", "RUNNERS", "Program", "compile", "plan_of"]

RUNNERS = 4
"""At most this many (batch size, masked) bindings are kept, the most recently used."""

KEEP_BYTES = 16 << 20
"""Bindings other than the one in use are dropped while their buffers (each with its own
parameter and gradient buffers, sized for the longest T it has run in one piece, plus the
values kept for a chunked backward pass) take more than this; binding one again takes
milliseconds. A large model thus keeps one binding at a time, not one per batch size."""

DIAGNOSIS_STEPS = 256
"""``Program.first_nonfinite`` runs the plain plan over windows of this many steps."""

MODES = ("loop", "unrolled")
"""The ways a program runs: one compiled step in a loop, or the full unroll."""


class Program:
    """A cell compiled for one choice of ``wrt``, ``truncate`` and ``passes``.

    Build it with ``minigrad.compile``. ``forward``/``backward``/``loss_and_grads``
    take and return the same things as a ``Plan``'s; T is the inputs' leading size.
    """

    def __init__(
        self,
        cell: Cell,
        *,
        wrt: Iterable[str] | None = None,
        truncate: int | None = None,
        passes: Sequence[str] | None = None,
        mode: str = "loop",
    ) -> None:
        if mode not in MODES:
            raise ArgumentError(f"cell '{cell.name}': mode must be one of {MODES}, got {mode!r}")
        self.cell = cell
        where = f"cell '{cell.name}': "
        self.wrt = None if wrt is None else check_names(wrt, "wrt", where)
        self.truncate = truncate
        # the names checked (and what each pass requires), in the order they apply
        self.passes = None if passes is None else resolve(passes, where)
        self.mode = mode
        # check the other arguments once, on the smallest unroll without passes (cheap);
        # that plan also reads the batch size of each call (passes keep the cell's names)
        self._plain1 = compile_plan(cell, 1, wrt=self.wrt, truncate=truncate, passes=())
        self._plans: dict[int, Plan] = {}
        self._rewritten: Cell | None = None
        self._runners: dict[tuple[int, bool], LoopWorkspace] = {}
        self._unrolled: Plan | None = None
        self._last: LoopWorkspace | Plan | None = None
        self._forward_only = False

    def __repr__(self) -> str:
        return f"Program(cell='{self.cell.name}', mode='{self.mode}')"

    def _plan(self, steps: int) -> Plan:
        plan = self._plans.get(steps)
        if plan is None:
            # steady: the loop body is cut from one step of this plan and run at every step
            plan = compile_plan(
                self.cell,
                steps,
                wrt=self.wrt,
                truncate=self.truncate,
                passes=self.passes,
                rewritten=self._rewritten,
                steady=True,
            )
            self._rewritten = plan.cell  # the cell rewrites run once per program
            self._plans[steps] = plan
        return plan

    def _runner(self, batch: int, masked: bool) -> LoopWorkspace:
        key = (batch, masked)
        ws = self._runners.pop(key, None)
        if ws is not None:
            self._runners[key] = ws  # most recently used last
        else:
            # the cell after the graph passes: its parameter-only values (merged weights)
            # are buffers too, and their Jacobians' shapes must not look per step
            cell = self._plan(1).cell
            shapes = [tuple(int(d) for d in p.shape) for p in cell.params.values()]
            shapes += [tuple(int(d) for d in o.shape) for o in cell.ops.values() if o.static]
            K = template_steps(shapes, batch, self.truncate)
            freed = 0
            while self._runners and (
                len(self._runners) >= RUNNERS
                or sum(r.nbytes for r in self._runners.values()) > KEEP_BYTES
            ):
                freed += self._runners.pop(next(iter(self._runners))).nbytes
                self._last = None
            if freed > 1 << 20:
                gc.collect()  # bindings hold reference cycles: free their buffers now
            ws = LoopWorkspace(self._plan(K), batch, masked)
            self._runners[key] = ws
        return ws

    def steps(self, inputs: Mapping[str, Array], mask: Array | BoolArray | None = None) -> int:
        """T, read from the inputs (or the mask for a cell without inputs)."""
        for name in self.cell.inputs:
            if name in inputs:
                shape = np.shape(inputs[name])
                if len(shape) < 2:
                    raise ShapeError(
                        f"cell '{self.cell.name}': input '{name}' must have shape (T, B, ...), "
                        f"got {shape}"
                    )
                if shape[0] < 1:
                    raise ShapeError(
                        f"cell '{self.cell.name}': input '{name}' has no time steps (T = 0)"
                    )
                if shape[1] < 1:
                    raise ShapeError(
                        f"cell '{self.cell.name}': input '{name}' has an empty batch (B = 0): "
                        f"shape {shape}; give at least one sequence"
                    )
                return int(shape[0])
        if mask is not None:
            return int(np.shape(mask)[0])
        missing = [n for n in self.cell.inputs if n not in inputs]
        raise ShapeError(
            f"cell '{self.cell.name}': missing input(s) {missing}; "
            f"expected {list(self.cell.inputs)}"
        )

    def forward(
        self,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array] | None = None,
        mask: Array | BoolArray | None = None,
        *,
        with_outputs: bool = True,
        backward: bool = True,
    ) -> Run:
        """Run the forward pass over T = the inputs' leading size.

        Args:
            params: every parameter, ``{name: array of its shape}``.
            inputs: every input, ``{name: (T, B, *features)}``.
            states: optional initial states ``{name: (B, *features)}``.
            mask: optional (T, B), 1 on real steps and 0 on padding.
            with_outputs: return the outputs (else ``Run.outputs`` is empty).
            backward: whether ``backward`` may follow. False (evaluation, scoring)
                keeps none of the values a backward pass reads: a long sequence then
                takes memory for one chunk of steps only, and ``backward`` after it
                is a ``GraphError``.

        A backward pass after a forward pass over more than one chunk of steps reads
        the inputs again from the arrays given here: do not change them in between.
        """
        self._forward_only = not backward
        T = self.steps(inputs, mask)
        if self.mode == "unrolled":
            if self._unrolled is None or self._unrolled.steps != T:
                self._unrolled = compile_plan(
                    self.cell,
                    T,
                    wrt=self.wrt,
                    truncate=self.truncate,
                    passes=self.passes,
                    rewritten=self._rewritten,
                )
                self._rewritten = self._unrolled.cell
            self._last = self._unrolled
            return self._unrolled.forward(params, inputs, states, mask)
        batch = self._unrolled_batch(inputs, states)
        ws = self._runner(batch, mask is not None)
        ws.steps_of(T)
        self._last = ws
        return ws.forward(params, inputs, states or {}, mask, with_outputs, backward)

    def _unrolled_batch(
        self, inputs: Mapping[str, Array], states: Mapping[str, Array] | None
    ) -> int:
        return self._plain1._batch_size(inputs, states)

    def backward(
        self,
        run: Run,
        grad_outputs: Mapping[str, Array] | None = None,
        loss_scale: float = 1.0,
    ) -> Gradients:
        """Backpropagate through time from the loss (times ``loss_scale``) and from
        ``grad_outputs`` (``{output: (T, B, *features)}``); call it before the next
        forward pass of this program."""
        last = self._last
        if self._forward_only:
            raise GraphError(
                f"cell '{self.cell.name}': the last forward pass ran with backward=False and "
                "kept nothing for a backward pass; run forward again without it"
            )
        if isinstance(last, Plan):
            return last.backward(run, grad_outputs, loss_scale)
        if last is None or last.generation != run._generation or last.batch != run.batch:
            raise GraphError(
                f"cell '{self.cell.name}': this forward result was overwritten by a later "
                "forward pass of the same program; call backward before the next forward"
            )
        return last.backward(grad_outputs or {}, loss_scale)

    def loss_and_grads(
        self,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array] | None = None,
        mask: Array | BoolArray | None = None,
    ) -> tuple[float, Gradients]:
        """Forward then backward; returns ``(loss, gradients)``."""
        run = self.forward(params, inputs, states, mask, with_outputs=False)
        return run.loss, self.backward(run)

    def first_nonfinite(self, run: Run) -> tuple[str, int] | None:
        """The first (node, step) of the unrolled order whose value is not finite in the
        last forward pass (``run``), or None. The pass is run again on the plain plan of
        the full unroll, with the same parameters, inputs, initial states and mask."""
        last = self._last
        if last is None:
            return None
        cell = self.cell
        T = last.T if isinstance(last, LoopWorkspace) else last.steps
        bufs = last.bufs if isinstance(last, LoopWorkspace) else None
        if bufs is None:
            assert isinstance(last, Plan)
            return last.first_nonfinite(run)
        assert isinstance(last, LoopWorkspace)
        params, inputs, states, mask = last.arguments()
        T = last.total
        # window by window, carrying the states: a plain plan of the whole unroll of a
        # long sequence would take tens of kilobytes per step
        plans: dict[int, Plan] = {}
        t0 = 0
        width = min(DIAGNOSIS_STEPS, plan_steps_limit(cell))
        while t0 < T:
            n = min(width, T - t0)
            plain = plans.get(n)
            if plain is None:
                plain = plans[n] = compile_plan(cell, n, passes=())
            window = {k: v[t0 : t0 + n] for k, v in inputs.items()}
            m = None if mask is None else mask[t0 : t0 + n]
            with np.errstate(all="ignore"):
                again = plain.forward(params, window, states, m)
            found = plain.first_nonfinite(again)
            if found is not None:
                node, step = found
                return node, step + t0 if step >= 0 else step
            states = again.states
            t0 += n
        return None


def compile(
    cell: Cell,
    *,
    wrt: Iterable[str] | None = None,
    truncate: int | None = None,
    passes: Sequence[str] | None = None,
    mode: str = "loop",
) -> Program:
    """Compile ``cell`` once into a ``Program`` that runs for any number of steps.

    Args:
        cell: a built ``Cell``.
        wrt: names of the parameters, inputs and states whose gradients are wanted
            (default: all).
        truncate: optional BPTT window k ("detach every k steps" from step 0).
        passes: graph passes (``minigrad.passes``); None for the defaults, ``()`` for none.
        mode: ``"loop"`` (one compiled step, any T) or ``"unrolled"`` (the full unroll
            of each T, the reference).

    The same arguments give the same ``Program`` while the cell is alive (a small
    cache keyed weakly by the cell; the cell itself holds nothing).
    """
    key = (
        None if wrt is None else frozenset(wrt),
        truncate,
        None if passes is None else tuple(passes),
        mode,
    )
    programs = _PROGRAMS.setdefault(cell, {})
    prog = programs.get(key)
    if prog is None:
        if len(programs) >= 16:
            programs.pop(next(iter(programs)))
        prog = programs[key] = Program(
            cell, wrt=wrt, truncate=truncate, passes=passes, mode=mode
        )
    return prog


# programs of the cells still alive: a cell is compiled once per (wrt, truncate, passes, mode)
_PROGRAMS: weakref.WeakKeyDictionary[Cell, dict[tuple[object, ...], Program]] = (
    weakref.WeakKeyDictionary()
)




def plan_of(
    cell: Cell,
    steps: int,
    wrt: Iterable[str] | None = None,
    truncate: int | None = None,
    passes: Sequence[str] | None = None,
) -> Plan:
    """The plan of the full unroll of ``cell`` for ``steps`` steps (``compile_plan``),
    compiled once per arguments while the cell is alive (the cell itself holds nothing).
    Programs (``compile``) run any T; a plan is the inspectable reference of one T."""
    key = (
        steps,
        None if wrt is None else frozenset(wrt),
        truncate,
        None if passes is None else tuple(passes),
    )
    plans = _PLANS.setdefault(cell, {})
    plan = plans.get(key)
    if plan is None:
        if len(plans) >= 256:
            plans.pop(next(iter(plans)))
        plan = plans[key] = compile_plan(cell, steps, wrt=wrt, truncate=truncate, passes=passes)
    return plan


_PLANS: weakref.WeakKeyDictionary[Cell, dict[tuple[object, ...], Plan]] = (
    weakref.WeakKeyDictionary()
)
