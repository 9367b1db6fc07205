"""Compiling an unrolled graph into a plan, and running it forward and backward.

``compile_plan(cell, T)`` unrolls the cell with networkx once, sorts the
unrolled graph topologically (``lexicographical_topological_sort`` keyed by
step and name, so the order is deterministic), finds the nodes that lie
between the requested sources (parameters, inputs, initial states) and the
loss or outputs, and writes a **plan**: a flat list of instructions over named
buffers. The backward list is the forward list reversed, restricted to the
nodes that lie on a path to the loss, each instruction applying the node's
local derivative (``vjp``) and adding the result into its inputs' gradient
buffers, so that fan-out is summed and each parameter's gradient is summed
over all steps.

Buffers are one array per cell value with the time steps stacked:
``(T, B, *features)`` for inputs and per-step nodes, ``(T + 1, B, *features)``
for states (index 0 is the initial state, index T the final one), the
parameter's own shape for parameters and parameter-only nodes. An instruction
at step t reads and writes the views ``buffer[t]``. A plan is bound once per
(batch size, masked or not) into a workspace (``minigrad.runtime.workspace``):
preallocated buffers and tuples of views, so running a batch does no networkx
or dictionary work per node.

Graph passes (``passes=``, see ``minigrad.passes``) work at three levels:
cell rewrites before unrolling (merged GEMMs, folded biases, fused siblings),
schedules of the symbolic instruction list (``Instr`` over ``BufRef`` views:
time batching, deferred weight gradients), and choices made when a workspace
is bound (views, shared and reused buffers, precomputed Jacobians, flat
ufunc calls). Whatever the passes, a backward pass does the same thing: it
seeds the loss (and given output gradients), then runs the bound calls, in
which the first write into each gradient region assigns and later ones add.
``passes=()`` gives the plain plan, one instruction per node and step, which
the tests use as the reference.

Masks: with ``mask`` (T, B) given, a padded step (mask 0) carries each state
unchanged, its loss terms count zero, its outputs come back as zeros and any
gradient given for them is ignored, so padding changes neither the loss, the
gradients nor the carried state. Padded steps are still computed, and their
results multiplied by zero (or not selected): inputs must be finite on padded
steps too (fill them with zeros), since 0 * NaN is NaN and one NaN or
infinity in the padding makes the whole loss and every gradient NaN.

Truncation: with ``truncate=k`` the state adjoint is not propagated across
the state edges into steps k, 2k, ... (< T), counted from step 0 of the padded
time axis: fixed windows ``[0, k)``, ``[k, 2k)``, ..., each differentiated
from the detached state the previous one left, the forward pass unchanged.
This is not the textbook TBPTT(k), where every step's loss sees k steps back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from minigrad.cell import Cell
from minigrad.errors import ArgumentError, GraphError, ShapeError, check_names
from minigrad.passes import (
    classify,
    defer_shared_grads,
    resolve,
    rewrite,
    share_add_grads,
    time_batch,
    view_slices,
)
from minigrad.runtime import execute
from minigrad.runtime.instr import ALL_STEPS, PREFIX, BufRef, Instr
from minigrad.runtime.workspace import Gradients, Run, Workspace
from minigrad.types import Array, BoolArray
from minigrad.unroll import SHARED, Key, reachable, unroll

__all__ = [
    "MAX_PLAN_NODE_STEPS",
    "MAX_PLAN_STEPS",
    "BufRef",
    "Gradients",
    "Instr",
    "Plan",
    "Run",
    "Stepper",
    "compile_plan",
    "plan_steps_limit",
]

# --------------------------------------------------------------------------
# compiling


class Plan:
    """A compiled plan for one cell and one number of steps.

    Build it with ``compile_plan`` (or ``minigrad.plan_of``, cached). Attributes:
    ``cell`` (the cell after the graph passes), ``source`` (the cell as built),
    ``steps`` (T), ``graph`` (the unrolled networkx graph of ``cell``),
    ``order`` (its topological order), ``forward_instrs`` and
    ``backward_instrs`` (the symbolic instruction lists), ``wrt`` (names whose
    gradients are computed), ``truncate``, ``passes`` (the passes applied, in
    the order they apply), ``views`` (Slice nodes bound as views: name ->
    (source, start, stop)) and ``shared_grads`` (inputs sharing an Add's
    gradient buffer: name -> that Add).
    """

    def __init__(
        self,
        cell: Cell,
        steps: int,
        graph: nx.DiGraph,  # type: ignore[type-arg]
        order: list[Key],
        forward_instrs: list[Instr],
        backward_instrs: list[Instr],
        wrt: frozenset[str],
        truncate: int | None,
        *,
        views: dict[str, tuple[str, int, int]] | None = None,
        source: Cell | None = None,
        passes: tuple[str, ...] = (),
        shared_grads: dict[str, str] | None = None,
    ) -> None:
        self.cell = cell
        self.source = source if source is not None else cell
        self.views = views or {}
        self.passes = passes
        self.shared_grads = shared_grads or {}
        self.steps = steps
        self.graph = graph
        self.order = order
        self.forward_instrs = forward_instrs
        self.backward_instrs = backward_instrs
        self.wrt = wrt
        self.truncate = truncate
        self._workspaces: dict[tuple[int, bool], Workspace] = {}

    def __repr__(self) -> str:
        return (
            f"Plan(cell='{self.cell.name}', steps={self.steps}, "
            f"forward={len(self.forward_instrs)}, backward={len(self.backward_instrs)})"
        )

    # -- running ------------------------------------------------------------

    def _workspace(self, batch: int, masked: bool) -> Workspace:
        key = (batch, masked)
        ws = self._workspaces.get(key)
        if ws is None:
            if len(self._workspaces) >= 8:
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = Workspace(self, batch, masked)
            self._workspaces[key] = ws
        return ws

    def forward(
        self,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array] | None = None,
        mask: Array | BoolArray | None = None,
    ) -> Run:
        """Run the forward pass.

        Args:
            params: every parameter of the cell, ``{name: array of its shape}``,
                exactly the cell's dtypes.
            inputs: every input, ``{name: (T, B, *features)}``.
            states: optional initial states ``{name: (B, *features)}``; missing
                ones take the cell's default initial value.
            mask: optional (T, B) array, 1 (or True) on real steps, 0 on padding.

        Returns:
            A ``Run`` with the loss, the outputs and the final states.
        """
        batch = self._batch_size(inputs, states)
        ws = self._workspace(batch, mask is not None)
        return ws.forward(params, inputs, states or {}, mask)

    def backward(
        self,
        run: Run,
        grad_outputs: Mapping[str, Array] | None = None,
        loss_scale: float = 1.0,
    ) -> Gradients:
        """Backpropagate through time from the loss (times ``loss_scale``) and from
        ``grad_outputs`` (``{output name: (T, B, *features)}``, the gradient of some
        outer loss with respect to the outputs).

        Returns:
            A fresh ``Gradients``; the plan keeps nothing of it, so calling
            ``backward`` again on the same run gives the same numbers.
        """
        ws = self._workspaces.get((run.batch, run.masked))
        if ws is None or ws.generation != run._generation:
            raise GraphError(
                f"cell '{self.cell.name}': this forward result was overwritten by a later "
                "forward pass of the same plan and batch size; call backward before the next "
                "forward"
            )
        return ws.backward(grad_outputs or {}, loss_scale)

    def loss_and_grads(
        self,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array] | None = None,
        mask: Array | BoolArray | None = None,
    ) -> tuple[float, Gradients]:
        """Forward then backward; returns ``(loss, gradients)`` (no outputs are copied)."""
        batch = self._batch_size(inputs, states)
        ws = self._workspace(batch, mask is not None)
        run = ws.forward(params, inputs, states or {}, mask, with_outputs=False)
        return run.loss, self.backward(run)

    def first_nonfinite(self, run: Run) -> tuple[str, int] | None:
        """The first node (in forward order) whose value holds a NaN or an infinity,
        as ``(name, step)`` (step -1 for parameter-only nodes), or None."""
        ws = self._workspaces.get((run.batch, run.masked))
        if ws is None:
            return None
        if not self.passes:
            return ws.first_nonfinite()
        # buffers shared by in-place nodes no longer hold every value: run the pass again
        # on the plain plan of the cell as built, with the same parameters, inputs,
        # initial states and mask
        cell = self.source
        plain = compile_plan(cell, self.steps, passes=())
        params = {p: ws.bufs["param:" + p] for p in cell.params}
        inputs = {i: ws.bufs["in:" + i] for i in cell.inputs}
        states = {s: ws.bufs["state:" + s][0] for s in cell.states}
        with np.errstate(all="ignore"):
            again = plain.forward(params, inputs, states, ws.mask if ws.masked else None)
        return plain.first_nonfinite(again)

    def stepper(
        self,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array] | None = None,
    ) -> Stepper:
        """A :class:`Stepper` that runs this one-step plan again and again, each step
        starting from the states the previous one left (generation, one step at a time).

        Args: as for :meth:`forward`; ``inputs`` are ``{name: (1, B, *features)}``,
        checked and loaded once (the stepper's :meth:`Stepper.input` buffers are
        then changed in place between steps).

        Raises:
            ArgumentError: the plan is not of one step.
            ShapeError, DTypeError, GraphError, NonFiniteError: as :meth:`forward`.
        """
        return Stepper(self, params, inputs, states)

    def _batch_size(self, inputs: Mapping[str, Array], states: Mapping[str, Array] | None) -> int:
        cname = self.cell.name
        for name in self.cell.inputs:
            if name in inputs:
                arr = inputs[name]
                if getattr(arr, "ndim", 0) < 2:
                    raise ShapeError(
                        f"cell '{cname}': input '{name}' must have shape (T, B, ...), got "
                        f"{getattr(arr, 'shape', type(arr).__name__)}"
                    )
                if arr.shape[1] < 1:
                    raise ShapeError(
                        f"cell '{cname}': input '{name}' has an empty batch (B = 0): "
                        "give at least one sequence"
                    )
                return int(arr.shape[1])
        for name in self.cell.states:
            if states and name in states:
                if np.shape(states[name])[0] < 1:
                    raise ShapeError(
                        f"cell '{cname}': initial state '{name}' has an empty batch (B = 0): "
                        "give at least one sequence"
                    )
                return int(np.shape(states[name])[0])
        if not self.cell.inputs:
            raise ShapeError(
                f"cell '{cname}' has no inputs: give initial states for the batch size"
            )
        missing = [n for n in self.cell.inputs if n not in inputs]
        raise GraphError(
            f"cell '{cname}': missing input(s) {missing}; expected {list(self.cell.inputs)}"
        )


def _buffer_names(cell: Cell) -> dict[str, tuple[str, bool]]:
    """For every declared name: its buffer and whether that buffer is indexed by step."""
    return {
        n: (PREFIX[cell.kind(n)] + n, not cell.shared(n))
        for n in (*cell.params, *cell.inputs, *cell.states, *cell.ops)
    }


MAX_PLAN_STEPS = 10_000
"""The most steps of one plan (``compile_plan``, ``plan_of``). A loop program
(``minigrad.compile``) runs any T."""

MAX_PLAN_NODE_STEPS = 100_000
"""The most nodes times steps of one plan: the full unroll takes about 3 KB per node and
step to compile and bind (a 50-node cell over 10,000 steps took 1.6 GB), so this
keeps a plan near 300 MB."""


def plan_steps_limit(cell: Cell) -> int:
    """The most steps a plan of ``cell`` may unroll (at least 1)."""
    return max(1, min(MAX_PLAN_STEPS, MAX_PLAN_NODE_STEPS // max(1, len(cell.ops))))


def compile_plan(
    cell: Cell,
    steps: int,
    wrt: Iterable[str] | None = None,
    truncate: int | None = None,
    passes: Sequence[str] | None = None,
    *,
    rewritten: Cell | None = None,
    steady: bool = False,
) -> Plan:
    """Unroll ``cell`` for ``steps`` steps and compile it into a ``Plan``.

    Args:
        cell: a built ``Cell``.
        steps: T >= 1.
        wrt: names of parameters, inputs and states whose gradients are wanted
            (default: all of them).
        truncate: optional BPTT window (see the module docstring).
        passes: names of the graph passes to apply (``minigrad.passes``);
            ``None`` applies ``DEFAULT_PASSES``, ``()`` none: the plain plan,
            one instruction per node and step.
        rewritten: ``cell`` after the cell-level passes among ``passes``
            (``minigrad.passes.rewrite``; ``Plan.cell`` of an earlier plan with
            the same passes), when the caller has it: the rewrites then do not
            run again (a program compiles several short unrolls of one cell).
        steady: differentiate every step alike: a node whose gradient is needed at
            one step gets it at every step (the template of a loop program, whose
            one step body runs at every step). Without it each step does only what
            that step needs: near the ends of a short unroll (or of a truncation
            window) a step needs less than a step in the middle of a long one, and
            with states that feed one another in turn it may need something else.
    """
    where = f"cell '{cell.name}': "
    if isinstance(steps, int) and not isinstance(steps, bool):
        most = plan_steps_limit(cell)
        if steps > most:
            raise ArgumentError(
                f"{where}a plan of {steps:,} steps: a plan unrolls a copy of the cell's "
                f"{len(cell.ops)} nodes per step (kilobytes each), and is compiled for at "
                f"most {MAX_PLAN_NODE_STEPS:,} node-steps and {MAX_PLAN_STEPS:,} steps: "
                f"{most:,} steps for this cell; minigrad.compile(cell) runs any number of "
                "steps with one compiled step"
            )
    names = resolve(passes, where)
    source = cell
    sources = set(cell.params) | set(cell.inputs) | set(cell.states)
    want = frozenset(sources) if wrt is None else check_names(wrt, "wrt", where)
    unknown = sorted(want - sources)
    if unknown:
        raise GraphError(
            f"cell '{cell.name}': cannot differentiate with respect to {unknown}; valid: "
            f"{sorted(sources)}"
        )
    cell = rewrite(cell, names) if rewritten is None else rewritten
    g = unroll(cell, steps, truncate)
    order: list[Key] = list(nx.lexicographical_topological_sort(g, key=lambda k: (k[1], k[0])))

    # the nodes between the sources and the loss / outputs
    starts: list[Key] = []
    for name in want:
        kind = cell.kind(name)
        if kind == "param":
            starts.append((name, SHARED))
        elif kind == "input":
            starts.extend((name, t) for t in range(steps))
        else:
            starts.append((name, 0))
    sinks = [(n, t) for n in (*cell.losses, *cell.outputs.values()) for t in range(steps)]
    sinks = [k for k in sinks if k in g]
    # a padded step keeps the old state: (s, t - 1) -> (s, t) is an edge of the computation
    # when a mask is given, although the unrolled graph (one step of the cell) has none
    g_rel = g
    if cell.states:
        g_rel = g.copy()
        for sname in cell.states:
            for t in range(1, steps + 1):
                if not g_rel.has_edge((sname, t - 1), (sname, t)):
                    cut = truncate is not None and t % truncate == 0 and t < steps
                    g_rel.add_edge((sname, t - 1), (sname, t), hold=True, truncated=cut)
    down = reachable(g_rel, starts, forward=True)
    # truncated state edges carry no gradient: walk back without them
    g_back = g_rel
    if truncate is not None:
        g_back = g_rel.copy()
        g_back.remove_edges_from(
            [(u, v) for u, v, d in g_rel.edges(data=True) if d.get("truncated")]
        )
    up = reachable(g_back, sinks, forward=False)
    relevant = down & up
    if steady:
        # a node is relevant at every step if some path, over any number of steps, runs
        # from a source through it to a loss or an output: the graph folded onto names.
        # The union over the steps of this unroll would not do: a path may need more
        # steps than it has (a state that reaches the loss through another state), or
        # reach a node at odd steps and leave it at even ones (states that swap). A
        # node differentiated at a step that does not need it gets exact values (or
        # zeros) in buffers nothing reads; one left out would lose gradient.
        folded: nx.DiGraph = nx.DiGraph()  # type: ignore[type-arg]
        folded.add_nodes_from((k[0], 0) for k in g_rel.nodes)
        folded.add_edges_from(((u[0], 0), (v[0], 0)) for u, v in g_rel.edges)
        live = reachable(folded, {(k[0], 0) for k in starts}, forward=True) & reachable(
            folded, {(k[0], 0) for k in sinks}, forward=False
        )
        relevant = {k for k in g_rel.nodes if (k[0], 0) in live}

    bufname = _buffer_names(cell)

    def ref(name: str, t: int) -> BufRef:
        b, per_step = bufname[name]
        return BufRef(b, t) if per_step else BufRef(b)

    def key(name: str, t: int) -> Key:
        return (name, t) if bufname[name][1] else (name, SHARED)

    kinds = {n: cell.kind(n) for n in bufname}
    phase = classify(cell)
    batched = time_batch.batched(cell) if time_batch.PASS.name in names else frozenset()
    static_f: list[Instr] = []
    loop_f: list[Instr] = []
    groups: dict[str, list[Instr]] = {}
    for k in order:
        name, t = k
        kind = kinds[name]
        if kind == "op":
            spec = cell.ops[name]
            ins = tuple(ref(r, t) for r in spec.inputs)
            back = k in relevant
            needs = tuple(key(r, t) in relevant for r in spec.inputs) if back else ()
            instr = Instr("op", name, t, spec.op, ins, ref(name, t), back, needs)
            if spec.static:
                static_f.append(instr)
            elif name in batched:
                groups.setdefault(name, []).append(instr)
            else:
                loop_f.append(instr)
        elif kind == "state" and t >= 1:
            upd = cell.states[name].update
            src_key = key(upd, t - 1)
            back = k in relevant and src_key in g_back.pred[k]
            ins = (ref(upd, t - 1), BufRef("state:" + name, t - 1))
            needs = (src_key in relevant, (name, t - 1) in relevant) if back else ()
            loop_f.append(
                Instr("carry", name, t, None, ins, BufRef("state:" + name, t), back, needs)
            )

    everything = (0, steps)

    def over_all_steps(group: list[Instr], kind: str = "op") -> Instr:
        first = group[0]
        ins = tuple(BufRef(r.buffer, everything) if r.index is not None else r for r in first.ins)
        back = any(i.backward for i in group)
        needs = (
            tuple(any(i.needs[j] for i in group if i.backward) for j in range(len(ins)))
            if back
            else ()
        )
        out = BufRef(first.out.buffer, everything)
        return Instr(kind, first.name, ALL_STEPS, first.op, ins, out, back, needs)

    pre_f = [over_all_steps(groups[n]) for n in cell.order if n in groups and phase[n] == "pre"]
    post_f = [over_all_steps(groups[n]) for n in cell.order if n in groups and phase[n] == "post"]

    # gradients with respect to shared values, once after the loop
    deferred: list[Instr] = []
    if defer_shared_grads.PASS.name in names:
        deferred = defer_shared_grads.defer(loop_f, cell.order, over_all_steps)

    fwd = static_f + pre_f + loop_f + post_f
    bwd = [
        i
        for i in (
            *reversed(post_f),
            *reversed(loop_f),
            *deferred,
            *reversed(pre_f),
            *reversed(static_f),
        )
        if i.backward
    ]
    views: dict[str, tuple[str, int, int]] = {}
    if view_slices.PASS.name in names:
        views = view_slices.views(cell)
    shared_grads: dict[str, str] = {}
    if share_add_grads.PASS.name in names:
        shared_grads = share_add_grads.shared_grads(cell, views)
    return Plan(
        cell,
        steps,
        g,
        order,
        fwd,
        bwd,
        want,
        truncate,
        views=views,
        source=source,
        passes=names,
        shared_grads=shared_grads,
    )


class Stepper:
    """A one-step plan bound once and run step after step, the final states of each
    step becoming the initial states of the next.

    ``Plan.forward`` checks and copies the parameters, the inputs and the states
    into its buffers, and copies the outputs and the final states out, at every
    call: for a plan of one step run a million times (sampling a song) that
    bookkeeping costs several times the step itself. A stepper does it once: the
    parameters and inputs given are checked and loaded when it is made; between
    steps the caller writes the next inputs into the live buffers of
    :meth:`input`, and reads a step's outputs from the live buffers of
    :meth:`output`. The numbers are those of ``Plan.forward`` given the same
    parameters, inputs and the previous run's final states, bit for bit.

    The stepper has its own workspace: the plan's own forward passes do not
    disturb it. Parameters are copied when it is made; changing the caller's
    arrays afterwards does not reach it.
    """

    def __init__(
        self,
        plan: Plan,
        params: Mapping[str, Array],
        inputs: Mapping[str, Array],
        states: Mapping[str, Array] | None = None,
    ) -> None:
        cell = plan.cell
        if plan.steps != 1:
            raise ArgumentError(
                f"cell '{cell.name}': a stepper runs a plan of one step, this one has "
                f"{plan.steps}"
            )
        self.plan = plan
        self._ws = Workspace(plan, plan._batch_size(inputs, states), False)
        execute.load(
            cell,
            self._ws.bufs,
            1,
            self._ws.batch,
            (self._ws.mask, self._ws.mask_col, self._ws.mask_bool),
            params,
            inputs,
            states or {},
            None,
        )
        bufs = self._ws.bufs
        # (row 0: the step's initial state, row 1: the state it leaves)
        self._carry = [(bufs["state:" + s][0], bufs["state:" + s][1]) for s in cell.states]
        # The first step runs every call. The later ones skip the static nodes (they
        # read parameters only, which do not change) and the nodes neither an output
        # nor a state update depends on (the loss terms): their buffers keep the
        # first step's values, and nothing that is read changes.
        leaving = [*cell.outputs.values(), *(spec.update for spec in cell.states.values())]
        needed = _needed_for(cell, leaving)
        self._first = self._ws.fwd
        self._calls = [
            call
            for ins, lo, hi in self._ws.fwd_spans
            if ins.kind == "carry" or (ins.name in needed and not cell.ops[ins.name].static)
            for call in self._ws.fwd[lo:hi]
        ]
        self.steps = 0

    def input(self, name: str) -> Array:
        """The live ``(1, B, *features)`` buffer of input ``name``: write the next
        step's input into it (``buf[0] = ...``) before :meth:`step`."""
        if name not in self.plan.cell.inputs:
            raise GraphError(
                f"cell '{self.plan.cell.name}': no input '{name}'; inputs are "
                f"{list(self.plan.cell.inputs)}"
            )
        return self._ws.bufs["in:" + name]

    def output(self, name: str) -> Array:
        """The live ``(1, B, *features)`` buffer of output ``name``, holding the last
        step's value until the next :meth:`step` (copy it to keep it)."""
        cell = self.plan.cell
        if name not in cell.outputs:
            raise GraphError(
                f"cell '{cell.name}': no output '{name}'; outputs are {list(cell.outputs)}"
            )
        node = cell.outputs[name]
        arr = self._ws.bufs[PREFIX[cell.kind(node)] + node]
        return arr[1:] if cell.kind(node) == "state" else arr

    def step(self) -> None:
        """Run one step: from the states the previous step left (or the initial ones)
        and the inputs in the :meth:`input` buffers."""
        if self.steps:
            for initial, final in self._carry:
                np.copyto(initial, final)
        calls = self._calls if self.steps else self._first
        # exp() overflowing to inf inside a sigmoid is exact (1 / inf = 0): not worth a warning
        with np.errstate(over="ignore"):
            for fn, args in calls:
                fn(*args)
        self.steps += 1

    def states(self) -> dict[str, Array]:
        """Copies of the states the last step left, ``{name: (B, *features)}``."""
        names = self.plan.cell.states
        return {s: final.copy() for s, (_, final) in zip(names, self._carry, strict=True)}


def _needed_for(cell: Cell, roots: Iterable[str]) -> set[str]:
    """The operations whose values the nodes ``roots`` depend on within one step
    (``roots`` included, when they are operations)."""
    needed: set[str] = set()
    todo = [r for r in roots if r in cell.ops]
    while todo:
        n = todo.pop()
        if n in needed:
            continue
        needed.add(n)
        todo.extend(r for r in cell.ops[n].inputs if r in cell.ops)
    return needed
