"""tcp:// framing, limits, deadlines and closing."""

import socket
import struct
import threading

import pytest

from minipool.errors import ConnectionClosed, FrameTooLarge, TransportError
from minipool.transports import connect, listen


@pytest.fixture
def pair():
    listener = listen("tcp://127.0.0.1:0", max_message=1 << 20)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()))
    thread.start()
    client = connect(listener.url, max_message=1 << 20)
    thread.join(5)
    server = accepted[0]
    server.handshake(1)
    yield client, server, listener
    client.close()
    server.close()
    listener.close()


def test_messages_keep_their_boundaries(pair):
    client, server, _ = pair
    client.send_many([b"", b"a", b"bc", b"x" * 300_000])
    assert [server.recv(2) for _ in range(4)] == [b"", b"a", b"bc", b"x" * 300_000]


def test_an_announced_oversized_frame_is_refused_before_reading_it(pair):
    client, server, listener = pair
    raw = socket.create_connection(("127.0.0.1", int(listener.url.rsplit(":", 1)[1])))
    raw.sendall(struct.pack("!I", 2**31))
    other = listener.accept()
    with pytest.raises(FrameTooLarge):
        other.recv(2)
    other.close()
    raw.close()
    client.send(b"still fine")
    assert server.recv(2) == b"still fine"


def test_recv_timeout_leaves_the_stream_in_sync(pair):
    client, server, _ = pair
    with pytest.raises(TimeoutError):
        server.recv(0.05)
    client.send(b"late")
    assert server.recv(2) == b"late"


def test_close_from_another_thread_wakes_a_blocked_recv(pair):
    client, server, _ = pair
    errors = []

    def reader():
        try:
            server.recv()
        except ConnectionClosed as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    server.close()
    thread.join(5)
    assert errors and not thread.is_alive()


def test_peer_close_is_connection_closed(pair):
    client, server, _ = pair
    client.close()
    with pytest.raises(ConnectionClosed):
        server.recv(2)


def test_unknown_scheme_and_bad_urls():
    with pytest.raises(TransportError, match="no transport"):
        connect("carrier-pigeon://127.0.0.1:1")
    with pytest.raises(TransportError, match="port"):
        connect("tcp://127.0.0.1")
