"""``python -m models``: the ``minigrad`` command (``models.cli.main``)."""

import sys

from models.cli import main

sys.exit(main())
