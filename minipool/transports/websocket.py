"""``ws://`` and ``wss://``: minipool messages as WebSocket messages (RFC 6455, from scratch).

Technique: *a protocol upgrade over HTTP, then framing with its own rules*. Seed 000 §3.1 weighs
HTTP against WebSocket; this transport shows what WebSocket costs and buys. A connection starts
as an HTTP/1.1 ``GET`` with ``Upgrade: websocket`` (heads parsed by the shared sans-I/O
:mod:`~minipool.transports.http11`, judged by the sans-I/O
:mod:`~minipool.transports.wshandshake`); the server proves it understood by hashing the
client's ``Sec-WebSocket-Key`` with the RFC's GUID into ``Sec-WebSocket-Accept``, answering
``101``.
From then on both sides exchange frames, encoded and decoded by the sans-I/O
:mod:`~minipool.transports.wsframes`. This module is only the thin I/O loop around both:

* the socket work is :class:`~minipool.transports.stream.SocketStream` (buffered
  ``read_exact``, locked gather-writes) and the accept loop is
  :class:`~minipool.transports.tcp.TcpListener`'s, so ``ws://`` differs from ``tcp://`` only in
  its handshake and framing -- which is exactly what the transport benchmark measures;
* the upgrade runs in :meth:`WebSocketConnection.handshake`, in the serving thread, with a
  deadline; a plain ``GET /health`` gets a small JSON ``200`` (for curl and load balancers);
* minipool sends BINARY messages; ``recv`` returns the next data message (a TEXT message as its
  UTF-8 bytes), answering pings with pongs on the way;
* a protocol violation is answered with the close code the RFC asks for (1002, 1007, 1009)
  before the connection is dropped, and raised as
  :class:`~minipool.transports.wsframes.WebSocketProtocolError`.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from urllib.parse import SplitResult

from ..errors import ConnectionClosed, FrameTooLarge, ProtocolError, TransportError
from .base import Buffer, Connection, Listener, Options
from .http11 import (
    MAX_HEAD,
    REASONS,
    Headers,
    HttpError,
    Request,
    error_response,
    format_response,
    health_response,
    parse_request,
    parse_response,
)
from .stream import RESUMABLE_READ
from .tcp import TcpConnection, TcpListener, open_socket
from .wsframes import (
    CloseCode,
    Frame,
    Message,
    Opcode,
    WebSocketProtocolError,
    binary_frame_cutter,
    frame_header,
    parse_close,
    parse_frame,
    serialize_close,
    small_binary_frame,
)
from .wshandshake import (
    accept_key,
    check_request,
    check_response,
    is_upgrade,
    new_key,
    upgrade_request,
)
from .wsmask import MaskKeys, masked_copy
from .wsmessages import MessageAssembler

__all__ = ["WebSocketConnection", "WebSocketListener", "accept_key", "connect", "listen", "refusal_headers"]

_LINGER = 1.0  # seconds to wait for the peer's half of the closing handshake
_LINGER_BYTES = 1 << 20  # ...and at most this much unread data to drain meanwhile
_JOIN_BELOW = 16 * 1024  # frames up to this size are copied into one buffer, not gathered


def refusal_headers(status: int) -> list[tuple[str, str]]:
    """The headers RFC 6455 and RFC 9110 ask for beside a refused upgrade's ``status``."""
    if status == 426:
        return [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
    if status == 405:
        return [("Allow", "GET")]
    return []


class WebSocketConnection(TcpConnection):
    """One WebSocket connection, either end.

    Attributes:
        origin: the client's ``Origin`` header (server side), or ``None``. Browsers always send
            it; check it against a list of allowed sites before trusting a browser client.
        path: the request target the client asked for (server side).
        request_headers: the client's upgrade request headers (server side).
        close_code, close_reason: the code and reason of the peer's close frame, once one
            arrived (1005 when it carried no code, 1006 when the connection broke instead).
    """

    def __init__(
        self, sock: socket.socket, options: Options, *, client: bool, server_tls: bool = False
    ) -> None:
        super().__init__(sock, options, server_tls=server_tls)
        self._client = client
        self._mask_key = MaskKeys()  # §5.3: a fresh unpredictable key per frame a client sends
        self._assembler = MessageAssembler(options.max_message)
        # The common frame (whole, BINARY) is cut out in one pass; parse_frame does the rest.
        self._cut = binary_frame_cutter(masked=not client, max_size=options.max_message)
        self._pending: tuple[object, int] | None = None  # a frame half-read when recv timed out
        self._close_lock = threading.Lock()
        self._close_sent = False
        self._reader: int | None = None  # thread id of a recv in progress
        self.origin: str | None = None
        self.path = "/"
        self.request_headers = Headers()
        self.close_code: int | None = None
        self.close_reason = ""

    # -- opening handshake ---------------------------------------------------------------------

    def handshake(self, timeout: float | None = None) -> None:
        """Server side: TLS (for wss://), then read and answer the upgrade request.

        Raises:
            TimeoutError: the request was not complete within ``timeout`` (answered 408).
            ProtocolError: not a valid upgrade (:class:`HttpError` answered with its status).
            ConnectionClosed: the client left, or this was a health check (answered 200).
        """
        if self._client:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        super().handshake(timeout)  # TLS for wss://; nothing for ws://
        try:
            request = self.read_request(deadline)
            if (
                request.method == "GET"
                and request.target.split("?")[0] == "/health"
                and (not is_upgrade(request.headers))
            ):
                self.answer(health_response("websocket"))
                raise ConnectionClosed("health check answered")
            self.upgrade(request)
        except TimeoutError:
            self.answer(error_response(408, "request head not received in time"))
            raise
        except HttpError as exc:
            self.answer(error_response(exc.status, exc.detail, refusal_headers(exc.status)))
            raise
        except BaseException:
            self._stream.close()
            raise

    def read_request(self, deadline: float | None = None) -> Request:
        """Server side: read and parse one request head. A server that answers plain HTTP and
        WebSocket on one port (the dashboard) routes on it, then calls :meth:`upgrade` or
        :meth:`answer`.

        Raises:
            HttpError: malformed (400), too large (431), unsupported version (505).
            TimeoutError, ConnectionClosed: as the stream's reads.
        """
        try:
            head = self._stream.read_until(b"\r\n\r\n", MAX_HEAD, deadline)
        except FrameTooLarge as exc:
            raise HttpError(431, "request head too large") from exc
        return parse_request(head)

    def read_body(self, size: int, deadline: float | None = None) -> bytes:
        """Server side: the ``size``-byte body of a plain request :meth:`read_request` read."""
        return bytes(self._stream.read_exact(size, deadline)) if size else b""

    def upgrade(self, request: Request) -> None:
        """Server side: accept ``request`` as a WebSocket upgrade and answer 101.

        Raises:
            HttpError: not a valid upgrade (not answered: the caller decides how).
        """
        key = check_request(request)
        self.origin = request.headers.get("Origin")
        self.path = request.target
        self.request_headers = request.headers
        # No extension or subprotocol is accepted: not answering them declines them (§9.1).
        self._stream.write(
            [
                format_response(
                    101,
                    REASONS[101],
                    [
                        ("Upgrade", "websocket"),
                        ("Connection", "Upgrade"),
                        ("Sec-WebSocket-Accept", accept_key(key)),
                    ],
                )
            ]
        )

    def answer(self, response: bytes) -> None:
        """Send a final HTTP response and close: the request did not become a WebSocket."""
        try:
            self._stream.write([response])
        except ConnectionClosed:
            pass
        self._finish()

    def _client_handshake(self, url: SplitResult, origin: str | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        key = new_key()
        self._stream.write([upgrade_request(url, key, origin)])
        try:
            response = parse_response(self._stream.read_until(b"\r\n\r\n", MAX_HEAD, deadline))
        except FrameTooLarge as exc:
            raise ProtocolError("handshake response head too large") from exc
        check_response(response, key)

    # -- data ----------------------------------------------------------------------------------

    def _frame_parts(self, opcode: int, payload: Buffer) -> tuple[Buffer, ...]:
        n = payload.nbytes if isinstance(payload, memoryview) else len(payload)
        if n <= _JOIN_BELOW and opcode is Opcode.BINARY:  # the common case, in one buffer
            if isinstance(payload, memoryview) and payload.format != "B":
                payload = payload.cast("B")
            return (small_binary_frame(payload, self._mask_key() if self._client else None),)
        if self._client:  # §5.3: clients mask, with a fresh unpredictable key per frame
            key = self._mask_key()
            head, payload = frame_header(opcode, n, key=key), masked_copy(payload, key)
        else:
            head = frame_header(opcode, n)
        # A small frame is cheaper to copy into one buffer than to gather with sendmsg.
        return (head + payload,) if n <= _JOIN_BELOW else (head, payload)

    def send(self, message: Buffer) -> None:
        if self._close_sent:
            raise ConnectionClosed("connection is closing")
        self._stream.write(self._frame_parts(Opcode.BINARY, message))

    def send_parts(self, parts: Sequence[Buffer]) -> None:
        # Overrides TcpConnection's length prefix. A client masks every byte it sends (a
        # copy in any case), so the parts are joined into one frame's payload.
        self.send(b"".join(parts))

    def try_send(self, message: Buffer) -> bool:
        # Overrides TcpConnection's: a WebSocket message is a frame, not a length prefix.
        if self._close_sent:
            raise ConnectionClosed("connection is closing")
        return self._stream.try_write(b"".join(self._frame_parts(Opcode.BINARY, message)))

    def send_many(self, messages: Sequence[Buffer]) -> None:
        if self._close_sent:
            raise ConnectionClosed("connection is closing")
        parts: list[Buffer] = []
        for message in messages:
            parts.extend(self._frame_parts(Opcode.BINARY, message))
        if parts:
            self._stream.write(parts)

    def ping(self, payload: bytes = b"") -> None:
        """Send a ping (keep-alive); the peer's pong is consumed by :meth:`recv`."""
        if len(payload) > 125:
            raise ValueError("a ping payload is at most 125 bytes")
        self._stream.write(self._frame_parts(Opcode.PING, payload))

    def send_text(self, text: str) -> None:
        """Send one TEXT message (minipool itself sends BINARY; browsers like both)."""
        if self._close_sent:
            raise ConnectionClosed("connection is closing")
        self._stream.write(self._frame_parts(Opcode.TEXT, text.encode("utf-8")))

    def recv(self, timeout: float | None = None) -> bytes:
        """The next data message's payload (a TEXT message as its UTF-8 bytes).

        Raises:
            TimeoutError: no whole message within ``timeout``; the connection stays usable
                (a large payload whose frame head has arrived is read to the end first).
            ConnectionClosed: the peer closed (``close_code`` tells why) or the socket broke.
            WebSocketProtocolError: the peer broke the protocol; the close code was sent.
        """
        return self._next_message(timeout)[1]

    # WebSocket frames, not tcp://'s length prefixes: the generic polling loop, not tcp's.
    recv_ready = Connection.recv_ready

    def recv_message(self, timeout: float | None = None) -> Message:
        """The next data message with its type (TEXT or BINARY). Pings are answered on the
        way, pongs dropped. Raises as :meth:`recv`."""
        return Message(*self._next_message(timeout))

    def _next_message(self, timeout: float | None) -> tuple[Opcode, bytes]:
        deadline = None if timeout is None else time.monotonic() + timeout
        self._reader = threading.get_ident()
        try:
            if self._pending is None and self._assembler.idle:
                payload = self._stream.read_whole(self._cut, deadline)
                if payload is not None:
                    return Opcode.BINARY, payload
            while True:
                frame = self._read_frame(deadline)
                opcode = frame.opcode
                if opcode < 8:
                    message = self._assembler.feed(frame)
                    if message is not None:
                        return message.opcode, message.data
                elif opcode is Opcode.PING:
                    self._stream.write(self._frame_parts(Opcode.PONG, frame.payload))
                elif opcode is Opcode.CLOSE:
                    self._on_close_frame(frame)
        except WebSocketProtocolError as exc:
            self._fail(exc.code, exc.reason)
            raise
        except ConnectionClosed:
            if self.close_code is None:
                self.close_code = CloseCode.ABNORMAL_CLOSURE
            self._stream.close()
            raise
        finally:
            self._reader = None

    def _read_frame(self, deadline: float | None) -> Frame:
        """Drive :func:`parse_frame` with bytes from the stream."""
        if self._pending is not None:
            parser, need = self._pending
            self._pending = None
        else:
            parser = parse_frame(masked=not self._client, max_size=self._assembler.budget)
            need = next(parser)
        read = self._stream.read_exact
        try:
            while True:
                # A large payload is read into its own buffer, which a timeout would throw
                # away: once its frame head is here, it is read to the end (as tcp:// does).
                need = parser.send(read(need, deadline if need <= RESUMABLE_READ else None))  # type: ignore[attr-defined]
        except StopIteration as done:
            return done.value
        except TimeoutError:
            self._pending = (parser, need)  # small reads leave their bytes in the buffer
            raise

    # -- closing handshake ---------------------------------------------------------------------

    def _send_close(self, code: int, reason: str = "") -> None:
        with self._close_lock:
            if self._close_sent:
                return
            self._close_sent = True
        try:
            self._stream.write(self._frame_parts(Opcode.CLOSE, serialize_close(code, reason)))
        except ConnectionClosed:
            pass

    def _on_close_frame(self, frame: Frame) -> None:
        self.close_code, self.close_reason = parse_close(frame.payload)
        # Echo the peer's code (§5.5.1); 1005 means it sent none, so we send none back.
        self._send_close(self.close_code, "")
        self._finish()
        raise ConnectionClosed(f"closed by peer: {int(self.close_code)} {self.close_reason}".rstrip())

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (§7.1.7): send the close code, then drop it."""
        self._send_close(code, reason)
        self._finish()

    def _finish(self) -> None:
        """Half-close, let the peer finish its side of the closing handshake, then close.

        Closing a socket with unread data makes the kernel send a reset, which can destroy the
        close frame just sent before the peer reads it. So: FIN first, then drain what the peer
        still sends (bounded in time and bytes) until its own close.
        """
        stream = self._stream
        if stream.closed:
            return
        reader = self._reader
        if reader is not None and reader != threading.get_ident():
            # Another thread is reading: closing wakes it up; draining here would race it.
            stream.close()
            return
        sock = stream.sock
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER
            drained = 0
            while drained < _LINGER_BYTES:
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
                        break
                data = sock.recv(65536)
                if not data:
                    break
                drained += len(data)
        except (OSError, ValueError):
            pass
        stream.close()

    def close(self) -> None:
        """Start the closing handshake (code 1000) and close; waits at most ~1 s for the peer."""
        if self._stream.closed:
            return
        self._send_close(CloseCode.NORMAL_CLOSURE)
        self._finish()


class WebSocketListener(TcpListener):
    """``ws://`` / ``wss://`` server: TcpListener's accept loop, WebSocket connections out."""

    def __init__(self, url: SplitResult, options: Options) -> None:
        secure = url.scheme.lower() == "wss"
        if secure and options.ssl_context is None:
            raise TransportError("wss:// needs ssl_context= (a server-side ssl.SSLContext)")
        super().__init__(url, options)
        self._tls = secure  # TcpListener only knows tls://; the handshake is TcpConnection's
        self.url += url.path if url.path not in ("", "/") else ""

    def wrap(self, sock: socket.socket) -> WebSocketConnection:
        return WebSocketConnection(sock, self._options, client=False, server_tls=self._tls)


def connect(url: SplitResult, options: Options, *, origin: str | None = None) -> Connection:
    """Open a client connection to ``ws://host:port/path`` (or ``wss://``).

    Args:
        url: the server's URL.
        options: transport options (``ssl_context`` for wss://).
        origin: an ``Origin`` header to send, as a browser would.

    Raises:
        TransportError: wss:// without an ssl_context.
        OSError: the server cannot be reached.
        ProtocolError: the server is not a WebSocket server (an :class:`HttpError` carries
            the status if it answered with something other than 101).
        TimeoutError: no answer within ``options.handshake_timeout``.
    """
    if url.scheme.lower() == "wss" and options.ssl_context is None:
        raise TransportError("wss:// needs ssl_context= (a client-side ssl.SSLContext)")
    conn = WebSocketConnection(open_socket(url, options), options, client=True)
    try:
        conn._client_handshake(url, origin, options.handshake_timeout)
    except BaseException:
        conn._stream.close()
        raise
    return conn


def listen(url: SplitResult, options: Options) -> Listener:
    return WebSocketListener(url, options)
