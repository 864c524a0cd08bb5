"""TaskFuture: a :class:`concurrent.futures.Future` that is cheap to make and to settle.

Technique: *one condition per client, not one per future*. A stock ``Future`` builds a
``threading.Condition`` (a Python object, its lock and a deque) when it is created, and settling
it runs four Python-level calls of that condition. ``Pool.submit`` makes one future per task and
the coordinator's reader settles them by the thousand per second, so that bookkeeping was a
measurable share of the whole per-task cost (see ``python -m minipool.bench dispatch``).

A :class:`TaskFuture` instead shares its client's condition with the client's other futures:

* making one sets six attributes and builds nothing else (fewer objects for the garbage
  collector to walk, too);
* settling one takes the shared lock, and wakes sleepers only when there are any;
* ``result`` and ``exception`` wait in a loop, because a wake-up on a shared condition may be
  for another future of the same client.

Everything else -- ``cancel``, ``add_done_callback``, ``concurrent.futures.wait`` and
``as_completed`` -- is the standard class's own code, which takes the condition as a lock (a
reentrant one, so waiting on many futures that share it is fine). The attributes set here are
the ones ``Future.__init__`` sets, unchanged from Python 3.2 to 3.13.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from concurrent.futures._base import (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING,
                                      InvalidStateError)
from typing import Any

__all__ = ["TaskFuture"]

_SETTLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))


class TaskFuture(concurrent.futures.Future):
    """The future of one task, sharing ``condition`` with its client's other futures.

    Args:
        condition: the client's ``threading.Condition`` (on a reentrant lock).
        client: the :class:`~minipool.client.Client` that submitted the task (for its id, and
            to tell the coordinator when the future is cancelled).
        number: the client's number for the task.
    """

    def __init__(self, condition: threading.Condition, client: Any, number: int) -> None:
        # Future.__init__, minus the condition it would build.
        self._condition = condition
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []
        self._client = client
        self.number = number

    @property
    def task_id(self) -> str:
        """The task's id, for ``Pool.result`` and ``AsyncResult``: ``<client id>-<number>``."""
        return f"{self._client.client_id}-{self.number}"

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._client._forget(self.number, cancel=True)
        return True

    # -- settling: Future.set_result / set_exception with the lock's own methods ---------------

    def set_result(self, result: Any) -> None:
        cond = self._condition
        cond.acquire()
        try:
            if self._state in _SETTLED:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            if cond._waiters:  # type: ignore[attr-defined]
                cond.notify_all()
        finally:
            cond.release()
        if self._done_callbacks:
            self._invoke_callbacks()

    def set_exception(self, exception: BaseException | None) -> None:
        cond = self._condition
        cond.acquire()
        try:
            if self._state in _SETTLED:
                raise InvalidStateError(f"{self._state}: {self!r}")
            self._exception = exception
            self._state = FINISHED
            for waiter in self._waiters:
                waiter.add_exception(self)
            if cond._waiters:  # type: ignore[attr-defined]
                cond.notify_all()
        finally:
            cond.release()
        if self._done_callbacks:
            self._invoke_callbacks()

    # -- waiting: a loop, since a shared condition wakes every waiter ---------------------------

    def _wait(self, timeout: float | None) -> None:
        """Under the condition: return once settled, or raise TimeoutError."""
        if self._state in _SETTLED:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._state not in _SETTLED:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise concurrent.futures.TimeoutError()
            self._condition.wait(remaining)

    def result(self, timeout: float | None = None) -> Any:
        cond = self._condition
        cond.acquire()
        try:
            self._wait(timeout)
            if self._state in _CANCELLED:
                raise concurrent.futures.CancelledError()
            if self._exception is not None:
                try:
                    raise self._exception
                finally:
                    self = None  # type: ignore[assignment]  # no frame -> future -> traceback cycle
            return self._result
        finally:
            cond.release()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        cond = self._condition
        cond.acquire()
        try:
            self._wait(timeout)
            if self._state in _CANCELLED:
                raise concurrent.futures.CancelledError()
            return self._exception
        finally:
            cond.release()
