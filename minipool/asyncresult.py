"""Celery-style tasks: ``@pool.task``, ``.delay()``, ``.apply_async()`` and ``AsyncResult``.

Technique: *the task-queue programming model* of Celery (seed 002): decorate a function, call
``.delay(*args)`` to enqueue it, and get back an ``AsyncResult`` with a task ``id``, ``ready()``
and ``get()``. Retries with exponential backoff are the client's business here: a failed
attempt is resubmitted after ``retry_backoff * 2**attempt`` seconds, and the ``AsyncResult``
resolves with the last attempt's outcome. A ``timeout`` travels with the task: the worker
enforces it and the coordinator fails the task with ``TimeoutError`` when it expires.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["TaskFunction", "AsyncResult", "Schedule", "Submitter"]


class Submitter(Protocol):
    """What tasks and schedules need of a pool (:class:`minipool.pool.Pool` is one): this module
    sits below the pool and names only the calls it makes."""

    def future(self) -> concurrent.futures.Future:
        """A new future for an outcome made of the pool's futures (waiting on it inside a
        task gives the task's slot back: see minipool.nested)."""
        ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future: ...

    def submit_with(
        self,
        fn: Callable[..., Any],
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        priority: int = 0,
        timeout: float | None = None,
    ) -> concurrent.futures.Future: ...


class AsyncResult:
    """The handle of one task run (Celery's ``AsyncResult``)."""

    def __init__(self, task_id: str, future: concurrent.futures.Future) -> None:
        self.id = task_id
        self.future = future

    def get(self, timeout: float | None = None) -> Any:
        """Wait for and return the task's value, re-raising its exception.

        Raises:
            TimeoutError: not ready within ``timeout`` seconds.
        """
        return self.future.result(timeout)

    def ready(self) -> bool:
        return self.future.done()

    def successful(self) -> bool:
        return self.future.done() and not self.future.cancelled() and self.future.exception() is None

    def failed(self) -> bool:
        return self.future.done() and not self.successful()

    @property
    def state(self) -> str:
        """``PENDING``, ``SUCCESS``, ``FAILURE`` or ``REVOKED``, as Celery names them."""
        if not self.future.done():
            return "PENDING"
        if self.future.cancelled():
            return "REVOKED"
        return "SUCCESS" if self.future.exception() is None else "FAILURE"

    def revoke(self) -> bool:
        """Cancel the task if it has not started."""
        return self.future.cancel()

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id} {self.state}>"


class TaskFunction:
    """A function registered with ``@pool.task``. Calling it directly runs it here."""

    def __init__(
        self,
        pool: Submitter,
        fn: Callable[..., Any],
        *,
        retries: int = 0,
        retry_backoff: float = 0.0,
        timeout: float | None = None,
        priority: int = 0,
    ) -> None:
        self.pool = pool
        self.fn = fn
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.timeout = timeout
        self.priority = priority
        self.__name__ = getattr(fn, "__name__", "task")
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Enqueue ``fn(*args, **kwargs)``."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self, args: tuple | list = (), kwargs: dict | None = None, *, priority: int | None = None
    ) -> AsyncResult:
        """Enqueue with explicit arguments and options (Celery's signature)."""
        prio = self.priority if priority is None else priority
        outer = self.pool.future()
        first = self._attempt(tuple(args), kwargs or {}, prio, outer, 0)
        return AsyncResult(first.task_id, outer)  # type: ignore[attr-defined]

    def _attempt(
        self, args: tuple, kwargs: dict, priority: int, outer: concurrent.futures.Future, attempt: int
    ) -> concurrent.futures.Future:
        inner = self.pool.submit_with(self.fn, args, kwargs, priority=priority, timeout=self.timeout)

        def settle(f: concurrent.futures.Future) -> None:
            if outer.done():
                return
            if f.cancelled():
                outer.cancel()
            elif f.exception() is None:
                outer.set_result(f.result())
            elif attempt < self.retries and not outer.cancelled():
                delay = self.retry_backoff * (2**attempt)
                timer = threading.Timer(delay, self._retry, (args, kwargs, priority, outer, attempt + 1))
                timer.daemon = True
                timer.start()
            else:
                outer.set_exception(f.exception())

        inner.add_done_callback(settle)
        return inner

    def _retry(
        self, args: tuple, kwargs: dict, priority: int, outer: concurrent.futures.Future, attempt: int
    ) -> None:
        """A retry, on its timer's thread: if it cannot be submitted (the pool has shut down
        meanwhile), that is the task's outcome -- nobody else would ever settle ``outer``."""
        try:
            self._attempt(args, kwargs, priority, outer, attempt)
        except Exception as exc:  # noqa: BLE001 - handed to whoever waits on the AsyncResult
            try:
                outer.set_exception(exc)
            except concurrent.futures.InvalidStateError:
                pass  # revoked meanwhile


class Schedule:
    """A periodic task (Celery beat's interval schedule): submits ``fn`` every ``every`` seconds.

    Runs are submitted on a fixed cadence measured from the start, so a slow run does not push
    the next ones later; a run's outcome lands in ``results`` (the newest 100) or ``errors``.
    """

    def __init__(
        self, pool: Submitter, fn: Callable[..., Any], args: tuple, kwargs: dict, every: float
    ) -> None:
        if every <= 0:
            raise ValueError("every must be a positive number of seconds")
        self.pool = pool
        self.every = every
        self.runs = 0
        self.results: list[Any] = []
        self.errors: list[BaseException] = []
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="minipool-schedule")
        self._thread.start()

    def _loop(self) -> None:
        import time

        start = time.monotonic()
        while not self._stop.is_set():
            try:
                future = self.pool.submit(self._fn, *self._args, **self._kwargs)
            except RuntimeError:  # the pool shut down
                return
            self.runs += 1
            future.add_done_callback(self._record)
            next_at = start + self.runs * self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _record(self, future: concurrent.futures.Future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.errors.append(error)
        else:
            self.results.append(future.result())
            del self.results[:-100]

    def cancel(self) -> None:
        """Stop submitting new runs (a run already submitted still completes)."""
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()
