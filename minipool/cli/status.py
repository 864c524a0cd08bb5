"""The ``status`` command: a coordinator's workers, queue and counts, for people or as JSON.

Technique: *a monitor is a client that only looks*. It connects like any client, says
``monitor`` in its HELLO so the coordinator does not count it, asks for a STATUS report and
prints it: workers grouped by the ``worker`` command that started them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
from typing import Any

from ..commandline import (
    EXIT_AUTH,
    AddCommand,
    CommandError,
    authkey,
    common_options,
    tls_options,
    transport_url,
    why,
)
from ..pipesets.commands import render_pipe_sets


def cmd_status(args: argparse.Namespace) -> int:
    from ..client import RemoteClient
    from ..errors import AuthenticationError, MinipoolError

    class Monitor(RemoteClient):
        """A client the coordinator does not count among its clients: it only looks."""

        def hello(self) -> dict[str, Any]:
            return {**super().hello(), "monitor": True}

    url = transport_url(args.url)
    key = authkey(args)
    # This command reports every failure itself, in one line: the client's own warnings
    # (a connection lost) would only repeat it with a timestamp.
    logging.getLogger("minipool.client").setLevel(logging.ERROR if args.verbose < 1 else logging.NOTSET)
    try:
        client = Monitor(
            url, key, timeout=args.timeout, reconnect_timeout=0, **tls_options(args, [url], server=False)
        )
        try:
            report = client.status(timeout=args.timeout)
        finally:
            client.close()
    except AuthenticationError as exc:
        raise CommandError(f"{url}: {exc}", EXIT_AUTH) from None
    except (MinipoolError, OSError, TimeoutError, concurrent.futures.TimeoutError, ValueError) as exc:
        raise CommandError(f"no minipool coordinator answered at {url}: {why(exc)}") from None
    print(json.dumps(report, indent=2) if args.json else render_status(report))
    return 0


def _command_of(name: str) -> str:
    """The ``worker`` command a worker belongs to: children of one are named ``COMMAND/INDEX``."""
    group, slash, index = name.rpartition("/")
    return group if slash and index.isdigit() else name


def render_status(report: dict[str, Any]) -> str:
    """A coordinator's status report for people: its workers grouped by the command that
    started them (``HOST:PID`` of a ``worker --slots N``), children in index order."""
    lines = [
        f"coordinator {', '.join(report['urls'])}  up {report['uptime']:.0f}s  clients {report['clients']}",
        f"tasks: queued {report['queued']}  running {report['running']}  done {report['done']}  "
        f"failed {report['failed']}  requeued {report['requeued']}",
    ]
    workers = report["workers"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for w in workers:
        groups.setdefault(_command_of(w["name"]), []).append(w)
    lines.append(
        f"workers: {len(workers)} process(es) from {len(groups)} command(s), {report['slots']} slots"
    )
    rows: list[tuple[str, dict[str, Any] | None]] = []  # (first column, worker or a heading)
    for command in sorted(groups):
        members = sorted(
            groups[command], key=lambda w: int(w["name"].rpartition("/")[2]) if w["name"] != command else -1
        )
        if len(members) == 1 and members[0]["name"] == command:  # a command of one process
            rows.append((f"  {command}", members[0]))
            continue
        rows.append(
            (f"  {command}: {len(members)} process(es), {sum(w['slots'] for w in members)} slots", None)
        )
        rows += [(f"    {w['name']}", w) for w in members]
    width = max((len(first) for first, w in rows if w is not None), default=0)
    for first, w in rows:
        lines.append(
            first
            if w is None
            else f"{first:<{width}}  {w.get('kind', '?'):<7}  pid {w.get('pid', '?')}"
            f"  slots {w['slots']}  inflight {w['inflight']}  done {w['done']}"
            f"  python {w.get('python', '?')}"
        )
    lines += render_pipe_sets(report.get("registry", []))
    return "\n".join(lines)


def register(command: AddCommand) -> None:
    p = command("status", help="print a coordinator's workers, queue and counts")
    p.add_argument("url", help="the coordinator's URL")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for the coordinator's answer"
    )
    common_options(p, server=False)
    p.set_defaults(func=cmd_status)
