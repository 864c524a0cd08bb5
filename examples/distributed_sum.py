"""Seed 003's distributed sum: ``sum_partial`` over chunks of a list, on a process pool.

The seed splits a list of 1,000,000 numbers into as many chunks as processes, sums each chunk
with ``multiprocessing.Pool.map(sum_partial, chunks)`` and adds up the partial sums. The same
three lines run on ``minipool.Pool``: only the import and the constructor change. The script runs
both side by side beside the plain serial ``sum``, checks all against the closed form
n(n-1)/2, and also lets ``map_reduce`` cut ``range(n)`` into chunks itself (``chunksize=``) and
do the adding on the workers.

What it teaches is the cost of moving data: adding a million numbers takes milliseconds, and
pickling them to other processes and back takes longer, so both pools run *slower* than the
serial sum here. A distributed sum pays when each chunk's work outweighs shipping it -- or
when the data is already where the workers are, as with ``map_reduce`` over a ``range``, where
only the bounds travel.

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
    serial_total = sum(map(sum_partial, chunks))
    serial_s = time.perf_counter() - start

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
        reduce_start = time.perf_counter()
        by_range = pool.map_reduce(lambda x: x, operator.add, range(args.n), chunksize=chunk_size)
        reduce_s = time.perf_counter() - reduce_start
    minipool_s = time.perf_counter() - start

    print(f"sum of 0..{args.n - 1:,} in {len(chunks)} chunks on {args.processes} processes")
    print(f"closed form n(n-1)/2        : {expected}")
    print(f"serial sum of the chunks    : {serial_total}  {serial_s:.3f} s")
    print(f"multiprocessing.Pool.map    : {mp_total}  {mp_s:.2f} s (pool start-up included)")
    print(
        f"minipool.Pool.map           : {total}  {first_s:.2f} s (pool start-up included), "
        f"{warm_s:.3f} s warm"
    )
    print(
        f"minipool.Pool.map_reduce    : {by_range}  {reduce_s:.3f} s, chunksize={chunk_size:,} "
        f"(whole run {minipool_s:.2f} s)"
    )
    warm_ratio = serial_s / warm_s
    print(
        f"the warm pool ran at {warm_ratio:.2f}x the serial sum: "
        + (
            "shipping the chunks to the workers cost more than adding them"
            if warm_ratio < 1
            else "each chunk's adding outweighed shipping it"
        )
    )
    if not (serial_total == mp_total == total == total_again == by_range == expected):
        print("the sums disagree!", file=sys.stderr)
        return 1
    print("all sums equal the closed form: yes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
