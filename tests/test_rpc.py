"""minipool.rpc: remote objects over every transport, their errors, names and bad peers."""

from __future__ import annotations

import importlib.util
import pickle
import socket
import struct
import threading
import time

import pytest

from minipool import rpc
from minipool.cluster.coordinator import Coordinator
from minipool.errors import AuthenticationError, ConnectionClosed, ProtocolError, RemoteError
from minipool.rpc import calls
from minipool.task import RemoteTraceback
from minipool.transports import connect, listen
from minipool.wire import Kind, Message, decode, encode

KEY = b"rpc-test-key"

pytestmark = pytest.mark.timeout(60)


@rpc.expose
class Counter:
    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n: int = 1, *, times: int = 1) -> int:
        with self._lock:
            self.value += n * times
            return self.value

    def apply(self, fn, x):
        return fn(x)

    def sleep(self, seconds: float) -> str:
        time.sleep(seconds)
        return f"slept {seconds}"

    def fail(self) -> None:
        raise ValueError("the remote side says no")

    def fail_unpicklably(self) -> None:
        class Local(Exception):  # a class pickle cannot find by name
            pass

        raise Local("cannot travel")

    def call_back(self, proxy: rpc.Proxy, value: int) -> int:
        return proxy.add(value)

    def _private(self) -> int:
        return 42


class Mixed:
    @rpc.expose
    def shown(self) -> str:
        return "shown"

    def hidden(self) -> str:
        return "hidden"


@pytest.fixture
def daemon():
    with rpc.Daemon(authkey=KEY) as d:
        d.start()
        yield d


def test_calls_run_on_the_object_and_keep_its_state(daemon):
    uri = daemon.register(Counter(), "counter")
    assert uri == daemon.url + "#counter"
    with rpc.Proxy(uri, authkey=KEY) as counter:
        assert counter.add() == 1
        assert counter.add(2, times=3) == 7
        assert counter.apply(lambda v: v * 10, 4) == 40  # a by-value function as an argument
    with rpc.Proxy(uri, authkey=KEY) as again:  # another connection, the same object
        assert again.add() == 8


def test_a_remote_exception_is_raised_with_the_remote_traceback(daemon):
    proxy = rpc.Proxy(daemon.register(Counter()), authkey=KEY)
    with pytest.raises(ValueError, match="the remote side says no") as info:
        proxy.fail()
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "in fail" in str(info.value.__cause__)
    with pytest.raises(RemoteError, match="cannot travel"):
        proxy.fail_unpicklably()
    assert proxy.add() == 1  # the connection survives both


def test_only_exposed_public_methods_can_be_called(daemon):
    counter = rpc.Proxy(daemon.register(Counter()), authkey=KEY)
    with pytest.raises(AttributeError):
        counter._private()  # refused by the proxy itself
    with pytest.raises(AttributeError, match="no method"):
        counter.nothing_here()
    with pytest.raises(AttributeError, match="private"):
        counter._call("__reduce__")  # what a hostile client could send by hand
    mixed = rpc.Proxy(daemon.register(Mixed()), authkey=KEY)
    assert mixed.shown() == "shown"
    with pytest.raises(AttributeError, match="not exposed"):
        mixed.hidden()


class Base:
    def inherited(self) -> str:
        return "inherited"


@rpc.expose
class Exposed(Base):
    class Nested:
        pass

    @property
    def prop(self) -> str:
        return "prop"

    @staticmethod
    def static() -> str:
        return "static"

    @classmethod
    def klass(cls) -> str:
        return cls.__name__

    def own(self) -> str:
        return "own"


class Sub(Exposed):
    def added(self) -> str:
        return "added"


@rpc.expose
class Mapping(dict):
    def size(self) -> int:
        return len(self)


def test_exposing_a_class_exposes_its_own_methods_only(daemon):
    sub = rpc.Proxy(daemon.register(Sub()), authkey=KEY)
    assert (sub.own(), sub.static(), sub.klass()) == ("own", "static", "Sub")
    for name in ("added", "inherited"):  # a subclass's and a base's methods: not marked
        with pytest.raises(AttributeError, match="not exposed"):
            sub._call(name)
    for name in ("Nested", "prop"):  # a class to construct, a property: not methods
        with pytest.raises(AttributeError, match="not a method"):
            sub._call(name)
    mapping = rpc.Proxy(daemon.register(Mapping(a=1)), authkey=KEY)
    assert mapping.size() == 1
    for name in ("clear", "get", "copy"):  # dict's own methods stay out of reach
        with pytest.raises(AttributeError):
            mapping._call(name)


def test_unknown_objects_and_bad_uris(daemon):
    with pytest.raises(LookupError, match="no object named 'ghost'"):
        rpc.Proxy(daemon.url + "#ghost", authkey=KEY).add()
    with pytest.raises(ValueError, match="names no object"):
        rpc.Proxy(daemon.url, authkey=KEY)
    with pytest.raises(ValueError, match="name_server"):
        rpc.Proxy("name:counter", authkey=KEY)
    with pytest.raises(ValueError, match="already registered"):
        daemon.register(Counter(), "twice")
        daemon.register(Counter(), "twice")
    name = "gone"
    proxy = rpc.Proxy(daemon.register(Counter(), name), authkey=KEY)
    assert proxy.add() == 1
    daemon.unregister(name)
    with pytest.raises(LookupError):
        proxy.add()


def test_a_wrong_key_is_refused_and_others_are_still_served(daemon):
    uri = daemon.register(Counter())
    with pytest.raises(AuthenticationError):
        rpc.Proxy(uri, authkey=b"wrong key").add()
    assert rpc.Proxy(uri, authkey=KEY).add() == 1


def _raw_session(url: str):
    """A connection that has passed the handshake, for sending hand-made messages."""
    from minipool.cluster.session import client_handshake

    conn = connect(url)
    client_handshake(conn, KEY, {"role": "rpc-client"}, 10)
    return conn


def test_garbage_and_malformed_calls_close_that_connection_only(daemon):
    uri = daemon.register(Counter(), "counter")
    host, port = daemon.url.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as raw:  # garbage before the handshake
        raw.sendall(struct.pack("!I", 12) + b"not minipool")
        raw.settimeout(10)
        while raw.recv(65536):  # the daemon closes it
            pass
    for bad in (
        Message(Kind.SUBMIT, 1, pickle.dumps(((), {}))),  # no object, no method
        Message(Kind.SUBMIT, 2, pickle.dumps(("counter", "add", [1], {}))),  # args a list
        Message(Kind.STATUS, 1),
    ):  # not a call
        conn = _raw_session(daemon.url)
        conn.send(encode(bad))
        reply = decode(conn.recv(10))
        assert reply.kind is Kind.ERROR
        with pytest.raises(ConnectionClosed):
            conn.recv(10)
        conn.close()
    conn = _raw_session(daemon.url)  # arguments that cannot be unpickled: that call fails
    conn.send(encode(Message(Kind.SUBMIT, 3, b"\x80\x05 not a pickle")))
    reply = decode(conn.recv(10))
    assert reply.kind is Kind.FAILURE and reply.id == 3
    conn.send(encode(Message(Kind.SUBMIT, 7, pickle.dumps(("counter", "add", (5,), {})))))
    assert decode(conn.recv(10)).kind is Kind.RESULT  # and the connection goes on
    conn.close()
    conn = _raw_session(daemon.url)  # a well-formed call by hand: answered
    conn.send(encode(Message(Kind.SUBMIT, 7, pickle.dumps(("counter", "add", (5,), {})))))
    reply = decode(conn.recv(10))
    assert reply.kind is Kind.RESULT and reply.id == 7 and pickle.loads(reply.body) == 10
    conn.close()
    assert rpc.Proxy(uri, authkey=KEY).add() == 11


def test_proxies_in_threads_run_side_by_side(daemon):
    uri = daemon.register(Counter())
    slow = rpc.Proxy(uri, authkey=KEY)
    sleeper = threading.Thread(target=slow.sleep, args=(1.0,))
    sleeper.start()
    time.sleep(0.1)
    started = time.monotonic()
    results = []

    def add_many() -> None:
        with rpc.Proxy(uri, authkey=KEY) as proxy:
            results.extend(proxy.add() for _ in range(50))

    threads = [threading.Thread(target=add_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert time.monotonic() - started < 0.9  # not queued behind the sleeping call
    assert sorted(results) == list(range(1, 201))
    sleeper.join(10)


def test_a_shared_proxy_takes_turns(daemon):
    proxy = rpc.Proxy(daemon.register(Counter()), authkey=KEY)
    results = []
    threads = [
        threading.Thread(target=lambda: results.extend(proxy.add() for _ in range(50))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == list(range(1, 201))


def test_a_call_past_its_timeout_raises_and_the_next_one_is_not_held_up_by_it(daemon):
    proxy = rpc.Proxy(daemon.register(Counter()), authkey=KEY, timeout=0.3)
    with pytest.raises(TimeoutError):
        proxy.sleep(2.0)
    started = time.monotonic()
    assert proxy.add() == 1  # a new connection: not queued behind the sleep, not its answer
    assert time.monotonic() - started < 1.0


def test_a_closed_daemon_is_a_connection_error(daemon):
    proxy = rpc.Proxy(daemon.register(Counter()), authkey=KEY)
    assert proxy.add() == 1
    daemon.close()
    with pytest.raises((ConnectionClosed, OSError)):
        proxy.add()


def test_connections_beyond_the_limit_are_refused():
    with rpc.Daemon(authkey=KEY, max_connections=1) as daemon:
        daemon.start()
        uri = daemon.register(Counter())
        first = rpc.Proxy(uri, authkey=KEY)
        assert first.add() == 1
        with pytest.raises((ConnectionClosed, OSError, TimeoutError)):
            rpc.Proxy(uri, authkey=KEY, timeout=2).add()
        first._close()
        deadline = time.monotonic() + 10
        while True:  # the slot comes back once the first connection's thread has ended
            try:
                assert rpc.Proxy(uri, authkey=KEY).add() == 2
                break
            except (ConnectionClosed, OSError):
                assert time.monotonic() < deadline
                time.sleep(0.05)


def test_a_proxy_travels_by_uri_and_the_key_stays_home(daemon, monkeypatch):
    monkeypatch.setenv("MINIPOOL_AUTHKEY", KEY.decode())
    target = rpc.Proxy(daemon.register(Counter(), "target"), authkey=KEY)
    assert KEY not in pickle.dumps(target)
    caller = rpc.Proxy(daemon.register(Counter(), "caller"), authkey=KEY)
    assert caller.call_back(target, 5) == 5  # the daemon calls target through the proxy
    assert target.add() == 6


@pytest.fixture
def name_server():
    with Coordinator(KEY, heartbeat=0.2) as coord:
        yield coord.serve("tcp://127.0.0.1:0")


@rpc.expose
class Chain:
    """The seed's chain: each server passes the message on, until it comes back around."""

    def __init__(self, name: str, next_name: str, name_server: str) -> None:
        self.name, self.next_name, self.name_server = name, next_name, name_server
        self.next: rpc.Proxy | None = None

    def process(self, message: list[str]) -> list[str]:
        if self.next is None:
            self.next = rpc.Proxy(
                f"name:example.chain.{self.next_name}", name_server=self.name_server, authkey=KEY
            )
        if self.name in message:
            return [f"complete at {self.name}"]
        message.append(self.name)
        result = self.next.process(message)
        result.insert(0, f"passed on from {self.name}")
        return result


def test_names_are_kept_by_the_coordinator_and_expire_with_their_daemon(name_server):
    daemons = [rpc.Daemon(authkey=KEY, name_server=name_server).start() for _ in range(3)]
    try:
        for i, d in enumerate(daemons):
            this, nxt = str(i + 1), str((i + 1) % 3 + 1)
            d.register(Chain(this, nxt, name_server), f"example.chain.{this}")
        chain = rpc.Proxy("name:example.chain.1", name_server=name_server, authkey=KEY)
        assert chain.process(["hello"]) == [
            "passed on from 1",
            "passed on from 2",
            "passed on from 3",
            "complete at 1",
        ]
        assert rpc.locate("example.chain.2", name_server=name_server, authkey=KEY) == daemons[1].uri(
            "example.chain.2"
        )
        daemons[1].close()
        deadline = time.monotonic() + 10
        while True:
            try:
                rpc.locate("example.chain.2", name_server=name_server, authkey=KEY)
            except LookupError:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        for d in daemons:
            d.close()


def test_a_name_follows_its_object_to_a_new_daemon(name_server):
    first = rpc.Daemon(authkey=KEY, name_server=name_server).start()
    first.register(Counter(), "moving")
    proxy = rpc.Proxy("name:moving", name_server=name_server, authkey=KEY)
    assert proxy.add() == 1
    first.close()
    with rpc.Daemon(authkey=KEY, name_server=name_server) as second:
        second.start()
        second.register(Counter(), "moving")
        with pytest.raises((ConnectionClosed, OSError)):
            proxy.add()  # the old connection is gone
        assert proxy.add() == 1  # the next call looks the name up again: the new object


def test_two_daemons_serving_one_name_do_not_erase_each_other(name_server):
    with (
        rpc.Daemon(authkey=KEY, name_server=name_server) as a,
        rpc.Daemon(authkey=KEY, name_server=name_server) as b,
    ):
        a.register(Counter(), "twin")
        b.register(Counter(), "twin")
        a.close()
        assert rpc.locate("twin", name_server=name_server, authkey=KEY) == b.uri("twin")


def test_a_name_given_up_is_gone_for_the_very_next_lookup(name_server):
    """Before: closing or unregistering sent a fire-and-forget REGISTER that expired in 1 ms,
    and a lookup on another connection could be handled first: the next ``locate`` found the
    closed daemon (about half the time in a loop). Now the daemon waits until the coordinator
    has applied it. Twenty rounds, each a fresh race."""
    for round_ in range(20):
        name = f"twin{round_}"
        with (
            rpc.Daemon(authkey=KEY, name_server=name_server) as a,
            rpc.Daemon(authkey=KEY, name_server=name_server) as b,
        ):
            a.register(Counter(), name)
            b.register(Counter(), name)
            if round_ % 2:
                a.close()
            else:
                a.unregister(name)
            assert rpc.locate(name, name_server=name_server, authkey=KEY) == b.uri(name)


def test_names_are_renewed_by_a_fresh_client_when_the_old_one_gave_up(name_server, monkeypatch):
    monkeypatch.setattr(rpc, "NAME_TTL", 0.6)  # renewed every 0.2 s
    with rpc.Daemon(authkey=KEY, name_server=name_server) as daemon:
        daemon.register(Counter(), "kept")
        daemon._names._client.close()  # type: ignore[union-attr] -- as if it had given up
        time.sleep(1.5)  # more than two TTLs
        assert rpc.locate("kept", name_server=name_server, authkey=KEY) == daemon.uri("kept")


_TRANSPORTS = ["tcp", "ws", "http"]
if importlib.util.find_spec("zmq") is not None:
    _TRANSPORTS.append("zmq+tcp")


@pytest.mark.parametrize("scheme", _TRANSPORTS)
def test_every_transport_carries_calls(scheme):
    with rpc.Daemon(f"{scheme}://127.0.0.1:0", authkey=KEY) as daemon:
        daemon.start()
        with rpc.Proxy(daemon.register(Counter()), authkey=KEY) as counter:
            assert [counter.add(i) for i in range(1, 5)] == [1, 3, 6, 10]
            with pytest.raises(ValueError):
                counter.fail()
            assert counter.apply(len, b"x" * 300_000) == 300_000


def test_a_daemon_needs_a_key(monkeypatch):
    monkeypatch.delenv("MINIPOOL_AUTHKEY", raising=False)
    with pytest.raises(ValueError, match="authkey"):
        rpc.Daemon()
    with pytest.raises(ValueError, match="authkey"):
        rpc.Proxy("tcp://127.0.0.1:1#x")


def test_calls_from_an_unauthenticated_peer_are_never_unpickled(daemon):
    """The handshake comes first: a SUBMIT sent instead of the proof is a protocol error,
    and its body -- a pickle that would run code -- is never loaded."""
    ran = []
    daemon.register(Counter(), "counter")

    class Boom:
        def __reduce__(self):
            return (ran.append, ("unpickled!",))

    conn = connect(daemon.url)
    conn.recv(10)  # the challenge
    conn.send(encode(Message(Kind.SUBMIT, 1, pickle.dumps(("counter", "add", (Boom(),), {})))))
    with pytest.raises((ConnectionClosed, ProtocolError)):
        while True:
            decode(conn.recv(10))
    conn.close()
    assert ran == []


def test_an_unreachable_name_server_fails_the_daemon_and_closes_its_listener(monkeypatch):
    from minipool.rpc import daemon as serving

    listeners = []

    def recording_listen(url, **options):
        listener = listen(url, **options)
        listeners.append(listener)
        return listener

    monkeypatch.setattr(serving, "listen", recording_listen)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))  # bound, not listening: connecting is refused
    try:
        with pytest.raises(OSError):
            rpc.Daemon(authkey=KEY, name_server=f"tcp://127.0.0.1:{probe.getsockname()[1]}")
    finally:
        probe.close()
    assert len(listeners) == 1 and listeners[0]._closed  # not left to the garbage collector


class _PicklesWhilePickled:
    """Its pickling pickles something else on the same thread."""

    def __reduce__(self):
        inner = calls.gathered(("inner", b"y" * 100_000))
        return (bytes, (b"".join(inner),))


def test_a_large_bytes_argument_or_result_is_sent_as_itself_not_copied_into_the_pickle(daemon):
    blob = bytes(range(256)) * 4096  # 1 MiB
    parts = calls.gathered(("counter", "apply", (bytes, blob), {}))
    assert any(part is blob for part in parts)
    assert pickle.loads(b"".join(parts)) == ("counter", "apply", (bytes, blob), {})
    mutable = bytearray(blob)  # copied: another thread changing it cannot tear a message
    parts = calls.gathered(mutable)
    assert not any(part is mutable for part in parts) and pickle.loads(b"".join(parts)) == mutable
    assert b"".join(calls.gathered(("small", 1))) == pickle.dumps(("small", 1), pickle.HIGHEST_PROTOCOL)
    assert calls.gathered(lambda: 1) is None  # the caller falls back to the shipping pickler
    nested = calls.gathered([_PicklesWhilePickled(), blob])
    assert pickle.loads(b"".join(nested)) == [b"".join(calls.gathered(("inner", b"y" * 100_000))), blob]
    # End to end, both ways, and the same connection then carries small calls as before.
    with rpc.Proxy(daemon.register(Counter()), authkey=KEY) as proxy:
        assert proxy.apply(bytes, blob) == blob
        assert proxy.apply(bytearray, blob) == blob
        assert proxy.apply(lambda x: x[:3], blob) == blob[:3]
        assert proxy.add(2) == 2
