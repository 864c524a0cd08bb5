"""TaskFuture: the standard Future's behaviour, with its condition built only when needed."""

import concurrent.futures
import threading
import time

import pytest

from minipool.futures import TaskFuture


class FakeClient:
    client_id = "c0ffee"

    def __init__(self):
        self.forgotten = []

    def cancel(self, futures):
        # A coordinator where nothing has started: every cancellation is granted.
        for future in futures:
            self.forgotten.append((future.number, True))
            future.settle_cancelled()

    def refresh_running(self, futures):
        pass  # nothing has started


@pytest.fixture
def make():
    client = FakeClient()
    numbers = iter(range(1, 10**6))
    factory = lambda: TaskFuture(client, next(numbers))  # noqa: E731
    factory.client = client
    return factory


def later(delay, fn, *args):
    timer = threading.Timer(delay, fn, args)
    timer.start()
    return timer


def test_result_exception_and_ids(make):
    ok, bad = make(), make()
    assert not ok.done() and ok.task_id == "c0ffee-1"
    ok.set_result(42)
    bad.set_exception(ValueError("boom"))
    assert ok.result() == 42 and ok.exception() is None and ok.done()
    with pytest.raises(ValueError, match="boom"):
        bad.result()
    assert isinstance(bad.exception(0), ValueError)


def test_no_condition_is_built_when_nobody_waits(make):
    f = make()
    f.set_result(1)
    assert f.result() == 1 and f.exception() is None
    assert "_condition" not in f.__dict__
    g = make()
    later(0.05, g.set_result, 2)
    assert g.result(timeout=5) == 2  # it had to wait: now it has one
    assert "_condition" in g.__dict__


def test_waiting_on_overlapping_sets_from_two_threads_cannot_deadlock(make):
    # concurrent.futures.wait locks every future in id order: safe only with a lock per future.
    ours = [make() for _ in range(20)]
    plain = concurrent.futures.Future()
    below = [f for f in ours if id(f) < id(plain)] or ours
    above = [f for f in ours if id(f) > id(plain)] or ours
    sets = ([below[0], plain, above[0]], [plain, above[-1]])
    stop = time.monotonic() + 1.0

    def spin(futures):
        while time.monotonic() < stop:
            concurrent.futures.wait(futures, timeout=0)

    threads = [threading.Thread(target=spin, args=(s,), daemon=True) for s in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)


def test_a_future_settled_elsewhere_does_not_end_our_wait(make):
    mine, other = make(), make()
    later(0.05, other.set_result, "not yours")
    start = time.monotonic()
    with pytest.raises(concurrent.futures.TimeoutError):
        mine.result(timeout=0.3)
    assert time.monotonic() - start >= 0.29  # woken at 0.05 s, went back to sleep
    later(0.05, mine.set_result, "yours")
    assert mine.result(timeout=5) == "yours"


def test_many_threads_each_waiting_for_their_own_future(make):
    futures = [make() for _ in range(20)]
    got = {}

    def wait(i):
        got[i] = futures[i].result(timeout=10)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for i in reversed(range(20)):
        futures[i].set_result(i * i)
    for t in threads:
        t.join(10)
    assert got == {i: i * i for i in range(20)}


def test_settling_twice_or_after_cancel_is_refused(make):
    f, g = make(), make()
    f.set_result(1)
    with pytest.raises(concurrent.futures.InvalidStateError):
        f.set_result(2)
    with pytest.raises(concurrent.futures.InvalidStateError):
        f.set_exception(RuntimeError())
    assert g.cancel() and g.cancelled()
    assert make.client.forgotten == [(2, True)]
    with pytest.raises(concurrent.futures.InvalidStateError):
        g.set_result(1)
    with pytest.raises(concurrent.futures.CancelledError):
        g.result()
    with pytest.raises(concurrent.futures.CancelledError):
        g.exception()


def test_a_running_future_cannot_be_cancelled(make):
    f = make()
    assert f.set_running_or_notify_cancel()
    assert not f.cancel() and f.running()
    assert make.client.forgotten == []


def test_callbacks_wait_and_as_completed(make):
    futures = [make() for _ in range(5)]
    seen = []
    futures[0].add_done_callback(lambda f: seen.append(f.result()))
    later(0.05, futures[3].set_result, "third")
    done, not_done = concurrent.futures.wait(
        futures, timeout=5, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert done == {futures[3]} and len(not_done) == 4
    for i in (0, 1, 2, 4):
        later(
            0.01 * i,
            futures[i].set_exception if i == 2 else futures[i].set_result,
            KeyError("k") if i == 2 else i,
        )
    order = [f for f in concurrent.futures.as_completed(futures, timeout=5)]
    assert set(order) == set(futures)
    assert seen == [0]
    futures[1].add_done_callback(lambda f: seen.append("late"))  # already done: runs at once
    assert seen == [0, "late"]
