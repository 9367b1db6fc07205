"""The ``minigrad`` command (also ``python -m models``).

Subcommands:

* ``minigrad train``: train a recurrent network on a polyphonic-music dataset
  (``models.train``); every option of ``TrainConfig`` is a flag, and a TOML
  file given with ``--config`` sets the same options (flags override it);
* ``minigrad evaluate``: score a run's ``model.npz`` or ``checkpoint.npz`` on
  a split of a dataset and print the metrics as JSON;
* ``minigrad explain``: print ``minigrad.explain`` (or ``explain_all``) for a
  cell of ``models.cells`` with an L2 head: how BPTT assembles a parameter's
  gradient from the nodes' local derivatives;
* ``minigrad graph``: write the DOT picture of a cell, one step or unrolled,
  as ``.dot`` (always) or ``.svg`` / ``.png`` / ``.pdf`` (with Graphviz).

* ``minigrad sample``: generate a piano roll from a trained model;
* ``minigrad sweep``: choose each cell's learning rate by validation NLL.

One module per command (``models/cli/train.py``, ...), each with
``add(subparsers)``, which adds its parser and sets ``func`` (``args -> exit
code``) with ``set_defaults``. ``models.cli.main.COMMANDS`` lists them
explicitly; nothing registers itself on import. ``models.cli.common`` holds
what they share.

Exit codes: 0 success, 2 usage error (argparse), 1 any other error (one line
``minigrad: error: ...`` on stderr, no traceback), 130 after Ctrl-C (a
training run leaves a resumable checkpoint).
"""

from __future__ import annotations

import os

# One BLAS thread unless the user says otherwise: the GEMMs of a recurrent step are
# small, and a second OpenBLAS thread makes a JSB training epoch about 3x slower here.
# Training sets it itself (minigrad.threads, TrainConfig.blas_threads), from Python
# too; the variables below also cover evaluate and sample. They must be set before
# numpy is first imported (models/__init__ imports nothing).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from models.cli.main import main

__all__ = ["main"]
