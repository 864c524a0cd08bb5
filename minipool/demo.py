"""``python -m minipool.demo``: a guided tour of minipool on this machine, in under a minute.

It starts an embedded pool (a coordinator in this process, one worker process per core) and
runs the articles' own examples through it, each beside its serial version:

1. SCOOP's Monte Carlo estimate of pi (seed 002): ``Pool.map`` over independent batches;
2. the distributed sum of seed 003: shard a list, sum the shards on workers, add the partials;
3. SCOOP's ``mapReduce`` with a simulated 10 ms workload (seed 002);
4. Celery's ``@app.task`` / ``.delay()`` / ``AsyncResult`` (seed 002);
5. fault recovery (seed 000 §2.1): a worker process is killed mid-run, its tasks run again
   elsewhere, the supervisor starts a replacement, and no result is lost or duplicated.

Every table shows workers, tasks, seconds and the speed-up over serial, measured in this run.
"""

from __future__ import annotations

import argparse
import logging
import math
import operator
import os
import random
import signal
import sys
import time
from typing import Any

from .bench.common import print_table


def points_in_unit_circle(attempts: int) -> int:
    """SCOOP's ``evaluate_number_of_points_in_unit_circle``: darts that land inside."""
    rand = random.random
    inside = 0
    for _ in range(attempts):
        x, y = rand(), rand()
        if x * x + y * y < 1.0:
            inside += 1
    return inside


def sum_partial(data: list[int]) -> int:
    """Seed 003's ``sum_partial``."""
    return sum(data)


def simulate_workload(data: list[int]) -> int:
    """SCOOP's ``simulateWorkload``: 10 ms of waiting, then a sum."""
    time.sleep(0.01)
    return sum(data)


def slow_square(x: int) -> int:
    time.sleep(0.02)
    return x * x


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _row(name: str, workers: int, tasks: int, serial: float, parallel: float) -> list[Any]:
    return [name, workers, tasks, serial, parallel, serial / parallel if parallel else 0.0]


HEADERS = ["example", "workers", "tasks", "serial s", "minipool s", "speed-up"]


def monte_carlo_pi(pool: Any, workers: int, quick: bool) -> list[Any]:
    tasks = workers * 4
    attempts = 250_000 if quick else 1_000_000
    serial_hits, serial = _timed(lambda: sum(map(points_in_unit_circle, [attempts] * tasks)))
    hits, parallel = _timed(lambda: sum(pool.map(points_in_unit_circle, [attempts] * tasks)))
    estimate = 4.0 * hits / (tasks * attempts)
    print(
        f"  pi ~ {estimate:.5f} (serial run: {4.0 * serial_hits / (tasks * attempts):.5f}); "
        f"error {abs(estimate - math.pi) / math.pi:.3%}"
    )
    return _row("Monte Carlo pi (SCOOP)", workers, tasks, serial, parallel)


def distributed_sum(pool: Any, workers: int, quick: bool) -> list[Any]:
    n = 2_000_000 if quick else 10_000_000
    data = list(range(n))
    size = -(-n // (workers * 2))
    shards = [data[i : i + size] for i in range(0, n, size)]
    expected, serial = _timed(lambda: sum(map(sum_partial, shards)))
    total, parallel = _timed(lambda: sum(pool.map(sum_partial, shards)))
    assert total == expected == n * (n - 1) // 2
    print(
        f"  sum(range({n:,})) = {total:,}: shipping the data costs more than adding it,"
        " which is the lesson of this row"
    )
    return _row("distributed sum (seed 003)", workers, len(shards), serial, parallel)


def map_reduce(pool: Any, workers: int, quick: bool) -> list[Any]:
    count = 60 if quick else 200
    inputs = [[a] * a for a in range(count)]
    expected, serial = _timed(lambda: sum(map(simulate_workload, inputs)))
    total, parallel = _timed(lambda: pool.map_reduce(simulate_workload, operator.add, inputs, chunksize=1))
    assert total == expected
    print(f"  mapReduce = {total:,}; the 10 ms waits overlap across workers")
    return _row("mapReduce, 10 ms tasks (SCOOP)", workers, count, serial, parallel)


def celery_tasks(pool: Any, workers: int, quick: bool) -> list[Any]:
    count = 20 if quick else 50
    task = pool.task(slow_square)
    _, serial = _timed(lambda: [slow_square(i) for i in range(count)])
    results, parallel = _timed(lambda: [r.get(timeout=60) for r in [task.delay(i) for i in range(count)]])
    first = task.delay(7)
    print(
        f"  slow_square.delay(7) -> AsyncResult id={first.id} state={first.state}"
        f" -> get() = {first.get(timeout=60)}"
    )
    assert results == [i * i for i in range(count)]
    return _row("Celery-style .delay(), 20 ms tasks", workers, count, serial, parallel)


def fault_recovery(pool: Any, workers: int, quick: bool) -> list[Any]:
    count = 40
    _, serial = _timed(lambda: [slow_square(i) for i in range(count)])
    start = time.perf_counter()
    futures = [pool.submit(slow_square, i) for i in range(count)]
    time.sleep(0.1)
    victim = pool.status()["local_processes"][0]
    os.kill(victim, signal.SIGKILL)
    results = [f.result(60) for f in futures]
    parallel = time.perf_counter() - start
    assert results == [i * i for i in range(count)]
    status = pool.status()
    print(
        f"  killed worker process {victim} mid-run: {status['requeued']} task(s) requeued, "
        f"{status['restarts']} replacement(s) started, all {count} results correct, none twice"
    )
    return _row("a worker SIGKILLed mid-run", workers, count, serial, parallel)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minipool.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller inputs (under 15 s)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="worker processes")
    parser.add_argument("--transport", default="tcp", help="tcp, ws, http, ... (default tcp)")
    args = parser.parse_args(argv)

    from .pool import Pool

    # The fault-recovery step makes the coordinator and supervisor report what they do.
    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(message)s")
    began = time.perf_counter()
    print(
        f"minipool demo: starting a coordinator and {args.workers} worker processes "
        f"({args.transport}:// on 127.0.0.1)"
    )
    with Pool(args.workers, transport=args.transport, dashboard="127.0.0.1:0") as pool:
        pool.wait_for_workers()
        status = pool.status()
        print(
            f"  coordinator at {status['urls'][0]}, workers: "
            + ", ".join(f"{w['name']} (pid {w['pid']})" for w in status["workers"])
        )
        print(f"  live dashboard while the tour runs: {pool.dashboard.server.private_url}")
        rows = []
        for step in (monte_carlo_pi, distributed_sum, map_reduce, celery_tasks, fault_recovery):
            print(f"\n{step.__name__.replace('_', ' ')}:")
            rows.append(step(pool, args.workers, args.quick))
        final = pool.status()
    print_table(
        f"Results on {os.cpu_count()} CPU(s), single runs (`python -m minipool.bench` "
        "measures with repeats and medians)",
        HEADERS,
        rows,
    )
    print(
        f"\n{final['done']} tasks done, {final['failed']} failed, {final['requeued']} requeued; "
        f"demo took {time.perf_counter() - began:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
