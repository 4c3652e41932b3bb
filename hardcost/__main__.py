"""``python -m hardcost``: the same command line as ``hardcost``."""

import sys

from hardcost.cli import main

sys.exit(main())
