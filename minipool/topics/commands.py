"""The topic commands: ``python -m minipool topics list|create|describe``, ``produce TOPIC``
(lines from stdin) and ``consume TOPIC`` (records to stdout), like Kafka's console tools.

Technique: *a log you can pipe*. ``tail -F app.log | python -m minipool produce logs`` makes a
file's new lines records, and ``python -m minipool consume logs --group stats`` turns them back
into lines for the next program: the seed's log-collection scenario with no code at all. Every
failure is one line and an exit code, as for the other commands (:mod:`minipool.commandline`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from ..commandline import DEFAULT_BIND, EXIT_AUTH, CommandError, authkey, tls_options, transport_url, why
from ..errors import AuthenticationError, MinipoolError, TopicError
from ..wire import Kind
from .connection import TopicClient, connect, request

__all__ = ["register", "render_topics"]


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=DEFAULT_BIND, help="the coordinator's URL")
    parser.add_argument(
        "--authkey-file", metavar="FILE", help="file holding the shared key (default: $MINIPOOL_AUTHKEY)"
    )
    parser.add_argument("--cafile", help="CA bundle to verify a TLS coordinator with")
    parser.add_argument("--insecure", action="store_true", help="TLS without verifying the certificate")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds to wait for answers"
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``topics``, ``produce`` and ``consume`` with ``command(name, help=...)``, the way
    ``python -m minipool`` makes each of its subcommands."""
    p = command("topics", help="list, create or describe a coordinator's topics")
    p.add_argument("action", choices=["list", "create", "describe"])
    p.add_argument("topic", nargs="?", help="the topic (create: required; describe: all if omitted)")
    p.add_argument("--partitions", type=int, default=1, help="create: partitions")
    p.add_argument("--segment-bytes", type=int, help="create: bytes per segment file")
    p.add_argument("--retention-bytes", type=int, help="create: bytes kept per partition")
    p.add_argument("--retention-seconds", type=float, help="create: seconds a record is kept")
    p.add_argument("--group", help="describe: only this consumer group")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _options(p)
    p.set_defaults(func=cmd_topics)

    p = command("produce", help="append each line of stdin to a topic as a record")
    p.add_argument("topic")
    p.add_argument("--key", help="the key of every record (default: none, spread over partitions)")
    _options(p)
    p.set_defaults(func=cmd_produce)

    p = command("consume", help="print a topic's records, one per line")
    p.add_argument("topic")
    p.add_argument("--group", help="consume as a member of this consumer group")
    p.add_argument("--from-beginning", action="store_true", help="a new group starts at the oldest record")
    p.add_argument("--max", type=int, metavar="N", help="stop after N records")
    p.add_argument("--idle", type=float, metavar="S", help="stop after S seconds without a record")
    _options(p)
    p.set_defaults(func=cmd_consume)


def _connected(args: argparse.Namespace, make: Callable[[str, dict[str, Any]], Any]) -> Any:
    url = transport_url(args.url)
    options = {"authkey": authkey(args), "timeout": args.timeout, **tls_options(args, [url], server=False)}
    logging.getLogger("minipool.client").setLevel(logging.ERROR if args.verbose < 1 else logging.NOTSET)
    try:
        return make(url, options)
    except AuthenticationError as exc:
        raise CommandError(f"{url}: {exc}", EXIT_AUTH) from None
    except (MinipoolError, OSError, TimeoutError) as exc:
        raise CommandError(f"no minipool coordinator answered at {url}: {why(exc)}") from None


def _ask(client: TopicClient, args: argparse.Namespace, headers: dict[str, Any]) -> Any:
    try:
        return request(client, Kind.TOPIC_ADMIN, headers, args.timeout)
    except TopicError as exc:
        raise CommandError(str(exc)) from None
    except (MinipoolError, OSError, concurrent.futures.TimeoutError) as exc:
        raise CommandError(f"the coordinator at {args.url} did not answer: {why(exc)}") from None


def cmd_topics(args: argparse.Namespace) -> int:
    if args.action == "create" and not args.topic:
        raise CommandError("topics create needs a topic name", 2)

    def make(url: str, options: dict[str, Any]) -> TopicClient:
        key = options.pop("authkey")
        return connect(url, None, key, 0, options)

    client = _connected(args, make)
    try:
        if args.action == "list":
            names = _ask(client, args, {"op": "list"})
            print(json.dumps(names) if args.json else "\n".join(names))
        elif args.action == "create":
            config = {"partitions": args.partitions}
            for field in ("segment_bytes", "retention_bytes", "retention_seconds"):
                if getattr(args, field) is not None:
                    config[field] = getattr(args, field)
            entry = _ask(client, args, {"op": "create", "topic": args.topic, "config": config})
            print(json.dumps(entry, indent=2) if args.json else render_topics([{**entry, "groups": []}]))
        else:
            report = _ask(client, args, {"op": "describe", "topic": args.topic, "group": args.group})
            print(json.dumps(report, indent=2) if args.json else render_topics(report))
    finally:
        client.close()
    return 0


def render_topics(report: list[dict[str, Any]]) -> str:
    """``describe()``'s report for people: partitions with their offsets, groups with lag."""
    lines = []
    for topic in report:
        lines.append(f"topic {topic['name']}: {len(topic['partitions'])} partition(s)")
        for p in topic["partitions"]:
            lines.append(
                f"  partition {p['partition']}: offsets {p['start']}..{p['end']}"
                f" ({p['end'] - p['start']} held, {p['bytes']:,} bytes in {p['segments']} segment(s))"
            )
        for group in topic.get("groups", ()):
            members = ", ".join(f"{m['member']} {m['partitions']}" for m in group["members"]) or "none"
            lines.append(f"  group {group['name']}: lag {group['lag']}, members: {members}")
            for p in group["partitions"]:
                lines.append(
                    f"    partition {p['partition']}: committed {p['committed']}, lag {p['lag']},"
                    f" pending {p['pending']}"
                )
    return "\n".join(lines) if lines else "no topics"


def cmd_produce(args: argparse.Namespace) -> int:
    from .producer import Producer

    def make(url: str, options: dict[str, Any]) -> Producer:
        options.pop("timeout")
        return Producer(url, reconnect_timeout=args.timeout, **options)

    producer = _connected(args, make)
    count = 0
    try:
        for line in sys.stdin.buffer:
            producer.send(args.topic, line.rstrip(b"\r\n"), key=args.key)
            count += 1
        producer.flush()
    except TopicError as exc:
        raise CommandError(str(exc)) from None
    finally:
        producer.close()
    print(f"minipool produce: {count} record(s) appended to {args.topic}", file=sys.stderr)
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from .consumer import Consumer

    reset = "earliest" if args.from_beginning else "latest"

    def make(url: str, options: dict[str, Any]) -> Consumer:
        options.pop("timeout")
        return Consumer(
            args.topic,
            address=url,
            group=args.group,
            auto_offset_reset=reset,
            timeout=args.idle,
            reconnect_timeout=args.timeout,
            **options,
        )

    consumer = _connected(args, make)
    count = 0
    out = sys.stdout.buffer
    try:
        for record in consumer:
            out.write(record.value + b"\n")
            out.flush()
            count += 1
            if args.max is not None and count >= args.max:
                break
    except TopicError as exc:
        raise CommandError(str(exc)) from None
    finally:
        consumer.close()
    return 0
