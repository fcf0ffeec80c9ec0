"""``python -m flows.cli``: the same as ``lineguard``."""

import sys

from flows.cli import main

sys.exit(main())
