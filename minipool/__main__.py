"""The command line: ``python -m minipool {coordinator,worker,status} ...``.

Technique: *running the same pool across machines*. The coordinator and the workers that
``Pool()`` embeds are also programs of their own: start a coordinator on one machine, workers on
others, and point ``Pool(address=...)`` at it. The shared key comes from ``MINIPOOL_AUTHKEY`` or
``--authkey-file`` (never from a command-line argument, which ``ps`` would show to every user).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

EXIT_AUTH = 3  # a worker refused by the coordinator: restarting it cannot help


def _authkey(args: argparse.Namespace) -> bytes:
    if args.authkey_file:
        with open(args.authkey_file, "rb") as f:
            key = f.read().strip()
    else:
        key = os.environ.get("MINIPOOL_AUTHKEY", "").encode()
    if not key:
        sys.exit("minipool: no key: set MINIPOOL_AUTHKEY or pass --authkey-file FILE")
    return key


def _tls_options(args: argparse.Namespace, server: bool) -> dict[str, Any]:
    from .tls import client_context, server_context

    if server and args.certfile:
        return {"ssl_context": server_context(args.certfile, args.keyfile)}
    if not server and (args.cafile or args.insecure):
        return {"ssl_context": client_context(args.cafile, insecure=args.insecure)}
    return {}


def _common(parser: argparse.ArgumentParser, *, server: bool) -> None:
    parser.add_argument("--authkey-file", metavar="FILE",
                        help="file holding the shared key (default: $MINIPOOL_AUTHKEY)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    if server:
        parser.add_argument("--certfile", help="TLS certificate (for tls://, https://, wss://)")
        parser.add_argument("--keyfile", help="TLS private key")
    else:
        parser.add_argument("--cafile", help="CA bundle to verify a TLS coordinator with")
        parser.add_argument("--insecure", action="store_true",
                            help="TLS without verifying the coordinator's certificate")


def _wait_for_signal(stop: threading.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


def cmd_coordinator(args: argparse.Namespace) -> int:
    from .cluster.coordinator import Coordinator

    coordinator = Coordinator(_authkey(args), heartbeat=args.heartbeat, liveness=args.liveness,
                              max_losses=args.max_losses, balance=args.balance,
                              journal=args.journal, fsync=args.fsync,
                              **_tls_options(args, server=True))
    if coordinator.journal is not None:
        print(f"minipool coordinator journal {args.journal} (fsync {args.fsync}): "
              f"{coordinator.journal.restored} unfinished task(s) restored", flush=True)
    for url in args.bind or ["tcp://127.0.0.1:7878"]:
        print(f"minipool coordinator listening on {coordinator.serve(url)}", flush=True)
    _wait_for_signal(threading.Event())
    coordinator.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .cluster.supervisor import Supervisor
    from .cluster.worker import Worker
    from .errors import AuthenticationError

    key = _authkey(args)
    options = _tls_options(args, server=False)
    if args.kind == "process" and args.slots > 1:
        extra = ["--cafile", args.cafile] if args.cafile else []
        extra += ["--insecure"] if args.insecure else []
        extra += ["--heartbeat", str(args.heartbeat), "--slowdown", str(args.slowdown)]
        for service in args.service:
            extra += ["--service", service]
        supervisor = Supervisor(args.connect, key, args.slots, name=args.name or "worker",
                                reconnect=not args.no_reconnect, extra_args=extra)
        _wait_for_signal(threading.Event())
        supervisor.close()
        return 0
    worker = Worker(args.connect, key, slots=args.slots, kind=args.kind, name=args.name,
                    reconnect=not args.no_reconnect, heartbeat=args.heartbeat,
                    services=tuple(args.service), slowdown=args.slowdown, **options)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.stop())
    try:
        worker.run()
    except AuthenticationError as exc:
        print(f"minipool worker: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except (OSError, TimeoutError) as exc:
        print(f"minipool worker: cannot reach {args.connect}: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .client import RemoteClient

    client = RemoteClient(args.url, _authkey(args), **_tls_options(args, server=False))
    try:
        report = client.status()
    finally:
        client.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"coordinator {', '.join(report['urls'])}  up {report['uptime']:.0f}s  "
          f"clients {report['clients']}")
    print(f"tasks: queued {report['queued']}  running {report['running']}  done {report['done']}  "
          f"failed {report['failed']}  requeued {report['requeued']}")
    print(f"workers ({len(report['workers'])}, {report['slots']} slots):")
    for w in report["workers"]:
        print(f"  {w['id']:<28} {w.get('kind', '?'):<8} slots {w['slots']}  inflight {w['inflight']}"
              f"  done {w['done']}  {w.get('host', '')}:{w.get('pid', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m minipool", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("coordinator", help="run a coordinator (broker + result backend)")
    p.add_argument("--bind", action="append", metavar="URL",
                   help="URL to listen on; repeat for several (default tcp://127.0.0.1:7878)")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--liveness", type=int, default=3, help="missed heartbeats before a peer is dead")
    p.add_argument("--max-losses", type=int, default=3,
                   help="workers a task may kill before it fails with WorkerLost")
    p.add_argument("--balance", default="least-loaded",
                   choices=["least-loaded", "round-robin", "random", "latency"],
                   help="how to pick a worker for each task")
    p.add_argument("--journal", metavar="DIR",
                   help="write-ahead journal directory: survive a crash with every accepted task")
    p.add_argument("--fsync", default="everysec", choices=["always", "everysec", "no"],
                   help="journal fsync policy, as Redis's appendfsync (default everysec)")
    _common(p, server=True)
    p.set_defaults(func=cmd_coordinator)

    p = sub.add_parser("worker", help="run a worker that serves a coordinator")
    p.add_argument("--connect", required=True, metavar="URL", help="the coordinator's URL")
    p.add_argument("--slots", type=int, default=1, help="tasks run at once")
    p.add_argument("--kind", choices=["process", "thread"], default="process",
                   help="process: one process per slot; thread: threads in one process")
    p.add_argument("--name", help="worker name shown in status")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--no-reconnect", action="store_true", help="exit when the coordinator goes away")
    p.add_argument("--service", action="append", default=[], metavar="NAME",
                   help="a service name to register under (repeatable; default 'default')")
    p.add_argument("--slowdown", type=float, default=1.0,
                   help="run every task this many times slower (to study load balancing)")
    _common(p, server=False)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="print a coordinator's workers, queue and counts")
    p.add_argument("url", help="the coordinator's URL")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p, server=False)
    p.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
