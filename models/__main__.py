"""``python -m models``: the ``minigrad`` command (``models.cli.main.main``)."""

from __future__ import annotations

import sys

from models.cli.main import main

sys.exit(main())
