"""How a parameter's gradient is assembled, read off the unrolled graph.

``explain(cell, param, steps)`` unrolls ``cell`` (``minigrad.unroll.unroll``)
and describes backpropagation through time for one parameter in the terms of
that graph, for any cell, with nothing written per cell type:

* the loss is the sum over steps of the loss terms, and the parameter's
  gradient is the sum of one local contribution per *use* of the parameter
  (per node that reads it, per input slot), each given by the local
  derivative text of the node class (``Node.derivatives``);
* for each step t, the paths of the unrolled graph from the loss terms at
  step t back to the parameter, with node names and node types, including
  the paths that reach earlier steps through state edges; the paths are
  enumerated iteratively (shortest and least time-travelling first), capped
  per step, and counted exactly by dynamic programming;
* the shared sub-expressions: the adjoint ``dL/ds_t`` of every state ``s`` at
  every step, its recurrence in terms of the nodes of the unrolled graph, and
  the fact that it is computed once per step in the reverse topological pass
  and reused by the gradient of every parameter.

``explain_all(cell, steps)`` does the same for every parameter of the cell.

Steps are numbered as in the unrolled graph: the nodes of step t are keyed
``(name, t)`` and written ``name@t`` for t in ``0 .. T-1``; the state node
``s@t`` is the value of state ``s`` that step t reads (``s@0`` the initial
state, ``s@T`` the final one); parameters are shared by all steps and are
written by name alone.
"""

from __future__ import annotations

import difflib
import heapq
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise

import networkx as nx

from minigrad.cell import Cell
from minigrad.errors import ArgumentTypeError, GraphError, check_count
from minigrad.nodes import Node
from minigrad.unroll import SHARED, Key, key_of, reachable, unroll

__all__ = ["explain", "explain_all"]

DEFAULT_MAX_PATHS = 8
"""How many paths ``explain`` prints per step unless told otherwise."""

_MAX_EXPANSIONS = 200_000
"""Safety bound on the partial paths the path search expands for one loss term."""

_INDENT = "  "


# --------------------------------------------------------------------------
# the unrolled graph and how its nodes are written


@dataclass
class _Graph:
    """The unrolled graph of a cell with the lookups every section needs."""

    cell: Cell
    steps: int
    g: nx.DiGraph  # type: ignore[type-arg]
    order: list[Key]
    rank: dict[Key, int]
    losses_by_step: dict[int, list[Key]]
    up: set[Key] = field(default_factory=set)

    def label(self, k: Key) -> str:
        """``name@t`` for per-step nodes, ``name`` for shared ones."""
        name, step = k
        return name if step == SHARED else f"{name}@{step}"

    def kind(self, k: Key) -> str:
        """The node's kind in the unrolled graph (param, input, state, op)."""
        kind: str = self.g.nodes[k]["kind"]
        return kind

    def op(self, k: Key) -> Node:
        """The typed node of an operation."""
        op: Node = self.g.nodes[k]["op"]
        return op

    def type_name(self, k: Key) -> str:
        """The node type, or what the value is for non-operations."""
        kind = self.kind(k)
        if kind == "op":
            op = self.op(k)
            text = type(op).__name__
            extra = op.params_repr()
            if extra:
                text += f"({extra})"
            if k[1] == SHARED:
                text += ", shared"
            return text
        if kind == "state":
            if k[1] == 0:
                return "initial state"
            if k[1] == self.steps:
                return "final state"
            return "state"
        if kind == "param":
            return "parameter"
        return kind

    def typed(self, k: Key) -> str:
        """``name@t (Type)``."""
        return f"{self.label(k)} ({self.type_name(k)})"

    def is_carry(self, u: Key, v: Key) -> bool:
        """Whether the edge u -> v is a state edge (update node -> next state)."""
        return bool(self.g.edges[u, v].get("carry", False))

    def preds_sorted(self, k: Key) -> list[Key]:
        """Predecessors in a deterministic order: states last, later steps first, then by name."""
        return sorted(self.g.pred[k], key=lambda q: (self.kind(q) == "state", -q[1], q[0]))


def _build(cell: Cell, steps: int) -> _Graph:
    check_count(steps, "steps", 1, f"cell '{cell.name}': ")
    g = unroll(cell, steps)
    order: list[Key] = list(nx.lexicographical_topological_sort(g, key=lambda k: (k[1], k[0])))
    rank = {k: i for i, k in enumerate(order)}
    losses_by_step: dict[int, list[Key]] = {t: [] for t in range(steps)}
    for t in range(steps):
        for name in cell.losses:
            k = key_of(cell, name, t)
            if k in g:
                losses_by_step[t].append(k)
    ug = _Graph(cell, steps, g, order, rank, losses_by_step)
    ug.up = reachable(g, [k for ks in losses_by_step.values() for k in ks], forward=False)
    return ug


def _check_param(cell: Cell, param: str) -> None:
    if not isinstance(param, str):
        raise ArgumentTypeError(
            f"cell '{cell.name}': param must be a parameter name (a string), got {param!r}"
        )
    if param in cell.params:
        return
    valid = list(cell.params)
    if not valid:
        raise GraphError(f"cell '{cell.name}' has no parameters, so '{param}' is not one")
    what = ""
    if isinstance(param, str) and param in cell.graph:
        what = f" ('{param}' is {'an' if cell.kind(param) in ('input', 'op') else 'a'} "
        what += f"{'operation' if cell.kind(param) == 'op' else cell.kind(param)})"
    lowered = {v.lower(): v for v in valid}
    close = [lowered[c] for c in difflib.get_close_matches(str(param).lower(), lowered, n=3)]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise GraphError(
        f"cell '{cell.name}': '{param}' is not a parameter{what}{hint} "
        f"(valid parameters: {', '.join(valid)})"
    )


def _derivative(op: Node, slot: int) -> str:
    """The derivative text of ``op`` for input ``slot`` (variadic nodes share one text)."""
    ders = op.derivatives
    if slot < len(ders):
        return ders[slot]
    if ders and op.arity is None:
        return ders[-1]
    return f"(no derivative text given by {type(op).__name__})"


def _input_keys(ug: _Graph, k: Key) -> list[Key]:
    """The sources of every input slot of the operation ``k``, in slot order."""
    name, step = k
    return [key_of(ug.cell, r, step) for r in ug.cell.ops[name].inputs]


def _slots(ug: _Graph, src: Key, dst: Key) -> list[int]:
    slots: list[int] = ug.g.edges[src, dst].get("slots", [])
    return list(slots)


def _count(n: int) -> str:
    """An exact count, or its order of magnitude when it is too long to read."""
    if n < 10**15:
        return str(n)
    shift = max(n.bit_length() - 60, 0)  # huge ints overflow floats and the str() limit
    exp10 = math.log10(n >> shift) + shift * math.log10(2)
    exponent = math.floor(exp10)
    return f"about {10 ** (exp10 - exponent):.2f}e{exponent}"


def _topo(ug: _Graph, keys: Iterable[Key]) -> list[Key]:
    return sorted(keys, key=lambda k: ug.rank[k])


def _listing(ug: _Graph, keys: Iterable[Key], limit: int = 40) -> str:
    ks = _topo(ug, keys)
    text = ", ".join(ug.typed(k) for k in ks[:limit])
    if len(ks) > limit:
        text += f", ... ({len(ks) - limit} more)"
    return text or "(none)"


# --------------------------------------------------------------------------
# paths


def _count_paths(ug: _Graph, target: Key, allowed: set[Key], carry: bool) -> dict[Key, int]:
    """For every node in ``allowed``: the number of paths from it back to ``target``.

    Computed in topological order (no recursion); with ``carry=False`` the
    state edges are not followed (paths that stay within one step).
    """
    counts: dict[Key, int] = {}
    for k in ug.order:
        if k not in allowed:
            continue
        if k == target:
            counts[k] = 1
            continue
        total = 0
        for q in ug.g.pred[k]:
            if q in counts and (carry or not ug.is_carry(q, k)):
                total += counts[q]
        counts[k] = total
    return counts


def _paths(ug: _Graph, start: Key, target: Key, allowed: set[Key]) -> Iterator[list[Key]]:
    """Paths from ``start`` back to ``target`` (against the edges), through ``allowed`` only.

    Best-first with an explicit heap: fewest state edges crossed first, then
    shortest, then the order of ``_Graph.preds_sorted``. Every node in
    ``allowed`` reaches ``target``, so every partial path completes.
    """
    counter = 0
    heap: list[tuple[int, int, int, tuple[Key, ...]]] = [(0, 1, counter, (start,))]
    expansions = 0
    while heap and expansions < _MAX_EXPANSIONS:
        crossings, length, _c, path = heapq.heappop(heap)
        last = path[-1]
        if last == target:
            yield list(path)
            continue
        expansions += 1
        for q in ug.preds_sorted(last):
            if q not in allowed:
                continue
            counter += 1
            cross = crossings + (1 if ug.is_carry(q, last) else 0)
            heapq.heappush(heap, (cross, length + 1, counter, (*path, q)))


def _path_text(ug: _Graph, path: list[Key], param: str) -> str:
    parts = [ug.typed(k) for k in path[:-1]]
    parts.append(param)
    return " -> ".join(parts)


def _hop_derivatives(ug: _Graph, path: list[Key]) -> list[tuple[str, str]]:
    """The local derivative applied at every hop of a path (consumer -> its input)."""
    out: list[tuple[str, str]] = []
    for consumer, source in pairwise(path):
        if ug.is_carry(source, consumer):
            out.append(
                (
                    f"state edge {ug.label(source)} -> {ug.label(consumer)}",
                    f"{_gradient_name(ug, source)} += {_gradient_name(ug, consumer)} "
                    "(identity copy)",
                )
            )
            continue
        op = ug.op(consumer)
        for i in _slots(ug, source, consumer):
            out.append((f"{type(op).__name__}, slot '{op.slot(i)}'", _derivative(op, i)))
    return out


# --------------------------------------------------------------------------
# per-step sinks of a node: which loss terms and next states its gradient collects


def _sinks_within_step(ug: _Graph, k: Key) -> tuple[list[Key], list[Key]]:
    """Loss terms of k's step reachable from k without a state edge, and the states of
    the next step reached through a state edge (their adjoints feed k's gradient)."""
    losses: set[Key] = set()
    states: set[Key] = set()
    seen = {k}
    stack = [k]
    while stack:
        u = stack.pop()
        if ug.g.nodes[u]["role"] == "loss":
            losses.add(u)
        for v in ug.g.succ[u]:
            if ug.is_carry(u, v):
                states.add(v)
                continue
            if v not in seen and v in ug.up:
                seen.add(v)
                stack.append(v)
    return _topo(ug, losses), _topo(ug, states)


def _between(ug: _Graph, src: Key, dst: Key) -> set[Key]:
    """Nodes on paths src -> dst that use no state edge (src and dst excluded)."""

    def walk(start: Key, forward: bool) -> set[Key]:
        seen = {start}
        stack = [start]
        while stack:
            u = stack.pop()
            nbrs = ug.g.succ[u] if forward else ug.g.pred[u]
            for v in nbrs:
                edge = (u, v) if forward else (v, u)
                if v not in seen and not ug.is_carry(*edge):
                    seen.add(v)
                    stack.append(v)
        return seen

    return (walk(src, True) & walk(dst, False)) - {src, dst}


# --------------------------------------------------------------------------
# sections


def _gradient_name(ug: _Graph, k: Key) -> str:
    if ug.kind(k) == "state":
        return f"dL/d{k[0]}_{k[1]}"
    return f"dL/d({ug.label(k)})"


def _loss_line(ug: _Graph) -> str:
    cell = ug.cell
    if not cell.losses:
        return f"Cell '{cell.name}' declares no loss terms, so L = 0 and every gradient is 0."
    terms = " + ".join(f"{name}@t" for name in cell.losses)
    return (
        f"L = sum over t = 0..{ug.steps - 1} of {terms} "
        "(each loss term summed over the batch); the reverse pass starts from "
        "dL/d(loss term) = 1 for every row of every step."
    )


def _contributions(ug: _Graph, param: str) -> list[str]:
    pk: Key = (param, SHARED)
    uses: list[tuple[Key, int]] = []
    for v in _topo(ug, ug.g.succ[pk]):
        for i in _slots(ug, pk, v):
            uses.append((v, i))
    lines = ["Per-step contributions (summed):"]
    if not uses:
        lines.append(f"{_INDENT}'{param}' is read by no node: dL/d{param} = 0.")
        return lines
    steps_used = sorted({v[1] for v, _i in uses if v[1] != SHARED})
    where = ", ".join(str(t) for t in steps_used) if steps_used else "none (shared nodes only)"
    lines.append(
        f"{_INDENT}dL/d{param} = the sum of {len(uses)} term(s), one per use of '{param}' "
        f"(steps where it is used: {where}):"
    )
    for v, i in uses:
        op = ug.op(v)
        step = "shared" if v[1] == SHARED else f"step {v[1]}"
        lines.append(
            f"{_INDENT * 2}[{step}] {ug.typed(v)}, slot '{op.slot(i)}' (input {i}): "
            f"{_derivative(op, i)}"
        )
        bind = [f"{op.slot(j)} = {ug.label(s)}" for j, s in enumerate(_input_keys(ug, v))]
        bind += [f"y = {ug.label(v)}", f"g = dL/d({ug.label(v)})"]
        lines.append(f"{_INDENT * 4}where {', '.join(bind)}")
        if v not in ug.up:
            lines.append(f"{_INDENT * 4}{ug.label(v)} lies on no path to a loss term: g = 0")
        elif v[1] == SHARED:
            readers = sorted({w[1] for w in ug.g.succ[v]} - {SHARED})
            lines.append(
                f"{_INDENT * 4}g is itself summed over the uses of {ug.label(v)} at steps "
                f"{', '.join(str(t) for t in readers) or '(none)'}"
            )
        else:
            losses, states = _sinks_within_step(ug, v)
            parts = [f"loss term {ug.label(k)} (same step)" for k in losses]
            parts += [
                f"{_gradient_name(ug, s)} (through {ug.label(next(iter(ug.g.pred[s])))} "
                f"-> {ug.label(s)})"
                for s in states
            ]
            lines.append(f"{_INDENT * 4}g collects: {'; '.join(parts) or 'nothing'}")
    return lines


def _step_paths(ug: _Graph, param: str, max_paths: int) -> list[str]:
    pk: Key = (param, SHARED)
    down = reachable(ug.g, [pk], forward=True)
    allowed = down & ug.up
    counts = _count_paths(ug, pk, allowed, carry=True)
    local = _count_paths(ug, pk, allowed, carry=False)
    lines: list[str] = []
    for t in range(ug.steps):
        lines.append(f"Step {t}:")
        terms = ug.losses_by_step[t]
        if not terms:
            lines.append(f"{_INDENT}no loss term at step {t}.")
            continue
        printed = 0
        hidden = 0
        hops: dict[str, str] = {}
        for lk in terms:
            total = counts.get(lk, 0)
            within = local.get(lk, 0)
            if total == 0:
                lines.append(
                    f"{_INDENT}loss term {ug.typed(lk)}: no path back to {param} (contributes 0)"
                )
                continue
            lines.append(
                f"{_INDENT}loss term {ug.typed(lk)}: {_count(total)} path(s) back to {param}, "
                f"{_count(within)} within step {t}, {_count(total - within)} through earlier "
                "steps via state edges"
            )
            shown = 0
            for path in _paths(ug, lk, pk, allowed):
                if printed >= max_paths:
                    break
                printed += 1
                shown += 1
                lines.append(f"{_INDENT * 2}{_path_text(ug, path, param)}")
                for where, text in _hop_derivatives(ug, path):
                    hops.setdefault(where, text)
            hidden += total - shown
        if hidden:
            lines.append(f"{_INDENT * 2}... and {_count(hidden)} more paths")
        if hops:
            lines.append(f"{_INDENT}local derivatives along the paths shown (g = dL/d(output)):")
            for where, text in hops.items():
                lines.append(f"{_INDENT * 2}{where}: {text}")
        entries = _entry_states(ug, t, [lk for lk in terms if counts.get(lk, 0) > local.get(lk, 0)])
        if entries:
            names = ", ".join(ug.label(k) for k in entries)
            adj = ", ".join(_gradient_name(ug, k) for k in entries)
            lines.append(
                f"{_INDENT}the paths through earlier steps leave step {t} through {names}: the "
                f"reverse pass never enumerates them, it adds this step's share into {adj} "
                f"once, and every use of {param} before step {t} reads that shared adjoint "
                "(see below)."
            )
    return lines


def _entry_states(ug: _Graph, t: int, terms: list[Key]) -> list[Key]:
    """The state nodes of step t from which some of ``terms`` can be reached within step t."""
    out: list[Key] = []
    if not terms:
        return out
    wanted = set(terms)
    for sname in ug.cell.states:
        sk: Key = (sname, t)
        if t >= 1 and sk in ug.up and wanted & set(_sinks_within_step(ug, sk)[0]):
            out.append(sk)
    return out


def _state_adjoints(ug: _Graph) -> list[str]:
    cell = ug.cell
    lines = ["Shared state adjoints (computed once, reused by every parameter):"]
    if not cell.states:
        lines.append(f"{_INDENT}cell '{cell.name}' has no states: the steps are independent.")
        return lines
    params = ", ".join(cell.params) or "(none)"
    lines.append(
        f"{_INDENT}dL/ds_t is the gradient arriving at the state node s@t from everything "
        "downstream in the unrolled graph. Recurrence:"
    )
    lines.append(
        f"{_INDENT * 2}dL/ds_t = (loss terms at step t, back through the nodes of step t that "
        "read s@t) + (dL/ds'_(t+1) for each state s' whose update at step t reads s@t, "
        "carried back along the state edge and through those nodes)"
    )
    lines.append(
        f"{_INDENT}Each dL/ds_t is computed once per step, in the reverse topological pass "
        f"over the unrolled graph, and shared by the gradients of all parameters ({params}) "
        "and of the inputs; dL/ds_0 is the gradient of the initial state."
    )
    for sname in cell.states:
        for t in range(ug.steps, -1, -1):
            sk: Key = (sname, t)
            head = f"{_INDENT}dL/d{sname}_{t}"
            readers = _topo(ug, ug.g.succ[sk])
            if t == ug.steps:
                lines.append(f"{head} = 0    ({ug.label(sk)} is the final state: no node reads it)")
                continue
            if sk not in ug.up:
                lines.append(
                    f"{head} = 0    (no loss term depends on {ug.label(sk)}; read by: "
                    f"{_listing(ug, readers)})"
                )
                continue
            lines.append(
                f"{head} = sum of the terms below, through the nodes of step {t} that read "
                f"{ug.label(sk)}: {_listing(ug, readers)}"
            )
            losses, nexts = _sinks_within_step(ug, sk)
            for lk in losses:
                lines.append(
                    f"{_INDENT * 3}+ direct: loss term {ug.typed(lk)} back through "
                    f"{_listing(ug, _between(ug, sk, lk))}"
                )
            for nk in nexts:
                upd = next(iter(ug.g.pred[nk]))
                via = _between(ug, sk, upd) | ({upd} if upd != sk else set())
                lines.append(
                    f"{_INDENT * 3}+ carried: {_gradient_name(ug, nk)} along the state edge "
                    f"{ug.label(upd)} -> {ug.label(nk)}, back through {_listing(ug, via)}"
                )
    return lines


def _title(ug: _Graph, what: str) -> str:
    return f"dL/d{what} for cell '{ug.cell.name}' unrolled for {ug.steps} steps"


def _check_max_paths(max_paths: int) -> None:
    check_count(max_paths, "max_paths", 0)


def explain(cell: Cell, param: str, steps: int = 2, *, max_paths: int = DEFAULT_MAX_PATHS) -> str:
    """Describe how the gradient of the loss with respect to ``param`` is assembled.

    Everything is read off the graph of ``cell`` unrolled for ``steps`` steps
    and the local derivative texts of its node types; it works for any cell.

    Args:
        cell: a built ``Cell``.
        param: the name of one of its parameters.
        steps: the number of time steps T to unroll (>= 1).
        max_paths: how many paths to print per step; the others are counted.

    Returns:
        Text with a title line ``dL/d<param> for cell '<name>' unrolled for <T> steps``
        and the sections ``Per-step contributions (summed):``, ``Step t:`` for
        every step, and ``Shared state adjoints (computed once, reused by every
        parameter):``.

    Raises:
        ValueError: ``param`` is not a parameter of the cell (the message lists
            the valid names), or ``steps`` or ``max_paths`` is out of range.
    """
    _check_param(cell, param)
    _check_max_paths(max_paths)
    ug = _build(cell, steps)
    lines = [_title(ug, param), _loss_line(ug), ""]
    lines += _contributions(ug, param)
    lines.append("")
    lines += _step_paths(ug, param, max_paths)
    lines.append("")
    lines += _state_adjoints(ug)
    return "\n".join(lines) + "\n"


def explain_all(cell: Cell, steps: int = 2, *, max_paths: int = DEFAULT_MAX_PATHS) -> str:
    """``explain`` for every parameter of ``cell``, with the shared state adjoints once.

    Args:
        cell: a built ``Cell``.
        steps: the number of time steps T to unroll (>= 1).
        max_paths: how many paths to print per step and parameter.

    Returns:
        A title line, then for each parameter its title line, its
        ``Per-step contributions (summed):`` and ``Step t:`` sections, and at
        the end one ``Shared state adjoints (computed once, reused by every
        parameter):`` section.

    Raises:
        ValueError: ``steps`` or ``max_paths`` is out of range.
    """
    _check_max_paths(max_paths)
    ug = _build(cell, steps)
    names = ", ".join(cell.params) or "(none)"
    lines = [
        f"Gradients of every parameter of cell '{cell.name}' unrolled for {steps} steps "
        f"(parameters: {names})",
        _loss_line(ug),
        "",
    ]
    for param in cell.params:
        lines.append(_title(ug, param))
        lines += _contributions(ug, param)
        lines += _step_paths(ug, param, max_paths)
        lines.append("")
    lines += _state_adjoints(ug)
    return "\n".join(lines) + "\n"
