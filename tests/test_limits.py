"""Limits that protect the pool: max_message for calls and results (docs/failures.md, "A task's
call or result is too large")."""

import time

import pytest

import jobs
from minipool import Pool
from minipool.cluster.coordinator import Coordinator
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
        with pytest.raises(MessageTooLarge, match=r"result of 2,097,1\d\d bytes exceeds max_message.*1,048,576") as info:
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
        with pytest.raises(MessageTooLarge, match=r"call \(function and arguments\) of .* bytes exceeds max_message"):
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
