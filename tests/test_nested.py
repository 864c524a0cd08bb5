"""Tasks that submit tasks: current_pool(), waiting without deadlock, faults, the scheduler's rule."""

import time

import pytest

import nested_jobs as nj
from minipool import Pool, current_pool
from minipool.cluster.scheduler import Effects, Scheduler
from minipool.cluster.state import TaskClientState, WorkerState
from minipool.wire import Format, Kind


@pytest.fixture(scope="module")
def pool2():
    with Pool(2) as p:
        p.wait_for_workers()
        yield p


def test_current_pool_outside_a_task_raises_a_clear_error():
    with pytest.raises(RuntimeError, match="only inside a task"):
        current_pool()


def test_a_recursion_deeper_than_the_slots_completes_on_two_workers(pool2):
    """fib(20) with cutoff 12, every child through the coordinator, has parents six levels deep
    waiting on their children; with two slots it completes only because a waiting parent gives
    its slot back."""
    assert pool2.submit(nj.fib_through, 20, 12).result(60) == nj.fib_serial(20)
    assert pool2.status()["waiting_peak"] > 2  # more parents waited at once than there are slots


def test_a_parallel_quicksort_on_two_workers(pool2):
    data = [(i * 7919) % 503 for i in range(400)]
    assert pool2.submit(nj.quicksort, data, 16).result(60) == sorted(data)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("map", [nj.fib_serial(i) for i in range(12)]),
        ("map_reduce", sum(nj.fib_serial(i) for i in range(12))),
        ("as_completed", sorted(nj.fib_serial(i) for i in range(12))),
        ("map_unordered", sorted(nj.fib_serial(i) for i in range(12))),
    ],
)
def test_map_map_reduce_and_as_completed_work_inside_a_task(pool2, kind, expected):
    assert pool2.submit(nj.squares_via, kind, 12).result(60) == expected


def test_a_failing_child_raises_in_its_parent(pool2):
    assert pool2.submit(nj.child_fails).result(30) == "caught child broke"


def test_current_pool_in_a_task_is_an_executor_with_the_tasks_codec(pool2):
    assert pool2.submit(nj.outside).exception(30) is not None  # an Executor does not pickle back
    assert pool2.submit(lambda: type(current_pool()).__mro__[-2].__name__).result(30) == "Executor"


def test_a_celery_style_task_delays_from_inside_a_task(pool2):
    fib_task = pool2.task(nj.fib_serial)
    assert pool2.submit(nj.delay_inside, fib_task, 10).result(30) == 2 * nj.fib_serial(10)


@pytest.mark.parametrize("options", [{"kind": "thread"}, {"transport": "ws"}])
def test_nesting_on_thread_workers_and_over_another_transport(options):
    """A thread worker's tasks queued behind two waiting parents are taken by the threads that
    stand in for them (on a ThreadPoolExecutor they would wait behind the parents forever)."""
    with Pool(2, **options) as pool:
        for n, cutoff in ((18, 12), (20, 14), (24, 18)):
            assert pool.submit(nj.fib, n, cutoff).result(60) == nj.fib_serial(n)


def test_a_dead_parents_queued_children_are_cancelled_and_the_rerun_submits_its_own(tmp_path):
    """The parent submits 8 children and its worker dies: the children still queued are
    cancelled (nobody would read them), those running finish, and the parent, run again
    elsewhere, submits 8 children of its own and gets all their results."""
    with Pool(2) as pool:
        pool.wait_for_workers()
        assert pool.submit(nj.parent_dies_once, str(tmp_path), 8).result(60) == 8
        deadline = time.monotonic() + 10
        while (status := pool.status())["queued"] or status["running"]:
            assert time.monotonic() < deadline, status  # no child runs on for a dead parent
            time.sleep(0.02)
        runs = (tmp_path / "children").read_text().count("run")
        assert status["cancelled"] >= 1 and 8 <= runs < 16


def test_the_scheduler_leases_a_waiting_tasks_slot_and_cancels_a_lost_workers_children():
    s = Scheduler()
    worker = WorkerState(None, "w", 1, 0, {"incarnation": "abc"})
    s.worker_joined(worker, Effects())
    s.submit("c", 1, b"parent", Format.PICKLE, "none", None, Effects())
    (parent,) = worker.leases
    children = TaskClientState(worker)
    s.client_joined(children)
    for number in (1, 2):
        s.submit("abc", number, b"child", Format.PICKLE, "none", None, Effects())
    assert len(s.queue) == 2  # the parent holds the only slot
    fx = Effects()
    s.waiting(worker, parent, fx)
    assert [task.client_number for _, task, _ in fx.sends] == [1]  # leased in the parent's place
    assert list(worker.waiting) == [parent] and s.counts["waiting_peak"] == 1
    s.resumed(worker, parent)
    assert parent in worker.leases and len(worker.leases) == 2  # briefly over its one slot
    s.waiting(worker, parent, Effects())
    s.worker_lost(worker, Effects())
    s.client_left(children, Effects())
    assert s.tasks[parent].state.value == "queued"  # the parent runs again
    # Both children are cancelled: the one still queued, and the one that was leased to the
    # same worker and requeued with its parent. Nobody will read their outcomes.
    assert s.counts["cancelled"] == 2


def test_the_nested_futures_example_prints_the_tree_and_returns_its_figures():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "nested_futures.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "PYTHONPATH": str(root)},
    )
    assert out.returncode == 0, out.stderr
    assert "a tree of 15 futures" in out.stdout and "level 3:    8 futures" in out.stdout
    assert "peak parents waiting at once:" in out.stdout and "matches the serial tree: yes" in out.stdout
    sys.path.insert(0, str(root / "examples"))  # the workers import it by name, as the tour's
    try:
        import nested_futures

        figures = nested_futures.run(quick=True)
    finally:
        sys.path.remove(str(root / "examples"))
    assert figures["futures_per_level"] == [1, 2, 4, 8] and figures["matches_serial"]
    assert figures["waiting_peak"] >= 3 and figures["speedup"] > 0  # 7 parents wait on 2 slots


def test_children_carry_their_pools_initializer():
    with Pool(2, initializer=nj.set_greeting, initargs=("hello",)) as pool:
        assert pool.submit(nj.greet_from_children, 6).result(30) == ["hello"] * 6


def test_a_child_queued_behind_its_waiting_parents_on_a_thread_worker_runs():
    """Two parents fill a thread worker's two slots; each child is leased to the same worker
    while its parent is busy, so it waits in that worker's queue; then both parents wait. The
    threads standing in for them take the children from the queue."""
    with Pool(2, kind="thread") as pool:
        futures = [pool.submit(nj.parent_after_nap, 0.3) for _ in range(2)]
        assert [f.result(20) for f in futures] == [55, 55]


def test_tasks_of_a_remote_pool_submit_tasks_over_http():
    """A coordinator of its own, two worker processes and a client, all over http://: the
    tasks' children use the worker's connection, whatever its transport."""
    from minipool.cluster.coordinator import Coordinator
    from minipool.cluster.supervisor import Supervisor

    key = b"nested-remote-key-0123456789"
    with Coordinator(key) as coordinator:
        url = coordinator.serve("http://127.0.0.1:0")
        supervisor = Supervisor(url, key, 2, name="remote")
        try:
            with Pool(address=url, authkey=key) as pool:
                pool.wait_for_workers(2)
                assert pool.submit(nj.fib_through, 18, 12).result(60) == nj.fib_serial(18)
                assert pool.status()["waiting_peak"] >= 2
                assert pool.submit(nj.fib, 18, 12).result(60) == nj.fib_serial(18)
        finally:
            supervisor.close()


def _tasks_of_fib(n, cutoff):
    """How many tasks fib(n) with this cutoff runs: the root and two children per call above."""
    return 1 if n <= cutoff else 1 + _tasks_of_fib(n - 1, cutoff) + _tasks_of_fib(n - 2, cutoff)


def test_kept_children_run_in_their_parents_worker_each_once_and_an_idle_worker_steals(tmp_path):
    """Children are kept where they were submitted and mostly run there, as calls; the idle
    worker asks for work (STEAL) and gets some, so both workers run tasks; and every task of
    the tree runs exactly once, wherever it ran."""
    n, cutoff = 26, 18
    with Pool(2) as pool:
        pool.wait_for_workers(2)
        deadline = time.monotonic() + 30
        while True:  # a steal needs the thief idle while work is left: on a loaded machine, retry
            log = tmp_path / f"run{int(time.monotonic() * 1000)}"
            submitted = pool.status()["submitted"]
            assert pool.submit(nj.fib_logged, n, cutoff, str(log)).result(60) == nj.fib_serial(n)
            status = pool.status()
            runs = log.read_text().split()
            pids = set(runs[0::2])
            through_coordinator = status["submitted"] - submitted - 1  # children not kept
            assert len(runs) // 2 == _tasks_of_fib(n, cutoff)  # each task once: none ran twice
            assert through_coordinator < (_tasks_of_fib(n, cutoff) - 1) / 2  # most ran as calls
            if len(pids) == 2 or time.monotonic() > deadline:
                break
        assert len(pids) == 2 and status["steals"] >= 1


def test_a_stolen_child_whose_thief_dies_still_completes(tmp_path):
    """A child stolen by the idle worker kills it: like any task whose worker died, it runs
    again, and its parent, still waiting, gets its value."""
    with Pool(2) as pool:
        pool.wait_for_workers(2)
        assert pool.submit(nj.parent_of_a_dying_thief, str(tmp_path), 12).result(60) == list(range(12))
        assert (tmp_path / "thief died").exists()  # it was stolen, and its thief did die
        assert pool.status()["workers_lost"] >= 1


def test_a_kept_child_cancelled_never_runs(tmp_path):
    """The coordinator never saw it: the worker cancels it, and the promise holds."""
    with Pool(1) as pool:
        path = tmp_path / "ran"
        assert pool.submit(nj.cancel_a_kept_child, str(path)).result(30) == (True, True, False)
        pool.submit(nj.fib_serial, 1).result(30)  # anything still due to run here has run
        assert not path.exists()


def test_the_scheduler_asks_a_busy_lender_for_a_child_when_a_slot_is_idle():
    s = Scheduler()
    busy = WorkerState(None, "busy", 1, 0, {"incarnation": "a"})
    idle = WorkerState(None, "idle", 1, 0, {"incarnation": "b"})
    s.worker_joined(busy, Effects())
    s.submit("c", 1, b"parent", Format.PICKLE, "none", None, Effects())
    (parent,) = busy.leases
    s.worker_joined(idle, Effects())
    assert s.tasks[parent].lend == 0  # its worker had never kept children: nothing said
    fx = Effects()
    s.holding(busy, parent, fx)  # its task keeps children; a slot is idle, nothing is queued
    assert [(peer, m.kind, m.id) for peer, m in fx.replies] == [(busy, Kind.STEAL, parent)]
    assert busy.nests  # from now on its tasks are told of idle slots when they are leased
    fx = Effects()
    s.dispatch(fx)
    assert not fx.replies  # one request at a time
    busy.asked = False  # its SUBMIT came: the stolen child is leased to the idle slot
    s.submit("a", 1, b"stolen child", Format.PICKLE, "none", None, fx := Effects())
    assert [w for w, _, _ in fx.sends] == [idle] and not fx.replies  # no slot idle now
    s.waiting(busy, parent, fx := Effects())
    assert not fx.replies  # a waiting lender has run what it kept: not asked
    s.complete(idle, [(number, _outcome()) for number in list(idle.leases)], fx := Effects())
    assert not fx.replies  # the idle slot's worker has only a waiting lender
    s.resumed(busy, parent)
    s.complete(busy, [(parent, _outcome())], fx := Effects())
    assert not s.lenders and not busy.lending  # its task ended: nothing to lend
    assert s.counts["steals"] == 1
    s.submit("c", 2, b"next parent", Format.PICKLE, "none", None, fx := Effects())
    (leased,) = [task for w, task, _ in fx.sends]
    assert leased.worker is busy and leased.lend == 1  # the TASK says: one slot is idle


def _outcome():
    from minipool.cluster.state import Outcome

    return Outcome(Kind.RESULT, Format.PICKLE, "none", b"")


def test_kept_children_on_a_thread_worker_are_stolen_by_its_idle_slots():
    """Four sleeping children of a task on a four-slot thread worker: kept, they would run one
    after the other in their parent; the worker's idle slots steal them, and they overlap."""
    with Pool(4, kind="thread") as pool:
        pool.wait_for_workers()
        assert pool.submit(nj.sleepy_children, 4, 0.3).result(30) < 0.9  # 1.2 s one by one
        assert pool.status()["steals"] >= 1


def test_the_kept_children_table_hands_each_child_out_once():
    from minipool.cluster.stealing import KeptChildren

    class Owner:
        touched = 0.0
        running_kept = 0

    a, b = Owner(), Owner()
    table = KeptChildren()
    for number, owner in ((1, a), (2, a), (3, b), (4, a)):
        assert table.keep(number, owner, f"call {number}")
    assert table.steal().number == 1  # the oldest: in a recursion, the biggest subtree
    assert table.take(1) is None and (two := table.take(2)).number == 2  # its parent runs it
    assert (four := table.newest()).number == 4  # a parent helping while it waits: the newest
    assert a.running_kept == 2
    table.ran(two)
    table.ran(four)
    assert a.running_kept == 0
    assert [k.number for k in table.release(owner=b)] == [3]  # b ended: submitted
    assert table.steal() is None and table.demand == 1  # nothing kept: the request stands
    assert not table.keep(5, a, "call 5") and table.demand == 0  # ... and takes the next child
    assert table.keep(6, a, "call 6") and table.keep(7, b, "call 7")
    b.touched = a.touched + 1.0
    a.running_kept = 1  # a runs a child it kept, however long: its others do not age meanwhile
    assert table.release(idle_since=a.touched + 0.5) == []
    a.running_kept = 0
    assert [k.number for k in table.release(idle_since=a.touched + 0.5)] == [6]  # a idle too long
    assert table.release(idle_since=a.touched + 0.5) == []
    assert table.drop(7).number == 7 and len(table) == 0  # cancelled
    assert table.counts == {"kept": 6, "inline": 2, "stolen": 2, "submitted": 2}


@pytest.mark.parametrize(
    ("how", "keeps"),
    [("submit", True), ("delay", False), ("submit_with", False), ("keep_children=False", False)],
)
def test_what_a_task_keeps(pool2, how, keeps):
    """A plain submit is kept (but for one given at once to the idle worker, when the task was
    told of it); a .delay() (an AsyncResult waits on it through a future of its own), options
    for the coordinator, and keep_children=False go through the coordinator."""
    kept, total = pool2.submit(nj.kept_after, how).result(30)
    assert total == 3 * 55 and (kept >= 2 if keeps else kept == 0)


def test_a_child_with_constant_arguments_is_kept_as_the_call_and_others_as_a_copy():
    """On one worker nothing is stolen: the child of constant arguments runs on its parent's
    very object (no pickling), the child of a list on the list as it was at submit."""
    with Pool(1) as pool:
        assert pool.submit(nj.kept_as_calls).result(30) == (True, [1, 2, 3])


def test_which_arguments_count_as_unchanging():
    from minipool.nested import KEEP_AS_CALL, _unchanging

    assert _unchanging((1, "ab", b"x", None, 2.5, 1j, True, (1, (2,)), frozenset({3}))) == KEEP_AS_CALL - 67
    assert _unchanging(([1],)) == _unchanging(((1, [2]),)) == _unchanging((bytearray(),)) == -1
    deep: tuple = (1,)
    for _ in range(10_000):
        deep = (deep,)
    assert _unchanging((deep,)) == -1  # copied like any argument, without a RecursionError
    assert _unchanging(("x" * KEEP_AS_CALL,)) == 0 and _unchanging(("x" * KEEP_AS_CALL, 1)) == -1


def test_a_parent_running_a_long_child_it_kept_keeps_its_other_children():
    """A kept child that runs longer than PUBLISH_AFTER in its parent's thread is the parent
    working through its children, not leaving them: its sibling stays kept and runs there too
    (on one worker nothing steals it), instead of going through the coordinator."""
    from minipool.cluster.stealing import PUBLISH_AFTER

    with Pool(1) as pool:
        pool.submit(nj.long_then_quick, 0.0).result(30)  # each function packed once
        before = pool.status()["submitted"]
        assert pool.submit(nj.long_then_quick, 3 * PUBLISH_AFTER).result(30) == "long, quick"
        assert pool.status()["submitted"] - before == 1  # the parent alone


def test_a_worker_whose_tasks_keep_children_switches_threads_often_then_as_before():
    """While a task keeps children, the GIL is handed over every 20 us (the reader of a STEAL
    must not wait 5 ms for it); once no task keeps any, the interval is the process's again."""
    from minipool.cluster.nesting import STEAL_SWITCH_INTERVAL

    with Pool(1) as pool:
        before = pool.submit(nj.switch_interval).result(30)
        while_kept, value = pool.submit(nj.switch_interval_while_keeping).result(30)
        assert while_kept == pytest.approx(STEAL_SWITCH_INTERVAL) and value == 55
        assert pool.submit(nj.switch_interval).result(30) == before > STEAL_SWITCH_INTERVAL


def test_a_child_a_steal_request_waits_for_is_sent_at_once():
    """A STEAL that found nothing kept stands; the next child submitted goes to the coordinator
    without waiting for a batch (flushed): an idle slot waits for it."""
    from types import SimpleNamespace

    from minipool.cluster.nesting import RunningTask, entered, left
    from minipool.nested import TaskClient

    sent = []
    worker = SimpleNamespace(incarnation="w1", max_message=1 << 20)
    nest = SimpleNamespace(worker=worker, send=lambda data, flush=True: sent.append(flush) or True)
    client = TaskClient(nest)
    client.children.demand = 1
    task = RunningTask(nest, 7, "none")
    entered(task)
    try:
        client.submit(b"call")
    finally:
        left(task)
    assert sent == [True] and client.children.demand == 0 and not len(client.children)


def test_a_child_kept_as_a_call_too_large_to_leave_fails_instead_of_being_sent():
    """Kept as the call, a child is pickled when it leaves: if the coordinator would refuse its
    size, its future fails as a submit's would, and nothing is sent."""
    from types import SimpleNamespace

    from minipool.cluster.stealing import Kept
    from minipool.errors import MessageTooLarge
    from minipool.nested import TaskClient, TaskPool

    sent = []
    worker = SimpleNamespace(incarnation="w1", max_message=512)
    client = TaskClient(
        SimpleNamespace(worker=worker, send=lambda data, flush=True: sent.append(data) or True)
    )
    pool = TaskPool(client, "none")
    future = client.future_type(client, 5)
    client._pending[5] = future
    client._submit([Kept(5, None, call=(nj.fib_serial, ("x" * 2000,), {}, pool))])
    assert sent == [] and isinstance(future.exception(0), MessageTooLarge)
    client._pending[6] = future6 = client.future_type(client, 6)
    client._submit([Kept(6, None, call=(nj.fib_serial, (20,), {}, pool))])
    assert len(sent) == 1 and not future6.done()  # a small one leaves as a SUBMIT


def test_bench_nested_prints_rounds_of_both_ways(tmp_path):
    import json
    import subprocess
    import sys

    path = tmp_path / "nested.json"
    args = ["--fib", "17,13", "--rounds", "1", "--pairs", "2", "--json", str(path)]
    done = subprocess.run(
        [sys.executable, "-m", "minipool.bench", "nested", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("| round"))
    cells = [cell.strip() for cell in header.strip("|").split("|")]  # widths follow the figures
    assert cells[:6] == ["round", "load", "serial (s)", "kept (s)", "workers' CPU (s)", "kept ratio"]
    (only,) = json.loads(path.read_text())["results"]["rounds"]
    assert len(only["kept"]["ratios"]) == len(only["through"]["ratios"]) == 2
    assert only["through"]["via_coordinator"] == 14  # every child of fib(17, 13)


def test_a_revoked_task_that_waits_on_its_children_leaves_its_worker():
    s = Scheduler()
    worker = WorkerState(None, "w", 1, 0, {})
    s.worker_joined(worker, Effects())
    s.submit("c", 1, b"parent", Format.PICKLE, "none", None, Effects())
    (number,) = list(worker.leases)
    s.waiting(worker, number, Effects())  # it waits on its children: its slot is given back
    assert s.revoke(("c", 1), "revoked", Effects()) is not None
    assert worker.held() == [] and not worker.waiting


def test_bench_handoff_shows_the_switch_interval_bounds_an_answer_from_a_computing_worker(tmp_path):
    import json
    import subprocess
    import sys

    path = tmp_path / "handoff.json"
    done = subprocess.run(
        [sys.executable, "-m", "minipool.bench", "handoff", "--echoes", "20", "--json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(path.read_text())["results"]
    assert list(rows) == [
        "idle (no computing thread)",
        "computing, interval 5000 µs",
        "computing, interval 200 µs",
        "computing, interval 20 µs",
    ]
    # Python's default makes the reader wait for about one interval; minipool's, a small part.
    assert rows["computing, interval 5000 µs"]["median_us"] > 2000
    assert (
        rows["computing, interval 20 µs"]["median_us"] < rows["computing, interval 5000 µs"]["median_us"] / 4
    )
