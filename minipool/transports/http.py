"""``http://`` and ``https://``: minipool messages over plain HTTP/1.1 keep-alive.

Technique: *a duplex channel built from HTTP's request/response* (seed 000 §3.1 asks whether
to move data over HTTP or WebSocket; this is the HTTP answer, measured beside the others by
``python -m minipool.bench transports``). HTTP lets only the client speak first, but the
coordinator pushes tasks and results at any time, so one minipool connection is **two**
keep-alive TCP connections, paired by an unguessable session id:

* **down** (server -> client): the client sends ``GET /minipool/events``; the server answers
  ``200`` with ``Transfer-Encoding: chunked`` and a ``Minipool-Session`` header, and never ends
  that response. Each server message is one chunk whose data is a kind byte ``M`` and the
  message (the kind byte lets an empty message exist: a zero-size chunk would end the body).
* **up** (client -> server): ``POST /minipool/<session>/open`` attaches it to the session;
  then every client message is a pipelined ``POST /minipool/<session>`` with Content-Length.
  The server acknowledges each with ``204``; it writes them just before it would block for the
  next request, and the client reads them without blocking only every few sends, so
  acknowledgements never sit on the round trip.

Why not long-polling (each server message answers a pending GET)? Every message would cost
a new request from the client and a round trip in which the server has nothing to send on.
Why not the WebSocket upgrade? That *is* the better design (``ws://``); this transport exists to
show what plain HTTP, which every proxy and firewall lets through, can do. See docs/transports.md.

Why the pairing happens in the listener: both halves must be read (and TLS-wrapped) before a
Connection exists, so the listener runs each opening in a short-lived helper thread with the
handshake deadline (a client too slow with its headers gets 408) and ``accept()`` only hands out
paired connections: one slow half never blocks anyone. ``GET /health`` answers JSON.
The HTTP parsing itself is :mod:`minipool.transports.http11`; the sockets are :mod:`.stream`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import re
import secrets
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
    MAX_CHUNK_LINE,
    MAX_HEAD,
    REASONS,
    HttpError,
    content_length,
    format_request,
    format_response,
    parse_chunk_size,
    parse_request,
    parse_response,
)
from .stream import SocketStream
from .tcp import TcpConnection, TcpListener, open_socket

__all__ = ["HttpClientConnection", "HttpServerConnection", "HttpListener", "connect", "listen"]

log = logging.getLogger(__name__)

EVENTS_PATH = "/minipool/events"
SESSION_HEADER = "Minipool-Session"
_SESSION_PATH = re.compile(r"/minipool/([A-Za-z0-9_-]{16,64})/open")
_ACK = b"HTTP/1.1 204 No Content\r\n\r\n"
_ACK_BATCH = 32          # the client reads acknowledgements once this many are owed
_MAX_OPENINGS = 128      # concurrent half-open connections a listener serves before 503
_NONBLOCKING = getattr(socket, "MSG_DONTWAIT", 0)


class _Stream(SocketStream):
    """A :class:`SocketStream` whose ``read_until`` keeps its scan offset relative to the read
    position. The base class's offset goes stale when ``_fill`` compacts the buffer, so a
    second head on a keep-alive connection was never found. Remove once stream.py is fixed.
    """

    def read_until(self, delimiter: bytes, limit: int, deadline: float | None = None) -> bytes:
        searched = 0  # bytes after the read position already searched
        while True:
            end = self._buf.find(delimiter, self._pos + searched)
            if end >= 0:
                end += len(delimiter)
                data = bytes(self._buf[self._pos : end])
                self._pos = end
                return data
            if self.buffered > limit:
                raise FrameTooLarge(self.buffered, limit)
            searched = max(0, self.buffered - len(delimiter) + 1)
            self._fill(deadline)


def _read_head(stream: SocketStream, deadline: float | None) -> bytes:
    try:
        return stream.read_until(b"\r\n\r\n", MAX_HEAD, deadline)
    except FrameTooLarge:
        raise HttpError(431, f"head larger than {MAX_HEAD} bytes") from None


def _error_response(status: int, detail: str) -> bytes:
    return format_response(status, REASONS.get(status, "Error"),
                           [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
                           detail.encode("utf-8", "replace") + b"\n")


def _reject(stream: SocketStream, status: int, detail: str, acks: int = 0) -> None:
    """Answer ``status`` (best effort: the peer may be gone) and close.

    ``acks`` 204s still owed for earlier requests go first: pipelined responses keep order.
    """
    log.info("http %s from %s: %s", status, stream.peer, detail)
    try:
        stream.write([_ACK * acks + _error_response(status, detail)])
    except ConnectionClosed:
        pass
    stream.close()


class HttpServerConnection(Connection):
    """The coordinator's end: reads POSTs from the up half, writes chunks on the down half."""

    def __init__(self, up: SocketStream, down: SocketStream, session: str, options: Options) -> None:
        self._up, self._down = up, down
        self._path = f"/minipool/{session}"
        self._options = options
        self._owed = 0  # 204s not yet written
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
        if self._owed and (up.buffered == 0 or self._owed >= _ACK_BATCH):
            up.write([_ACK * self._owed])  # about to block anyway: acknowledge now, in one write
            self._owed = 0
        try:
            request = parse_request(_read_head(up, deadline))
            if request.target != self._path:
                raise HttpError(404, f"no such path {request.target[:80]!r}")
            if request.method != "POST":
                raise HttpError(405, f"{request.method} not allowed here")
            size = content_length(request.headers)
            if size is None:
                raise HttpError(411, "POST needs a Content-Length")
            if size > self._options.max_message:
                _reject(up, 413, f"body of {size} bytes exceeds {self._options.max_message}",
                        self._owed)
                self.close()
                raise FrameTooLarge(size, self._options.max_message)
        except HttpError as exc:
            _reject(up, exc.status, exc.detail, self._owed)
            self.close()
            raise
        try:
            body = up.read_exact(size, deadline) if size else b""
        except TimeoutError:
            self.close()  # half a body has been consumed: the stream cannot be resumed
            raise
        self._owed += 1
        return body

    def close(self) -> None:
        self._up.close()
        self._down.close()

    @property
    def closed(self) -> bool:
        return self._up.closed or self._down.closed


class HttpClientConnection(Connection):
    """The client's end: POSTs on the up half, reads chunks from the down half."""

    def __init__(self, up: SocketStream, down: SocketStream, session: str, host: str,
                 options: Options) -> None:
        self._up, self._down = up, down
        self._options = options
        # The request head is the same every time but for the length: build it once.
        self._prefix = (f"POST /minipool/{session} HTTP/1.1\r\nHost: {host}\r\n"
                        f"Content-Length: ").encode("ascii")
        self._lock = threading.Lock()
        self._outstanding = 0
        self._acks = bytearray()
        self._chunk: int | None = None  # size of a chunk whose size line was read
        self.peer = up.peer

    def send(self, message: Buffer) -> None:
        with self._lock:
            self._before_send(1)
            self._up.write((self._prefix + b"%d\r\n\r\n" % len(message), message))

    def send_many(self, messages: Sequence[Buffer]) -> None:
        parts: list[Buffer] = []
        for message in messages:
            parts += (self._prefix + b"%d\r\n\r\n" % len(message), message)
        with self._lock:
            self._before_send(len(messages))
            if parts:
                self._up.write(parts)

    def _before_send(self, count: int) -> None:
        self._outstanding += count
        if self._outstanding > _ACK_BATCH:
            self._read_acks()

    def _read_acks(self) -> None:
        """Consume the 204s that have arrived, without waiting for any.

        Raises:
            HttpError: the server answered something else (then the connection is closed).
            ConnectionClosed: the server closed the up half.
        """
        sock = self._up.sock
        try:
            if _NONBLOCKING and not isinstance(sock, ssl.SSLSocket):
                data = sock.recv(65536, _NONBLOCKING)
            elif (isinstance(sock, ssl.SSLSocket) and sock.pending()) or select.select([sock], [], [], 0)[0]:
                data = sock.recv(65536)
            else:
                return
        except BlockingIOError:
            return
        except (OSError, ValueError) as exc:
            self.close()
            raise ConnectionClosed(f"connection lost: {exc}") from exc
        if not data:
            self.close()
            raise ConnectionClosed("server closed the connection")
        self._acks += data
        while (end := self._acks.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._acks[: end + 4])
            del self._acks[: end + 4]
            response = parse_response(head)
            if response.status != 204:
                self.close()
                raise HttpError(response.status, f"server refused a message: {response.reason}")
            self._outstanding -= 1
        if len(self._acks) > MAX_HEAD:
            self.close()
            raise ProtocolError("server sent garbage on the request connection")

    def recv(self, timeout: float | None = None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        down = self._down
        try:
            if self._chunk is None:
                line = down.read_until(b"\r\n", MAX_CHUNK_LINE, deadline)
                self._chunk = parse_chunk_size(line, 1 << 62)
            size = self._chunk
            if size == 0:
                raise ConnectionClosed("the server ended the event stream")
            if size - 1 > self._options.max_message:
                raise FrameTooLarge(size - 1, self._options.max_message)
            if down.read_exact(1, deadline) != b"M":
                raise ProtocolError("unknown kind of event chunk")
            message = down.read_exact(size - 1, deadline) if size > 1 else b""
            if down.read_exact(2, deadline) != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
        except TimeoutError:
            if self._chunk is not None:
                self.close()  # part of a chunk was consumed: the stream cannot be resumed
            raise
        except (ProtocolError, ConnectionClosed):
            self.close()
            raise
        except FrameTooLarge:
            self.close()
            raise
        self._chunk = None
        return message

    def close(self) -> None:
        self._up.close()
        self._down.close()

    @property
    def closed(self) -> bool:
        return self._up.closed or self._down.closed


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
        self.url = scheme + self._tcp.url[self._tcp.url.index("://"):]
        self._ready: queue.Queue[HttpServerConnection | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._opening: dict[threading.Thread, TcpConnection] = {}
        self._slots = threading.BoundedSemaphore(_MAX_OPENINGS)
        self._closed = False
        self._served = 0
        self._accepter = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"minipool-http-accept {self.url}")
        self._accepter.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self._tcp.accept()
            except ConnectionClosed:
                return
            if not self._slots.acquire(blocking=False):
                log.warning("http: too many connections opening at once; refusing %s", conn.peer)
                conn.close()
                continue
            thread = threading.Thread(target=self._open, args=(conn,), daemon=True,
                                      name=f"minipool-http-open {conn.peer}")
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._opening[thread] = conn
            thread.start()

    def _open(self, conn: TcpConnection) -> None:
        """Serve one socket's first request: a health check, a down half or an up half."""
        timeout = self._options.handshake_timeout
        deadline = time.monotonic() + timeout
        try:
            conn.handshake(timeout)  # TLS, if any
            # The TLS-wrapped socket (nothing has been read from it yet).
            stream: SocketStream = _Stream(conn._stream.sock)  # noqa: SLF001
            try:
                self._route(stream, parse_request(_read_head(stream, deadline)), deadline)
            except TimeoutError:
                _reject(stream, 408, "request head not received in time")
            except HttpError as exc:
                _reject(stream, exc.status, exc.detail)
        except (TimeoutError, ProtocolError, ConnectionClosed, OSError) as exc:
            log.info("http: opening from %s failed: %s", conn.peer, exc)
            conn.close()
        finally:
            with self._lock:
                self._opening.pop(threading.current_thread(), None)
            self._slots.release()

    def _route(self, stream: SocketStream, request, deadline: float) -> None:
        if request.method == "GET" and request.target == "/health":
            body = json.dumps({"status": "ok", "transport": self._scheme,
                               "connections": self._served, "pending": len(self._pending)})
            stream.write([format_response(200, "OK", [("Content-Type", "application/json"),
                                                      ("Connection", "close")], body.encode())])
            stream.close()
            return
        if "host" not in request.headers and request.version == "HTTP/1.1":
            raise HttpError(400, "HTTP/1.1 request without Host")
        if request.target == EVENTS_PATH:
            if request.method != "GET":
                raise HttpError(405, "the event stream is opened with GET")
            self._open_down(stream, deadline)
            return
        match = _SESSION_PATH.fullmatch(request.target)
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
        conn = HttpServerConnection(stream, pending.down, match.group(1), self._options)
        pending.paired.set()
        try:
            stream.write([_ACK])
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
        stream.write([format_response(200, "OK", [
            ("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked"),
            ("Cache-Control", "no-store"), (SESSION_HEADER, session)])])
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
        for conn in opening.values():
            conn.close()
        for item in pending:
            item.down.close()
            item.paired.set()
        for thread in opening:
            thread.join(5)
        while True:  # connections paired but never accepted
            try:
                ready = self._ready.get_nowait()
            except queue.Empty:
                break
            if ready is not None:
                ready.close()
        self._ready.put(None)


def _host_header(url: SplitResult) -> str:
    host = url.hostname or "127.0.0.1"
    return f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"


def connect(url: SplitResult, options: Options) -> Connection:
    """Open both halves of a session; see the module docstring.

    Raises:
        HttpError: the server refused (its status is on the exception).
        TimeoutError: the server did not answer within ``options.handshake_timeout``.
        OSError: the server cannot be reached.
    """
    if url.scheme.lower() == "https":
        if options.ssl_context is None:
            options = dataclasses.replace(options, ssl_context=ssl.create_default_context())
    else:
        options = dataclasses.replace(options, ssl_context=None)
    host = _host_header(url)
    deadline = time.monotonic() + options.handshake_timeout
    streams: list[SocketStream] = []
    try:
        down = _Stream(open_socket(url, options))
        streams.append(down)
        down.write([format_request("GET", EVENTS_PATH, [("Host", host),
                                                        ("Accept", "application/octet-stream")])])
        response = parse_response(_read_head(down, deadline))
        session = response.headers.get(SESSION_HEADER, "")
        if response.status != 200:
            raise HttpError(response.status, f"server refused the event stream: {response.reason}")
        if (response.headers.get("transfer-encoding", "").lower() != "chunked"
                or _SESSION_PATH.fullmatch(f"/minipool/{session}/open") is None):
            raise ProtocolError("not a minipool event stream (no chunked body or session id)")
        up = _Stream(open_socket(url, options))
        streams.append(up)
        up.write([format_request("POST", f"/minipool/{session}/open",
                                 [("Host", host), ("Content-Length", "0")])])
        response = parse_response(_read_head(up, deadline))
        if response.status != 204 or up.buffered:
            raise HttpError(response.status, f"server refused the session: {response.reason}")
    except BaseException:
        for stream in streams:
            stream.close()
        raise
    return HttpClientConnection(up, down, session, host, options)


def listen(url: SplitResult, options: Options) -> Listener:
    return HttpListener(url, options)
