"""The fault-injecting proxy (minipool/chaos.py), and the pool run through it (docs/failures.md,
"Injecting faults")."""

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jobs
from minipool import Pool
from minipool.__main__ import chaos_command
from minipool.chaos import ChaosProxy, Faults, parse_address
from minipool.client import RemoteClient
from minipool.cluster.coordinator import Coordinator
from minipool.cluster.worker import Worker
from minipool.errors import DamagedMessage, MinipoolError
from minipool.wire import Format, Kind, Message, decode, decode_body, encode

KEY = b"chaos-test-key-0123"


# -- helpers --------------------------------------------------------------------------------


class EchoServer:
    """A TCP server on 127.0.0.1 that sends back whatever it receives, one thread per peer."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.target = f"127.0.0.1:{self.address[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        self.sock.close()


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.close()


def read_all(sock, timeout=10):
    """Everything ``sock`` receives until the peer closes (a reset counts as a close)."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def round_trip(address, payload, timeout=20):
    """Send ``payload`` from one thread while reading the echo in another; return what came back."""
    with socket.create_connection(address) as sock:

        def send():
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # closed on us (refused, cut): what comes back tells

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        back = read_all(sock, timeout)
        sender.join(timeout)
    return back


def wait_for(condition, timeout=10, what="the condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.02)


def start_worker(url, name, **options):
    worker = Worker(url, KEY, kind="thread", slots=2, name=name, heartbeat=0.2, max_backoff=0.5, **options)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def worker_names(coordinator):
    return sorted(w["name"] for w in coordinator.status()["workers"])


# -- forwarding -----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    payload=st.binary(max_size=4096)
    | st.builds(lambda n, rng: rng.randbytes(n), st.integers(0, 1_000_000), st.randoms())
)
def test_forwarding_without_faults_is_byte_exact(payload):
    server = EchoServer()
    try:
        with ChaosProxy(server.target) as proxy:
            assert round_trip(proxy.address, payload) == payload
            wait_for(lambda: proxy.counters()["open"] == 0, what="the connection closing")
            counts = proxy.counters()
            assert counts["bytes_up"] == counts["bytes_down"] == len(payload)
            assert counts["connections"] == 1
    finally:
        server.close()


def test_both_directions_flow_at_once_with_large_payloads(echo):
    """Client and server both write 8 MB before reading: a proxy pumping both ways in one
    thread with blocking sends would deadlock here."""
    payload = os.urandom(8_000_000)
    with ChaosProxy(echo.target) as proxy:
        assert round_trip(proxy.address, payload, timeout=30) == payload


def test_a_half_close_is_passed_on(echo):
    with ChaosProxy(echo.target) as proxy, socket.create_connection(proxy.address) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)  # the echo server answers, then closes its side too
        assert read_all(sock) == b"last words"


# -- delay, jitter, bandwidth ---------------------------------------------------------------


def test_delay_holds_each_direction_at_least_that_long(echo):
    with ChaosProxy(echo.target, delay=0.15) as proxy, socket.create_connection(proxy.address) as sock:
        sock.settimeout(5)
        for _ in range(2):
            start = time.monotonic()
            sock.sendall(b"ping")
            assert sock.recv(16) == b"ping"
            assert time.monotonic() - start >= 0.3  # held on the way there and on the way back
        proxy.set(delay=0.0)  # changed while running
        start = time.monotonic()
        sock.sendall(b"ping")
        assert sock.recv(16) == b"ping"
        assert time.monotonic() - start < 0.3


def test_jitter_never_reorders_bytes(echo):
    # Jitter (0-40 ms) far larger than the gap between sends (1 ms): chunks drawn later would
    # overtake earlier ones if the proxy did not hold each behind its predecessor.
    pieces = [f"<{i}>".encode() for i in range(150)]
    with (
        ChaosProxy(echo.target, delay=0.005, jitter=0.04, seed=7) as proxy,
        socket.create_connection(proxy.address) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.001)
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b"".join(pieces)


def test_bandwidth_limits_throughput(echo):
    payload = os.urandom(100_000)
    with ChaosProxy(echo.target, bandwidth=200_000) as proxy:
        start = time.monotonic()
        assert round_trip(proxy.address, payload) == payload
        # 100 kB crosses the link at 200 kB/s each way: 0.5 s at least (the two directions
        # overlap); an unlimited proxy takes milliseconds.
        assert time.monotonic() - start >= 0.45


# -- cut, refuse, stall -----------------------------------------------------------------------


def test_cut_after_forwards_exactly_that_many_bytes_then_closes(echo):
    with ChaosProxy(echo.target, cut_after=3000) as proxy, socket.create_connection(proxy.address) as sock:
        sock.sendall(b"x" * 2000)  # 2000 there, and of the 2000 echoed back only 1000 fit
        assert read_all(sock) == b"x" * 1000
        wait_for(lambda: proxy.counters()["open"] == 0, what="the cut connection closing")
        counts = proxy.counters()
        assert counts["cut"] == 1 and counts["bytes_up"] + counts["bytes_down"] == 3000


def test_a_cut_rate_of_one_closes_a_connection_at_its_first_chunk(echo):
    with ChaosProxy(echo.target, cut_rate=1.0) as proxy, socket.create_connection(proxy.address) as sock:
        sock.sendall(b"hello")
        assert read_all(sock) == b""
        assert proxy.counters()["cut"] == 1 and proxy.counters()["bytes_up"] == 0


def test_a_cut_rate_is_reproducible_with_a_seed(echo):
    def chunks_before_the_cut(seed):
        with (
            ChaosProxy(echo.target, cut_rate=0.2, seed=seed) as proxy,
            socket.create_connection(proxy.address) as sock,
        ):
            sock.settimeout(5)
            for answered in range(100):
                try:
                    sock.sendall(b"ping")  # one chunk there, one back: strictly in turn
                    if sock.recv(16) != b"ping":
                        return answered
                except OSError:
                    return answered
            return answered

    runs = [chunks_before_the_cut(seed) for seed in (1, 1, 2, 2)]
    assert runs[0] == runs[1] and runs[2] == runs[3]
    assert runs[0] < 100 and runs[2] < 100


def test_cut_all_drops_every_open_connection_and_new_ones_still_work(echo):
    with ChaosProxy(echo.target) as proxy:
        socks = [socket.create_connection(proxy.address) for _ in range(3)]
        for sock in socks:
            sock.sendall(b"hi")
            sock.settimeout(5)
            assert sock.recv(2) == b"hi"
        assert proxy.cut_all() == 3
        for sock in socks:
            assert read_all(sock) == b""
            sock.close()
        assert proxy.counters()["cut"] == 3
        assert round_trip(proxy.address, b"after the blip") == b"after the blip"
        wait_for(lambda: proxy.counters()["open"] == 0, what="every connection closing")


def test_refuse_closes_new_connections_until_it_is_lifted(echo):
    with ChaosProxy(echo.target, refuse=True) as proxy:
        for _ in range(2):
            assert round_trip(proxy.address, b"anyone?") == b""
        proxy.set(refuse=False)
        assert round_trip(proxy.address, b"anyone?") == b"anyone?"
        counts = proxy.counters()
        assert counts["refused"] == 2 and counts["connections"] == 3


def test_a_stall_holds_bytes_without_closing_then_delivers_them_in_order(echo):
    with ChaosProxy(echo.target) as proxy, socket.create_connection(proxy.address) as sock:
        proxy.stall()
        sock.sendall(b"one ")
        sock.sendall(b"two")
        sock.settimeout(0.4)
        with pytest.raises(socket.timeout):  # silence: neither data nor a close
            sock.recv(16)
        assert proxy.counters()["open"] == 1
        proxy.resume()
        sock.settimeout(5)
        back = b""
        while len(back) < 7:
            back += sock.recv(16)
        assert back == b"one two"


def test_a_timed_stall_ends_by_itself(echo):
    with ChaosProxy(echo.target) as proxy, socket.create_connection(proxy.address) as sock:
        proxy.stall(0.3)
        start = time.monotonic()
        sock.sendall(b"wait")
        sock.settimeout(5)
        assert sock.recv(4) == b"wait"
        assert time.monotonic() - start >= 0.25
        assert proxy.counters()["stalls"] == 1


def test_close_is_prompt_even_with_stalled_and_delayed_connections(echo):
    proxy = ChaosProxy(echo.target, delay=30)
    socks = [socket.create_connection(proxy.address) for _ in range(4)]
    for sock in socks:
        sock.sendall(b"held for 30 s")
    proxy.stall()
    time.sleep(0.1)
    start = time.monotonic()
    proxy.close()
    assert time.monotonic() - start < 2
    for sock in socks:
        assert read_all(sock, timeout=5) == b""
        sock.close()
    with pytest.raises(OSError):
        socket.create_connection(proxy.address, timeout=2)


def test_an_unreachable_target_closes_the_client_and_is_counted():
    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there now
    with ChaosProxy(f"127.0.0.1:{port}") as proxy, socket.create_connection(proxy.address) as sock:
        assert read_all(sock) == b""
        wait_for(lambda: proxy.counters()["target_unreachable"] == 1, what="the failed connect being counted")


@pytest.mark.parametrize(
    "faults, message",
    [
        ({"delay": -1}, "delay"),
        ({"jitter": float("nan")}, "jitter"),
        ({"cut_rate": 1.5}, "cut_rate"),
        ({"corrupt_rate": "often"}, "corrupt_rate"),
        ({"bandwidth": 0}, "bandwidth"),
        ({"cut_after": 1.5}, "cut_after"),
        ({"refuse": "yes"}, "refuse"),
    ],
)
def test_bad_fault_values_are_refused_clearly(faults, message):
    with pytest.raises(ValueError, match=message):
        Faults(**faults)
    with ChaosProxy("127.0.0.1:9") as proxy:
        with pytest.raises(ValueError, match=message):
            proxy.set(**faults)
        assert proxy.faults == Faults()  # a refused change changes nothing


def test_bad_addresses_and_names_are_refused_clearly():
    for address in ("localhost", "host:port", "127.0.0.1:70000", "127.0.0.1:0", ":80"):
        with pytest.raises(ValueError):
            ChaosProxy(address)
    with pytest.raises(TypeError, match="unknown fault 'latency'"):
        ChaosProxy("127.0.0.1:9", latency=0.1)
    assert parse_address("[::1]:80") == ("::1", 80)
    with ChaosProxy("127.0.0.1:9") as proxy:
        assert proxy.address[0] == "127.0.0.1"  # loopback unless told otherwise
        assert proxy.url("ws") == f"ws://127.0.0.1:{proxy.address[1]}"


def test_commands_change_a_running_proxy(echo):
    with ChaosProxy(echo.target) as proxy:
        assert "delay=0.2" in chaos_command(proxy, "set delay=0.2 cut-after=none")
        assert proxy.faults.delay == 0.2
        assert chaos_command(proxy, "refuse on") and proxy.faults.refuse
        assert chaos_command(proxy, "stall 5") == "stalled for 5.0 s" and proxy.stalled
        assert chaos_command(proxy, "resume") == "resumed" and not proxy.stalled
        assert chaos_command(proxy, "cut") == "cut 0 connection(s)"
        assert "connections 0" in chaos_command(proxy, "status")
        for bad in ("explode", "set delay", "set delay=soon", "set latency=1", "refuse maybe"):
            with pytest.raises(ValueError):
                chaos_command(proxy, bad)


# -- the pool through the proxy -------------------------------------------------------------


def test_workers_whose_connections_are_cut_repeatedly_lose_no_task(tmp_path):
    """Promises 1 and 3 across a network that keeps dropping connections: every result arrives
    once and correct, though some tasks ran twice."""
    log = tmp_path / "ran.txt"
    # A cut counts as a lost worker for every task it held: max_losses must allow for the cuts.
    with Coordinator(KEY, heartbeat=0.2, max_losses=100) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        with ChaosProxy(url.removeprefix("tcp://"), seed=3) as proxy:
            workers = [start_worker(proxy.url("tcp"), f"cut-{i}") for i in range(2)]
            with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:  # directly, no proxy
                client.wait_for_workers(2, timeout=10)
                futures = [client.submit(jobs.record_then_sleep, str(log), i, 0.05) for i in range(40)]
                cuts = 0
                while not all(f.done() for f in futures):
                    if coord.status()["running"]:  # cut while workers hold leases
                        cuts += proxy.cut_all()
                        time.sleep(0.15)
                    time.sleep(0.01)
                    assert cuts < 200, "the run is not getting anywhere"
                results = [f.result(0) for f in futures]
                status = coord.status()
        for worker, thread in workers:
            worker.stop()
            thread.join(5)
    assert results == list(range(40))  # each result once, in order, correct
    assert proxy.counters()["cut"] >= 3
    assert status["requeued"] >= 1 and status["workers_lost"] >= 3
    ran = log.read_text().split()
    assert set(ran) == {str(i) for i in range(40)} and len(ran) >= 40


def test_a_random_cut_rate_is_survived_too():
    """Cuts drawn per chunk hit handshakes and heartbeats as well as tasks and results."""
    with Coordinator(KEY, heartbeat=0.2, max_losses=100, handshake_timeout=1) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        with ChaosProxy(url.removeprefix("tcp://"), cut_rate=0.05, seed=11) as proxy:
            workers = [start_worker(proxy.url("tcp"), f"flaky-{i}") for i in range(2)]
            with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:
                client.wait_for_workers(1, timeout=10)
                futures = [client.submit(jobs.sleep_then, 0.01, i) for i in range(80)]
                assert [f.result(30) for f in futures] == list(range(80))
                status = coord.status()
        for worker, thread in workers:
            worker.stop()
            thread.join(5)
    assert proxy.counters()["cut"] >= 2 and status["workers_lost"] >= 2


def test_cuts_are_not_losses_4000_tasks_with_the_default_max_losses():
    """Promise 2's other half: a cut connection from which the same worker process comes back
    costs its tasks no loss, so on a network that keeps cutting connections every task
    succeeds with the default max_losses (3). The process names itself (its incarnation) and
    the tasks it still holds in its HELLO; results finished while it was cut off go out on
    its next connection. Before, each cut counted a loss for every task the worker held, and
    some innocent tasks failed with WorkerLost."""
    # The coordinator's default patience (3 s of silence): under load, a slow heartbeat must
    # not pass for a frozen worker, which would be a loss for cause.
    with Coordinator(KEY, handshake_timeout=2) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        with ChaosProxy(url.removeprefix("tcp://"), cut_rate=0.01, seed=21) as proxy:
            workers = [start_worker(proxy.url("tcp"), f"cut-{i}") for i in range(2)]
            with Pool(address=url, authkey=KEY) as client:
                client.wait_for_workers(1, timeout=10)
                futures = [client.submit(jobs.sleep_then, 0.002, i) for i in range(4000)]
                outcomes = [f.exception(60) or f.result(0) for f in futures]
                status = coord.status()
        for worker, thread in workers:
            worker.stop()
            thread.join(5)
    assert outcomes == list(range(4000))
    assert status["failed"] == 0 and status["losses_forgiven"] >= 1
    assert proxy.counters()["cut"] >= 5 and status["workers_lost"] >= 5


def test_a_stalled_worker_is_declared_dead_and_its_tasks_run_elsewhere():
    """Promise 1 for a silent partition: the proxy keeps the worker's connection open and
    forwards nothing; only the missing heartbeats (0.2 s x 3) give it away."""
    with Coordinator(KEY, heartbeat=0.2, handshake_timeout=2) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        with ChaosProxy(url.removeprefix("tcp://")) as proxy:
            workers = [start_worker(proxy.url("tcp"), "behind-proxy"), start_worker(url, "direct")]
            with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:
                client.wait_for_workers(2, timeout=10)
                futures = [client.submit(jobs.sleep_then, 0.3, i) for i in range(8)]
                wait_for(
                    lambda: any(
                        w["name"] == "behind-proxy" and w["inflight"] for w in coord.status()["workers"]
                    ),
                    what="a lease for the worker behind the proxy",
                )
                proxy.stall()  # until resume(): the results below must come from elsewhere
                assert [f.result(15) for f in futures] == list(range(8))
                status = coord.status()
                assert status["workers_lost"] >= 1 and status["requeued"] >= 1
                assert worker_names(coord) == ["direct"]
                assert proxy.counters()["open"] >= 1  # never closed by the proxy: only silent
                proxy.resume()  # the partition heals: the worker reconnects and serves again
                wait_for(
                    lambda: worker_names(coord) == ["behind-proxy", "direct"],
                    timeout=15,
                    what="the worker behind the proxy reconnecting",
                )
                assert client.submit(jobs.square, 12).result(10) == 144
        for worker, thread in workers:
            worker.stop()
            thread.join(5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_corruption_in_a_handshake_gives_a_clean_error_and_others_are_served(transport, seed):
    """Every chunk has a bit flipped: whatever the transport's parser or the handshake makes of
    it, the client gets a minipool error (or a timeout), never a hang or a crash, the
    coordinator closes that connection, and a client on a clean path goes on being served."""
    with Coordinator(KEY, heartbeat=0.5, handshake_timeout=1) as coord:
        url = coord.serve(f"{transport}://127.0.0.1:0")
        host_port = url.split("://", 1)[1].split("/", 1)[0]
        with (
            ChaosProxy(host_port, corrupt_rate=1.0, seed=seed) as proxy,
            Pool(address=url, authkey=KEY) as good,
        ):
            start = time.monotonic()
            with pytest.raises((MinipoolError, OSError, TimeoutError)):
                RemoteClient(proxy.url(transport), KEY, timeout=2, reconnect_timeout=0).close()
            assert time.monotonic() - start < 8
            assert proxy.counters()["corrupted"] >= 1
            wait_for(
                lambda: proxy.counters()["open"] == 0,
                timeout=10,
                what="the corrupted connection being closed",
            )
            worker, thread = start_worker(url, "clean")
            try:
                assert good.submit(jobs.square, 9).result(10) == 81
                assert coord.status()["clients"] == 1
            finally:
                worker.stop()
                thread.join(5)


def test_a_flipped_bit_in_a_result_body_is_detected():
    """Every message carries a CRC-32: one flipped bit inside a pickled result is a
    DamagedMessage, never a different value. (Before the CRC it decoded to 1000 ^ 8.)"""
    message = encode(Message(Kind.RESULT, 7, pickle.dumps(1000), fmt=Format.PICKLE))
    body_at = message.index(pickle.dumps(1000))
    value_at = body_at + pickle.dumps(1000).index((1000).to_bytes(2, "little"))
    flipped = bytearray(message)
    flipped[value_at] ^= 1 << 3
    with pytest.raises(DamagedMessage):
        decode_body(decode(bytes(flipped)), trusted=True)


def _burst_until_damaged(client, coord, proxy):
    """Send bursts of 300 tasks, checking every result, until the proxy has damaged at least 3
    chunks and a worker's connection was among them (how many chunks a burst makes, and whose,
    depends on how tasks and results are batched); return the coordinator's status then."""
    deadline = time.monotonic() + 60
    while True:
        futures = [client.submit(jobs.square, i) for i in range(300)]
        assert [f.result(30) for f in futures] == [i * i for i in range(300)]
        status = coord.status()
        if proxy.counters()["corrupted"] >= 3 and status["workers_lost"] >= 1:
            return status
        assert time.monotonic() < deadline, "the proxy damaged too little"


def test_over_tcp_corruption_becomes_a_cut_and_every_result_is_right():
    """Plain tcp:// has only TCP's checksum, which the proxy's flips pass: minipool's own CRC-32
    catches every damaged message, the receiver drops that connection (a cut), and the tasks
    run again. Every result is right; no worker gives up or crashes (damaged bytecode used to
    crash process workers with SIGSEGV, and damaged results were delivered as they were)."""
    with Coordinator(KEY, heartbeat=0.2, handshake_timeout=1) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        with ChaosProxy(url.removeprefix("tcp://"), corrupt_rate=0.05, seed=5) as proxy:
            workers = [start_worker(proxy.url("tcp"), f"flipped-{i}") for i in range(2)]
            with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:
                status = _burst_until_damaged(client, coord, proxy)
            # Still running: a damaged handshake is a refusal to retry, not a wrong key.
            assert all(thread.is_alive() for _, thread in workers)
        for worker, thread in workers:
            worker.stop()
            thread.join(5)
    assert proxy.counters()["corrupted"] >= 3 and status["workers_lost"] >= 1
    assert status["failed"] == 0


def test_over_tls_corruption_becomes_a_cut_and_every_result_is_right(tmp_path):
    """TLS authenticates every record: a flipped bit anywhere (TLS handshake, minipool
    handshake, task, result) fails that record's check, and the connection closes. To the pool
    that is a cut like any other, so every result arrives, right."""
    from tlsutil import make_tls

    tls = make_tls(tmp_path)
    with Coordinator(
        KEY, heartbeat=0.2, max_losses=1000, handshake_timeout=1, ssl_context=tls.server
    ) as coord:
        url = coord.serve("tls://127.0.0.1:0")
        with ChaosProxy(url.removeprefix("tls://"), corrupt_rate=0.05, seed=3) as proxy:
            workers = [start_worker(proxy.url("tls"), f"tls-{i}", ssl_context=tls.client) for i in range(2)]
            with Pool(address=url, authkey=KEY, heartbeat=0.2, ssl_context=tls.client) as client:
                status = _burst_until_damaged(client, coord, proxy)
            # Still running: over tcp:// a corrupted handshake can look like a wrong key, and a
            # worker refused for its key gives up for good.
            assert all(thread.is_alive() for _, thread in workers)
        for worker, thread in workers:
            worker.stop()
            thread.join(5)
    assert proxy.counters()["corrupted"] >= 3 and status["workers_lost"] >= 1


# -- the command line -----------------------------------------------------------------------


def test_the_cli_proxies_prints_progress_and_counts_at_exit(echo):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minipool",
            "chaos",
            "--target",
            echo.target,
            "--delay",
            "0.01",
            "--seed",
            "5",
            "--interval",
            "0.2",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on tcp://127.0.0.1:" in line, proc.stderr.read()
        address = parse_address(line.split("tcp://")[1].split()[0])
        assert round_trip(address, b"through the cli") == b"through the cli"
        proc.stdin.write("refuse on\n")
        proc.stdin.flush()
        lines = [proc.stdout.readline() for _ in range(2)]  # the answer, and periodic counters
        while not any("refusing new connections: on" in line for line in lines):
            lines.append(proc.stdout.readline())
            assert len(lines) < 50, lines
        assert any(line.startswith("connections") for line in lines)
        assert round_trip(address, b"down?") == b""
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    final = out.strip().splitlines()[-1]
    assert "connections 2" in final and "refused 1" in final and "up 15 B" in final


def test_the_cli_refuses_bad_arguments():
    done = subprocess.run(
        [sys.executable, "-m", "minipool", "chaos", "--target", "nowhere", "--cut-rate", "2"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "HOST:PORT" in done.stderr
