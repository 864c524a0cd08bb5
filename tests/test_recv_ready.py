"""Connection.recv_ready: the messages already received, without waiting, over every transport."""

import socket
import struct
import time

import pytest

from minipool.errors import FrameTooLarge
from pairs import connected


def _wait_for(conn, want, limit=100, timeout=5.0):
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += conn.recv_ready(limit - len(got))
    return got


def test_nothing_waiting_gives_an_empty_list_at_once(transport):
    listener, client, server = connected(f"{transport}://127.0.0.1:0")
    try:
        start = time.monotonic()
        assert server.recv_ready(10) == []
        assert time.monotonic() - start < 0.5
    finally:
        client.close(), server.close(), listener.close()


def test_a_burst_comes_back_whole_in_order_and_up_to_the_limit(transport):
    listener, client, server = connected(f"{transport}://127.0.0.1:0")
    try:
        messages = [b"m%03d" % i * (i + 1) for i in range(40)]
        client.send_many(messages)
        first = server.recv(5)
        rest = _wait_for(server, 10, limit=10)
        assert len(rest) == 10  # never more than asked for
        rest += _wait_for(server, 29)
        assert [first, *rest] == messages
        client.send(b"after")
        assert server.recv(5) == b"after"  # the stream is still in step
    finally:
        client.close(), server.close(), listener.close()


def test_tcp_leaves_a_partial_or_large_frame_to_recv():
    listener = socket.create_server(("127.0.0.1", 0))
    raw = socket.create_connection(listener.getsockname())
    sock, _ = listener.accept()
    from minipool.transports.base import Options
    from minipool.transports.tcp import TcpConnection

    conn = TcpConnection(sock, Options(max_message=1 << 24))
    try:
        big = b"B" * (300 * 1024)  # larger than one read chunk
        raw.sendall(struct.pack("!I", 3) + b"one" + struct.pack("!I", 5) + b"tw")
        assert _wait_for(conn, 1) == [b"one"]
        assert conn.recv_ready(10) == []  # "tw" of 5 bytes: not whole yet
        raw.sendall(b"o!!" + struct.pack("!I", len(big)) + big[:1000])
        assert _wait_for(conn, 1) == [b"two!!"]
        assert conn.recv_ready(10) == []  # a large frame is recv's job
        raw.sendall(big[1000:])
        assert conn.recv(5) == big
        raw.sendall(struct.pack("!I", 1 << 30))
        with pytest.raises(FrameTooLarge):
            _wait_for(conn, 1)
    finally:
        conn.close(), raw.close(), listener.close()


def _tcp_pair():
    from minipool.transports.base import Options
    from minipool.transports.tcp import TcpConnection

    listener = socket.create_server(("127.0.0.1", 0))
    raw = socket.create_connection(listener.getsockname())
    sock, _ = listener.accept()
    return listener, raw, TcpConnection(sock, Options(max_message=1 << 20))


def test_frames_before_an_oversized_one_are_returned_and_the_next_read_raises():
    listener, raw, conn = _tcp_pair()
    try:
        raw.sendall(
            b"".join(struct.pack("!I", len(m)) + m for m in (b"first", b"res2", b"res3!"))
            + struct.pack("!I", 1 << 30)
        )
        assert conn.recv(5) == b"first"
        assert _wait_for(conn, 2) == [b"res2", b"res3!"]
        with pytest.raises(FrameTooLarge):
            conn.recv(5)
    finally:
        conn.close(), raw.close(), listener.close()


def test_a_workers_burst_keeps_the_results_before_garbage_or_a_close():
    from minipool.cluster.coordinator import Coordinator
    from minipool.errors import ConnectionClosed, ProtocolError
    from minipool.wire import Kind, Message, encode

    def framed(*messages):
        return b"".join(struct.pack("!I", len(m)) + m for m in messages)

    results = [encode(Message(Kind.RESULT, n, b"value")) for n in (1, 2, 3)]
    listener, raw, conn = _tcp_pair()
    try:
        raw.sendall(framed(*results, b"not a minipool message"))
        time.sleep(0.1)
        burst, trouble = Coordinator._burst(conn, conn.recv(5))
        assert [m.id for m in burst] == [1, 2, 3] and isinstance(trouble, ProtocolError)
    finally:
        conn.close(), raw.close(), listener.close()
    listener, raw, conn = _tcp_pair()
    try:
        raw.sendall(framed(results[0]))  # a worker's last result, then it exits
        raw.shutdown(socket.SHUT_WR)
        time.sleep(0.1)
        burst, trouble = Coordinator._burst(conn, conn.recv(5))
        assert [m.id for m in burst] == [1] and isinstance(trouble, ConnectionClosed)
    finally:
        conn.close(), raw.close(), listener.close()
