"""Round trip and throughput of every minipool transport beside a raw socket and its peers.

Technique: *measure against a floor, in the same run*. A loopback round trip costs a few tens
of microseconds, and a shared machine drifts by more than that between runs, so every figure
here is a ratio to a raw length-prefixed socket echo measured minutes apart at most. Beside
minipool's transports (tcp, tls, http, ws, zmq+tcp) run the libraries a user would otherwise
pick: ``multiprocessing.connection``, ``http.server`` + ``http.client`` (TCP_NODELAY on, as a
careful user would set it), the ``websockets`` library and pyzmq REQ/REP.

Each echo server runs in its own process (so client and server do not share one GIL), serves
every payload size, and echoes each message back unchanged. The implementations take turns,
round after round. Round trip = the median of many one-at-a-time echoes within a turn, from the
quietest turn (the JSON also has the median over all turns).

Round trips are timed twice in each turn: as the scheduler places the threads, and with the
client and its echo server pinned to *one core* (Linux, 2 cores or more). On a virtual machine a
wake-up that crosses cores can cost more than the whole software path of a small message, and
where the scheduler puts a pair of processes is decided when they start and kept for the run --
so a 1 KB round trip that wakes four threads (ZeroMQ's I/O threads, on both sides) lands near
one figure or near twice it, run by run. Pinned, every wake-up is a switch on one core: the
one-core column measures what each implementation's own code costs, and is steady to a few
percent from run to run; the other column shows what a user gets from the scheduler.
Throughput = payload MB/s echoed while a sender thread streams messages and the main thread
receives them (lockstep peers -- http.client, REQ/REP, websockets' sync client -- cannot
stream: their figure is one message at a time). With ``--codecs``, the client compresses
before sending and decompresses what comes back. ``--no-nodelay`` turns TCP_NODELAY off
everywhere, to show the Nagle / delayed-ACK stall of a header and a body written separately.
"""

from __future__ import annotations

import argparse
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
import statistics
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .chart import loglog_chart
from .common import CAN_PIN, on_one_core, print_table, progress

if TYPE_CHECKING:  # the transports are imported where used: an echo server needs only its own
    from ..codecs import Codec
    from ..transports import Connection

SIZES = {"64B": 64, "1KB": 1024, "64KB": 64 * 1024, "1MB": 1 << 20, "16MB": 16 << 20}
TRANSPORTS = ["tcp", "tls", "http", "ws", "zmq+tcp"]
PEERS = ["raw", "multiprocessing", "http.client", "websockets", "pyzmq"]
_PREFIX = struct.Struct("!I")
_WAITALL = getattr(socket, "MSG_WAITALL", 0)
_CERT_DIR: str | None = None
_Peer = TypeVar("_Peer")  # what a server's accept() returns: a socket, a connection


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--transports",
        default=",".join(TRANSPORTS),
        help="minipool transports to measure (default: %(default)s)",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="other implementations beside them; raw is always run (default: %(default)s)",
    )
    parser.add_argument("--sizes", default=",".join(SIZES), help="payload sizes (default: %(default)s)")
    parser.add_argument("--codecs", default="none", help="comma-separated codec names (default: none)")
    parser.add_argument("--no-nodelay", action="store_true", help="leave Nagle's algorithm on")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="minipool transports without the CRC-32 every minipool message carries",
    )
    parser.add_argument("--quick", action="store_true", help="1 KB and 1 MB only, short runs (< 20 s)")
    parser.add_argument(
        "--budget", type=float, default=0.5, help="seconds spent on each round-trip and each throughput cell"
    )
    parser.add_argument("--svg", metavar="PATH", help="write a log-log chart of round trip by size")


# -- servers (each in its own process) ------------------------------------------------------


def self_signed_files() -> tuple[str, str] | None:
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
    while True:
        client = accept()
        threading.Thread(target=handle, args=(client,), daemon=True).start()


def _serve(
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


class _Client:
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


def unavailable_because(kind: str) -> str | None:
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
    if kind == "tls" and self_signed_files() is None:
        return "the openssl command is needed to make a certificate"
    return None


# -- measuring ------------------------------------------------------------------------------


def _payload(size: int) -> bytes:
    # Compressible like real task arguments (a text log), so the codec columns mean something.
    line = b"2024-05-01T12:00:00Z worker-7 task=%08d status=done elapsed_ms=%04d\n"
    out = bytearray()
    i = 0
    while len(out) < size:
        out += line % (i, i % 997)
        i += 1
    return bytes(out[:size])


def _round_trips(client: _Client, data: bytes, codec: Codec, seconds: float, out: list[float]) -> None:
    stop = time.perf_counter() + seconds
    for i in range(20000):
        if i >= 3 and time.perf_counter() > stop:
            return
        start = time.perf_counter()
        client.send(codec.compress(data))
        codec.decompress(client.recv(), len(data))
        out.append(time.perf_counter() - start)


def _round_trips_on_one_core(
    r: _Running, data: bytes, codec: Codec, seconds: float, out: list[float]
) -> None:
    """As _round_trips, with the client process and ``r``'s echo server pinned to one core."""
    with on_one_core([os.getpid(), r.server_pid]):
        _round_trips(r.client, data, codec, seconds, out)


def _stream(client: _Client, data: bytes, codec: Codec, count: int) -> float:
    """Echo ``count`` messages (streamed if the client can); return the seconds taken."""
    start = time.perf_counter()
    if client.streams:
        sender = threading.Thread(target=lambda: [client.send(codec.compress(data)) for _ in range(count)])
        sender.start()
        for _ in range(count):
            codec.decompress(client.recv(), len(data))
        sender.join()
    else:
        for _ in range(count):
            client.send(codec.compress(data))
            codec.decompress(client.recv(), len(data))
    return time.perf_counter() - start


class _Running:
    """One implementation under test: its echo server process and a connected client."""

    def __init__(self, kind: str, nodelay: bool, check: bool = False) -> None:
        self.kind = kind
        check = check and kind in TRANSPORTS
        self.tls = self_signed_files() if kind == "tls" else None
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
            target=_serve, args=(kind, url, nodelay, self.tls, child, check), daemon=True
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
            self.client = _Client(kind, address, nodelay, self.tls, check)
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


_ROUNDS = 10  # each cell's time is split into rounds, implementations taking turns


def _measure_cell(
    running: list[_Running], data: bytes, codec: Codec, budget: float
) -> dict[str, tuple[float, float, float, float | None]]:
    """Round trip (seconds), MB/s, the median round trip over all turns, and the round trip
    on one core (None where threads cannot be pinned), per implementation.

    The implementations take turns, round after round, so a burst of load on the shared
    machine hits all of them alike instead of whichever happened to be running.
    """
    size = len(data)
    samples: dict[str, list[float]] = {r.kind: [] for r in running}
    moved: dict[str, list[float]] = {r.kind: [0.0, 0.0] for r in running}  # bytes, seconds
    streamed = max(1, min(4000, int(budget * 100e6 / max(size, 1) / _ROUNDS)))
    for r in running:  # warm up: buffers, TLS session, caches
        r.client.send(codec.compress(data))
        r.client.recv()
    turns: dict[str, list[float]] = {r.kind: [] for r in running}  # median of each turn
    pinned: dict[str, list[float]] = {r.kind: [] for r in running}  # the same, on one core
    for round_no in range(_ROUNDS):
        order = running[round_no % len(running) :] + running[: round_no % len(running)]
        for r in order:
            turn: list[float] = []
            _round_trips(r.client, data, codec, budget / _ROUNDS, turn)
            turns[r.kind].append(statistics.median(turn))
            samples[r.kind] += turn
            if CAN_PIN:
                turn = []
                _round_trips_on_one_core(r, data, codec, budget / _ROUNDS, turn)
                pinned[r.kind].append(statistics.median(turn))
            count = streamed if r.client.streams else max(1, min(streamed, 60))
            moved[r.kind][0] += count * size
            moved[r.kind][1] += _stream(r.client, data, codec, count)
    # The best turn's median: a burst of other load on the machine slows some turns, never
    # speeds one up, so the quietest turn is the truest figure (as timeit reports its minimum).
    return {
        kind: (
            min(turns[kind]),
            moved[kind][0] / moved[kind][1] / 1e6,
            statistics.median(samples[kind]),
            min(pinned[kind]) if pinned[kind] else None,
        )
        for kind in samples
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from ..codecs import get_codec

    sizes = {k: SIZES[k] for k in args.sizes.split(",") if k}
    if args.quick:
        sizes = {k: v for k, v in sizes.items() if k in ("1KB", "1MB")} or sizes
        args.budget = min(args.budget, 0.1)
    codecs = [c for c in args.codecs.split(",") if c] or ["none"]
    impls = ["raw"] + [p for p in args.peers.split(",") if p and p != "raw"]
    impls += [t for t in args.transports.split(",") if t]
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    running: list[_Running] = []
    try:
        for kind in dict.fromkeys(impls):
            reason = unavailable_because(kind) if kind != "raw" else None
            try:
                if not reason:
                    running.append(_Running(kind, not args.no_nodelay, not args.no_check))
            except Exception as exc:  # noqa: BLE001 -- one broken implementation must not end the run
                reason = f"failed to start: {exc!r}"
            if reason:
                skipped[kind] = reason
                progress(f"skipping {kind}: {reason}")
        # One unrecorded cell first: without it the first payload size measured looked up to
        # twice as slow as the same size measured later (threads starting, the interpreter
        # specializing, socket buffers growing).
        _measure_cell(running, _payload(1024), get_codec("none"), 0.1)
        for codec_name in codecs:
            codec = get_codec(codec_name)
            for label, size in sizes.items():
                budget = args.budget * (2 if size >= 1 << 20 else 1)
                cell = _measure_cell(running, _payload(size), codec, budget)
                for r in running:
                    rtt, mbps, rtt_all, rtt_one = cell[r.kind]
                    one = "" if rtt_one is None else f" (one core {rtt_one * 1e6:.1f})"
                    progress(
                        f"{r.kind:16} {codec_name:7} {label:5} rtt {rtt * 1e6:9.1f} us{one}  {mbps:8.1f} MB/s"
                    )
                    rows.append(
                        {
                            "impl": r.kind,
                            "minipool": r.kind in TRANSPORTS,
                            "codec": codec_name,
                            "size": size,
                            "label": label,
                            "rtt_us": rtt * 1e6,
                            "mb_s": mbps,
                            "rtt_us_all_turns": rtt_all * 1e6,
                            "rtt_one_core_us": None if rtt_one is None else rtt_one * 1e6,
                            "streaming": r.client.streams,
                        }
                    )
    finally:
        for r in running:
            r.stop()
    floor = {(row["codec"], row["size"]): row for row in rows if row["impl"] == "raw"}
    for row in rows:
        base = floor.get((row["codec"], row["size"]))
        row["rtt_ratio"] = row["rtt_us"] / base["rtt_us"] if base else None
        one, base_one = row["rtt_one_core_us"], base and base["rtt_one_core_us"]
        row["rtt_one_core_ratio"] = one / base_one if one and base_one else None
        row["mb_s_ratio"] = row["mb_s"] / base["mb_s"] if base else None
    columns = ["implementation", "codec", "size", "rtt us", "rtt / raw", "MB/s", "MB/s / raw"]
    if CAN_PIN:
        columns[5:5] = ["1 core us", "1 core / raw"]
    table = []
    for row in rows:
        line = [
            row["impl"] + ("" if row["minipool"] else " (peer)"),
            row["codec"],
            row["label"],
            row["rtt_us"],
            row["rtt_ratio"] or 0.0,
            row["mb_s"],
            row["mb_s_ratio"] or 0.0,
        ]
        if CAN_PIN:
            line[5:5] = [row["rtt_one_core_us"] or 0.0, row["rtt_one_core_ratio"] or 0.0]
        table.append(line)
    title = "Echo over loopback" + (" with Nagle's algorithm ON (--no-nodelay)" if args.no_nodelay else "")
    print_table(title, columns, table)
    for kind, reason in skipped.items():
        print(f"skipped {kind}: {reason}")
    if args.svg:
        series: dict[str, list[tuple[float, float]]] = {}
        for row in rows:
            if row["codec"] == codecs[0]:
                series.setdefault(row["impl"], []).append((row["size"], row["rtt_us"]))
        dashed = {row["impl"] for row in rows if not row["minipool"]}
        with open(args.svg, "w", encoding="utf-8") as f:
            f.write(
                loglog_chart(
                    series,
                    dashed,
                    f"{title}: round trip by payload size (codec {codecs[0]})",
                    x_names={v: k for k, v in SIZES.items()},
                    y_label="round trip, microseconds (log scale)",
                )
            )
        print(f"\nwrote {args.svg}")
    return {
        "rows": rows,
        "skipped": skipped,
        "nodelay": not args.no_nodelay,
        "sizes": sizes,
        "codecs": codecs,
    }
