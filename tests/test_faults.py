"""The failure model, one test per line of it (docs/failures.md)."""

import os
import pickle
import signal
import socket
import struct
import time

import pytest

import jobs
from minipool import AuthenticationError, Pool, WorkerLost
from minipool.cluster.coordinator import Coordinator
from minipool.errors import ConnectionClosed
from minipool.wire import Format, Kind, Message, encode

KEY = b"test-key-0123456789"


def url_port(url):
    from urllib.parse import urlsplit

    return urlsplit(url).port


def wait_until_closed(raw, timeout=5):
    """Read until the server closes the connection (EOF or reset); fail if it never does."""
    raw.settimeout(timeout)
    received = b""
    try:
        while chunk := raw.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def raw_frame(payload):
    return struct.pack("!I", len(payload)) + payload


class Sentinel:
    """Unpickling this would create a file: proof that something was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_worker_killed_mid_run_loses_no_task(tmp_path, transport):
    log = tmp_path / "ran.txt"
    with Pool(2, heartbeat=0.2, transport=transport) as pool:
        pool.wait_for_workers()
        futures = [pool.submit(jobs.record_then_sleep, str(log), i, 0.05) for i in range(24)]
        deadline = time.monotonic() + 30
        while len(log.read_text().split() if log.exists() else []) < 2:  # under way: leases held
            assert time.monotonic() < deadline, "no task started"
            time.sleep(0.01)
        victim = pool.status()["local_processes"][0]
        os.kill(victim, signal.SIGKILL)
        results = [f.result(60) for f in futures]
        assert results == list(range(24))  # every task, each result exactly once
        status = pool.status()
        assert status["requeued"] >= 1 and status["workers_lost"] >= 1 and status["restarts"] >= 1
        pool.wait_for_workers(2)  # the replacement joins
    ran = log.read_text().split()
    assert set(ran) == {str(i) for i in range(24)}


def test_a_task_that_kills_every_worker_fails_with_worker_lost():
    with Pool(2, max_losses=3) as pool:
        pool.wait_for_workers()
        with pytest.raises(WorkerLost, match="lost 3 workers"):
            pool.submit(jobs.die).result(60)
        assert pool.submit(jobs.square, 9).result(30) == 81  # replacements serve the next task


def test_a_frozen_worker_is_declared_dead_and_its_tasks_run_elsewhere():
    with Pool(2, heartbeat=0.2) as pool:
        pool.wait_for_workers()
        pids = pool.status()["local_processes"]
        os.kill(pids[0], signal.SIGSTOP)
        try:
            futures = [pool.submit(jobs.pid) for _ in range(6)]  # some are leased to the frozen one
            assert pids[0] not in [f.result(30) for f in futures]
            deadline = time.monotonic() + 10
            while any(w["pid"] == pids[0] for w in pool.status()["workers"]):
                assert time.monotonic() < deadline, "the frozen worker was never declared dead"
                time.sleep(0.05)
        finally:
            os.kill(pids[0], signal.SIGKILL)


@pytest.fixture
def coordinator(transport):
    with Coordinator(KEY, handshake_timeout=0.5) as coord:
        url = coord.serve(f"{transport}://127.0.0.1:0")
        yield coord, url


def test_a_wrong_key_is_refused_promptly(coordinator):
    _, url = coordinator
    start = time.monotonic()
    with pytest.raises(AuthenticationError):
        Pool(address=url, authkey=b"not-the-key")
    assert time.monotonic() - start < 5


def test_a_pickle_sent_before_authentication_is_never_unpickled(coordinator, tmp_path):
    _, url = coordinator
    marker = tmp_path / "unpickled"
    for payload in (
        pickle.dumps(Sentinel(str(marker))),
        encode(Message(Kind.SUBMIT, 1, pickle.dumps(Sentinel(str(marker))), fmt=Format.PICKLE)),
    ):
        with socket.create_connection(("127.0.0.1", url_port(url))) as raw:
            raw.sendall(raw_frame(payload))
            wait_until_closed(raw)
    assert not marker.exists()
    with Pool(address=url, authkey=KEY) as client:  # and it goes on serving
        assert client.status()["clients"] == 1


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack("!I", 2**31),  # announces a 2 GiB frame
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not minipool at all
        raw_frame(b"MP\x01"),  # truncated envelope
        raw_frame(b"\xff" * 64),
    ],
)
def test_bad_input_closes_only_that_connection(coordinator, garbage):
    _, url = coordinator
    with Pool(address=url, authkey=KEY) as good:
        with socket.create_connection(("127.0.0.1", url_port(url))) as raw:
            raw.sendall(garbage)
            wait_until_closed(raw)
        assert good.status()["clients"] == 1


def test_a_client_too_slow_to_authenticate_is_dropped(coordinator):
    _, url = coordinator
    with socket.create_connection(("127.0.0.1", url_port(url))) as raw:
        start = time.monotonic()
        wait_until_closed(raw)
        assert time.monotonic() - start < 4


def test_a_departed_client_has_its_queued_tasks_cancelled(coordinator):
    coord, url = coordinator
    import threading

    from minipool.cluster.worker import Worker

    worker = Worker(url, KEY, slots=1, kind="thread", reconnect=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    client = Pool(address=url, authkey=KEY)
    client.wait_for_workers(1)
    for _ in range(20):
        client.submit(jobs.sleep_then, 0.2)
    deadline = time.monotonic() + 10
    while coord.status()["submitted"] < 20:  # every SUBMIT has arrived and is queued or running
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.shutdown(wait=False, cancel_futures=True)
    while coord.status()["clients"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    status = coord.status()
    assert status["queued"] == 0 and status["cancelled"] >= 15
    worker.stop()
    thread.join(5)


def test_a_malformed_hello_from_an_authenticated_peer_is_refused():
    from minipool.cluster.session import client_handshake
    from minipool.transports import connect
    from minipool.wire import decode

    with Coordinator(KEY) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        conn = connect(url)
        client_handshake(conn, KEY, {"role": "worker", "slots": "many"}, timeout=5)
        reply = decode(conn.recv(5))
        assert reply.kind is Kind.ERROR and "malformed HELLO" in reply.headers["reason"]
        conn.close()
        with Pool(address=url, authkey=KEY) as good:
            assert good.status()["workers"] == []


@pytest.mark.parametrize(
    "protection, options",
    [
        # Results pile up past max_backlog: cut off at once (the stall detector would need 30 s).
        ("backlog", {"max_backlog": 2_000_000, "heartbeat": 10.0}),
        # No backlog limit to speak of: a send blocked for 3 heartbeats gives it away.
        ("stalled send", {"max_backlog": 10**12, "heartbeat": 0.2}),
    ],
)
def test_a_client_that_stops_reading_is_cut_off_and_others_are_served(protection, options):
    import threading

    from minipool import task as tasklib
    from minipool.cluster.session import open_connection
    from minipool.cluster.worker import Worker

    with Coordinator(KEY, **options) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        worker = Worker(url, KEY, kind="thread", slots=2, reconnect=False, heartbeat=0.2)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        sluggard = open_connection(url, KEY, {"role": "client", "client": "sluggard"})
        body, codec, _ = tasklib.pack_call(jobs.identity, (b"x" * 1_000_000,), {})
        try:
            for number in range(1, 41):  # 40 MB of results it will never read
                sluggard.send(encode(Message(Kind.SUBMIT, number, body, fmt=Format.PICKLE)))
        except ConnectionClosed:
            pass  # cut off before it even finished submitting: also the point of the test
        stop = threading.Event()

        def keep_talking():  # alive and heartbeating: silence cannot be why it is cut off
            try:
                while not stop.wait(0.1):
                    sluggard.send(encode(Message(Kind.HEARTBEAT)))
            except Exception:  # noqa: BLE001 - cut off: the point of the test
                pass

        threading.Thread(target=keep_talking, daemon=True).start()
        with Pool(address=url, authkey=KEY) as good:
            deadline = time.monotonic() + 20
            while good.status()["clients"] != 1:
                assert time.monotonic() < deadline, "the client that stopped reading was never cut off"
                time.sleep(0.05)
            assert good.submit(jobs.square, 7).result(10) == 49
        stop.set()
        sluggard.close()
        worker.stop()
        thread.join(5)
