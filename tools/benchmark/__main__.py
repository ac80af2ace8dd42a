"""``python3 -m tools.benchmark`` from the checkout: the same as tools/bench."""

import sys

from .cli import main

sys.exit(main())
