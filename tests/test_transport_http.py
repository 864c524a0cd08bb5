"""http://: echo, duplex push, /health, close semantics, and every kind of bad input."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minipool.errors import ConnectionClosed, FrameTooLarge
from minipool.transports import connect, listen
from minipool.transports.http11 import HttpError, parse_response
from tlsutil import EchoServer

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def server():
    with EchoServer("http://127.0.0.1:0", handshake_timeout=1.0, max_message=1 << 20) as srv:
        yield srv


def _raw(url: str) -> socket.socket:
    host, port = url.split("://")[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _response(sock: socket.socket) -> tuple[int, bytes]:
    """Read until the server closes; return its status and the whole answer."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return parse_response(head + b"\r\n\r\n").status, body


def _session(url: str) -> tuple[socket.socket, socket.socket, str]:
    """Open a session by hand: (down socket, up socket, session id)."""
    down = _raw(url)
    down.sendall(b"GET /minipool/events HTTP/1.1\r\nHost: x\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += down.recv(1)
    session = parse_response(head).headers.get("minipool-session")
    up = _raw(url)
    up.sendall(b"POST /minipool/%s/open HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % session.encode())
    assert up.recv(100) == b"HTTP/1.1 204 No Content\r\n\r\n"
    return down, up, session


def _still_serves(url: str) -> None:
    with connect(url) as conn:
        conn.send(b"still here")
        assert conn.recv(10) == b"still here"


@pytest.mark.parametrize("size", [0, 1, 1000, 70_000, 1 << 20])
def test_echo_sizes(server, size):
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    with connect(server.url) as conn:
        conn.send(payload)
        assert conn.recv(10) == payload


def test_many_pipelined_messages_and_send_many(server):
    # More than the acknowledgement batch, so the client must read its 204s as it goes.
    with connect(server.url) as conn:
        for i in range(300):
            conn.send(b"%d" % i)
        assert [conn.recv(10) for _ in range(300)] == [b"%d" % i for i in range(300)]
        conn.send_many([b"a", b"", b"c" * 5000])
        assert [conn.recv(10) for _ in range(3)] == [b"a", b"", b"c" * 5000]


def test_server_pushes_first_and_close_both_ways():
    with listen("http://127.0.0.1:0") as listener:
        client = connect(listener.url)
        conn = listener.accept()
        conn.handshake(5)
        conn.send(b"a task")  # the server speaks first: the down half is a stream
        conn.send_many([b"t2", b"t3"])
        assert [client.recv(5) for _ in range(3)] == [b"a task", b"t2", b"t3"]
        with pytest.raises(TimeoutError):
            conn.recv(timeout=0.05)
        client.send(b"after a timeout")  # a timeout before any byte leaves the stream usable
        assert conn.recv(5) == b"after a timeout"
        client.close()
        with pytest.raises(ConnectionClosed):
            conn.recv(5)
        assert client.closed and conn.closed


def test_close_wakes_a_blocked_recv(server):
    conn = connect(server.url)
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(ConnectionClosed, conn.recv)))
    thread.start()
    conn.close()
    thread.join(10)
    assert not thread.is_alive() and errors
    conn.close()  # idempotent
    with pytest.raises(ConnectionClosed):
        conn.send(b"x")


def test_server_close_ends_client_recv():
    with listen("http://127.0.0.1:0") as listener:
        client = connect(listener.url)
        conn = listener.accept()
        conn.close()
        with pytest.raises(ConnectionClosed):
            client.recv(5)
        client.close()


def test_client_max_message():
    with listen("http://127.0.0.1:0") as listener:
        client = connect(listener.url, max_message=100)
        conn = listener.accept()
        conn.send(b"x" * 101)
        with pytest.raises(FrameTooLarge):
            client.recv(5)
        assert client.closed
        conn.close()


def test_health_answers_json(server):
    with urllib.request.urlopen(server.url + "/health", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.read())["status"] == "ok"


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"garbage\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
        (b"GET /health HTTP/3.0\r\n\r\n", 505),
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"POST /minipool/events HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"POST /minipool/AAAAAAAAAAAAAAAAAAAAAAAA/open HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /minipool/events HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 101 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nA: " + b"x" * 70_000, 431),
    ],
)
def test_bad_openings_get_4xx_and_server_goes_on(server, request_bytes, status):
    with _raw(server.url) as sock:
        sock.sendall(request_bytes)
        assert _response(sock)[0] == status
    _still_serves(server.url)


def test_slow_headers_get_408(server):
    with _raw(server.url) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")  # ... and nothing more
        other = threading.Thread(target=_still_serves, args=(server.url,))
        other.start()  # served while the slow client is still pending
        other.join(10)
        assert not other.is_alive()
        assert _response(sock)[0] == 408


def test_expired_half_session_is_dropped(server):
    with _raw(server.url) as down:
        down.sendall(b"GET /minipool/events HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _ = _response(down)  # no up half arrives: closed after the handshake timeout
        assert status == 200
    _still_serves(server.url)


@pytest.mark.parametrize(
    "request_bytes,status,error",
    [
        (b"POST {path} HTTP/1.1\r\nHost: x\r\n\r\n", 411, HttpError),
        (b"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411, HttpError),
        (b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413, FrameTooLarge),
        (b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, HttpError),
        (b"POST {path} HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400, HttpError),
        (
            b"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1234567890123456789012\r\n\r\n",
            400,
            HttpError,
        ),
        (b"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n", 405, HttpError),
        (b"POST /minipool/other HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 404, HttpError),
        (b"POST {path} HTTP/1.1\r\nContent-Length: 1\r\n\r\nxPOST nonsense\r\n\r\n", 400, HttpError),
    ],
)
def test_bad_messages_in_a_session(server, request_bytes, status, error):
    down, up, session = _session(server.url)
    with down, up:
        up.sendall(request_bytes.replace(b"{path}", b"/minipool/" + session.encode()))
        got, rest = _response(up)
        if b"xPOST" in request_bytes:
            # The good message is acknowledged before the bad one is refused: in order.
            assert got == 204 and rest.startswith(b"HTTP/1.1 %d " % status)
        else:
            assert got == status
        assert isinstance(server.wait_errors(1)[-1], error)
    _still_serves(server.url)


@FUZZ
@given(st.binary(min_size=1, max_size=200))
def test_fuzz_openings(server, data):
    with _raw(server.url) as sock:
        sock.sendall(data + b"\r\n\r\n")
        try:
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # the server may reset a connection it refused: that is an answer too
    _still_serves(server.url)


@FUZZ
@given(st.binary(min_size=1, max_size=200))
def test_fuzz_after_a_session_opened(server, data):
    down, up, _ = _session(server.url)
    with down, up:
        up.sendall(data + b"\r\n\r\n")
        up.shutdown(socket.SHUT_WR)  # EOF: the server must finish with this connection
        try:
            while up.recv(65536):
                pass
        except OSError:
            pass
    _still_serves(server.url)


def test_any_well_formed_post_is_a_message(server):
    # minipool's own client always sends one head shape (the server's fast path); any other
    # valid HTTP/1.1 spelling of a message goes through the full parser and works the same.
    down, up, session = _session(server.url)
    with down, up:
        path = b"/minipool/" + session.encode()
        up.sendall(
            b"POST %s HTTP/1.1\r\ncontent-length: 3\r\nHost: x\r\nX-Extra: 1\r\n\r\nabc" % path
            + b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nde" % path
        )
        echoed = b""
        while b"Mde\r\n" not in echoed:
            echoed += down.recv(65536)
        assert echoed.endswith(b"4\r\nMabc\r\n3\r\nMde\r\n")


def test_listener_close_joins_its_threads():
    listener = listen("http://127.0.0.1:0", handshake_timeout=30)
    half = _raw(listener.url)  # a down half waiting for its up half, and a silent socket
    half.sendall(b"GET /minipool/events HTTP/1.1\r\nHost: x\r\n\r\n")
    silent = _raw(listener.url)
    client = connect(listener.url)  # paired but never accepted
    with half, silent:
        listener.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("minipool-http")]
        with pytest.raises(ConnectionClosed):
            listener.accept()
        with pytest.raises(ConnectionClosed):
            client.recv(5)  # closed by the listener along with the other unaccepted ones
    client.close()


def test_a_poll_that_catches_a_request_half_arrived_keeps_the_connection():
    import time

    from pairs import connected

    listener, client, server = connected("http://127.0.0.1:0")
    try:
        client.send(b"first")
        assert server.recv(5) == b"first"
        # The next POST's head and half its body; the rest is still on its way.
        client._up.sock.sendall(client._prefix + b"10\r\n\r\n" + b"01234")
        time.sleep(0.1)
        with pytest.raises(TimeoutError):
            server.recv(timeout=0.0)  # the coordinator's poll while it has replies to flush
        assert not server.closed
        client._up.sock.sendall(b"56789")
        assert server.recv(5) == b"0123456789"
        client.send(b"after")
        assert server.recv(5) == b"after"
    finally:
        client.close(), server.close(), listener.close()


def test_the_client_waits_for_a_chunk_caught_half_arrived():
    import time

    from pairs import connected, poll_catches_it_half_arrived

    listener, client, server = connected("http://127.0.0.1:0")
    try:
        down = server._down.sock
        down.sendall(b"b\r\nM01234")  # an event chunk of 10 bytes, half of it
        time.sleep(0.05)
        # the rest arrives 0.2 s later
        poll_catches_it_half_arrived(lambda: down.sendall(b"56789\r\n"), client, server, b"0123456789")
    finally:
        client.close(), server.close(), listener.close()
