"""``python -m gencore``: the gencore command."""

import sys

from .cli import main

sys.exit(main())
