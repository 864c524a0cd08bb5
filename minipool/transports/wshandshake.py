"""The WebSocket opening handshake (RFC 6455 §4), sans-I/O: HTTP heads in, verdicts out.

Technique: *upgrading an HTTP connection to another protocol*. A WebSocket connection begins as
an ordinary HTTP/1.1 request, so it passes through proxies, load balancers and browsers'
same-origin rules like any web request::

    GET /jobs HTTP/1.1                      HTTP/1.1 101 Switching Protocols
    Host: 127.0.0.1:8765                    Upgrade: websocket
    Upgrade: websocket                      Connection: Upgrade
    Connection: Upgrade                     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
    Sec-WebSocket-Version: 13
    Origin: https://example.org             (then both sides speak WebSocket frames)

The key is 16 random bytes; the server answers with base64(SHA-1(key + a fixed GUID)). That is
not security -- anyone can compute it -- but proof that the server *read* the request as a
WebSocket handshake, so a plain HTTP server (or a cache) can never be mistaken for one. The
``Origin`` header is what a browser says about the page that opened the socket; a server that
serves browsers checks it (minipool records it on the connection as ``origin``).

Heads are parsed and written by the shared :mod:`~minipool.transports.http11`; this module only
decides what a valid upgrade is, and :mod:`~minipool.transports.websocket` does the I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from urllib.parse import SplitResult

from ..errors import ProtocolError
from .http11 import Headers, HttpError, Request, Response, format_request

__all__ = [
    "GUID",
    "accept_key",
    "new_key",
    "is_upgrade",
    "check_request",
    "upgrade_request",
    "check_response",
]

#: The RFC's constant, hashed with the client's key to prove the server speaks WebSocket.
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering ``Sec-WebSocket-Key`` ``key`` (§4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode("ascii")


def new_key() -> str:
    """A fresh ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded (§4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def _tokens(headers: Headers, name: str) -> set[str]:
    """The comma-separated tokens of every ``name`` field, lower-cased."""
    return {t.strip().lower() for value in headers.get_all(name) for t in value.split(",")}


def is_upgrade(headers: Headers) -> bool:
    """Whether the request asks for a WebSocket at all (``Upgrade: websocket``)."""
    return "websocket" in _tokens(headers, "Upgrade")


def check_request(request: Request) -> str:
    """Validate a client's upgrade request (§4.2.1) and return its ``Sec-WebSocket-Key``.

    Raises:
        HttpError: with the status to answer: 405 not a GET, 426 not an upgrade or not
            version 13, 400 for anything else malformed.
    """
    headers = request.headers
    if request.method != "GET":
        raise HttpError(405, "a WebSocket handshake is a GET")
    if not is_upgrade(headers):
        raise HttpError(426, "this is a WebSocket endpoint: send Upgrade: websocket")
    if request.version != "HTTP/1.1":
        raise HttpError(400, "the WebSocket handshake needs HTTP/1.1")
    if "upgrade" not in _tokens(headers, "Connection"):
        raise HttpError(400, "Connection header lacks the upgrade token")
    if "Host" not in headers:
        raise HttpError(400, "missing Host header")
    if (headers.get("Sec-WebSocket-Version") or "").strip() != "13":
        raise HttpError(426, "only WebSocket version 13 is supported")
    keys = headers.get_all("Sec-WebSocket-Key")
    try:
        ok = len(keys) == 1 and len(base64.b64decode(keys[0].strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise HttpError(400, "Sec-WebSocket-Key must be 16 bytes in base64, given once")
    return keys[0].strip()


def upgrade_request(url: SplitResult, key: str, origin: str | None = None) -> bytes:
    """The client's upgrade request head for ``url`` (§4.1)."""
    host = url.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    fields = [
        ("Host", f"{host}:{url.port}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    ]
    if origin is not None:
        fields.append(("Origin", origin))
    return format_request("GET", target, fields)


def check_response(response: Response, key: str) -> None:
    """Validate the server's answer to an upgrade request sent with ``key`` (§4.1).

    Raises:
        HttpError: the server answered something other than 101 (``status`` says what).
        ProtocolError: a 101 without the right headers or ``Sec-WebSocket-Accept``, or with
            an extension or subprotocol that minipool did not offer.
    """
    if response.status != 101:
        raise HttpError(response.status, f"server refused the WebSocket upgrade: {response.reason}")
    headers = response.headers
    if not is_upgrade(headers) or "upgrade" not in _tokens(headers, "Connection"):
        raise ProtocolError("101 response without Upgrade: websocket / Connection: Upgrade")
    if headers.get("Sec-WebSocket-Accept") != accept_key(key):
        raise ProtocolError("wrong Sec-WebSocket-Accept: the server is not a WebSocket server")
    if "Sec-WebSocket-Extensions" in headers or "Sec-WebSocket-Protocol" in headers:
        raise ProtocolError("server chose an extension or subprotocol that was not offered")
