"""The dashboard's command line: ``coordinator --dashboard HOST:PORT`` and ``dashboard URL``.

Technique: *show a secret once, or hand it over in a file*. The token that opens a dashboard
is derived from the authkey; the coordinator prints the page's URL with it once at start, or
writes it to ``--dashboard-token-file`` (mode 0600) and prints the URL without it.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from ..commandline import CommandError, authkey, tls_options, transport_url, why
from ..errors import MinipoolError
from . import Dashboard, dashboard_token
from .server import DashboardServer

__all__ = ["add_coordinator_options", "start_dashboard", "register"]


def add_coordinator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dashboard", metavar="HOST:PORT", help="serve the live dashboard, its API and /metrics here"
    )
    parser.add_argument(
        "--dashboard-token-file",
        metavar="FILE",
        help="write the dashboard's token here instead of printing it",
    )


def _announce(server: DashboardServer, token_file: str | None) -> None:
    if token_file:
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(server.token + "\n")
        print(f"minipool dashboard on {server.url}/ (token in {token_file})", flush=True)
    else:
        print(f"minipool dashboard on {server.private_url}", flush=True)


def start_dashboard(coordinator: Any, args: argparse.Namespace, key: bytes) -> Dashboard | None:
    """The coordinator command's dashboard, if ``--dashboard`` asked for one."""
    if not args.dashboard:
        return None
    dashboard = Dashboard(coordinator)
    try:
        dashboard.serve(dashboard_token(key), args.dashboard)
    except (OSError, ValueError) as exc:
        dashboard.close()
        raise CommandError(f"cannot serve the dashboard on {args.dashboard}: {why(exc)}") from None
    assert dashboard.server is not None
    _announce(dashboard.server, args.dashboard_token_file)
    return dashboard


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .remote import RemoteBackend

    url = transport_url(args.url)
    key = authkey(args)
    try:
        backend = RemoteBackend(url, key, **tls_options(args, [url], server=False))
    except (MinipoolError, OSError, TimeoutError, ValueError) as exc:
        raise CommandError(f"no minipool coordinator answered at {url}: {why(exc)}") from None
    try:
        server = DashboardServer(backend, dashboard_token(key), args.bind)
    except OSError as exc:
        backend.close()
        raise CommandError(f"cannot serve on {args.bind}: {why(exc)}") from None
    _announce(server, args.token_file)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.close()
    backend.close()
    return 0


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``dashboard URL`` with the parser factory of ``python -m minipool``."""
    p = command("dashboard", help="serve a live dashboard of a running coordinator")
    p.add_argument(
        "url", help="the coordinator's URL (it must run with --dashboard, which keeps the history)"
    )
    p.add_argument("--bind", default="127.0.0.1:0", metavar="HOST:PORT", help="where to serve the page")
    p.add_argument("--token-file", metavar="FILE", help="write the token here instead of printing it")
    p.add_argument(
        "--authkey-file", metavar="FILE", help="file holding the shared key (default: $MINIPOOL_AUTHKEY)"
    )
    p.add_argument("--cafile", help="CA bundle to verify a TLS coordinator with")
    p.add_argument("--insecure", action="store_true", help="TLS without verifying the certificate")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    p.set_defaults(func=cmd_dashboard)
