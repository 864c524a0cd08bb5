"""``python -m minipool pipe-set MODULE:NAME --connect URL [--instances N]``: serve a pipe set.

Technique: *one command line per service, on any machine*. With ``--instances 1`` the process
is the instance; with more it starts that many instance processes of the same command and
waits for them, passing SIGTERM and SIGINT on, so stopping the command stops the set cleanly
(each instance acknowledges what it finished, leaves its group and the registry).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from ..commandline import EXIT_AUTH, CommandError, authkey, tls_options, transport_url, why
from ..errors import AuthenticationError, MinipoolError

__all__ = ["register", "render_pipe_sets"]


def register(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``pipe-set`` with ``command(name, help=...)``."""
    p = command("pipe-set", help="serve a pipe set (a pipeline fragment between exchange channels)")
    p.add_argument("spec", metavar="MODULE:NAME", help="the PipeSet: package.module:NAME or file.py:NAME")
    p.add_argument("--connect", required=True, metavar="URL", help="the coordinator's URL")
    p.add_argument("--instances", type=int, default=1, help="instance processes to run (default 1)")
    p.add_argument("--slowdown", type=float, default=0.0, metavar="S", help="extra seconds per record")
    p.add_argument("--ttl", type=float, default=3.0, metavar="S", help="registry entry lifetime")
    p.add_argument("--max-records", type=int, default=100, metavar="N", help="records per pull")
    p.add_argument(
        "--listen", default="tcp://127.0.0.1:0", metavar="URL", help="where a fast pipe's inlet listens"
    )
    p.add_argument("--authkey-file", metavar="FILE", help="file holding the shared key")
    p.add_argument("--cafile", help="CA bundle to verify a TLS coordinator with")
    p.add_argument("--insecure", action="store_true", help="TLS without verifying the certificate")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    p.set_defaults(func=cmd_pipe_set)


def cmd_pipe_set(args: argparse.Namespace) -> int:
    if args.instances < 1:
        raise CommandError("--instances must be at least 1", 2)
    url = transport_url(args.connect)
    key = authkey(args)
    from .serving import load

    try:
        pipe_set = load(args.spec)
    except (ImportError, ValueError, OSError) as exc:
        raise CommandError(f"cannot load {args.spec}: {exc}", 2) from None
    if args.instances > 1:
        return _supervise(args, key)
    from .instance import Instance

    logging.getLogger("minipool.client").setLevel(logging.ERROR if args.verbose < 1 else logging.NOTSET)
    try:
        instance = Instance(
            pipe_set,
            url,
            authkey=key,
            slowdown=args.slowdown,
            ttl=args.ttl,
            max_records=args.max_records,
            listen=args.listen,
            **tls_options(args, [url], server=False),
        )
    except AuthenticationError as exc:
        raise CommandError(f"{url}: {exc}", EXIT_AUTH) from None
    except (MinipoolError, OSError, TimeoutError) as exc:
        raise CommandError(f"no minipool coordinator answered at {url}: {why(exc)}") from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: instance.stop())
    print(f"minipool pipe-set: {instance.key} serving {pipe_set.source}", file=sys.stderr, flush=True)
    instance.run()
    return 0


def _supervise(args: argparse.Namespace, key: bytes) -> int:
    """Run ``--instances`` instance processes of this command and wait for them."""
    argv = [a for a in sys.argv[1:]]
    at = argv.index("--instances") if "--instances" in argv else -1
    if at >= 0:
        del argv[at : at + 2]
    argv = [a for a in argv if not a.startswith("--instances=")]
    env: dict[str, Any] = {**os.environ, "MINIPOOL_AUTHKEY": os.fsdecode(key)}
    children = [
        subprocess.Popen([sys.executable, "-m", "minipool", *argv], env=env) for _ in range(args.instances)
    ]

    def forward(signum: int, _: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    return max(child.wait() for child in children)


def render_pipe_sets(registry: list[dict[str, Any]]) -> list[str]:
    """The ``pipe sets:`` lines of ``minipool status``: each pipe set's live instances with
    their rate and the weight the centre gives them."""
    sets: dict[str, list[dict[str, Any]]] = {}
    for entry in registry:
        meta = entry.get("meta") or {}
        if meta.get("kind") == "pipe-set" and entry.get("expires_in", 1) > 0:
            sets.setdefault(str(meta.get("pipe_set")), []).append(meta)
    if not sets:
        return []
    lines = [f"pipe sets: {len(sets)}"]
    for name in sorted(sets):
        members = sorted(sets[name], key=lambda m: str(m.get("instance")))
        lines.append(f"  {name}: {len(members)} instance(s) reading {members[0].get('source')}")
        for m in members:
            weight = m.get("weight")
            lines.append(
                f"    {m.get('instance')}  records {m.get('records', 0)}  {m.get('records_per_s', 0)}/s"
                f"  weight {'?' if weight is None else weight}  dead {m.get('dead', 0)}"
            )
    return lines
