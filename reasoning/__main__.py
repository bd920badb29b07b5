"""``python -m reasoning``: the ``sambay`` command."""

import sys

from .cli import main

sys.exit(main())
