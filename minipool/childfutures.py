"""The futures of tasks submitted from inside a task: waiting on one gives the task's slot back.

Technique: *secede on wait, join by running* (Dask's ``secede``/``rejoin``; fork/join's join).
A task that blocks on a child's future must not hold its worker's slot meanwhile, or a
recursion deeper than the pool's slots deadlocks (:mod:`minipool.cluster.nesting`); and a child
still kept in the worker (:mod:`minipool.cluster.stealing`) is best run by the very thread that
waits for it, like a function call. Both happen in the future's own waiting methods, so a task
written against plain ``concurrent.futures`` gets them without knowing.

How the waits are seen: a child's future (:class:`ChildFuture`) remembers the task that
submitted it. ``result()`` and ``exception()`` announce the wait themselves; ``wait`` and
``as_completed`` install a *waiter* on every future they watch and remove it when they return,
so the future's list of waiters announces the wait when one is added and its end when it is
removed. That list is made only when ``wait`` or ``as_completed`` first asks for it: most
children are joined by ``result()`` and never need one.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED
from typing import Any

from .cluster.nesting import RunningTask, current_task
from .futures import TaskFuture

__all__ = ["ChildFuture", "OutcomeFuture", "SETTLED"]

#: The states of a future that will not change again.
SETTLED = (FINISHED, CANCELLED, CANCELLED_AND_NOTIFIED)


class _Waiters(list):
    """A child future's waiters: adding one means a thread of its parent is about to block on
    it (``wait``, ``as_completed``); removing it, that the wait is over."""

    __slots__ = ("parent", "future")

    def __init__(self, parent: RunningTask, future: _Seceding) -> None:
        super().__init__()
        self.parent = parent
        self.future = future

    def append(self, waiter: Any) -> None:
        super().append(waiter)
        self.future.before_blocking()
        self.parent.begin_wait()

    def remove(self, waiter: Any) -> None:
        super().remove(waiter)
        self.parent.end_wait()


class _Seceding:
    """Waits that give the waiting task's slot back, for any future: ``parent`` is the task
    that made it (None outside a task: then it is an ordinary future)."""

    parent: RunningTask | None
    _state: str

    def before_blocking(self) -> None:
        """A thread is about to block on this future among others (``wait``)."""

    def join(self, timeout: float | None) -> None:
        """The parent is about to wait on this future."""

    def result(self, timeout: float | None = None) -> Any:
        return self._seceding(super().result, timeout)  # type: ignore[misc]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._seceding(super().exception, timeout)  # type: ignore[misc]

    def _seceding(self, ask: Callable[[float | None], Any], timeout: float | None) -> Any:
        """``ask(timeout)`` (the future's own wait), joined first, and with the parent's slot
        given back while it blocks."""
        parent = self.parent
        if parent is None or self._state in SETTLED:
            return ask(timeout)
        self.join(timeout)
        if self._state in SETTLED:
            return ask(timeout)
        parent.begin_wait()
        try:
            return ask(timeout)
        finally:
            parent.end_wait()


class _LazyWaiters:
    """A child future's ``_waiters``: a :class:`_Waiters` made on first access (by ``wait`` or
    ``as_completed``) and kept where settling looks for waiters (``_waiting``)."""

    def __get__(self, future: ChildFuture | None, owner: type) -> Any:
        if future is None:
            return self
        items = future._waiting
        if items is None:
            items = future._waiting = [] if future.parent is None else _Waiters(future.parent, future)
        return items


class ChildFuture(_Seceding, TaskFuture):
    """The future of a task submitted from inside a task: waiting on it gives the parent's
    slot back while it is pending."""

    _waiters = _LazyWaiters()

    def __init__(self, client: Any, number: int) -> None:
        TaskFuture.__init__(self, client, number)
        self.parent = current_task()

    def join(self, timeout: float | None) -> None:
        """Fork/join's join: run the child here if it is still kept; if it left (stolen),
        help with the children kept here until it is done. With a timeout it is submitted
        instead, so that the wait can end on time."""
        if timeout is None:
            self._client.join(self)
        else:
            self._client.submit_kept((self.number,))

    def before_blocking(self) -> None:
        self._client.submit_kept((self.number,))


class OutcomeFuture(_Seceding, concurrent.futures.Future):
    """A future made of child futures (a Celery-style task's, across its retries)."""

    def __init__(self) -> None:
        concurrent.futures.Future.__init__(self)
        self.parent = current_task()
        if self.parent is not None:
            self._waiters = _Waiters(self.parent, self)
