"""Datasets shipped with minigrad's models, read through :func:`models.data.load_dataset`.

``bach_chorales.npz`` is built by :mod:`models.data.datasets.build_chorales`; see
``README.md`` in this folder for its provenance and counts.
"""

from __future__ import annotations
