"""Tests for the zmq+tcp:// transport (ROUTER/DEALER behind Connection and Listener)."""

from __future__ import annotations

import collections
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from minipool.errors import ConnectionClosed, MissingExtra, ProtocolError
from minipool.transports import base

zmq = pytest.importorskip("zmq")

pytestmark = pytest.mark.timeout(60)


class EchoServer:
    """Accepts every connection and echoes each message back, one thread per connection."""

    def __init__(self, listener: base.Listener | None = None, **options: object) -> None:
        self.listener = listener or base.listen("zmq+tcp://127.0.0.1:0", **options)
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.accepted: list[base.Connection] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self.listener.accept()
            except ConnectionClosed:
                return
            self.accepted.append(conn)
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _echo(self, conn: base.Connection) -> None:
        try:
            while True:
                conn.send(conn.recv())
        except BaseException as exc:  # the reason each echo loop ended, for the tests to check
            self.errors.append(exc)

    def close(self) -> None:
        self.listener.close()
        self._acceptor.join(10)
        for thread in self.threads:
            thread.join(10)
        assert not self._acceptor.is_alive()
        assert not any(t.is_alive() for t in self.threads)


@pytest.fixture
def server() -> Iterator[EchoServer]:
    srv = EchoServer()
    yield srv
    srv.close()


def test_small_and_large_round_trips(server: EchoServer) -> None:
    with base.connect(server.listener.url) as conn:
        assert server.listener.url.startswith("zmq+tcp://127.0.0.1:")
        for message in (b"", b"x", b"hello minipool", bytes(range(256)) * 4096):
            conn.send(message)
            assert conn.recv(timeout=10) == message
        conn.send(bytearray(b"mutable"))
        assert conn.recv(timeout=10) == b"mutable"
        conn.send(memoryview(b"view"))
        assert conn.recv(timeout=10) == b"view"


def test_many_messages_arrive_in_order(server: EchoServer) -> None:
    with base.connect(server.listener.url) as conn:
        for i in range(1000):
            conn.send(b"%d" % i)
        conn.send_many([b"batch %d" % i for i in range(1000)])
        got = [conn.recv(timeout=10) for _ in range(2000)]
    assert got == [b"%d" % i for i in range(1000)] + [b"batch %d" % i for i in range(1000)]


def test_clients_are_kept_apart(server: EchoServer) -> None:
    clients = [base.connect(server.listener.url) for _ in range(3)]
    try:
        for round_ in range(50):
            for n, conn in enumerate(clients):
                conn.send(b"client %d round %d" % (n, round_))
        for n, conn in enumerate(clients):
            assert [conn.recv(timeout=10) for _ in range(50)] == [
                b"client %d round %d" % (n, r) for r in range(50)
            ]
        assert len({c.peer for c in server.accepted}) == 3
    finally:
        for conn in clients:
            conn.close()


def test_concurrent_senders_and_receivers(server: EchoServer) -> None:
    """Several client threads share one connection to send; each server connection has its
    own thread, so the server's socket passes between threads (leader/followers)."""
    conns = [base.connect(server.listener.url) for _ in range(4)]
    try:

        def send_part(conn: base.Connection, part: int) -> None:
            for i in range(100):
                conn.send(b"%d:%d" % (part, i))

        senders = [threading.Thread(target=send_part, args=(c, p)) for c in conns for p in range(3)]
        for t in senders:
            t.start()
        results: dict[int, list[bytes]] = {}

        def receive(index: int) -> None:
            results[index] = [conns[index].recv(timeout=20) for _ in range(300)]

        receivers = [threading.Thread(target=receive, args=(i,)) for i in range(len(conns))]
        for t in receivers:
            t.start()
        for t in senders + receivers:
            t.join(30)
        for index in range(len(conns)):
            got = results[index]
            assert sorted(got) == sorted(b"%d:%d" % (p, i) for p in range(3) for i in range(100))
            for part in range(3):  # each sender's own messages stay in order
                mine = [m for m in got if m.startswith(b"%d:" % part)]
                assert mine == [b"%d:%d" % (part, i) for i in range(100)]
    finally:
        for conn in conns:
            conn.close()


def test_client_close_reaches_the_server(server: EchoServer) -> None:
    conn = base.connect(server.listener.url)
    conn.send(b"ping")
    assert conn.recv(timeout=10) == b"ping"
    conn.close()
    conn.close()  # idempotent
    assert conn.closed
    with pytest.raises(ConnectionClosed):
        conn.send(b"late")
    with pytest.raises(ConnectionClosed):
        conn.recv(timeout=1)
    server.threads[0].join(10)
    assert isinstance(server.errors[0], ConnectionClosed)


def test_server_close_reaches_the_client() -> None:
    listener = base.listen("zmq+tcp://127.0.0.1:0")
    try:
        client = base.connect(listener.url)
        served = listener.accept()  # HELLO makes it acceptable before any data
        client.send(b"first")
        assert served.recv(timeout=10) == b"first"
        served.send(b"reply")
        served.close()
        assert client.recv(timeout=10) == b"reply"  # messages before BYE still arrive
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=10)
        assert client.closed
        with pytest.raises(ConnectionClosed):
            client.send(b"more")
        client.close()
    finally:
        listener.close()


def test_short_messages_that_look_like_control_kinds_are_data() -> None:
    """A client reads a message's frame count only when its first frame is as short as a
    control kind: an empty or one-byte message (even b"B", BYE's kind) is still data."""
    listener = base.listen("zmq+tcp://127.0.0.1:0")
    try:
        client = base.connect(listener.url)
        served = listener.accept()
        messages = [b"", b"B", b"H", b"xy", b"B"]
        served.send_many(messages)
        assert [client.recv(timeout=10) for _ in messages] == messages
        served.close()
        with pytest.raises(ConnectionClosed):  # the real BYE: two frames
            client.recv(timeout=10)
        client.close()
    finally:
        listener.close()


def test_a_client_reads_frames_after_a_long_first_frame_as_further_messages() -> None:
    """What a client no longer checks: a server's data frame longer than a control kind with
    frames after it. They are read as the messages that follow -- from the one peer a client
    has, so nobody else can be impersonated."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        client = base.connect(f"zmq+tcp://127.0.0.1:{port}")
        identity, *_ = router.recv_multipart()
        router.send_multipart([identity, b"long", b"next"])
        router.send_multipart([identity, b"long2", b"B", b""])
        assert [client.recv(timeout=10) for _ in range(3)] == [b"long", b"next", b"long2"]
        with pytest.raises(ConnectionClosed):  # the trailing [B, ""] reads as a BYE
            client.recv(timeout=10)
        client.close()
    finally:
        router.close(linger=0)


def test_a_peer_cannot_speak_for_another_with_extra_frames() -> None:
    """A server checks every message's frame count: were it to skip the frames after a long
    payload, the next one would be read as an identity, and a peer could put words in
    another peer's mouth."""
    with base.listen("zmq+tcp://127.0.0.1:0") as listener:
        victim = base.connect(listener.url)
        served_victim = listener.accept()
        victim.send(b"hello")
        assert served_victim.recv(timeout=10) == b"hello"
        victim_identity = served_victim._identity  # type: ignore[attr-defined]
        raw = zmq.Context.instance().socket(zmq.DEALER)
        try:
            raw.connect(listener.url.replace("zmq+", ""))
            raw.send(b"first")
            attacker = listener.accept()
            assert attacker.recv(timeout=10) == b"first"
            raw.send_multipart([b"xxxxxxxx", victim_identity, b"forged"])
            with pytest.raises(ProtocolError):
                attacker.recv(timeout=10)
            with pytest.raises(TimeoutError):
                served_victim.recv(timeout=0.3)
        finally:
            raw.close(linger=0)
        victim.close()


def test_a_malformed_message_from_the_server_is_a_protocol_error() -> None:
    router = zmq.Context.instance().socket(zmq.ROUTER)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        client = base.connect(f"zmq+tcp://127.0.0.1:{port}")
        identity, *hello = router.recv_multipart()
        assert hello == [b"H", b""]
        router.send_multipart([identity, b"?", b"", b"three frames"])
        with pytest.raises(ProtocolError):
            client.recv(timeout=10)
        client.close()
    finally:
        router.close(linger=0)


def test_listener_close_unblocks_accept_and_closes_clients() -> None:
    listener = base.listen("zmq+tcp://127.0.0.1:0")
    client = base.connect(listener.url)
    served = listener.accept()
    outcome: list[BaseException] = []

    def accept_again() -> None:
        try:
            listener.accept()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=accept_again)
    thread.start()
    listener.close()
    listener.close()
    thread.join(10)
    assert not thread.is_alive() and isinstance(outcome[0], ConnectionClosed)
    with pytest.raises(ConnectionClosed):
        served.recv(timeout=1)
    with pytest.raises(ConnectionClosed):
        client.recv(timeout=10)
    client.close()


def test_recv_timeout_leaves_the_connection_usable(server: EchoServer) -> None:
    with base.connect(server.listener.url) as conn:
        with pytest.raises(TimeoutError):
            conn.recv(timeout=0.05)
        conn.send(b"still here")
        assert conn.recv(timeout=10) == b"still here"


def test_close_from_another_thread_unblocks_recv(server: EchoServer) -> None:
    conn = base.connect(server.listener.url)
    outcome: list[BaseException] = []

    def blocked_recv() -> None:
        try:
            conn.recv()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=blocked_recv)
    thread.start()
    thread.join(0.2)
    conn.close()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], ConnectionClosed)


def test_server_side_close_from_another_thread_unblocks_recv() -> None:
    with base.listen("zmq+tcp://127.0.0.1:0") as listener:
        client = base.connect(listener.url)
        served = listener.accept()
        outcome: list[BaseException] = []

        def blocked_recv() -> None:
            try:
                served.recv()
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=blocked_recv)
        thread.start()
        thread.join(0.2)
        served.close()
        thread.join(10)
        assert not thread.is_alive() and isinstance(outcome[0], ConnectionClosed)
        client.close()


def test_oversized_message_drops_that_peer_only() -> None:
    srv = EchoServer(max_message=1000)
    try:
        big = base.connect(srv.listener.url)
        big.send(b"ok")
        assert big.recv(timeout=10) == b"ok"
        big.send(b"x" * 5000)  # ZeroMQ's MAXMSGSIZE makes the server drop this link
        with pytest.raises(ConnectionClosed):
            big.recv(timeout=10)
        big.close()
        with base.connect(srv.listener.url) as good:  # everyone else is still served
            good.send(b"y" * 1000)
            assert good.recv(timeout=10) == b"y" * 1000
    finally:
        srv.close()


def test_malformed_messages_are_protocol_errors() -> None:
    with base.listen("zmq+tcp://127.0.0.1:0") as listener:
        raw = zmq.Context.instance().socket(zmq.DEALER)
        try:
            raw.connect(listener.url.replace("zmq+", ""))
            raw.send(b"data without hello")  # still accepted: HELLO is a courtesy
            served = listener.accept()
            assert served.recv(timeout=10) == b"data without hello"
            raw.send_multipart([b"?", b"", b"three frames"])
            with pytest.raises(ProtocolError):
                served.recv(timeout=10)
            served.close()
        finally:
            raw.close(linger=0)


def test_connect_to_nothing_fails_promptly() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a port that nobody listens on
    with pytest.raises(OSError):
        base.connect(f"zmq+tcp://127.0.0.1:{port}", handshake_timeout=5)


def test_handshake_is_a_no_op(server: EchoServer) -> None:
    with base.connect(server.listener.url) as conn:
        conn.handshake(timeout=1)
        conn.send(b"after handshake")
        assert conn.recv(timeout=10) == b"after handshake"


def test_missing_pyzmq_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from minipool.transports import zmq as transport  # importing never needs pyzmq

    monkeypatch.setitem(sys.modules, "zmq", None)
    for call in (base.listen, base.connect):
        with pytest.raises(MissingExtra) as info:
            call("zmq+tcp://127.0.0.1:1")
        assert info.value.extra == "zmq" and info.value.package == "pyzmq"
        assert "minipool[zmq]" in str(info.value)
    assert transport.HELLO != transport.BYE


def test_close_from_a_signal_handler_in_the_receiving_thread(server: EchoServer) -> None:
    """A worker's SIGTERM handler closes its connection while the same (main) thread is
    blocked in recv, owning the socket: close must not wait for it."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread only")
    conn = base.connect(server.listener.url)
    previous = signal.signal(signal.SIGALRM, lambda *_: conn.close())
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(ConnectionClosed):
            conn.recv(timeout=20)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert conn.closed


def test_zero_timeout_still_reads_what_has_arrived() -> None:
    """recv(timeout=0) is a non-blocking read (the coordinator drains bursts with it)."""
    with base.listen("zmq+tcp://127.0.0.1:0") as listener:
        client = base.connect(listener.url)
        served = listener.accept()
        with pytest.raises(TimeoutError):
            served.recv(timeout=0)
        client.send_many([b"one", b"two"])
        got: list[bytes] = []
        for _ in range(2000):  # the messages are in flight: poll until both have arrived
            try:
                got.append(served.recv(timeout=0))
            except TimeoutError:
                threading.Event().wait(0.005)
            if len(got) == 2:
                break
        assert got == [b"one", b"two"]
        client.close()
        with pytest.raises(ConnectionClosed):
            for _ in range(2000):
                try:
                    served.recv(timeout=0)
                except TimeoutError:
                    threading.Event().wait(0.005)


def test_garbage_on_the_port_is_dropped_and_others_are_served() -> None:
    """A non-ZeroMQ client (HTTP, a bare length prefix, silence) is disconnected by libzmq."""
    srv = EchoServer(handshake_timeout=0.5)
    try:
        port = int(srv.listener.url.rsplit(":", 1)[1])
        for garbage in (b"\x80\x00\x00\x00", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""):
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.settimeout(10)
                if garbage:
                    raw.sendall(garbage)
                try:
                    while raw.recv(65536):
                        pass
                except ConnectionResetError:
                    pass  # closed, abruptly: also fine
        with base.connect(srv.listener.url) as good:
            good.send(b"still served")
            assert good.recv(timeout=10) == b"still served"
        assert srv.accepted and all(c.peer.startswith("zmq:") for c in srv.accepted)
    finally:
        srv.close()


def test_many_server_threads_never_stall(server: EchoServer) -> None:
    """Every server connection has a thread blocked in recv; bursts that wake several of them
    at once must always leave one of them reading the socket for the rest."""
    clients = [base.connect(server.listener.url) for _ in range(6)]
    try:
        for round_ in range(150):
            for n, conn in enumerate(clients):
                conn.send(b"%d/%d" % (n, round_))
            for n, conn in enumerate(clients):
                assert conn.recv(timeout=10) == b"%d/%d" % (n, round_)
    finally:
        for conn in clients:
            conn.close()


def test_receive_only_server_threads_never_stall() -> None:
    """No sends on the server side to restart a stalled hand-over: receiving alone must keep
    one of the blocked threads reading for all of them."""
    with base.listen("zmq+tcp://127.0.0.1:0") as listener:
        clients = [base.connect(listener.url) for _ in range(5)]
        served = [listener.accept() for _ in clients]
        got: dict[int, list[bytes]] = {i: [] for i in range(len(served))}
        failures: list[BaseException] = []

        def sink(index: int) -> None:
            try:
                for _ in range(200):
                    # No timeout: a stalled hand-over would block here for good, not retry.
                    got[index].append(served[index].recv())
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=sink, args=(i,)) for i in range(len(served))]
        for t in threads:
            t.start()
        for round_ in range(200):
            for conn in clients:
                conn.send(b"%d" % round_)
        for t in threads:
            t.join(20)
        stalled = [t for t in threads if t.is_alive()]
        for conn in clients + served:
            conn.close()  # also frees any stalled thread
        for t in threads:
            t.join(10)
        assert not stalled and not failures
        assert all(got[i] == [b"%d" % r for r in range(200)] for i in got)


class CountingCondition:
    """Stands in for an inbox's condition and counts how often its thread goes to sleep."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond, self.waits = cond, 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return self._cond.wait(timeout)

    def notify(self, n: int = 1) -> None:
        self._cond.notify(n)

    def notify_all(self) -> None:
        self._cond.notify_all()


def test_the_accept_thread_leaves_the_socket_to_the_connection_threads() -> None:
    """The echo thread reads its own requests, and the accept thread -- waiting on the same
    ROUTER -- is not woken for each of them: a leader leaving with its message never hands
    the socket to it (it would only find the echo thread back a moment later, or take the
    socket and make every reply wake it). It wakes on its own tick and nothing else."""
    from minipool.transports.sharedsocket import _PASSIVE_TICK

    listener = base.listen("zmq+tcp://127.0.0.1:0")
    hub = listener._hub  # type: ignore[attr-defined]
    pending = listener._pending  # type: ignore[attr-defined]
    pending.cond = sleeps = CountingCondition(pending.cond)  # before anyone waits on it
    readers: collections.Counter[str] = collections.Counter()

    class CountingRoutes(dict):  # the hub looks up each data message's inbox here
        def get(self, identity, default=None):
            inbox = super().get(identity, default)
            if inbox is not None:
                readers["accept" if threading.current_thread() is srv._acceptor else "echo"] += 1
            return inbox

    hub.routes = CountingRoutes(hub.routes)
    srv = EchoServer(listener)
    try:
        with base.connect(listener.url) as conn:
            conn.send(b"warm-up")
            assert conn.recv(timeout=10) == b"warm-up"
            readers.clear()
            before, started = sleeps.waits, time.monotonic()
            for i in range(300):
                conn.send(b"%d" % i)
                assert conn.recv(timeout=10) == b"%d" % i
            waits, elapsed = sleeps.waits - before, time.monotonic() - started
    finally:
        srv.close()
    assert readers["echo"] >= 295 and readers["accept"] <= 5
    assert waits <= 1.5 * elapsed / _PASSIVE_TICK + 10, (waits, elapsed)


def test_a_new_peer_is_accepted_while_every_connection_thread_is_busy() -> None:
    """While connections exist the accept thread does not block on the socket; it still reads
    it now and then when no connection thread does, so a new peer gets in (and messages for
    a busy connection are waiting for it) while the only connection's thread is elsewhere."""
    with base.listen("zmq+tcp://127.0.0.1:0") as listener:
        first = base.connect(listener.url)
        busy = listener.accept()  # no thread ever receives on it until the end
        first.send(b"for the busy one")
        accepted: list[base.Connection] = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()))
        thread.start()
        second = base.connect(listener.url)
        thread.join(10)
        assert accepted and not thread.is_alive()
        second.send(b"hello")
        assert accepted[0].recv(timeout=10) == b"hello"
        assert busy.recv(timeout=10) == b"for the busy one"
        for conn in (first, second, busy, accepted[0]):
            conn.close()


def test_close_wakes_a_connection_thread_that_is_reading_the_socket() -> None:
    """The server thread blocked in recv is the one waiting in zmq_poll (the accept thread waits
    passively beside it); close from another thread must wake it at once."""
    srv = EchoServer()
    try:
        client = base.connect(srv.listener.url)
        client.send(b"ping")
        assert client.recv(timeout=10) == b"ping"
        served = srv.accepted[0]
        srv.threads[0].join(0.2)  # its echo thread is back in recv, leading
        started = time.monotonic()
        served.close()
        srv.threads[0].join(10)
        assert not srv.threads[0].is_alive() and isinstance(srv.errors[0], ConnectionClosed)
        assert time.monotonic() - started < 5
        client.close()
    finally:
        srv.close()


def test_connections_are_counted_until_closed() -> None:
    """The hub counts open connections: while any exists the accept thread only reads now
    and then; once none is left it waits on the socket itself again."""
    with base.listen("zmq+tcp://127.0.0.1:0") as listener:
        hub = listener._hub  # type: ignore[attr-defined]
        clients = [base.connect(listener.url) for _ in range(3)]
        accepted = [listener.accept() for _ in clients]  # in the order their HELLOs came
        assert hub._active == 3
        for n, conn in enumerate(clients):
            conn.send(b"%d" % n)
        served = {int(conn.recv(timeout=10)): conn for conn in accepted}  # n: clients[n]'s peer
        clients[0].close()
        with pytest.raises(ConnectionClosed):  # the peer's BYE; recv closes the inbox
            served[0].recv(timeout=10)
        served[1].close()
        served[1].close()  # idempotent: counted once
        assert hub._active == 1
        served[2].close()
        assert hub._active == 0
        late = base.connect(listener.url)
        again = listener.accept()
        assert hub._active == 1
        late.close()
        again.close()
        assert hub._active == 0
        for conn in clients[1:]:
            conn.close()


def test_frames_without_more_flag_are_read_with_getsockopt(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyzmq's CFFI backend (PyPy) does not fill Frame.more; the hub then asks RCVMORE for
    each frame. The same traffic -- data, HELLO, BYE, a malformed message -- must come out
    the same way on both sides."""
    from minipool.transports import sharedsocket

    monkeypatch.setattr(sharedsocket, "_frame_knows_more", False)
    with base.listen("zmq+tcp://127.0.0.1:0") as listener:
        assert listener._hub._read == listener._hub._read_by_getsockopt  # type: ignore[attr-defined]
        client = base.connect(listener.url)
        served = listener.accept()
        client.send(b"up")
        assert served.recv(timeout=10) == b"up"
        served.send_many([b"down", b""])
        assert [client.recv(timeout=10), client.recv(timeout=10)] == [b"down", b""]
        raw = zmq.Context.instance().socket(zmq.DEALER)
        try:
            raw.connect(listener.url.replace("zmq+", ""))
            raw.send_multipart([b"?", b"", b"three frames"])
            with pytest.raises(ProtocolError):
                listener.accept().recv(timeout=10)
        finally:
            raw.close(linger=0)
        served.close()
        with pytest.raises(ConnectionClosed):  # the server's BYE
            client.recv(timeout=10)
        client.close()


def wait_until(condition: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def leading_reader(conn: base.Connection) -> tuple[threading.Thread, list[BaseException]]:
    """A thread blocked in ``conn.recv()``, once it leads (holds the socket); what it raised
    goes into the list."""
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            conn.recv()
        except BaseException as exc:  # the reason the read ended, for the test to check
            outcome.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    wait_until(conn._hub._owner.locked)  # type: ignore[attr-defined]
    return thread, outcome


class CountingPoll:
    """Wraps a hub's zmq_poll to count the calls that could block (timeout other than 0)."""

    def __init__(self, hub: object) -> None:
        self.blocking = 0
        self._poll = hub._zpoll  # type: ignore[attr-defined]
        hub._zpoll = self  # type: ignore[attr-defined]

    def __call__(self, items: object, timeout: int) -> object:
        if timeout != 0:
            self.blocking += 1
        return self._poll(items, timeout)


def test_a_lone_client_waits_in_recv_like_a_req_socket(server: EchoServer) -> None:
    """A client thread that nobody else has needed waits for its reply inside ZeroMQ's recv,
    not in zmq_poll (a few syscalls more per message on loopback)."""
    with base.connect(server.listener.url) as conn:
        polls = CountingPoll(conn._hub)  # type: ignore[attr-defined]
        for i in range(50):
            conn.send(b"%d" % i)
            assert conn.recv() == b"%d" % i
        assert polls.blocking == 0 and conn._hub._lone  # type: ignore[attr-defined]


def test_a_send_from_another_thread_reaches_a_lone_leader(server: EchoServer) -> None:
    """The first wake-up finds the leader blocked in recv; it sees it within one tick, and
    from then on waits in zmq_poll, where a wake-up reaches it at once."""
    from minipool.transports.dealersocket import _LONE_TICK_MS

    with base.connect(server.listener.url) as conn:
        hub = conn._hub  # type: ignore[attr-defined]
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.extend(conn.recv() for _ in range(21)))
        reader.start()
        wait_until(hub._owner.locked)  # the reader leads, blocked in recv
        started = time.monotonic()
        conn.send(b"first")  # finds the socket held: queued, and the leader woken
        wait_until(lambda: received)
        assert received == [b"first"]
        assert time.monotonic() - started < 10 * _LONE_TICK_MS / 1000 + 1
        assert not hub._lone
        polls = CountingPoll(hub)
        for i in range(20):  # now each send wakes the leader through the socketpair
            wait_until(lambda i=i: len(received) == i + 1 and hub._owner.locked())
            conn.send(b"%d" % i)
        reader.join(10)
        assert received == [b"first"] + [b"%d" % i for i in range(20)]
        assert polls.blocking >= 20  # the leader waited in zmq_poll, where wake-ups reach it


def test_a_lone_leader_notices_the_server_vanish() -> None:
    """No BYE: the server's socket is simply gone. A leader blocked in recv reads the
    monitor at each tick and closes the connection."""
    router = zmq.Context.instance().socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    client = base.connect(f"zmq+tcp://127.0.0.1:{port}")
    thread, outcome = leading_reader(client)
    router.close(linger=0)
    thread.join(10)
    assert not thread.is_alive() and isinstance(outcome[0], ConnectionClosed)
    client.close()


def test_close_from_another_thread_reaches_a_lone_leader(server: EchoServer) -> None:
    conn = base.connect(server.listener.url)
    thread, outcome = leading_reader(conn)
    assert conn._hub._lone  # type: ignore[attr-defined]
    conn.close()
    thread.join(10)
    assert not thread.is_alive() and isinstance(outcome[0], ConnectionClosed)
