"""Tests for ``minigrad explain`` and ``minigrad graph``: output, files, errors, exit codes."""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import minigrad as mg
from models.cells import CELLS
from models.cli.main import main
from models.nets.base import RecurrentModel

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz 'dot' is not installed")

SECTIONS = (
    "Per-step contributions (summed):",
    "Step 0:",
    "Step 1:",
    "Shared state adjoints (computed once, reused by every parameter):",
)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_line(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 1) -> str:
    """Run ``argv``, expect exit ``code``, nothing on stdout and one error line on stderr."""
    got, out, err = _run(argv, capsys)
    assert got == code, (got, err)
    assert out == ""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    return lines[0]


def _strip_quoted(text: str) -> str:
    """DOT text with the contents of every quoted string removed."""
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)


def _check_dot(text: str) -> None:
    """A digraph with balanced braces and brackets outside quoted strings."""
    assert text.startswith("digraph ")
    bare = _strip_quoted(text)
    assert bare.count("{") == bare.count("}") >= 1
    assert bare.count("[") == bare.count("]")
    assert bare.rstrip().endswith("}")


# --------------------------------------------------------------------------- help


def test_help_lists_the_new_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    assert "explain" in out and "graph" in out
    code, out, _ = _run(["explain", "--help"], capsys)
    assert code == 0
    text = " ".join(out.split())
    for piece in ("--cell NAME", "--param NAME", "--steps N", "(default: 2)", "minigrad cells"):
        assert piece in text, piece
    code, out, _ = _run(["graph", "--help"], capsys)
    assert code == 0
    assert "--unroll N" in out and "-o FILE" in out


# --------------------------------------------------------------------------- explain


def test_explain_gru_wz_two_steps(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["explain", "--cell", "gru", "--param", "Wz", "--steps", "2"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "dL/dWz for cell 'gru' unrolled for 2 steps"
    positions = [out.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert "Step 2:" not in out
    # one local contribution per use of Wz, each with the Affine node's derivative
    assert "dL/dWz = the sum of 2 term(s)" in out
    assert "[step 0] z_in@0 (Affine), slot 'w' (input 1): dL/dw = x^T @ g" in out
    assert "[step 1] z_in@1 (Affine), slot 'w' (input 1): dL/dw = x^T @ g" in out
    # step 1's loss reaches Wz at step 0 through the state edge, via the shared adjoint
    assert "state edge h_next@0 -> h@1: dL/d(h_next@0) += dL/dh_1 (identity copy)" in out
    assert "dL/dh_2 = 0" in out and "dL/dh_1 = sum of the terms below" in out
    # the command prints exactly what the library returns for the model's cell
    cell = RecurrentModel("gru", 3, 4).cell
    assert out == mg.explain(cell, "Wz", 2)


def test_explain_mgu_three_steps(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--cell", "mgu", "--param", "Uf", "--steps", "3"]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert out.splitlines()[0] == "dL/dUf for cell 'mgu' unrolled for 3 steps"
    for s in (*SECTIONS, "Step 2:"):
        assert s in out, s
    assert "[step 2] f_rec@2 (MatMul), slot 'w' (input 1): dL/dw = a^T @ g" in out
    assert "GRUUpdate, slot 'z': dL/dz = g * (b - a)" in out
    assert "dL/dh_3 = 0" in out


def test_explain_all_lists_every_parameter_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["explain", "--cell", "mgu", "--param", "all"], capsys)
    assert code == 0
    params = list(RecurrentModel("mgu", 3, 4).cell.params)
    assert out.splitlines()[0] == (
        f"Gradients of every parameter of cell 'mgu' unrolled for 2 steps "
        f"(parameters: {', '.join(params)})"
    )
    for p in params:
        assert out.count(f"dL/d{p} for cell 'mgu' unrolled for 2 steps") == 1, p
    assert out.count("Shared state adjoints") == 1


@pytest.mark.parametrize("cell", list(CELLS))
def test_explain_every_registered_cell(cell: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["explain", "--cell", cell, "--param", "all", "--max-paths", "2"], capsys)
    assert code == 0
    assert out.startswith(f"Gradients of every parameter of cell '{cell}'")


def test_explain_sizes_change_the_shapes_only(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--cell", "tanh", "--param", "W", "--input-size", "5", "--hidden", "2"]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    assert out == mg.explain(RecurrentModel("tanh", 5, 2).cell, "W", 2)


def test_explain_unknown_cell(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(["explain", "--cell", "gruu", "--param", "Wz"], capsys, 2)
    assert line.startswith("minigrad: error: unknown cell 'gruu'")
    for name in ("gru", "gru_reset_after", "lstm", "tanh", "mgu"):
        assert name in line


def test_explain_unknown_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(["explain", "--cell", "mgu", "--param", "Wz"], capsys)
    assert "'Wz' is not a parameter" in line
    for name in ("Wf", "Wh", "Uf", "Uh", "bf", "bh", "'all'"):
        assert name in line


@pytest.mark.parametrize(
    ("argv", "code", "piece"),
    [
        (["explain", "--param", "Wz", "--steps", "0"], 2, "--steps must be in 1..200"),
        (["explain", "--param", "Wz", "--steps", "100000"], 2, "--steps must be in 1..200"),
        # the text grows with steps squared: paths printed in all are bounded (it hung)
        (["explain", "--param", "all", "--steps", "200", "--max-paths", "1000"], 2,
         "more than the 2000 paths"),
        (["explain", "--param", "Wz", "--max-paths", "-1"], 2, "--max-paths must be >= 0"),
        (["explain", "--param", "Wz", "--hidden", "0"], 2, "--hidden must be in 1..10000"),
        (["explain", "--param", "Wz", "--hidden", "100000000"], 2, "--hidden must be in"),
        (["explain", "--param", "Wz", "--steps", "two"], 2, "invalid int value"),
        (["explain", "--cell", "gru"], 2, "--param"),
    ],
)
def test_explain_bad_arguments(
    argv: list[str], code: int, piece: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert piece in _error_line(argv, capsys, code)


# --------------------------------------------------------------------------- graph


def test_graph_unrolled_dot_has_one_cluster_per_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "gru-unrolled-2.dot"
    code, out, _ = _run(["graph", "--cell", "gru", "--unroll", "2", "-o", str(target)], capsys)
    assert code == 0
    assert out == f"wrote {target}\n"
    text = target.read_text(encoding="utf-8")
    _check_dot(text)
    clusters = re.findall(r"^\s*subgraph (cluster_step_\d+) \{", text, re.M)
    assert clusters == ["cluster_step_0", "cluster_step_1"]
    for t in range(2):
        assert f'label="t = {t}"' in text
    # every node of the unrolled graph is drawn, the parameters once
    for name in ("h@0", "h@1", "h@2", "z@0", "z@1", "loss@1"):
        assert f'"{name}" [label=' in text, name
    assert text.count('"Wz" [label=') == 1
    cell = RecurrentModel("gru", 3, 4).cell
    assert text == mg.unrolled_to_dot(cell, 2)


def test_graph_one_step_dot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "mgu.gv"
    code, _, _ = _run(["graph", "--cell", "mgu", "-o", str(target)], capsys)
    assert code == 0
    text = target.read_text(encoding="utf-8")
    _check_dot(text)
    assert "cluster_step_" not in text
    assert '"f" [label="f\\nSigmoid' in text
    assert text == mg.cell_to_dot(RecurrentModel("mgu", 3, 4).cell)


def test_graph_without_graphviz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *_a, **_k: None)
    target = tmp_path / "gru.svg"
    line = _error_line(["graph", "--cell", "gru", "-o", str(target)], capsys)
    assert line.startswith("minigrad: error: ")
    assert "Graphviz" in line and "apt-get install graphviz" in line and ".dot" in line
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    # a .dot file needs no Graphviz
    code, _, _ = _run(["graph", "--cell", "gru", "-o", str(tmp_path / "gru.dot")], capsys)
    assert code == 0 and (tmp_path / "gru.dot").exists()


@needs_dot
def test_graph_renders_svg_with_graphviz(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "u.svg"
    code, _, _ = _run(["graph", "--cell", "lstm", "--unroll", "3", "-o", str(target)], capsys)
    assert code == 0
    root = ET.fromstring(target.read_bytes())
    assert root.tag.endswith("svg")
    titles = [e.text for e in root.iter("{http://www.w3.org/2000/svg}title") if e.text]
    assert sum(1 for t in titles if t.startswith("cluster_step_")) == 3


@needs_dot
def test_graphviz_accepts_the_dot_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "g.dot"
    assert main(["graph", "--cell", "gru_reset_after", "--unroll", "2", "-o", str(target)]) == 0
    capsys.readouterr()
    proc = subprocess.run(
        ["dot", "-Tsvg", str(target)], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Warning" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "code", "piece"),
    [
        (["graph", "--cell", "nope", "-o", "g.dot"], 2, "unknown cell 'nope'"),
        (["graph", "--unroll", "0", "-o", "g.dot"], 2, "--unroll must be in 1..1000"),
        (["graph", "--unroll", "1000000", "-o", "g.dot"], 2, "--unroll must be in 1..1000"),
        (["graph", "--hidden", "100000000", "-o", "g.dot"], 2, "--hidden must be in"),
        (["graph", "-o", "g.jpg"], 2, "unknown file type '.jpg'"),  # a usage error, as in sample
        (["graph", "--unroll", "x", "-o", "g.dot"], 2, "invalid int value"),
        (["graph", "--cell", "gru"], 2, "-o"),
    ],
)
def test_graph_bad_arguments(
    argv: list[str],
    code: int,
    piece: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert piece in _error_line(argv, capsys, code)
    assert list(tmp_path.iterdir()) == []
