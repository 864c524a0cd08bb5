"""The heads of a pipeline (a source, a merge) and pulling records from a source in chunks.

Technique: batching with a deadline, as Kafka producers do (``batch.size`` + ``linger.ms``). A
source sends chunks of up to ``SOURCE_CHUNK`` records, so one queue handoff is shared by
hundreds of records; but a chunk never waits more than ``SOURCE_LINGER`` for more records: a
helper thread flushes it even while the source is blocked inside ``next()``, so a trickling
source (a log tail, a socket) still delivers each record within milliseconds. An async
iterable gets an event loop of its own on the source thread. In a durable rerun the source
first skips the records the journal says are done.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from .channels import Abandoned, Cancelled, Channel
from .errors import StageFailed
from .stats import StageStats

__all__ = [
    "Source",
    "Reader",
    "CHECKPOINT_NOW",
    "Merge",
    "SourceRun",
    "run_source",
    "SOURCE_CHUNK",
    "SOURCE_LINGER",
]

log = logging.getLogger("minipool.pipeline")

SOURCE_CHUNK = 256  # records per chunk leaving a source: amortises one queue handoff
SOURCE_LINGER = 0.005  # ...but a chunk waits at most this long for more records


class _CheckpointNow:
    def __repr__(self) -> str:
        return "CHECKPOINT_NOW"


#: What a :class:`Reader`'s records may yield (it is no record) to have the chunk so far sent
#: at once with a marker after it: a barrier in a durable run, so the reader soon sees a
#: checkpoint covering everything it handed out.
CHECKPOINT_NOW: Any = _CheckpointNow()


class Reader(Protocol):
    """A source that knows its position, e.g. a topic read through a consumer group.

    A plain iterable is resumed by skipping the records a journal counts as done; a reader is
    resumed *at a position* instead, and is told when every effect up to a position is safe
    (so it can commit it where its records come from). One reader is opened per run.
    """

    def records(self, position: Any, stop: threading.Event, durable: bool) -> Iterable[Any]:
        """The records after ``position`` (``None``: wherever the reader starts by itself);
        ``stop`` is the run's stop event; ``durable``: the run has a journal."""
        ...

    def advance(self, position: Any, chunk: list[Any]) -> Any:
        """The position after ``chunk``, a run of records :meth:`records` yielded."""
        ...

    def checkpoint(self, position: Any) -> None:
        """Every record before ``position`` has had its effect (called from other threads)."""
        ...

    def commit_as_read(self) -> None:
        """The run cannot track positions (its stages reorder records): there will be no
        checkpoints, so settle records as they are read."""
        ...

    def close(self) -> None:
        """The run is over: settle the last checkpoint and let go of the connection."""
        ...


class Source:
    """The head of a pipeline: an iterable, or a zero-argument callable returning one.

    A callable is called afresh for every run, so a generator function makes a re-runnable source.
    ``reader`` instead makes a :class:`Reader` for each run (a topic source).
    """

    def __init__(
        self,
        iterable: Iterable[Any] | Callable[[], Iterable[Any]],
        name: str | None,
        *,
        reader: Callable[[], Reader] | None = None,
    ) -> None:
        self.iterable = iterable
        self.name = name or "source"
        self.reader = reader


class Merge:
    """Fan-in head: the outputs of several pipelines, interleaved as they come.

    ``pipelines`` are checked by :func:`~.routing.merge`, which is how a merge is declared.
    """

    def __init__(self, pipelines: tuple[Any, ...]) -> None:
        self.pipelines = pipelines


class SourceRun(Protocol):
    """What a source thread needs from its run (an :class:`~.execution.Execution`)."""

    stop: threading.Event
    resume_from: int
    resume_position: Any
    reader: Reader | None
    durable: bool

    def send(
        self, out: Channel, chunk: list[Any], seq: int, stats: StageStats, *, barrier: bool = False
    ) -> int: ...

    def fail(self, exc: BaseException) -> None: ...


def run_source(execution: SourceRun, head: Source, out: Channel, stats: StageStats) -> None:
    """The source thread: pull records, send them in chunks, report a failure naming the source."""
    iterator: Any = None
    buffer = _SourceBuffer(execution, out, stats)
    flusher = threading.Thread(target=buffer.flush_when_idle, name=f"pl-{head.name}-flush", daemon=True)
    try:
        try:
            if execution.reader is not None:
                source = execution.reader.records(
                    execution.resume_position, execution.stop, execution.durable
                )
            else:
                source = head.iterable() if callable(head.iterable) else head.iterable
            iterator = _drive(source) if hasattr(source, "__aiter__") else iter(source)
            if execution.resume_from and execution.reader is None:  # a durable rerun: journaled
                for _ in itertools.islice(iterator, execution.resume_from):
                    pass
        except Exception as exc:
            raise StageFailed(head.name, exc) from exc
        flusher.start()
        clock, add = time.perf_counter, buffer.add
        while True:
            before = clock()
            try:
                item = next(iterator)
            except StopIteration:
                break
            except Exception as exc:
                raise StageFailed(head.name, exc) from exc
            stats.busy_seconds += clock() - before
            if item is CHECKPOINT_NOW:
                buffer.flush(barrier=True)
            else:
                add(item)
        buffer.flush()
        out.close()
    except (Abandoned, Cancelled):
        pass
    except BaseException as exc:
        execution.fail(exc)
    finally:
        buffer.done.set()
        if flusher.is_alive():
            flusher.join()
        stats.finished = time.perf_counter()
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("closing source %r", head.name)


class _SourceBuffer:
    """The chunk a source is filling, flushed when full or when it has waited too long.

    The source thread may be blocked inside ``next()`` for any length of time (a socket, a
    sleeping generator), so the "waited too long" flush happens on a small helper thread. The
    lock keeps chunks in order: whichever thread sends, it sends under the lock.
    """

    def __init__(self, execution: SourceRun, out: Channel, stats: StageStats) -> None:
        self.execution, self.out, self.stats = execution, out, stats
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.chunk: list[Any] = []
        self.started = 0.0
        self.seq = execution.resume_from
        self.halt: type[Exception] | None = None

    def add(self, item: Any) -> None:
        if self.halt is not None:  # seen by the flusher while the source was filling a chunk
            raise self.halt
        with self.lock:
            if not self.chunk:
                self.started = time.perf_counter()
            self.chunk.append(item)
            if len(self.chunk) >= SOURCE_CHUNK:
                self._send()

    def flush(self, *, barrier: bool = False) -> None:
        with self.lock:
            if self.chunk or barrier:
                self._send(barrier)

    def _send(self, barrier: bool = False) -> None:
        chunk, self.chunk = self.chunk, []
        self.seq = self.execution.send(self.out, chunk, self.seq, self.stats, barrier=barrier)

    def flush_when_idle(self) -> None:
        try:
            while not self.done.wait(SOURCE_LINGER):
                if self.execution.stop.is_set():
                    raise Cancelled
                if self.out.abandoned:
                    raise Abandoned
                with self.lock:
                    if self.chunk and time.perf_counter() - self.started >= SOURCE_LINGER:
                        self._send()
        except (Abandoned, Cancelled) as exc:
            self.halt = type(exc)  # the source thread stops at its next record


def _drive(source: Any) -> Iterator[Any]:
    """Iterate an async iterable (an ``async def`` generator) from the source thread.

    The source thread gets its own event loop, so a coroutine-based feed (a websocket, an
    asyncio queue consumer) can head a pipeline like any iterable.
    """
    loop = asyncio.new_event_loop()
    iterator = source.__aiter__()
    try:
        while True:
            try:
                yield loop.run_until_complete(iterator.__anext__())
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            loop.run_until_complete(aclose())
        loop.close()
