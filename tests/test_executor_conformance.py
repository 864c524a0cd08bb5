"""Pool against the concurrent.futures contract: the executor semantics of docs/pool.md.

Adapted from CPython's Lib/test/test_concurrent_futures (test_shutdown, test_wait,
test_as_completed, the map and cancel tests of executor.py) for a pool whose tasks run in other
processes, reached in-process (the embedded Pool) or over the network (a remote client). Where
CPython's tests time a sleep, these hold tasks behind a gate file the test opens, so they are
quick and do not depend on the machine's load.
"""

import concurrent.futures
import functools
import gc
import itertools
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path

import pytest

import jobs
from minipool import Pool

KEY = b"conformance-key-0123456789abcdef"
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def embedded():
    with Pool(2, authkey=KEY) as p:
        p.wait_for_workers()
        yield p


@pytest.fixture(scope="module")
def remote(embedded):
    with Pool(address=embedded.address, authkey=KEY) as p:
        yield p


@pytest.fixture(params=["embedded", "remote"])
def executor(request):
    """The same workers reached in-process (LocalClient) and over tcp (RemoteClient)."""
    return request.getfixturevalue(request.param)


def eventually(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {predicate}")
        time.sleep(0.01)


class Gate:
    """Tasks wait on a file until the test opens it."""

    def __init__(self, tmp_path):
        self.path = str(tmp_path / "gate")

    def hold(self, executor):
        """A task that waits at the gate (and returns True once through it)."""
        return executor.submit(jobs.wait_for_path, self.path)

    def fill(self, executor):
        """Tasks holding every lease of every worker (slots and prefetch), so that what is
        submitted next waits in the coordinator's queue."""
        capacity = sum(w["capacity"] for w in executor.status()["workers"])
        return [self.hold(executor) for _ in range(capacity)]

    def open(self):
        Path(self.path).touch()


def ran(log):
    return Path(log).read_text().split() if Path(log).exists() else []


# -- item 7: counts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"workers": 0},
        {"workers": -1},
        {"max_losses": 0},
        {"max_losses": -2},
        {"heartbeat": 0},
        {"heartbeat": -1.0},
    ],
)
def test_counts_that_would_run_nothing_are_refused(options):
    # ProcessPoolExecutor(max_workers=0) raises ValueError; so does Pool, before starting anything.
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match=next(iter(options))):
        Pool(**options)
    assert not set(threading.enumerate()) - before  # no coordinator, no supervisor started


def test_map_refuses_a_window_of_nothing(embedded):
    for buffersize in (0, -1):
        with pytest.raises(ValueError, match="buffersize"):
            embedded.map(jobs.square, range(3), buffersize=buffersize)
    with pytest.raises(ValueError, match="chunksize"):
        embedded.map(jobs.square, range(3), chunksize=0)


# -- item 6: RUNNING, and what cancel() promises ------------------------------------------------


def test_a_task_a_worker_holds_is_running_and_cannot_be_cancelled(executor, tmp_path):
    gate = Gate(tmp_path)
    future = gate.hold(executor)
    eventually(future.running)
    assert not future.cancel()
    assert not future.cancelled() and future.running() and not future.done()
    gate.open()
    assert future.result(30) is True
    assert not future.running()


def test_cancel_true_means_the_task_never_runs(executor, tmp_path):
    gate, log = Gate(tmp_path), str(tmp_path / "ran")
    blockers = gate.fill(executor)
    victim = executor.submit(jobs.record, log, "victim")
    assert not victim.running()
    assert victim.cancel()
    assert victim.cancel()  # again: still True
    assert victim.cancelled() and victim.done() and not victim.running()
    # wait() and as_completed() see it as CPython's executors' cancelled futures
    # (CANCELLED_AND_NOTIFIED), not as one still pending.
    done, not_done = concurrent.futures.wait([victim], timeout=0)
    assert done == {victim} and not not_done
    assert list(concurrent.futures.as_completed([victim], timeout=5)) == [victim]
    with pytest.raises(concurrent.futures.CancelledError):
        victim.result(0)
    gate.open()
    assert all(b.result(30) for b in blockers)
    # Every worker has gone through its queue past where the victim stood.
    assert all(f.result(30) for f in gate.fill(executor))
    assert "victim" not in ran(log)


def test_a_cancel_in_a_done_callback_on_the_reader_answers_at_once(remote, tmp_path):
    # The reader thread alone could carry the coordinator's answer: it must not wait for it.
    gate = Gate(tmp_path)
    held = gate.hold(remote)
    answers = []
    first = remote.submit(jobs.sleep_then, 0.2, "x")
    first.add_done_callback(lambda f: answers.append((threading.current_thread().name, held.cancel())))
    assert first.result(30) == "x"
    eventually(lambda: answers)
    gate.open()
    assert held.result(30) is True
    if answers[0][0] == "minipool-client-reader":
        assert answers[0][1] is False  # no answer to be had: nothing promised


def test_the_scheduler_cancels_only_tasks_no_worker_has_held():
    from minipool.cluster.scheduler import Effects, Outcome, Scheduler
    from minipool.cluster.state import WorkerState
    from minipool.wire import Format, Kind

    s = Scheduler()
    worker = WorkerState(None, "w", 1, 0, {})  # one slot, no prefetch: task 1 leased, 2-4 queued
    s.worker_joined(worker, Effects())
    for number in range(1, 5):
        s.submit("c", number, b"call", Format.PICKLE, "none", None, Effects())
    assert s.started("c", [1, 2, 3], False, Effects()) == ([1], [])
    s.worker_lost(worker, Effects())  # task 1 goes back to the queue: it has still started
    assert s.started("c", [1, 2, 3, 99], True, Effects()) == ([1], [2, 3, 99])
    assert not s.cancel("c", 1, Effects())
    worker = WorkerState(None, "w2", 1, 0, {})
    s.worker_joined(worker, Effects())  # task 1 leased again; 2 and 3 were dropped, 4 waits
    assert [t.client_number for t in worker.leases.values()] == [1]
    s.complete(
        worker, [(next(iter(worker.leases)), Outcome(Kind.RESULT, Format.PICKLE, "none", b"r"))], Effects()
    )
    assert [t.client_number for t in worker.leases.values()] == [4]
    assert s.started("c", [1, 4], True, Effects()) == ([1, 4], [])  # finished, and leased


def test_a_malformed_leases_request_closes_that_connection_only(embedded):
    from minipool.cluster.session import open_connection
    from minipool.errors import ConnectionClosed, MinipoolError
    from minipool.wire import Kind, Message, decode, encode

    conn = open_connection(embedded.address, KEY, {"role": "client", "client": "bad-leases"}, timeout=10)
    try:
        conn.send(encode(Message(Kind.LEASES, 1, headers={"tasks": "all", "cancel": True})))
        with pytest.raises((ConnectionClosed, MinipoolError)):
            while True:
                msg = decode(conn.recv(timeout=10))
                if msg.kind is Kind.ERROR:
                    assert "LEASES" in msg.headers["reason"]
                    raise ConnectionClosed("closed with an error")
    finally:
        conn.close()
    assert embedded.submit(jobs.square, 6).result(30) == 36


def _failing_input(n, bad):
    for i in range(n):
        if i == bad:
            raise KeyError("the input broke")
        yield i


def test_a_map_raises_its_inputs_error_in_its_place(executor):
    # Within the first window it is raised by map() itself, as Executor.map raises it; later,
    # only after every result submitted before it has been yielded.
    with pytest.raises(KeyError, match="input broke"):
        executor.map(jobs.square, _failing_input(10, 3))
    got = []
    with pytest.raises(KeyError, match="input broke"):
        for value in executor.map(jobs.square, _failing_input(100, 50), buffersize=4):
            got.append(value)
    assert got == [x * x for x in range(50)]


def test_a_map_dropped_unread_still_runs_every_item(executor, tmp_path):
    # Executor.map submits everything at the call, so its results need not be read for the
    # work to happen (a common use: a function run for its side effects).
    log = str(tmp_path / "ran")
    executor.map(jobs.record, [log] * 30, range(30), buffersize=2)
    eventually(lambda: len(ran(log)) == 30)
    assert sorted(map(int, ran(log))) == list(range(30))


def test_a_map_closed_after_a_result_cancels_what_has_not_started(executor, tmp_path):
    gate, log = Gate(tmp_path), str(tmp_path / "ran")
    results = executor.map(jobs.record, [log] * 1000, range(1000), buffersize=1)
    assert next(results) == 0
    blockers = gate.fill(executor)  # item 1 may have started; the rest have not been submitted
    results.close()
    gate.open()
    assert all(b.result(30) for b in blockers)
    assert all(f.result(30) for f in gate.fill(executor))
    assert set(ran(log)) <= {"0", "1"}


# -- items 3 and 5: shutdown ----------------------------------------------------------------------


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_shutdown_without_wait_returns_at_once_and_pending_futures_complete():
    pool = Pool(2)
    pool.wait_for_workers()
    pids = pool.status()["local_processes"]
    futures = [pool.submit(jobs.sleep_then, 0.1, i) for i in range(6)]
    results = pool.map(jobs.square, range(40), buffersize=4)  # most of it not submitted yet
    started = time.monotonic()
    pool.shutdown(wait=False)
    assert time.monotonic() - started < 0.5
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(jobs.square, 1)
    assert [f.result(30) for f in futures] == list(range(6))
    assert list(results) == [x * x for x in range(40)]
    pool.shutdown(wait=True)  # a second call with wait waits for the first to finish
    eventually(lambda: all(_gone(pid) for pid in pids))


def test_an_endless_map_left_open_does_not_hold_up_shutdown(tmp_path):
    # A lazy map over an endless iterator (the README's promise) cannot be drained the way a
    # map over a list is: shutdown lets what it submitted finish and leaves the rest unread.
    log = str(tmp_path / "ran")
    with Pool(2) as pool:
        results = pool.map(jobs.record, itertools.repeat(log), itertools.count(), buffersize=4)
        assert list(itertools.islice(results, 3)) == [0, 1, 2]
        dropped = pool.map(jobs.square, itertools.count(), buffersize=2)  # never read
        started = time.monotonic()
    assert time.monotonic() - started < 20
    submitted = len(ran(log))
    assert 3 <= submitted < 100
    with pytest.raises(concurrent.futures.CancelledError):
        for _ in range(submitted + 1):
            next(results)
    del dropped


@pytest.mark.parametrize("client", ["embedded", "remote"])
def test_shutdown_cancel_futures_cancels_only_what_has_not_started(tmp_path, client):
    gate, log = Gate(tmp_path), str(tmp_path / "ran")
    server = Pool(1, authkey=KEY)
    server.wait_for_workers()
    pool = server if client == "embedded" else Pool(address=server.address, authkey=KEY)
    running = gate.fill(pool)
    eventually(running[0].running)
    queued = [pool.submit(jobs.record, log, i) for i in range(5)]
    left = pool.map(jobs.record, [log] * 20, range(100, 120), buffersize=2)
    pool.shutdown(wait=False, cancel_futures=True)  # one question to the coordinator
    assert all(f.cancelled() for f in queued)
    assert not any(f.cancelled() for f in running)
    gate.open()
    pool.shutdown(wait=True)
    assert all(f.result(0) is True for f in running)
    with pytest.raises(concurrent.futures.CancelledError):
        list(left)
    server.shutdown()
    assert ran(log) == []


def test_shutdown_cancel_futures_leaves_the_others_finished():
    # CPython's test_cancel_futures: 50 tasks on few workers; many are cancelled, the others
    # all finish without an exception (none is left pending, none fails with CancelledError).
    pool = Pool(2)
    pool.wait_for_workers()
    futures = [pool.submit(jobs.sleep_then, 0.05) for _ in range(50)]
    pool.shutdown(cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    others = [f for f in futures if not f.cancelled()]
    assert len(cancelled) > 20 and others
    for future in others:
        assert future.done() and future.exception() is None


def test_shutdown_waits_for_every_pending_task():
    # CPython's test_hang_issue12364 and test_shutdown_race_issue12456: many pending tasks and
    # a map nobody reads, then shutdown(); every task has its result afterwards.
    pool = Pool(2)
    futures = [pool.submit(jobs.sleep_then, 0.01, i) for i in range(50)]
    pool.map(str, [2] * 3)
    pool.shutdown()
    assert [f.result(0) for f in futures] == list(range(50))


def test_a_retry_due_after_shutdown_fails_its_task_instead_of_hanging():
    pool = Pool(1)
    failing = pool.task(retries=2, retry_backoff=0.3)(jobs.fail)
    result = failing.delay("first")
    pool.shutdown()  # waits for the first attempt; its retry is due 0.3 s later
    with pytest.raises(RuntimeError, match="after shutdown"):
        result.get(10)


# -- item 4: the interpreter's exit ---------------------------------------------------------------


def test_the_interpreter_finishes_pending_tasks_before_it_exits(tmp_path):
    # CPython's test_interpreter_shutdown and test_submit_after_interpreter_shutdown, together:
    # no shutdown() is called, yet every task runs; after exit has begun, submit() refuses.
    log = tmp_path / "ran"
    script = textwrap.dedent(f"""
        import atexit
        import jobs
        from minipool import Pool

        @atexit.register
        def run_last():
            try:
                pool.submit(jobs.square, 2)
            except RuntimeError as exc:
                print("refused:", exc)

        pool = Pool(1)
        for i in range(5):
            pool.submit(jobs.record_then_sleep, {str(log)!r}, i, 0.05)
        print("leaving")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [
        "leaving",
        "refused: cannot schedule new futures after interpreter shutdown",
    ]
    assert ran(log) == ["0", "1", "2", "3", "4"]
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr


# -- item 9: no stale references ------------------------------------------------------------------


def test_the_function_cache_keeps_no_callable_alive(executor):
    holder = jobs.Holder(1 << 20)
    alive = weakref.ref(holder)
    assert executor.submit(holder.size, 1).result(30) == (1 << 20) + 1
    assert list(executor.map(holder.size, [2, 3])) == [(1 << 20) + 2, (1 << 20) + 3]
    assert executor.submit(functools.partial(jobs.Holder.size, holder), 4).result(30) == (1 << 20) + 4
    del holder
    gc.collect()
    assert alive() is None


def test_a_discarded_future_keeps_no_callable_alive(executor):
    # CPython's test_no_stale_references: the future is dropped, the task may still be pending.
    holder = jobs.Holder(1 << 20)
    collected = threading.Event()
    alive = weakref.ref(holder, lambda _: collected.set())
    executor.submit(holder.size)
    del holder
    gc.collect()
    assert collected.wait(10) and alive() is None


def test_as_completed_keeps_no_future_it_has_yielded(executor):
    # CPython's test_free_reference_yielded_future, with the pool's own futures.
    futures = [executor.submit(jobs.square, i) for i in range(6)]
    for future in concurrent.futures.as_completed(futures, timeout=30):
        futures.remove(future)
        wr = weakref.ref(future)
        del future
        gc.collect()
        assert wr() is None


def test_a_bound_method_ships_the_state_of_its_object_now(executor):
    holder = jobs.Holder(10)
    assert executor.submit(holder.size).result(30) == 10
    holder.payload = bytearray(20)  # a cached pickle would still say 10: a wrong answer
    assert executor.submit(holder.size).result(30) == 20


@pytest.mark.parametrize("how", ["map", "map_unordered"])
def test_map_drops_each_result_once_yielded(executor, how):
    # CPython's test_free_reference (issue 14406): the iterator keeps no result it has yielded.
    for obj in getattr(executor, how)(jobs.make_dummy, range(10)):
        wr = weakref.ref(obj)
        del obj
        gc.collect()
        assert wr() is None


# -- item 11: pickling errors -----------------------------------------------------------------------

PICKLING_ERRORS = (TypeError, pickle.PicklingError, AttributeError)


def test_a_call_that_does_not_pickle_fails_its_future(executor):
    lock = threading.Lock()
    future = executor.submit(jobs.identity, lock)  # ProcessPoolExecutor: no raise here either
    assert isinstance(future.exception(5), PICKLING_ERRORS)
    assert future.done() and not future.cancel()
    results = executor.map(jobs.identity, [1, lock, 3])
    assert next(results) == 1
    with pytest.raises(PICKLING_ERRORS):
        next(results)
    delayed = executor.task(jobs.identity).delay(lock)
    assert delayed.id and delayed.failed()
    with pytest.raises(PICKLING_ERRORS):
        delayed.get(5)
    assert executor.submit(jobs.square, 3).result(30) == 9  # and the pool goes on


# -- CPython's wait / as_completed / map tests, adapted ----------------------------------------------


def test_wait_first_completed(executor, tmp_path):
    gate = Gate(tmp_path)
    held = gate.hold(executor)
    quick = executor.submit(jobs.square, 5)
    done, not_done = concurrent.futures.wait(
        [held, quick], timeout=30, return_when=concurrent.futures.FIRST_COMPLETED
    )
    assert done == {quick} and not_done == {held}
    gate.open()
    assert held.result(30)


def test_wait_first_exception_and_all_completed(executor):
    ok = executor.submit(jobs.square, 2)
    bad = executor.submit(jobs.fail, "first")
    done, _ = concurrent.futures.wait([ok, bad], timeout=30, return_when=concurrent.futures.FIRST_EXCEPTION)
    assert bad in done
    done, not_done = concurrent.futures.wait([ok, bad], timeout=30)
    assert done == {ok, bad} and not not_done
    assert isinstance(bad.exception(), ValueError)


def test_as_completed_times_out_on_a_held_task(executor, tmp_path):
    gate = Gate(tmp_path)
    held = gate.hold(executor)
    quick = executor.submit(jobs.square, 4)
    seen = []
    with pytest.raises(concurrent.futures.TimeoutError):
        for future in concurrent.futures.as_completed([held, quick], timeout=0.5):
            seen.append(future)
    assert seen == [quick]
    gate.open()
    assert held.result(30)


def test_map_raises_a_task_error_at_its_item(executor):
    results = executor.map(jobs.identity, [1, 2, 3])
    assert list(results) == [1, 2, 3]
    results = executor.map(jobs.fail, ["a", "b"])
    with pytest.raises(ValueError, match="a"):
        next(results)
