"""http:// and ws:// refuse a request, and answer ``GET /health``, with one response shape."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from minipool.errors import ConnectionClosed, ProtocolError
from minipool.transports import base
from minipool.transports.http11 import MAX_HEAD, error_response, health_response, parse_response


def _ask(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` on a raw socket and read the whole response (the server closes)."""
    parts = base.parse_url(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    response = parse_response(head + b"\r\n\r\n")
    return response.status, {k.lower(): v for k, v in response.headers.items()}, body


@pytest.fixture(params=["http", "ws"])
def listener(request):
    listener = base.listen(f"{request.param}://127.0.0.1:0")
    served: list[threading.Thread] = []

    def serve_handshakes() -> None:  # ws:// answers in the thread that serves the connection
        while True:
            try:
                conn = listener.accept()
            except ConnectionClosed:
                return
            try:
                conn.handshake(5)
            except (ConnectionClosed, ProtocolError, TimeoutError):
                pass
            conn.close()

    if request.param == "ws":
        served.append(threading.Thread(target=serve_handshakes))
        served[0].start()
    yield listener
    listener.close()
    for thread in served:
        thread.join(10)


def test_health_is_the_same_shape_on_both(listener):
    status, headers, body = _ask(listener.url, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert body.endswith(b"\n") and int(headers["content-length"]) == len(body)
    answer = json.loads(body)
    assert answer["status"] == "ok" and answer["transport"] in ("http", "websocket")


def test_a_refusal_is_the_same_shape_on_both(listener):
    status, headers, body = _ask(listener.url, b"DELETE /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
    assert 400 <= status < 500
    assert headers["content-type"] == "text/plain; charset=utf-8" and headers["connection"] == "close"
    assert body.endswith(b"\n") and body.count(b"\n") == 1 and int(headers["content-length"]) == len(body)


def test_the_reply_helpers_write_what_the_parser_reads():
    head = error_response(405, "no", [("Allow", "GET")]).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    response = parse_response(head)
    assert (response.status, response.reason, response.headers.get("allow")) == (
        405,
        "Method Not Allowed",
        "GET",
    )
    health = health_response("tcp", connections=2)
    assert len(health) < MAX_HEAD
    assert json.loads(health.split(b"\r\n\r\n", 1)[1]) == {
        "status": "ok",
        "transport": "tcp",
        "connections": 2,
    }
