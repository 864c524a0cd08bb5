"""``zmq+tcp://``: minipool connections over ZeroMQ ROUTER and DEALER sockets (pyzmq).

Technique: *the ZeroMQ guide's ROUTER/DEALER pattern* (the asynchronous server: one ROUTER
socket serves many DEALER peers, each message prefixed with its peer's identity). It maps onto
minipool's interface like this:

* :func:`listen` binds one ROUTER. The first message from a new identity makes a
  :class:`ZmqConnection` that :meth:`ZmqListener.accept` returns; its ``recv`` gets that
  identity's messages and its ``send`` routes replies to it.
* :func:`connect` opens one DEALER and waits for ZeroMQ's own handshake (so an unreachable
  server is an error now, as with TCP, not a silent queue).

Wire format: ZeroMQ already frames messages, so minipool adds only a kind, encoded in the frame
count. A one-frame message is data (the payload, untouched). A two-frame message is a control
message ``[kind, b""]``: ``HELLO`` (a DEALER announces itself, so the server can accept it
before it sends data -- minipool's handshake is server-first) and ``BYE`` (``close``). ZeroMQ
has no "connection closed" event for a ROUTER, so ``BYE`` is how a closed peer becomes
:class:`~minipool.errors.ConnectionClosed` on the other side; a peer that vanishes without one
is found by minipool's heartbeats (the guide's Paranoid Pirate pattern). A DEALER does see its
TCP link drop (a socket monitor), and then closes rather than silently reconnect, since
messages in flight may have been lost and minipool's own reconnect redoes the handshake.
A server checks that every message has the frames its kind says; a client checks only
messages whose first frame is at most one byte long (see :mod:`.dealersocket` for why).

Thread model: ZeroMQ sockets must never be used by two threads at once. Rather than a
separate I/O thread (two thread hops per message), whichever thread holds the socket's owner
lock uses it -- the leader/followers pattern of :mod:`minipool.transports.sharedsocket` -- so
a lone client, or a server thread answering its own connection, pays no thread switch at all.
The listener's accept thread waits *passively* on the shared ROUTER: it never takes the socket
from the connection threads, which would turn every request into a hand-off between threads.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import SplitResult

from ..errors import ConnectionClosed, FrameTooLarge, MissingExtra, ProtocolError
from .base import Buffer, Connection, Listener, Options
from .dealersocket import DealerSocket
from .routersocket import RouterSocket
from .sharedsocket import SharedSocket

__all__ = ["ZmqConnection", "ZmqListener", "connect", "listen", "HELLO", "BYE"]

HELLO = b"H"  #: control kind: a DEALER announces itself
BYE = b"B"  #: control kind: the sender closed its end
_LINGER_MS = 1000  # how long a closed socket keeps trying to deliver its final BYE


def _zmq() -> Any:
    try:
        import zmq
    except ImportError:
        raise MissingExtra("zmq+tcp:// transport", "zmq", "pyzmq") from None
    return zmq


def _frames(message: Buffer) -> tuple[bytes]:
    # Copy mutable buffers now: the message may be sent later by another thread.
    return (message if type(message) is bytes else bytes(message),)


class ZmqConnection(Connection):
    """One peer: the client's DEALER, or one identity behind the server's ROUTER."""

    def __init__(
        self,
        hub: SharedSocket,
        options: Options,
        peer: str,
        identity: bytes | None,
        on_close: Callable[[], None],
    ) -> None:
        self._hub, self._max_message, self.peer = hub, options.max_message, peer
        self._identity = identity
        self._prefix: tuple[bytes, ...] = () if identity is None else (identity,)
        self._on_close = on_close
        self.inbox = hub.inbox()
        self._closed = False
        self._gone = False  # the peer said BYE or vanished: sending is pointless

    def send(self, message: Buffer) -> None:
        if self._closed or self._gone:
            raise ConnectionClosed("connection closed")
        # Copy a mutable buffer now: the message may be sent later by another thread.
        self._hub.send_data(self._identity, message if type(message) is bytes else bytes(message))

    def send_many(self, messages: Sequence[Buffer]) -> None:
        if self._closed or self._gone:
            raise ConnectionClosed("connection closed")
        # One queue extension and one wake-up; ZeroMQ's I/O thread batches the TCP writes.
        self._hub.send_many([self._prefix + _frames(m) for m in messages])

    def recv(self, timeout: float | None = None) -> bytes:
        item = self._hub.wait(self.inbox, timeout)
        if type(item) is bytes:
            return item
        if isinstance(item, ConnectionClosed):
            self._hub.close_inbox(self.inbox)
        raise item

    def _deliver(self, payload: bytes) -> None:
        if len(payload) > self._max_message:  # MAXMSGSIZE should have stopped it
            payload = FrameTooLarge(len(payload), self._max_message)  # type: ignore
        self._hub.deliver(self.inbox, payload)

    def _lost(self, reason: str) -> None:
        """The peer closed or vanished: recv raises after any messages already queued."""
        self._gone = True
        self._hub.deliver(self.inbox, ConnectionClosed(reason))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._gone and not self._hub.closing:
            self._hub.send(self._prefix + (BYE, b""))
        self._hub.close_inbox(self.inbox)
        self._on_close()

    @property
    def closed(self) -> bool:
        return self._closed or self._gone


def _configure(zmq: Any, sock: Any, options: Options) -> None:
    sock.setsockopt(zmq.MAXMSGSIZE, options.max_message)
    # No high-water marks: a full queue would drop (ROUTER) or block (DEALER) messages,
    # breaking the reliable-channel contract. minipool's slots and prefetch bound the flow.
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.LINGER, _LINGER_MS)
    # A peer that does not finish ZeroMQ's own greeting in time (a port scanner, an HTTP
    # client, garbage) is dropped by libzmq, as the other transports drop a slow handshake.
    sock.setsockopt(zmq.HANDSHAKE_IVL, max(1, int(options.handshake_timeout * 1000)))


class ZmqListener(Listener):
    """A bound ROUTER; each new peer identity becomes a :class:`ZmqConnection`."""

    def __init__(self, url: SplitResult, options: Options) -> None:
        zmq = _zmq()
        self._options = options
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        _configure(zmq, sock, options)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # sending to a gone peer is an error, not a drop
        # A ZAP domain makes libzmq refuse the legacy ZMTP 1.0/2.0 greetings, which otherwise
        # accept any first byte as a length and then wait forever for that many bytes. (With
        # the NULL mechanism and no ZAP handler, ZMTP 3 peers are let in as before.)
        sock.setsockopt(zmq.ZAP_DOMAIN, b"minipool")
        host = url.hostname or "127.0.0.1"
        shown = f"[{host}]" if ":" in host else host
        if ":" in host:
            sock.setsockopt(zmq.IPV6, 1)
        try:
            sock.bind(f"tcp://{shown}:{url.port or '*'}")
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise OSError(exc.errno, f"cannot bind zmq+tcp://{shown}:{url.port}: {exc}") from None
        port = sock.getsockopt(zmq.LAST_ENDPOINT).decode().rsplit(":", 1)[1]
        self.url = f"zmq+tcp://{shown}:{port}"
        self._hub = RouterSocket(zmq, sock, self._dispatch)
        self._hub.on_unroutable = self._unroutable
        # Accepted connections not yet returned. Passive: the accept thread never competes
        # with the connection threads for the socket (see sharedsocket).
        self._pending = self._hub.inbox(passive=True)
        self._peers: dict[bytes, ZmqConnection] = {}
        self._table_lock = threading.Lock()
        # Identities whose connection was closed here: later stragglers are dropped, not
        # mistaken for a new client. Bounded so that churn cannot grow it forever.
        self._retired: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def _dispatch(self, frames: list[bytes]) -> None:
        # Data from a known peer never comes here: the hub routes it (hub.routes, kept below).
        identity = frames[0]
        conn = self._peers.get(identity)
        if conn is None:
            if identity in self._retired or frames[1:] == [BYE, b""]:
                return
            conn = ZmqConnection(
                self._hub, self._options, f"zmq:{identity.hex()}", identity, lambda: self._forget(identity)
            )
            self._peers[identity] = conn
            self._hub.routes[identity] = conn.inbox
            self._hub.deliver(self._pending, conn)
        if len(frames) == 2:
            conn._deliver(frames[1])
        elif len(frames) == 3 and frames[1] == BYE:
            self._forget(identity)
            conn._lost(f"{conn.peer} closed the connection")
        elif not (len(frames) == 3 and frames[1] == HELLO):
            self._hub.deliver(conn.inbox, ProtocolError(f"{conn.peer}: malformed zmq message"))

    def _forget(self, identity: bytes) -> None:
        with self._table_lock:  # called from the owner thread and from close() anywhere
            self._peers.pop(identity, None)
            self._hub.routes.pop(identity, None)
            self._retired[identity] = None
            if len(self._retired) > 65536:
                self._retired.popitem(last=False)

    def _unroutable(self, identity: bytes) -> None:
        conn = self._peers.get(identity)
        self._forget(identity)
        if conn is not None:
            conn._lost(f"{conn.peer} is gone")

    def accept(self) -> Connection:
        return self._hub.wait(self._pending, None)

    def close(self) -> None:
        if self._hub.closing:
            return
        with self._table_lock:
            peers = list(self._peers.values())
        for conn in peers:
            conn.close()  # tells each peer BYE, wakes its reader
        self._hub.close_inbox(self._pending)
        self._hub.close()


def listen(url: SplitResult, options: Options) -> Listener:
    """Bind a ROUTER at ``url`` (port 0 picks a free port).

    Raises:
        MissingExtra: pyzmq is not installed.
        OSError: the address cannot be bound.
    """
    return ZmqListener(url, options)


def connect(url: SplitResult, options: Options) -> Connection:
    """Connect a DEALER to ``url`` and wait for ZeroMQ's handshake with the server.

    Raises:
        MissingExtra: pyzmq is not installed.
        ConnectionRefusedError: nothing accepts connections there.
        TimeoutError: the handshake did not finish within ``options.handshake_timeout``.
    """
    zmq = _zmq()
    host = url.hostname or "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    sock = zmq.Context.instance().socket(zmq.DEALER)
    _configure(zmq, sock, options)
    if ":" in host:
        sock.setsockopt(zmq.IPV6, 1)
    monitor = sock.get_monitor_socket()
    try:
        sock.connect(f"tcp://{shown}:{url.port}")
        _await_handshake(zmq, monitor, options.handshake_timeout, f"{shown}:{url.port}")
    except BaseException:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
        raise
    conn: ZmqConnection

    def dispatch(frames: list[bytes]) -> None:  # (one-frame data goes straight to routes[None])
        if len(frames) == 1:
            conn._deliver(frames[0])
        elif frames == [BYE, b""]:
            conn._lost("the server closed the connection")
        else:
            hub.deliver(conn.inbox, ProtocolError("malformed zmq message from the server"))

    def on_event(frames: list[bytes]) -> None:
        from zmq.utils.monitor import parse_monitor_message

        if parse_monitor_message(frames)["event"] == zmq.EVENT_DISCONNECTED:
            conn._lost("the server went away")

    hub = DealerSocket(zmq, sock, dispatch, monitor, on_event)
    conn = ZmqConnection(hub, options, f"{shown}:{url.port}", None, hub.close)
    hub.routes[None] = conn.inbox
    hub.send((HELLO, b""))
    return conn


def _await_handshake(zmq: Any, monitor: Any, timeout: float, where: str) -> None:
    from zmq.utils.monitor import parse_monitor_message

    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not monitor.poll(int(remaining * 1000) + 1):
            raise TimeoutError(f"zmq+tcp://{where}: no ZeroMQ handshake within {timeout} s")
        event = parse_monitor_message(monitor.recv_multipart())["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return
        if event in (zmq.EVENT_CONNECT_RETRIED, zmq.EVENT_CLOSED, zmq.EVENT_DISCONNECTED) or (
            event
            & (
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            )
        ):
            raise ConnectionRefusedError(f"zmq+tcp://{where}: cannot connect (event {event})")
