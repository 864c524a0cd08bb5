"""The ``chaos`` command: a fault-injecting TCP proxy to put in front of a coordinator.

Technique: *faults a teacher can flip while the pool runs*. The proxy
(:class:`~minipool.chaos.ChaosProxy`) starts with the faults given as options, then reads
commands on stdin (``cut``, ``stall``, ``set delay=0.2``...) so a class can watch a pool ride
out each fault as it is typed; its counters are printed every ``--interval`` seconds.
"""

from __future__ import annotations

import argparse
import inspect
import signal
import sys
import threading
from typing import Any

from ..commandline import AddCommand, CommandError, authkey, transport_url, wait_for_signal, why


def cmd_chaos(args: argparse.Namespace) -> int:
    from ..chaos import ChaosProxy

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

    def report() -> bool:  # the counters, every interval; only a signal stops the proxy
        if args.interval > 0:
            print(proxy.status_line(), flush=True)
        return False

    stop = threading.Event()
    reporter = None
    if args.report_to:
        reporter = threading.Thread(
            target=report_to_registry, args=(proxy, args, stop), daemon=True, name="minipool-chaos-report"
        )
        reporter.start()
    wait_for_signal(threading.Event(), until=report, interval=args.interval if args.interval > 0 else 0.5)
    stop.set()
    if reporter is not None:
        reporter.join(5)
    proxy.close()
    print(proxy.status_line(), flush=True)
    return 0


#: How often a proxy started with ``--report-to`` renews its registry entry (its TTL is 3x).
REPORT_EVERY = 1.0


def report_to_registry(proxy: Any, args: argparse.Namespace, stop: threading.Event) -> None:
    """Keep an entry in the registry of the coordinator at ``args.report_to`` with the proxy's
    counters as its metadata (kind ``chaos-proxy``), renewed every second, removed at exit: the
    dashboard shows it beside the workers whose links it breaks."""
    from ..client import RemoteClient
    from ..errors import MinipoolError

    key = authkey(args)
    entry = f"chaos {proxy.url()}"
    client: Any = None
    while not stop.is_set():
        try:
            if client is None:
                client = RemoteClient(transport_url(args.report_to), key, heartbeat=REPORT_EVERY)
            meta = {
                "kind": "chaos-proxy",
                "target": args.target,
                "faults": str(proxy.faults),
                **proxy.counters(),
            }
            client.register(
                entry, address=proxy.url(), services=["chaos-proxy"], ttl=3 * REPORT_EVERY, meta=meta
            )
        except (MinipoolError, OSError) as exc:
            print(
                f"minipool chaos: cannot report to {args.report_to}: {why(exc)}", file=sys.stderr, flush=True
            )
            if client is not None:
                client.close()
            client = None
        stop.wait(REPORT_EVERY)
    if client is not None:
        try:
            client.deregister(entry)
        except (MinipoolError, OSError):
            pass
        client.close()


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


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad ``chaos`` arguments with argparse's usage message, before anything starts."""
    from ..chaos import Faults, parse_address

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


def register(command: AddCommand) -> None:
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
    p.add_argument(
        "--report-to",
        metavar="URL",
        help="keep the counters in this coordinator's registry (its dashboard shows them); "
        "the key comes from $MINIPOOL_AUTHKEY or --authkey-file",
    )
    p.add_argument(
        "--authkey-file", metavar="FILE", help="file holding the shared key (default: $MINIPOOL_AUTHKEY)"
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    p.set_defaults(func=cmd_chaos, check=check_arguments)
