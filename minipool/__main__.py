"""``python -m minipool``: the command line, built in :mod:`minipool.cli`."""

from __future__ import annotations

import sys

from .cli import build_parser, main
from .cli.chaos import chaos_command
from .cli.status import render_status

__all__ = ["build_parser", "chaos_command", "main", "render_status"]

if __name__ == "__main__":
    sys.exit(main())
