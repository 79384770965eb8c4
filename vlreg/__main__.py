"""``python -m vlreg``: see :mod:`vlreg.cli`."""

import sys

from .cli import main

sys.exit(main())
