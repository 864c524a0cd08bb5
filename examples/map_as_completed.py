"""SCOOP's ``futures.map_as_completed`` (seed 002): results in the order they finish.

SCOOP offers ``futures.map`` (results in input order, like the built-in ``map``) and
``futures.map_as_completed`` (each result as soon as it is ready). minipool has both:
``Pool.map`` and ``Pool.map_unordered``; ``concurrent.futures.as_completed`` over
``Pool.submit`` futures is the same idea one future at a time.

The workload makes the difference visible: task ``i`` sleeps ``(N - i) * STEP`` seconds, so the
first input is the slowest. ``map`` cannot hand out anything until the first task is done, so the
fast results wait behind it; ``map_unordered`` yields the fast ones at once. The script prints
the order each call yields and how long the first result took, and checks that both calls
return the same values, ``map`` in input order and ``map_unordered`` in an order where the
shortest sleeps come first.

    python examples/map_as_completed.py [--tasks 8] [--step 0.1]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time

from minipool import Pool


def slow_square(item: tuple[int, float]) -> int:
    """Square ``n`` after ``delay`` seconds (as if the work took that long)."""
    n, delay = item
    time.sleep(delay)
    return n * n


def timed(results) -> tuple[list[int], float, float]:
    """Drain an iterator of results: the values, seconds to the first one, seconds to all."""
    start = time.perf_counter()
    values, first = [], 0.0
    for value in results:
        if not values:
            first = time.perf_counter() - start
        values.append(value)
    return values, first, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--step", type=float, default=0.1, help="seconds between two tasks' sleeps")
    args = parser.parse_args()
    n = args.tasks
    items = [(i, (n - i) * args.step) for i in range(n)]  # the first input is the slowest

    with Pool(n, kind="thread") as pool:  # a slot per task: every task starts at once
        pool.wait_for_workers()
        ordered, first_ordered, all_ordered = timed(pool.map(slow_square, items))
        unordered, first_unordered, all_unordered = timed(pool.map_unordered(slow_square, items))
        futures = [pool.submit(slow_square, item) for item in items]
        as_completed = [f.result() for f in concurrent.futures.as_completed(futures, timeout=60)]

    print(f"{n} tasks, task i sleeps ({n} - i) x {args.step} s, on {n} thread slots")
    print(f"{'call':<28} {'first result':>12} {'all':>6}  order of the results")
    print(f"{'Pool.map':<28} {first_ordered:>10.2f} s {all_ordered:>4.2f} s  {ordered}")
    print(f"{'Pool.map_unordered':<28} {first_unordered:>10.2f} s {all_unordered:>4.2f} s  {unordered}")
    print(f"{'as_completed(submit(...))':<28} {'':>12} {'':>6}  {as_completed}")

    squares = [i * i for i in range(n)]
    ok = (
        ordered == squares
        and sorted(unordered) == squares
        and sorted(as_completed) == squares
        and unordered[0] == squares[-1]  # the shortest sleep finishes first
        and first_unordered < first_ordered / 2
    )
    print(
        f"map_unordered's first result came {first_ordered / max(first_unordered, 1e-9):.0f}x sooner; "
        f"same values in completion order: {'yes' if ok else 'NO'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
