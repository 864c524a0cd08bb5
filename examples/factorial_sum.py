"""Seed 001's factorial sum: several factorial pipes feeding one combining pipe.

The seed splits "sum of n! for n = 1..N" into two kinds of task with their own service IDs:
factorial pipes (several, in parallel) and one combining pipe that merges their results and
hands the total to the callback layer. In minipool that is three lines: each factorial pipe is a
pipeline over its share of the numbers whose factorial stage runs on a worker process; the
pipes are merged (fan-in) and one ``reduce`` is the combining pipe. The script checks the
answer against a plain loop, prints both timings and says whether the pipes paid.

Where it pays: a factorial pipe pays when its factorials take longer to compute than to ship
(with the worker processes' start-up spread over the run). n! for n in the thousands takes
milliseconds, so N = 6000 (the default) gains on two idle cores; below N of about 2000 each
factorial is microseconds of work, the start-up and the shipping dominate, and the plain loop
wins -- the script says so rather than report a slowdown as a result.

    python examples/factorial_sum.py            # N = 6000, 2 factorial pipes
    python examples/factorial_sum.py 400        # too small to pay: the plain loop wins
    python examples/factorial_sum.py 8000 --pipes 3
"""

from __future__ import annotations

import argparse
import math
import operator
import sys
import time

from minipool import pipeline as pl


def factorial_pipe(numbers: range, index: int) -> pl.Pipeline:
    """One factorial pipe: its share of the numbers, factorials computed on a worker process."""
    return pl.source(numbers, name=f"numbers[{index}]") | pl.map(
        math.factorial, kind="process", chunksize=8, name=f"factorial[{index}]"
    )


def factorial_sum(n: int, pipes: int) -> int:
    # Interleaved shares (1, 1+p, 1+2p, ...) balance the work: big factorials cost the most.
    branches = [factorial_pipe(range(1 + i, n + 1, pipes), i) for i in range(pipes)]
    combine = pl.reduce(operator.add, initial=0, name="combine")
    return (pl.merge(*branches) | combine).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, nargs="?", default=6000)
    parser.add_argument("--pipes", type=int, default=2)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    expected = sum(math.factorial(k) for k in range(1, args.n + 1))
    serial_s = time.perf_counter() - start

    start = time.perf_counter()
    total = factorial_sum(args.n, args.pipes)
    pipe_s = time.perf_counter() - start
    if total != expected:
        print("the pipeline's sum differs from the plain loop!", file=sys.stderr)
        return 1
    digits = math.floor(math.log10(total)) + 1  # str() of a huge int is refused past 4300 digits
    print(f"sum of n! for n = 1..{args.n}: a {digits}-digit number ending in ...{total % 10**12:012d}")
    print(f"plain loop      : {serial_s:.2f} s")
    print(
        f"{args.pipes} factorial pipes + 1 combining pipe: {pipe_s:.2f} s "
        f"(includes starting {args.pipes} worker processes)"
    )
    ratio = serial_s / pipe_s
    if ratio >= 1.15:
        print(f"the pipes pay: {ratio:.2f}x the plain loop")
    else:
        print(
            f"the pipes do not pay at N = {args.n}: {ratio:.2f}x the plain loop. Each factorial is "
            "too little work to cover shipping it between processes and starting them; try a "
            "larger N on idle cores (see the docstring)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
