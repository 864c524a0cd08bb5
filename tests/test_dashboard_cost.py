"""What watching costs and what it tells: the history folds tasks without making an object per
task, a task in a worker's prefetch shows as reserved until it starts, and the coordinator
counts its queued tasks without a walk (with the same numbers as the walk)."""

from __future__ import annotations

import collections
import gc
import json
import pickle
import random
import time
from pathlib import Path
from typing import Any

from minipool import Pool
from minipool.cluster.effects import Effects
from minipool.cluster.scheduler import Scheduler
from minipool.cluster.state import ClientState, Outcome, Task, TaskState, WorkerState
from minipool.dashboard.history import History
from minipool.dashboard.monitor import line_first
from minipool.wire import Format, Kind
from test_dashboard import wait_for


def wait_for_file(path: str) -> str:
    """A task that runs until ``path`` exists."""
    while not Path(path).exists():
        time.sleep(0.01)
    return path


def leased_and_done(tasks: int, per_effect: int) -> tuple[list[Effects], list[Task]]:
    worker, client = WorkerState(None, "w", 1, None, {}), ClientState(None, "c")
    body = pickle.dumps((print, (1,), {}))
    effects, made = [], []
    for first in range(0, tasks, per_effect):
        sends, deliveries = Effects(), Effects()
        for n in range(first, first + per_effect):
            task = Task(n, "c", n, body, Format.PICKLE, "none")
            task.leased_at, task.worker = time.monotonic(), worker
            made.append(task)
            sends.send(worker, task, True)
            deliveries.deliver(client, n, Outcome(Kind.RESULT, Format.PICKLE, "none", b"\x80\x05K\x01."))
        effects += [sends, deliveries]
    return effects, made


def test_observing_makes_no_object_the_collector_tracks() -> None:
    # An object made per task (a queued tuple, a record) would make the garbage collector run
    # more often on the coordinator's threads: the cost that slowed dispatch.
    history = History()
    effects, _ = leased_and_done(3000, 4)
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        before = gc.get_count()[0]
        for fx in effects:
            history.observe(fx)
        made = gc.get_count()[0] - before
    finally:
        if enabled:
            gc.enable()
    assert made < 30, f"{made} tracked objects for 3000 tasks"
    assert history.collect() == len(effects)
    assert sum(history.runtime_counts) == 3000 and history.bytes[("local", "out")] > 0
    records = list(history.records())
    assert len(records) == 2000 and {r.state for r in records} == {"done"}  # the ring's bound


def test_outcomes_are_forgotten_with_their_leases() -> None:
    history = History(tasks=50)
    for _ in range(5):
        effects, _ = leased_and_done(100, 10)
        for fx in effects:
            history.observe(fx)
        history.collect()
    assert len(history.leases) == 50 and len(history.finished) <= 150
    assert len(history.outcomes) == len(history.finished)
    assert len(list(history.records())) == 50  # every task in the ring still has its outcome
    assert all(r.state == "done" for r in history.records())


def test_a_prefetched_task_is_reserved_until_its_worker_starts_it(tmp_path: Path) -> None:
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    with Pool(1, dashboard="127.0.0.1:0") as pool:
        dashboard = pool.dashboard

        def state(future_id: str) -> dict[str, Any]:
            status, record = dashboard.call("GET", f"/api/tasks/{future_id}")
            assert status == 200
            return record

        pool.submit(pow, 2, 2).result(20)  # the worker is up
        try:
            reserved_then_running(pool, dashboard, state, first, second)
        finally:  # the tasks end, whatever happened, so that the pool can close
            Path(first).touch()
            Path(second).touch()


def reserved_then_running(pool: Any, dashboard: Any, state: Any, first: str, second: str) -> None:
    """A one-slot worker runs ``first``'s task; ``second``'s waits in its prefetch."""
    blocker = pool.submit(wait_for_file, first)
    behind = pool.submit(wait_for_file, second)  # leased to the same busy slot: prefetched
    running = wait_for(lambda: dashboard.call("GET", "/api/tasks?state=running")[1], 20)
    reserved = wait_for(lambda: dashboard.call("GET", "/api/tasks?state=reserved")[1], 20)
    assert all(t["name"].endswith("wait_for_file") for t in running + reserved)
    blocker_id, behind_id = running[0]["id"], reserved[0]["id"]
    assert reserved[0]["started"] is None and reserved[0]["received"] is not None
    overview = dashboard.call("GET", "/api/overview")[1]
    assert overview["reserved"] == 1 and overview["running"] == 1
    assert "minipool_tasks_reserved 1" in dashboard.metrics()
    Path(first).touch()
    assert blocker.result(20) == first
    wait_for(lambda: state(behind_id)["state"] == "running", 20)
    began, before = state(behind_id), state(blocker_id)
    assert before["state"] == "done" and began["started"] is not None
    # Its start is the moment the result before it came back: the worker was then free.
    assert abs(began["started"] - before["finished"]) < 0.01
    assert dashboard.call("GET", "/api/overview")[1]["reserved"] == 0
    Path(second).touch()
    assert behind.result(20) == second
    wait_for(lambda: state(behind_id)["state"] == "done", 20)


def walked(scheduler: Scheduler, state: TaskState) -> int:
    return sum(1 for t in scheduler.tasks.values() if t.state is state)


def test_the_queued_count_is_kept_by_the_state_changes() -> None:
    """Random submissions, completions, losses, revocations, cancellations, secessions and
    timeouts: the O(1) counts equal a walk over every task after each step."""
    rng = random.Random(14)
    scheduler = Scheduler(max_losses=2)
    clients = [ClientState(None, f"c{i}") for i in range(3)]
    for client in clients:
        scheduler.client_joined(client)
    workers: list[WorkerState] = []
    numbers = [0, 0, 0]
    for step in range(3000):
        fx = Effects()
        action = rng.random()
        if action < 0.3 or not workers:
            if len(workers) < 4 and rng.random() < 0.2:
                worker = WorkerState(None, f"w{step}", rng.choice([1, 2]), rng.choice([None, 0, 3]), {})
                workers.append(worker)
                scheduler.worker_joined(worker, fx)
            else:
                c = rng.randrange(3)
                numbers[c] += 1
                headers = {"timeout": 0.0} if rng.random() < 0.05 else None
                scheduler.submit(f"c{c}", numbers[c], b"x", Format.PICKLE, "none", headers, fx)
        elif action < 0.6:
            worker = rng.choice(workers)
            done = [(n, Outcome(Kind.RESULT, Format.PICKLE, "none", b"r")) for n in list(worker.leases)[:2]]
            scheduler.complete(worker, done, fx)
        elif action < 0.65:
            worker = workers.pop(rng.randrange(len(workers)))
            scheduler.worker_lost(worker, fx)
        elif action < 0.75 and scheduler.by_key:
            key = rng.choice(list(scheduler.by_key))
            if rng.random() < 0.5:
                scheduler.revoke(key, "revoked", fx)
            else:
                scheduler.cancel(key[0], key[1], fx)
        elif action < 0.85:
            worker = rng.choice(workers)
            if worker.leases and rng.random() < 0.5:
                scheduler.waiting(worker, next(iter(worker.leases)), fx)
            elif worker.waiting:
                scheduler.resumed(worker, next(iter(worker.waiting)))
        elif action < 0.9:
            scheduler.expire_timeouts(time.monotonic() + 1.0, 0.0, fx)
        else:
            scheduler.started(f"c{rng.randrange(3)}", list(range(1, 5)), True, fx)
        assert scheduler.queued == walked(scheduler, TaskState.QUEUED), step
        assert scheduler.running == walked(scheduler, TaskState.RUNNING), step
    assert scheduler.counts["requeued"] and scheduler.counts["cancelled"] and scheduler.counts["timed_out"]


def test_the_queue_is_read_from_the_front_of_its_line() -> None:
    from minipool.cluster.queueing import TaskQueue

    queue = TaskQueue()
    rng = random.Random(2)
    for n in range(500):
        task = Task(n, "c", n, b"", Format.PICKLE, "none", rng.randrange(3), None, 0.0)
        queue.push(task, queue.queue)
    expected = [entry[2] for entry in sorted(queue.queue)][:40]
    assert line_first(queue.queue, 40) == expected
    assert line_first(collections.deque(), 5) == [] and len(line_first(queue.queue, 10**6)) == 500


def test_a_large_task_leased_twice_is_one_record_with_its_prefix() -> None:
    history = History()
    worker, client = WorkerState(None, "w", 1, None, {}), ClientState(None, "c")
    task = Task(1, "c", 1, pickle.dumps(("x" * 10_000,)), Format.PICKLE, "none")
    for _ in range(2):  # its first worker lost, leased again
        fx = Effects()
        task.leased_at, task.worker = time.monotonic(), worker
        fx.send(worker, task, True)
        history.observe(fx)
    fx = Effects()
    fx.deliver(client, 1, Outcome(Kind.RESULT, Format.PICKLE, "none", pickle.dumps("y" * 10_000)))
    history.observe(fx)
    history.collect()
    [record] = history.records()
    assert record.attempts == 2 and record.state == "done" and len(record.task.body) == 4096
    detail = record.to_json(detail=True)
    assert detail["result"].startswith("'yyy") and len(detail["result"]) <= 200
    assert len(history.outcomes[record.task].body) < 1000  # described, the large body let go


def test_the_feed_sends_what_changed_and_reads_no_task_while_idle() -> None:
    from minipool.dashboard.feed import Feed

    with Pool(1, dashboard="127.0.0.1:0") as pool:
        pool.submit(pow, 2, 3).result(20)
        dashboard = pool.dashboard
        asked: list[str] = []

        def call(method: str, target: str, body: bytes = b"") -> Any:
            asked.append(target)
            return dashboard.call(method, target, body)

        feed = Feed(call)
        first = json.loads(feed.update() or "")
        assert {"overview", "workers", "tasks", "queued", "topics", "pipesets", "journal"} <= first.keys()
        assert [t["name"] for t in first["tasks"]] == ["builtins.pow"]

        def settled() -> bool:  # (the first update's look may add a worker's event)
            asked.clear()
            feed.update()
            return not [target for target in asked if target.startswith("/api/tasks")]

        wait_for(settled, 10)
        looks: list[int] = []
        monitor_look = dashboard.monitor.look
        dashboard.monitor.look = lambda: looks.append(1) or monitor_look()  # type: ignore[method-assign]
        # Idle: nothing but the chart's new samples (and the workers' heartbeat times) is sent,
        # the ring is not read and no look is forced.
        asked.clear()
        message = json.loads(feed.update() or '{"type": "update"}')
        assert not {"tasks", "queued", "topics", "pipesets", "journal", "events"} & message.keys()
        assert not [target for target in asked if target.startswith("/api/tasks")] and not looks
        pool.submit(divmod, 7, 2).result(20)
        message = json.loads(wait_for(feed.update, 10))
        assert [t["name"] for t in message["tasks"]][:2] == ["builtins.divmod", "builtins.pow"]
        assert "topics" not in message and "overview" in message
