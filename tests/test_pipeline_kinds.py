"""Stage kinds (thread, process, async, executor=) and function shipping to processes."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import multiprocessing
import operator
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from minipool import pipeline as pl
from minipool.pipeline import StageDefinitionError


def square(x):
    return x * x


async def async_double(x):
    await asyncio.sleep(0.001)
    return 2 * x


def test_process_stage_runs_lambdas_and_keeps_order():
    offset = 10
    p = pl.source(range(300)) | pl.map(lambda x: x + offset, kind="process", workers=2)
    assert p.run() == [x + 10 for x in range(300)]


def test_process_stage_really_uses_other_processes():
    pids = (
        pl.source(range(40))
        | pl.map(lambda _: os.getpid(), kind="process", workers=2, chunksize=1)
        | pl.distinct()
    ).run()
    assert os.getpid() not in pids


def test_async_stage_overlaps_coroutines():
    in_flight = peak = 0

    async def probe(x):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return x

    assert (pl.source(range(40)) | pl.map(probe, kind="async", workers=20)).run() == list(range(40))
    assert 1 < peak <= 20
    assert (pl.source(range(5)) | pl.map(async_double, kind="async")).run() == [0, 2, 4, 6, 8]


def test_async_filter_and_flat_map():
    async def even(x):
        return x % 2 == 0

    async def twice(x):
        return [x, x]

    assert (pl.source(range(6)) | pl.filter(even, kind="async")).run() == [0, 2, 4]
    assert (pl.source(range(2)) | pl.flat_map(twice, kind="async")).run() == [0, 0, 1, 1]


def test_executor_stages_thread_and_process_pools():
    with cf.ThreadPoolExecutor(3) as ex:
        assert (pl.source(range(50)) | pl.map(square, executor=ex) | pl.reduce(operator.add)).run() == sum(
            x * x for x in range(50)
        )
        assert not ex._shutdown  # an executor that was given is never shut down by the pipeline
    # forkserver, not the default fork: this process runs threads (3.12 warns; 3.14 does not fork)
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as ex:
        assert (pl.source(range(50)) | pl.map(lambda x: -x, executor=ex)).run() == [-x for x in range(50)]


def test_coroutine_function_on_thread_or_process_stage_is_refused_naming_the_stage():
    for kind in ("thread", "process"):
        with pytest.raises(StageDefinitionError, match="'fetch'.*coroutine"):
            (pl.source([1]) | pl.map(async_double, kind=kind, name="fetch")).run()
    with pytest.raises(StageDefinitionError, match="async def"):
        (pl.source([1]) | pl.map(square, kind="async", name="s")).run()


def test_function_that_cannot_travel_is_refused_naming_the_stage():
    lock = threading.Lock()
    before = threading.active_count()
    with pytest.raises(StageDefinitionError, match="'locked'.*cannot travel"):
        (
            pl.source([1])
            | pl.map(lambda x: x * 0 if lock else x, name="first")
            | pl.map(lambda x: lock.locked(), kind="process", name="locked")
        ).run()
    assert threading.active_count() == before


def test_main_module_functions_run_on_process_stages(tmp_path):
    script = tmp_path / "main_fn.py"
    script.write_text(
        textwrap.dedent("""
        from minipool import pipeline as pl

        def cube(x):
            return helper(x) * x

        def helper(x):
            return x * x

        if __name__ == "__main__":
            p = (pl.source(range(10)) | pl.map(cube, kind="process", workers=2)
                 | pl.map(lambda y: y + 1, kind="process"))
            print(p.run())
    """)
    )
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([x**3 + 1 for x in range(10)])


def test_minipool_pool_as_executor():
    from minipool import Pool

    with Pool(2) as pool:  # remote worker processes behind the Executor interface
        p = pl.source(range(20)) | pl.map(lambda x: x * 3, executor=pool) | pl.reduce(operator.add)
        assert p.run() == 3 * sum(range(20))
        assert pl.map(abs, executor=pool).workers == 2  # as many in flight as the pool runs


def test_an_executor_stage_keeps_as_many_calls_in_flight_as_the_executor_runs():
    # Four calls must run at once to pass the barrier: one call in flight at a time (the old
    # default) would leave three of the executor's workers idle and break it.
    barrier = threading.Barrier(4, timeout=10)

    def meet(x):
        barrier.wait()
        return x

    with cf.ThreadPoolExecutor(4) as ex:
        assert (pl.source(range(8)) | pl.map(meet, executor=ex)).run() == list(range(8))
    assert pl.map(abs, executor=ex, workers=3).workers == 3  # a count given still wins


def test_a_stage_runs_on_dask_worker_processes():
    pytest.importorskip("distributed", reason="dask[distributed] is in the test extra; not installed here")
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            executor = client.get_executor()  # Dask's concurrent.futures.Executor
            p = pl.source(range(60)) | pl.map(lambda x: (x * 3, os.getpid()), executor=executor, workers=2)
            out = p.run()
    assert [value for value, _ in out] == [x * 3 for x in range(60)]  # in order, every record
    assert os.getpid() not in {pid for _, pid in out}  # ran in Dask's worker processes


class _InlineExecutor(cf.Executor):
    """Runs each call at once in the caller's thread: what a foreign executor's worker does."""

    def submit(self, fn, /, *args, **kwargs):
        future = cf.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_a_stage_on_a_given_executor_loads_its_function_through_the_task_cache():
    from minipool import shipping, task

    seen = []
    record = lambda x: seen.append(x) or x * 2  # noqa: E731 - a lambda travels by value

    result = (pl.source(range(5)) | pl.map(record, executor=_InlineExecutor(), chunksize=2)).run()
    assert result == [0, 2, 4, 6, 8]
    # The worker side loaded the function once, in the cache minipool's tasks use: the copy it
    # ran is the one that cache returns for the same bytes, and that copy saw every record.
    loaded = task.load_function(shipping.dumps(record))
    assert loaded is not record
    assert loaded.__closure__[0].cell_contents == [0, 1, 2, 3, 4]
    assert seen == []
