"""What every command of ``python -m minipool`` shares: exit codes, one-line failures, checks.

Technique: *fail before starting, in one line*. A command checks what it was given (the key, each
URL's scheme, the TLS files) before it opens a socket, and turns every failure it can foresee
into a :class:`CommandError` with an exit code from :data:`EXIT_CODES`; ``main`` prints it as
one line. A mistake on the command line is told apart from a peer that cannot be reached and
from a key the coordinator refused, and a user never reads a traceback for any of them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ipaddress
import re
import signal
import threading
from collections.abc import Callable
from typing import Any

from .cluster.session import shared_key
from .errors import MinipoolError
from .transports.base import available_transports, parse_url

__all__ = [
    "AddCommand",
    "EXIT_AUTH",
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "CommandError",
    "HelpFormatter",
    "authkey",
    "common_options",
    "minipool_version",
    "plain",
    "short_key_warning",
    "tls_options",
    "transport_url",
    "wait_for_signal",
    "why",
]

#: What a module of :mod:`minipool.cli` is given to add its subcommands: called with a name and
#: ``argparse``'s ``add_parser`` options, it returns the subcommand's parser.
AddCommand = Callable[..., argparse.ArgumentParser]

EXIT_FAILED = 1  # the command could not do its job: nothing to listen on, no coordinator there
EXIT_USAGE = 2  # the command line is wrong (argparse's own code): fixing it is the user's move
EXIT_AUTH = 3  # a worker refused by the coordinator: restarting it cannot help
EXIT_CODES = {
    0: "done: a server stopped by SIGINT or SIGTERM, a report printed",
    EXIT_FAILED: "failed: cannot listen on a URL, or no minipool coordinator answered there",
    EXIT_USAGE: "bad command line: an unknown option or URL scheme, a malformed URL, no key",
    EXIT_AUTH: "refused: the coordinator rejected the key (a supervisor does not restart it)",
}
DEFAULT_BIND = "tcp://127.0.0.1:7878"
TLS_SCHEMES = ("tls", "https", "wss")
#: A key shorter than this, on a URL other machines can reach, gets a warning: one recorded
#: handshake (a challenge and its HMAC) lets anyone guess a short or human-chosen key offline.
#: 32 bytes is what ``secrets.token_hex(16)`` prints (128 random bits).
MIN_KEY_BYTES = 32


class CommandError(Exception):
    """What a command could not do: printed as one line, then the process exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def why(exc: BaseException) -> str:
    """An exception as the end of a one-line message (a bare TimeoutError has no text)."""
    if isinstance(exc, (TimeoutError, concurrent.futures.TimeoutError)) and not str(exc):
        return "no answer in time"
    return str(exc) or type(exc).__name__


def common_options(parser: argparse.ArgumentParser, *, server: bool) -> None:
    """The options every command that joins a pool takes: the key, logging, and TLS (a server's
    certificate, or how a client verifies one)."""
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


def wait_for_signal(
    stop: threading.Event, until: Callable[[], bool] | None = None, interval: float = 0.5
) -> None:
    """Block until SIGINT or SIGTERM (or until ``until()`` is true, checked every ``interval``)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(interval):
        if until is not None and until():
            return


def authkey(args: argparse.Namespace) -> bytes:
    try:
        if args.authkey_file:
            with open(args.authkey_file, "rb") as f:
                key = f.read().strip()
        else:
            key = shared_key(None)
    except OSError as exc:
        raise CommandError(f"cannot read the key: {exc}", EXIT_USAGE) from None
    if not key:
        raise CommandError("no key: set MINIPOOL_AUTHKEY or pass --authkey-file FILE", EXIT_USAGE)
    return key


def transport_url(url: str) -> str:
    """``url`` if minipool has a transport for it, else a usage error naming the ones it has."""
    try:
        scheme = parse_url(url).scheme.lower()
    except MinipoolError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    known = available_transports()
    if scheme not in known:
        raise CommandError(f"unknown scheme {scheme}:// in {url} (known: {', '.join(known)})", EXIT_USAGE)
    return url


def _reachable_from_elsewhere(url: str) -> bool:
    host = parse_url(url).hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: it resolves to some interface other machines can reach


def short_key_warning(key: bytes, urls: list[str]) -> str | None:
    """The warning to print when a short key guards a URL that other machines can reach."""
    exposed = [url for url in urls if _reachable_from_elsewhere(url)]
    if len(key) >= MIN_KEY_BYTES or not exposed:
        return None
    return (
        f"warning: the key is {len(key)} bytes and {exposed[0]} is reachable from other "
        f"machines; anyone who records one handshake can guess a short key offline: use "
        f'{MIN_KEY_BYTES} bytes or more, e.g. python -c "import secrets; '
        f'print(secrets.token_hex(32))"'
    )


def tls_options(args: argparse.Namespace, urls: list[str], *, server: bool) -> dict[str, Any]:
    from .tls import client_context, server_context

    secure = [url for url in urls if url.partition("://")[0].lower() in TLS_SCHEMES]
    try:
        if server and args.certfile:
            return {"ssl_context": server_context(args.certfile, args.keyfile)}
        if server and secure:
            raise CommandError(
                f"{secure[0]} needs --certfile FILE (and --keyfile FILE unless the key is in it)", EXIT_USAGE
            )
        if not server and (args.cafile or args.insecure or secure):
            # Without --cafile, the system's CAs vouch for the coordinator, as they do for curl.
            return {"ssl_context": client_context(args.cafile, insecure=args.insecure)}
    except OSError as exc:  # ssl.SSLError is one: a key that does not match its certificate
        raise CommandError(f"cannot load the TLS files: {why(exc)}", EXIT_USAGE) from None
    return {}


def plain(text: str) -> str:
    """reST as a terminal shows it: ``code`` and :role:`~a.b.Name` become code and Name."""
    text = re.sub(r":\w+:`~[\w.]*?(\w+)`", r"\1", text)
    text = re.sub(r":\w+:`([^`]+)`", r"\1", text)
    return text.replace("``", "")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default, unless its text already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.default in (None, False, [], argparse.SUPPRESS)
            or "default" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def minipool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("minipool")
    except PackageNotFoundError:  # run from a checkout, not installed
        from . import __version__

        return __version__
