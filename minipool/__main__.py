"""The command line: ``python -m minipool {coordinator,worker,status,topics,produce,consume,chaos} ...``.

Technique: *running the same pool across machines*. The coordinator and the workers that
``Pool()`` embeds are also programs of their own: start a coordinator on one machine, workers on
others, and point ``Pool(address=...)`` at it. The shared key comes from ``MINIPOOL_AUTHKEY`` or
``--authkey-file`` (never from a command-line argument, which ``ps`` would show to every user).

A command that cannot do its job says why in one line on stderr, never with a traceback, and
exits with one of the codes listed below (see :mod:`minipool.commandline`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import inspect
import json
import logging
import signal
import sys
import threading
from typing import Any

from .cluster.balance import POLICIES
from .commandline import (
    DEFAULT_BIND,
    EXIT_AUTH,
    EXIT_CODES,
    EXIT_USAGE,
    CommandError,
    HelpFormatter,
    authkey,
    minipool_version,
    plain,
    short_key_warning,
    tls_options,
    transport_url,
    why,
)
from .journal import FSYNC_POLICIES


def _common(parser: argparse.ArgumentParser, *, server: bool) -> None:
    parser.add_argument(
        "--authkey-file", metavar="FILE", help="file holding the shared key (default: $MINIPOOL_AUTHKEY)"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    if server:
        parser.add_argument("--certfile", help="TLS certificate (for tls://, https://, wss://)")
        parser.add_argument("--keyfile", help="TLS private key")
    else:
        parser.add_argument(
            "--cafile", help="CA bundle to verify a TLS coordinator with (default: the system's CAs)"
        )
        parser.add_argument(
            "--insecure", action="store_true", help="TLS without verifying the coordinator's certificate"
        )


def _wait_for_signal(stop: threading.Event, until: Any = None) -> None:
    """Block until SIGINT or SIGTERM (or until ``until()`` is true, checked twice a second)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        if until is not None and until():
            return


def cmd_coordinator(args: argparse.Namespace) -> int:
    from .cluster.coordinator import Coordinator
    from .errors import MinipoolError

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
    _wait_for_signal(threading.Event())
    coordinator.close()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .cluster.supervisor import Supervisor, tell_supervisor, watch_lifeline
    from .cluster.worker import Worker
    from .errors import AuthenticationError, MinipoolError, MissingExtra, TransportError

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
        _wait_for_signal(threading.Event(), until=lambda: supervisor.gave_up)
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


def cmd_status(args: argparse.Namespace) -> int:
    from .client import RemoteClient
    from .errors import AuthenticationError, MinipoolError

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
    from .pipesets.commands import render_pipe_sets

    lines += render_pipe_sets(report.get("registry", []))
    return "\n".join(lines)


def cmd_chaos(args: argparse.Namespace) -> int:
    from .chaos import ChaosProxy

    faults = {
        "delay": args.delay,
        "jitter": args.jitter,
        "bandwidth": args.bandwidth,
        "cut_rate": args.cut_rate,
        "cut_after": args.cut_after,
        "corrupt_rate": args.corrupt_rate,
        "refuse": args.refuse,
    }
    try:
        proxy = ChaosProxy(args.target, listen=args.listen, seed=args.seed, **faults)
    except OSError as exc:
        raise CommandError(f"cannot listen on {args.listen}: {why(exc)}") from None
    print(f"minipool chaos listening on {proxy.url()} -> {args.target}: {proxy.faults}", flush=True)

    def commands() -> None:  # a teacher flips faults by typing at the running proxy
        try:
            for line in sys.stdin:
                try:
                    reply = chaos_command(proxy, line)
                except ValueError as exc:
                    reply = f"error: {exc}"
                if reply:
                    print(reply, flush=True)
        except OSError:
            pass  # started in the background of a terminal (``&``): no commands, only faults

    # A background job that reads its terminal is stopped by SIGTTIN, every thread with it:
    # ignored, the read fails instead, and the proxy goes on.
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    threading.Thread(target=commands, daemon=True, name="minipool-chaos-commands").start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(args.interval if args.interval > 0 else 0.5):
        if args.interval > 0:
            print(proxy.status_line(), flush=True)
    proxy.close()
    print(proxy.status_line(), flush=True)
    return 0


def chaos_command(proxy: Any, line: str) -> str:
    """Apply one command typed at a running :class:`~minipool.chaos.ChaosProxy`; return what to print.

    commands: cut (every open connection), stall [SECONDS], resume, refuse on|off,
    set NAME=VALUE ... (set delay=0.2 cut_rate=0.01; none clears bandwidth or cut_after),
    status, help

    Raises:
        ValueError: an unknown command or a bad value.
    """
    words = line.split()
    if not words:
        return ""
    command, args = words[0].lower(), words[1:]
    if command == "cut" and not args:
        return f"cut {proxy.cut_all()} connection(s)"
    if command == "stall" and len(args) <= 1:
        seconds = float(args[0]) if args else None
        proxy.stall(seconds)
        return "stalled " + (f"for {seconds} s" if args else "until resume")
    if command == "resume" and not args:
        proxy.resume()
        return "resumed"
    if command == "refuse" and len(args) == 1 and args[0] in ("on", "off"):
        proxy.set(refuse=args[0] == "on")
        return f"refusing new connections: {args[0]}"
    if command == "set" and args:
        changes: dict[str, Any] = {}
        for arg in args:
            name, sep, value = arg.partition("=")
            if not sep:
                raise ValueError(f"expected NAME=VALUE, not {arg!r}")
            name = name.replace("-", "_")
            if name == "refuse":
                raise ValueError("use 'refuse on' or 'refuse off'")
            if value.lower() == "none":
                changes[name] = None
            else:
                changes[name] = int(value) if name == "cut_after" else float(value)
        try:
            return str(proxy.set(**changes))
        except TypeError as exc:
            raise ValueError(str(exc)) from None
    if command == "status" and not args:
        return proxy.status_line()
    if command == "help" and not args:
        return " ".join(inspect.getdoc(chaos_command).split("\n\n")[1].split())  # type: ignore[union-attr]
    raise ValueError(f"unknown command {line.strip()!r} (try 'help')")


def _checked(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad ``chaos`` arguments with argparse's usage message, before anything starts."""
    from .chaos import Faults, parse_address

    try:
        parse_address(args.target)
        parse_address(args.listen, any_port=True)
        Faults(
            args.delay,
            args.jitter,
            args.bandwidth,
            args.cut_rate,
            args.cut_after,
            args.corrupt_rate,
            args.refuse,
        )
    except ValueError as exc:
        parser.error(str(exc))


def _at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


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
    _common(p, server=True)
    p.set_defaults(func=cmd_coordinator)

    p = command("worker", help="run a worker that serves a coordinator")
    p.add_argument("--connect", required=True, metavar="URL", help="the coordinator's URL")
    p.add_argument("--slots", type=_at_least_one, default=1, help="tasks run at once")
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
    _common(p, server=False)
    p.set_defaults(func=cmd_worker)

    p = command("status", help="print a coordinator's workers, queue and counts")
    p.add_argument("url", help="the coordinator's URL")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for the coordinator's answer"
    )
    _common(p, server=False)
    p.set_defaults(func=cmd_status)

    from .topics.commands import add_commands  # topics, produce, consume

    add_commands(command)

    from .pipesets.commands import add_commands as add_pipe_set_command

    add_pipe_set_command(command)

    p = command(
        "chaos",
        help="run a fault-injecting TCP proxy in front of a coordinator",
        description="Forward connections to --target, injecting network faults. "
        "While it runs, type commands on stdin: cut, stall [S], resume, "
        "refuse on|off, set NAME=VALUE ..., status, help.",
    )
    p.add_argument("--target", required=True, metavar="HOST:PORT", help="where to forward connections")
    p.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1, a free port)",
    )
    p.add_argument("--delay", type=float, default=0.0, metavar="S", help="seconds each chunk is held")
    p.add_argument("--jitter", type=float, default=0.0, metavar="S", help="up to S seconds more, at random")
    p.add_argument(
        "--bandwidth", type=float, metavar="BYTES/S", help="per connection and direction (default unlimited)"
    )
    p.add_argument(
        "--cut-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a chunk closes its connection instead",
    )
    p.add_argument("--cut-after", type=int, metavar="BYTES", help="close each connection after BYTES")
    p.add_argument(
        "--corrupt-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a chunk has one bit flipped",
    )
    p.add_argument("--refuse", action="store_true", help="start refusing connections (service down)")
    p.add_argument("--seed", type=int, help="make each connection's faults reproducible")
    p.add_argument(
        "--interval",
        type=float,
        default=5.0,
        metavar="S",
        help="print the counters every S seconds (0: only at exit)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    p.set_defaults(func=cmd_chaos, check=_checked)
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


if __name__ == "__main__":
    sys.exit(main())
