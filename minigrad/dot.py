"""Pictures of cell graphs as Graphviz DOT text, written by minigrad itself.

* ``cell_to_dot(cell)``: the graph of one time step. Nodes are coloured by
  role (parameter, input, state, operation, loss, see ``PALETTE``), operations
  are labelled with their name and node type, input edges with the slots they
  feed, and each state update is a dashed edge from the update node back to
  the state ("next step").
* ``unrolled_to_dot(cell, steps)``: the unrolled graph of
  ``minigrad.unroll.unroll``, one ``subgraph cluster_step_<t>`` per time step,
  the shared parameters outside the clusters, the state edges between steps
  highlighted, the initial and final states marked.
* ``write_graph(dot_text, path)``: ``.dot`` / ``.gv`` files are written
  directly; ``.svg``, ``.png`` and ``.pdf`` are rendered by the Graphviz ``dot``
  program, which is then needed on ``PATH`` (``GraphvizNotFound`` otherwise).

Every identifier is quoted and escaped, so names such as ``l1.h`` or
``h_next@2`` are safe. Producing DOT text needs nothing beyond minigrad.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from minigrad.cell import Cell
from minigrad.errors import ArgumentError, MinigradError
from minigrad.types import format_shape as _fmt
from minigrad.unroll import SHARED, Key, unroll

__all__ = [
    "PALETTE",
    "GraphvizError",
    "GraphvizNotFound",
    "cell_to_dot",
    "dot_quote",
    "unrolled_to_dot",
    "write_graph",
]


class GraphvizError(MinigradError, RuntimeError):
    """Rendering through the Graphviz ``dot`` program failed (bad exit status, timeout)."""


class GraphvizNotFound(GraphvizError):
    """The Graphviz ``dot`` program is needed to render this format and is not on ``PATH``."""


PALETTE: dict[str, tuple[str, str]] = {
    "param": ("#fdd49e", "#d94801"),
    "input": ("#c6dbef", "#2171b5"),
    "state": ("#c7e9c0", "#238b45"),
    "op": ("#f0f0f0", "#525252"),
    "loss": ("#fcbba1", "#cb181d"),
}
"""Fill and border colour of each node role (colour-blind-safe ColorBrewer hues)."""

_ROLE_NAME = {
    "param": "parameter",
    "input": "input",
    "state": "state",
    "op": "operation",
    "loss": "loss",
}
_SHAPE = {
    "param": 'shape=box, style="filled"',
    "input": 'shape=ellipse, style="filled"',
    "state": 'shape=hexagon, style="filled"',
    "op": 'shape=box, style="filled,rounded"',
    "loss": 'shape=box, style="filled,rounded,bold"',
}
_FONT = "Helvetica"
_STATE_EDGE = PALETTE["state"][1]
_SHARED_EDGE = "#bdbdbd"

_TEXT_FORMATS = (".dot", ".gv")
_RENDERED_FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}

_INSTALL_HINT = (
    "install Graphviz: 'apt-get install graphviz' (Debian/Ubuntu), 'brew install graphviz' "
    "(macOS) or 'conda install -c conda-forge graphviz'; writing a '.dot' file needs nothing "
    "(render it later with 'dot -Tsvg graph.dot -o graph.svg')"
)


# --------------------------------------------------------------------------
# quoting


def _escape(text: str) -> str:
    return (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def dot_quote(text: str) -> str:
    """``text`` as a quoted DOT identifier (backslashes, quotes and line breaks escaped)."""
    return f'"{_escape(text)}"'


def _label(*lines: str) -> str:
    """A quoted DOT label with one line per argument."""
    return '"' + "\\n".join(_escape(line) for line in lines) + '"'


def _fresh(base: str, taken: set[str]) -> str:
    """``base``, or ``base~2``, ``base~3``, ... whichever is not taken yet (then taken)."""
    name = base
    n = 1
    while name in taken:
        n += 1
        name = f"{base}~{n}"
    taken.add(name)
    return name


def _role_attrs(role: str, extra: str = "") -> str:
    fill, border = PALETTE[role]
    attrs = f'{_SHAPE[role]}, fillcolor="{fill}", color="{border}"'
    return f"{attrs}, {extra}" if extra else attrs


def _header(name: str, title: str) -> list[str]:
    # top to bottom with tight spacing: the pictures stay narrow enough to read at the
    # width of a README column
    return [
        f"digraph {dot_quote(name)} {{",
        f"  graph [rankdir=TB, fontname={dot_quote(_FONT)}, label={_label(title)}, "
        "labelloc=t, fontsize=14, newrank=true, compound=true, nodesep=0.2, ranksep=0.35];",
        f"  node [fontname={dot_quote(_FONT)}, fontsize=11];",
        f'  edge [fontname={dot_quote(_FONT)}, fontsize=9, color="#525252", arrowsize=0.7];',
    ]


def _legend(taken: set[str], unrolled: bool) -> list[str]:
    """A legend cluster: one sample node per role and the meaning of the special edges."""
    lines = [
        "  subgraph cluster_legend {",
        f'    label="legend"; style="dashed"; color="#969696"; fontname={dot_quote(_FONT)};',
    ]
    ids: list[str] = []
    for role, text in _ROLE_NAME.items():
        nid = dot_quote(_fresh(f"legend {role}", taken))
        ids.append(nid)
        lines.append(f"    {nid} [label={_label(text)}, {_role_attrs(role)}];")
    a = dot_quote(_fresh("legend edge from", taken))
    b = dot_quote(_fresh("legend edge to", taken))
    lines.append(f'    {a} [label="", shape=point, width=0.05];')
    lines.append(f'    {b} [label="", shape=point, width=0.05];')
    if unrolled:
        edge_text = "state edge\n(next step)"
        edge_attrs = f'color="{_STATE_EDGE}", penwidth=2.5'
    else:
        edge_text = "state update\n(next step)"
        edge_attrs = f'style="dashed", color="{_STATE_EDGE}", penwidth=1.5'
    lines.append(f"    {a} -> {b} [label={_label(edge_text)}, {edge_attrs}];")
    chain = " -> ".join(ids)
    lines.append(f"    {chain} [style=invis];")
    lines.append("  }")
    return lines


def _op_type(cell: Cell, name: str) -> str:
    op = cell.ops[name].op
    extra = op.params_repr()
    return f"{type(op).__name__}({extra})" if extra else type(op).__name__


def _outputs_of(cell: Cell) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for oname, node in cell.outputs.items():
        out.setdefault(node, []).append(oname)
    return out


def _node_lines(cell: Cell, name: str, role: str, head: str) -> list[str]:
    """The label lines of a cell value (``head`` is its first line)."""
    kind = cell.kind(name)
    lines = [head]
    if kind == "op":
        lines.append(_op_type(cell, name))
        if cell.ops[name].static:
            lines.append("parameters only")
    elif kind == "param":
        lines.append(_fmt(cell.spec_shape(name)))
    else:
        lines.append(f"{_ROLE_NAME[kind]} {_fmt(cell.spec_shape(name))}")
    if role == "loss":
        lines.append("loss term")
    for oname in _outputs_of(cell).get(name, []):
        lines.append(f"output '{oname}'")
    return lines


def _slot_label(cell: Cell, dst: str, slots: Iterable[int]) -> str:
    op = cell.ops[dst].op
    return ", ".join(op.slot(i) for i in slots)


# --------------------------------------------------------------------------
# the one-step graph


def cell_to_dot(cell: Cell) -> str:
    """DOT text of the graph of one time step of ``cell``.

    Nodes are coloured by role (``PALETTE``: parameter, input, state,
    operation, loss) with a legend; operations are labelled with their name
    and node type (``z\\nSigmoid``); edges are labelled with the input slots
    they feed; every state update is a dashed edge from the update node back
    to the state, labelled "next step".

    Args:
        cell: a built ``Cell``.

    Returns:
        The DOT source of a ``digraph``, ready for ``write_graph`` or Graphviz.
    """
    losses = set(cell.losses)
    taken = set(cell.graph.nodes)
    lines = _header(f"cell {cell.name}", f"cell '{cell.name}': one time step")
    lines += _legend(taken, unrolled=False)
    names = [*cell.params, *cell.inputs, *cell.states, *cell.order]
    for name in names:
        kind = cell.kind(name)
        role = "loss" if name in losses else kind
        label = _label(*_node_lines(cell, name, role, name))
        lines.append(f"  {dot_quote(name)} [label={label}, {_role_attrs(role)}];")
    for src, dst, data in cell.graph.edges(data=True):
        slots = data.get("slots", [])
        label = _label(_slot_label(cell, dst, slots))
        lines.append(f"  {dot_quote(src)} -> {dot_quote(dst)} [label={label}];")
    for sname, spec in cell.states.items():
        lines.append(
            f"  {dot_quote(spec.update)} -> {dot_quote(sname)} [label={_label('next step')}, "
            f'style="dashed", color="{_STATE_EDGE}", fontcolor="{_STATE_EDGE}", penwidth=1.5, '
            "constraint=false];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# the unrolled graph


def unrolled_to_dot(cell: Cell, steps: int, truncate: int | None = None) -> str:
    """DOT text of ``cell`` unrolled for ``steps`` steps (``minigrad.unroll.unroll``).

    Every time step is one ``subgraph cluster_step_<t>`` labelled ``t = <t>``
    holding that step's inputs, state and operations; parameters and
    parameter-only nodes, shared by all steps, are outside the clusters, as is
    the final state. The steps are stacked top to bottom. State edges between
    steps are drawn thick in the state colour (dashed and grey when a
    truncation window cuts them) and span two ranks, so that one step's
    cluster ends before the next one begins; the initial and final states are
    marked with a double border and say so.

    Args:
        cell: a built ``Cell``.
        steps: T >= 1.
        truncate: optional BPTT window, as for ``unroll``.

    Returns:
        The DOT source of a ``digraph``, ready for ``write_graph`` or Graphviz.
    """
    g = unroll(cell, steps, truncate)
    taken: set[str] = set()
    ids: dict[Key, str] = {}
    for key in g.nodes:
        name, step = key
        ids[key] = _fresh(name if step == SHARED else f"{name}@{step}", taken)
    title = f"cell '{cell.name}' unrolled for {steps} step{'s' if steps != 1 else ''}"
    if truncate is not None:
        title += f" (BPTT truncated every {truncate} steps)"
    lines = _header(f"cell {cell.name} unrolled", title)
    lines += _legend(taken, unrolled=True)

    by_step: dict[int, list[Key]] = {}
    for key in g.nodes:
        by_step.setdefault(key[1], []).append(key)

    def node_line(key: Key, indent: str) -> str:
        data = g.nodes[key]
        name, step = key
        role: str = data["role"]
        head = ids[key]
        extra = ""
        text = _node_lines(cell, name, role, head)
        if data["kind"] == "state":
            if step == 0:
                text.append("initial state")
                extra = "peripheries=2"
            elif data.get("final"):
                text.append("final state")
                extra = "peripheries=2"
        return f"{indent}{dot_quote(ids[key])} [label={_label(*text)}, {_role_attrs(role, extra)}];"

    for key in by_step.get(SHARED, []):
        lines.append(node_line(key, "  "))
    for t in range(steps):
        lines.append(f"  subgraph cluster_step_{t} {{")
        lines.append(
            f'    label={_label(f"t = {t}")}; style="rounded"; color="#969696"; '
            f"fontname={dot_quote(_FONT)};"
        )
        for key in by_step.get(t, []):
            lines.append(node_line(key, "    "))
        # the step's inputs start where its states do, so the steps follow each other in time
        firsts = [k for k in by_step.get(t, []) if g.nodes[k]["kind"] in ("input", "state")]
        if len(firsts) > 1 and any(g.nodes[k]["kind"] == "state" for k in firsts):
            same = " ".join(dot_quote(ids[k]) + ";" for k in firsts)
            lines.append(f"    {{ rank=same; {same} }}")
        lines.append("  }")
    for key in by_step.get(steps, []):
        lines.append(node_line(key, "  "))

    for src, dst, data in g.edges(data=True):
        a, b = dot_quote(ids[src]), dot_quote(ids[dst])
        if data.get("carry"):
            sname = dst[0]
            if data.get("truncated"):
                lines.append(
                    f'  {a} -> {b} [label={_label(sname + " (truncated)")}, style="dashed", '
                    f'color="#969696", fontcolor="#969696", penwidth=1.5, minlen=2];'
                )
            else:
                lines.append(
                    f'  {a} -> {b} [label={_label(sname)}, color="{_STATE_EDGE}", '
                    f'fontcolor="{_STATE_EDGE}", penwidth=2.5, minlen=2];'
                )
            continue
        attrs = f'color="{_SHARED_EDGE}"' if src[1] == SHARED and dst[1] != SHARED else ""
        lines.append(f"  {a} -> {b}" + (f" [{attrs}];" if attrs else ";"))
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# writing files


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _finish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finish(tmp: str, path: Path) -> None:
    """Give the temporary file the target's permissions (0644 for a new file), move it in."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_graph(dot_text: str, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
    """Write DOT text to ``path``, rendering it when the extension asks for a picture.

    ``.dot`` and ``.gv`` are written as they are (atomically: a temporary file
    in the same directory, then ``os.replace``). ``.svg``, ``.png`` and ``.pdf``
    are rendered by the Graphviz ``dot`` program (into a temporary file, then
    moved into place), which must be on ``PATH``.

    Args:
        dot_text: DOT source, e.g. from ``cell_to_dot`` or ``unrolled_to_dot``.
        path: the file to write; its extension selects the format.
        timeout: seconds to wait for Graphviz.

    Raises:
        ArgumentError: the extension is not one of the supported ones (a
            ``ValueError``).
        GraphvizNotFound: a picture format was asked for and ``dot`` is not on
            ``PATH`` (the message says how to install it).
        GraphvizError: ``dot`` failed or timed out (the message has its error output).
    """
    target = Path(path)
    ext = target.suffix.lower()
    if target.is_symlink():
        # write the file the link points to and keep the link, as every writer of
        # the project does (renaming onto the link would make it a plain file)
        target = Path(os.path.realpath(target))
    if ext in _TEXT_FORMATS:
        _atomic_write(target, dot_text.encode("utf-8"))
        return
    fmt = _RENDERED_FORMATS.get(ext)
    if fmt is None:
        supported = ", ".join((*_TEXT_FORMATS, *_RENDERED_FORMATS))
        raise ArgumentError(
            f"cannot write a graph to path '{target}': unknown extension '{ext or '(none)'}'; "
            f"supported: {supported}"
        )
    exe = shutil.which("dot")
    if exe is None:
        raise GraphvizNotFound(
            f"writing '{target}' needs the Graphviz 'dot' program, which is not on PATH; "
            + _INSTALL_HINT
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=ext, dir=target.parent)
    os.close(fd)
    try:
        try:
            proc = subprocess.run(
                [exe, f"-T{fmt}", "-o", tmp],
                input=dot_text.encode("utf-8"),
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GraphvizError(
                f"Graphviz 'dot' ({exe}) did not finish within {timeout:g} s while rendering "
                f"'{target}'"
            ) from None
        except FileNotFoundError:
            raise GraphvizNotFound(
                f"writing '{target}' needs the Graphviz 'dot' program, and '{exe}' could not "
                "be run; " + _INSTALL_HINT
            ) from None
        except OSError as e:
            raise GraphvizError(f"could not run Graphviz 'dot' ({exe}): {e}") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip() or "(no error output)"
            raise GraphvizError(
                f"Graphviz 'dot' ({exe}) failed with exit status {proc.returncode} while "
                f"rendering '{target}' as {fmt}: {err}"
            )
        _finish(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
