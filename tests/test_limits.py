"""Limits that protect the pool: max_message for calls and results (docs/failures.md, "A task's
call or result is too large")."""

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import jobs
from minipool import Pool, rpc
from minipool.cluster.coordinator import Coordinator
from minipool.cluster.worker import Worker
from minipool.errors import MessageTooLarge

KEY = b"limits-test-key-0123"
LIMIT = 1 << 20  # 1 MiB: small enough to exceed cheaply


def test_an_oversized_result_fails_its_task_at_once_and_is_not_retried(tmp_path):
    """The worker knows the coordinator's max_message (announced after HELLO) and sends a small
    FAILURE instead of a RESULT the coordinator would refuse. Before, the coordinator dropped the
    worker, the task ran three times and ended in a bare WorkerLost."""
    runs = tmp_path / "runs.txt"
    with Pool(1, max_message=LIMIT) as pool:
        start = time.monotonic()
        future = pool.submit(jobs.record_then_return_bytes, str(runs), 2 * LIMIT)
        with pytest.raises(
            MessageTooLarge, match=r"result of 2,097,1\d\d bytes exceeds max_message.*1,048,576"
        ) as info:
            future.result(30)
        assert time.monotonic() - start < 10
        assert info.value.limit == LIMIT and info.value.size > 2 * LIMIT
        assert runs.read_text().count("ran") == 1  # not retried: it would fail the same way
        # The worker was never dropped, and serves the next task.
        assert pool.submit(jobs.square, 7).result(10) == 49
        assert pool.status()["workers_lost"] == 0


def test_an_oversized_argument_fails_at_submit_without_reaching_a_worker():
    with Pool(1, max_message=LIMIT) as pool:
        future = pool.submit(jobs.identity, b"y" * (2 * LIMIT))
        assert future.done()  # at once, in submit()
        with pytest.raises(
            MessageTooLarge, match=r"call \(function and arguments\) of .* bytes exceeds max_message"
        ):
            future.result(0)
        assert pool.submit(jobs.identity, b"y" * (LIMIT // 2)).result(10) == b"y" * (LIMIT // 2)
        assert pool.status()["submitted"] == 1 and pool.status()["workers_lost"] == 0


def test_a_remote_client_learns_the_coordinators_limit():
    """A client whose own max_message is the default still refuses a call larger than the
    coordinator's: the coordinator announces its limit after HELLO. Before, the SUBMIT cost the
    client its connection, and every reconnection resent it."""
    with Coordinator(KEY, max_message=LIMIT) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        with Pool(address=url, authkey=KEY) as client:
            future = client.submit(jobs.identity, b"z" * (2 * LIMIT))
            with pytest.raises(MessageTooLarge, match="1,048,576"):
                future.result(5)
            assert client._client.reconnects == 0
            assert coord.status()["submitted"] == 0


# -- connections that never authenticate -----------------------------------------------------

IDLE = 1000  # silent sockets from a peer without the key


def _descriptors_for(count):
    """Make room for ``count`` more sockets in this process (``ulimit -n`` is often 1024):
    raise the soft limit towards the hard one, or skip."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = count + 512  # the sockets, and what the test process already holds
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@contextlib.contextmanager
def idle_sockets(url, count=IDLE):
    """``count`` TCP connections to ``url`` that never say a word."""
    _descriptors_for(count)
    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    socks = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection((host, int(port)), timeout=10))
        yield socks
    finally:
        for sock in socks:
            sock.close()


@contextlib.contextmanager
def coordinator_process(fd_limit=768):
    """A coordinator in a process of its own, allowed fewer descriptors (``ulimit -n``) than
    there are silent sockets: the usual default, 1024, falls the same way to a few more."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({fd_limit}, {fd_limit}))\n"
        "from minipool.cluster.coordinator import Coordinator\n"
        f"with Coordinator({KEY!r}, handshake_timeout=30) as coord:\n"
        "    print(coord.serve('tcp://127.0.0.1:0'), flush=True)\n"
        "    sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.stdin.close()  # the coordinator closes and exits
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_a_thousand_silent_sockets_do_not_keep_a_real_client_from_the_coordinator():
    """Connections that have not passed the handshake get their own small limit
    (transports/admission.py): past it, the one that has waited longest is closed. Before, the
    coordinator kept every silent socket until its handshake deadline, ran out of descriptors
    (EMFILE in accept) and a real client waited in the kernel's backlog for that long."""
    with coordinator_process() as url:
        worker = Worker(url, KEY, kind="thread", slots=1, max_backoff=0.2)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            with idle_sockets(url):
                start = time.monotonic()
                with Pool(address=url, authkey=KEY) as client:
                    assert client.submit(jobs.square, 12).result(10) == 144
                # Silent sockets held to their 30 s deadline would keep the client out for that
                # long; the bound leaves a loaded machine room without coming near it.
                assert time.monotonic() - start < 8
        finally:
            worker.stop()
            thread.join(5)


def test_a_thousand_silent_sockets_do_not_keep_a_real_caller_from_the_rpc_daemon():
    """The same for the rpc daemon, whose connection slots (max_connections, 256) the silent
    sockets used to fill until their deadline: a real Proxy was refused meanwhile."""
    with rpc.Daemon(authkey=KEY, handshake_timeout=30) as daemon:
        daemon.start()
        uri = daemon.register(Echo(), "echo")
        with idle_sockets(daemon.url):
            start = time.monotonic()
            with rpc.Proxy(uri, authkey=KEY, timeout=10) as echo:
                assert echo.say("hello") == "hello"
            assert time.monotonic() - start < 8  # not the silent sockets' 30 s deadline


@rpc.expose
class Echo:
    def say(self, text):
        return text
