"""The future table: a client's whole protocol state, and how outcomes settle futures.

Technique: *futures as the client's view of remote work* (concurrent.futures, SCOOP's futures,
Celery's AsyncResult). A client keeps one table, task number -> future. Submitting adds an
entry and sends a SUBMIT; a RESULT or FAILURE removes the entry and resolves the future. That
table is the whole protocol state of a client, which is why delivery is easy to make
exactly-once: an outcome for a number no longer in the table is dropped.

:class:`Client` is that table and the outcome decoding, with the sending left to the ways of
reaching a coordinator: :mod:`minipool.client` (over a connection, or in its process) and
:mod:`minipool.nested` (from inside a task, on its worker's connection).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures._base import PENDING
from typing import Any

from . import task as tasklib
from .errors import MessageTooLarge, MinipoolError
from .futures import TaskFuture
from .transports.base import DEFAULT_MAX_MESSAGE
from .wire import HEADROOM, Format, Kind, Message, envelope_size

__all__ = ["Client"]


class Client:
    """The future table and outcome decoding shared by every kind of client."""

    #: The futures it makes (a task's client makes futures whose waits give its slot back).
    future_type: type[TaskFuture] = TaskFuture

    def __init__(self) -> None:
        self.client_id = uuid.uuid4().hex[:16]
        self._numbers = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self.closed = False
        self.initializer: str | None = None  # the pool's initializer_id, if it has one
        self.broken: BaseException | None = None  # why the pool is unusable (its initializer failed)
        #: The largest message the coordinator accepts (a remote one announces its own).
        self.max_message = DEFAULT_MAX_MESSAGE
        self._slots_seen: tuple[float, int] | None = None  # (when, the pool's slots then)

    def hello(self) -> dict[str, Any]:
        return {"role": "client", "client": self.client_id, "pid": os.getpid(), "host": socket.gethostname()}

    # -- requests ----------------------------------------------------------------------------

    def submit(self, body: bytes, codec: str = "none", headers: dict[str, Any] | None = None) -> TaskFuture:
        """Send one task body; return the future that its outcome will resolve."""
        if self.closed or self.broken:
            self._refuse()
        number = next(self._numbers)
        future = self.future_type(self, number)
        if len(body) + HEADROOM > self.max_message and self._refuse_oversized(future, body, codec, headers):
            return future
        message = Message(Kind.SUBMIT, number, body, fmt=Format.PICKLE, codec=codec, headers=headers)
        with self._lock:
            self._pending[number] = future
            self._remember(number, message)
        self._send(message)
        return future

    def failed(self, exc: BaseException) -> TaskFuture:
        """The future of a task that failed before it could be sent (it did not pickle): it
        has a number and a task id like any other, and ``exc`` as its exception."""
        future = TaskFuture(self, next(self._numbers))
        future.set_exception(exc)
        return future

    def _refuse(self) -> None:
        if self.broken is not None:  # a new exception each time, as ProcessPoolExecutor raises
            from .errors import BrokenPool  # not at import: its base class imports multiprocessing

            raise BrokenPool(str(self.broken), self.initializer or "")
        raise RuntimeError("cannot submit: the client is closed")

    def _refuse_oversized(
        self, future: TaskFuture, body: bytes, codec: str, headers: dict[str, Any] | None
    ) -> bool:
        """Fail ``future`` at once if its call is larger than the coordinator accepts: sent, it
        would only cost a dropped connection and fail the same way every time."""
        size = envelope_size(len(body), codec, headers)
        if size <= self.max_message:
            return False
        future.set_exception(
            MessageTooLarge("the task's call (function and arguments)", size, self.max_message)
        )
        return True

    def request(
        self,
        kind: Kind,
        headers: dict[str, Any] | None = None,
        timeout: float | None = 10.0,
        body: bytes = b"",
    ) -> Any:
        """Send a STATUS, FETCH, LOOKUP or DASHBOARD and wait for its answer."""
        number, future = self.ask(kind, headers, body)
        try:
            return future.result(timeout)
        finally:
            self._take(number)

    def ask(
        self, kind: Kind, headers: dict[str, Any] | None = None, body: bytes = b""
    ) -> tuple[int, concurrent.futures.Future]:
        """Send a request and return its number and the future its answer will settle, without
        waiting (a producer keeps several batches in flight). :meth:`forget` a number whose
        answer is no longer wanted."""
        number = next(self._numbers)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._pending[number] = future
        try:
            self._send(Message(kind, number, body, headers=headers))
        except BaseException:
            self._take(number)
            raise
        return number, future

    def forget(self, number: int) -> concurrent.futures.Future | None:
        """Drop request ``number`` and return its future (None if it was not waiting): an
        answer that comes after all is ignored. A subclass that settles replies of its own
        kinds takes their futures with it."""
        return self._take(number)

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        """The coordinator's status report."""
        return self.request(Kind.STATUS, timeout=timeout)

    def slots(self) -> int:
        """The pool's slots, as the coordinator last said (asked again after 5 seconds)."""
        now = time.monotonic()
        if self._slots_seen is None or now - self._slots_seen[0] > 5.0:
            self._slots_seen = (now, max(1, self.status().get("slots", 1)))
        return self._slots_seen[1]

    def fetch(self, task_id: str, timeout: float | None = None) -> Any:
        """The outcome of any task by its id (waiting for it if it is still running).

        Raises:
            KeyError (as RemoteError): the coordinator does not know that task.
        """
        return self.request(Kind.FETCH, {"task": task_id}, timeout)

    def lookup(self, service: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The live registry entries that offer ``service``."""
        return self.request(Kind.LOOKUP, {"service": service}, timeout)

    def register(
        self,
        key: str,
        *,
        address: str,
        services: list[str],
        ttl: float,
        slots: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        """Add or renew a registry entry (renew it again before ``ttl`` runs out)."""
        self._send(
            Message(
                Kind.REGISTER,
                headers={
                    "key": key,
                    "address": address,
                    "services": services,
                    "ttl": ttl,
                    "slots": slots,
                    "meta": meta or {},
                },
            )
        )

    def deregister(self, key: str) -> None:
        """Remove a registry entry now, rather than letting its ``ttl`` run out."""
        self._send(Message(Kind.REGISTER, headers={"key": key, "deregister": True}))

    def _remember(self, number: int, message: Message) -> None:
        """Hook: keep a SUBMIT for resubmission (remote clients)."""

    # -- RUNNING and cancelled: the coordinator's answer -------------------------------------

    def cancel(self, futures: Iterable[TaskFuture]) -> None:
        """Cancel those of ``futures`` whose tasks have not started, in one question to the
        coordinator; mark the others RUNNING. A future is cancelled only once the coordinator
        has dropped its task, so ``cancel()`` returning True is a promise that it never runs."""
        waiting = [f for f in futures if f._state == PENDING]
        answer = self._ask_started(waiting, cancel=True) if waiting else None
        if answer is None:
            return  # no answer: nothing is promised, nothing is cancelled
        started, cancelled = answer
        for future in waiting:
            if future.number in started:
                future.mark_running()
            elif future.number in cancelled and self._take(future.number) is not None:
                future.settle_cancelled()

    def refresh_running(self, futures: Iterable[TaskFuture]) -> None:
        """Mark those of ``futures`` whose tasks have started RUNNING (``Future.running()``)."""
        waiting = [f for f in futures if f._state == PENDING]
        answer = self._ask_started(waiting, cancel=False) if waiting else None
        if answer is not None:
            for future in waiting:
                if future.number in answer[0]:
                    future.mark_running()

    def _ask_started(self, futures: list[TaskFuture], cancel: bool) -> tuple[set[int], set[int]] | None:
        """The coordinator's ``(started, cancelled)`` task numbers, or None if it cannot be
        asked now (see :meth:`Coordinator.started`)."""
        raise NotImplementedError

    def ask_leases(
        self, futures: list[TaskFuture], cancel: bool, timeout: float
    ) -> tuple[set[int], set[int]] | None:
        """Ask the coordinator with one LEASES message; None if it cannot answer now."""
        try:
            reply = self.request(
                Kind.LEASES, {"tasks": [f.number for f in futures], "cancel": cancel}, timeout=timeout
            )
        except (MinipoolError, OSError, TimeoutError):
            return None  # cut off: the tasks may or may not run; promise nothing
        return set(reply["started"]), set(reply["cancelled"])

    def _take(self, number: int) -> concurrent.futures.Future | None:
        """Remove and return the future of ``number`` (None if it is not pending)."""
        with self._lock:
            return self._pending.pop(number, None)

    def _send(self, message: Message) -> None:
        raise NotImplementedError

    # -- outcomes ----------------------------------------------------------------------------

    def on_message(self, msg: Message) -> None:
        """Resolve the future a RESULT, FAILURE or reply is for."""
        kind = msg.kind
        if kind is not Kind.HEARTBEAT:
            self.resolve(msg.id, kind, msg.fmt, msg.codec, msg.body)

    def resolve(self, number: int, kind: Kind, fmt: Format, codec: str, body: bytes) -> None:
        """Settle the future of task (or request) ``number`` with an outcome body, once."""
        future = self._take(number)
        if future is None:
            return  # a duplicate delivery (a cancelled future refuses the outcome below)
        try:
            if kind is Kind.RESULT:
                ok, value = tasklib.unpack_outcome(True, body, codec)
            elif kind is Kind.FAILURE:
                if fmt is Format.JSON:
                    ok, value = False, tasklib.failure_from_json(json.loads(body))
                else:
                    ok, value = tasklib.unpack_outcome(False, body, codec)
            elif kind in (Kind.STATUS_REPLY, Kind.LOOKUP_REPLY, Kind.LEASES_REPLY, Kind.DASHBOARD_REPLY):
                ok, value = True, json.loads(body)
            else:
                ok, value = False, MinipoolError(f"unexpected {kind.name} from the coordinator")
        except Exception as exc:  # noqa: BLE001 - an outcome that does not decode fails its task
            ok, value = False, exc
        try:
            future.set_result(value) if ok else future.set_exception(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled by the user at this very moment
        if (
            not ok
            and self.initializer is not None
            and getattr(value, "initializer", None) == self.initializer
        ):  # ours, not a task's own
            self.break_pool(value)

    def break_pool(self, exc: BaseException) -> None:
        """The pool's initializer failed: fail every pending future with ``exc`` and refuse
        new tasks, as a broken ``ProcessPoolExecutor`` does."""
        self.broken = exc
        self.fail_all(exc)

    def fail_all(self, exc: BaseException) -> None:
        """Fail every pending future (the coordinator cannot be reached any more)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                try:
                    future.set_exception(exc)
                except concurrent.futures.InvalidStateError:
                    pass

    def task_futures(self) -> list[TaskFuture]:
        """The futures of the tasks still pending (not those of requests)."""
        with self._lock:
            futures = list(self._pending.values())
        return [f for f in futures if isinstance(f, TaskFuture)]

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self.closed = True
