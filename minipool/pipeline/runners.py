"""Where a stage's function runs: in a thread, a process pool, an event loop or any Executor.

Technique: seed 001's three kinds of pipe (process pipes for CPU-bound work, thread pipes for
blocking I/O, coroutine pipes for many waits on one thread) behind one interface. Every kind is
reduced to the same thing: *submit a piece of a chunk, get a ``concurrent.futures.Future`` of
``(outputs, failures, busy_seconds)``*. The stage keeps a bounded deque of those futures and
emits them in order, so results keep the input order whatever the kind, and the bound is the
stage's share of backpressure.

* ``thread`` with one worker (the default) runs the function in the stage's own thread: no
  handoff at all, which is why a fast channel between two thread stages costs a microsecond.
* ``thread`` with N workers uses a ``ThreadPoolExecutor``; pieces of one record let N blocking
  calls overlap.
* ``process`` uses a ``ProcessPoolExecutor`` (forkserver start: no fork of a threaded parent).
  Pieces are several records, so one pickle round-trip is shared. The function travels as
  :func:`minipool.shipping.dumps` bytes, so lambdas and functions from ``__main__`` work; each
  worker process of the stage's own pool loads it once, when it starts.
* ``async`` runs one event loop in a thread; a semaphore keeps ``workers`` coroutines in flight.
* ``executor=`` takes any ``concurrent.futures.Executor`` (a minipool ``Pool`` included). Its
  workers serve others too, so every piece carries the function's bytes, and a worker loads
  them through :func:`minipool.task.load_function`, the cache minipool's own tasks use: one
  unpickling per function per process, within one bound. minipool never shuts down an
  executor it was given.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import enum
import inspect
import logging
import math
import multiprocessing
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import shipping, task
from .channels import Cancelled, Marker
from .errors import PipelineError, StageDefinitionError, StageFailed
from .runtime import Runtime

__all__ = ["StageKind", "Mode", "ErrorPolicy", "DeadLetter", "apply_chunk", "MapRuntime"]

log = logging.getLogger("minipool.pipeline")


class StageKind(enum.Enum):
    """Where a record-at-a-time stage runs its function (``kind=`` of ``map`` and friends)."""

    THREAD = "thread"
    PROCESS = "process"
    ASYNC = "async"
    EXECUTOR = "executor"


class Mode(enum.Enum):
    """What a record-at-a-time stage does with its function's return value."""

    MAP = "map"  # emit the value
    FILTER = "filter"  # emit the record if the value is true
    FLAT_MAP = "flat_map"  # emit every item of the value


class ErrorPolicy(enum.Enum):
    """What a stage does with a record whose function raised (after ``retries``)."""

    FAIL = "fail"  # stop the pipeline with StageFailed (the default)
    SKIP = "skip"  # log it, count it, go on
    DEAD_LETTER = "dead_letter"  # keep (stage, record, error) in Execution.dead_letters, go on


@dataclass(frozen=True)
class DeadLetter:
    stage: str
    record: Any
    error: BaseException


def apply_chunk(
    mode: Mode, fn: Callable[[Any], Any], records: list[Any], retries: int
) -> tuple[list[Any], list[tuple[Any, BaseException]], float]:
    """Apply ``fn`` to each record: ``(outputs, [(record, error)], busy_seconds)``."""
    start = time.perf_counter()
    results = []
    for record in records:
        for _ in range(retries + 1):
            try:
                results.append((True, fn(record)))
                break
            except Exception as exc:  # a stage's failure is data for its error policy
                error = exc
        else:
            results.append((False, error))
    return (*_sort_outcomes(mode, records, results), time.perf_counter() - start)


def _sort_outcomes(
    mode: Mode, records: list[Any], results: list[tuple[bool, Any]]
) -> tuple[list[Any], list[tuple[Any, BaseException]]]:
    """Split ``(ok, value)`` outcomes into the stage's outputs and its ``(record, error)`` failures."""
    out: list[Any] = []
    failures: list[tuple[Any, BaseException]] = []
    for record, (ok, value) in zip(records, results, strict=True):
        if not ok:
            failures.append((record, value))
        elif mode is Mode.MAP:
            out.append(value)
        elif mode is Mode.FILTER:
            if value:
                out.append(record)
        else:
            out.extend(value)
    return out, failures


_stage_function: Callable[[Any], Any] | None = None  # in a worker of a stage's own pool


def _install(blob: bytes) -> None:
    """Process-pool initializer: a stage's own pool runs that stage's function only."""
    global _stage_function
    _stage_function = task.load_function(blob)


def _run_installed(mode: Mode, records: list[Any], retries: int) -> Any:
    """The worker side of a process stage (importable, so it travels by name)."""
    if _stage_function is None:
        raise PipelineError("stage function missing in the worker process")
    return _portable(*apply_chunk(mode, _stage_function, records, retries))


def _run_shipped(blob: bytes, mode: Mode, records: list[Any], retries: int) -> Any:
    """The worker side of a stage on a given executor, whose workers may serve anything."""
    return _portable(*apply_chunk(mode, task.load_function(blob), records, retries))


def _portable(out: list[Any], failures: list[tuple[Any, BaseException]], busy: float) -> Any:
    """The outcome of a piece, with every error able to travel back to the stage."""
    portable = []
    for record, error in failures:
        try:
            pickle.dumps(error)
        except Exception:  # an exception that cannot travel back still must say what happened
            error = PipelineError(f"{type(error).__name__}: {error}")
        portable.append((record, error))
    return out, portable, busy


async def _apply_async(
    mode: Mode, fn: Callable[[Any], Any], records: list[Any], retries: int, gate: asyncio.Semaphore
) -> Any:
    start = time.perf_counter()

    async def one(record: Any) -> tuple[bool, Any]:
        async with gate:
            for _ in range(retries + 1):
                try:
                    return True, await fn(record)
                except Exception as exc:
                    error = exc
            return False, error

    results = await asyncio.gather(*(one(r) for r in records))
    return (*_sort_outcomes(mode, records, list(results)), time.perf_counter() - start)


class _LoopThread:
    """An asyncio event loop on its own daemon thread, stopped and joined by ``shutdown``."""

    def __init__(self, name: str, concurrency: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.gate = asyncio.Semaphore(concurrency)
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Any) -> cf.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def shutdown(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def check_function(stage: str, fn: Any, kind: StageKind) -> bytes | None:
    """Refuse a function that cannot run as ``kind``; return its shipped bytes when it travels.

    Raises:
        StageDefinitionError: not callable, a coroutine function outside ``async``, a plain
            function given to ``async``, or a function that cannot be shipped to a process.
    """
    if not callable(fn):
        raise StageDefinitionError(stage, f"expected a function, got {type(fn).__name__}")
    is_coro = inspect.iscoroutinefunction(fn)
    if is_coro and kind is not StageKind.ASYNC:
        raise StageDefinitionError(
            stage, f"{getattr(fn, '__name__', fn)!r} is a coroutine function; use kind='async'"
        )
    if kind is StageKind.ASYNC and not is_coro:
        raise StageDefinitionError(stage, f"kind='async' needs a coroutine function (async def), got {fn!r}")
    if kind in (StageKind.PROCESS, StageKind.EXECUTOR):
        try:
            return shipping.dumps(fn)
        except Exception as exc:
            raise StageDefinitionError(
                stage,
                f"function {getattr(fn, '__name__', fn)!r} cannot travel to another "
                f"process: {type(exc).__name__}: {exc}",
            ) from exc
    return None


class MapRuntime(Runtime):
    """The running form of a map/filter/flat_map stage of any kind.

    The core's stage loop calls ``feed`` per inbound chunk, ``mark`` per marker, ``poll`` when
    the inbound channel is idle, ``finish`` at END and ``close`` always (workers shut down).
    """

    self_timed = True  # apply_chunk measures busy time itself, excluding waits on neighbours

    def __init__(self, spec: Any, name: str, run: Any, stats: Any) -> None:
        self.spec, self.name, self.run, self.stats = spec, name, run, stats
        self.kind: StageKind = spec.kind
        self.mode: Mode = spec.mode
        self.fn = spec.fn
        # A ThreadPoolExecutor runs the function in this process: nothing to ship or check.
        same_process = isinstance(spec.executor, cf.ThreadPoolExecutor)
        blob = check_function(name, spec.fn, StageKind.THREAD if same_process else self.kind)
        self._inflight: deque[Any] = deque()
        self._pool: Any = None
        self._loop: _LoopThread | None = None
        workers = spec.workers
        self._inline = self.kind is StageKind.THREAD and workers == 1
        self._max_inflight = 2 * workers
        if self.kind is StageKind.THREAD and not self._inline:
            self._pool = cf.ThreadPoolExecutor(workers, thread_name_prefix=f"pl-{name}")
            self._submit = lambda piece: self._pool.submit(
                apply_chunk, self.mode, self.fn, piece, spec.retries
            )
        elif self.kind is StageKind.PROCESS or self.kind is StageKind.EXECUTOR:
            executor = spec.executor
            if self.kind is StageKind.PROCESS:  # our own pool: install the function once per worker
                assert blob is not None  # check_function() ships every process stage's function
                self._pool = cf.ProcessPoolExecutor(
                    workers, mp_context=_context(), initializer=_install, initargs=(blob,)
                )
                self._submit = lambda piece: self._pool.submit(_run_installed, self.mode, piece, spec.retries)
            elif isinstance(executor, cf.ThreadPoolExecutor):  # same process: no need to ship
                self._submit = lambda piece: executor.submit(
                    apply_chunk, self.mode, self.fn, piece, spec.retries
                )
            else:
                self._submit = lambda piece: executor.submit(
                    _run_shipped, blob, self.mode, piece, spec.retries
                )
        elif self.kind is StageKind.ASYNC:
            self._loop = _LoopThread(f"pl-{name}-loop", workers)
            self._max_inflight = workers
            loop = self._loop
            self._submit = lambda piece: loop.submit(
                _apply_async(self.mode, self.fn, piece, spec.retries, loop.gate)
            )

    def _pieces(self, chunk: list[Any]) -> list[list[Any]]:
        if self.kind is StageKind.ASYNC:
            return [chunk]
        size = self.spec.chunksize
        if size is None:
            size = 1 if self.kind is StageKind.THREAD else math.ceil(len(chunk) / (2 * self.spec.workers))
        return [chunk[i : i + size] for i in range(0, len(chunk), size)]

    def feed(self, chunk: list[Any], emit: Callable[[Any], None]) -> None:
        if self._inline:
            out, failures, busy = apply_chunk(self.mode, self.fn, chunk, self.spec.retries)
            self._deliver(out, failures, busy, emit)
            return
        for piece in self._pieces(chunk):
            while len(self._inflight) >= self._max_inflight:
                self._emit_oldest(emit)
            self._inflight.append(self._submit(piece))
        self.poll(emit)

    def mark(self, marker: Marker, emit: Callable[[Any], None]) -> None:
        if self._inflight:
            self._inflight.append(marker)  # markers keep their place among pending results
        else:
            emit(marker)

    def wait_hint(self) -> float | None:
        return 0.002 if self._inflight else None

    def poll(self, emit: Callable[[Any], None]) -> None:
        while self._inflight and (isinstance(self._inflight[0], Marker) or self._inflight[0].done()):
            self._emit_oldest(emit)

    def finish(self, emit: Callable[[Any], None]) -> None:
        while self._inflight:
            self._emit_oldest(emit)

    def _emit_oldest(self, emit: Callable[[Any], None]) -> None:
        head = self._inflight[0]
        if isinstance(head, Marker):
            self._inflight.popleft()
            emit(head)
            return
        while True:
            done, _ = cf.wait([head], timeout=0.05)
            if done:
                break
            if self.run.stop.is_set():
                raise Cancelled
        self._inflight.popleft()
        try:
            out, failures, busy = head.result()
        except Exception as exc:  # the worker itself broke (a process died, a pickling error)
            raise StageFailed(self.name, exc) from exc
        self._deliver(out, failures, busy, emit)

    def _deliver(self, out: list[Any], failures: list[Any], busy: float, emit: Callable[[Any], None]) -> None:
        self.stats.busy_seconds += busy
        if failures:
            self.run.handle_failures(self.name, self.spec.errors, failures, self.stats)
        if out:
            emit(out)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._loop is not None:
            self._loop.shutdown()


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
