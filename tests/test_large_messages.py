"""Large messages: a megabyte and more through every transport and through rpc, the spare
receive buffer that is used again only once nothing holds it, and a damaged large body that
still costs its sender the connection."""

from __future__ import annotations

import importlib.util
import os
import pickle

import pytest

from minipool import rpc
from minipool.errors import ConnectionClosed
from minipool.transports import connect
from minipool.transports.spares import SpareBuffer
from minipool.wire import Format, Kind, Message, decode, encode_buffers
from tlsutil import EchoServer, make_tls

BIG = 1_500_000  # over the 1 MB the issue names, and over the 256 KiB a frame is read alone above
KEY = b"large-messages"
SCHEMES = ["tcp", "tls", "ws", "wss", "http", "https", "zmq+tcp"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls(tmp_path_factory.mktemp("tls"))


def _options(scheme: str, tls, side: str) -> dict:
    options: dict = {"max_message": 4 << 20}
    if scheme in ("tls", "wss", "https"):
        options["ssl_context"] = tls.server if side == "server" else tls.client
    return options


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_large_envelope_goes_through_every_transport_and_back_whole(scheme, tls):
    if scheme == "zmq+tcp" and importlib.util.find_spec("zmq") is None:
        pytest.skip("pyzmq is not installed (the zmq extra)")
    bodies = [pickle.dumps(os.urandom(BIG)), pickle.dumps(os.urandom(BIG + 1))]
    with EchoServer(
        f"{scheme}://127.0.0.1:0", handshake_timeout=5, **_options(scheme, tls, "server")
    ) as server:
        conn = connect(server.url, **_options(scheme, tls, "client"))
        try:
            kept = []
            for number, body in enumerate(bodies * 2):
                conn.send_parts(encode_buffers(Kind.RESULT, number, body, Format.PICKLE, "none", None))
                kept.append(decode(conn.recv(10), view=True))
            # Every reply was kept while the later ones arrived: none of them changed.
            assert kept == [Message(Kind.RESULT, n, b, fmt=Format.PICKLE) for n, b in enumerate(bodies * 2)]
        finally:
            conn.close()


def test_the_spare_buffer_is_used_again_only_once_nothing_holds_it():
    spare = SpareBuffer(largest=1000)
    first = spare.take(800)
    assert first is not None and len(first) == 800
    assert spare.take(800) is None  # held by ``first``
    view = memoryview(first)[10:20]
    del first
    assert spare.take(800) is None  # a view holds it too
    view.release()
    again = spare.take(600)
    assert again is not None and len(again) == 600  # the same buffer, cut to size
    identity = id(again)
    del again
    grown = spare.take(700)  # and grown back within its memory
    assert id(grown) == identity and len(grown) == 700  # (alive in its slot: no other has its id)
    assert spare.take(1001) is None  # too large to keep


def test_a_kept_message_stays_whole_while_later_ones_reuse_the_spare():
    """With ``reuse_buffer`` (rpc's proxies and daemons set it), the first large message is
    received into the spare; while it is kept, the next goes elsewhere; once it is let go, the
    spare is refilled -- never under a reader's feet."""
    with EchoServer("tcp://127.0.0.1:0", max_message=4 << 20) as server:
        conn = connect(server.url, max_message=4 << 20, reuse_buffer=True)
        try:
            payloads = [bytes([n]) * BIG for n in range(5)]

            def echo(n: int) -> bytes:
                conn.send(payloads[n])
                return conn.recv(10)

            kept = echo(0)
            spare = id(kept)
            assert echo(1) == payloads[1] and echo(2) == payloads[2]
            assert kept == payloads[0]
            del kept
            third = echo(3)
            assert id(third) == spare and third == payloads[3]  # the spare, used again
            view = memoryview(third)
            del third
            assert echo(4) == payloads[4] and view == payloads[3]  # a view holds it as well
        finally:
            conn.close()


def test_without_reuse_buffer_a_run_of_large_messages_arrives_in_objects_of_their_own():
    with EchoServer("tcp://127.0.0.1:0", max_message=4 << 20) as server:
        conn = connect(server.url, max_message=4 << 20)
        try:
            kinds = []
            for n in range(3):
                conn.send(bytes([n]) * BIG)
                received = conn.recv(10)
                assert received == bytes([n]) * BIG
                kinds.append(type(received))
                del received  # let it go: a spare buffer would be used again
            assert kinds[1:] == [bytes, bytes]  # what recv(n, MSG_WAITALL) made, not a spare
        finally:
            conn.close()


@pytest.mark.parametrize("scheme", ["tcp", "tls", "ws", "http"])
def test_a_large_rpc_call_and_result_over_each_transport(scheme, tls):
    @rpc.expose
    class Store:
        def __init__(self) -> None:
            self.kept: list[bytes] = []

        def echo(self, data: bytes) -> bytes:
            self.kept.append(data)
            return data

    options = {"max_message": 4 << 20}
    server_options = dict(options, ssl_context=tls.server) if scheme == "tls" else options
    client_options = dict(options, ssl_context=tls.client) if scheme == "tls" else options
    store = Store()
    with rpc.Daemon(f"{scheme}://127.0.0.1:0", authkey=KEY, **server_options) as daemon:
        uri = daemon.register(store, "store")
        daemon.start()
        with rpc.Proxy(uri, authkey=KEY, timeout=10, **client_options) as proxy:
            data = [os.urandom(BIG) for _ in range(3)]
            results = [proxy.echo(d) for d in data]
            assert results == data and store.kept == data  # kept on both sides, all intact


def test_a_damaged_large_body_costs_its_sender_the_connection_and_others_are_served():
    @rpc.expose
    class Echo:
        def echo(self, data: bytes) -> bytes:
            return data

    with rpc.Daemon("tcp://127.0.0.1:0", authkey=KEY, max_message=4 << 20) as daemon:
        uri = daemon.register(Echo(), "echo")
        daemon.start()
        with rpc.Proxy(uri, authkey=KEY, timeout=10, max_message=4 << 20) as proxy:
            data = os.urandom(BIG)
            assert proxy.echo(data) == data  # connected, and the spare is in use
            head, body = encode_buffers(Kind.SUBMIT, 99, pickle.dumps(data), Format.PICKLE, "none", None)
            damaged = bytearray(body)
            damaged[len(damaged) // 2] ^= 0x10
            conn = proxy._conn
            assert conn is not None
            conn.send_parts((head, damaged))
            with pytest.raises(ConnectionClosed):
                while True:  # the refusal, if it gets through, then the end
                    reply = decode(conn.recv(10))
                    assert reply.kind is Kind.ERROR and "CRC-32" in reply.headers["reason"]
            conn.close()  # (what the proxy does with a connection that broke under a call)
            # The next call connects afresh and is answered; so is anyone else.
            assert proxy.echo(data) == data
            with rpc.Proxy(uri, authkey=KEY, timeout=10, max_message=4 << 20) as other:
                assert other.echo(data[:1000]) == data[:1000]
