"""Seed 003's distributed sum: ``sum_partial`` over chunks of a list, on a process pool.

The seed splits a list of 1,000,000 numbers into as many chunks as processes, sums each chunk
with ``multiprocessing.Pool.map(sum_partial, chunks)`` and adds up the partial sums. The same
three lines run on ``minipool.Pool``: only the import and the constructor change. The script runs
both side by side, checks both against the closed form n(n-1)/2, and also shows ``Pool.map``
chunking a range by itself (``chunksize=None``) and ``map_reduce`` doing the adding too.

    python examples/distributed_sum.py                   # 1,000,000 numbers, 4 chunks, 2 processes
    python examples/distributed_sum.py 10000000 --chunks 8 --processes 4
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import operator
import sys
import time

from minipool import Pool


def sum_partial(data: list[int]) -> int:
    return sum(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    expected = args.n * (args.n - 1) // 2

    data = list(range(args.n))
    chunk_size = -(-len(data) // args.chunks)  # ceiling division: no number left over
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]

    start = time.perf_counter()
    with mp.Pool(processes=args.processes) as pool:
        mp_total = sum(pool.map(sum_partial, chunks))
    mp_s = time.perf_counter() - start

    start = time.perf_counter()
    with Pool(args.processes) as pool:
        total = sum(pool.map(sum_partial, chunks))
        first_s = time.perf_counter() - start
        # Warm: the pool is up, so this measures the sum alone.
        again = time.perf_counter()
        total_again = sum(pool.map(sum_partial, chunks))
        warm_s = time.perf_counter() - again
        # Let the pool cut the numbers into chunks and do the adding on the workers too:
        # each worker folds its chunk with operator.add, the caller folds the partial sums.
        by_range = pool.map_reduce(lambda x: x, operator.add, range(args.n), chunksize=chunk_size)
    minipool_s = time.perf_counter() - start

    print(f"sum of 0..{args.n - 1:,} in {len(chunks)} chunks on {args.processes} processes")
    print(f"closed form n(n-1)/2        : {expected}")
    print(f"multiprocessing.Pool.map    : {mp_total}  {mp_s:.2f} s (pool start-up included)")
    print(
        f"minipool.Pool.map           : {total}  {first_s:.2f} s (pool start-up included), "
        f"{warm_s:.3f} s warm"
    )
    print(f"minipool.Pool.map_reduce    : {by_range}  (whole run {minipool_s:.2f} s)")
    if not (mp_total == total == total_again == by_range == expected):
        print("the sums disagree!", file=sys.stderr)
        return 1
    print("all sums equal the closed form: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
