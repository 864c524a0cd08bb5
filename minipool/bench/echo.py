"""The echo peers ``bench transports`` measures: a server process and a client for each kind.

Technique: *one harness, many implementations behind one small interface*. Every kind -- a raw
length-prefixed socket, ``multiprocessing.connection``, ``http.server`` + ``http.client``,
``websockets``, pyzmq REQ/REP, and each minipool transport -- gets an echo server that runs in
its own process (so client and server do not share one GIL), serves every payload size and
echoes each message back unchanged, and a client with ``send``, ``recv`` and ``close``. The
timing harness (:mod:`minipool.bench.transports`) sees only :class:`EchoPair`: a started server
and its connected client.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import importlib.util
import multiprocessing
import multiprocessing.connection as mpc
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..transports.serving import serve_each

if TYPE_CHECKING:  # the transports are imported where used: an echo server needs only its own
    from ..transports import Connection

__all__ = ["PEERS", "TRANSPORTS", "EchoClient", "EchoPair", "serve", "tls_files", "unavailable"]

TRANSPORTS = ["tcp", "tls", "http", "ws", "zmq+tcp"]
PEERS = ["raw", "multiprocessing", "http.client", "websockets", "pyzmq"]
_PREFIX = struct.Struct("!I")
_WAITALL = getattr(socket, "MSG_WAITALL", 0)
_CERT_DIR: str | None = None
_Peer = TypeVar("_Peer")  # what a server's accept() returns: a socket, a connection


# -- servers (each in its own process) ------------------------------------------------------


def tls_files() -> tuple[str, str] | None:
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI (None without it)."""
    global _CERT_DIR
    if shutil.which("openssl") is None:
        return None
    if _CERT_DIR is None:
        _CERT_DIR = tempfile.mkdtemp(prefix="minipool-bench-")
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            cwd=_CERT_DIR,
            check=True,
            capture_output=True,
            timeout=60,
        )
    return os.path.join(_CERT_DIR, "cert.pem"), os.path.join(_CERT_DIR, "key.pem")


def _contexts(files: tuple[str, str]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(*files)
    return server, ssl.create_default_context(cafile=files[0])


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    # MSG_WAITALL: the kernel fills all n bytes in one call, into the bytes object returned.
    data = sock.recv(n, _WAITALL)
    while len(data) < n:
        more = sock.recv(n - len(data), _WAITALL)
        if not more:
            raise ConnectionError("closed")
        data += more
    return data


def _raw_send(sock: socket.socket, data: bytes) -> None:
    if len(data) < 65536:  # one segment train; a short sendmsg is impossible this small
        sock.sendmsg([_PREFIX.pack(len(data)), data])
    else:
        sock.sendall(_PREFIX.pack(len(data)))
        sock.sendall(data)


def _serve_forever(handle: Callable[[_Peer], object], accept: Callable[[], _Peer]) -> None:
    serve_each(accept, lambda peer: peer, handle, stopping=lambda: False, thread_name=lambda peer: "echo")


def serve(
    kind: str, url: str, nodelay: bool, tls: tuple[str, str] | None, pipe: mpc.Connection, check: bool = False
) -> None:
    """Echo server for ``kind``; reports its address on ``pipe`` and runs until terminated."""
    try:
        _serve_kind(kind, url, nodelay, tls, pipe, check)
    except Exception as exc:  # noqa: BLE001 -- reported to the parent instead of a hang
        pipe.send(exc)


def _serve_kind(
    kind: str, url: str, nodelay: bool, tls: tuple[str, str] | None, pipe: mpc.Connection, check: bool
) -> None:
    if kind == "raw":
        _serve_raw(nodelay, pipe)
    elif kind == "multiprocessing":
        _serve_multiprocessing(pipe)
    elif kind == "http.client":
        _serve_http_server(nodelay, pipe)
    elif kind == "websockets":
        _serve_websockets(pipe)
    elif kind == "pyzmq":
        _serve_pyzmq(pipe)
    else:
        _serve_minipool(url, nodelay, tls, pipe, check)


def _serve_raw(nodelay: bool, pipe: mpc.Connection) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    pipe.send(listener.getsockname()[1])

    def echo(sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
        try:
            while True:
                (n,) = _PREFIX.unpack(_recv_exact(sock, 4))
                _raw_send(sock, _recv_exact(sock, n))
        except OSError:
            sock.close()

    _serve_forever(echo, lambda: listener.accept()[0])


def _serve_multiprocessing(pipe: mpc.Connection) -> None:
    listener = mpc.Listener(("127.0.0.1", 0))
    pipe.send(listener.address[1])

    def echo(conn: mpc.Connection) -> None:
        try:
            while True:
                conn.send_bytes(conn.recv_bytes())
        except (EOFError, OSError):
            conn.close()

    _serve_forever(echo, listener.accept)


def _serve_http_server(nodelay: bool, pipe: mpc.Connection) -> None:
    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = nodelay

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    pipe.send(server.server_address[1])
    server.serve_forever()


def _serve_websockets(pipe: mpc.Connection) -> None:
    from websockets.sync.server import ServerConnection, serve

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    with serve(echo, "127.0.0.1", 0, max_size=None, compression=None) as server:
        pipe.send(server.socket.getsockname()[1])
        server.serve_forever()


def _serve_pyzmq(pipe: mpc.Connection) -> None:
    import zmq

    sock = zmq.Context().socket(zmq.REP)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    pipe.send(port)
    while True:
        sock.send(sock.recv(copy=False), copy=False)


def _serve_minipool(
    url: str, nodelay: bool, tls: tuple[str, str] | None, pipe: mpc.Connection, check: bool
) -> None:
    from ..transports import listen

    options: dict[str, Any] = {"nodelay": nodelay}
    if tls:
        options["ssl_context"] = _contexts(tls)[0]
    listener = listen(url, **options)
    pipe.send(listener.url)

    def echo(conn: Connection) -> None:
        try:
            conn.handshake(10)
            while True:
                message = conn.recv()
                if check:  # the receiver's check; sending the same body on, it reuses that CRC
                    zlib.crc32(message)
                conn.send(message)
        except Exception:  # noqa: BLE001 -- the client left
            conn.close()

    _serve_forever(echo, listener.accept)


# -- clients --------------------------------------------------------------------------------


class EchoClient:
    """One connected client: ``send``, ``recv``, ``close``; ``streams`` if sends may run ahead."""

    streams = True
    send: Callable[[bytes], object]
    recv: Callable[[], bytes]
    close: Callable[[], object]

    def __init__(
        self, kind: str, address: Any, nodelay: bool, tls: tuple[str, str] | None, check: bool = False
    ):
        self.kind = kind
        if kind == "raw":
            sock = socket.create_connection(("127.0.0.1", address))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))
            self.send = lambda data: _raw_send(sock, data)
            self.recv = lambda: _recv_exact(sock, _PREFIX.unpack(_recv_exact(sock, 4))[0])
            self.close = sock.close
        elif kind == "multiprocessing":
            pipe = mpc.Client(("127.0.0.1", address))
            self.send, self.recv, self.close = pipe.send_bytes, pipe.recv_bytes, pipe.close
        elif kind == "http.client":
            self.streams = False
            http_conn = http.client.HTTPConnection("127.0.0.1", address)
            http_conn.connect()
            http_conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(nodelay))

            def send(data: bytes) -> None:
                http_conn.request("POST", "/echo", body=data)

            self.send, self.recv = send, lambda: http_conn.getresponse().read()
            self.close = http_conn.close
        elif kind == "websockets":
            from websockets.sync.client import connect as ws_connect

            # Its sync client holds one lock while a send blocks on a full socket, which stops
            # its reader thread too: streaming large messages can deadlock. So: lockstep.
            self.streams = False
            ws = ws_connect(f"ws://127.0.0.1:{address}", max_size=None, compression=None)
            # recv() gives str for a text frame; the echo server returns the binary frames sent.
            self.send, self.recv, self.close = ws.send, cast(Callable[[], bytes], ws.recv), ws.close
        elif kind == "pyzmq":
            import zmq

            self.streams = False
            self._ctx = zmq.Context()
            zsock = self._ctx.socket(zmq.REQ)
            zsock.connect(f"tcp://127.0.0.1:{address}")
            self.send = lambda data: zsock.send(data, 0, copy=len(data) < 65536)
            self.recv = zsock.recv

            def close() -> None:
                zsock.close(linger=0)
                self._ctx.term()

            self.close = close
        else:
            from ..transports import connect

            options: dict[str, Any] = {"nodelay": nodelay}
            if tls:
                options["ssl_context"] = _contexts(tls)[1]
            conn = connect(address, **options)
            self.send, self.recv, self.close = conn.send, conn.recv, conn.close
            if check:
                self._check(conn)

    def _check(self, conn: Connection) -> None:
        """Pay what every minipool message pays: a CRC-32 computed by its sender and checked
        by its receiver (here against the one sent: the echo must come back unchanged)."""
        sent: collections.deque[int] = collections.deque()

        def send(data: bytes) -> None:
            sent.append(zlib.crc32(data))
            conn.send(data)

        def recv() -> bytes:
            data = conn.recv()
            if zlib.crc32(data) != sent.popleft():
                raise RuntimeError("the echo came back damaged")
            return data

        self.send, self.recv = send, recv


def unavailable(kind: str) -> str | None:
    """Why ``kind`` cannot run here, or None if it can."""
    if kind not in TRANSPORTS and kind not in PEERS:
        return f"unknown (choose from {', '.join(TRANSPORTS + PEERS)})"
    module = {
        "tcp": "minipool.transports.tcp",
        "tls": "minipool.transports.tcp",
        "http": "minipool.transports.http",
        "ws": "minipool.transports.websocket",
        "zmq+tcp": "minipool.transports.zmq",
        "websockets": "websockets",
        "pyzmq": "zmq",
    }
    name = module.get(kind)
    if name and importlib.util.find_spec(name) is None:
        return f"{name} is not available"
    if kind == "zmq+tcp" and importlib.util.find_spec("zmq") is None:
        return "pyzmq is not installed (pip install 'minipool[zmq]')"
    if kind == "tls" and tls_files() is None:
        return "the openssl command is needed to make a certificate"
    return None


class EchoPair:
    """One implementation under test: its echo server process and a connected client."""

    def __init__(self, kind: str, nodelay: bool, check: bool = False) -> None:
        self.kind = kind
        check = check and kind in TRANSPORTS
        self.tls = tls_files() if kind == "tls" else None
        url = f"{kind}://127.0.0.1:0" if kind in TRANSPORTS else ""
        # Fork only while this process has no other thread: a fork copies any lock another
        # thread holds, which can deadlock the child (3.12 warns; 3.14 no longer forks by
        # default). Otherwise spawn. Fork is preferred where it is safe because echo servers
        # started by spawn (or forkserver) measured slower here, on the same code: a 1 KB ws://
        # round trip of 30-44 us instead of 21, http:// 23-38 instead of 19.
        alone = threading.active_count() == 1 and hasattr(os, "fork")
        ctx = multiprocessing.get_context("fork") if alone else multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self.server = ctx.Process(
            target=serve, args=(kind, url, nodelay, self.tls, child, check), daemon=True
        )
        self.server.start()
        assert self.server.pid is not None  # a started process has one
        self.server_pid = self.server.pid
        try:
            if not parent.poll(30):
                raise RuntimeError(f"{kind} server did not start")
            address = parent.recv()
            if isinstance(address, Exception):
                raise address
            self.client = EchoClient(kind, address, nodelay, self.tls, check)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 -- closing after a failure: nothing to report
                pass
        self.server.terminate()
        self.server.join(10)
