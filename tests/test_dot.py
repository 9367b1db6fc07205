"""Tests for minigrad.dot: DOT text of cells and unrolled graphs, and writing pictures."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
from minigrad import CellBuilder, init
from minigrad.dot import (
    PALETTE,
    GraphvizError,
    GraphvizNotFound,
    cell_to_dot,
    dot_quote,
    unrolled_to_dot,
    write_graph,
)
from minigrad.errors import MinigradError
from minigrad.unroll import unroll

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz 'dot' is not installed")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as 'dot'")


def gru_cell() -> mg.Cell:
    """Chung et al.'s GRU with named gates z, r, c and update h_next."""
    b = CellBuilder("gru", dtype=np.float64)
    x = b.input("x", 3)
    y = b.input("y", 4)
    h = b.state("h", 4)
    p = {
        n: b.param(n, s, init=init.uniform(0.5))
        for n, s in [
            ("Wz", (3, 4)),
            ("Wr", (3, 4)),
            ("Wca", (3, 4)),
            ("Wrecz", (4, 4)),
            ("Wrecr", (4, 4)),
            ("Wreca", (4, 4)),
            ("bz", (4,)),
            ("br", (4,)),
            ("bca", (4,)),
        ]
    }
    z = mg.sigmoid(x @ p["Wz"] + h @ p["Wrecz"] + p["bz"], name="z")
    r = mg.sigmoid(x @ p["Wr"] + h @ p["Wrecr"] + p["br"], name="r")
    c = mg.tanh(x @ p["Wca"] + (r * h) @ p["Wreca"] + p["bca"], name="c")
    h_next = mg.gru_update(z, h, c, name="h_next")
    b.update(h, h_next)
    b.output("h", h_next)
    b.loss(mg.l2_loss(h_next, y, name="l2"))
    return b.build()


def mgu_cell() -> mg.Cell:
    """The minimal gated unit, with a parameter-only node and two states."""
    b = CellBuilder("mgu")
    x = b.input("x", 3)
    y = b.input("y", 4)
    h = b.state("h", 4)
    n = b.state("n", 4)
    wf = b.param("Wf", (3, 4), init=init.uniform(0.5))
    uf = b.param("Uf", (4, 4), init=init.uniform(0.5))
    wh = b.param("Wh", (3, 4), init=init.uniform(0.5))
    uh = b.param("Uh", (4, 4), init=init.uniform(0.5))
    s = b.param("S", (4, 4), init=init.uniform(0.5))
    f = mg.sigmoid(x @ wf + h @ uf, name="f")
    c = mg.tanh(x @ wh + (f * h) @ mg.scale(uh, 0.5, name="half_Uh"), name="c")
    h_next = mg.gru_update(f, h, c, name="h_next")
    b.update(h, h_next)
    b.update(n, mg.add(n, h_next @ s, name="n_next"))
    b.loss(mg.l2_loss(h_next, y, name="l2"))
    return b.build()


def awkward_cell() -> mg.Cell:
    """Names that need quoting and escaping, and one that imitates an unrolled key."""
    b = CellBuilder('odd "cell"')
    x = b.input("x", 2)
    h = b.state("l1.h", 2)
    w = b.param('W"quoted"', (2, 2), init=init.uniform(0.5))
    u = b.param("back\\slash\\", (2, 2), init=init.uniform(0.5))
    a = mg.add(x @ w, h @ u, name="h_next@2")
    nxt = mg.tanh(a, name="x@1")
    b.update(h, nxt)
    b.loss(mg.l2_loss(nxt, x, name="loss {with} [brackets]; -> arrow"))
    return b.build()


CELLS = [gru_cell, mgu_cell, awkward_cell]


# -- a small DOT reader (enough for what minigrad writes) --------------------------------

TOKEN = re.compile(
    r'\s*(?:(?P<q>"(?:[^"\\]|\\.)*")|(?P<arrow>->)|(?P<sym>[{}\[\];=,])|(?P<id>[A-Za-z0-9_.#]+))',
    re.S,
)


@dataclass
class Dot:
    """What the structural check read from DOT text."""

    nodes: dict[str, str | None] = field(default_factory=dict)  # id -> enclosing cluster
    attrs: dict[str, str] = field(default_factory=dict)  # id -> its attribute text
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)
    cluster_labels: dict[str, str] = field(default_factory=dict)
    unquoted_ids: list[str] = field(default_factory=list)


def tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while True:
        m = TOKEN.match(text, pos)
        if m is None:
            assert text[pos:].strip() == "", f"cannot tokenise at {text[pos : pos + 40]!r}"
            return out
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()


def unquote(tok: str) -> str:
    return tok[1:-1] if tok.startswith('"') else tok


def read_dot(text: str) -> Dot:
    """Balanced braces and brackets, node and edge statements, clusters and their labels."""
    toks = tokens(text)
    assert toks[0] == ("id", "digraph")
    dot = Dot()
    stack: list[str | None] = []
    i = 1
    if toks[i][0] in ("q", "id"):
        i += 1
    assert toks[i] == ("sym", "{")
    stack.append(None)
    i += 1
    while i < len(toks):
        kind, val = toks[i]
        if (kind, val) == ("sym", "}"):
            stack.pop()
            i += 1
            continue
        if kind == "sym" and val in ";,":
            i += 1
            continue
        if (kind, val) == ("id", "subgraph") or (kind, val) == ("sym", "{"):
            name = None
            if val == "subgraph":
                i += 1
                if toks[i][0] in ("q", "id"):
                    name = unquote(toks[i][1])
                    i += 1
            assert toks[i] == ("sym", "{"), toks[i]
            if name is not None and name.startswith("cluster"):
                dot.clusters.append(name)
                stack.append(name)
            else:
                stack.append(stack[-1])
            i += 1
            continue
        if kind == "id" and val in ("graph", "node", "edge"):
            i += 1
            i = skip_attrs(toks, i)
            continue
        # attribute assignment inside a graph or subgraph body
        if i + 1 < len(toks) and toks[i + 1] == ("sym", "="):
            if val == "label" and stack[-1] is not None:
                dot.cluster_labels[stack[-1]] = unquote(toks[i + 2][1])
            i += 3
            continue
        # node or edge statement
        chain = [unquote(val)]
        if kind != "q":
            dot.unquoted_ids.append(val)
        i += 1
        while i < len(toks) and toks[i][0] == "arrow":
            nk, nv = toks[i + 1]
            if nk != "q":
                dot.unquoted_ids.append(nv)
            chain.append(unquote(nv))
            i += 2
        start = i
        i = skip_attrs(toks, i)
        attr_text = " ".join(v for _k, v in toks[start:i])
        if len(chain) == 1:
            dot.nodes.setdefault(chain[0], stack[-1])
            if attr_text:
                dot.attrs[chain[0]] = attr_text
        else:
            for a, b in pairwise(chain):
                dot.edges.append((a, b, attr_text))
    assert stack == [], "unbalanced braces"
    return dot


def skip_attrs(toks: list[tuple[str, str]], i: int) -> int:
    while i < len(toks) and toks[i] == ("sym", "["):
        depth = 0
        while True:
            if toks[i] == ("sym", "["):
                depth += 1
            elif toks[i] == ("sym", "]"):
                depth -= 1
            i += 1
            if depth == 0:
                break
    return i


def check_structure(text: str) -> Dot:
    """The checks that hold for every graph minigrad writes."""
    assert text.count("{") >= 1
    dot = read_dot(text)
    assert dot.unquoted_ids == [], dot.unquoted_ids
    for a, b, _attrs in dot.edges:
        assert a in dot.nodes, f"edge from undeclared node {a}"
        assert b in dot.nodes, f"edge to undeclared node {b}"
    return dot


def render_svg(text: str) -> ET.Element:
    proc = subprocess.run(
        ["dot", "-Tsvg"], input=text.encode(), capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Warning" not in proc.stderr and b"Error" not in proc.stderr, proc.stderr.decode()
    return ET.fromstring(proc.stdout)


# -- one-step graph -------------------------------------------------------------------


def test_quote_escapes() -> None:
    assert dot_quote("l1.h") == '"l1.h"'
    assert dot_quote('a"b') == '"a\\"b"'
    assert dot_quote("a\\") == '"a\\\\"'
    assert dot_quote("two\nlines") == '"two\\nlines"'


@pytest.mark.parametrize("build", CELLS)
def test_cell_to_dot_structure(build: object) -> None:
    cell = build()  # type: ignore[operator]
    dot = check_structure(cell_to_dot(cell))
    for name in cell.graph.nodes:
        assert dot_quote(name)[1:-1] in dot.nodes
    for src, dst in cell.graph.edges:
        assert any((a, b) == (dot_quote(src)[1:-1], dot_quote(dst)[1:-1]) for a, b, _ in dot.edges)
    # one dashed "next step" edge per state, from its update back to the state
    for sname, spec in cell.states.items():
        upd = [
            e for e in dot.edges if e[:2] == (dot_quote(spec.update)[1:-1], dot_quote(sname)[1:-1])
        ]
        assert len(upd) == 1 and "dashed" in upd[0][2] and "next step" in upd[0][2]
    assert dot.clusters == ["cluster_legend"]
    assert dot.cluster_labels["cluster_legend"] == "legend"


def test_cell_to_dot_gru_roles_and_labels() -> None:
    text = cell_to_dot(gru_cell())
    dot = check_structure(text)
    assert dot.attrs["z"].startswith('[ label = "z\\nSigmoid')
    assert dot.attrs["h_next"].startswith('[ label = "h_next\\nGRUUpdate')
    assert dot.attrs["matmul_1"].startswith('[ label = "matmul_1\\nMatMul')
    for node, role in [("Wz", "param"), ("x", "input"), ("h", "state"), ("z", "op")]:
        assert f'"{PALETTE[role][0]}"' in dot.attrs[node], (node, role)
    assert f'"{PALETTE["loss"][0]}"' in dot.attrs["l2"]
    # legend: one sample per role, in the legend cluster only
    legend = [n for n, c in dot.nodes.items() if c == "cluster_legend"]
    assert {"parameter", "input", "state", "operation", "loss"} <= {
        re.search(r'label = "([^"]*)"', dot.attrs[n]).group(1)  # type: ignore[union-attr]
        for n in legend
        if n in dot.attrs
    }
    # edges carry the slot names they feed
    slot_edges = {(a, b): attrs for a, b, attrs in dot.edges}
    assert 'label = "w"' in slot_edges[("Wz", "matmul_1")]
    assert 'label = "z"' in slot_edges[("z", "h_next")]


# -- unrolled graph ---------------------------------------------------------------------


@pytest.mark.parametrize("build", CELLS)
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_unrolled_to_dot_structure(build: object, steps: int) -> None:
    cell = build()  # type: ignore[operator]
    text = unrolled_to_dot(cell, steps)
    dot = check_structure(text)
    g = unroll(cell, steps)
    step_clusters = [c for c in dot.clusters if c.startswith("cluster_step_")]
    assert step_clusters == [f"cluster_step_{t}" for t in range(steps)]
    assert len(re.findall(r"^\s*subgraph cluster_step_\d+ \{", text, re.M)) == steps
    for t in range(steps):
        assert dot.cluster_labels[f"cluster_step_{t}"] == f"t = {t}"
    legend = {n for n, c in dot.nodes.items() if c == "cluster_legend"}
    graph_nodes = {n: c for n, c in dot.nodes.items() if n not in legend}
    assert len(graph_nodes) == g.number_of_nodes()  # unique ids even for odd names
    non_legend_edges = [e for e in dot.edges if e[0] not in legend]
    assert len(non_legend_edges) == g.number_of_edges()
    carry = [e for e in non_legend_edges if "penwidth = 2.5" in e[2]]
    assert len(carry) == steps * len(cell.states)
    # shared parameters are outside the clusters, every step's nodes inside their own
    shared = [c for n, c in graph_nodes.items() if n in {dot_quote(p)[1:-1] for p in cell.params}]
    assert len(shared) == len(cell.params) and set(shared) == {None}
    for t in range(steps):
        inside = [n for n, c in graph_nodes.items() if c == f"cluster_step_{t}"]
        assert len(inside) == sum(1 for k in g.nodes if k[1] == t)


def test_unrolled_gru_marks_initial_and_final_states() -> None:
    text = unrolled_to_dot(gru_cell(), 3)
    dot = check_structure(text)
    assert dot.nodes["h@0"] == "cluster_step_0"
    assert "initial state" in dot.attrs["h@0"] and "peripheries = 2" in dot.attrs["h@0"]
    assert dot.nodes["h@3"] is None
    assert "final state" in dot.attrs["h@3"] and "peripheries = 2" in dot.attrs["h@3"]
    assert "initial state" not in dot.attrs["h@1"] and "final state" not in dot.attrs["h@1"]
    edges = {(a, b): attrs for a, b, attrs in dot.edges}
    for t in range(3):
        attrs = edges[(f"h_next@{t}", f"h@{t + 1}")]
        assert f'"{PALETTE["state"][1]}"' in attrs and "penwidth = 2.5" in attrs
    assert ("Wz", "matmul_1@2") in edges
    assert dot.nodes["z@1"] == "cluster_step_1"
    assert dot.attrs["z@1"].startswith('[ label = "z@1\\nSigmoid')


def test_unrolled_truncated_state_edges_are_marked() -> None:
    text = unrolled_to_dot(gru_cell(), 4, truncate=2)
    dot = check_structure(text)
    edges = {(a, b): attrs for a, b, attrs in dot.edges}
    assert "truncated" in edges[("h_next@1", "h@2")] and "dashed" in edges[("h_next@1", "h@2")]
    assert "truncated" not in edges[("h_next@0", "h@1")]


def test_awkward_names_get_distinct_escaped_ids() -> None:
    text = unrolled_to_dot(awkward_cell(), 3)
    dot = check_structure(text)
    # the input x at step 1 and the node named "x@1" at step 0 do not collide
    assert "x@1" in dot.nodes and "x@1@0" in dot.nodes
    assert 'W\\"quoted\\"' in dot.nodes
    assert "back\\\\slash\\\\" in dot.nodes
    assert "l1.h@0" in dot.nodes


@pytest.mark.parametrize("build", CELLS)
def test_networkx_dot_reader_reads_the_output(build: object, tmp_path: Path) -> None:
    pytest.importorskip("pydot")
    import networkx as nx

    cell = build()  # type: ignore[operator]
    unrolled = unroll(cell, 2)
    for text, nodes, edges in [
        (cell_to_dot(cell), len(cell.graph), cell.graph.number_of_edges() + len(cell.states)),
        (unrolled_to_dot(cell, 2), len(unrolled), unrolled.number_of_edges()),
    ]:
        write_graph(text, tmp_path / "g.dot")
        read = nx.nx_pydot.read_dot(tmp_path / "g.dot")
        drawn = read.subgraph(n for n in read.nodes if not str(n).strip('"').startswith("legend"))
        assert drawn.number_of_nodes() == nodes
        assert drawn.number_of_edges() == edges


@needs_dot
@pytest.mark.parametrize("build", CELLS)
def test_graphviz_accepts_the_output(build: object) -> None:
    cell = build()  # type: ignore[operator]
    svg = render_svg(cell_to_dot(cell))
    assert svg.tag.endswith("svg")
    svg = render_svg(unrolled_to_dot(cell, 3))
    titles = [e.text for e in svg.iter("{http://www.w3.org/2000/svg}title") if e.text is not None]
    assert sum(1 for t in titles if t.startswith("cluster_step_")) == 3


# -- writing files ---------------------------------------------------------------------


def _leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


@pytest.mark.parametrize("name", ["cell.dot", "cell.GV"])
def test_write_dot_text(tmp_path: Path, name: str) -> None:
    text = cell_to_dot(gru_cell())
    target = tmp_path / name
    target.write_text("old contents")
    write_graph(text, target)
    assert target.read_text(encoding="utf-8") == text
    assert _leftovers(tmp_path, {name}) == []
    write_graph(text, str(tmp_path / "again.dot"))
    assert (tmp_path / "again.dot").read_text(encoding="utf-8") == text


def test_write_dot_needs_no_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    write_graph(cell_to_dot(gru_cell()), tmp_path / "g.dot")
    assert (tmp_path / "g.dot").exists()


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown extension '\.jpg'") as info:
        write_graph("digraph {}", tmp_path / "g.jpg")
    for ext in (".dot", ".svg", ".png", ".pdf"):
        assert ext in str(info.value)
    with pytest.raises(ValueError, match="supported"):
        write_graph("digraph {}", tmp_path / "no_extension")
    assert _leftovers(tmp_path, set()) == []


@pytest.mark.parametrize("ext", [".png", ".svg", ".pdf"])
def test_render_without_graphviz_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(GraphvizNotFound) as info:
        write_graph(cell_to_dot(gru_cell()), tmp_path / f"g{ext}")
    message = str(info.value)
    assert isinstance(info.value, MinigradError)
    for hint in ("apt-get install graphviz", "brew install graphviz", "conda", ".dot"):
        assert hint in message
    assert _leftovers(tmp_path, {"empty"}) == []


def test_render_when_which_finds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    with pytest.raises(GraphvizNotFound, match="not on PATH"):
        write_graph("digraph {}", tmp_path / "g.png")


def _fake_dot(directory: Path, body: str) -> None:
    directory.mkdir()
    script = directory / "dot"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@posix_only
def test_graphviz_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dot(tmp_path / "bin", 'echo "syntax error in line 1" >&2\nexit 3')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(GraphvizError, match=r"exit status 3 .*: syntax error in line 1"):
        write_graph("digraph {}", tmp_path / "g.svg")
    assert _leftovers(tmp_path, {"bin"}) == []


@posix_only
def test_graphviz_timeout_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sleep = shutil.which("sleep")
    if sleep is None:
        pytest.skip("no 'sleep' program")
    _fake_dot(tmp_path / "bin", f"exec {sleep} 10")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(GraphvizError, match=r"did not finish within 0\.3 s"):
        write_graph("digraph {}", tmp_path / "g.png", timeout=0.3)
    assert _leftovers(tmp_path, {"bin"}) == []


@needs_dot
def test_render_with_graphviz(tmp_path: Path) -> None:
    cell = gru_cell()
    write_graph(unrolled_to_dot(cell, 2), tmp_path / "u.svg")
    write_graph(cell_to_dot(cell), tmp_path / "c.png")
    write_graph(cell_to_dot(cell), tmp_path / "c.pdf")
    root = ET.fromstring((tmp_path / "u.svg").read_bytes())
    assert root.tag.endswith("svg")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "c.pdf").read_bytes()[:5] == b"%PDF-"
    assert _leftovers(tmp_path, {"u.svg", "c.png", "c.pdf"}) == []
    if os.name == "posix":
        assert (tmp_path / "c.png").stat().st_mode & 0o777 == 0o644


@needs_dot
def test_graphviz_error_on_invalid_dot(tmp_path: Path) -> None:
    with pytest.raises(GraphvizError, match="exit status"):
        write_graph("digraph { a -> }", tmp_path / "bad.svg")
    assert _leftovers(tmp_path, set()) == []
