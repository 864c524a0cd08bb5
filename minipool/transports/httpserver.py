"""The server half of ``http://`` and ``https://``: pairing two sockets into one connection.

Technique: *a listener that finishes each client's opening off the accept loop*. One minipool
connection over HTTP is two TCP connections (see :mod:`minipool.transports.http`), so a
Connection exists only once both halves have sent their first request. Each accepted socket
gets a short-lived helper thread that runs TLS and reads that request within the handshake
timeout (408 if the headers are too slow); ``GET /health`` is answered there too. A down half
(``GET /minipool/events``) waits in a pending table under a fresh random session id; the up
half (``POST /minipool/<id>/open``) completes the pair, and only then does ``accept()`` hand the
:class:`HttpServerConnection` out. A half that never arrives expires with the same timeout, and
at most ``_MAX_OPENINGS`` sockets may be opening at once (one more closes the oldest, see
:mod:`minipool.transports.admission`), so no client can stall the others.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Sequence
from urllib.parse import SplitResult

from ..errors import ConnectionClosed, FrameTooLarge, ProtocolError, TransportError
from .admission import Admission
from .base import Buffer, Connection, Listener, Options
from .http11 import (
    HttpError,
    Request,
    content_length,
    error_response,
    format_response,
    health_response,
    parse_request,
)
from .httpsession import (
    ACK,
    ACK_BATCH,
    EVENTS_PATH,
    SESSION_HEADER,
    SESSION_PATH,
    DuplexConnection,
    read_head,
)
from .serving import serve_each
from .stream import RESUMABLE_READ, SocketStream
from .tcp import TcpConnection, TcpListener

__all__ = ["HttpServerConnection", "HttpListener"]

log = logging.getLogger("minipool.transports.http")

_LENGTH_TAIL = re.compile(rb"([0-9]{1,18})\r\n\r\n")
_MAX_OPENINGS = 128  # halves opening at once (two per client) before the oldest is closed


def _reject(stream: SocketStream, status: int, detail: str, acks: int = 0) -> None:
    """Answer ``status`` (best effort: the peer may be gone) and close.

    ``acks`` 204s still owed for earlier requests go first: pipelined responses keep order.
    """
    log.info("http %s from %s: %s", status, stream.peer, detail)
    try:
        stream.write([ACK * acks + error_response(status, detail)])
    except ConnectionClosed:
        pass
    stream.close()


class HttpServerConnection(DuplexConnection):
    """The coordinator's end: reads POSTs from the up half, writes chunks on the down half.

    A ``recv`` that times out leaves the connection usable: a request caught half arrived is
    taken up by the next call (a body larger than a buffered read is read to the end once its
    head is here). Bad requests are answered
    (400/404/405/411/413/431) and close the connection; see the module docstring.
    """

    def __init__(
        self, up: SocketStream, down: SocketStream, session: str, options: Options, host: str | None = None
    ) -> None:
        self._up, self._down = up, down
        self._path = f"/minipool/{session}"
        # The head our client sends for every message, up to its length (see _recv).
        self._usual = (
            f"POST {self._path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: ".encode("latin-1")
            if host
            else b"\0"
        )
        self._options = options
        self._owed = 0  # 204s not yet written
        self._body_size: int | None = None  # a request whose head is read and body is not yet
        self.peer = up.peer

    def send(self, message: Buffer) -> None:
        self._down.write((b"%x\r\nM" % (len(message) + 1), message, b"\r\n"))

    def send_many(self, messages: Sequence[Buffer]) -> None:
        parts: list[Buffer] = []
        for message in messages:
            parts += (b"%x\r\nM" % (len(message) + 1), message, b"\r\n")
        if parts:
            self._down.write(parts)

    def recv(self, timeout: float | None = None) -> bytes:
        try:
            return self._recv(timeout)
        except ConnectionClosed:
            self.close()  # the peer has gone: ``closed`` says so from now on
            raise

    def _recv(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        up = self._up
        if self._owed and (up.buffered == 0 or self._owed >= ACK_BATCH):
            up.write([ACK * self._owed])  # about to block anyway: acknowledge now, in one write
            self._owed = 0
        if self._body_size is None:
            self._body_size = self._read_request_head(deadline)
        size = self._body_size
        # A small body that times out stays in the buffer, and the next call goes on with it
        # (a reader that polls with timeout=0 may catch a request half arrived). A large one
        # is read straight into its own buffer, so once its head is here it is read to the end.
        body = up.read_exact(size, deadline if size <= RESUMABLE_READ else None) if size else b""
        self._body_size = None
        self._owed += 1
        return body

    def _read_request_head(self, deadline: float | None) -> int:
        """Read and check one request head; return its body's length."""
        up = self._up
        try:
            head = read_head(up, deadline)
            # Fast path: the exact head minipool's client sends, only the length varying. It is
            # checked byte for byte, so it accepts nothing the full parser below would refuse.
            fast = _LENGTH_TAIL.fullmatch(head, len(self._usual)) if head.startswith(self._usual) else None
            size = int(fast.group(1)) if fast else self._parse(head)
            if size > self._options.max_message:
                _reject(up, 413, f"body of {size} bytes exceeds {self._options.max_message}", self._owed)
                self.close()
                raise FrameTooLarge(size, self._options.max_message)
        except HttpError as exc:
            _reject(up, exc.status, exc.detail, self._owed)
            self.close()
            raise
        return size

    def _parse(self, head: bytes) -> int:
        """Any other head: parse it fully and return its body's length.

        Raises:
            HttpError: 400, 404, 405, 411 or 431 (see the module docstring).
        """
        request = parse_request(head)
        if request.target != self._path:
            raise HttpError(404, f"no such path {request.target[:80]!r}")
        if request.method != "POST":
            raise HttpError(405, f"{request.method} not allowed here")
        size = content_length(request.headers)
        if size is None:
            raise HttpError(411, "POST needs a Content-Length")
        return size


@dataclasses.dataclass
class _Pending:
    """A down half waiting for its up half."""

    down: SocketStream
    paired: threading.Event = dataclasses.field(default_factory=threading.Event)


class HttpListener(Listener):
    """Accepts TCP (or TLS) sockets, serves their opening requests, pairs them into connections."""

    def __init__(self, url: SplitResult, options: Options) -> None:
        scheme = url.scheme.lower()
        if scheme == "https" and options.ssl_context is None:
            raise TransportError("https:// needs ssl_context= (a server-side ssl.SSLContext)")
        if scheme == "http":
            options = dataclasses.replace(options, ssl_context=None)
        self._options = options
        self._scheme = scheme
        self._tcp = TcpListener(url._replace(scheme="tls" if scheme == "https" else "tcp"), options)
        self.url = scheme + self._tcp.url[self._tcp.url.index("://") :]
        self._ready: queue.Queue[HttpServerConnection | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        # Accepted, first request not yet served: each connection and the thread serving it.
        self._opening: dict[TcpConnection, threading.Thread | None] = {}
        self._admission = Admission(_MAX_OPENINGS, server=f"http listener {self.url}")
        self._closed = False
        self._served = 0
        self._accepter = threading.Thread(
            target=self._accept_loop, daemon=True, name=f"minipool-http-accept {self.url}"
        )
        self._accepter.start()

    def _accept_loop(self) -> None:
        serve_each(
            self._tcp.accept,
            self._admit,
            self._open,
            stopping=lambda: self._closed,
            thread_name=lambda conn: f"minipool-http-open {conn.peer}",
        )

    def _admit(self, conn: TcpConnection) -> TcpConnection | None:
        self._admission.admit(conn)  # may close the connection that has waited longest
        with self._lock:
            if self._closed:
                conn.close()
                return None
            self._opening[conn] = None  # its thread is about to start
        return conn

    def _open(self, conn: TcpConnection) -> None:
        """Serve one socket's first request: a health check, a down half or an up half."""
        with self._lock:
            if conn in self._opening:
                self._opening[conn] = threading.current_thread()  # close() waits for it
        timeout = self._options.handshake_timeout
        deadline = time.monotonic() + timeout
        try:
            conn.handshake(timeout)  # TLS, if any
            # The TLS-wrapped socket (nothing has been read from it yet).
            stream = SocketStream(conn.sock)
            try:
                self._route(stream, parse_request(read_head(stream, deadline)), deadline)
            except TimeoutError:
                _reject(stream, 408, "request head not received in time")
            except HttpError as exc:
                _reject(stream, exc.status, exc.detail)
        except (TimeoutError, ProtocolError, ConnectionClosed, OSError) as exc:
            log.info("http: opening from %s failed: %s", conn.peer, exc)
            conn.close()
        finally:
            with self._lock:
                self._opening.pop(conn, None)
            self._admission.opened(conn)

    def _route(self, stream: SocketStream, request: Request, deadline: float) -> None:
        if request.method == "GET" and request.target == "/health":
            stream.write(
                [health_response(self._scheme, connections=self._served, pending=len(self._pending))]
            )
            stream.close()
            return
        if "host" not in request.headers and request.version == "HTTP/1.1":
            raise HttpError(400, "HTTP/1.1 request without Host")
        if request.target == EVENTS_PATH:
            if request.method != "GET":
                raise HttpError(405, "the event stream is opened with GET")
            self._open_down(stream, deadline)
            return
        match = SESSION_PATH.fullmatch(request.target)
        if match is None:
            raise HttpError(404, "minipool answers /health, /minipool/events and its sessions")
        if request.method != "POST":
            raise HttpError(405, "a session is attached with POST")
        if content_length(request.headers) not in (None, 0):
            raise HttpError(400, "the attaching POST has no body")
        with self._lock:
            pending = self._pending.pop(match.group(1), None)
        if pending is None:
            raise HttpError(404, "no such session (expired or never opened)")
        conn = HttpServerConnection(
            stream, pending.down, match.group(1), self._options, request.headers.get("host")
        )
        pending.paired.set()
        try:
            stream.write([ACK])
        except ConnectionClosed:
            conn.close()
            return
        with self._lock:
            if self._closed:
                conn.close()
                return
            self._served += 1
            self._ready.put(conn)

    def _open_down(self, stream: SocketStream, deadline: float) -> None:
        session = secrets.token_urlsafe(18)
        pending = _Pending(stream)
        with self._lock:
            self._pending[session] = pending
        stream.write(
            [
                format_response(
                    200,
                    "OK",
                    [
                        ("Content-Type", "application/octet-stream"),
                        ("Transfer-Encoding", "chunked"),
                        ("Cache-Control", "no-store"),
                        (SESSION_HEADER, session),
                    ],
                )
            ]
        )
        # The up half must attach before the handshake deadline, or the session expires.
        if not pending.paired.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                expired = self._pending.pop(session, None) is not None
            if expired:
                log.info("http: session from %s expired before its up half", stream.peer)
                stream.close()

    def accept(self) -> Connection:
        conn = self._ready.get()
        if conn is None:
            self._ready.put(None)  # wake every other accept() too
            raise ConnectionClosed("listener closed")
        return conn

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            opening = dict(self._opening)
            pending = list(self._pending.values())
            self._pending.clear()
        self._tcp.close()
        self._accepter.join(5)
        for conn in opening:
            conn.close()
        for item in pending:
            item.down.close()
            item.paired.set()
        for thread in opening.values():
            if thread is not None:
                thread.join(5)
        while True:  # connections paired but never accepted
            try:
                ready = self._ready.get_nowait()
            except queue.Empty:
                break
            if ready is not None:
                ready.close()
        self._ready.put(None)
