"""The client end of the pool: turn calls into SUBMIT messages and results into resolved futures.

Technique: *futures as the client's view of remote work* (concurrent.futures, SCOOP's futures,
Celery's AsyncResult). The client keeps one table, task number -> future. Submitting adds an
entry and sends a SUBMIT; a RESULT or FAILURE removes the entry and resolves the future. That
table is the whole protocol state of a client, which is why delivery is easy to make
exactly-once: an outcome for a number no longer in the table is dropped.

Two ways to reach the coordinator share this logic:

* :class:`RemoteClient` -- over a transport connection, with a reader thread, heartbeats and
  *reconnection*: when the connection drops (a network blip, a coordinator restarted from its
  journal) it reconnects under the same client id and resubmits every task it is still waiting
  for. The coordinator knows tasks by ``(client id, number)``, so a resubmitted task that is
  queued, running or finished there is not run again: the client just gets its outcome;
* :class:`LocalClient` -- in the coordinator's own process (the embedded ``Pool()``): messages
  are handed over by a method call, the way ZeroMQ's ``inproc://`` skips the network stack.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures._base import PENDING
from typing import Any

from . import task as tasklib
from .cluster.coordinator import Coordinator
from .cluster.outbox import Outbox
from .cluster.session import HEARTBEAT, LIVENESS, Backoff, adopt_heartbeat, open_connection, read_until_lost
from .cluster.state import LocalClientState
from .errors import AuthenticationError, ConnectionClosed, MessageTooLarge, MinipoolError, ProtocolError
from .futures import TaskFuture
from .transports.base import DEFAULT_MAX_MESSAGE, Connection
from .wire import HEADROOM, Format, Kind, Message, decode, encode, envelope_size

__all__ = ["TaskFuture", "Client", "RemoteClient", "LocalClient"]

log = logging.getLogger("minipool.client")


class Client:
    """The future table and outcome decoding shared by local and remote clients."""

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

    def hello(self) -> dict[str, Any]:
        return {"role": "client", "client": self.client_id, "pid": os.getpid(), "host": socket.gethostname()}

    # -- requests ----------------------------------------------------------------------------

    def submit(self, body: bytes, codec: str = "none", headers: dict[str, Any] | None = None) -> TaskFuture:
        """Send one task body; return the future that its outcome will resolve."""
        if self.closed or self.broken:
            self._refuse()
        number = next(self._numbers)
        future = TaskFuture(self, number)
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


class LocalClient(Client):
    """A client in the coordinator's process: no socket, no encoding of the envelope."""

    def __init__(self, coordinator: Coordinator) -> None:
        super().__init__()
        self._coordinator = coordinator
        self.max_message = coordinator.max_message  # what the workers' results must fit, too
        self._state = LocalClientState(self.client_id, self.on_message, self.resolve)
        coordinator.attach_local(self._state)

    def submit(self, body: bytes, codec: str = "none", headers: dict[str, Any] | None = None) -> TaskFuture:
        # The in-process fast path: no envelope, straight into the coordinator.
        if self.closed or self.broken:
            self._refuse()
        number = next(self._numbers)
        future = TaskFuture(self, number)
        if len(body) + HEADROOM > self.max_message and self._refuse_oversized(future, body, codec, headers):
            return future
        with self._lock:
            self._pending[number] = future
        self._coordinator.submit_local(self._state, number, body, codec, headers)
        return future

    def _send(self, message: Message) -> None:
        self._coordinator.handle_client_message(self._state, message)

    def _ask_started(self, futures: list[TaskFuture], cancel: bool) -> tuple[set[int], set[int]] | None:
        # In-process, the question is a call under the coordinator's lock: no message at all.
        started, cancelled = self._coordinator.started(self._state, [f.number for f in futures], cancel)
        return set(started), set(cancelled)

    def _take(self, number: int) -> concurrent.futures.Future | None:
        # No lock: a dict's pop is atomic, and nothing else here must change with it. (A
        # fail_all racing with it swaps the table first; the loser's set_* is refused.)
        return self._pending.pop(number, None)

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._coordinator.detach_local(self._state)


class RemoteClient(Client):
    """A client of a coordinator at ``url``, over any transport.

    Args:
        reconnect_timeout: how long to keep trying to reconnect after the connection drops
            (0: fail pending futures at once).

    Raises (from the constructor):
        AuthenticationError: wrong key -- promptly, never a hang.
        OSError, TimeoutError, MinipoolError: the coordinator cannot be reached or is not one.
    """

    def __init__(
        self,
        url: str,
        authkey: bytes,
        *,
        heartbeat: float = HEARTBEAT,
        liveness: int = LIVENESS,
        timeout: float = 10.0,
        reconnect_timeout: float = 60.0,
        **transport_options: Any,
    ) -> None:
        super().__init__()
        self.url = url
        self.heartbeat = heartbeat
        self.liveness = liveness
        self.reconnect_timeout = reconnect_timeout
        self._key = authkey
        self._timeout = timeout
        self._options = transport_options
        self.max_message = int(transport_options.get("max_message", DEFAULT_MAX_MESSAGE))
        self._unanswered: dict[int, Message] = {}  # SUBMITs to resend after a reconnect
        self._conn = self._open()
        self._outbox = Outbox(self._conn)
        self.reconnects = 0
        self._reader = threading.Thread(target=self._read, daemon=True, name="minipool-client-reader")
        self._reader.start()

    def _open(self) -> Connection:
        """Connect, authenticate, and read the coordinator's first message, the HEARTBEAT that
        announces its heartbeat and its max_message, before anything is sent: a SUBMIT too
        large for the coordinator would cost the connection, and be sent again on the next."""
        conn = open_connection(self.url, self._key, self.hello(), timeout=self._timeout, **self._options)
        try:
            first = decode(conn.recv(self._timeout))
            if first.kind is Kind.ERROR:
                raise ConnectionClosed(f"coordinator closed the connection: {first.headers.get('reason')}")
            if first.kind is not Kind.HEARTBEAT:
                raise ProtocolError(f"expected the coordinator's HEARTBEAT, got {first.kind.name}")
            adopt_heartbeat(self, first.headers)
        except BaseException:
            conn.close()
            raise
        return conn

    def _remember(self, number: int, message: Message) -> None:
        self._unanswered[number] = message

    def _take(self, number: int) -> concurrent.futures.Future | None:
        with self._lock:  # pending and unanswered change together (see _reconnect)
            self._unanswered.pop(number, None)
            return self._pending.pop(number, None)

    def _send(self, message: Message) -> None:
        outbox = self._outbox
        if outbox.failed or outbox.conn.closed:
            if message.kind is Kind.SUBMIT and self.reconnect_timeout > 0 and not self.closed:
                return  # kept in _unanswered: it goes out again once we are reconnected
            raise ConnectionClosed(f"connection to the coordinator at {self.url} is closed")
        outbox.put(encode(message))

    def _ask_started(self, futures: list[TaskFuture], cancel: bool) -> tuple[set[int], set[int]] | None:
        if threading.current_thread() is self._reader:
            return None  # a done callback on the reader: it alone could carry the answer
        try:
            reply = self.request(
                Kind.LEASES, {"tasks": [f.number for f in futures], "cancel": cancel}, timeout=self._timeout
            )
        except (MinipoolError, OSError, TimeoutError):
            return None  # cut off: the tasks may or may not run; promise nothing
        return set(reply["started"]), set(reply["cancelled"])

    def _read(self) -> None:
        while not self.closed:
            reason = self._read_until_lost()
            if self.closed:
                break
            log.warning("%s", reason)
            if self.reconnect_timeout <= 0 or not self._reconnect():
                self.fail_all(reason)
                return

    def _read_until_lost(self) -> BaseException:
        conn = self._conn
        try:
            return read_until_lost(self, conn, self._outbox, self.on_message, beats=True)
        finally:
            conn.close()

    def _reconnect(self) -> bool:
        """Reconnect under the same client id and resend what is unanswered."""
        deadline = time.monotonic() + self.reconnect_timeout
        backoff = Backoff(0.05, 2.0)
        while not self.closed and time.monotonic() < deadline:
            try:
                conn = self._open()
            except AuthenticationError:
                return False
            except (MinipoolError, OSError, TimeoutError):
                time.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))
                continue
            outbox = Outbox(conn)
            with self._lock:
                self._conn, self._outbox = conn, outbox
                resend = [encode(m) for _, m in sorted(self._unanswered.items())]
            if resend:
                outbox.put_many(resend)
            self.reconnects += 1
            log.warning("reconnected to %s; resubmitted %d task(s)", self.url, len(resend))
            return True
        return False

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._conn.close()
            self._reader.join(timeout=5)
