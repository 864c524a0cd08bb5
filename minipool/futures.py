"""LightFuture and TaskFuture: futures (``concurrent.futures.Future``) cheap to make and to settle.

Technique: *build the condition only when someone waits*. A stock ``Future`` builds a
``threading.Condition`` (a Python object around a lock, with a deque) when it is created, and
settling it runs four Python-level calls of that condition. ``Pool.submit`` makes one future per
task and the coordinator's reader settles them by the thousand per second, so that bookkeeping
was a measurable share of the whole per-task cost (see ``python -m minipool.bench dispatch``).
Yet most futures are never waited on while pending: by the time ``result()`` is called, the
outcome is usually there.

A :class:`LightFuture` (a task's :class:`TaskFuture`, a topic producer's record's) therefore
holds just its own reentrant lock (one C object) and builds the
``Condition`` around that same lock the first time anything asks for ``_condition`` -- a thread
about to wait, ``concurrent.futures.wait``, ``add_done_callback``. Settling takes the lock with
its own C methods, and notifies only if a condition exists and has sleepers.

Why one lock *per future* and not one shared by a client's futures (cheaper still):
``concurrent.futures.wait`` and ``as_completed`` lock every future they watch, in the order of
the futures' ids, which avoids deadlock only if each future has a lock of its own. Two threads
waiting on overlapping sets of futures that share locks can take them in opposite orders.

``running()`` and ``cancel()`` are the coordinator's answer, not this object's guess: the task
runs in another process, so only the coordinator knows whether a worker holds it (see
:meth:`TaskFuture.cancel`). ``done()`` and ``cancelled()`` read the state without the lock
(one attribute, which only moves forward), so that a loop polling its futures builds no
conditions. Everything else -- ``add_done_callback``, ``wait``, ``as_completed`` -- is the
standard class's own code. The attributes this class sets are the ones ``Future.__init__``
sets, unchanged from Python 3.2 to 3.13; the two lists it leaves to the first waiter or
callback.
"""

from __future__ import annotations

import concurrent.futures
import threading
from _thread import RLock as _RLock  # threading.RLock is a Python function in front of this
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
    InvalidStateError,
)
from typing import Any

__all__ = ["LightFuture", "TaskFuture"]

_SETTLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))


class _LazyCondition:
    """The ``_condition`` attribute, built on first access around the future's own lock and
    then stored on the instance (a non-data descriptor: later reads never come back here),
    and as ``_cond``, which settling reads: its class default None says no one can be asleep
    without making the instance's ``__dict__`` (asking for it builds one)."""

    def __get__(self, future: LightFuture | None, owner: type) -> Any:
        if future is None:
            return self
        with future._lock:  # two threads asking at once must get the same condition
            cond = future._cond
            if cond is None:
                cond = future._cond = future._condition = threading.Condition(future._lock)
        return cond


class _LazyList:
    """A list attribute (``_waiters``, ``_done_callbacks``) made on first access and kept in
    the instance attribute ``held``, whose class default None lets the hot path look without
    making one. Assigning replaces it (a child future hooks its waiters' list)."""

    def __init__(self, held: str) -> None:
        self.held = held

    def __get__(self, future: LightFuture | None, owner: type) -> Any:
        if future is None:
            return self
        items = getattr(future, self.held)
        if items is None:
            items = []
            setattr(future, self.held, items)
        return items

    def __set__(self, future: LightFuture, items: list[Any]) -> None:
        setattr(future, self.held, items)


class LightFuture(concurrent.futures.Future):
    """A :class:`concurrent.futures.Future` whose condition is built only when someone waits,
    and that is settled with its lock's own methods: for futures made by the thousand (a
    task's, a producer's record's), most of which are never waited on while pending."""

    _condition = _LazyCondition()
    # Future's two lists, made only when a waiter or a callback comes: a future that lives
    # while thousands of others are pending is scanned by every full garbage collection, and
    # two lists each were a third of what a pending task left for it to scan.
    _waiters = _LazyList("_waiting")
    _done_callbacks = _LazyList("_callbacks")
    _waiting: list[Any] | None = None
    _callbacks: list[Any] | None = None
    _cond: Any = None  # the threading.Condition, once built (its _waiters are read)

    def __init__(self) -> None:
        # Future.__init__, minus the condition and the two lists it would build.
        self._lock = _RLock()
        self._state = PENDING
        self._result = None
        self._exception = None

    # -- settling: Future.set_result / set_exception with the lock's own methods ---------------

    def set_result(self, result: Any) -> None:
        self._settle(True, result)

    def set_exception(self, exception: BaseException | None) -> None:
        self._settle(False, exception)

    def _settle(self, ok: bool, value: Any) -> None:
        lock = self._lock
        lock.acquire()
        try:
            if self._state in _SETTLED:
                raise InvalidStateError(f"{self._state}: {self!r}")
            if ok:
                self._result = value
            else:
                self._exception = value
            self._state = FINISHED
            self._wake(ok)
        finally:
            lock.release()
        if self._callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]

    def _wake(self, ok: bool) -> None:
        """Under the lock: tell ``wait``/``as_completed`` waiters and sleeping threads."""
        waiters = self._waiting
        if waiters:
            for waiter in waiters:
                waiter.add_result(self) if ok else waiter.add_exception(self)
        cond = self._cond  # none built: nobody can be asleep on it
        if cond is not None and cond._waiters:
            cond.notify_all()

    # -- asking: one attribute read (Future's own build the condition to read it) -------------

    def done(self) -> bool:
        return self._state in _SETTLED

    def cancelled(self) -> bool:
        return self._state in _CANCELLED

    def running(self) -> bool:
        return self._state == RUNNING

    # -- waiting: no condition is built when the outcome is already there -----------------------

    def _settle_wait(self, timeout: float | None) -> None:
        """Under the lock: return once settled, or raise TimeoutError."""
        if self._state not in _SETTLED:
            self._condition.wait(timeout)
            if self._state not in _SETTLED:
                raise concurrent.futures.TimeoutError()
        if self._state in _CANCELLED:
            raise concurrent.futures.CancelledError()

    def result(self, timeout: float | None = None) -> Any:
        if self._state is FINISHED and self._exception is None:
            # Settled with a value, for good: _settle wrote the value before the state, and a
            # finished future never changes again, so there is nothing to wait for or lock.
            return self._result
        lock = self._lock
        lock.acquire()
        try:
            self._settle_wait(timeout)
            if self._exception is not None:
                try:
                    raise self._exception
                finally:
                    self = None  # type: ignore[assignment]  # no frame -> future -> traceback cycle
            return self._result
        finally:
            lock.release()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        lock = self._lock
        lock.acquire()
        try:
            self._settle_wait(timeout)
            return self._exception
        finally:
            lock.release()


class TaskFuture(LightFuture):
    """The future of one task submitted by ``client``.

    Args:
        client: the :class:`~minipool.client.Client` that submitted the task (for its id, and
            to tell the coordinator when the future is cancelled).
        number: the client's number for the task.
    """

    def __init__(self, client: Any, number: int) -> None:
        # LightFuture.__init__, inlined: one is made per task submitted.
        self._lock = _RLock()
        self._state = PENDING
        self._result = None
        self._exception = None
        self._client = client
        self.number = number

    @property
    def task_id(self) -> str:
        """The task's id, for ``Pool.result`` and ``AsyncResult``: ``<client id>-<number>``."""
        return f"{self._client.client_id}-{self.number}"

    # -- RUNNING and CANCELLED are the coordinator's word -------------------------------------
    #
    # The task runs in another process, so this future cannot see it start. ``running()`` and
    # ``cancel()`` ask the coordinator (a call for an embedded pool, one LEASES message for a
    # remote one), only while the future is still PENDING: nothing is paid on the hot path, and
    # a future seen RUNNING stays so.

    def running(self) -> bool:
        if self._state == PENDING:
            self._client.refresh_running((self,))
        return self._state == RUNNING

    def cancel(self) -> bool:
        """Cancel the task if no worker has held it, and say whether it was cancelled.

        True is a promise: the coordinator has dropped the task, and it never runs.
        """
        if self._state == PENDING:
            self._client.cancel((self,))
        return self._state in _CANCELLED

    def mark_running(self) -> None:
        """The coordinator says the task has started (a worker has held it)."""
        with self._lock:
            if self._state == PENDING:
                self._state = RUNNING

    def settle_cancelled(self) -> bool:
        """The coordinator has dropped the task: ``Future.cancel()`` then
        ``set_running_or_notify_cancel()`` in one step, so ``wait`` and ``as_completed`` see it."""
        with self._lock:
            if self._state != PENDING:
                return self._state in _CANCELLED
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiting or ():
                waiter.add_cancelled(self)
            cond = self._cond
            if cond is not None and cond._waiters:
                cond.notify_all()
        if self._callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]  # CPython's Future has it, typeshed not
        return True
