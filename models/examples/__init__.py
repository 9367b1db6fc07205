"""Runnable examples (``python -m models.examples.<name>``)."""

from __future__ import annotations
