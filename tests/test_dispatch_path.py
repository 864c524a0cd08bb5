"""The one-task path's costs that the dispatch benchmark measures, held by behaviour: a task's
future makes no lists nobody uses and reads a settled value without its lock; the queue of
waiting tasks is a line kept in order, so the next task comes off its front."""

import concurrent.futures
import threading

from minipool.cluster.scheduler import Effects, Scheduler
from minipool.cluster.state import Outcome, WorkerState
from minipool.futures import TaskFuture
from minipool.wire import Format, Kind


class FakeClient:
    client_id = "c0ffee"


def test_a_future_holds_no_list_until_a_waiter_or_a_callback_comes():
    f = TaskFuture(FakeClient(), 1)
    f.set_result(1)
    assert not any(isinstance(value, list) for value in vars(f).values())
    called = []
    g = TaskFuture(FakeClient(), 2)
    g.add_done_callback(called.append)
    done, _ = concurrent.futures.wait([g], timeout=0)
    assert not done and g._waiters == [] and g._done_callbacks == [called.append]
    g.set_result(2)
    assert called == [g] and concurrent.futures.wait([g], timeout=0).done == {g}


def test_a_settled_value_is_read_without_waiting_for_the_futures_lock():
    f = TaskFuture(FakeClient(), 1)
    f.set_result("value")
    got = []
    with f._lock:  # another thread holds it (a waiter, a cancel) while the value is read
        reader = threading.Thread(target=lambda: got.append(f.result()))
        reader.start()
        reader.join(5)
    assert got == ["value"]


def test_asking_whether_a_future_is_done_builds_no_condition():
    f = TaskFuture(FakeClient(), 1)
    assert not f.done() and not f.cancelled()
    f.set_result(1)
    assert f.done() and not f.cancelled() and not f.running()
    assert "_condition" not in vars(f)


def a_result():
    return Outcome(Kind.RESULT, Format.PICKLE, "none", b"r")


def test_waiting_tasks_form_a_sorted_line_by_priority_then_arrival_and_a_requeue_goes_first():
    s = Scheduler()
    w = WorkerState(None, "w", 1, 0, {})  # one slot, nothing prefetched: the rest wait
    s.worker_joined(w, Effects())
    for number, priority in ((1, 0), (2, 0), (3, 0), (4, 5), (5, 0), (6, 1), (7, 5)):
        s.submit("c", number, b"call", Format.PICKLE, "none", {"priority": priority}, Effects())
    assert list(s.queue) == sorted(s.queue)
    assert [entry[2] for entry in s.queue] == [4, 7, 6, 2, 3, 5]
    s.worker_lost(w, Effects(), "cut")  # task 1 goes back, ahead of its priority's others
    assert list(s.queue) == sorted(s.queue)
    s.worker_joined(w := WorkerState(None, "w", 1, 0, {}), Effects())
    order = []
    while w.leases:
        (number,) = list(w.leases)
        order.append(w.leases[number].client_number)
        s.complete(w, [(number, a_result())], Effects())
    assert order == [4, 7, 6, 1, 2, 3, 5]
