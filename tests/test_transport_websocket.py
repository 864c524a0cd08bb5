"""ws:// and wss://: our client and server, interop with the websockets library both ways, bad
input against our server, and the article's JavaScript client run by Node.js."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path

import pytest

from minipool.errors import ConnectionClosed, FrameTooLarge, ProtocolError, TransportError
from minipool.transports import base
from minipool.transports.base import Options, parse_url
from minipool.transports.http11 import HttpError
from minipool.transports.websocket import accept_key, connect
from minipool.transports.wsframes import (
    CloseCode,
    Frame,
    FrameParser,
    MessageTooBig,
    Opcode,
    WebSocketProtocolError,
    parse_close,
    serialize,
    serialize_close,
)

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


class EchoServer:
    """Our ws:// listener with one thread per connection, echoing each message as its type.

    ``outcomes`` receives ``(connection, exception)`` as each connection ends.
    """

    def __init__(
        self, url: str = "ws://127.0.0.1:0", handshake_timeout: float = 5.0, **options: object
    ) -> None:
        self.listener = base.listen(url, **options)
        self.url = self.listener.url
        self.handshake_timeout = handshake_timeout
        self.conns: list = []
        self.threads: list[threading.Thread] = []
        self.outcomes: queue.Queue = queue.Queue()
        self._accepter = threading.Thread(target=self._accept)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn = self.listener.accept()
            except ConnectionClosed:
                return
            self.conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,))
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn) -> None:
        try:
            conn.handshake(self.handshake_timeout)
            while True:
                message = conn.recv_message()
                if message.opcode is Opcode.TEXT:
                    conn.send_text(message.data.decode())
                else:
                    conn.send(message.data)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            self.outcomes.put((conn, exc))
        finally:
            conn.close()

    def outcome(self):
        return self.outcomes.get(timeout=10)

    def close(self) -> None:
        self.listener.close()
        self._accepter.join()
        for conn in self.conns:
            conn.close()
        for thread in self.threads:
            thread.join()


@pytest.fixture
def server():
    srv = EchoServer()
    yield srv
    srv.close()


def assert_still_serving(srv: EchoServer) -> None:
    with base.connect(srv.url) as client:
        client.send(b"still here")
        assert client.recv(timeout=10) == b"still here"


# -- our client, our server ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 3 * 1024 * 1024 + 7])
def test_echo_sizes(server, size):
    payload = os.urandom(size)
    with base.connect(server.url) as client:
        client.send(payload)
        assert client.recv(timeout=10) == payload
        client.send(memoryview(payload))
        assert client.recv(timeout=10) == payload


def test_send_many_and_text(server):
    with base.connect(server.url) as client:
        client.send_many([b"one", b"", b"three" * 1000])
        assert [client.recv(timeout=10) for _ in range(3)] == [b"one", b"", b"three" * 1000]
        client.send_text("héllo")
        message = client.recv_message(timeout=10)
        assert (message.opcode, message.data) == (Opcode.TEXT, "héllo".encode())


def test_concurrent_senders(server):
    with base.connect(server.url) as client:

        def sender(n: int) -> None:
            for i in range(50):
                client.send(b"%d-%d" % (n, i))

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        got = [client.recv(timeout=10) for _ in range(200)]
        for t in threads:
            t.join()
        assert sorted(got) == sorted(b"%d-%d" % (n, i) for n in range(4) for i in range(50))


def test_recv_timeout_leaves_connection_usable(server):
    with base.connect(server.url) as client:
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.05)
        client.send(b"after")
        assert client.recv(timeout=10) == b"after"


def test_close_handshake_codes(server):
    client = base.connect(server.url)
    client.send(b"x")
    assert client.recv(timeout=10) == b"x"
    client.close()
    conn, exc = server.outcome()
    assert isinstance(exc, ConnectionClosed)
    assert conn.close_code == CloseCode.NORMAL_CLOSURE
    with pytest.raises(ConnectionClosed):
        client.send(b"too late")


def test_server_close_reaches_client(server):
    client = base.connect(server.url)
    client.send(b"x")
    assert client.recv(timeout=10) == b"x"
    server.conns[0].close()
    with pytest.raises(ConnectionClosed):
        client.recv(timeout=10)
    assert client.close_code == CloseCode.NORMAL_CLOSURE
    client.close()


def test_max_message_closes_with_1009():
    srv = EchoServer(max_message=1000)
    try:
        client = base.connect(srv.url)
        client.send(b"a" * 1000)
        assert client.recv(timeout=10) == b"a" * 1000
        client.send(b"b" * 1001)
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=10)
        assert client.close_code == CloseCode.MESSAGE_TOO_BIG
        _, exc = srv.outcome()
        assert isinstance(exc, MessageTooBig) and isinstance(exc, FrameTooLarge)
        client.close()
        assert_still_serving(srv)
    finally:
        srv.close()


def test_origin_path_and_listener_path():
    srv = EchoServer("ws://127.0.0.1:0/jobs")
    try:
        assert srv.url.endswith("/jobs")
        client = connect(parse_url(srv.url + "?v=1"), Options(), origin="https://example.org")
        client.send(b"hi")
        assert client.recv(timeout=10) == b"hi"
        conn = srv.conns[0]
        assert conn.origin == "https://example.org"
        assert conn.path == "/jobs?v=1"
        client.close()
    finally:
        srv.close()


def test_wss_needs_a_context():
    with pytest.raises(TransportError):
        base.listen("wss://127.0.0.1:0")
    with pytest.raises(TransportError):
        base.connect("wss://127.0.0.1:9")


# -- the opening handshake, seen with raw sockets ------------------------------------------------


def raw_request(url: str, head: bytes) -> tuple[socket.socket, bytes]:
    """Send ``head`` and return the socket and the response head."""
    parts = parse_url(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall(head)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return sock, data


def upgrade_head(key: str = "dGhlIHNhbXBsZSBub25jZQ==", version: str = "13", method: str = "GET") -> bytes:
    return (
        f"{method} / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


def test_accept_key_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_raw_upgrade_answer(server):
    sock, head = raw_request(server.url, upgrade_head())
    with sock:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head


def test_health_endpoint(server):
    parts = parse_url(server.url)
    client = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    client.request("GET", "/health")
    response = client.getresponse()
    assert response.status == 200
    assert json.loads(response.read()) == {"status": "ok", "transport": "websocket"}
    client.close()
    _, exc = server.outcome()
    assert isinstance(exc, ConnectionClosed)


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426),
        (upgrade_head(method="POST"), 405),
        (upgrade_head(version="8"), 426),
        (upgrade_head(key="short"), 400),
        (upgrade_head(key=base64.b64encode(b"x" * 15).decode()), 400),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            400,
        ),  # no Connection: Upgrade
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),  # a TLS hello at a ws:// port
    ],
)
def test_bad_handshakes_get_4xx(server, head, status):
    sock, response = raw_request(server.url, head)
    sock.close()
    assert response.startswith(b"HTTP/1.1 %d " % status)
    if status == 426 and b"Sec-WebSocket-Version: 8" in head:
        assert b"Sec-WebSocket-Version: 13" in response
    _, exc = server.outcome()
    assert isinstance(exc, HttpError) and exc.status == status
    assert_still_serving(server)


def test_slow_handshake_times_out():
    srv = EchoServer(handshake_timeout=0.2)
    try:
        parts = parse_url(srv.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n")  # and then nothing
            assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")
        _, exc = srv.outcome()
        assert isinstance(exc, TimeoutError)
        assert_still_serving(srv)
    finally:
        srv.close()


def fake_server(answer) -> tuple[str, threading.Thread, socket.socket]:
    """A one-shot server that reads a request head and answers ``answer(key)``."""
    lsock = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = lsock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            key = data.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0].decode()
            conn.sendall(answer(key))
            conn.recv(4096)  # until the client hangs up

    thread = threading.Thread(target=run)
    thread.start()
    return f"ws://127.0.0.1:{lsock.getsockname()[1]}", thread, lsock


@pytest.mark.parametrize(
    "answer, error",
    [
        (lambda key: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HttpError),
        (
            lambda key: (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: wrong=\r\n\r\n"
            ),
            ProtocolError,
        ),
        (
            lambda key: (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
                b"Upgrade\r\nSec-WebSocket-Accept: %s\r\nSec-WebSocket-Extensions: "
                b"permessage-deflate\r\n\r\n" % accept_key(key).encode()
            ),
            ProtocolError,
        ),
    ],
)
def test_client_checks_the_servers_answer(answer, error):
    url, thread, lsock = fake_server(answer)
    try:
        with pytest.raises(error):
            base.connect(url)
    finally:
        thread.join()
        lsock.close()


@pytest.mark.parametrize("repeat", [50, 128 * 1024 // 10], ids=["500B", "128KB"])
def test_timeout_mid_frame_resumes(repeat):
    """A recv that times out halfway through a frame picks it up again on the next call: any
    frame up to the stream's RESUMABLE_READ, not only one a single buffered read holds."""
    frame = serialize(Frame(Opcode.BINARY, b"0123456789" * repeat))
    first, second = threading.Event(), threading.Event()

    def answer(key: str) -> bytes:
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
            b"Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept_key(key).encode() + frame[:3]
        )  # the header, cut inside its 16-bit length

    lsock = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = lsock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(4096)
            key = data.split(b"Sec-WebSocket-Key: ")[1].split(b"\r\n")[0].decode()
            conn.sendall(answer(key))
            first.wait(10)
            conn.sendall(frame[3:200])
            second.wait(10)
            conn.sendall(frame[200:])
            conn.recv(4096)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        client = base.connect(f"ws://127.0.0.1:{lsock.getsockname()[1]}")
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.05)
        first.set()
        with pytest.raises(TimeoutError):
            client.recv(timeout=0.05)  # header done, payload half there
        second.set()
        assert client.recv(timeout=10) == b"0123456789" * repeat
        client._stream.close()
    finally:
        first.set()
        second.set()
        thread.join()
        lsock.close()


# -- bad frames against our server ---------------------------------------------------------------


def raw_client(url: str) -> socket.socket:
    sock, head = raw_request(url, upgrade_head())
    assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def read_frames_until(sock: socket.socket, opcode: Opcode) -> Frame:
    parser = FrameParser(masked=False)
    while True:
        data = sock.recv(65536)
        assert data, "connection closed before the expected frame"
        for frame in parser.feed(data):
            if frame.opcode is opcode:
                return frame


MASK = b"\x01\x02\x03\x04"


@pytest.mark.parametrize(
    "wire, code",
    [
        (b"\x82\x05hello", CloseCode.PROTOCOL_ERROR),  # not masked
        (b"\x82\xff" + struct.pack("!Q", 2**31) + MASK, CloseCode.MESSAGE_TOO_BIG),  # 2 GB
        (serialize(Frame(Opcode.PING, b"x", fin=False), MASK), CloseCode.PROTOCOL_ERROR),
        (serialize(Frame(Opcode.TEXT, b"ok \xff\xfe"), MASK), CloseCode.INVALID_DATA),
        (serialize(Frame(Opcode.BINARY, b"x", rsv1=True), MASK), CloseCode.PROTOCOL_ERROR),
        (serialize(Frame(Opcode.CONT, b"x"), MASK), CloseCode.PROTOCOL_ERROR),
        (serialize(Frame(Opcode.CLOSE, b"\x03\xed"), MASK), CloseCode.PROTOCOL_ERROR),  # 1005
        (b"\x83\x80" + MASK, CloseCode.PROTOCOL_ERROR),  # opcode 3
    ],
    ids=["unmasked", "2GB", "fragmented-ping", "bad-utf8", "rsv1", "lone-cont", "close-1005", "opcode-3"],
)
def test_bad_frames_close_with_the_right_code(server, wire, code):
    with raw_client(server.url) as sock:
        sock.sendall(wire)
        close = read_frames_until(sock, Opcode.CLOSE)
        assert parse_close(close.payload)[0] == code
        assert sock.recv(65536) == b""  # and the server hung up
    _, exc = server.outcome()
    assert isinstance(exc, WebSocketProtocolError) and exc.code == code
    assert_still_serving(server)


def test_ping_gets_pong_and_close_is_echoed(server):
    with raw_client(server.url) as sock:
        sock.sendall(serialize(Frame(Opcode.PING, b"are you there"), MASK))
        assert read_frames_until(sock, Opcode.PONG).payload == b"are you there"
        # a ping between two fragments of a message is answered without breaking the message
        sock.sendall(
            serialize(Frame(Opcode.BINARY, b"frag", fin=False), MASK)
            + serialize(Frame(Opcode.PING, b"p"), MASK)
            + serialize(Frame(Opcode.CONT, b"ment"), MASK)
        )
        assert read_frames_until(sock, Opcode.BINARY).payload == b"fragment"
        sock.sendall(serialize(Frame(Opcode.CLOSE, serialize_close(4000, "bye")), MASK))
        close = read_frames_until(sock, Opcode.CLOSE)
        assert parse_close(close.payload)[0] == 4000
    conn, exc = server.outcome()
    assert isinstance(exc, ConnectionClosed)
    assert (conn.close_code, conn.close_reason) == (4000, "bye")


# -- interop with the websockets library ---------------------------------------------------------

websockets_client = pytest.importorskip("websockets.sync.client")
websockets_server = pytest.importorskip("websockets.sync.server")


def test_their_client_our_server(server):
    with websockets_client.connect(server.url, proxy=None, open_timeout=10) as ws:
        ws.send(b"\x00binary\xff")
        assert ws.recv(timeout=10) == b"\x00binary\xff"
        ws.send("text é")
        assert ws.recv(timeout=10) == "text é"
        ws.send([b"frag", b"men", b"ted"])  # one message in three frames
        assert ws.recv(timeout=10) == b"fragmented"
        ws.send(["tex", "t ", "frags"])
        assert ws.recv(timeout=10) == "text frags"
        big = os.urandom(500_000)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        assert ws.ping(b"keepalive").wait(10)  # our recv loop answered the ping
        ws.close(4000, "done here")
    conn, exc = server.outcome()
    assert isinstance(exc, ConnectionClosed)
    assert (conn.close_code, conn.close_reason) == (4000, "done here")


@pytest.fixture
def their_server():
    def handler(ws) -> None:
        for message in ws:
            if message == b"fragments please":
                ws.send([b"a", b"b", b"c"])
            elif message == b"ping me":
                assert ws.ping(b"from server").wait(10)
                ws.send(b"ponged")
            elif message == b"close 4001":
                ws.close(4001, "as asked")
            else:
                ws.send(message)

    srv = websockets_server.serve(handler, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever)
    thread.start()
    yield f"ws://127.0.0.1:{srv.socket.getsockname()[1]}"
    srv.shutdown()
    thread.join()


def test_our_client_their_server(their_server):
    client = base.connect(their_server)
    client.send(b"hello")
    assert client.recv(timeout=10) == b"hello"
    client.send_text("some text")
    message = client.recv_message(timeout=10)
    assert (message.opcode, message.data) == (Opcode.TEXT, b"some text")
    client.send_many([b"1", b"2"])
    assert [client.recv(timeout=10), client.recv(timeout=10)] == [b"1", b"2"]
    big = os.urandom(300_000)
    client.send(big)
    assert client.recv(timeout=10) == big
    client.send(b"fragments please")
    assert client.recv(timeout=10) == b"abc"
    client.send(b"ping me")
    assert client.recv(timeout=10) == b"ponged"  # our recv answered their ping
    client.send(b"close 4001")
    with pytest.raises(ConnectionClosed):
        client.recv(timeout=10)
    assert (client.close_code, client.close_reason) == (4001, "as asked")
    client.close()


def test_our_client_closes_their_server_cleanly(their_server):
    client = base.connect(their_server)
    client.send(b"x")
    assert client.recv(timeout=10) == b"x"
    client.close()  # their server must see a clean 1000, not a broken connection
    assert client.closed


# -- wss:// with a certificate made at test time -------------------------------------------------


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not found: cannot make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cert)
    return server_ctx, client_ctx


def test_wss_both_ways(tls_contexts):
    server_ctx, client_ctx = tls_contexts
    srv = EchoServer("wss://127.0.0.1:0", ssl_context=server_ctx)
    try:
        assert srv.url.startswith("wss://")
        with base.connect(srv.url, ssl_context=client_ctx) as client:
            payload = os.urandom(200_000)
            client.send(payload)
            assert client.recv(timeout=10) == payload
        with websockets_client.connect(srv.url, ssl=client_ctx, proxy=None, open_timeout=10) as ws:
            ws.send("over TLS")
            assert ws.recv(timeout=10) == "over TLS"
    finally:
        srv.close()


# -- the article's JavaScript client, run by Node.js ---------------------------------------------


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    for flags in ([], ["--experimental-websocket"]):
        probe = subprocess.run(
            [node, *flags, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
            capture_output=True,
            timeout=30,
        )
        if probe.returncode == 0:
            return [node, *flags]
    pytest.skip("this node has no WebSocket, even with --experimental-websocket")


def test_javascript_client(server):
    command = node_command()
    script = ROOT / "examples" / "websocket_client.js"
    result = subprocess.run(
        [*command, str(script), server.url, "text from node", "é 🚀"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "echo 0 (binary)" in result.stdout
    generated = json.loads(re.search(r"^echo 0 \(binary\): (.*)$", result.stdout, re.M).group(1))
    for line in generated.splitlines():  # the article's generator: one letter capitalised in place
        assert line.isalpha() and sum(c.isupper() for c in line) == 1, line
    assert 'echo 1 (text): "text from node"' in result.stdout
    assert "mapped: [1] Line content: 1." in result.stdout
    conn, exc = server.outcome()
    assert isinstance(exc, ConnectionClosed) and conn.close_code == CloseCode.NORMAL_CLOSURE


def test_try_send_writes_a_websocket_frame():
    """A non-blocking send (heartbeats) must frame like any other send on ws://."""
    import threading as _threading

    from minipool.transports import connect as _connect
    from minipool.transports import listen as _listen

    listener = _listen("ws://127.0.0.1:0")
    got = []

    def serve():
        conn = listener.accept()
        conn.handshake(5)
        got.append(conn.recv(5))
        got.append(conn.recv(5))
        conn.close()

    thread = _threading.Thread(target=serve)
    thread.start()
    client = _connect(listener.url)
    assert client.try_send(b"beat")
    client.send(b"after")
    thread.join(10)
    client.close()
    listener.close()
    assert got == [b"beat", b"after"]


def test_a_poll_that_catches_a_large_frame_half_arrived_keeps_the_connection():
    import time

    from minipool.transports.wsframes import Frame, serialize
    from pairs import connected, poll_catches_it_half_arrived

    listener, client, server = connected("ws://127.0.0.1:0")
    try:
        payload = bytes(range(256)) * 4096  # 1 MiB: larger than a buffered read
        wire = serialize(Frame(Opcode.BINARY, payload), mask=True)
        client._stream.sock.sendall(wire[:1000])  # the head and the start of the payload
        time.sleep(0.1)
        # read to the end once it had begun
        poll_catches_it_half_arrived(
            lambda: client._stream.sock.sendall(wire[1000:]), server, client, payload
        )
    finally:
        client.close(), server.close(), listener.close()
