"""Unrolling a cell through time with networkx.

``unroll(cell, T)`` returns a ``networkx.DiGraph`` of the whole computation:

* one copy of every per-step node, input and state for each step ``t`` in
  ``0 .. T-1``, keyed ``(name, t)``;
* parameters, and nodes that depend on parameters only, once, keyed
  ``(name, SHARED)`` with ``SHARED == -1``: every step uses the same node;
* the state ``(s, 0)`` is the initial state; for ``t >= 1`` the state
  ``(s, t)`` has one incoming edge, from ``(update_of_s, t - 1)`` (a *state
  edge*, attribute ``carry=True``); ``(s, T)`` is the final state.

Node attributes: ``name``, ``step``, ``kind`` (``"param"``, ``"input"``,
``"state"``, ``"op"``), ``op`` (the typed node, for operations), ``role``
(``"param"``, ``"input"``, ``"state"``, ``"op"`` or ``"loss"``, for
drawings), ``shape``. Edge attributes: ``slots`` (tuple of the input positions fed),
``carry`` (state edges), ``truncated`` (state edges that BPTT does not cross
when a truncation window is set).

The graph is plain networkx: count its nodes, walk it, draw it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import networkx as nx

from minigrad.cell import Cell
from minigrad.errors import check_count

SHARED = -1
"""The step index of parameters and parameter-only nodes, shared by all steps."""

Key = tuple[str, int]

__all__ = ["SHARED", "Key", "key_of", "reachable", "unroll"]


def key_of(cell: Cell, name: str, step: int) -> Key:
    """The unrolled-graph key of ``name`` as used at ``step``: ``(name, SHARED)`` for
    parameters and parameter-only nodes, ``(name, step)`` otherwise."""
    return (name, SHARED) if cell.shared(name) else (name, step)


def unroll(cell: Cell, steps: int, truncate: int | None = None) -> nx.DiGraph:  # type: ignore[type-arg]
    """The computation of ``steps`` time steps of ``cell`` as a networkx ``DiGraph``.

    Args:
        cell: a built ``Cell``.
        steps: T >= 1.
        truncate: optional BPTT window k; the state edges into steps k, 2k, ...
            (counted from step 0, below T) get ``truncated=True``: fixed windows,
            not a window sliding with each step (see ``minigrad.plan``).

    Returns:
        The unrolled graph, described in the module docstring.
    """
    check_count(steps, "steps", 1, f"cell '{cell.name}': ")
    if truncate is not None:
        check_count(truncate, "truncate", 1, f"cell '{cell.name}': ")
    g: nx.DiGraph = nx.DiGraph(cell=cell.name, steps=steps, truncate=truncate)  # type: ignore[type-arg]
    losses = set(cell.losses)
    nodes: list[tuple[Key, dict[str, Any]]] = []
    edges: list[tuple[Key, Key, dict[str, Any]]] = []

    def attrs(name: str, step: int) -> dict[str, Any]:
        kind = cell.kind(name)
        role = "loss" if name in losses else kind
        a: dict[str, Any] = {
            "name": name,
            "step": step,
            "kind": kind,
            "role": role,
            "shape": cell.spec_shape(name),
        }
        if kind == "op":
            a["op"] = cell.ops[name].op
        return a

    for p in cell.params:
        nodes.append(((p, SHARED), attrs(p, SHARED)))
    static_ops = [n for n in cell.order if cell.ops[n].static]
    dynamic_ops = [n for n in cell.order if not cell.ops[n].static]

    # per node: its distinct sources, whether each is shared by all steps, and the slots it feeds
    # (networkx copies edge attributes into its own dicts, so one dict per template is enough)
    templates: dict[str, list[tuple[str, bool, dict[str, Any]]]] = {}
    for n, spec in cell.ops.items():
        by_src: dict[str, list[int]] = {}
        for i, r in enumerate(spec.inputs):
            by_src.setdefault(r, []).append(i)
        templates[n] = [(r, cell.shared(r), {"slots": tuple(sl)}) for r, sl in by_src.items()]

    def in_edges(name: str, step: int) -> list[tuple[Key, Key, dict[str, Any]]]:
        dst = (name, step)
        return [((r, SHARED if shared else step), dst, a) for r, shared, a in templates[name]]

    for n in static_ops:
        nodes.append(((n, SHARED), attrs(n, SHARED)))
        edges.extend(in_edges(n, SHARED))
    for t in range(steps):
        for iname in cell.inputs:
            nodes.append(((iname, t), attrs(iname, t)))
        for sname in cell.states:
            nodes.append(((sname, t), attrs(sname, t)))
        for n in dynamic_ops:
            nodes.append(((n, t), attrs(n, t)))
            edges.extend(in_edges(n, t))
    for sname, sspec in cell.states.items():
        final = attrs(sname, steps)
        final["final"] = True
        nodes.append(((sname, steps), final))
        for t in range(1, steps + 1):
            cut = truncate is not None and t % truncate == 0 and t < steps
            edges.append(
                (
                    key_of(cell, sspec.update, t - 1),
                    (sname, t),
                    {"slots": (), "carry": True, "truncated": cut},
                )
            )
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    return g


def reachable(g: nx.DiGraph, starts: Iterable[Key], forward: bool) -> set[Key]:  # type: ignore[type-arg]
    """The nodes of ``g`` reachable from ``starts`` (included) along the edges, or
    against them when ``forward`` is False; breadth first, without recursion."""
    seen = set(starts)
    queue = deque(seen)
    nxt = g.succ if forward else g.pred
    while queue:
        k = queue.popleft()
        for m in nxt[k]:
            if m not in seen:
                seen.add(m)
                queue.append(m)
    return seen
