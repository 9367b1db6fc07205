"""``python -m models``: the ``minigrad`` command, started as the console script is
(``models.console``: Ctrl-C is held back while the models load)."""

from __future__ import annotations

import sys

from models.console import main

sys.exit(main())
