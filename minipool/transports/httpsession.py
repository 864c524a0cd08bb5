"""The session protocol that ``http://`` and ``https://`` speak on top of HTTP/1.1.

Technique: *one protocol, two ends, one module that both import*. An ``http://`` connection is
two keep-alive HTTP connections paired by a session id (see :mod:`minipool.transports.http`,
the client, and :mod:`minipool.transports.httpserver`, the server). The paths, the header and
the acknowledgement both ends must agree on live here, below both of them, so neither end
imports the other.
"""

from __future__ import annotations

import re

from ..errors import FrameTooLarge
from .base import Connection
from .http11 import MAX_HEAD, HttpError
from .stream import SocketStream

__all__ = [
    "ACK",
    "ACK_BATCH",
    "EVENTS_PATH",
    "SESSION_HEADER",
    "SESSION_PATH",
    "DuplexConnection",
    "read_head",
]

#: The down half is opened with ``GET`` on this path; its response never ends.
EVENTS_PATH = "/minipool/events"
#: The header of that response that carries the session id.
SESSION_HEADER = "Minipool-Session"
#: The path that attaches the up half to a session (the id is the first group).
SESSION_PATH = re.compile(r"/minipool/([A-Za-z0-9_-]{16,64})/open")
#: The server's answer to each message the client posts.
ACK = b"HTTP/1.1 204 No Content\r\n\r\n"
#: How many acknowledgements may be owed before they are written (server) or read (client).
ACK_BATCH = 32


def read_head(stream: SocketStream, deadline: float | None) -> bytes:
    """One request or response head, up to and including its blank line.

    Raises:
        HttpError: 431, the head is larger than :data:`~minipool.transports.http11.MAX_HEAD`.
        TimeoutError, ConnectionClosed: as :meth:`SocketStream.read_until`.
    """
    try:
        return stream.read_until(b"\r\n\r\n", MAX_HEAD, deadline)
    except FrameTooLarge:
        raise HttpError(431, f"head larger than {MAX_HEAD} bytes") from None


class DuplexConnection(Connection):
    """A minipool connection made of two HTTP connections: ``_up`` and ``_down``. It is
    closed when either half is, and closing it closes both."""

    _up: SocketStream
    _down: SocketStream

    def close(self) -> None:
        self._up.close()
        self._down.close()

    @property
    def closed(self) -> bool:
        return self._up.closed or self._down.closed
