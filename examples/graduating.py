"""The way on: the same coursework program on minipool and on Dask, one line apart.

A student's program written against ``concurrent.futures.Executor`` (``submit``, ``map``,
``with``) and minipool's pipeline does not care whose executor it gets. This script runs one
such program -- a ``map``, a ``map_reduce`` and a pipeline whose middle stage runs on the
executor's workers -- twice: on ``minipool.Pool`` and on Dask's ``Client.get_executor()`` over
a ``distributed.LocalCluster``. The only line that differs is the one that makes the executor
(see ``executors()``); docs/graduating.md walks through what changes and what does not, and
what the same line is for Ray.

``map_reduce`` is written for any Executor: each worker maps and folds one chunk, and the
caller folds the partial results, which is what ``Pool.map_reduce`` does inside minipool (the
script checks the two agree). Dask workers here are threads of this process
(``processes=False``) so the run takes seconds; with processes they are separate programs and
everything still travels by pickle (Dask uses cloudpickle, so lambdas and ``__main__``
functions go by value as they do in minipool).

    python examples/graduating.py [--backend minipool|dask|both]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import operator
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from minipool import Pool
from minipool import pipeline as pl

# -- the coursework program: it only knows it has an Executor --------------------------------


def square(x: int) -> int:
    return x * x


def fold_chunk(fn: Callable[[Any], Any], op: Callable[[Any, Any], Any], chunk: list[Any]) -> Any:
    return functools.reduce(op, map(fn, chunk))


def map_reduce(executor: concurrent.futures.Executor, fn, op, items: list[Any], chunks: int = 4) -> Any:
    """SCOOP's mapReduce on any Executor: fold each chunk on a worker, fold the partials here."""
    size = -(-len(items) // chunks)
    parts = [items[i : i + size] for i in range(0, len(items), size)]
    return functools.reduce(op, executor.map(functools.partial(fold_chunk, fn, op), parts))


def coursework(executor: concurrent.futures.Executor) -> tuple[list[int], int, int]:
    squares = list(executor.map(square, range(10)))
    total = map_reduce(executor, square, operator.add, list(range(100)))
    piped = (
        pl.source(range(100))
        | pl.map(lambda x: x % 7 * x, executor=executor, workers=2)  # on the executor's workers
        | pl.filter(lambda x: x % 2 == 0)
        | pl.reduce(operator.add)
    ).run()
    return squares, total, piped


# -- the one line that differs ----------------------------------------------------------------


@contextlib.contextmanager
def minipool_executor() -> Iterator[concurrent.futures.Executor]:
    with Pool(2) as pool:
        yield pool


@contextlib.contextmanager
def dask_executor() -> Iterator[concurrent.futures.Executor]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client.get_executor()


def executors(backend: str) -> Iterable[tuple[str, Any]]:
    if backend in ("minipool", "both"):
        yield "minipool", minipool_executor
    if backend in ("dask", "both"):
        yield "dask", dask_executor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["minipool", "dask", "both"], default="minipool")
    args = parser.parse_args()
    answers = {}
    for name, make in executors(args.backend):
        with make() as executor:
            squares, total, piped = answers[name] = coursework(executor)
            if isinstance(executor, Pool):  # minipool's own map_reduce must agree with the portable one
                assert executor.map_reduce(square, operator.add, range(100)) == total
        print(f"{name:<8}: map {squares[:5]} ... map_reduce {total} pipeline {piped}")
    piped = [x % 7 * x for x in range(100)]
    expected = (
        [x * x for x in range(10)],
        sum(x * x for x in range(100)),
        sum(y for y in piped if y % 2 == 0),
    )
    ok = all(answer == expected for answer in answers.values())
    print(f"the same answers on {' and '.join(answers)}: {'yes' if ok else 'NO'}")
    if args.backend == "both":
        print(f"the same answers on both: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
