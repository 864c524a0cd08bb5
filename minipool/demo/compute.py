"""Tour steps on the pool itself: dispatch, SCOOP's π and mapReduce, the distributed sum,
chunking, and Celery-style tasks (seeds 000 §3.3, 002, 003).

Each step runs the technique and its peer alternately (:func:`.step.alternate`) and says
from the measured ratio whether it paid: a pool pays when each task carries enough work to
hide the round trip, and these steps are sized to show both sides of that line.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import operator
import random
import time
from typing import Any

from .step import COLUMNS, Context, Outcome, alternate, beyond_workers, machine_load, speedup_verdict, timed


def noop(x: int) -> int:
    return x


def points_in_unit_circle(attempts: int) -> int:
    """SCOOP's ``evaluate_number_of_points_in_unit_circle``: darts that land inside."""
    rand = random.random
    inside = 0
    for _ in range(attempts):
        x, y = rand(), rand()
        if x * x + y * y < 1.0:
            inside += 1
    return inside


def simulate_workload(data: list[int]) -> int:
    """SCOOP's ``simulateWorkload``: 10 ms of waiting, then a sum."""
    time.sleep(0.01)
    return sum(data)


def sum_partial(data: list[int]) -> int:
    """Seed 003's ``sum_partial``: the chunk travels to the worker."""
    return sum(data)


def sum_of_range(bounds: tuple[int, int]) -> int:
    """The same partial sum with only the chunk's bounds travelling: the worker makes the data."""
    return sum(range(*bounds))


def dispatch(ctx: Context) -> Outcome:
    n = ctx.size(1000, 5000)
    pool = ctx.pool()
    with (
        concurrent.futures.ProcessPoolExecutor(ctx.workers) as ppe,
        multiprocessing.get_context("spawn").Pool(ctx.workers) as mp_pool,
    ):
        list(ppe.map(noop, range(ctx.workers * 4)))  # both peers started before the clock runs
        mp_pool.map(noop, range(ctx.workers * 4))

        def submit_all(executor: concurrent.futures.Executor) -> None:
            for future in [executor.submit(noop, i) for i in range(n)]:
                future.result()

        def mp_apply() -> None:
            for result in [mp_pool.apply_async(noop, (i,)) for i in range(n)]:
                result.get()

        seconds, _ = alternate(
            {
                "minipool Pool.submit": lambda: submit_all(pool),
                "ProcessPoolExecutor.submit": lambda: submit_all(ppe),
                "multiprocessing.Pool.apply_async": mp_apply,
            },
            rounds=3,
        )
    rates = {name: n / s for name, s in seconds.items()}
    peer = rates["ProcessPoolExecutor.submit"]
    rows = [[name, ctx.workers, n, seconds[name], rate, rate / peer] for name, rate in rates.items()]
    ours = rates["minipool Pool.submit"]
    best_peer = max(peer, rates["multiprocessing.Pool.apply_async"])
    verdict = (
        f"minipool dispatched {ours / best_peer:.1f}x as many empty tasks per second as the faster "
        "standard-library pool: one task's whole trip, queue to worker and back, costs it less."
        if ours > best_peer * 1.05
        else f"minipool dispatched {ours / best_peer:.2f}x the faster standard-library pool's rate "
        "here: at empty tasks the pools are within noise of each other on this machine."
    )
    return Outcome(
        COLUMNS + ["tasks/s", "vs ProcessPoolExecutor"],
        rows,
        f"{ours:,.0f} tasks/s, {ours / peer:.2f}x ProcessPoolExecutor",
        verdict,
        rates,
        "empty tasks per second",
        peer="ProcessPoolExecutor.submit",
    )


def pi(ctx: Context) -> Outcome:
    pool = ctx.pool()
    tasks = ctx.workers * 4
    attempts = ctx.size(250_000, 1_000_000)
    batches = [attempts] * tasks
    seconds, values = alternate(
        {
            "serial map()": lambda: sum(map(points_in_unit_circle, batches)),
            "Pool.map": lambda: sum(pool.map(points_in_unit_circle, batches)),
        },
        rounds=3,
    )
    estimate = 4.0 * values["Pool.map"] / (tasks * attempts)
    # map_as_completed: the first batch is the largest, so results in input order wait for it
    # while results in completion order arrive at once.
    sizes = [attempts * 4] + [attempts // 4] * (tasks - 1)
    first = {}
    for name, results in (
        ("Pool.map (input order)", lambda: pool.map(points_in_unit_circle, sizes)),
        ("map_unordered (completion order)", lambda: pool.map_unordered(points_in_unit_circle, sizes)),
    ):
        start = time.perf_counter()
        iterator = results()
        next(iterator)
        first[name] = time.perf_counter() - start
        list(iterator)
    speedup = seconds["serial map()"] / seconds["Pool.map"]
    busy, load = machine_load()
    rows = [
        ["serial map()", 1, tasks, seconds["serial map()"], "", 1.0],
        ["Pool.map", ctx.workers, tasks, seconds["Pool.map"], "", speedup],
    ] + [[name, ctx.workers, tasks, "", t, ""] for name, t in first.items()]
    ordered, completed = first.values()
    return Outcome(
        COLUMNS + ["first result s", "speed-up"],
        rows,
        f"{speedup:.2f}x over serial; first result {ordered / completed:.0f}x sooner in completion order",
        speedup_verdict(
            speedup,
            f"Each batch is {attempts:,} darts, enough work to hide a task's round trip, so "
            f"{ctx.workers} workers gave {speedup:.2f}x (medians of serial and parallel taken in turns).",
            f"Only {speedup:.2f}x on {ctx.workers} workers: "
            + (
                f"the cores are busy with other work ({load}), so parallel batches wait for a core; "
                "the technique needs idle cores to pay."
                if busy
                else f"with the cores free ({load}), batches of {attempts:,} darts are too small to "
                "hide a task's round trip; run without --quick."
            ),
        )
        + beyond_workers(speedup, ctx.workers)
        + " map_unordered (SCOOP's map_as_completed) hands over the first finished result "
        "without waiting for the big first batch.",
        {
            **{f"{k} s": v for k, v in seconds.items()},
            **{f"{k}: first result s": v for k, v in first.items()},
        },
        "seconds",
        [f"pi ~ {estimate:.5f} (error {abs(estimate - math.pi) / math.pi:.3%})"],
        peer="serial map() s",
    )


def mapreduce(ctx: Context) -> Outcome:
    pool = ctx.pool()
    count = ctx.size(24, 200)  # 10 ms waits overlap at any count; 24 makes 12 a worker
    inputs = [[a] * a for a in range(count)]
    seconds, values = alternate(
        {
            "serial reduce(map())": lambda: sum(map(simulate_workload, inputs)),
            "Pool.map_reduce": lambda: pool.map_reduce(simulate_workload, operator.add, inputs, chunksize=1),
        },
        rounds=2,
    )
    assert values["serial reduce(map())"] == values["Pool.map_reduce"]
    speedup = seconds["serial reduce(map())"] / seconds["Pool.map_reduce"]
    rows = [[name, 1 if name.startswith("serial") else ctx.workers, count, s] for name, s in seconds.items()]
    rows[0].append(1.0)
    rows[1].append(speedup)
    return Outcome(
        COLUMNS + ["speed-up"],
        rows,
        f"{speedup:.2f}x over serial",
        f"Each task waits 10 ms rather than computing, so the waits overlap on {ctx.workers} workers "
        f"({speedup:.2f}x) even on a busy machine; the workers fold their chunks and the caller folds "
        "the partial sums, so reduce_fn need only be associative.",
        {name: s for name, s in seconds.items()},
        "seconds",
        [f"mapReduce = {values['Pool.map_reduce']:,}, equal to the serial fold"],
        peer="serial reduce(map())",
    )


def distributed_sum(ctx: Context) -> Outcome:
    pool = ctx.pool()
    n = ctx.size(2_000_000, 10_000_000)
    data = list(range(n))
    size = -(-n // ctx.workers)
    shards = [data[i : i + size] for i in range(0, n, size)]
    bounds = [(i, min(i + size, n)) for i in range(0, n, size)]
    seconds, values = alternate(
        {
            "serial sum(list)": lambda: sum(map(sum_partial, shards)),
            "Pool.map, the list shipped": lambda: sum(pool.map(sum_partial, shards)),
            "Pool.map, only bounds shipped": lambda: sum(pool.map(sum_of_range, bounds)),
        },
        rounds=3,
    )
    assert set(values.values()) == {n * (n - 1) // 2}
    serial = seconds["serial sum(list)"]
    shipped_mb = n * 5 / 1e6  # pickle spends about 5 bytes on each of these ints
    rows = [
        [name, 1 if name.startswith("serial") else ctx.workers, len(shards), s, serial / s]
        for name, s in seconds.items()
    ]
    shipped = serial / seconds["Pool.map, the list shipped"]
    generated = serial / seconds["Pool.map, only bounds shipped"]
    return Outcome(
        COLUMNS + ["vs serial"],
        rows,
        f"list shipped {shipped:.2f}x, bounds shipped {generated:.2f}x the serial speed",
        f"Adding {n:,} numbers takes {serial * 1e3:.0f} ms; shipping them (about {shipped_mb:.0f} MB "
        f"pickled) costs more than the adding, so the seed's distributed sum runs at {shipped:.2f}x "
        "the serial speed. Sending each worker only its bounds, so it makes its own data, "
        + (
            f"pays: {generated:.2f}x."
            if generated >= 1.15
            else f"still gives only {generated:.2f}x: a sum is too little work per number for two processes."
        ),
        {name: s for name, s in seconds.items()},
        "seconds",
        [f"sum(range({n:,})) = {n * (n - 1) // 2:,}, all three agree"],
        peer="serial sum(list)",
    )


def chunking(ctx: Context) -> Outcome:
    pool = ctx.pool()
    n = ctx.size(2000, 10000)
    huge = f"map(chunksize={n // 2})"
    seconds, values = alternate(
        {
            "map(chunksize=1)": lambda: list(pool.map(noop, range(n), chunksize=1)),
            "map(chunksize=None): auto": lambda: list(pool.map(noop, range(n), chunksize=None)),
            huge: lambda: list(pool.map(noop, range(n), chunksize=n // 2)),
        },
        rounds=3,
    )
    assert all(v == list(range(n)) for v in values.values())
    # Uneven items: the first half sleep 10 ms, the rest nothing. Two chunks put every slow
    # item on one worker; automatic chunks spread them.
    uneven = [0.01] * 20 + [0.0] * 20
    lumpy, _ = alternate(
        {
            "uneven items, map(chunksize=20)": lambda: list(pool.map(time.sleep, uneven, chunksize=20)),
            "uneven items, map(chunksize=None)": lambda: list(pool.map(time.sleep, uneven, chunksize=None)),
        },
        rounds=2,
    )
    one = seconds["map(chunksize=1)"]
    rows: list[list[Any]] = [[name, ctx.workers, n, s, n / s, one / s] for name, s in seconds.items()]
    rows += [[name, ctx.workers, len(uneven), s, len(uneven) / s, ""] for name, s in lumpy.items()]
    auto = one / seconds["map(chunksize=None): auto"]
    starved = lumpy["uneven items, map(chunksize=20)"] / lumpy["uneven items, map(chunksize=None)"]
    return Outcome(
        COLUMNS + ["items/s", "vs chunksize=1"],
        rows,
        f"auto chunks {auto:.1f}x chunksize=1; two chunks of uneven items {starved:.1f}x slower",
        f"One item per task pays a round trip per item; automatic chunks (about four per worker "
        f"slot) cut that cost {auto:.1f}x for tiny items, and two huge chunks as much "
        f"({one / seconds[huge]:.0f}x). But too few chunks starve workers: with the slow items all "
        "in one of two chunks, one worker did all the waiting while the other sat idle, "
        + (
            f"{starved:.1f}x the time automatic chunks took."
            if starved >= 1.15
            else f"yet here it took only {starved:.2f}x automatic chunks' time (a busy machine "
            f"blurs 10 ms waits: {machine_load()[1]})."
        ),
        {name: n / s for name, s in seconds.items()},
        "items per second",
        peer="map(chunksize=1)",
    )


def tasks(ctx: Context) -> Outcome:
    import os
    import tempfile

    from ..asyncresult import AsyncResult

    pool = ctx.pool()
    count = ctx.size(12, 50)  # 20 ms tasks: even 12 overlap on the workers
    square = pool.task(slow_square)
    seconds, values = alternate(
        {
            "serial calls": lambda: [slow_square(i) for i in range(count)],
            ".delay() then .get()": lambda: [
                r.get(timeout=60) for r in [square.delay(i) for i in range(count)]
            ],
        },
        rounds=2,
    )
    assert values["serial calls"] == values[".delay() then .get()"]
    first: AsyncResult = square.delay(7)
    notes = [f"slow_square.delay(7): id {first.id}, state {first.state}, get() = {first.get(timeout=30)}"]
    with tempfile.TemporaryDirectory() as tmp:
        flaky_task = pool.task(flaky, retries=3, retry_backoff=0.02)
        _, retry_s = timed(lambda: flaky_task.delay(os.path.join(tmp, "attempts"), 3).get(timeout=30))
    notes.append(f"a task that fails twice, retries=3: succeeded on attempt 3 after {retry_s:.2f} s")
    beat = pool.schedule(noop, 1, every=0.1)
    time.sleep(0.55)
    beat.cancel()
    notes.append(f"schedule(noop, every=0.1) for 0.55 s: {beat.runs} runs (Celery beat's interval)")
    order = priorities(pool)
    high_first = "yes" if set(order[:3]) == {"high0", "high1", "high2"} else "NO"
    notes.append(
        f"every worker slot busy, 3 low- then 3 high-priority tasks queued: the high ones ran first: "
        f"{high_first} (order {order}; tasks of one priority run side by side, so their order varies)"
    )
    speedup = seconds["serial calls"] / seconds[".delay() then .get()"]
    rows = [
        ["serial calls", 1, count, seconds["serial calls"], 1.0],
        [".delay() then .get()", ctx.workers, count, seconds[".delay() then .get()"], speedup],
    ]
    return Outcome(
        COLUMNS + ["speed-up"],
        rows,
        f"{speedup:.2f}x over serial; retries, beat and priorities shown",
        "delay() enqueues and returns an AsyncResult at once, so 20 ms tasks overlap on the "
        f"workers ({speedup:.2f}x); a failing task is retried with backoff, a schedule runs on "
        "workers at its interval, and a higher priority jumps the queue.",
        {name: s for name, s in seconds.items()},
        "seconds",
        notes,
        peer="serial calls",
    )


def slow_square(x: int) -> int:
    time.sleep(0.02)
    return x * x


def flaky(counter_path: str, succeed_on: int) -> int:
    """Fail until attempt ``succeed_on`` (counted in a file: each attempt may be another process)."""
    with open(counter_path, "a+") as f:
        f.write("x")
        f.seek(0)
        attempt = len(f.read())
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt}: not yet")
    return attempt


def priorities(pool: concurrent.futures.Executor) -> list[str]:
    """Queue low- then high-priority tasks behind busy workers; return the order they ran in."""
    from ..pool import Pool

    assert isinstance(pool, Pool)
    slots = pool.status()["workers"]
    # Fill every slot and every prefetched place at the workers, and some more, so the tasks
    # below wait in the coordinator's queue, where priorities order them.
    blockers = [pool.submit(time.sleep, 0.02) for _ in range(sum(w["capacity"] + w["slots"] for w in slots))]
    futures = [(f"low{i}", pool.submit_with(time.monotonic, priority=0)) for i in range(3)]
    futures += [(f"high{i}", pool.submit_with(time.monotonic, priority=9)) for i in range(3)]
    for blocker in blockers:
        blocker.result(30)
    return [name for name, _ in sorted(futures, key=lambda pair: pair[1].result(30))]
