"""A user's own cells and node types, from a module outside minigrad, through the CLI.

Every command runs in a fresh process. The folder of the user's modules
(``tests/plugins``) is on ``PYTHONPATH`` only where the user names their code
(``train --cell cifg_cell:cifg``, ``--import hard_nodes``): ``--resume``,
``evaluate`` and ``sample`` otherwise run in processes that cannot import it,
and rebuild the cell from the description stored in the run's files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from npz_layout import write_npz_dataset

from minigrad.serialize import from_json
from models.data import load_dataset
from models.train.checkpoint import load_checkpoint

PLUGINS = Path(__file__).resolve().parent / "plugins"


def run(args: list[str], cwd: Path, *, plugins: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OPENBLAS_NUM_THREADS"] = "1"
    if plugins:
        env["PYTHONPATH"] = str(PLUGINS)
    return subprocess.run(
        [sys.executable, "-m", "models", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    full = load_dataset("bach_chorales")
    splits = {
        name: [full.split(name).sequence(i)[:12] for i in range(n)]
        for name, n in (("train", 4), ("valid", 2), ("test", 2))
    }
    return write_npz_dataset(tmp_path_factory.mktemp("data") / "tiny.npz", splits)


def train_args(data: Path, cell: str, epochs: int) -> list[str]:
    return [
        "train", "--dataset", str(data), "--cell", cell, "--hidden", "3", "--epochs",
        str(epochs), "--batch-size", "2", "--patience", "0", "--eval-batch-size", "2",
        "--out", "run", "--no-progress", "--lr-schedule", "constant",  # resumes to more epochs
    ]  # fmt: skip


def test_a_two_state_cell_from_a_user_module(tiny: Path, tmp_path: Path) -> None:
    first = run(train_args(tiny, "cifg_cell:cifg", 1), tmp_path, plugins=True)
    assert first.returncode == 0, first.stderr
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert ck.config["cell"] == "cifg_cell:cifg" and ck.cell is not None
    assert list(from_json(ck.cell).states) == ["h", "c"]  # both states, none lost

    resumed = run(
        ["train", "--resume", "--out", "run", "--epochs", "2", "--lr-schedule", "constant"],
        tmp_path,
        plugins=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["epochs_run"] == 2

    ev = run(["evaluate", "--checkpoint", "run/model.npz"], tmp_path, plugins=False)
    assert ev.returncode == 0, ev.stderr
    scores = json.loads(ev.stdout)
    assert scores["cell"] == "cifg_cell:cifg" and np.isfinite(scores["nll"])
    assert scores["nll"] == pytest.approx(summary["test_nll"], rel=1e-12)

    song = run(
        ["sample", "--checkpoint", "run/model.npz", "--steps", "5", "-o", "song.npz"],
        tmp_path,
        plugins=False,
    )
    assert song.returncode == 0, song.stderr
    with np.load(tmp_path / "song.npz", allow_pickle=False) as npz:
        assert npz["roll"].shape == (5, 88)


def test_a_user_node_type_needs_import_to_load(tiny: Path, tmp_path: Path) -> None:
    trained = run(train_args(tiny, "cifg_cell:hard_mgu", 1), tmp_path, plugins=True)
    assert trained.returncode == 0, trained.stderr

    refused = run(["evaluate", "--checkpoint", "run/model.npz"], tmp_path, plugins=False)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr
    assert "unknown node type 'HardSigmoid'" in lines[0] and "--import" in lines[0]

    loaded = run(
        ["evaluate", "--checkpoint", "run/model.npz", "--import", "hard_nodes"],
        tmp_path,
        plugins=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert np.isfinite(json.loads(loaded.stdout)["nll"])


def test_cells_lists_built_ins_and_imported_node_types(tmp_path: Path) -> None:
    out = run(["cells", "--json", "--import", "hard_nodes"], tmp_path, plugins=True)
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert listed["cells"]["gru"] == "built-in" and "lstm" in listed["cells"]
    assert listed["node_types"]["HardSigmoid"] == "hard_nodes.HardSigmoid"
    assert listed["node_types"]["Sigmoid"] == "minigrad.nodes.Sigmoid"
