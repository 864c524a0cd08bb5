"""Mapping a function over a (possibly endless) iterable: chunks, a bounded window, order.

Technique: *tuning concurrency* (seed 000 §3.3) and SCOOP's ``futures.map`` /
``map_as_completed`` / ``mapReduce``. Three knobs decide how fast a parallel map runs:

* **chunksize** -- items per message. One item per message pays the full round trip per item;
  a chunk pays it once per chunk. ``chunksize=None`` picks it automatically: from the length
  when the iterable has one (like ``multiprocessing.Pool.map``), otherwise adaptively, growing
  the chunk until one takes about :data:`TARGET_CHUNK_SECONDS` of worker time.
* **the window** (``buffersize``) -- chunks in flight at once. Enough to keep every worker busy,
  few enough that memory stays bounded: the iterable is consumed only as results are taken, so
  ``map`` over an endless generator works, and the first result arrives long before the input
  ends (``ProcessPoolExecutor.map`` submits everything first).
* **order** -- :func:`ordered` yields results in input order (waiting on the oldest chunk);
  :func:`unordered` yields whichever chunk finishes first.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["ChunkSizer", "ordered", "unordered", "TARGET_CHUNK_SECONDS"]

#: Adaptive chunking aims for chunks that take about this long to run.
TARGET_CHUNK_SECONDS = 0.02
MAX_CHUNK = 100_000


class ChunkSizer:
    """Decides the size of the next chunk.

    Args:
        chunksize: a fixed size, or ``None`` for automatic.
        length: the iterable's length if known (``len()``), for automatic sizing.
        slots: the pool's total slots (for automatic sizing from a length).
    """

    def __init__(self, chunksize: int | None, length: int | None, slots: int) -> None:
        if chunksize is not None and chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        self.adaptive = chunksize is None and length is None
        if chunksize is not None:
            self.size = chunksize
        elif length is not None:
            # multiprocessing.Pool.map's rule: about four chunks per slot.
            self.size = max(1, min(MAX_CHUNK, -(-length // (4 * max(1, slots)))))
        else:
            self.size = 1

    def observe(self, items: int, seconds: float) -> None:
        """Feed back how long a chunk of ``items`` took from submission to result."""
        if not self.adaptive or items <= 0:
            return
        per_item = max(seconds / items, 1e-7)
        wanted = int(TARGET_CHUNK_SECONDS / per_item)
        # Grow at most 2x per step (no overshoot on a noisy sample), shrink at once.
        self.size = max(1, min(MAX_CHUNK, wanted, self.size * 2))

    def chunks(self, items: Iterator[Any]) -> Iterator[list[Any]]:
        while True:
            chunk = list(itertools.islice(items, self.size))
            if not chunk:
                return
            yield chunk


Submit = Callable[[list[Any]], concurrent.futures.Future]


def _remaining(end: float | None) -> float | None:
    if end is None:
        return None
    return max(0.0, end - time.monotonic())


def ordered(submit: Submit, chunks: Iterator[list[Any]], sizer: ChunkSizer, window: int,
            timeout: float | None) -> Iterator[Any]:
    """Submit chunks now (up to ``window``), then yield their results in order, refilling.

    ``submit`` turns a chunk into a future of the chunk's list of results. The first ``window``
    chunks are submitted before this returns, as ``Executor.map`` starts work at call time.
    """
    end = None if timeout is None else time.monotonic() + timeout
    inflight: collections.deque[tuple[concurrent.futures.Future, int, float]] = collections.deque()

    def push(chunk: list[Any]) -> None:
        inflight.append((submit(chunk), len(chunk), time.monotonic()))

    for chunk in itertools.islice(chunks, window):
        push(chunk)

    def results() -> Iterator[Any]:
        try:
            while inflight:
                future, count, started = inflight.popleft()
                values = future.result(_remaining(end))
                sizer.observe(count, time.monotonic() - started)
                chunk = next(chunks, None)
                if chunk is not None:
                    push(chunk)
                yield from values
        finally:
            for future, _, _ in inflight:
                future.cancel()

    return results()


def unordered(submit: Submit, chunks: Iterator[list[Any]], sizer: ChunkSizer, window: int,
              timeout: float | None = None) -> Iterator[Any]:
    """Like :func:`ordered`, but yield each chunk's results as soon as that chunk is done."""
    end = None if timeout is None else time.monotonic() + timeout
    done: queue.SimpleQueue[tuple[concurrent.futures.Future, int, float]] = queue.SimpleQueue()
    inflight: set[concurrent.futures.Future] = set()

    def push(chunk: list[Any]) -> None:
        started = time.monotonic()
        future = submit(chunk)
        inflight.add(future)
        future.add_done_callback(lambda f, n=len(chunk): done.put((f, n, started)))

    for chunk in itertools.islice(chunks, window):
        push(chunk)

    def results() -> Iterator[Any]:
        try:
            while inflight:
                try:
                    future, count, started = done.get(timeout=_remaining(end))
                except queue.Empty:
                    raise concurrent.futures.TimeoutError() from None
                inflight.discard(future)
                values = future.result()
                sizer.observe(count, time.monotonic() - started)
                chunk = next(chunks, None)
                if chunk is not None:
                    push(chunk)
                yield from values
        finally:
            for future in inflight:
                future.cancel()

    return results()


def length_of(iterable: Iterable[Any]) -> int | None:
    """``len(iterable)`` if it has one (lists, ranges), else ``None`` (generators)."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
