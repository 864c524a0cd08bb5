"""The operators a pipeline is written with: ``source | map | filter | ... | reduce``.

Technique: the composable operators of toolz, Beam and the Unix tool box, each a small
declaration (:class:`~.core.Stage`) with a small runtime (:class:`~.runtime.Runtime`), written
against the same public interface a new operator uses (:func:`~.core.stage`,
:class:`~.core.Terminal`, :class:`~.core.Fold`). Record-at-a-time operators (``map``,
``filter``, ``flat_map``, ``key_by``) run on any stage kind (see :mod:`.runners`); operators that
remember records (``batch``, ``distinct``, ``reduce_by_key``, ``top``) run in their stage thread;
terminal operators (``collect``, ``reduce``, ``sink``, ``count``, ``to_dict``) fold the stream
into the value ``run()`` returns. Fan-in and sharding live in :mod:`.routing`.
"""

from __future__ import annotations

import functools
import heapq
import math
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any

from .core import Fold, Pipeline, Stage, Terminal, collect, positive_int, stage
from .errors import PipelineError
from .runners import ErrorPolicy, MapRuntime, Mode, StageKind
from .runtime import Runtime, StageDone
from .sources import Source

__all__ = [
    "source",
    "map",
    "filter",
    "flat_map",
    "key_by",
    "tap",
    "batch",
    "micro_batch",
    "take",
    "distinct",
    "reduce_by_key",
    "count_by",
    "top",
    "collect",
    "reduce",
    "sink",
    "count",
    "to_dict",
    "MapStage",
]

_NOTHING: Any = object()


def source(iterable: Iterable[Any] | Callable[[], Iterable[Any]], *, name: str | None = None) -> Pipeline:
    """Start a pipeline from an iterable (finite or endless), an async iterable, or a function
    returning one (called afresh on every run, so a generator function can be run twice).

    Raises:
        PipelineError: ``iterable`` is neither iterable nor callable.
    """
    if not (callable(iterable) or hasattr(iterable, "__iter__") or hasattr(iterable, "__aiter__")):
        raise PipelineError(f"source() needs an iterable, got {type(iterable).__name__}")
    return Pipeline(Source(iterable, name), [])


class MapStage(Stage):
    """A record-at-a-time stage: ``map``, ``filter`` or ``flat_map`` on any kind of worker."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        mode: Mode,
        *,
        kind: str = "thread",
        workers: int | None = None,
        executor: Executor | None = None,
        chunksize: int | None = None,
        retries: int = 0,
        errors: str = "fail",
        name: str | None = None,
        label: str | None = None,
    ) -> None:
        self.fn, self.mode, self.name = fn, mode, name
        self.label = label or f"{mode.value}({getattr(fn, '__name__', type(fn).__name__)})"
        if executor is not None:
            if not isinstance(executor, Executor):
                raise PipelineError(f"executor= needs a concurrent.futures.Executor, got {executor!r}")
            kind = "executor"
        try:
            self.kind = StageKind(kind)
        except ValueError:
            raise PipelineError(f"kind must be one of {[k.value for k in StageKind]}, got {kind!r}") from None
        if self.kind is StageKind.EXECUTOR and executor is None:
            raise PipelineError("kind='executor' needs executor=...")
        self.kind_name = self.kind.value
        self.executor = executor
        if workers is None:
            workers = 1 if executor is None else executor_parallelism(executor)
        self.workers = positive_int("workers", workers)
        self.chunksize = None if chunksize is None else positive_int("chunksize", chunksize)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise PipelineError(f"retries must be a non-negative integer, got {retries!r}")
        self.retries = retries
        try:
            self.errors = ErrorPolicy(errors)
        except ValueError:
            raise PipelineError(
                f"errors must be one of {[e.value for e in ErrorPolicy]}, got {errors!r}"
            ) from None

    def open(self, name: str, run: Any, stats: Any) -> MapRuntime:
        return MapRuntime(self, name, run, stats)


def executor_parallelism(executor: Executor) -> int:
    """How many calls an ``executor=`` stage keeps in flight unless told: as many as the executor
    runs at once when it says (a minipool ``Pool``'s ``slots()``; ``ThreadPoolExecutor`` and
    ``ProcessPoolExecutor`` keep it in ``_max_workers``), else one per CPU here. One call in
    flight would leave all but one of a pool's workers idle; many more would only queue."""
    slots = getattr(executor, "slots", None)
    known = slots() if callable(slots) else getattr(executor, "_max_workers", None)
    if isinstance(known, int) and not isinstance(known, bool) and known > 0:
        return known
    return os.cpu_count() or 1


def map(fn: Callable[[Any], Any], **options: Any) -> MapStage:  # noqa: A001 - the domain's word
    """Emit ``fn(record)`` for each record.

    Args:
        fn: the function (a coroutine function with ``kind="async"``).
        kind: ``"thread"`` (default), ``"process"``, ``"async"``; or pass ``executor=``.
        workers: parallel calls in flight (threads, processes, coroutines); 1 by default, or
            with ``executor=``, as many as the executor runs at once
            (:func:`executor_parallelism`).
        executor: any ``concurrent.futures.Executor``, e.g. a minipool ``Pool``.
        chunksize: records per task sent to a pool (default: adaptive).
        retries: extra attempts for a record whose call raised.
        errors: ``"fail"`` (default), ``"skip"`` or ``"dead_letter"``.
        name: the stage's name in errors and statistics.
    """
    return MapStage(fn, Mode.MAP, **options)


def filter(pred: Callable[[Any], Any], **options: Any) -> MapStage:  # noqa: A001
    """Keep the records for which ``pred(record)`` is true (options as for :func:`map`)."""
    return MapStage(pred, Mode.FILTER, **options)


def flat_map(fn: Callable[[Any], Iterable[Any]], **options: Any) -> MapStage:
    """Emit every item of ``fn(record)`` (options as for :func:`map`)."""
    return MapStage(fn, Mode.FLAT_MAP, **options)


def _pair(key: Callable[[Any], Any], record: Any) -> tuple[Any, Any]:
    return key(record), record


def key_by(key: Callable[[Any], Any], **options: Any) -> MapStage:
    """Emit ``(key(record), record)`` pairs, the input of ``reduce_by_key`` and keyed windows."""
    return MapStage(
        functools.partial(_pair, key), Mode.MAP, label=f"key_by({getattr(key, '__name__', 'key')})", **options
    )


def _tap(fn: Callable[[Any], Any], record: Any) -> Any:
    fn(record)
    return record


def tap(fn: Callable[[Any], Any], **options: Any) -> MapStage:
    """Call ``fn(record)`` for its side effect (logging, metrics) and pass the record on."""
    return MapStage(functools.partial(_tap, fn), Mode.MAP, label="tap", **options)


class _MicroBatch(Runtime):
    """Lists of up to ``size`` records, cut also at every ``seconds`` boundary of the clock."""

    state_fields = ("buffer",)

    def __init__(self, size: int | None, seconds: float | None) -> None:
        self.size, self.seconds = size, seconds
        self.buffer: list[Any] = []
        self.epoch = time.monotonic()
        self.deadline = math.inf  # when the batch being filled closes (time batches)

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        if self.seconds is not None:
            self.poll(emit)  # the interval may have ended while this chunk was on its way
            if not self.buffer and chunk:
                now = time.monotonic()
                self.deadline = now + self.seconds - (now - self.epoch) % self.seconds
        self.buffer.extend(chunk)
        size = self.size
        if size is not None and len(self.buffer) >= size:
            cut = len(self.buffer) - len(self.buffer) % size
            emit([self.buffer[i : i + size] for i in range(0, cut, size)])
            del self.buffer[:cut]

    def restore(self, snapshot: bytes) -> None:
        super().restore(snapshot)
        if self.buffer and self.seconds is not None:  # the interval they arrived in is over
            self.deadline = time.monotonic()

    def wait_hint(self) -> float | None:
        if not self.buffer or self.seconds is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def poll(self, emit: Callable[[Any], None]) -> None:
        if self.buffer and time.monotonic() >= self.deadline:
            batch, self.buffer = self.buffer, []
            emit([batch])

    def holding(self) -> bool:
        return bool(self.buffer)

    def finish(self, emit: Callable[[Any], None]) -> None:
        if self.buffer:
            emit([self.buffer])


def micro_batch(size: int | None = None, *, seconds: float | None = None, name: str | None = None) -> Stage:
    """Cut the stream into lists: of ``size`` records, every ``seconds``, or whichever comes first.

    Spark Streaming's model: a time batch holds the records that arrived in one interval of
    the clock (intervals start when the run does), so a fast stream and a slow one both give a
    batch per interval; an interval with no records gives no batch. With ``size=`` too, a full
    batch leaves at once. The last batch may be shorter. This is processing time: for event-time
    grouping use :func:`~.windows.window` with ``timestamp=``.

    Raises:
        PipelineError: neither ``size`` nor ``seconds``, or a non-positive one.
    """
    if size is None and seconds is None:
        raise PipelineError("micro_batch() needs size= (records), seconds= (time) or both")
    if size is not None:
        positive_int("batch size", size)
    if seconds is not None and (
        isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0
    ):
        raise PipelineError(f"micro_batch seconds must be a positive number, got {seconds!r}")
    label = f"micro_batch({size or ''}{',' if size and seconds else ''}{f'{seconds}s' if seconds else ''})"
    return stage(lambda: _MicroBatch(size, seconds), label=label, stateful=True, name=name)


def batch(size: int, *, name: str | None = None) -> Stage:
    """Group records into lists of ``size`` (the last one may be shorter): ``micro_batch(size)``."""
    positive_int("batch size", size)
    return stage(lambda: _MicroBatch(size, None), label=f"batch({size})", stateful=True, name=name)


class _Take(Runtime):
    def __init__(self, n: int) -> None:
        self.left = n

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        if len(chunk) >= self.left:
            emit(chunk[: self.left])
            self.left = 0
            raise StageDone
        self.left -= len(chunk)
        emit(chunk)


def take(n: int, *, name: str | None = None) -> Stage:
    """Pass the first ``n`` records, then stop everything upstream (endless sources included)."""
    positive_int("take(n)", n)
    return stage(lambda: _Take(n), label=f"take({n})", stateful=False, name=name)


class _Distinct(Runtime):
    state_fields = ("seen",)

    def __init__(self, key: Callable[[Any], Any] | None) -> None:
        self.key = key
        self.seen: set[Any] = set()

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        out = []
        for record in chunk:
            k = record if self.key is None else self.key(record)
            if k not in self.seen:
                self.seen.add(k)
                out.append(record)
        if out:
            emit(out)

    def holding(self) -> bool:
        return bool(self.seen)


def distinct(key: Callable[[Any], Any] | None = None, *, name: str | None = None) -> Stage:
    """Drop records whose key (default: the record) was seen before. Memory grows with keys."""
    return stage(lambda: _Distinct(key), label="distinct", stateful=True, name=name)


class _ReduceByKey(Runtime):
    state_fields = ("acc",)

    def __init__(self, fn: Callable[[Any, Any], Any], key: Callable[[Any], Any] | None) -> None:
        self.fn, self.key = fn, key
        self.acc: dict[Any, Any] = {}

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        acc, fn = self.acc, self.fn
        for record in chunk:
            k, v = record if self.key is None else (self.key(record), record)
            acc[k] = fn(acc[k], v) if k in acc else v

    def holding(self) -> bool:
        return bool(self.acc)

    def finish(self, emit: Callable[[Any], None]) -> None:
        if self.acc:
            emit(list(self.acc.items()))


def reduce_by_key(
    fn: Callable[[Any, Any], Any], *, key: Callable[[Any], Any] | None = None, name: str | None = None
) -> Stage:
    """Fold the values of each key with ``fn``; emit ``(key, value)`` pairs when input ends.

    Input: ``(key, value)`` pairs (from ``key_by`` or ``map``), or any record with ``key=``.
    This is MapReduce's reduce phase (seed 004); put it inside ``shard`` to run it in parallel.
    """
    return stage(lambda: _ReduceByKey(fn, key), label="reduce_by_key", stateful=True, name=name)


def count_by(key: Callable[[Any], Any], *, name: str | None = None) -> Stage:
    """Emit ``(key, count)`` for every distinct ``key(record)`` when the input ends."""
    return stage(lambda: _CountBy(key), label="count_by", stateful=True, name=name)


class _CountBy(_ReduceByKey):
    def __init__(self, key: Callable[[Any], Any]) -> None:
        super().__init__(int.__add__, None)
        self.keyfn = key

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        acc, key = self.acc, self.keyfn
        for record in chunk:
            k = key(record)
            acc[k] = acc.get(k, 0) + 1


class _Top(Runtime):
    state_fields = ("heap", "arrivals")

    def __init__(self, k: int, key: Callable[[Any], Any] | None) -> None:
        self.k, self.key = k, key
        self.heap: list[tuple[Any, int, Any]] = []  # (key, -arrival, record)
        self.arrivals = 0

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        heap = self.heap
        for record in chunk:
            # the counter breaks ties by arrival, so records themselves are never compared
            self.arrivals += 1
            item = (record if self.key is None else self.key(record), -self.arrivals, record)
            if len(heap) < self.k:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)

    def holding(self) -> bool:
        return bool(self.heap)

    def finish(self, emit: Callable[[Any], None]) -> None:
        if self.heap:
            emit([item[2] for item in sorted(self.heap, key=lambda i: i[:2], reverse=True)])


def top(k: int, *, key: Callable[[Any], Any] | None = None, name: str | None = None) -> Stage:
    """Emit the ``k`` largest records (by ``key``), largest first, when the input ends."""
    positive_int("top(k)", k)
    return stage(lambda: _Top(k, key), label=f"top({k})", stateful=True, name=name)


def reduce(fn: Callable[[Any, Any], Any], initial: Any = _NOTHING, *, name: str | None = None) -> Terminal:
    """Terminal: ``functools.reduce(fn, records, initial)``; the combine stage of a fan-in.

    Raises (at the end of the run):
        PipelineError: the stream was empty and no ``initial`` was given.
    """

    def apply(state: Any, records: list[Any]) -> Any:
        if not records:
            return state
        if state is _NOTHING:
            return functools.reduce(fn, records)
        return functools.reduce(fn, records, state)

    def result(state: Any) -> Any:
        if state is _NOTHING:
            raise PipelineError("reduce() of an empty stream with no initial value")
        return state

    return Fold(f"reduce({getattr(fn, '__name__', 'fn')})", lambda: initial, apply, result, name)


def sink(fn: Callable[[Any], Any], *, name: str | None = None) -> Terminal:
    """Terminal: call ``fn(record)`` for each record; ``run()`` returns how many it saw."""

    def apply(state: int, records: list[Any]) -> int:
        for record in records:
            fn(record)
        return state + len(records)

    return Fold(f"sink({getattr(fn, '__name__', 'fn')})", int, apply, name=name)


def count(*, name: str | None = None) -> Terminal:
    """Terminal: the number of records."""
    return Fold("count", int, lambda state, records: state + len(records), name=name)


def _update(state: dict[Any, Any], records: list[Any]) -> dict[Any, Any]:
    state.update(records)
    return state


def to_dict(*, name: str | None = None) -> Terminal:
    """Terminal: a dict from ``(key, value)`` records (later keys win)."""
    return Fold("to_dict", dict, _update, name=name)
