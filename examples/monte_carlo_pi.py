"""Seed 002's SCOOP Monte Carlo pi, with ``scoop.futures.map`` replaced by ``minipool.Pool.map``.

Throw random points at the unit square; the share that lands inside the quarter circle tends to
pi/4. SCOOP runs ``futures.map(evaluate_points_in_circle, [attempts] * tasks)`` across its
workers; minipool's ``Pool.map`` is the same call, and ``Pool.map_reduce`` is SCOOP's
``futures.mapReduce``. Each task gets its own random seed, so the parallel count is exactly
reproducible and the script checks it against a serial run of the same tasks. It runs the job
on pools of 1, 2 and 4 worker processes and prints the time and speed-up of each. The serial
run and each pool's run are timed in turns, three times, and the medians compared: on a shared
machine a serial run timed alone during someone else's build would fake a speed-up. The
speed-up is bounded by the free cores, and the script says when the pools did not pay.

    python examples/monte_carlo_pi.py                     # 16 tasks x 300,000 points
    python examples/monte_carlo_pi.py --tasks 32 --attempts 500000 --workers 1 2 4 8
    python examples/monte_carlo_pi.py --quick
"""

from __future__ import annotations

import argparse
import math
import operator
import random
import statistics
import sys
import time
from collections.abc import Callable

from minipool import Pool


def evaluate_points_in_circle(attempts: int, seed: int) -> int:
    """Points, out of ``attempts``, that fall inside the unit circle (the seed's function,
    with its own random generator so that every run gives the same count)."""
    rng = random.Random(seed)
    inside = 0
    for _ in range(attempts):
        x, y = rng.random(), rng.random()
        if x * x + y * y < 1.0:
            inside += 1
    return inside


def report(label: str, inside: int, points: int, seconds: float, serial_s: float) -> None:
    pi = 4.0 * inside / points
    error = abs(pi - math.pi) * 100 / math.pi
    print(
        f"{label:<22} pi = {pi:.6f}  error {error:.3f}%  {seconds:6.2f} s  "
        f"speed-up {serial_s / seconds:4.2f}x"
    )


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--attempts", type=int, default=300_000, help="points per task")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--quick", action="store_true", help="a small run (for the tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.attempts, args.workers = 8, 100_000, [1, 2]
    points = args.tasks * args.attempts
    seeds = range(args.tasks)
    print(f"{args.tasks} tasks x {args.attempts:,} points = {points:,} points")

    def serial() -> int:
        return sum(evaluate_points_in_circle(args.attempts, s) for s in seeds)

    expected, serial_s = timed(serial)
    report("serial", expected, points, serial_s, serial_s)

    speedups = {}
    for workers in args.workers:
        with Pool(workers) as pool:
            pool.wait_for_workers()  # time the computation, not the start of the processes
            serial_times, pool_times = [], []
            for _ in range(3):  # in turns, so load on the machine slows both alike
                serial_times.append(timed(serial)[1])
                # SCOOP: futures.map(evaluate_points_in_circle, [attempts] * tasks)
                inside, seconds = timed(
                    lambda p=pool: sum(p.map(evaluate_points_in_circle, [args.attempts] * args.tasks, seeds))
                )
                pool_times.append(seconds)
            alongside, seconds = statistics.median(serial_times), statistics.median(pool_times)
            report(f"Pool({workers}).map", inside, points, seconds, alongside)
            speedups[workers] = alongside / seconds
            if inside != expected:
                print("the pool's count differs from the serial count!", file=sys.stderr)
                return 1

    # SCOOP's futures.mapReduce: each worker sums its chunk, the caller sums the partial sums
    with Pool(max(args.workers)) as pool:
        attempts = args.attempts
        inside = pool.map_reduce(lambda seed: evaluate_points_in_circle(attempts, seed), operator.add, seeds)
    print(f"{'Pool.map_reduce':<22} pi = {4.0 * inside / points:.6f}")
    if inside != expected:
        print("map_reduce's count differs from the serial count!", file=sys.stderr)
        return 1
    print("every pool's count matches the serial count: yes")
    best = max(speedups, key=lambda w: speedups[w])
    if speedups[best] >= 1.15:
        print(f"the pool pays: {speedups[best]:.2f}x with {best} workers (medians, timed in turns)")
    else:
        print(
            f"the pools did not pay here (best {speedups[best]:.2f}x): each task is "
            f"{serial_s / args.tasks * 1e3:.1f} ms of work, so either the tasks are too small to hide "
            "a round trip or the cores are busy with other work; try more --attempts"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
