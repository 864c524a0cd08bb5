"""The dashboard's web server: the page, the API, ``/metrics`` and a live WebSocket feed, on
minipool's own HTTP/1.1 and WebSocket code.

Technique: *one port, two protocols, and a browser's rules for trust*. Each accepted socket
becomes a server-side :class:`~minipool.transports.websocket.WebSocketConnection`, which reads
one request head with the shared strict parser; a plain request is answered and closed
(``Connection: close``), an upgrade to ``/ws`` becomes the live feed. No second HTTP parser.

What a browser makes safe and what it does not:

* **Binding.** 127.0.0.1 unless told otherwise. Bound elsewhere, every request needs the token
  (``Authorization: Bearer T`` or ``?token=T``), an HMAC of the coordinator's authkey, so
  whoever holds the key can compute it and no one else can.
* **DNS rebinding.** Bound to loopback, a request whose ``Host`` is not a loopback name is
  refused: a foreign site's name re-pointed at 127.0.0.1 does not become same-origin with us.
* **Cross-site WebSocket hijacking.** A browser sends cookies and credentials with a WebSocket
  to any site, but always says which page opened it: an ``Origin`` that is not this server's
  own is refused (403) before the upgrade.
* **CSRF.** Control is a POST that needs the token (always, even on loopback) and an
  ``Origin`` equal to this server's: a page elsewhere can neither read the token nor forge the
  header.
* **Injection.** Responses are JSON or text with ``nosniff`` and a strict
  Content-Security-Policy; the page writes values with ``textContent``. Nothing is unpickled.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from ..errors import MinipoolError
from ..transports.base import Options
from ..transports.http11 import HttpError, Request, content_length, final_response
from ..transports.tcp import TcpListener
from ..transports.websocket import WebSocketConnection, refusal_headers
from .feed import Feed
from .metrics import CONTENT_TYPE
from .page import PAGE

__all__ = ["DashboardServer", "dashboard_token", "Backend"]

log = logging.getLogger("minipool.dashboard")

MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 64
FEED_INTERVAL = 0.5  # seconds between two updates of one live feed, at least
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")
_SECURITY = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; frame-ancestors 'none'",
    ),
]


def dashboard_token(authkey: bytes) -> str:
    """The dashboard's token: derived from the authkey, never the authkey itself."""
    return hmac.new(authkey, b"minipool dashboard token", "sha256").hexdigest()[:32]


class Backend(Protocol):
    """What the server serves: the API's answers and a way to wait for a change."""

    def call(self, method: str, target: str, body: bytes = b"") -> tuple[int, Any]: ...

    def metrics(self) -> str: ...

    def wait(self, version: int, timeout: float) -> int: ...


class DashboardServer:
    """Serves ``backend`` on ``bind`` (``HOST:PORT``; port 0 picks one).

    Args:
        backend: the local :class:`~minipool.dashboard.Dashboard` or a remote watcher.
        token: see :func:`dashboard_token`.
        bind: where to listen; 127.0.0.1 unless told otherwise.
    """

    def __init__(self, backend: Backend, token: str, bind: str = "127.0.0.1:0") -> None:
        self.backend = backend
        self.token = token
        self._options = Options(max_message=MAX_BODY, handshake_timeout=10.0)
        self._listener = TcpListener(urlsplit(f"tcp://{bind}"), self._options)
        host = urlsplit(self._listener.url).hostname or "127.0.0.1"
        self.loopback = host in _LOOPBACK
        self.url = "http" + self._listener.url[3:]
        self._open = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._closed = threading.Event()
        self._feeds: set[WebSocketConnection] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._accept, daemon=True, name=f"minipool-dashboard {self.url}"
        )
        self._thread.start()

    @property
    def private_url(self) -> str:
        """The page's URL with the token: what the coordinator shows once."""
        return f"{self.url}/?token={self.token}"

    def _accept(self) -> None:
        while True:
            try:
                conn = self._listener.accept()
            except MinipoolError:
                return
            ws = WebSocketConnection(conn.sock, self._options, client=False)
            if not self._open.acquire(blocking=False):
                ws.answer(self._json(503, {"error": "too many dashboard connections"}))
                continue
            threading.Thread(
                target=self._serve, args=(ws,), daemon=True, name="minipool-dashboard-conn"
            ).start()

    def _serve(self, ws: WebSocketConnection) -> None:
        try:
            request = ws.read_request(time.monotonic() + self._options.handshake_timeout)
            self._route(ws, request)
        except HttpError as exc:
            ws.answer(self._json(exc.status, {"error": exc.detail}, refusal_headers(exc.status)))
        except TimeoutError:
            ws.answer(self._json(408, {"error": "request head not received in time"}))
        except (MinipoolError, OSError) as exc:
            log.info("dashboard: %s: %s", ws.peer, exc)
            ws.close()
        finally:
            self._open.release()

    # -- the rules ------------------------------------------------------------------------------

    def _authorized(self, request: Request, query: dict[str, list[str]]) -> bool:
        given = request.headers.get("Authorization", "") or ""
        token = given[7:] if given.startswith("Bearer ") else query.get("token", [""])[-1]
        return hmac.compare_digest(token.encode(), self.token.encode())

    def _same_origin(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        return origin is not None and origin == f"http://{request.headers.get('Host')}"

    def _check(self, request: Request, query: dict[str, list[str]], control: bool) -> None:
        host = (request.headers.get("Host") or "").rsplit(":", 1)[0]
        if self.loopback and host not in _LOOPBACK:
            raise HttpError(403, "a loopback dashboard answers only to a loopback Host")
        if (control or not self.loopback) and not self._authorized(request, query):
            raise HttpError(401, "this needs the dashboard's token")
        if control and not self._same_origin(request):
            raise HttpError(403, "control requests need an Origin header naming this server")

    def _route(self, ws: WebSocketConnection, request: Request) -> None:
        target = urlsplit(request.target)
        query = parse_qs(target.query[:2048])
        path = target.path
        control = request.method not in ("GET", "HEAD")
        if path == "/ws":
            self._check(request, query, False)
            origin = request.headers.get("Origin")
            if origin is not None and not self._same_origin(request):
                raise HttpError(403, f"foreign Origin {origin[:80]!r} refused")
            ws.upgrade(request)
            self._feed(ws)
            return
        self._check(request, query, control)
        if path in ("/", "/index.html"):
            ws.answer(self._text(200, PAGE.encode(), "text/html; charset=utf-8"))
        elif path == "/metrics":
            ws.answer(self._text(200, self.backend.metrics().encode(), CONTENT_TYPE))
        elif path.startswith("/api/"):
            size = content_length(request.headers) or 0
            if size > MAX_BODY:
                raise HttpError(413, f"a body of at most {MAX_BODY} bytes")
            body = ws.read_body(size, time.monotonic() + self._options.handshake_timeout)
            status, value = self.backend.call(request.method, request.target, body)
            ws.answer(self._json(status, value))
        else:
            raise HttpError(404, f"no page {path[:80]!r}")

    # -- answers ----------------------------------------------------------------------------------

    @staticmethod
    def _text(
        status: int, body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None
    ) -> bytes:
        return final_response(status, body, content_type=content_type, headers=[*_SECURITY, *(extra or [])])

    def _json(self, status: int, value: Any, extra: list[tuple[str, str]] | None = None) -> bytes:
        body = json.dumps(value, separators=(",", ":"), default=str).encode() + b"\n"
        return self._text(status, body, "application/json", extra)

    # -- the live feed ----------------------------------------------------------------------------

    def _feed(self, ws: WebSocketConnection) -> None:
        """Send the page everything now, then what changed after each change (at most two
        messages a second); a page's feed does no work between two changes, and none exists
        without a page connected."""
        with self._lock:
            self._feeds.add(ws)
        feed, version = Feed(self.backend.call), -1
        try:
            while not self._closed.is_set():
                message = feed.update()
                if message is not None:
                    ws.send_text(message)
                # At most two updates a second: the page's promise is one second, and each
                # update reads the coordinator's state for a moment.
                self._closed.wait(FEED_INTERVAL)
                version = self.backend.wait(version, 1.0)
        except (MinipoolError, OSError):
            pass
        finally:
            with self._lock:
                self._feeds.discard(ws)
            ws.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(5)
        with self._lock:
            feeds = list(self._feeds)
        for ws in feeds:
            ws.close()
