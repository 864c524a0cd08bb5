"""Pool as a concurrent.futures.Executor: results, errors, laziness, cancellation, tasks."""

import concurrent.futures
import itertools
import math
import time

import pytest

import jobs
from minipool import RemoteError
from minipool.task import RemoteTraceback


def test_submit_returns_a_future_with_the_result(pool):
    assert pool.submit(jobs.square, 12).result(10) == 144
    assert pool.submit(jobs.add, 1, b=2).result(10) == 3


def test_lambdas_and_closures_run_on_worker_processes(pool):
    k = 5
    assert pool.submit(lambda x: x * k + math.floor(0.5), 2).result(10) == 10


def test_map_is_ordered_and_matches_builtin_map(pool):
    data = list(range(500))
    assert list(pool.map(jobs.square, data)) == [x * x for x in data]
    assert list(pool.map(jobs.add, data, data, chunksize=7)) == [2 * x for x in data]
    assert list(pool.map(jobs.square, data, chunksize=None)) == [x * x for x in data]


def test_map_is_lazy_over_an_endless_iterator(pool):
    pulled = itertools.count()
    source = (next(pulled) for _ in itertools.count())
    results = pool.map(jobs.square, source, buffersize=8)
    assert list(itertools.islice(results, 20)) == [x * x for x in range(20)]
    assert next(pulled) < 20 + 8 + 2  # read at most a window ahead


def test_map_unordered_yields_every_result_once(pool):
    assert sorted(pool.map_unordered(jobs.square, range(300), chunksize=4)) == [x * x for x in range(300)]


def test_map_reduce_folds_in_order(pool):
    assert pool.map_reduce(jobs.square, lambda a, b: a + b, range(1000)) == sum(x * x for x in range(1000))
    # Associative but not commutative: order must be kept.
    assert pool.map_reduce(str, lambda a, b: a + b, range(30), chunksize=4) == "".join(map(str, range(30)))
    assert pool.map_reduce(jobs.square, lambda a, b: a + b, [], initializer=0) == 0
    with pytest.raises(TypeError):
        pool.map_reduce(jobs.square, lambda a, b: a + b, [])


def test_exceptions_come_back_as_their_type_with_the_remote_traceback(pool):
    future = pool.submit(jobs.fail, "bad input")
    with pytest.raises(ValueError, match="bad input") as info:
        future.result(10)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "jobs.py" in str(info.value.__cause__)


def test_an_exception_that_cannot_travel_becomes_remote_error(pool):
    with pytest.raises(RemoteError, match="Unpicklable") as info:
        pool.submit(jobs.fail_unpicklable).result(10)
    assert "fail_unpicklable" in info.value.remote_traceback


def test_map_raises_the_first_error_in_order(pool):
    with pytest.raises(ValueError):
        list(pool.map(lambda x: jobs.fail() if x == 3 else x, range(10)))


def test_result_and_map_timeouts(pool):
    # Each task sleeps at least three times the timeout: no load makes one finish within it.
    future = pool.submit(jobs.sleep_then, 0.3, "late")
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0.05)
    assert future.result(10) == "late"
    with pytest.raises(concurrent.futures.TimeoutError):
        list(pool.map(jobs.sleep_then, [0.3] * 2, timeout=0.1))  # one a worker: soon free again


def test_queued_futures_can_be_cancelled(pool, tmp_path):
    # Fill every lease (slots and prefetch) so that the victim waits in the coordinator's queue:
    # a task a worker holds has started and is no longer cancellable.
    gate = tmp_path / "gate"
    capacity = sum(w["capacity"] for w in pool.status()["workers"])
    blockers = [pool.submit(jobs.wait_for_path, str(gate)) for _ in range(capacity)]
    victim = pool.submit(jobs.square, 3)
    assert victim.cancel()
    assert victim.cancelled()
    gate.touch()
    concurrent.futures.wait(blockers, timeout=30)
    assert pool.submit(jobs.square, 4).result(10) == 16


def test_status_reports_workers_and_counts(pool):
    status = pool.status()
    assert len(status["workers"]) == 2
    for key in ("queued", "running", "done", "failed", "slots"):
        assert key in status
    assert {w["kind"] for w in status["workers"]} == {"process"}


def test_celery_style_task_delay_and_apply_async(pool):
    @pool.task
    def multiply(a, b):
        return a * b

    result = multiply.delay(6, 7)
    assert result.get(timeout=10) == 42
    assert result.ready() and result.successful() and result.state == "SUCCESS"
    assert result.id
    other = multiply.apply_async(args=(2,), kwargs={"b": 5})
    assert other.get(timeout=10) == 10
    assert other.id != result.id
    assert multiply(3, 3) == 9  # calling it directly runs it here, as in Celery


def test_task_retries_until_it_succeeds(pool, tmp_path):
    flaky = pool.task(retries=3, retry_backoff=0.01)(jobs.flaky)
    assert flaky.delay(str(tmp_path / "attempts"), 3).get(timeout=20) == 3


def test_task_gives_up_after_its_retries(pool, tmp_path):
    flaky = pool.task(retries=1)(jobs.flaky)
    result = flaky.delay(str(tmp_path / "attempts"), 5)
    with pytest.raises(RuntimeError, match="attempt 2"):
        result.get(timeout=20)
    assert result.failed() and result.state == "FAILURE"


def test_priorities_run_higher_first():
    from minipool import Pool

    with Pool(1) as pool:
        pool.wait_for_workers()
        first = pool.submit(jobs.sleep_then, 0.3)  # occupies the worker and its prefetch slot
        second = pool.submit(jobs.sleep_then, 0.3)
        time.sleep(0.1)
        low = pool.submit_with(time.monotonic, priority=0)
        high = pool.submit_with(time.monotonic, priority=10)
        assert high.result(10) < low.result(10)
        first.result(10), second.result(10)


def test_shutdown_waits_and_then_refuses_work():
    from minipool import Pool

    pool = Pool(1)
    futures = [pool.submit(jobs.sleep_then, 0.05, i) for i in range(5)]
    pool.shutdown(wait=True)
    assert [f.result(0) for f in futures] == list(range(5))
    with pytest.raises(RuntimeError):
        pool.submit(jobs.square, 1)


def test_unknown_codec_fails_at_construction():
    from minipool import Pool
    from minipool.errors import CodecError

    with pytest.raises(CodecError):
        Pool(1, codec="no-such-codec")


def test_compressed_bodies_round_trip():
    from minipool import Pool

    with Pool(1, codec="gzip") as pool:
        payload = "abc" * 10_000
        assert pool.submit(jobs.identity, payload).result(10) == payload
