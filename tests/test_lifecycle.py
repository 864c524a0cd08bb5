"""The life and death of worker processes (docs/failures.md, "Worker processes live and die
with their pool"): a task cannot end its worker, a worker never outlives its pool's program,
and a lost worker's failure says why."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import jobs
from minipool import Pool, WorkerLost
from minipool.cluster.coordinator import Coordinator
from minipool.cluster.supervisor import Supervisor

KEY = b"lifecycle-key-0123456789"
TESTS = Path(__file__).parent
ROOT = TESTS.parent


def alive(pid):
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)


def lines(path):
    return path.read_text().split() if path.exists() else []


def env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}


# -- a task cannot end its worker ------------------------------------------------------------


def test_a_task_that_calls_sys_exit_fails_with_system_exit_and_its_worker_goes_on():
    with Pool(1) as pool:
        pool.wait_for_workers()
        worker = pool.submit(jobs.pid).result(20)
        with pytest.raises(SystemExit) as info:
            pool.submit(jobs.exit_with, 3).result(20)
        assert info.value.code == 3
        with pytest.raises(SystemExit) as info:  # raised while pickling the result
            pool.submit(jobs.returns_what_exits_when_pickled).result(20)
        assert info.value.code == 4
        futures = [pool.submit(jobs.exit_with, i) for i in range(5)]
        assert [f.exception(20).code for f in futures] == list(range(5))  # once each
        assert pool.submit(jobs.pid).result(20) == worker  # the same process served them all
        assert pool.status()["restarts"] == 0


def test_a_task_that_exits_its_process_with_status_3_is_a_crash_not_a_refusal():
    with Pool(1, max_losses=1) as pool:
        pool.wait_for_workers()
        with pytest.raises(WorkerLost):
            pool.submit(jobs.die_with, 3).result(20)
        assert pool.submit(jobs.square, 7).result(20) == 49  # a replacement was started
        assert pool.status()["restarts"] == 1


def test_workers_refused_by_the_coordinator_are_not_restarted():
    coordinator = Coordinator(KEY)
    url = coordinator.serve("tcp://127.0.0.1:0")
    supervisor = Supervisor(url, b"not-the-key-0123456789", 2)
    try:
        wait_for(lambda: supervisor.gave_up, 15, "both workers refused")
        assert supervisor.restarts == 0 and supervisor.count == 0
        assert supervisor.refusal
    finally:
        supervisor.close()
        coordinator.close()


def test_a_cli_supervisor_whose_workers_are_all_refused_exits_with_a_clear_message():
    with Coordinator(KEY) as coordinator:
        url = coordinator.serve("tcp://127.0.0.1:0")
        done = subprocess.run(
            [sys.executable, "-m", "minipool", "worker", "--connect", url, "--slots", "2"],
            env={**env(), "MINIPOOL_AUTHKEY": "not-the-key-0123456789"},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 3
    assert "all 2 worker processes were refused" in done.stderr


# -- no process left behind --------------------------------------------------------------------

PARENT = """
import os, sys, time
import jobs
from minipool import Pool

if __name__ == "__main__":
    log, seconds, end = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    pool = Pool(2)
    pool.wait_for_workers()
    print(*pool.status()["local_processes"], flush=True)
    future = pool.submit(jobs.record_start_then_sleep, log, seconds)
    while not (os.path.exists(log) and open(log).read()):
        time.sleep(0.01)
    print("started", flush=True)
    if end == "wait":
        time.sleep(120)
    # "exit": fall off the end of the program with the task running and the pool not shut down
"""


def start_parent(tmp_path, seconds, end):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(PARENT))
    log = tmp_path / "started.txt"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(log), str(seconds), end],
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2 and proc.stdout.readline().strip() == "started"
    return proc, workers, log


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_when_their_pools_program_is_killed_in_the_middle_of_a_long_task(tmp_path, sig):
    proc, workers, log = start_parent(tmp_path, 30, "wait")
    try:
        proc.send_signal(sig)
        proc.wait(10)
        wait_for(lambda: not any(alive(p) for p in workers), 5, f"workers {workers} gone")
        assert len(lines(log)) == 1  # the task started once, and no one started it again
    finally:
        proc.kill()
        proc.wait()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_program_that_ends_while_a_task_runs_leaves_no_worker_and_runs_the_task_once(tmp_path):
    # The task outlasts the 3 s allowed below, so a worker left running it would be caught; an
    # interpreter that waits for pending futures before exiting (as this one does) ends after
    # it, having stopped its workers, also fine.
    proc, workers, log = start_parent(tmp_path, 4, "exit")
    try:
        proc.wait(30)
        wait_for(lambda: not any(alive(p) for p in workers), 3, f"workers {workers} gone")
        assert len(lines(log)) == 1
    finally:
        proc.kill()
        proc.wait()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_stops_promptly_on_a_signal_in_the_middle_of_a_task(tmp_path, sig):
    log = tmp_path / "started.txt"
    with Pool(1, max_losses=1) as pool:
        pool.wait_for_workers()
        future = pool.submit(jobs.record_start_then_sleep, str(log), 30)
        wait_for(lambda: lines(log), 10, "the task started")
        worker = int(lines(log)[0])
        os.kill(worker, sig)
        wait_for(lambda: not alive(worker), 3, "the worker gone")
        with pytest.raises(WorkerLost):
            future.result(10)


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_a_worker_that_will_not_reconnect_stops_when_its_coordinator_goes_in_the_middle_of_a_task(
    tmp_path, kind
):
    log = tmp_path / "started.txt"
    coordinator = Coordinator(KEY, heartbeat=0.2)
    url = coordinator.serve("tcp://127.0.0.1:0")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minipool",
            "worker",
            "--connect",
            url,
            "--no-reconnect",
            "--heartbeat",
            "0.2",
            "--kind",
            kind,
        ],
        env={**env(), "MINIPOOL_AUTHKEY": KEY.decode()},
    )
    try:
        with Pool(address=url, authkey=KEY, reconnect_timeout=0.5) as pool:
            pool.submit(jobs.record_start_then_sleep, str(log), 30)
            wait_for(lambda: lines(log), 15, "the task started")
            coordinator.close()
            worker.wait(5)
    finally:
        coordinator.close()
        worker.kill()
        worker.wait()


# -- a pool dropped without shutdown() ---------------------------------------------------------


def test_a_pool_dropped_without_shutdown_stops_its_workers_when_collected():
    import gc

    pool = Pool(2)
    pool.wait_for_workers()
    assert pool.submit(jobs.square, 3).result(20) == 9
    workers = pool.status()["local_processes"]
    assert all(alive(p) for p in workers)
    del pool
    gc.collect()
    wait_for(lambda: not any(alive(p) for p in workers), 5, f"workers {workers} gone")


def test_a_pool_dropped_with_pending_futures_finishes_them_first():
    # ProcessPoolExecutor(2).submit(f).result() works: a collected executor finishes its work.
    import gc

    pool = Pool(1)
    workers = pool.status()["local_processes"]
    futures = [pool.submit(jobs.sleep_then, 0.3, i) for i in range(3)]
    del pool
    gc.collect()
    assert [f.result(30) for f in futures] == [0, 1, 2]
    wait_for(lambda: not any(alive(p) for p in workers), 5, f"workers {workers} gone")


# -- WorkerLost says why -------------------------------------------------------------------------


def test_worker_lost_names_the_signal_or_exit_status_of_the_process():
    with Pool(1, max_losses=1) as pool:
        pool.wait_for_workers()
        with pytest.raises(WorkerLost, match=r"local/0 \(pid \d+ on .*\), was killed by SIGKILL"):
            pool.submit(jobs.kill_self, signal.SIGKILL).result(20)
        with pytest.raises(WorkerLost, match="exited with status 13"):
            pool.submit(jobs.die).result(20)


def test_worker_lost_says_the_coordinator_dropped_a_silent_worker(tmp_path):
    log = tmp_path / "started.txt"
    with Pool(1, max_losses=1, heartbeat=0.2) as pool:
        pool.wait_for_workers()
        future = pool.submit(jobs.record_start_then_sleep, str(log), 30)
        wait_for(lambda: lines(log), 10, "the task started")
        worker = int(lines(log)[0])
        os.kill(worker, signal.SIGSTOP)
        try:
            with pytest.raises(WorkerLost, match=r"was silent for \d+\.\ds \(no heartbeat\)"):
                future.result(20)
        finally:
            os.kill(worker, signal.SIGCONT)


def test_worker_lost_carries_the_reason_it_is_given():
    import json

    from minipool.cluster.scheduler import Effects, Scheduler
    from minipool.cluster.state import WorkerState
    from minipool.task import failure_from_json
    from minipool.wire import Format

    scheduler = Scheduler(max_losses=1)
    client = type("Client", (), {"id": "c"})()
    scheduler.clients["c"] = client
    worker = WorkerState(None, "w", 1, None, {"pid": 42, "host": "h"})
    scheduler.worker_joined(worker, Effects())
    scheduler.submit("c", 1, b"body", Format.PICKLE, "none", {}, Effects())
    fx = Effects()
    scheduler.worker_lost(worker, fx, "was dropped for a malformed message: bad magic")
    [(_, number, outcome)] = fx.deliveries
    error = failure_from_json(json.loads(outcome.body))
    assert number == 1 and isinstance(error, WorkerLost)
    assert str(error) == (
        "task lost 1 workers (the last, w (pid 42 on h), was dropped for a "
        "malformed message: bad magic); giving up"
    )


# -- initializer= and initargs= ----------------------------------------------------------------


def test_the_initializer_runs_once_in_each_worker_process_before_its_first_task(tmp_path):
    ran = tmp_path / "initialized.txt"
    with Pool(2, initializer=jobs.initialize, initargs=(str(ran), "ready")) as pool:
        pool.wait_for_workers()
        outcomes = [pool.submit(jobs.initialized).result(20) for _ in range(20)]
        outcomes += list(pool.map(jobs.initialized, range(20), chunksize=3))
        outcomes += [pool.submit_with(jobs.initialized).result(20)]
        assert {value for value, _ in outcomes} == {"ready"}
        assert pool.map_reduce(lambda _: jobs.initialized()[0], lambda a, b: a, range(4)) == "ready"
        workers = {pid for _, pid in outcomes}
        assert sorted(lines(ran)) == sorted(str(p) for p in workers)  # once per process


def test_an_initializer_travels_by_value_and_runs_in_a_replacement_worker(tmp_path):
    ran = tmp_path / "initialized.txt"

    def initialize(path):  # defined here: it cannot be imported, so it travels as code
        jobs.initialize(path, "by value")

    with Pool(1, initializer=initialize, initargs=(str(ran),)) as pool:
        value, first = pool.submit(jobs.initialized).result(20)
        assert value == "by value"
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not alive(first), 5, "the worker gone")
        value, second = pool.submit(jobs.initialized).result(30)
        assert value == "by value" and second != first
        assert lines(ran) == [str(first), str(second)]


def test_a_remote_pools_initializer_runs_on_its_workers_and_not_for_other_pools(tmp_path):
    ran = tmp_path / "initialized.txt"
    with Coordinator(KEY) as coordinator:
        url = coordinator.serve("tcp://127.0.0.1:0")
        worker = subprocess.Popen(
            [sys.executable, "-m", "minipool", "worker", "--connect", url],
            env={**env(), "MINIPOOL_AUTHKEY": KEY.decode()},
        )
        try:
            with Pool(address=url, authkey=KEY) as plain:
                plain.wait_for_workers(1)
                assert plain.submit(jobs.initialized).result(20) == (None, worker.pid)
                for run in (1, 2):  # the same program run twice: once per pool, not per function
                    with Pool(
                        address=url, authkey=KEY, initializer=jobs.initialize, initargs=(str(ran), "remote")
                    ) as pool:
                        assert [pool.submit(jobs.initialized).result(20) for _ in range(5)] == [
                            ("remote", worker.pid)
                        ] * 5
                    assert lines(ran) == [str(worker.pid)] * run
        finally:
            worker.terminate()
            worker.wait(10)


def test_an_initializer_that_raises_breaks_the_pool_as_in_process_pool_executor():
    from concurrent.futures import BrokenExecutor
    from concurrent.futures.process import BrokenProcessPool

    from minipool import BrokenPool

    with Pool(2, initializer=jobs.fail, initargs=("no database",)) as pool:
        futures = [pool.submit(jobs.square, i) for i in range(10)]
        for future in futures:
            error = future.exception(20)
            assert isinstance(error, BrokenPool)
            assert isinstance(error, BrokenProcessPool) and isinstance(error, BrokenExecutor)
        assert "initializer failed" in str(futures[0].exception()) and "no database" in str(
            futures[0].exception()
        )
        with pytest.raises(BrokenProcessPool):
            pool.submit(jobs.square, 1)
        assert pool.status()["restarts"] == 0  # failed, not looped
    with pytest.raises(TypeError):
        Pool(1, initializer="not callable")


def test_thread_workers_share_one_initializer_run_per_process(tmp_path):
    ran = tmp_path / "initialized.txt"
    with Pool(4, kind="thread", initializer=jobs.initialize, initargs=(str(ran), "threads")) as pool:
        futures = [pool.submit(jobs.initialized) for _ in range(40)]
        assert {f.result(20)[0] for f in futures} == {"threads"}
        assert len(lines(ran)) == 1
