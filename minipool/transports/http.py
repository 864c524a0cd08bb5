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
paired connections: one slow half never blocks anyone. ``GET /health`` answers JSON. The
server half is :mod:`minipool.transports.httpserver`; the HTTP parsing is
:mod:`minipool.transports.http11`; the sockets are :mod:`minipool.transports.stream`.
"""

from __future__ import annotations

import dataclasses
import select
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from urllib.parse import SplitResult

from ..errors import ConnectionClosed, FrameTooLarge, ProtocolError
from .base import Buffer, Connection, Listener, Options
from .http11 import (
    MAX_CHUNK_LINE,
    MAX_HEAD,
    HttpError,
    format_request,
    parse_chunk_size,
    parse_response,
)
from .httpserver import HttpListener
from .httpsession import (
    ACK_BATCH,
    EVENTS_PATH,
    SESSION_HEADER,
    SESSION_PATH,
    DuplexConnection,
    read_head,
)
from .stream import SocketStream
from .tcp import open_socket

__all__ = ["HttpClientConnection", "connect", "listen", "EVENTS_PATH", "SESSION_HEADER"]

_NONBLOCKING = getattr(socket, "MSG_DONTWAIT", 0)


class HttpClientConnection(DuplexConnection):
    """The client's end: POSTs on the up half, reads chunks from the down half.

    A ``recv`` that times out before the next chunk began leaves the connection usable. Once a
    chunk's size line is read, the rest of it gets at least ``handshake_timeout`` to arrive
    (whatever ``timeout`` was asked for); a server that stalls inside a chunk gets the
    connection closed.
    """

    def __init__(
        self, up: SocketStream, down: SocketStream, session: str, host: str, options: Options
    ) -> None:
        self._up, self._down = up, down
        self._options = options
        # The request head is the same every time but for the length: build it once.
        self._prefix = (f"POST /minipool/{session} HTTP/1.1\r\nHost: {host}\r\nContent-Length: ").encode(
            "ascii"
        )
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
        if self._outstanding > ACK_BATCH:
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
            if deadline is not None:
                # The rest of the chunk is on its way: a poll that caught it half arrived waits
                # for it, and only a server that stalls inside a chunk gets the connection closed.
                deadline = max(deadline, time.monotonic() + self._options.handshake_timeout)
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
        down = SocketStream(open_socket(url, options))
        streams.append(down)
        down.write(
            [format_request("GET", EVENTS_PATH, [("Host", host), ("Accept", "application/octet-stream")])]
        )
        response = parse_response(read_head(down, deadline))
        session = response.headers.get(SESSION_HEADER) or ""
        if response.status != 200:
            raise HttpError(response.status, f"server refused the event stream: {response.reason}")
        if (response.headers.get("transfer-encoding") or "").lower() != "chunked" or SESSION_PATH.fullmatch(
            f"/minipool/{session}/open"
        ) is None:
            raise ProtocolError("not a minipool event stream (no chunked body or session id)")
        up = SocketStream(open_socket(url, options))
        streams.append(up)
        up.write(
            [format_request("POST", f"/minipool/{session}/open", [("Host", host), ("Content-Length", "0")])]
        )
        response = parse_response(read_head(up, deadline))
        if response.status != 204 or up.buffered:
            raise HttpError(response.status, f"server refused the session: {response.reason}")
    except BaseException:
        for stream in streams:
            stream.close()
        raise
    return HttpClientConnection(up, down, session, host, options)


def listen(url: SplitResult, options: Options) -> Listener:
    return HttpListener(url, options)
