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
  ends (``ProcessPoolExecutor.map`` submits everything first). When the pool shuts down, the
  rest of the input of every live map is submitted (its :class:`Feed` is drained), so a map's
  results can still be read afterwards, as with ``Executor.map``.
* **order** -- :func:`ordered` yields results in input order (waiting on the oldest chunk);
  :func:`unordered` yields whichever chunk finishes first.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .futures import TaskFuture

__all__ = [
    "ChunkSizer",
    "Feed",
    "Feeds",
    "ordered",
    "unordered",
    "cancel_all",
    "as_listing",
    "window",
    "DEFAULT_WINDOW",
    "TARGET_CHUNK_SECONDS",
]

#: Adaptive chunking aims for chunks that take about this long to run.
TARGET_CHUNK_SECONDS = 0.02
MAX_CHUNK = 100_000
#: Chunks a map keeps in flight when ``buffersize`` is None.
DEFAULT_WINDOW = 64


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
        self.length = length
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
Sent = Callable[[concurrent.futures.Future, int, float], None]


class Feed:
    """The input side of one map: submits the next chunk on demand, or all the rest at once.

    ``Executor.map`` submits every item when it is called, so its results can all be read
    after ``shutdown()``. A minipool map reads its input lazily instead. When the pool shuts
    down, a map over an input of known length (a list, a range: what ``Executor.map`` would
    have submitted whole) has what is left submitted by :meth:`drain`, and the results that
    follow are the ones ``ProcessPoolExecutor`` would give. A map over an iterator may be
    endless, so draining it could never finish: its unread rest is cancelled (:meth:`cancel`) instead,
    and what it had submitted runs to its end. A lock makes the consumer's refills and a drain
    on the shutdown thread take turns over the one input iterator.

    Args:
        submit: turns a chunk into a future of the chunk's list of results.
        chunks: the chunks not yet submitted.
        sent: told ``(future, items, submitted at)`` of each submission.
        bounded: the input's length is known, so :meth:`drain` ends.
    """

    def __init__(self, submit: Submit, chunks: Iterator[list[Any]], sent: Sent, bounded: bool = True) -> None:
        self._submit = submit
        self._chunks = chunks
        self._sent = sent
        self.bounded = bounded
        self._lock = threading.Lock()
        self._error: BaseException | None = None  # the input failed during a drain

    def push(self) -> bool:
        """Submit the next chunk; False when the input is used up, or failed (see :attr:`error`)."""
        with self._lock:
            if self._error is not None:
                return False
            try:
                chunk = next(self._chunks, None)
                if chunk is None:
                    return False
                self._sent(self._submit(chunk), len(chunk), time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the consumer raises it, in its place
                self._error = exc
                return False
            return True

    @property
    def error(self) -> BaseException | None:
        """Why the input stopped early: what reading it (or submitting) raised, or
        ``CancelledError`` after :meth:`cancel`. The consumer raises it once it has had the
        results of everything submitted before: where a lazy map would have met it."""
        return self._error

    def cancel(self) -> None:
        """Submit nothing more: the pool shut down cancelling its futures, so the rest of the
        input is cancelled too, and reading its results raises ``CancelledError``."""
        with self._lock:
            if self._error is None:
                self._error = concurrent.futures.CancelledError()

    def drain(self) -> None:
        """Submit everything left (the pool is shutting down, or the map was dropped unread)."""
        while self.push():
            pass

    def finish(self) -> None:
        """The pool is shutting down: submit the rest of a bounded input, cancel an unbounded
        one's (an endless iterator would never be drained)."""
        if self.bounded:
            self.drain()
        else:
            self.cancel()


class Feeds:
    """A pool's maps, by their inputs: the live ones, for shutdown to drain, and the ones
    dropped before a result was read.

    ``Executor.map`` submits all its input at the call, so a map whose results are never read
    still runs every item (a common way to run a function for its side effects). A minipool map
    dropped unread therefore has the rest of its input submitted, on a thread so that the code
    dropping it does not wait; one dropped after results were read has its work in flight
    cancelled, as ``Executor.map``'s iterator does.
    """

    def __init__(self) -> None:
        self._live: weakref.WeakSet[Feed] = weakref.WeakSet()

    def add(self, feed: Feed) -> None:
        self._live.add(feed)

    def live(self) -> list[Feed]:
        return list(self._live)

    @staticmethod
    def orphan(feed: Feed) -> None:
        """A map dropped unread: submit the rest of its input if it has a known length (the
        thread keeps the feed alive, so a shutdown meanwhile still finds it, and waits for
        it). An iterator's rest is left unread: it may never end."""
        if not feed.bounded:
            return
        try:
            threading.Thread(target=feed.drain, daemon=True, name="minipool-map-rest").start()
        except RuntimeError:
            pass  # collected as the interpreter ends: the exit hook has drained every live map


def _start(feed: Feed, window: int) -> None:
    """Submit the first ``window`` chunks. An error reading this far is raised here, from the
    call, as ``Executor.map`` raises one (what was submitted runs on, as there)."""
    for _ in range(window):
        if not feed.push():
            break
    if feed.error is not None:
        raise feed.error


def _primed(results: Iterator[Any]) -> Iterator[Any]:
    """Run ``results`` to its first bare ``yield``, inside its ``try``: from then on closing or
    dropping the iterator runs its ``finally``, even before the first result is read."""
    next(results)
    return results


def _remaining(end: float | None) -> float | None:
    if end is None:
        return None
    return max(0.0, end - time.monotonic())


def ordered(
    submit: Submit,
    chunks: Iterator[list[Any]],
    sizer: ChunkSizer,
    window: int,
    timeout: float | None,
    feeds: Feeds | None = None,
) -> Iterator[Any]:
    """Submit chunks now (up to ``window``), then yield their results in order, refilling.

    ``submit`` turns a chunk into a future of the chunk's list of results. The first ``window``
    chunks are submitted before this returns, as ``Executor.map`` starts work at call time. The
    map's :class:`Feed` joins ``feeds`` (the pool's: see :class:`Feeds`).

    A result is not kept once it is yielded (``Executor.map`` pops its futures likewise): a
    consumer that drops a big result frees it at once.
    """
    end = None if timeout is None else time.monotonic() + timeout
    inflight: collections.deque[tuple[concurrent.futures.Future, int, float]] = collections.deque()
    feed = Feed(submit, chunks, lambda *sent: inflight.append(sent), sizer.length is not None)
    if feeds is not None:
        feeds.add(feed)
    _start(feed, window)

    def results() -> Iterator[Any]:
        read = False
        try:
            yield  # primed
            read = True
            while inflight:
                future, count, started = inflight.popleft()
                values = future.result(_remaining(end))
                del future  # the chunk's list is now only ours, and emptied as it is yielded
                sizer.observe(count, time.monotonic() - started)
                feed.push()
                values.reverse()
                while values:
                    yield values.pop()
            if feed.error is not None:
                raise feed.error
        finally:
            if read:
                cancel_all([future for future, _, _ in inflight])
            elif feeds is not None:
                feeds.orphan(feed)

    return _primed(results())


def unordered(
    submit: Submit,
    chunks: Iterator[list[Any]],
    sizer: ChunkSizer,
    window: int,
    timeout: float | None = None,
    feeds: Feeds | None = None,
    wait_any: Callable[[set[concurrent.futures.Future], float | None], Any] | None = None,
) -> Iterator[Any]:
    """Like :func:`ordered`, but yield each chunk's results as soon as that chunk is done.

    ``wait_any(futures, timeout)``: how to block until one of them is done, when blocking on
    the futures themselves matters (inside a task, a wait on them gives its slot back)."""
    end = None if timeout is None else time.monotonic() + timeout
    done: queue.SimpleQueue[tuple[concurrent.futures.Future, int, float]] = queue.SimpleQueue()
    inflight: set[concurrent.futures.Future] = set()

    def sent(future: concurrent.futures.Future, count: int, started: float) -> None:
        inflight.add(future)
        future.add_done_callback(lambda f: done.put((f, count, started)))

    feed = Feed(submit, chunks, sent, sizer.length is not None)
    if feeds is not None:
        feeds.add(feed)
    _start(feed, window)

    def results() -> Iterator[Any]:
        read = False
        try:
            yield  # primed
            read = True
            while inflight:
                if wait_any is not None and done.empty():
                    wait_any(inflight, _remaining(end))
                try:
                    future, count, started = done.get(timeout=_remaining(end))
                except queue.Empty:
                    raise concurrent.futures.TimeoutError() from None
                inflight.discard(future)
                values = future.result()
                del future
                sizer.observe(count, time.monotonic() - started)
                feed.push()
                values.reverse()
                while values:
                    yield values.pop()
            if feed.error is not None:
                raise feed.error
        finally:
            if read:
                cancel_all(list(inflight))
            elif feeds is not None:
                feeds.orphan(feed)

    return _primed(results())


def window(buffersize: int | None) -> int:
    """The chunks a map keeps in flight: ``buffersize``, or DEFAULT_WINDOW for ``None``.

    Raises:
        ValueError: ``buffersize`` is not a positive number (a window of nothing never runs).
    """
    if buffersize is None:
        return DEFAULT_WINDOW
    if isinstance(buffersize, bool) or not buffersize > 0:
        raise ValueError(f"buffersize must be greater than 0, not {buffersize!r}")
    return buffersize


def as_listing(
    future: concurrent.futures.Future, out: concurrent.futures.Future | None = None
) -> concurrent.futures.Future:
    """Wrap a future of one value as a future of a one-item list (for :func:`ordered`), in
    ``out`` if given (a pool's own kind of future: see ``ClientExecutor.future``)."""
    out = concurrent.futures.Future() if out is None else out

    def copy(f: concurrent.futures.Future) -> None:
        if f.cancelled():
            out.cancel()
        elif f.exception() is not None:
            out.set_exception(f.exception())
        else:
            out.set_result([f.result()])

    future.add_done_callback(copy)
    original_cancel = out.cancel
    out.cancel = lambda: future.cancel() and original_cancel()  # type: ignore[method-assign]
    return out


def cancel_all(futures: list[concurrent.futures.Future]) -> None:
    """Cancel ``futures``: a pool's together, in one question to its coordinator."""
    by_client: dict[Any, list[Any]] = {}
    for future in futures:
        if isinstance(future, TaskFuture):
            by_client.setdefault(future._client, []).append(future)
        else:
            future.cancel()
    for client, group in by_client.items():
        client.cancel(group)


def length_of(iterable: Iterable[Any]) -> int | None:
    """``len(iterable)`` if it has one (lists, ranges), else ``None`` (generators)."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None
