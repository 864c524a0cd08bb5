"""Seed 002's SCOOP, futures created on the workers: a tree of futures, each node a task.

SCOOP's documentation shows a function that submits futures of itself until a depth is reached,
so that the computation unfolds as a tree across the workers instead of being cut up at the
centre. With minipool the same program asks :func:`minipool.current_pool` for the pool its task
runs in and calls ``map`` there. The tree grows twice:

* the default way: the children stay in the worker of the task that made them, which runs them
  when it waits on them, and an idle worker steals the oldest (the biggest subtrees) -- work
  stealing, so that a node costs about a function call (docs/pool.md, "Children kept and
  stolen");
* SCOOP's way, ``current_pool(keep_children=False)``: every child goes through the coordinator.
  Every inner node waits on its children, and there are far more inner nodes than workers: it
  completes because a waiting task gives its slot back (docs/pool.md, "Tasks that submit
  tasks"). On ``ProcessPoolExecutor`` the same tree would stop for good once every worker held
  a waiting parent.

The script prints the tree's shape (futures per level), both times beside a serial run of the
same tree and the speed-ups, the steals, and the peak number of parents waiting at once, which
the coordinator counts; it checks the parallel answers against the serial one before exiting 0.

    python examples/nested_futures.py                     # 4 levels of 3 children
    python examples/nested_futures.py --levels 5 --branching 2 --work 200000 --workers 4
    python examples/nested_futures.py --quick

``run(quick=True)`` does the same and returns the figures as a dict, for the guided tour.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from minipool import Pool, current_pool


def leaf(seed: int, work: int) -> int:
    """A leaf's computation: a deterministic sum, long enough to be worth a task."""
    total = 0
    for i in range(work):
        total = (total + (i * i) ^ seed) % 1_000_003
    return total


def node(level: int, index: int, branching: int, work: int, keep: bool = True) -> tuple[int, list[int]]:
    """A subtree: ``(its value, futures per level below and at it)``. A leaf computes; an inner
    node maps itself over its children, on the pool it runs in -- SCOOP's recursive call.
    ``keep``: its children stay in its worker unless stolen (else through the coordinator)."""
    if level == 0:
        return leaf(index, work), [1]
    children = [index * branching + k for k in range(branching)]
    many = lambda value: [value] * branching  # noqa: E731
    pool = current_pool(keep_children=keep)
    return combine(list(pool.map(node, many(level - 1), children, many(branching), many(work), many(keep))))


def node_serial(level: int, index: int, branching: int, work: int) -> tuple[int, list[int]]:
    """The same tree, computed in this process: the reference value and time."""
    if level == 0:
        return leaf(index, work), [1]
    return combine([node_serial(level - 1, index * branching + k, branching, work) for k in range(branching)])


def combine(outcomes: list[tuple[int, list[int]]]) -> tuple[int, list[int]]:
    value = sum(v for v, _ in outcomes) % 1_000_003
    below = [sum(levels) for levels in zip(*(shape for _, shape in outcomes), strict=True)]
    return value, [*below, 1]


def run(
    quick: bool = False, levels: int = 4, branching: int = 3, work: int = 60_000, workers: int = 2
) -> dict[str, Any]:
    """Grow the tree on a pool of ``workers`` and serially; return the figures."""
    if quick:
        levels, branching, work = 3, 2, 20_000
    started = time.perf_counter()
    expected, shape = node_serial(levels, 0, branching, work)
    serial = time.perf_counter() - started
    with Pool(workers) as pool:
        pool.wait_for_workers()
        for keep in (True, False):  # every worker loads this module and makes its tasks' client
            list(pool.map(node, [1] * 2 * workers, range(2 * workers), [2] * 2 * workers, [1] * 2 * workers))
            pool.submit(node, 2, 0, 2, 1, keep).result()
        started = time.perf_counter()
        value, pool_shape = pool.submit(node, levels, 0, branching, work).result()
        parallel = time.perf_counter() - started
        steals = pool.status()["steals"]
        started = time.perf_counter()
        through_value, through_shape = pool.submit(node, levels, 0, branching, work, False).result()
        through = time.perf_counter() - started
        status = pool.status()
    return {
        "levels": levels,
        "branching": branching,
        "workers": workers,
        "futures_per_level": list(reversed(pool_shape)),  # the root first
        "futures": sum(pool_shape),
        "value": value,
        "matches_serial": value == expected == through_value and pool_shape == shape == through_shape,
        "serial_s": serial,
        "pool_s": parallel,
        "speedup": serial / parallel,
        "steals": steals,
        "through_s": through,
        "through_speedup": serial / through,
        "waiting_peak": status["waiting_peak"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--branching", type=int, default=3)
    parser.add_argument("--work", type=int, default=60_000, help="loop iterations per leaf")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a small tree, for a smoke test")
    args = parser.parse_args(argv)
    figures = run(args.quick, args.levels, args.branching, args.work, args.workers)
    print(f"a tree of {figures['futures']} futures, {figures['branching']} children per node:")
    for depth, count in enumerate(figures["futures_per_level"]):
        print(f"  level {depth}: {count:4d} {'future' if count == 1 else 'futures'}")
    print(
        f"serial {figures['serial_s']:.3f} s; on {figures['workers']} workers, children kept and"
        f" stolen {figures['pool_s']:.3f} s: speed-up {figures['speedup']:.2f}x"
        f" ({figures['steals']} steals); every child through the coordinator"
        f" {figures['through_s']:.3f} s: {figures['through_speedup']:.2f}x (a shared machine gives less)"
    )
    print(
        f"peak parents waiting at once: {figures['waiting_peak']} (children through the coordinator,"
        f" on {figures['workers']} slots)"
    )
    print(f"matches the serial tree: {'yes' if figures['matches_serial'] else 'NO'}")
    return 0 if figures["matches_serial"] else 1


if __name__ == "__main__":
    sys.exit(main())
