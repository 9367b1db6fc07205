"""Tests for minigrad.explain: the gradient of a parameter described from the unrolled graph."""

from __future__ import annotations

import re
from itertools import pairwise

import networkx as nx
import numpy as np
import pytest

import minigrad as mg
from minigrad import CellBuilder, init
from minigrad.explain import explain, explain_all
from minigrad.nodes import MatMul
from minigrad.unroll import SHARED, unroll

TITLE = "dL/d{p} for cell '{c}' unrolled for {t} steps"
CONTRIB = "Per-step contributions (summed):"
SHARED_HEAD = "Shared state adjoints (computed once, reused by every parameter):"
GRU_WEIGHTS = ("Wz", "Wr", "Wca", "Wrecz", "Wrecr", "Wreca")
PATH_KEY = re.compile(
    r"^(?P<name>.+?)(?:@(?P<step>\d+))?(?: \((?P<type>[^()]*(?:\([^()]*\))?[^()]*)\))?$"
)


def gru_cell() -> mg.Cell:
    """Chung et al.'s GRU with an L2 loss on the new state (as the examples build it)."""
    b = CellBuilder("gru", dtype=np.float64)
    x = b.input("x", 3)
    y = b.input("y", 4)
    h = b.state("h", 4)
    p = {}
    for name, shape in [
        ("Wz", (3, 4)),
        ("Wr", (3, 4)),
        ("Wca", (3, 4)),
        ("Wrecz", (4, 4)),
        ("Wrecr", (4, 4)),
        ("Wreca", (4, 4)),
        ("bz", (4,)),
        ("br", (4,)),
        ("bca", (4,)),
    ]:
        p[name] = b.param(name, shape, init=init.uniform(0.5))
    z = mg.sigmoid(x @ p["Wz"] + h @ p["Wrecz"] + p["bz"], name="z")
    r = mg.sigmoid(x @ p["Wr"] + h @ p["Wrecr"] + p["br"], name="r")
    c = mg.tanh(x @ p["Wca"] + (r * h) @ p["Wreca"] + p["bca"], name="c")
    h_next = mg.gru_update(z, h, c, name="h_next")
    b.update(h, h_next)
    b.output("h", h_next)
    b.loss(mg.l2_loss(h_next, y, name="l2"))
    return b.build()


def mgu_cell() -> mg.Cell:
    """The minimal gated unit: f = s(x Wf + h Uf + bf); c = tanh(x Wh + (f*h) Uh + bh)."""
    b = CellBuilder("mgu", dtype=np.float64)
    x = b.input("x", 3)
    y = b.input("y", 4)
    h = b.state("h", 4)
    wf = b.param("Wf", (3, 4), init=init.uniform(0.5))
    uf = b.param("Uf", (4, 4), init=init.uniform(0.5))
    bf = b.param("bf", 4)
    wh = b.param("Wh", (3, 4), init=init.uniform(0.5))
    uh = b.param("Uh", (4, 4), init=init.uniform(0.5))
    bh = b.param("bh", 4)
    f = mg.sigmoid(x @ wf + h @ uf + bf, name="f")
    c = mg.tanh(x @ wh + (f * h) @ uh + bh, name="c")
    h_next = mg.gru_update(f, h, c, name="h_next")
    b.update(h, h_next)
    b.loss(mg.l2_loss(h_next, y, name="l2"))
    return b.build()


def shared_node_cell() -> mg.Cell:
    """A cell whose parameter V reaches the loss only through a parameter-only node V @ U."""
    b = CellBuilder("readout")
    x = b.input("x", 4)
    y = b.input("y", 4)
    h = b.state("l1.h", 4)
    v = b.param("V", (4, 4), init=init.uniform(0.5))
    u = b.param("U", (4, 4), init=init.uniform(0.5))
    w = b.param("W", (4, 4), init=init.uniform(0.5))
    vu = mg.matmul(v, u, name="VU")
    h_next = mg.tanh(x @ w + h, name="h_next")
    b.update(h, h_next)
    b.loss(mg.l2_loss(mg.matmul(h_next, vu, name="out"), y, name="l2"))
    return b.build()


# -- parsing helpers ----------------------------------------------------------------


def sections(text: str) -> dict[str, list[str]]:
    """Split the text into sections by their heading lines (title, contributions, steps,
    shared adjoints)."""
    out: dict[str, list[str]] = {}
    current = "title"
    for line in text.splitlines():
        if line in (CONTRIB, SHARED_HEAD) or re.fullmatch(r"Step \d+:", line):
            current = line
            out[current] = []
        else:
            out.setdefault(current, []).append(line)
    return out


def path_lines(lines: list[str], param: str) -> list[str]:
    return [ln.strip() for ln in lines if " -> " in ln and ln.rstrip().endswith(f"-> {param}")]


def parse_path(line: str) -> list[tuple[tuple[str, int], str]]:
    """``name@t (Type) -> ... -> param`` as [((name, step), type)]; the parameter is shared."""
    out = []
    for part in line.split(" -> "):
        m = PATH_KEY.match(part)
        assert m is not None, part
        step = int(m["step"]) if m["step"] is not None else SHARED
        out.append(((m["name"], step), m["type"] or ""))
    return out


# -- structure -------------------------------------------------------------------


@pytest.mark.parametrize(("build", "param"), [(gru_cell, "Wz"), (mgu_cell, "Uh")])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_sections_present_and_in_order(build: object, param: str, steps: int) -> None:
    cell = build()  # type: ignore[operator]
    text = explain(cell, param, steps=steps)
    lines = text.splitlines()
    assert lines[0] == TITLE.format(p=param, c=cell.name, t=steps)
    heads = [CONTRIB, *(f"Step {t}:" for t in range(steps)), SHARED_HEAD]
    positions = [lines.index(h) for h in heads]
    assert positions == sorted(positions)
    assert f"Step {steps}:" not in lines


def test_contributions_listed_for_every_step_with_node_formula() -> None:
    text = explain(gru_cell(), "Wz", steps=2)
    contrib = sections(text)[CONTRIB]
    formula = MatMul().derivatives[1]
    assert formula == "dL/dw = a^T @ g"
    for t in (0, 1):
        uses = [ln for ln in contrib if f"[step {t}]" in ln]
        assert len(uses) == 1, contrib
        assert "(MatMul)" in uses[0] and "slot 'w'" in uses[0] and formula in uses[0]
        assert f"a = x@{t}, w = Wz" in "\n".join(contrib)
    assert "the sum of 2 term(s)" in contrib[0]
    # The step-0 use collects the loss of its own step and the state adjoint of the next.
    joined = "\n".join(contrib)
    assert "loss term l2@0 (same step); dL/dh_1" in joined
    assert "loss term l2@1 (same step); dL/dh_2" in joined


EXPECTED_TYPES = {
    "Wz": ["L2Loss", "GRUUpdate", "Sigmoid", "Add", "MatMul"],
    "Wrecz": ["L2Loss", "GRUUpdate", "Sigmoid", "Add", "MatMul"],
    "Wr": ["L2Loss", "GRUUpdate", "Tanh", "Add", "MatMul", "Mul", "Sigmoid", "Add", "MatMul"],
    "Wrecr": ["L2Loss", "GRUUpdate", "Tanh", "Add", "MatMul", "Mul", "Sigmoid", "Add", "MatMul"],
    "Wca": ["L2Loss", "GRUUpdate", "Tanh", "Add", "MatMul"],
    "Wreca": ["L2Loss", "GRUUpdate", "Tanh", "Add", "MatMul"],
}
GATE = {"Wz": "z", "Wrecz": "z", "Wr": "r", "Wrecr": "r", "Wca": "c", "Wreca": "c"}


@pytest.mark.parametrize("weight", GRU_WEIGHTS)
def test_gru_weight_paths_go_through_expected_node_types(weight: str) -> None:
    cell = gru_cell()
    secs = sections(explain(cell, weight, steps=2))
    for t in (0, 1):
        paths = path_lines(secs[f"Step {t}:"], weight)
        assert paths, secs[f"Step {t}:"]
        within = [parse_path(p) for p in paths if all(f"@{s}" not in p for s in range(t))]
        assert within, paths
        first = within[0]
        assert first[0] == ((("l2", t)), "L2Loss")
        assert first[1] == (("h_next", t), "GRUUpdate")
        assert first[-1] == ((weight, SHARED), "")
        # types in order, compressed runs of Add
        types = [typ for _key, typ in first[:-1]]
        squeezed = [typ for i, typ in enumerate(types) if i == 0 or typ != types[i - 1]]
        assert squeezed == EXPECTED_TYPES[weight]
        gate = GATE[weight]
        expected_gate = {"z": "Sigmoid", "r": "Sigmoid", "c": "Tanh"}[gate]
        assert ((gate, t), expected_gate) in first
    # step 1 also reaches the step-0 use through the state edge h_next@0 -> h@1
    step1 = "\n".join(secs["Step 1:"])
    assert "h@1 (state) -> h_next@0 (GRUUpdate)" in step1
    assert "through earlier steps via state edges" in step1


def test_printed_paths_are_paths_of_the_unrolled_graph() -> None:
    cell = gru_cell()
    g = unroll(cell, 3)
    for weight in (*GRU_WEIGHTS, "bz", "bca"):
        secs = sections(explain(cell, weight, steps=3, max_paths=50))
        for t in range(3):
            for line in path_lines(secs[f"Step {t}:"], weight):
                keys = [k for k, _typ in parse_path(line)]
                assert keys[0] == ("l2", t)
                for consumer, source in pairwise(keys):
                    assert g.has_edge(source, consumer), (line, source, consumer)


@pytest.mark.parametrize("weight", ["Wz", "Wreca", "bz"])
def test_path_counts_match_networkx(weight: str) -> None:
    cell = gru_cell()
    steps = 3
    g = unroll(cell, steps)
    text = explain(cell, weight, steps=steps, max_paths=2)
    secs = sections(text)
    for t in range(steps):
        expected = sum(1 for _ in nx.all_simple_paths(g, (weight, SHARED), ("l2", t)))
        head = next(ln for ln in secs[f"Step {t}:"] if "loss term l2@" in ln)
        assert f": {expected} path(s) back to {weight}" in head
        shown = len(path_lines(secs[f"Step {t}:"], weight))
        assert shown == min(2, expected)
        more = [ln for ln in secs[f"Step {t}:"] if "more paths" in ln]
        if expected > 2:
            assert more == [f"    ... and {expected - 2} more paths"]
        else:
            assert more == []


def test_path_enumeration_has_no_recursion_limit() -> None:
    cell = gru_cell()
    text = explain(cell, "Wrecz", steps=1200, max_paths=2)
    secs = sections(text)
    assert "Step 1199:" in secs
    assert len(path_lines(secs["Step 1199:"], "Wrecz")) == 2
    assert "dL/dh_1200 = 0" in text


def test_state_adjoint_recurrence() -> None:
    text = explain(gru_cell(), "Wz", steps=2)
    shared = sections(text)[SHARED_HEAD]
    joined = "\n".join(shared)
    assert "computed once per step, in the reverse topological pass" in joined
    assert "shared by the gradients of all parameters" in joined
    heads = [ln.strip().split(" = ")[0] for ln in shared if ln.startswith("  dL/dh_")]
    assert heads == ["dL/dh_2", "dL/dh_1", "dL/dh_0"]
    block = joined.split("  dL/dh_1 = ")[1].split("  dL/dh_0 = ")[0]
    assert "matmul_2@1 (MatMul)" in block and "mul_10@1 (Mul)" in block
    assert "+ direct: loss term l2@1 (L2Loss)" in block
    assert "+ carried: dL/dh_2 along the state edge h_next@1 -> h@2" in block
    block0 = joined.split("  dL/dh_0 = ")[1]
    assert "+ carried: dL/dh_1 along the state edge h_next@0 -> h@1" in block0
    assert "dL/dh_2 = 0" in joined


def test_mgu_explain() -> None:
    cell = mgu_cell()
    text = explain(cell, "Uh", steps=2)
    secs = sections(text)
    paths0 = [parse_path(p) for p in path_lines(secs["Step 0:"], "Uh")]
    assert len(paths0) == 1
    types0 = [typ for _k, typ in paths0[0]]
    assert types0[:3] == ["L2Loss", "GRUUpdate", "Tanh"] and types0[-2] == "MatMul"
    step1 = "\n".join(secs["Step 1:"])
    assert "f@1 (Sigmoid)" in step1 and "mul_6@1 (Mul)" in step1
    assert "h@1 (state) -> h_next@0 (GRUUpdate)" in step1
    shared = "\n".join(secs[SHARED_HEAD])
    assert "dL/dh_1 = " in shared and "dL/dh_2 = 0" in shared
    assert "carried: dL/dh_2" in shared and "carried: dL/dh_1" in shared
    for param in cell.params:
        assert explain(cell, param, steps=2).startswith(TITLE.format(p=param, c="mgu", t=2))


def test_parameter_used_through_a_shared_node() -> None:
    cell = shared_node_cell()
    text = explain(cell, "V", steps=2)
    secs = sections(text)
    contrib = "\n".join(secs[CONTRIB])
    assert "[shared] VU (MatMul, shared), slot 'a' (input 0): dL/da = g @ w^T" in contrib
    assert "summed over the uses of VU at steps 0, 1" in contrib
    assert path_lines(secs["Step 1:"], "V") == [
        "l2@1 (L2Loss) -> out@1 (MatMul) -> VU (MatMul, shared) -> V"
    ]
    shared = "\n".join(secs[SHARED_HEAD])
    assert "dL/dl1.h_1 = " in shared and "dL/dl1.h_2 = 0" in shared


def test_explain_all_gru() -> None:
    cell = gru_cell()
    text = explain_all(cell, steps=2)
    lines = text.splitlines()
    assert lines[0].startswith("Gradients of every parameter of cell 'gru' unrolled for 2 steps")
    for param in cell.params:
        assert TITLE.format(p=param, c="gru", t=2) in lines
    assert lines.count(CONTRIB) == len(cell.params)
    assert lines.count("Step 0:") == lines.count("Step 1:") == len(cell.params)
    assert lines.count(SHARED_HEAD) == 1
    titles = [i for i, ln in enumerate(lines) if re.fullmatch(r"dL/d\w+ for cell .*", ln)]
    for start, stop in zip(titles, [*titles[1:], len(lines)], strict=True):
        param = lines[start][4:].split(" ")[0]
        block = lines[start:stop]
        assert path_lines(block, param), param
        assert any(ln.startswith("    [step 1]") for ln in block)


# -- errors ------------------------------------------------------------------------


def test_unknown_parameter_lists_valid_names() -> None:
    cell = gru_cell()
    with pytest.raises(ValueError, match="not a parameter") as info:
        explain(cell, "Wx", steps=2)
    for name in cell.params:
        assert name in str(info.value)
    with pytest.raises(ValueError, match=r"'h' is a state"):
        explain(cell, "h")
    with pytest.raises(ValueError, match="did you mean 'Wz'"):
        explain(cell, "wz")


@pytest.mark.parametrize("steps", [0, -1, 1.5, True])
def test_bad_steps(steps: object) -> None:
    with pytest.raises(ValueError, match="steps"):
        explain(gru_cell(), "Wz", steps=steps)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        explain_all(gru_cell(), steps=steps)  # type: ignore[arg-type]


def test_bad_max_paths() -> None:
    with pytest.raises(ValueError, match="max_paths"):
        explain(gru_cell(), "Wz", max_paths=-1)
