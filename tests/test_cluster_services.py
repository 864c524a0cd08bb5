"""Cluster services on real processes: registry, balancing, autoscaling, journal, schedules,
timeouts, fetching results by id."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import jobs
from minipool import Pool
from minipool.cluster.coordinator import Coordinator
from minipool.cluster.worker import Worker

KEY = b"services-test-key"


def eventually(predicate, timeout=15.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval)


@pytest.fixture
def coordinator():
    with Coordinator(KEY, heartbeat=0.2) as coord:
        yield coord, coord.serve("tcp://127.0.0.1:0")


def start_worker(url, **kw):
    worker = Worker(url, KEY, heartbeat=0.2, reconnect=False, **kw)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def test_workers_register_with_their_services_and_are_found_by_name(coordinator):
    coord, url = coordinator
    gpu, t1 = start_worker(url, kind="thread", slots=2, services=("gpu", "default"), name="big")
    cpu, t2 = start_worker(url, kind="thread", slots=1, name="small")
    with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:
        eventually(lambda: len(client.status()["registry"]) == 2)
        found = client.lookup("gpu")
        assert [e["meta"]["role"] for e in found] == ["worker"] and found[0]["slots"] == 2
        assert len(client.lookup("default")) == 2
        assert client.lookup("nothing") == []
    for w, t in ((gpu, t1), (cpu, t2)):
        w.stop()
        t.join(5)


def test_a_registered_service_expires_unless_renewed(coordinator):
    coord, url = coordinator
    with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:
        client.register("stage-1", address="tcp://10.0.0.9:9000", services=["tokenizer"], ttl=0.4)
        assert [e["key"] for e in client.lookup("tokenizer")] == ["stage-1"]
        eventually(lambda: client.lookup("tokenizer") == [], timeout=5)


def test_a_deregistered_service_is_gone_at_once(coordinator):
    coord, url = coordinator
    with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:
        client.register("stage-1", address="tcp://10.0.0.9:9000", services=["tokenizer"], ttl=60)
        client.register("stage-2", address="tcp://10.0.0.9:9001", services=["tokenizer"], ttl=60)
        client.deregister("stage-1")
        # The lookup is answered after the deregistration: one connection's messages are
        # handled in order.
        assert [e["key"] for e in client.lookup("tokenizer")] == ["stage-2"]
        client.deregister("never-registered")  # nothing to remove: nothing happens
        assert [e["key"] for e in client.lookup("tokenizer")] == ["stage-2"]


def test_a_frozen_worker_expires_from_the_registry():
    with Pool(2, heartbeat=0.2) as pool:
        pool.wait_for_workers()
        frozen = pool.status()["local_processes"][0]
        os.kill(frozen, signal.SIGSTOP)
        try:
            futures = [pool.submit(jobs.pid) for _ in range(8)]
            assert frozen not in [f.result(30) for f in futures]
            eventually(lambda: all(e["meta"].get("pid") != frozen for e in pool.status()["registry"]))
        finally:
            os.kill(frozen, signal.SIGKILL)


@pytest.mark.parametrize("balance", ["least-loaded", "round-robin", "random", "latency"])
def test_every_balancing_policy_gives_correct_results(balance):
    with Pool(2, balance=balance) as pool:
        assert pool.status()["balance"] == balance
        assert list(pool.map(jobs.square, range(200), chunksize=3)) == [x * x for x in range(200)]
        assert sorted(pool.map_unordered(jobs.square, range(20))) == [x * x for x in range(20)]


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="latency"):
        Coordinator(KEY, balance="fastest-please")


def test_the_autoscaler_grows_under_load_and_shrinks_when_idle():
    timings = {"scale_up_after": 0.1, "idle_timeout": 0.6, "cooldown": 0.2}
    with Pool(min_workers=1, max_workers=3, autoscale=timings, heartbeat=0.2) as pool:
        eventually(lambda: len(pool.status()["workers"]) == 1)
        futures = [pool.submit(jobs.sleep_then, 0.3) for _ in range(24)]
        eventually(lambda: len(pool.status()["workers"]) == 3)
        [f.result(60) for f in futures]
        eventually(lambda: len(pool.status()["workers"]) == 1, timeout=20)
        events = pool.status()["autoscale"]["events"]
        assert any(e.get("add") for e in events) and any(e.get("remove") for e in events)


def test_a_periodic_task_runs_on_its_interval_and_stops_when_cancelled():
    with Pool(1) as pool:
        pool.wait_for_workers()
        schedule = pool.schedule(jobs.add, 1, b=1, every=0.1)
        eventually(lambda: len(schedule.results) >= 4, timeout=10)
        schedule.cancel()
        time.sleep(0.3)
        runs = schedule.runs
        time.sleep(0.4)
        assert schedule.runs == runs and set(schedule.results) == {2}


def test_a_hanging_task_times_out_and_its_slot_is_recovered():
    with Pool(1) as pool:
        pool.wait_for_workers()
        hang = pool.task(timeout=0.3)(jobs.sleep_then)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            hang.delay(60).get(timeout=30)
        assert time.monotonic() - start < 10
        assert pool.submit(jobs.square, 5).result(10) == 25  # the same single worker is free
        assert pool.status()["restarts"] == 0


def test_a_thread_worker_task_times_out_at_the_coordinator(coordinator):
    coord, url = coordinator
    worker, thread = start_worker(url, kind="thread", slots=2)
    with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:
        with pytest.raises(TimeoutError):
            client.submit_with(jobs.sleep_then, (2,), timeout=0.2).result(10)
        assert client.submit(jobs.square, 3).result(10) == 9
    worker.stop()
    thread.join(5)


def test_results_can_be_fetched_later_by_task_id(coordinator):
    coord, url = coordinator
    worker, thread = start_worker(url, kind="thread", slots=1)
    with Pool(address=url, authkey=KEY) as first:
        task_id = first.submit(jobs.square, 11).task_id
        slow_id = first.submit(jobs.sleep_then, 0.3, "slow").task_id
        # The SUBMITs travel on the first client's connection, the FETCHes on the second's:
        # only once the coordinator has accepted both is asking for them well defined.
        eventually(lambda: coord.status()["submitted"] >= 2)
        with Pool(address=url, authkey=KEY) as second:  # another client, by id alone
            assert second.result(task_id, timeout=10) == 121
            assert second.result(slow_id, timeout=10) == "slow"  # waits for it
            with pytest.raises(LookupError):
                second.result("0123456789abcdef-99", timeout=10)
    worker.stop()
    thread.join(5)


# -- the durable coordinator ----------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args):
    env = {**os.environ, "MINIPOOL_AUTHKEY": KEY.decode(), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "minipool", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_coordinator_killed_mid_run_restarts_from_its_journal(tmp_path):
    url = f"tcp://127.0.0.1:{free_port()}"
    journal = str(tmp_path / "journal")
    coordinator = cli(
        "coordinator", "--bind", url, "--journal", journal, "--fsync", "always", "--heartbeat", "0.2"
    )
    assert "listening" in coordinator.stdout.readline() + coordinator.stdout.readline()
    workers = [cli("worker", "--connect", url, "--heartbeat", "0.2") for _ in range(2)]
    try:
        with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:
            client.wait_for_workers(2)
            futures = [client.submit(jobs.sleep_then, 0.05, i) for i in range(40)]
            time.sleep(0.4)
            coordinator.send_signal(signal.SIGKILL)
            coordinator.wait(10)
            coordinator = cli("coordinator", "--bind", url, "--journal", journal, "--heartbeat", "0.2")
            first = coordinator.stdout.readline()
            assert "restored" in first or "listening" in first
            assert [f.result(60) for f in futures] == list(range(40))
            status = client.status()
            assert status["journal"]["directory"] == journal
    finally:
        for proc in [*workers, coordinator]:
            proc.terminate()
        for proc in [*workers, coordinator]:
            proc.wait(10)


def test_a_corrupt_journal_tail_is_reported_and_the_valid_prefix_kept(tmp_path):
    from minipool.wire import Format, Kind, Message

    journal = tmp_path / "journal"
    coord = Coordinator(KEY, journal=str(journal), fsync="always")
    from minipool.cluster.state import LocalClientState

    client = LocalClientState("c1", lambda message: None)
    coord.attach_local(client)
    for i in range(1, 6):
        coord.submit_message(client, Message(Kind.SUBMIT, i, b"body%d" % i, fmt=Format.PICKLE))
    coord.close()
    log = sorted(journal.glob("*.log"))[-1]
    data = log.read_bytes()
    log.write_bytes(data[:-3])  # a torn write: the last record lost its last bytes
    again = Coordinator(KEY, journal=str(journal))
    try:
        report = again.status()
        assert report["journal"]["damage"]
        assert report["queued"] == 4  # the valid prefix, nothing invented
    finally:
        again.close()


def test_a_big_state_is_not_snapshotted_more_often_than_its_log_grows(tmp_path):
    import threading

    from minipool.cluster.scheduler import Effects, Scheduler
    from minipool.cluster.task_journal import TaskJournal
    from minipool.wire import Format

    durable = TaskJournal(str(tmp_path), fsync="no", snapshot_every=10)
    scheduler = Scheduler(journaling=True)
    lock = threading.Lock()
    snapshots = []
    real = durable._journal.write_snapshot
    durable._journal.write_snapshot = lambda generation, blob: (
        snapshots.append(len(blob)),
        real(generation, blob),
    )

    def submit(first, count):
        for i in range(first, first + count):
            fx = Effects()
            scheduler.submit("c", i, b"body", Format.PICKLE, "none", None, fx)
            durable.write(fx.records)
            durable.maybe_snapshot(lock, scheduler)

    submit(0, 100)  # no worker: all 100 stay queued, so the state grows with the log
    # Each snapshot waited for as many new records as the one before held: 10, 20, 40, 80.
    assert [size // snapshots[0] for size in snapshots] == [1, 2, 4, 8]
    due = durable._last_snapshot - durable._since_snapshot  # 80 - 20: more than snapshot_every
    submit(100, due - 1)
    assert len(snapshots) == 4
    submit(1000, 1)
    assert len(snapshots) == 5
    durable.close()


def test_a_task_snapshot_is_written_without_the_coordinators_lock_and_loses_nothing(tmp_path):
    from minipool.cluster.scheduler import Effects, Scheduler
    from minipool.cluster.task_journal import TaskJournal
    from minipool.wire import Format

    durable = TaskJournal(str(tmp_path), fsync="no", snapshot_every=10)
    scheduler = Scheduler(journaling=True)
    lock = threading.Lock()
    writing, release = threading.Event(), threading.Event()
    real = durable._journal.write_snapshot

    def slow_write(generation, blob):
        writing.set()
        assert release.wait(10)
        real(generation, blob)

    durable._journal.write_snapshot = slow_write

    def submit(numbers):
        for i in numbers:
            fx = Effects()
            with lock:
                scheduler.submit("c", i, b"body", Format.PICKLE, "none", None, fx)
                durable.write(fx.records)

    submit(range(20))
    backup = threading.Thread(target=durable.maybe_snapshot, args=(lock, scheduler))
    backup.start()
    assert writing.wait(10)
    # The snapshot is being written: traffic goes on under the lock meanwhile.
    assert lock.acquire(timeout=2), "the snapshot write held the coordinator's lock"
    lock.release()
    submit(range(20, 30))
    release.set()
    backup.join(10)
    durable.close()
    restored = Scheduler()
    again = TaskJournal(str(tmp_path), fsync="no")
    again.restore(restored)
    again.close()
    assert sorted(t.client_number for t in restored.tasks.values()) == list(range(30))


def test_what_autoscaling_reads_counts_the_queue_without_walking_it():
    from minipool.cluster.scheduler import Effects
    from minipool.cluster.state import TaskState
    from minipool.wire import Format

    with Coordinator(b"k" * 32) as coordinator:
        scheduler = coordinator.scheduler
        with coordinator.lock:
            for i in range(50):
                headers = (
                    {"priority": i % 3, "interpreter": "cpython-x"} if i % 10 == 0 else {"priority": i % 3}
                )
                scheduler.submit("c", i, b"body", Format.PICKLE, "none", headers, Effects())
            for number in (1, 2):  # two cancelled: their entries stay in line, skipped
                task = scheduler.by_key[("c", number)]
                task.state = TaskState.CANCELLED
                scheduler.tasks.pop(task.number)
                scheduler.by_key.pop(("c", number))
        scheduler.by_key[("c", 0)].submitted_at -= 5.0  # a pinned task at the head of its own line
        count, oldest, workers = coordinator.load()
        walked = [t for t in scheduler.tasks.values() if t.state is TaskState.QUEUED]
        assert count == len(walked) == 48 and workers == []
        assert oldest >= 5.0


def test_the_result_store_is_bounded_by_bytes_as_well_as_by_count(monkeypatch):
    from minipool.cluster import scheduler as scheduling
    from minipool.cluster.scheduler import Effects, Outcome, Scheduler
    from minipool.cluster.state import WorkerState
    from minipool.wire import Format, Kind

    monkeypatch.setattr(scheduling, "RESULT_STORE_BYTES", 10_000)
    s = Scheduler()
    worker = WorkerState(None, "w", 1, 0, {})
    s.worker_joined(worker, Effects())
    for i in range(1, 21):  # each 1 KB outcome: only the newest ten fit in 10,000 bytes
        s.submit("c", i, b"call", Format.PICKLE, "none", None, Effects())
        outcome = Outcome(Kind.RESULT, Format.PICKLE, "none", b"r" * 1000)
        s.complete(worker, [(next(iter(worker.leases)), outcome)], Effects())
    assert sorted(number for _, number in s.results) == list(range(11, 21))
    assert s.results_bytes == 10_000
    s.store(("c", 99), Outcome(Kind.RESULT, Format.PICKLE, "none", b"x" * 50_000))  # too big alone
    assert list(s.results) == [("c", 99)] and s.results_bytes == 50_000


def test_a_worker_drops_a_coordinator_that_breaks_the_protocol():
    """A worker expects TASK, HEARTBEAT and ERROR; anything else from the coordinator (a
    RESULT, say) is a protocol error, and it drops the connection at once -- it does not wait
    for the heartbeats to fall silent."""
    from minipool.cluster.session import server_handshake
    from minipool.errors import ConnectionClosed
    from minipool.transports import listen
    from minipool.wire import Kind, Message, encode

    with listen("tcp://127.0.0.1:0") as listener:
        worker = Worker(listener.url, KEY, kind="thread", heartbeat=5.0, reconnect=False)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        conn = listener.accept()
        hello = server_handshake(conn, KEY, 10)
        assert hello["role"] == "worker"
        started = time.monotonic()
        conn.send(encode(Message(Kind.RESULT, 1, b"not for a worker")))
        with pytest.raises(ConnectionClosed):
            while True:
                conn.recv(10)  # heartbeats, until the worker hangs up
        assert time.monotonic() - started < 5  # not the 15 s of heartbeat silence
        conn.close()
        thread.join(10)
        assert not thread.is_alive()


def _scheduler_with_one_task(max_losses=3):
    from minipool.cluster.scheduler import Effects, Scheduler
    from minipool.wire import Format

    scheduler = Scheduler(max_losses=max_losses)
    scheduler.submit("client", 1, b"x", Format.PICKLE, "none", None, Effects())
    (task,) = scheduler.tasks.values()
    return scheduler, task


def _join(scheduler, name, incarnation, holding=()):
    from minipool.cluster.scheduler import Effects
    from minipool.cluster.state import WorkerState

    worker = WorkerState(None, name, 1, 0, {"incarnation": incarnation})
    worker.holding = tuple(holding)
    fx = Effects()
    scheduler.worker_joined(worker, fx)
    return worker, fx


def _lose(scheduler, worker, blame=None):
    from minipool.cluster.scheduler import Effects

    worker.blame = blame
    scheduler.worker_lost(worker, Effects())


def test_a_cut_from_which_the_same_worker_process_returns_is_not_a_loss():
    scheduler, task = _scheduler_with_one_task()
    first, _ = _join(scheduler, "w", "process-a")
    assert task.worker is first
    _lose(scheduler, first)  # the connection went: a cut, or a crash
    assert task.losses == 1  # for now: it may have been a crash
    _join(scheduler, "w", "process-a")  # the same process connects again: it was a cut
    assert task.losses == 0 and scheduler.counts["losses_forgiven"] == 1
    # A restarted process (a crash) is a new incarnation: its loss stands.
    scheduler2, task2 = _scheduler_with_one_task()
    _lose(scheduler2, _join(scheduler2, "w", "process-a")[0])
    _join(scheduler2, "w", "process-b")
    assert task2.losses == 1 and scheduler2.counts["losses_forgiven"] == 0


def test_a_cut_noticed_after_the_same_process_reconnected_counts_no_loss():
    scheduler, task = _scheduler_with_one_task(max_losses=1)
    old, _ = _join(scheduler, "w", "process-a")
    _join(scheduler, "w", "process-a")  # its new connection arrives first
    _lose(scheduler, old)  # then the old one is found gone
    assert task.losses == 0 and task.number in scheduler.tasks  # requeued, not failed
    assert scheduler.counts["losses_forgiven"] == 1 and scheduler.counts["failed"] == 0


def test_a_worker_dropped_for_cause_counts_the_loss_though_its_process_returns():
    """The lesson of a reverted attempt: a worker the coordinator drops itself -- silent past
    its liveness (a task froze it), or a message over max_message -- comes back as the same
    process too. Its tasks' losses stand, so such a task fails after max_losses."""
    for blame in ("silent for 0.9s", "frame of 99 bytes exceeds the limit of 10 bytes"):
        scheduler, task = _scheduler_with_one_task(max_losses=2)
        worker, _ = _join(scheduler, "w", "process-a")
        _lose(scheduler, worker, blame)
        worker, _ = _join(scheduler, "w", "process-a")
        assert task.losses == 1 and task.worker is worker
        _join(scheduler, "w", "process-a")  # (even with a newer connection already there)
        _lose(scheduler, worker, blame)
        assert task.number not in scheduler.tasks and scheduler.counts["failed"] == 1
        outcome = scheduler.results[task.key]
        assert b"WorkerLost" in outcome.body and blame.encode() in outcome.body
        assert scheduler.counts["losses_forgiven"] == 0


def test_a_task_that_keeps_killing_its_workers_still_fails():
    scheduler, task = _scheduler_with_one_task(max_losses=2)
    _lose(scheduler, _join(scheduler, "w1", "process-a")[0])
    _lose(scheduler, _join(scheduler, "w2", "process-b")[0])
    assert task.number not in scheduler.tasks and scheduler.counts["failed"] == 1


def test_a_returning_worker_gets_back_the_tasks_it_still_holds_without_a_resend():
    scheduler, task = _scheduler_with_one_task()
    worker, _ = _join(scheduler, "w", "process-a")
    _lose(scheduler, worker)
    assert task.state.value == "queued"
    back, fx = _join(scheduler, "w", "process-a", holding=[task.number, 999])
    assert task.worker is back and task.state.value == "running" and task.losses == 0
    assert not fx.sends  # it has the task already: no TASK goes out again
    assert scheduler.counts["leases_resumed"] == 1


def test_a_worker_dropped_as_silent_keeps_the_loss_and_its_result_is_not_lost(tmp_path):
    """A task freezes its worker process for longer than the coordinator's patience: the worker
    is dropped for cause (silent), and that loss is not forgiven when the same process comes
    back. But the process finished the task meanwhile: it names the task in its HELLO, gets
    the lease back, and sends the result it kept -- the task is not run a second time."""
    import subprocess
    import sys

    runs = tmp_path / "runs.txt"
    with Coordinator(KEY, heartbeat=0.2) as coord:
        url = coord.serve("tcp://127.0.0.1:0")
        code = (
            "import sys; from minipool.cluster.worker import Worker; "
            f"Worker(sys.argv[1], {KEY!r}, heartbeat=0.2, max_backoff=0.2).run()"
        )
        worker = subprocess.Popen(
            [sys.executable, "-c", code, url], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        )
        try:
            with Pool(address=url, authkey=KEY, heartbeat=0.2) as client:
                client.wait_for_workers(1, timeout=10)
                future = client.submit(jobs.freeze_then, str(runs), 1.5, "thawed")
                assert future.result(30) == "thawed"
                status = coord.status()
        finally:
            worker.kill()
            worker.wait(5)
    assert runs.read_text().count("ran") == 1
    assert status["workers_lost"] >= 1 and status["losses_forgiven"] == 0
    assert status["leases_resumed"] == 1 and status["failed"] == 0
