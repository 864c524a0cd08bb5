"""The command line: ``python -m minipool COMMAND ...`` (``--help`` lists the commands).

Technique: *running the same pool across machines*. The coordinator and the workers that
``Pool()`` embeds are also programs of their own: start a coordinator on one machine, workers on
others, and point ``Pool(address=...)`` at it. The shared key comes from ``MINIPOOL_AUTHKEY`` or
``--authkey-file`` (never from a command-line argument, which ``ps`` would show to every user).

A command that cannot do its job says why in one line on stderr, never with a traceback, and
exits with one of the codes listed below (see :mod:`minipool.commandline`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..commandline import EXIT_CODES, CommandError, HelpFormatter, minipool_version, plain
from ..dashboard import cli as dashboard
from ..pipesets import commands as pipesets
from ..topics import commands as topics
from . import chaos, cluster, status

__all__ = ["EPILOG", "GROUPS", "build_parser", "main"]

#: The modules that add subcommands, in the order ``--help`` lists them. Each has a
#: ``register(command)`` function: ``command(name, **options)`` returns the subcommand's
#: ``argparse`` parser, and ``register`` adds its options and ``set_defaults(func=...)``, the
#: function that runs it and returns an exit code (it may also set ``check=``, called with the
#: parser and the arguments before logging starts). A new group of subcommands is a module in
#: this package, added here.
GROUPS = (cluster, status, topics, pipesets, dashboard, chaos)

EPILOG = "exit codes:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minipool",
        description=plain(__doc__ or ""),
        formatter_class=HelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"minipool {minipool_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, **options: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=HelpFormatter, epilog=EPILOG, **options)

    for group in GROUPS:
        group.register(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "check", None):
        args.check(parser, args)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except CommandError as exc:
        print(f"minipool {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are in place
        return 130
