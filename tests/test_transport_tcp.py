"""tcp:// framing, limits, deadlines and closing."""

import pickle
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


def test_runs_of_large_frames_arrive_whole_and_in_order(pair):
    """After a large frame the next prefix is read on its own, so that a large frame that
    follows goes straight into a bytes object of its own (MSG_WAITALL), with no zero-filled
    buffer to fill first. Small frames in between still come out right."""
    client, server, _ = pair
    big = [bytes([65 + i]) * 400_000 + b"end" for i in range(4)]
    frames = [big[0], big[1], b"small", big[2], b"", big[3], b"tail"]
    client.send_many(frames)
    got = [server.recv(5) for _ in frames]
    assert got == frames
    assert type(got[1]) is bytes  # the second of a run: received in place, not copied


def _raw_peer(listener):
    raw = socket.create_connection(("127.0.0.1", int(listener.url.rsplit(":", 1)[1])))
    return raw, listener.accept()


def _half_a_large_frame(raw, served, earlier_large_frames):
    """Send ``earlier_large_frames`` whole large frames (each received), then the head and the
    first 1,000 bytes of a 500,000-byte one."""
    for _ in range(earlier_large_frames):
        raw.sendall(struct.pack("!I", 300_000) + b"z" * 300_000)
        assert served.recv(5) == b"z" * 300_000
    raw.sendall(struct.pack("!I", 500_000) + b"y" * 1000)


@pytest.mark.parametrize("earlier_large_frames", [0, 1])
def test_close_from_another_thread_wakes_a_recv_inside_a_large_frame(pair, earlier_large_frames):
    """A reader blocked in the middle of a large frame -- in recv_into(MSG_WAITALL) for the
    first frame of a run, in recv(MSG_WAITALL) for the next -- wakes when another thread
    closes the connection."""
    _, _, listener = pair
    raw, served = _raw_peer(listener)
    try:
        _half_a_large_frame(raw, served, earlier_large_frames)  # and the rest never comes
        outcome = []

        def reader():
            try:
                served.recv(5)
            except BaseException as exc:  # noqa: BLE001 -- the test checks which
                outcome.append(exc)

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(0.3)  # let it block inside the frame
        assert thread.is_alive()
        served.close()
        thread.join(5)
        assert not thread.is_alive() and isinstance(outcome[0], ConnectionClosed)
    finally:
        raw.close()


@pytest.mark.parametrize("earlier_large_frames", [0, 1])
def test_peer_gone_in_the_middle_of_a_large_frame(pair, earlier_large_frames):
    _, _, listener = pair
    raw, served = _raw_peer(listener)
    try:
        _half_a_large_frame(raw, served, earlier_large_frames)
        raw.close()
        with pytest.raises(ConnectionClosed):
            served.recv(5)
    finally:
        served.close()


def test_buffered_reads_stay_below_mallocs_mmap_threshold():
    # recv(n) allocates n bytes before it knows how many arrive; from 128 KiB glibc maps them
    # with mmap (and a page fault, an mremap, a munmap), which nearly doubled a 1 KB round trip.
    from minipool.transports.stream import SocketStream

    a, b = socket.socketpair()
    asked = []

    class Recording(socket.socket):
        def recv(self, n, *flags):
            asked.append(n)
            return super().recv(n, *flags)

    reader = Recording(fileno=b.detach())
    stream = SocketStream(reader)
    frames = [b"x" * 1000, b"y" * 100_000, b"z" * 10]
    a.sendall(b"".join(struct.pack("!I", len(f)) + f for f in frames))
    assert [stream.read_prefixed(struct.Struct("!I"), 1 << 20) for _ in frames] == frames
    assert asked and max(asked) < 128 * 1024
    a.close()
    stream.close()


def test_send_parts_frames_one_message_and_hands_a_large_body_on_uncopied(pair):
    client, server, _ = pair
    body = bytearray(b"b" * 300_000)
    written = []
    write = client._stream.write
    client._stream.write = lambda parts: (written.append(parts), write(parts))
    client.send_parts((b"head", body))
    client.send_parts((b"small ", b"message"))
    assert server.recv(2) == b"head" + body
    assert server.recv(2) == b"small message"
    assert written[0][-1] is body  # the kernel gathers it from where it lies
    assert len(written[1]) == 1  # a small message is one buffer, one write


def test_a_view_into_a_received_large_message_never_sees_later_bytes(pair):
    from minipool.wire import Format, Kind, Message, decode, encode_buffers

    client, server, _ = pair
    bodies = [pickle.dumps(bytes([n]) * 300_000) for n in range(4)]
    # Small frames between the large ones, so that some large frames start in the read
    # buffer and some are received into objects of their own.
    for n, body in enumerate(bodies):
        client.send_parts(encode_buffers(Kind.RESULT, n, body, Format.PICKLE, "none", None))
        client.send(b"between")
    views = []
    for _ in bodies:
        views.append(decode(server.recv(2), view=True))
        assert server.recv(2) == b"between"
    assert all(isinstance(m.body, memoryview) for m in views)
    assert [pickle.loads(m.body) for m in views] == [pickle.loads(b) for b in bodies]
    assert views == [Message(Kind.RESULT, n, b, fmt=Format.PICKLE) for n, b in enumerate(bodies)]


def test_a_frame_that_arrives_alone_or_in_pieces_or_with_others_reads_the_same():
    # A frame received alone is cut straight out of the received bytes; the same bytes in
    # pieces, or several frames in one receive, go through the buffer. Both roads agree.
    from minipool.transports.stream import SocketStream

    prefix = struct.Struct("!I")
    a, b = socket.socketpair()
    stream = SocketStream(b)

    def framed(body):
        return prefix.pack(len(body)) + body

    a.sendall(framed(b"alone"))
    assert stream.read_prefixed(prefix, 1 << 20) == b"alone"
    whole = framed(b"split" * 100)
    a.sendall(whole[:3])
    with pytest.raises(TimeoutError):  # nothing whole yet: waiting consumes nothing
        stream.read_prefixed(prefix, 1 << 20, deadline=0)
    a.sendall(whole[3:])
    assert stream.read_prefixed(prefix, 1 << 20) == b"split" * 100
    a.sendall(framed(b"one") + framed(b"two") + framed(b"thr"))
    assert [stream.read_prefixed(prefix, 1 << 20) for _ in range(3)] == [b"one", b"two", b"thr"]
    a.sendall(framed(b"too long"))
    with pytest.raises(FrameTooLarge):
        stream.read_prefixed(prefix, 4)
    a.close()
    stream.close()
