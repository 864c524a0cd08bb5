"""Sessions: an authenticated connection, its outgoing queue, and its heartbeat bookkeeping.

Technique: *the Paranoid Pirate pattern* (the ZeroMQ guide's reliable worker queue) over any
transport. Both ends send HEARTBEAT when they have had nothing else to say for one interval, and
each declares the other dead after ``liveness`` silent intervals. Nothing here depends on the
transport noticing a dead peer: a frozen process (SIGSTOP) keeps its TCP connection open forever,
and only the missing heartbeats give it away.

The read side of it is :func:`read_until_lost`, the one loop a client's reader and a worker
share: receive, hand each message on, send a HEARTBEAT when we have been quiet (the client; a
worker has a thread for that, since its reader runs tasks), adopt what the coordinator
announces, and give up after ``liveness`` silent intervals.

The other pieces:

* the handshake helpers run the HMAC challenge-response of :mod:`minipool.wire` and the HELLO that
  says who the peer is (client or worker), with a deadline, *before* anything else is read;
* what a session writes goes through an :class:`~minipool.cluster.outbox.Outbox`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from ..errors import ConnectionClosed, MinipoolError, ProtocolError
from ..transports.base import Connection, connect
from ..wire import HEAD_SIZE, ClientAuth, Kind, Message, ServerAuth, decode, encode
from .outbox import Outbox

__all__ = [
    "Backoff",
    "shared_key",
    "authkey_from_env",
    "AUTHKEY_ENV",
    "adopt_heartbeat",
    "read_until_lost",
    "Lost",
    "client_handshake",
    "server_handshake",
    "open_connection",
    "HEARTBEAT",
    "LIVENESS",
]

#: Seconds between heartbeats, and missed heartbeats before a peer is declared dead.
HEARTBEAT = 1.0
LIVENESS = 3
#: The environment variable that holds the shared key when none is passed.
AUTHKEY_ENV = "MINIPOOL_AUTHKEY"
_BEAT = encode(Message(Kind.HEARTBEAT))


def shared_key(value: bytes | str | None, *, env: bool = True) -> bytes:
    """The shared key as bytes: ``value`` (a str is UTF-8 encoded) or, when it is empty or None
    and ``env`` is true, the key in ``MINIPOOL_AUTHKEY``; ``b""`` when there is none (each caller
    says in its own words what to do about that)."""
    if not value and env:
        value = os.environ.get(AUTHKEY_ENV)
    if not value:
        return b""
    return value.encode() if isinstance(value, str) else value


def authkey_from_env() -> bytes | None:
    """The key in ``MINIPOOL_AUTHKEY``, as bytes, or ``None``."""
    return shared_key(None) or None


# Jitter from a generator of its own: the random module's shared one is the application's
# (a seeded sequence it relies on is not disturbed by a reconnect in a background thread).
_JITTER = random.Random()


class Backoff:
    """Exponential backoff with jitter, for reconnecting: waits of about ``first``, then twice
    that, up to ``cap`` seconds. Each wait is drawn from 0.5x to 1.5x its step, so that peers
    cut off together (a coordinator restarting) do not all come back in the same millisecond."""

    __slots__ = ("first", "cap", "step")

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self.step = first

    def next(self) -> float:
        """The next wait, in seconds."""
        wait = self.step * _JITTER.uniform(0.5, 1.5)
        self.step = min(self.step * 2, self.cap)
        return wait

    def reset(self) -> None:
        """After a success: the next failure waits ``first`` again."""
        self.step = self.first


def adopt_heartbeat(peer: HeartbeatPeer, announced: dict[str, Any]) -> None:
    """Take what the coordinator announces in its first HEARTBEAT: its heartbeat interval (and
    liveness) when shorter than ``peer``'s own, so that both ends time each other out alike;
    and its ``max_message``, the largest message it accepts, so that ``peer`` fails a task
    whose call or result would be larger instead of sending it (the coordinator would drop
    the connection, and the task would be run again only to fail the same way)."""
    try:
        peer.heartbeat = min(peer.heartbeat, float(announced["interval"]))
        peer.liveness = int(announced.get("liveness", peer.liveness))
    except (KeyError, TypeError, ValueError):
        pass
    try:
        peer.max_message = max(HEAD_SIZE, int(announced["max_message"]))
    except (KeyError, TypeError, ValueError):
        pass


def client_handshake(conn: Connection, key: bytes, hello: dict[str, Any], timeout: float) -> None:
    """Authenticate to a coordinator over ``conn`` and introduce ourselves.

    Raises:
        AuthenticationError: wrong key on either side.
        ProtocolError: the server is not a minipool coordinator.
        TimeoutError, ConnectionClosed: the server did not answer in time or hung up.
    """
    auth = ClientAuth(key)
    conn.send(auth.answer(conn.recv(timeout)))
    auth.check(conn.recv(timeout))
    conn.send(encode(Message(Kind.HELLO, headers=hello)))


def server_handshake(conn: Connection, key: bytes, timeout: float) -> dict[str, Any]:
    """Run the transport handshake, authenticate the peer, and return its HELLO headers.

    Every step shares one deadline, so a client that dawdles anywhere is dropped.

    Raises:
        AuthenticationError, ProtocolError, TimeoutError, ConnectionClosed.
    """
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.001, deadline - time.monotonic())

    conn.handshake(left())
    auth = ServerAuth(key)
    conn.send(auth.challenge())
    conn.send(auth.verify(conn.recv(left())))
    hello = decode(conn.recv(left()))
    if hello.kind is not Kind.HELLO:
        raise ProtocolError(f"expected HELLO after authentication, got {hello.kind.name}")
    return hello.headers


def open_connection(
    url: str, key: bytes, hello: dict[str, Any], *, timeout: float = 10.0, **options: Any
) -> Connection:
    """Connect to the coordinator at ``url``, authenticate, send HELLO; return the connection."""
    conn = connect(url, **options)
    try:
        client_handshake(conn, key, hello, timeout)
    except BaseException:
        conn.close()
        raise
    return conn


class HeartbeatPeer(Protocol):
    """What :func:`read_until_lost` reads and :func:`adopt_heartbeat` sets on a client or worker."""

    url: str
    heartbeat: float
    liveness: int
    max_message: int


class Lost(ConnectionClosed):
    """Why :func:`read_until_lost` gave up on the coordinator: it fell silent, sent an ERROR, or
    its connection closed (``closed``: nothing more is known than that)."""

    def __init__(self, message: str, *, closed: bool = False) -> None:
        super().__init__(message)
        self.closed = closed


def read_until_lost(
    peer: HeartbeatPeer,
    conn: Connection,
    outbox: Outbox,
    handle: Callable[[Message], object],
    *,
    beats: bool,
    poll_held: bool = False,
    guard: AbstractContextManager[Any] | None = None,
) -> MinipoolError:
    """Hand every message from the coordinator on ``conn`` to ``handle``, until the connection
    is lost; return why (a :class:`Lost`, or the error that a message or ``handle`` raised).

    An ERROR ends it; a HEARTBEAT with headers (the coordinator's announcement) is adopted
    (:func:`adopt_heartbeat`) before ``handle`` sees it; ``peer.liveness`` heartbeat intervals
    without a message mean the coordinator is gone. ``beats``: send a HEARTBEAT whenever we have
    sent nothing for an interval (from this thread: so the reader must never be busy for long).
    ``poll_held``: while the outbox holds messages back, only poll, and flush them once nothing
    more is waiting (a worker's results, batched while its tasks run in this very thread).
    ``guard``: held around each read (a worker's, so that another thread may read in turn).
    """
    guard = guard or nullcontext()
    silence = peer.heartbeat * peer.liveness
    last_recv = time.monotonic()
    try:
        while True:
            polling = poll_held and outbox.has_pending
            try:
                with guard:
                    data = conn.recv(timeout=0.0 if polling else peer.heartbeat if beats else silence)
            except TimeoutError:
                if polling:
                    outbox.flush()
                elif not beats or time.monotonic() - last_recv > silence:
                    return Lost(f"coordinator at {peer.url} stopped answering")
                else:
                    outbox.put(_BEAT)
                continue
            msg = decode(data)
            if beats:
                last_recv = time.monotonic()
                if last_recv - outbox.last_send >= peer.heartbeat:
                    outbox.put(_BEAT)
            if msg.kind is Kind.ERROR:
                return Lost(f"coordinator closed the connection: {msg.headers.get('reason')}")
            if msg.kind is Kind.HEARTBEAT and msg.headers:
                adopt_heartbeat(peer, msg.headers)
                silence = peer.heartbeat * peer.liveness
            handle(msg)
    except ConnectionClosed as exc:
        return exc if isinstance(exc, Lost) else Lost(f"lost the connection to {peer.url}", closed=True)
    except MinipoolError as exc:
        return exc
