"""Functions shipped by value between Python versions: never a wrong answer, never a crash.

A code object (``marshal``) is valid only in the interpreter that made it. A by-value function
carries its interpreter's tag; a worker refuses a foreign one before ``marshal`` reads it, and the
coordinator sends a by-value task only to a worker whose interpreter can load it -- or fails it
at once, naming both versions, when none of the connected workers can. By-reference tasks run on
any worker. The cross-version tests run each supported interpreter this machine has against the
one running the tests, and skip (with the reason) those it does not have.
"""

import json
import marshal
import math
import operator
import platform
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import interpreters
import jobs
from minipool import Pool, shipping
from minipool import task as tasklib
from minipool.cluster.scheduler import Effects, Outcome, Scheduler
from minipool.cluster.state import WorkerState
from minipool.errors import IncompatibleInterpreter
from minipool.wire import Format, Kind

KEY = "versions-test-key"
ELSEWHERE = "cpython-3.99-00000000"  # an interpreter no machine has


def foreign_blob(monkeypatch, fn):
    """``fn`` pickled by value as an interpreter with another tag would pickle it."""
    with monkeypatch.context() as m:
        m.setattr(shipping, "INTERPRETER", ELSEWHERE)
        return shipping.dumps(fn)


# -- the tag, on the worker's side ---------------------------------------------------------------


def test_a_by_value_function_says_which_interpreter_made_it():
    offset = 1
    assert shipping.dumps_needing(lambda x: x + offset)[1] == shipping.INTERPRETER
    assert shipping.dumps_needing([math.sqrt, operator.mul])[1] is None
    impl, version, magic = shipping.INTERPRETER.split("-")
    assert (impl, version) == (sys.implementation.name, f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert len(bytes.fromhex(magic)) == 4


def test_a_foreign_function_is_refused_before_marshal_reads_its_code(monkeypatch):
    blob = foreign_blob(monkeypatch, lambda x: x * 3)

    def must_not_run(data):
        raise AssertionError("marshal.loads ran on foreign bytecode")

    monkeypatch.setattr(marshal, "loads", must_not_run)
    with pytest.raises(IncompatibleInterpreter) as caught:
        shipping.loads(blob)
    message = str(caught.value)
    assert ELSEWHERE in message and shipping.INTERPRETER in message
    assert "by reference" in message and "module" in message


def test_a_task_holding_a_foreign_function_fails_with_that_error(monkeypatch):
    """The worker runs a task body with ``execute``: the foreign function, whether it is the
    task's function or hides in an argument, is that task's exception."""
    fn_blob = foreign_blob(monkeypatch, lambda x: x * 3)
    arg_blob = foreign_blob(monkeypatch, [lambda x: x * 3])
    call = tasklib.pickle.dumps((tasklib.CALL, fn_blob, ((5,), {})))
    with pytest.raises(IncompatibleInterpreter):
        tasklib.execute(call)
    body, _, _ = tasklib.pack_call(tasklib.pickle.loads, (arg_blob,), {})
    with pytest.raises(IncompatibleInterpreter):
        tasklib.execute(body)


def test_only_a_task_that_holds_a_function_by_value_names_an_interpreter():
    offset = 1
    by_value = lambda x: x + offset  # noqa: E731
    assert tasklib.pack_call(jobs.square, (3,), {})[2] is None
    assert tasklib.pack_call(by_value, (3,), {})[2] == {"interpreter": shipping.INTERPRETER}
    assert tasklib.pack_call(jobs.identity, (by_value,), {})[2] == tasklib.BY_VALUE  # in an argument
    assert tasklib.pack_call(jobs.identity, (by_value,), {}, "zlib")[2] == tasklib.BY_VALUE
    assert tasklib.pack_chunk(jobs.square, [1, 2])[2] is None
    assert tasklib.pack_chunk(by_value, [1, 2])[2] == tasklib.BY_VALUE
    assert tasklib.pack_reduce(jobs.square, operator.add, [1, 2], tasklib.NO_INITIAL)[2] is None
    assert (
        tasklib.pack_reduce(jobs.square, lambda a, b: a + b, [1, 2], tasklib.NO_INITIAL)[2]
        == tasklib.BY_VALUE
    )


def test_a_pool_whose_initializer_travels_by_value_names_the_interpreter_on_every_task():
    # The initializer rides in every task of its pool, so its code must be loadable there too.
    assert tasklib.pack_initializer(jobs.square, (1,))[1] is None
    init, needs = tasklib.pack_initializer(lambda level: None, ("debug",))
    assert needs == tasklib.BY_VALUE
    with Pool(1, initializer=lambda: None) as pool:
        sent = []
        real_submit = pool._client.submit
        pool._client.submit = lambda body, codec, headers=None: (
            sent.append(headers) or real_submit(body, codec, headers)
        )
        assert pool.submit(jobs.square, 3).result(20) == 9
        assert list(pool.map(jobs.square, [1, 2])) == [1, 4]
        assert pool.submit_with(jobs.square, (2,), priority=1).result(20) == 4
    assert sent and all(h is not None and h["interpreter"] == shipping.INTERPRETER for h in sent)
    assert sent[-1]["priority"] == 1


# -- routing, in the scheduler -------------------------------------------------------------------


def worker(name, interpreter, python="3.x", prefetch=0):
    return WorkerState(None, name, 1, prefetch, {"interpreter": interpreter, "python": python})


def submit(s, number, interpreter=None, priority=0):
    fx = Effects()
    headers = {"priority": priority} if priority else {}
    if interpreter is not None:
        headers["interpreter"] = interpreter
    s.submit("c", number, b"call", Format.PICKLE, "none", headers or None, fx)
    return fx


def leased(w):
    return sorted(task.client_number for task in w.leases.values())


def test_a_by_value_task_goes_only_to_a_worker_that_can_load_it():
    s = Scheduler()
    old, new = worker("old", "cpython-3.11-a", prefetch=1), worker("new", "cpython-3.13-b")
    for w in (old, new):
        s.worker_joined(w, Effects())
    s.submit("c", 1, b"call", Format.PICKLE, "none", None, Effects())  # by reference: old is as good
    submit(s, 2, "cpython-3.13-b")
    submit(s, 3, "cpython-3.13-b")  # new is busy: it waits for new, though old has room
    assert (leased(old), leased(new)) == ([1], [2])
    submit(s, 4)  # a by-reference task behind it is not held up
    assert leased(old) == [1, 4]
    s.complete(new, [(next(iter(new.leases)), a_result())], Effects())
    assert leased(new) == [3] and not s.pinned


def a_result():
    return Outcome(Kind.RESULT, Format.PICKLE, "none", b"r")


def test_waiting_tasks_keep_their_priority_order_across_both_queues():
    s = Scheduler()
    w = worker("w", "cpython-3.13-b")
    s.worker_joined(w, Effects())
    submit(s, 1)  # takes w's only lease
    submit(s, 2, priority=1)
    submit(s, 3, "cpython-3.13-b", priority=5)
    submit(s, 4, "cpython-3.13-b")
    order = []
    for _ in range(4):
        (number,) = list(w.leases)
        order.append(w.leases[number].client_number)
        s.complete(w, [(number, a_result())], Effects())
    assert order == [1, 3, 2, 4]


def test_a_by_value_task_fails_at_once_when_no_connected_worker_can_load_it():
    s = Scheduler()
    s.worker_joined(worker("old", "cpython-3.11-a", "3.11.7"), Effects())
    submit(s, 1, "cpython-3.13-b")
    outcome = s.results[("c", 1)]  # no client is attached here: the outcome is stored
    assert outcome.kind is Kind.FAILURE
    error = tasklib.failure_from_json(json.loads(outcome.body))
    assert isinstance(error, IncompatibleInterpreter)
    assert "cpython-3.13-b" in str(error) and "cpython-3.11-a (Python 3.11.7)" in str(error)
    assert "module" in str(error)
    assert not s.tasks and not s.pinned and s.counts["failed"] == 1


def test_with_no_worker_a_by_value_task_waits_and_the_first_workers_decide():
    s = Scheduler()
    submit(s, 1, "cpython-3.13-b")
    submit(s, 2, "cpython-3.12-c")
    assert not s.results and len(s.tasks) == 2  # nobody to ask yet: it waits
    new = worker("new", "cpython-3.13-b")
    s.worker_joined(new, Effects())
    assert leased(new) == [1]  # runs on the worker that can load it ...
    assert s.results[("c", 2)].kind is Kind.FAILURE  # ... and the other no worker here can load
    s.worker_lost(new, Effects())  # its one compatible worker is lost: the task waits for another
    assert [(i, len(heap)) for i, heap in s.pinned.items()] == [("cpython-3.13-b", 1)]
    again = worker("new-again", "cpython-3.13-b")
    s.worker_joined(again, Effects())
    assert leased(again) == [1] and not s.pinned


def test_a_worker_that_names_no_interpreter_gets_no_by_value_task():
    s = Scheduler()
    s.worker_joined(WorkerState(None, "silent", 1, 0, {}), Effects())
    submit(s, 1, shipping.INTERPRETER)
    assert s.results[("c", 1)].kind is Kind.FAILURE


@pytest.mark.parametrize("snapshot", [False, True])
def test_a_restored_coordinator_still_sends_a_by_value_task_only_where_it_can_load(tmp_path, snapshot):
    from minipool.cluster.task_journal import TaskJournal

    durable = TaskJournal(str(tmp_path), fsync="no")
    first = Scheduler(journaling=True)
    for number, interpreter in [(1, "cpython-3.13-b"), (2, None)]:
        durable.write(submit(first, number, interpreter).records)
    if snapshot:  # the snapshot's records carry the interpreter as the log's do
        durable.write([("forget", 0, "c", 99, 0, "none", 0, None, 0, b"")] * 2)
        durable.snapshot_every = 1
        durable.maybe_snapshot(threading.Lock(), first)
    durable.close()
    restored = Scheduler()
    again = TaskJournal(str(tmp_path), fsync="no")
    again.restore(restored)
    again.close()
    assert {t.client_number: t.needs for t in restored.tasks.values()} == {1: "cpython-3.13-b", 2: None}
    old, new = worker("old", "cpython-3.11-a"), worker("new", "cpython-3.13-b")
    restored.worker_joined(new, Effects())
    restored.worker_joined(old, Effects())
    assert (leased(new), leased(old)) == ([1], [2])  # the by-value task only where it can load


# -- across real interpreters --------------------------------------------------------------------


@pytest.mark.parametrize("version", interpreters.OTHERS)
def test_code_marshalled_by_another_version_is_refused_here(version):
    """Before: a 3.13 function loaded by 3.11 answered ``triple(5) == 5``, or raised
    SystemError, or crashed the process. Now: a clear error before any bytecode is read."""
    python = interpreters.require(version)
    script = textwrap.dedent("""
        import sys
        from minipool.shipping import dumps
        def triple(x): return 3 * x
        sys.stdout.buffer.write(dumps(triple))
    """)
    blob = subprocess.run(
        [python, "-c", script], capture_output=True, check=True, env=interpreters.env(), timeout=60
    ).stdout
    with pytest.raises(IncompatibleInterpreter) as caught:
        shipping.loads(blob)
    assert f"-{version}-" in str(caught.value) and shipping.INTERPRETER in str(caught.value)


def start_worker(python, url):
    return subprocess.Popen(
        [python, "-m", "minipool", "worker", "--connect", url, "--heartbeat", "0.5"],
        env=interpreters.env(MINIPOOL_AUTHKEY=KEY),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process):
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("version", interpreters.OTHERS)
def test_by_value_tasks_run_only_on_workers_of_the_clients_version(version):
    """A pool of this interpreter plus one worker of another version: by-value tasks all run
    here, by-reference tasks run on both."""
    python = interpreters.require(version)
    here = platform.python_version()
    with Pool(1, authkey=KEY, heartbeat=0.5) as pool:
        other = start_worker(python, pool.address)
        try:
            pool.wait_for_workers(2)
            pause = 0.1  # the first worker is busy while the rest are dispatched
            by_value = lambda: (time.sleep(pause), platform.python_version())[1]  # noqa: E731
            assert set(f.result(30) for f in [pool.submit(by_value) for _ in range(6)]) == {here}
            versions = {f.result(30) for f in [pool.submit(jobs.python_after, pause) for _ in range(6)]}
            assert len(versions) == 2 and here in versions
            assert all(v.startswith(version + ".") for v in versions - {here})
        finally:
            stop(other)


CLIENT = textwrap.dedent("""
    import json, operator, platform, sys, time
    from minipool import Pool

    def triple(x):  # defined in __main__: it travels by value
        return 3 * x

    report = {}
    with Pool(address=sys.argv[1], authkey=sys.argv[2]) as pool:
        started = time.monotonic()
        try:
            report["triple"] = pool.submit(triple, 5).result(30)
        except Exception as exc:
            report["error"] = [type(exc).__name__, str(exc)]
        report["seconds"] = time.monotonic() - started
        report["where"] = pool.submit(lambda: platform.python_version()).exception(30) is None and \\
            pool.submit(lambda: platform.python_version()).result(30)
        report["by_reference"] = pool.submit(operator.mul, 3, 5).result(30)
    print(json.dumps(report))
""")


@pytest.mark.slow
@pytest.mark.parametrize("version", interpreters.OTHERS)
def test_a_client_of_another_version_is_told_at_once_then_served_by_its_own(version):
    """A client on another version submits a ``__main__`` function to this interpreter's
    workers: it fails at once, naming both versions and the fix; by-reference calls still run.
    Once a worker of the client's version joins, the same function runs there."""
    python = interpreters.require(version)

    def run_client(url):
        out = subprocess.run(
            [python, "-c", CLIENT, url, KEY],
            capture_output=True,
            text=True,
            env=interpreters.env(),
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    with Pool(2, authkey=KEY, heartbeat=0.5) as pool:
        pool.wait_for_workers()
        report = run_client(pool.address)
        kind, message = report["error"]
        assert kind == "IncompatibleInterpreter" and "triple" not in report
        assert f"-{version}-" in message and shipping.INTERPRETER in message
        assert "module that both" in message
        assert report["seconds"] < 10  # at once, not after a timeout or lost workers
        assert report["by_reference"] == 15
        other = start_worker(python, pool.address)
        try:
            pool.wait_for_workers(3)
            report = run_client(pool.address)
            assert report["triple"] == 15 and report["by_reference"] == 15
            assert report["where"].startswith(version + ".")
        finally:
            stop(other)


@pytest.mark.parametrize("version", interpreters.OTHERS)
def test_the_codecs_benchmark_runs_on_every_supported_interpreter(version):
    """Before: on 3.10 it died with ``compress() takes at most 2 arguments`` (zlib.compress has
    ``wbits`` only from 3.11)."""
    python = interpreters.require(version)
    out = subprocess.run(
        [
            python,
            "-m",
            "minipool.bench",
            "codecs",
            "--size",
            "0.05",
            "--repeat",
            "1",
            "--codecs",
            "none,gzip,deflate",
        ],
        capture_output=True,
        text=True,
        env=interpreters.env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "gzip" in out.stdout
