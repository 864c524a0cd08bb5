"""``python -m minipool.demo``: run the guided tour."""

import sys

from .tour import main

sys.exit(main())
