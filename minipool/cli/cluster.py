"""The commands that run a pool's processes: ``coordinator`` and ``worker``.

Technique: *a library's servers as programs*. The same ``Coordinator`` and ``Worker`` that
``Pool()`` embeds run here on their own, one per machine if need be; each checks its key, URLs
and TLS files before it opens a socket, and stops on SIGINT or SIGTERM. ``worker --slots N``
with process slots starts a :class:`~minipool.cluster.supervisor.Supervisor` that keeps N worker
processes alive, each started as ``worker --lifeline FD``.
"""

from __future__ import annotations

import argparse
import sys
import threading

from ..cluster.balance import POLICIES
from ..commandline import (
    DEFAULT_BIND,
    EXIT_AUTH,
    EXIT_USAGE,
    AddCommand,
    CommandError,
    authkey,
    common_options,
    short_key_warning,
    tls_options,
    transport_url,
    wait_for_signal,
    why,
)
from ..dashboard.cli import add_coordinator_options, start_dashboard
from ..journal import FSYNC_POLICIES


def cmd_coordinator(args: argparse.Namespace) -> int:
    from ..cluster.coordinator import Coordinator
    from ..errors import MinipoolError

    urls = [transport_url(url) for url in args.bind or [DEFAULT_BIND]]
    key = authkey(args)
    tls = tls_options(args, urls, server=True)
    warning = short_key_warning(key, urls)
    if warning:
        print(f"minipool coordinator: {warning}", file=sys.stderr, flush=True)
    try:
        coordinator = Coordinator(
            key,
            heartbeat=args.heartbeat,
            liveness=args.liveness,
            max_losses=args.max_losses,
            balance=args.balance,
            journal=args.journal,
            fsync=args.fsync,
            **tls,
        )
    except (MinipoolError, OSError, ValueError) as exc:
        raise CommandError(f"cannot start: {why(exc)}") from None
    if coordinator.journal is not None:
        print(
            f"minipool coordinator journal {args.journal} (fsync {args.fsync}): "
            f"{coordinator.journal.restored} unfinished task(s) restored",
            flush=True,
        )
    for url in urls:
        try:
            served = coordinator.serve(url)
        except (MinipoolError, OSError, ValueError) as exc:
            coordinator.close()
            raise CommandError(f"cannot listen on {url}: {why(exc)}") from None
        print(f"minipool coordinator listening on {served}", flush=True)
    dashboard = start_dashboard(coordinator, args, key)
    wait_for_signal(threading.Event())
    if dashboard is not None:
        dashboard.close()
    coordinator.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from ..cluster.supervisor import Supervisor, tell_supervisor, watch_lifeline
    from ..cluster.worker import Worker
    from ..errors import AuthenticationError, MinipoolError, MissingExtra, TransportError

    lifeline = watch_lifeline(args.lifeline) if args.lifeline is not None else None
    transport_url(args.connect)
    key = authkey(args)
    options = tls_options(args, [args.connect], server=False)
    if args.kind == "process" and args.slots > 1:
        extra = ["--cafile", args.cafile] if args.cafile else []
        extra += ["--insecure"] if args.insecure else []
        extra += ["--heartbeat", str(args.heartbeat), "--slowdown", str(args.slowdown)]
        for service in args.service:
            extra += ["--service", service]
        supervisor = Supervisor(
            args.connect, key, args.slots, name=args.name, reconnect=not args.no_reconnect, extra_args=extra
        )
        wait_for_signal(threading.Event(), until=lambda: supervisor.gave_up)
        gave_up = supervisor.gave_up
        supervisor.close()
        if gave_up:
            print(
                f"minipool worker: all {args.slots} worker processes were refused by the "
                f"coordinator at {args.connect} ({supervisor.refusal}); giving up",
                file=sys.stderr,
            )
            return EXIT_AUTH
        return 0
    worker = Worker(
        args.connect,
        key,
        slots=args.slots,
        kind=args.kind,
        name=args.name,
        reconnect=not args.no_reconnect,
        heartbeat=args.heartbeat,
        services=tuple(args.service),
        slowdown=args.slowdown,
        **options,
    )
    worker.handle_signals()
    try:
        worker.run()
    except AuthenticationError as exc:
        if lifeline is not None:
            tell_supervisor(lifeline, str(exc))
        raise CommandError(str(exc), EXIT_AUTH) from None
    except (TransportError, MissingExtra) as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    except (OSError, TimeoutError, MinipoolError) as exc:
        raise CommandError(f"cannot reach {args.connect}: {why(exc)}") from None
    return 0


def at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def register(command: AddCommand) -> None:
    p = command("coordinator", help="run a coordinator (broker + result backend)")
    p.add_argument(
        "--bind",
        action="append",
        metavar="URL",
        help=f"URL to listen on; repeat for several (default {DEFAULT_BIND})",
    )
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--liveness", type=int, default=3, help="missed heartbeats before a peer is dead")
    p.add_argument(
        "--max-losses", type=int, default=3, help="workers a task may kill before it fails with WorkerLost"
    )
    p.add_argument(
        "--balance", default="least-loaded", choices=list(POLICIES), help="how to pick a worker for each task"
    )
    p.add_argument(
        "--journal",
        metavar="DIR",
        help="write-ahead journal directory: survive a crash with every accepted task",
    )
    p.add_argument(
        "--fsync",
        default="everysec",
        choices=list(FSYNC_POLICIES),
        help="journal fsync policy, as Redis's appendfsync",
    )
    add_coordinator_options(p)
    common_options(p, server=True)
    p.set_defaults(func=cmd_coordinator)

    p = command("worker", help="run a worker that serves a coordinator")
    p.add_argument("--connect", required=True, metavar="URL", help="the coordinator's URL")
    p.add_argument("--slots", type=at_least_one, default=1, help="tasks run at once")
    p.add_argument(
        "--kind",
        choices=["process", "thread"],
        default="process",
        help="process: one process per slot; thread: threads in one process",
    )
    p.add_argument(
        "--name",
        help="worker name shown in status (default HOST:PID; with "
        "--slots N, the N processes are NAME/0 ... NAME/N-1)",
    )
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--no-reconnect", action="store_true", help="exit when the coordinator goes away")
    p.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME",
        help="a service name to register under (repeatable; default 'default')",
    )
    p.add_argument(
        "--slowdown",
        type=float,
        default=1.0,
        help="run every task this many times slower (to study load balancing)",
    )
    p.add_argument("--lifeline", type=int, metavar="FD", help=argparse.SUPPRESS)  # from a Supervisor
    common_options(p, server=False)
    p.set_defaults(func=cmd_worker)
