"""``tcp://`` and ``tls://``: length-prefixed frames over a TCP stream.

Technique: *message framing over a byte stream*. TCP delivers bytes, not messages: two sends may
arrive as one read, one send as three. The simplest correct fix -- and the floor every other
transport is measured against in ``python -m minipool.bench transports`` -- is a 4-byte
big-endian length before each message::

    +----------------+---------------------------+
    | length (u32 BE)| payload (length bytes)    |
    +----------------+---------------------------+

The reader checks the length against ``Options.max_message`` *before* allocating anything, so a
hostile 4 GB prefix costs nothing but a closed connection. TCP_NODELAY is on, a frame's prefix
and payload leave in one write (:meth:`TcpConnection.send_parts` gathers a message's head and
body with ``sendmsg``, so a large body is never copied behind its head), and a large payload is
received straight into an object of its own (see :mod:`minipool.transports.stream`).
``tls://`` is the same framing inside :mod:`ssl`; its server-side handshake runs in
:meth:`TcpConnection.handshake` so that a client that never completes it cannot stall the
accept loop.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Sequence
from urllib.parse import SplitResult

from ..errors import ConnectionClosed, ProtocolError, TransportError
from .base import Buffer, Connection, Listener, Options
from .stream import SocketStream, configure_socket

__all__ = ["TcpConnection", "TcpListener", "connect", "listen"]

_PREFIX = struct.Struct("!I")
JOIN_MAX = 64 * 1024  # messages up to this size (in all) are copied into one buffer to send


class TcpConnection(Connection):
    """A framed TCP (or TLS) connection."""

    def __init__(self, sock: socket.socket, options: Options, *, server_tls: bool = False) -> None:
        self._options = options
        self._server_tls = server_tls
        self._stream = SocketStream(sock, reuse_buffer=options.reuse_buffer)
        self.peer = self._stream.peer

    def handshake(self, timeout: float | None = None) -> None:
        if not self._server_tls:
            return
        context = self._options.ssl_context
        assert context is not None
        raw = self._stream.sock
        raw.settimeout(timeout)
        tls = None
        try:
            # wrap_socket detaches ``raw``: from here on only ``tls`` owns the descriptor.
            tls = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            tls.do_handshake()
        except (TimeoutError, ssl.SSLError, OSError) as exc:
            for sock in (tls, raw):
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()
            self._stream.close()
            if isinstance(exc, TimeoutError):
                raise TimeoutError("TLS handshake timed out") from exc
            raise ProtocolError(f"TLS handshake failed: {exc}") from exc
        tls.settimeout(None)
        self._stream = SocketStream(tls, reuse_buffer=self._options.reuse_buffer)
        self._server_tls = False

    def send(self, message: Buffer) -> None:
        size = len(message)
        if size <= JOIN_MAX:  # one small copy beats a two-part sendmsg
            self._stream.write((b"".join((_PREFIX.pack(size), message)),))
        else:
            self._stream.write((_PREFIX.pack(size), message))

    def send_parts(self, parts: Sequence[Buffer]) -> None:
        size = sum(map(len, parts))
        if size <= JOIN_MAX:
            self._stream.write((b"".join((_PREFIX.pack(size), *parts)),))
        else:  # the prefix and the (small) head in one buffer, the body as it is
            self._stream.write((_PREFIX.pack(size) + parts[0], *parts[1:]))

    def try_send(self, message: Buffer) -> bool:
        return self._stream.try_write(_PREFIX.pack(len(message)) + bytes(message))

    def send_many(self, messages: Sequence[Buffer]) -> None:
        parts: list[Buffer] = []
        pack, total = _PREFIX.pack, 0
        for message in messages:
            size = len(message)
            total += size
            parts.append(pack(size))
            parts.append(message)
        if not parts:
            return
        # Small batches (a burst of TASKs or results) are joined into one buffer: copying a
        # few KB costs less than handing the kernel a scatter list of two views per message.
        self._stream.write((b"".join(parts),) if total <= JOIN_MAX else parts)

    def recv(self, timeout: float | None = None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._stream.read_prefixed(_PREFIX, self._options.max_message, deadline)

    def recv_ready(self, limit: int) -> list[bytes]:
        return self._stream.read_ready(_PREFIX, self._options.max_message, limit)

    def close(self) -> None:
        self._stream.close()

    @property
    def sock(self) -> socket.socket:
        """The socket under the framing (TLS-wrapped after :meth:`handshake`), for a listener
        that speaks another protocol on it, as ``http://``'s pairing does."""
        return self._stream.sock

    @property
    def closed(self) -> bool:
        return self._stream.closed


class TcpListener(Listener):
    """A listening TCP socket; ``tls://`` wraps each accepted connection in its handshake."""

    def __init__(self, url: SplitResult, options: Options) -> None:
        self._options = options
        self._tls = url.scheme.lower() == "tls"
        if self._tls and options.ssl_context is None:
            raise TransportError("tls:// needs ssl_context= (a server-side ssl.SSLContext)")
        host = url.hostname or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, url.port or 0))
        self._sock.listen(512)
        port = self._sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.url = f"{url.scheme.lower()}://{shown}:{port}"
        self._closed = False

    def accept(self) -> TcpConnection:
        try:
            sock, _ = self._sock.accept()
        except OSError as exc:
            raise ConnectionClosed("listener closed") from exc
        configure_socket(sock, nodelay=self._options.nodelay)
        return self.wrap(sock)

    def wrap(self, sock: socket.socket) -> TcpConnection:
        """The connection for a freshly accepted socket. Transports that reuse this listener
        (ws://, ...) override it to speak their own protocol on the same accept loop."""
        return TcpConnection(sock, self._options, server_tls=self._tls)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


def open_socket(url: SplitResult, options: Options) -> socket.socket:
    """Connect a TCP socket to ``url``'s host and port, TLS-wrapped when a context is given.

    Shared by every socket-based transport (tcp, http, ws and their TLS forms).
    """
    host, port = url.hostname or "127.0.0.1", url.port or 0
    sock = socket.create_connection((host, port), timeout=options.handshake_timeout)
    configure_socket(sock, nodelay=options.nodelay)
    if options.ssl_context is not None:
        try:
            sock = options.ssl_context.wrap_socket(sock, server_hostname=host)
        except (ssl.SSLError, OSError):
            sock.close()
            raise
    sock.settimeout(None)
    return sock


def connect(url: SplitResult, options: Options) -> Connection:
    if url.scheme.lower() == "tls" and options.ssl_context is None:
        raise TransportError("tls:// needs ssl_context= (a client-side ssl.SSLContext)")
    return TcpConnection(open_socket(url, options), options)


def listen(url: SplitResult, options: Options) -> Listener:
    return TcpListener(url, options)
