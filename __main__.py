"""``python -m sw2c``: the `sw2c` command."""

import sys

from .cli import main

sys.exit(main())
