"""Runnable examples (``python -m models.examples.<name>``)."""
